"""Metrics for a classifier, and `encoderfit eval`: score a trained run on a labelled split or file."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from .config import RunConfig
from .data import canonical, encode_labels, load_source, prepare
from .errors import UserError
from .files import write_json
from .predict import Classifier

log = logging.getLogger(__name__)
AVERAGES = ("macro", "micro", "weighted")


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: List[str]) -> Dict:
    """Accuracy; precision/recall/F1 macro, micro and weighted; per-class scores; confusion matrix (rows = true)."""
    ids = list(range(len(labels)))
    metrics: Dict = {"n": int(len(y_true)), "accuracy": float(accuracy_score(y_true, y_pred))}
    for avg in AVERAGES:
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=ids, average=avg, zero_division=0)
        metrics.update({f"precision_{avg}": float(p), f"recall_{avg}": float(r), f"f1_{avg}": float(f)})
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=ids, average=None, zero_division=0)
    metrics["per_class"] = {
        name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, name in enumerate(labels)
    }
    metrics["confusion_matrix"] = {"labels": labels, "matrix": confusion_matrix(y_true, y_pred, labels=ids).tolist()}
    return metrics


def trainer_metrics(eval_pred) -> Dict[str, float]:
    """The summary metrics the Trainer logs at each evaluation (and picks the best checkpoint by)."""
    logits, y_true = eval_pred
    y_pred = np.asarray(logits).argmax(-1)
    _, _, f1, _ = precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    return {"accuracy": float(accuracy_score(y_true, y_pred)), "f1_macro": float(f1)}


def print_summary(results: Dict[str, Dict], console: Optional[Console] = None) -> None:
    """One row per split: n, accuracy and the F1 averages."""
    table = Table(title="encoderfit metrics")
    for column in ("split", "n", "accuracy", "f1_macro", "f1_micro", "f1_weighted"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for split, m in results.items():
        table.add_row(split, str(m["n"]), *(f"{m[k]:.4f}" for k in ("accuracy", "f1_macro", "f1_micro", "f1_weighted")))
    (console or Console()).print(table)


def print_per_class(metrics: Dict, console: Optional[Console] = None) -> None:
    table = Table(title="per class")
    for column in ("label", "precision", "recall", "f1", "support"):
        table.add_column(column, justify="left" if column == "label" else "right")
    for name, m in metrics["per_class"].items():
        table.add_row(name, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", str(m["support"]))
    labels, matrix = metrics["confusion_matrix"]["labels"], metrics["confusion_matrix"]["matrix"]
    confusion = Table(title="confusion matrix (rows: true, columns: predicted)")
    confusion.add_column("")
    for name in labels:
        confusion.add_column(name, justify="right")
    for name, row in zip(labels, matrix):
        confusion.add_row(name, *map(str, row))
    console = console or Console()
    console.print(table)
    console.print(confusion)


def score(classifier, dataset) -> Dict:
    """Run `classifier` over a canonical dataset (text[, text_pair], labels) and compute all metrics."""
    pairs = dataset["text_pair"] if "text_pair" in dataset.column_names else None
    y_pred = classifier.logits(dataset["text"], pairs).argmax(-1)
    return classification_metrics(dataset["labels"], y_pred, classifier.labels)


def evaluate(
    run: Path,
    data: Optional[str] = None,
    split: str = "test",
    text_column: Optional[str] = None,
    text_pair_column: Optional[str] = None,
    label_column: Optional[str] = None,
    output: Optional[Path] = None,
    device: Optional[str] = None,
) -> Dict:
    """Score a trained run: accuracy, precision/recall/F1 (macro, micro, weighted), per-class report, confusion matrix.

    Args:
        run: Run directory written by `encoderfit train`.
        data: Labelled data to score: a file, a directory of split files, a hub dataset or a recipe. Default: the
            run's own data, split exactly as in training.
        split: Which split to score (train, validation or test). A single file given as --data is scored whole.
        text_column: Column holding the text. Default: the run's data.text_column.
        text_pair_column: Column holding the second text of a pair. Default: the run's data.text_pair_column.
        label_column: Column holding the label. Default: the run's data.label_column.
        output: Where to write the metrics JSON. Default: RUN/eval/<split>.json.
        device: Device to run on (cpu, cuda, cuda:1). Default: cuda when available.
    """
    run = Path(run)
    cfg = RunConfig.load(run)
    args = replace(
        cfg.data,
        text_column=text_column or cfg.data.text_column,
        text_pair_column=text_pair_column or cfg.data.text_pair_column,
        label_column=label_column or cfg.data.label_column,
    )
    classifier = Classifier.from_pretrained(run, device=device)
    if classifier.labels != cfg.labels:
        raise UserError(f"{run}: the model's labels {classifier.labels} differ from config.yaml's {cfg.labels}; the run directory is inconsistent")
    if data is None:
        roles = {"train": "train", "validation": "validation", "test": "test"}
        if split not in roles:
            raise UserError(f"--split: '{split}' is not one of {list(roles)} for the run's own data")
        dataset = prepare(args).as_dict()[split]
        where = f"{cfg.data.source} [{split}]"
    else:
        loaded = load_source(data, None)
        name = split if split in loaded else (next(iter(loaded)) if len(loaded) == 1 else None)
        if name is None:
            raise UserError(f"--split: no split '{split}' in {data}; splits are {list(loaded)}")
        where = f"{data} [{name}]"
        dataset = encode_labels(canonical(loaded[name], args, where), args, where, cfg.labels)
    metrics = score(classifier, dataset)
    metrics["data"] = where
    out = Path(output) if output else run / "eval" / f"{split}.json"
    write_json(out, metrics)
    console = Console()
    print_summary({where: metrics}, console)
    print_per_class(metrics, console)
    log.info("wrote %s", out)
    return metrics
