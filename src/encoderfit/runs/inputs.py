"""The texts a command reads from --input (a file, `-` for stdin) or given inline, and the empty ones set aside."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import List, Optional
from ..data.sources import join_columns, read_table
from ..core.files import decode_utf8, split_lines
from ..core.errors import UserError

log = logging.getLogger(__name__)


def read_inputs(source: str, text_column: str, text_pair_column: Optional[str] = None, joined: Optional[List[str]] = None):
    """Texts (and pairs) from stdin ('-'), a .txt file (one per line), or a table file's columns (`joined`: the run's
    data.join_columns, joined into the text as in training when the table has them)."""
    if source == "-" or Path(source).suffix.lower() == ".txt":
        if text_pair_column:
            where = "stdin" if source == "-" else source
            raise UserError(f"--input: {where} holds one text per line, but this model takes text pairs; give a "
                            f"CSV/TSV/JSONL/Parquet file with columns '{text_column}' and '{text_pair_column}'")
    if source == "-":
        return split_lines(decode_utf8(sys.stdin.buffer.read(), "stdin")), None
    path = Path(source)
    if path.is_dir():
        raise UserError(f"--input: {source} is a directory; pass a file (.txt, one text per line, or CSV/TSV/JSON/JSONL/Parquet)")
    if not path.is_file():
        raise UserError(f"--input: file '{source}' does not exist")
    if path.suffix.lower() == ".txt":
        return split_lines(decode_utf8(path.read_bytes(), str(path))), None
    table = read_table(path)
    if joined and all(c in table.column_names for c in joined):
        table = join_columns(table, joined, text_column, str(path))
    for column, flag in ((text_column, "--text_column"), (text_pair_column, "--text_pair_column")):
        if column and column not in table.column_names:
            raise UserError(f"{path}: no column '{column}'; columns are {table.column_names}; set {flag}")
    for column in (text_column, text_pair_column):  # as training refuses them (a number is not a context to answer from)
        bad = next(((i, v) for i, v in enumerate(table[column] if column else ()) if v is not None and not isinstance(v, str)), None)
        if bad is not None:
            raise UserError(f"{path}: row {bad[0] + 1}: column '{column}' holds {type(bad[1]).__name__} ({str(bad[1])[:40]}), not "
                            "text, as training would refuse it; write it as a string or remove the row")
    texts = ["" if t is None else str(t) for t in table[text_column]]
    pairs = ["" if t is None else str(t) for t in table[text_pair_column]] if text_pair_column else None
    return texts, pairs


def one_pair(question: Optional[str], context: Optional[str], input: str, inputs) -> tuple:
    """`--question TEXT --context FILE` (or '-' for stdin): one question on one context, for a model whose inputs are
    a question and a context (QA)."""
    if tuple(inputs) != ("question", "context"):
        raise UserError(f"--question/--context: this model takes {' and '.join(inputs)}, not a question and a context; "
                        f"give them with --input")
    if question is None or context is None:
        raise UserError(f"--{'question' if question is None else 'context'} is missing: give both --question TEXT and "
                        "--context FILE (or --input FILE.jsonl with question and context columns)")
    if input != "-":
        raise UserError("--input and --question/--context both given: give one question with --question/--context, or "
                        "a file of them with --input")
    if context == "-":
        text = decode_utf8(sys.stdin.buffer.read(), "stdin")
    else:
        path = Path(context)
        if path.is_dir():
            raise UserError(f"--context: {context} is a directory; give the file holding the context (or '-' to read it "
                            "from stdin)")
        if not path.is_file():
            raise UserError(f"--context: file '{context}' does not exist; give the file holding the context (or '-' to "
                            "read it from stdin)")
        text = decode_utf8(path.read_bytes(), str(path))
    for flag, value in (("--question", question), ("--context", text)):
        if not value.strip():
            raise UserError(f"{flag} is empty: give the text to read")
    return [question], [text]


def drop_empty(texts: List[str], pairs: Optional[List[str]]) -> tuple:
    """Texts that are empty or only whitespace are skipped, as the server refuses them; the log says which rows."""
    keep = [i for i, t in enumerate(texts) if t.strip() and (pairs is None or pairs[i].strip())]
    if len(keep) < len(texts):
        kept = set(keep)
        empty = [i + 1 for i in range(len(texts)) if i not in kept]
        shown = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
        log.warning("warning: skipped %d empty input line(s)/row(s) (%s): no text to label", len(empty), shown)
    return [texts[i] for i in keep], [pairs[i] for i in keep] if pairs is not None else None
