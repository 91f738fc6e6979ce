"""The task registry: --task NAME -> the object that knows that kind of target (see base/task.py: a Task and its parts).

To add a task: write its parts and its `Task` in its own module and add the Task here. No stage needs to change.
"""

from __future__ import annotations

import logging
from typing import Dict, Optional

from ..core.errors import UserError, closest
from .base import Task, check_options
from .classification.task import Classification
from .embedding.task import Embedding
from .mlm.task import MaskedLM
from .multilabel.task import Multilabel
from .ner.task import TokenClassification
from .qa.task import QuestionAnswering
from .regression.task import Regression
from .classification.setfit import EmbeddingHeadClassification
from .similarity.task import Similarity

log = logging.getLogger(__name__)

TASKS: Dict[str, Task] = {task.name: task for task in (Classification(), Multilabel(), Regression(), TokenClassification(),
                                                        Embedding(), Similarity(), QuestionAnswering(), MaskedLM())}
LABELLED = [name for name, task in TASKS.items() if "train" in task.stages]  # what --task can name


HEADS: Dict[tuple, Task] = {("classification", "embedding"): EmbeddingHeadClassification()}
"""(task, model.head) -> how training runs that task with that head (SetFit for classification on embeddings)."""


def task_for(name: str, model, options: Optional[Dict[str, dict]] = None) -> Task:
    """The task as training runs it for these model settings (model.head linear is the task itself), holding the
    run's settings of its group."""
    task = get_task(name)
    if model.head != "linear":
        task = HEADS.get((task.name, model.head))
        if task is None:
            raise UserError(f"model.head {model.head}: only classification trains a head on embeddings (SetFit); drop "
                            f"model.head for the {name} task")
    return task.configured(options)


def get_task(name: str, stage: Optional[str] = None, options: Optional[Dict[str, dict]] = None) -> Task:
    """The task called `name`; with `stage`, one that the stage can run (else a one-line error saying what to do);
    with `options` ({group: settings}, as RunConfig.options), holding the run's settings of its group."""
    if name not in TASKS:
        raise UserError(f"task: unknown task '{name}'{closest(name, TASKS)}; choose from {list(TASKS)}")
    task = TASKS[name]
    if stage is not None and stage not in task.stages:
        raise UserError(f"{stage}: {task.why_not(stage)}")
    return task.configured(options) if options is not None else task


def infer_task(ds, separator: Optional[str], column: str) -> tuple:
    """(task name, why) from the training split's label column: lists (or a label separator) -> multilabel,
    non-integer numbers -> regression, anything else -> classification."""
    from datasets import ClassLabel, Sequence, Value

    feature = ds.features["labels"]
    if separator is not None:
        return "multilabel", f"--data.label_separator '{separator}' is set"
    if isinstance(feature, Sequence) or type(feature).__name__ == "List":
        return "multilabel", f"column '{column}' holds lists of labels"
    if isinstance(feature, ClassLabel):
        return "classification", f"column '{column}' holds class labels"
    if isinstance(feature, Value) and feature.dtype.startswith("float"):
        import numpy as np

        from ..data.arrow import arrow_column

        values = arrow_column(ds, "labels").cast("float64").to_numpy()  # missing: NaN, and skipped
        values = values[~np.isnan(values)]
        if bool(np.any(~np.isfinite(values) | (values != np.floor(values)))):
            return "regression", f"column '{column}' holds numbers that are not whole"
        return "classification", f"column '{column}' holds whole numbers (pass --task regression to predict them as numbers)"
    return "classification", f"column '{column}' holds {'integers' if isinstance(feature, Value) and 'int' in feature.dtype else 'text'}"


def resolve_task(requested: Optional[str], ds, separator: Optional[str], column: str,
                 options: Optional[Dict[str, dict]] = None) -> Task:
    """The run's task: the one asked for, or the one the label column implies (stated in the log either way),
    holding the run's settings of its group."""
    if requested:
        log.info("task: %s (requested)", requested)
        return get_task(requested, "train", options or {})
    name, why = infer_task(ds, separator, column)
    log.info("task: %s (inferred: %s; set --task to choose)", name, why)
    return TASKS[name].configured(options)


def suggest_task(columns, text_column: str, where: str) -> None:
    """Without --task: refuse data that has no text column but has the columns a task names its texts by (QA's
    question and context), pointing at that task rather than at a column."""
    if text_column in columns:
        return
    for name, task in TASKS.items():
        if task.inputs != Task.inputs and set(task.inputs) <= set(columns):
            raise UserError(f"{where}: no column '{text_column}', but columns {', '.join(task.inputs)} are what the {name} task "
                            f"reads; pass --task {name} (or set --data.text_column for another task)")


OPTIONS: Dict[str, type] = {name: task.Options for name, task in TASKS.items() if task.Options is not None}
"""Task name -> the dataclass of its config group (`--ner.documents`): the CLI adds one group per entry."""


__all__ = ["HEADS", "LABELLED", "OPTIONS", "TASKS", "Task", "check_options", "get_task", "infer_task", "resolve_task", "suggest_task", "task_for"]
