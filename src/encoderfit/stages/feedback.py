"""`encoderfit feedback`: labels collected elsewhere (a review tool, a spreadsheet) added to the prediction log, where
`monitor` measures the model against them and `retrain` learns from them (docs/monitoring.md)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..core.errors import UserError
from ..data.sources import read_table
from .predlog import PredictionLog, insert_feedback
from .rundir import locate
from ..tasks import get_task

log = logging.getLogger(__name__)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip())


def read_label(task, value: Any, labels: List[str]) -> Any:
    """A label as a file holds it -> the task's feedback value: a CSV's "2.5" is a number for regression, its 1 a
    class named "1"."""
    try:
        return task.decoding.feedback_value(value, labels)
    except ValueError as first:
        for other in ([str(value)] if not isinstance(value, str) else []) + ([_number(value)] if isinstance(value, str) else []):
            try:
                return task.decoding.feedback_value(other, labels)
            except (ValueError, TypeError):
                continue
        raise first


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def feedback_rows(task, labels: List[str], file: Path, id_column: str, text_column: str, label_column: str,
                  text_pair_column: Optional[str]) -> List[Dict]:
    """The file's rows as feedback ({id or text, label}), every row checked; a bad row is a UserError naming it."""
    table = read_table(file)
    columns = table.column_names
    if label_column not in columns:
        raise UserError(f"{file}: no column '{label_column}' (the right labels); columns are {columns}; set --label_column")
    if id_column not in columns and text_column not in columns:
        raise UserError(f"{file}: neither an id column '{id_column}' nor a text column '{text_column}'; columns are "
                        f"{columns}; set --id_column (ids from predict/serve --log) or --text_column")
    rows = []
    for i, raw in enumerate(table):
        where = f"{file}: row {i + 1}"
        given_id = raw.get(id_column) if id_column in columns else None
        text = raw.get(text_column) if text_column in columns else None
        if _missing(given_id) and _missing(text):
            raise UserError(f"{where}: neither '{id_column}' nor '{text_column}' is given; each row needs one")
        if _missing(raw[label_column]):
            raise UserError(f"{where}: column '{label_column}' is empty; give the right label")
        try:
            label = read_label(task, raw[label_column], labels)
        except ValueError as err:
            raise UserError(f"{where}, column '{label_column}': {err}") from None
        row = {"label": label, "source": f"file:{file.name}"}
        if not _missing(given_id):
            row["id"] = str(given_id)
        if not _missing(text):
            row["text"] = str(text)
            if text_pair_column and text_pair_column in columns and not _missing(raw.get(text_pair_column)):
                row["text_pair"] = str(raw[text_pair_column])
        rows.append(row)
    if not rows:
        raise UserError(f"{file}: no rows")
    return rows


class UnknownIds(Exception):
    pass


def feedback(
    run: Path,
    file: Path,
    log: Optional[Path] = None,
    id_column: str = "id",
    text_column: str = "text",
    text_pair_column: Optional[str] = None,
    label_column: str = "label",
) -> int:
    """Add corrected labels from a CSV/TSV/JSONL file to a prediction log, for `monitor` and `retrain`.

    Each row names a logged prediction by its id (from `predict --log` or `serve --log`), or gives the text itself;
    a text that was logged (`--log_texts`) is matched to its prediction. All rows are checked first: one bad row (an
    unknown id, a label the model does not have) fails the command and nothing is stored. Returns the rows stored.

    Args:
        run: The run directory whose model made the predictions (its labels check the file's).
        file: CSV/TSV/JSON/JSONL/Parquet file with the labels.
        log: The prediction log (SQLite) of `serve --log` / `predict --log`.
        id_column: Column holding the prediction ids.
        text_column: Column holding the texts (rows without an id).
        text_pair_column: Column holding the second texts, for a model trained on text pairs.
        label_column: Column holding the right labels (a label; labels joined by '|' for multi-label; a number for
            regression).
    """
    info = locate(Path(run))[1].info()
    if log is None:
        raise UserError("--log is missing: name the prediction log (the file given to serve/predict --log)")
    task = get_task(info.task, "predict", info.options)
    file = Path(file)
    if not file.is_file():
        raise UserError(f"file: {file} does not exist; give the CSV/JSONL file of labels")
    rows = feedback_rows(task, info.labels, file, id_column, text_column, label_column, text_pair_column)
    store = PredictionLog(Path(log), flag="--log", create=False)

    def add(conn):
        stored = insert_feedback(conn, rows)
        if not all(stored):
            raise UnknownIds(stored.index(False))
        return len(stored)

    try:
        count = store.transaction(add)
    except UnknownIds as err:
        i = err.args[0]
        raise UserError(f"{file}: row {i + 1}: id '{rows[i]['id']}' is not in the prediction log {log}; nothing was "
                        "stored (check the ids, or give the texts in --text_column)") from None
    finally:
        store.close()
    log_text = f"stored {count} feedback labels in {log}"
    logging.getLogger(__name__).info(log_text)
    return count
