"""CoNLL files, the token-per-line format of NER data: a token and its tag per line (the first and the last column;
others ignored), a blank line between sentences, -DOCSTART- lines between documents. A data source format like
CSV or JSONL (sources.py reads it); the NER task turns its rows into words and tags (tasks/ner/data.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

from ..core.errors import UserError


DOCSTART = "-DOCSTART-"  # CoNLL's document boundary: a line of its own in the files, a one-token row on the hub


LINES = "conll_lines"  # a CoNLL file's column: each token's line number, so that messages name the file's lines


def read_conll(path: Path):
    """A CoNLL file -> Dataset with `tokens` and `tags` lists, one row per sentence (and LINES, their line numbers)."""
    from datasets import Dataset

    from ..core.files import decode_utf8, split_lines

    tokens: List[List[str]] = []
    tags: List[List[str]] = []
    numbers: List[List[int]] = []
    current: Dict[str, list] = {"tokens": [], "tags": [], "lines": []}
    for number, line in enumerate(split_lines(decode_utf8(path.read_bytes(), str(path))), start=1):
        parts = line.split()
        if not parts or parts[0] == DOCSTART:
            if current["tokens"]:
                tokens.append(current["tokens"])
                tags.append(current["tags"])
                numbers.append(current["lines"])
                current = {"tokens": [], "tags": [], "lines": []}
            if parts:  # a document boundary: a row of its own, as the hub's conll2003 has it (ner.documents reads it)
                tokens.append([DOCSTART])
                tags.append(["O"])
                numbers.append([number])
            continue
        if len(parts) < 2:
            raise UserError(f"{path}: line {number}: '{line.strip()}' has no tag; each line is a token and its tag "
                            "(space- or tab-separated), with a blank line between sentences")
        current["tokens"].append(parts[0])
        current["tags"].append(parts[-1])
        current["lines"].append(number)
    if current["tokens"]:
        tokens.append(current["tokens"])
        tags.append(current["tags"])
        numbers.append(current["lines"])
    if not any(t != [DOCSTART] for t in tokens):
        raise UserError(f"{path}: no sentences; a CoNLL file holds a token and its tag per line")
    return Dataset.from_dict({"tokens": tokens, "tags": tags, LINES: numbers})
