"""Which columns of a table a run reads: the second text of a pair inferred from well-known column names, text
columns that no setting reads, and label columns whose values mix kinds (JSON's 0, "0" and true).

Inferred settings are stated in the log and returned as data settings, so the run's config.yaml records them and
eval, predict and serve read the same columns.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Dict, List, Sequence, Tuple

from ..core.args import DataArgs
from ..core.errors import UserError

log = logging.getLogger(__name__)

PAIR_NAMES: Tuple[Tuple[str, str], ...] = (
    ("text", "text_pair"),  # transformers' pipelines
    ("sentence1", "sentence2"),  # GLUE MRPC/RTE/STS-B/WNLI, PAWS, MedNLI
    ("premise", "hypothesis"),  # MNLI, SNLI, XNLI, ANLI, SciTail
    ("question", "sentence"),  # QNLI
    ("question1", "question2"),  # QQP
    ("sentence_A", "sentence_B"),  # SICK
    ("sentence_a", "sentence_b"),
    ("text_a", "text_b"),
    ("text1", "text2"),
    ("question", "passage"),  # BoolQ
    ("query", "passage"),  # MS MARCO cross-encoder sets
    ("query", "document"),
)
"""(first text, second text) column names that mean a pair, in the order they are tried."""
SAMPLE = 200  # rows looked at to tell whether a column holds text


def settle_columns(ds, data: DataArgs, where: str) -> DataArgs:
    """`data` with the pair column inferred from `ds`'s column names when data.text_pair_column is unset (the text
    column too, when the default `text` is absent and a known pair is there), said in the log; and a warning for
    each column that holds text but that no setting reads."""
    settled = replace(data, **infer_pair(ds.column_names, data))
    if settled.text_pair_column and not data.text_pair_column:
        change = "--data.text_pair_column" if settled.text_column == data.text_column else "--data.text_column/--data.text_pair_column"
        log.info("pairs: %s + %s (inferred from the column names; %s to change)", settled.text_column,
                 settled.text_pair_column, change)
    warn_unread(ds, settled, where)
    return settled


def infer_pair(columns: Sequence[str], data: DataArgs) -> Dict[str, str]:
    """The column settings a known pair of names implies ({} when none, or when the pair column is set)."""
    if data.text_pair_column:
        return {}
    taken = {data.label_column, *(data.join_columns or [])}
    for first, second in PAIR_NAMES:
        if first == data.text_column and second in columns and second not in taken:
            return {"text_pair_column": second}
    if data.text_column == "text" and "text" not in columns and not data.join_columns:
        for first, second in PAIR_NAMES:
            if first in columns and second in columns and not {first, second} & taken:
                return {"text_column": first, "text_pair_column": second}
    return {}


def warn_unread(ds, data: DataArgs, where: str) -> None:
    """Warn about each column that holds text (mostly distinct values of several words) and that neither the text,
    pair, label nor join columns name; the warning names the setting that would read it."""
    needed = {data.label_column, *(data.join_columns or [data.text_column])} | ({data.text_pair_column} - {None})
    if not needed <= set(ds.column_names):
        return  # a column the run reads is missing: its error comes next, without warnings before it
    read = needed | {data.text_column}
    sample = ds.select(range(min(SAMPLE, len(ds))))
    for column in ds.column_names:
        if column in read or not holds_text(list(sample[column])):
            continue
        joined = f"--data.join_columns '[{data.text_column}, {column}]' joins it into the text"
        pair = "" if data.text_pair_column else f"--data.text_pair_column {column} reads it as the second text of a pair; "
        log.warning("warning: %s: column '%s' holds text that no setting reads; %s%s", where, column, pair, joined)


def holds_text(values: List) -> bool:
    """Whether a column's values look like text to read: mostly strings, most of several words, mostly distinct (not
    ids, codes or category names)."""
    strings = [v.strip() for v in values if isinstance(v, str) and v.strip()]
    if not strings or len(strings) < len(values) / 2:
        return False
    worded = sum(len(s.split()) >= 2 for s in strings)
    return worded >= len(strings) / 2 and len(set(strings)) >= len(strings) / 2


KINDS = {bool: "booleans", int: "numbers", float: "numbers", str: "strings", list: "lists", dict: "objects"}


def check_label_kinds(values: List, column: str, where: str) -> None:
    """Refuse a label column whose rows mix kinds of JSON value (0 and "food", 1 and true, "a" and ["a", "b"]): read as
    text they would become classes that look alike ("1", "True") or that no one meant. Integers and other numbers
    together are numbers (a regression target)."""
    first: Dict[str, Tuple[int, object]] = {}
    for i, value in enumerate(values):
        kind = None if value is None else KINDS.get(type(value), type(value).__name__)
        if kind is not None and kind not in first:
            first[kind] = (i + 1, value)
    if len(first) > 1:
        shown = [f"{kind} ({json.dumps(value, ensure_ascii=False)[:40]}, row {row})" for kind, (row, value) in first.items()]
        raise UserError(f"{where}: column '{column}' mixes {', '.join(shown[:-1])} and {shown[-1]}, which would be "
                        "read as separate classes; write every label the same way: all strings (\"0\", \"food\"), all "
                        "numbers, all true/false or all lists")
