"""`encoderfit feedback`: labels collected elsewhere (a review tool, a spreadsheet) added to the prediction log, where
`monitor` measures the model against them and `retrain` learns from them (docs/monitoring.md)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..core.errors import UserError
from ..data.sources import read_table
from ..runs.predlog import PredictionLog, insert_feedback
from ..runs.rundir import ModelDir, locate
from ..tasks import get_task

log = logging.getLogger(__name__)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip())


def read_label(task, value: Any, labels: List[str]) -> Any:
    """A label as a file holds it -> the task's feedback value: a CSV's "2.5" is a number for regression, its 1 a
    class named "1", " food " the class food (training strips labels too), "[]" an empty list of labels."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            pass
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
    if text_pair_column and text_column in columns and text_pair_column not in columns:
        raise UserError(f"{file}: no column '{text_pair_column}' (the second texts: the model reads text pairs); columns are "
                        f"{columns}; set --text_pair_column, or name the predictions by id")
    none_allowed = _takes_no_labels(task, labels)  # multi-label: an empty cell is "none of the labels", as in training
    rows = []
    for i, raw in enumerate(table):
        where = f"{file}: row {i + 1}"
        given_id = raw.get(id_column) if id_column in columns else None
        text = raw.get(text_column) if text_column in columns else None
        if _missing(given_id) and _missing(text):
            raise UserError(f"{where}: neither '{id_column}' nor '{text_column}' is given; each row needs one")
        if _missing(raw[label_column]) and not none_allowed:
            raise UserError(f"{where}: column '{label_column}' is empty; give the right label")
        try:
            label = [] if _missing(raw[label_column]) else read_label(task, raw[label_column], labels)
        except ValueError as err:
            raise UserError(f"{where}, column '{label_column}': {err}") from None
        row = {"label": label, "source": f"file:{file.name}"}
        if not _missing(given_id):
            row["id"] = str(given_id)
        if not _missing(text):
            row["text"] = str(text)
            if text_pair_column and _missing(raw.get(text_pair_column)) and "id" not in row:
                raise UserError(f"{where}: column '{text_pair_column}' is empty; the model reads text pairs: give the "
                                "second text (or the prediction's id)")
            if text_pair_column and not _missing(raw.get(text_pair_column)):
                row["text_pair"] = str(raw[text_pair_column])
        rows.append(row)
    if not rows:
        raise UserError(f"{file}: no rows")
    return rows


def _takes_no_labels(task, labels: List[str]) -> bool:
    try:
        return task.decoding.feedback_value([], labels) == []
    except (ValueError, TypeError):
        return False


class UnknownIds(Exception):
    pass


def _attached(conn, rows: List[Dict], model: str) -> Dict[str, int]:
    """How the rows will join the log's predictions: ids of another model's predictions, texts that this model
    predicted, texts only another model predicted (stored as labelled texts, not attached to those)."""
    counts = {"other_ids": 0, "own_texts": 0, "other_texts": 0, "new_texts": 0}
    for row in rows:
        if row.get("id") is not None:
            made = conn.execute("SELECT model FROM predictions WHERE id = ?", (row["id"],)).fetchone()
            counts["other_ids"] += bool(made and made[0] != model)
            continue
        models = {m for (m,) in conn.execute("SELECT DISTINCT model FROM predictions WHERE text = ? AND text_pair IS ?",
                                             (row["text"], row.get("text_pair")))}
        counts["own_texts" if model in models else "other_texts" if models else "new_texts"] += 1
    return counts


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
    a text that this model's predictions logged (`--log_texts`) is matched to its newest one (a text only another
    model predicted is stored as a labelled text, for retrain, not attached to that model's). All rows are checked first: one bad row (an
    unknown id, a label the model does not have) fails the command and nothing is stored. Returns the rows stored.

    Args:
        run: The run directory whose model made the predictions (its labels check the file's).
        file: CSV/TSV/JSON/JSONL/Parquet file with the labels.
        log: The prediction log (SQLite) of `serve --log` / `predict --log`.
        id_column: Column holding the prediction ids.
        text_column: Column holding the texts (rows without an id).
        text_pair_column: Column holding the second texts, for a model trained on text pairs. Default: the run's
            data.text_pair_column, else text_pair.
        label_column: Column holding the right labels (a label; labels joined by '|' for multi-label, an empty cell
            or [] for none; a number for regression).
    """
    rundir, model_dir = locate(Path(run))
    if not (model_dir / ModelDir.INFO).is_file() and not (model_dir / ModelDir.LEGACY_CALIBRATION).is_file():
        raise UserError(f"{run}: not a model that encoderfit trained ({model_dir / ModelDir.INFO} is missing), so its labels "
                        "are unknown; pass the run directory (or its model/) whose model made the logged predictions")
    info = model_dir.info()
    if log is None:
        raise UserError("--log is missing: name the prediction log (the file given to serve/predict --log)")
    task = get_task(info.task, "predict", info.options)
    if text_pair_column and not info.text_pair:
        raise UserError("--text_pair_column: this model was trained on single texts, not pairs; drop the flag")
    if info.text_pair:  # the run's own pair column, as predict reads it
        saved = rundir.config().data if rundir is not None else None
        text_pair_column = text_pair_column or (saved.text_pair_column if saved else None) or task.inputs[1]
    file = Path(file)
    if file.is_dir():
        raise UserError(f"file: {file} is a directory; give the CSV/TSV/JSONL file of labels in it")
    if not file.is_file():
        raise UserError(f"file: {file} does not exist; give the CSV/JSONL file of labels")
    rows = feedback_rows(task, info.labels, file, id_column, text_column, label_column, text_pair_column)
    store = PredictionLog(Path(log), flag="--log", create=False)
    fingerprint = model_dir.fingerprint()
    counts: Dict[str, int] = {}

    def add(conn):
        counts.update(_attached(conn, rows, fingerprint))
        stored = insert_feedback(conn, rows, model=fingerprint)  # a text joins this model's own prediction only
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
    say = logging.getLogger(__name__)
    say.info("stored %d feedback labels in %s (%d by text: %d matched this model's predictions)", count, log,
             counts["new_texts"] + counts["own_texts"] + counts["other_texts"], counts["own_texts"])
    if counts["other_texts"]:
        say.warning("%d texts were predicted by another model only (another fingerprint): stored as labelled texts for "
                    "retrain, not attached to that model's predictions; monitor %s does not count them", counts["other_texts"], run)
    if counts["other_ids"]:
        say.warning("%d ids are predictions of another model (another fingerprint): stored; monitor %s counts only its "
                    "own predictions' labels", counts["other_ids"], run)
    return count
