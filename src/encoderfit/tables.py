"""Terminal tables (rich) for metrics: the summary, per-class scores, confusion matrix, calibration, threshold."""

from __future__ import annotations

from typing import Dict, List, Optional

from rich.console import Console
from rich.table import Table

SUMMARY = ("accuracy", "f1_macro", "f1_micro", "f1_weighted")


def print_summary(results: Dict[str, Dict], console: Optional[Console] = None) -> None:
    """One row per split (or model): n, accuracy and the F1 averages."""
    table = Table(title="encoderfit metrics")
    for column in ("split", "n", *SUMMARY):
        table.add_column(column, justify="left" if column == "split" else "right")
    for split, m in results.items():
        table.add_row(split, str(m["n"]), *(f"{m[k]:.4f}" for k in SUMMARY))
    (console or Console()).print(table)


def print_per_class(metrics: Dict, console: Optional[Console] = None) -> None:
    console = console or Console()
    table = Table(title="per class")
    for column in ("label", "precision", "recall", "f1", "support"):
        table.add_column(column, justify="left" if column == "label" else "right")
    for name, m in metrics["per_class"].items():
        table.add_row(name, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", str(m["support"]))
    console.print(table)
    labels, matrix = metrics["confusion_matrix"]["labels"], metrics["confusion_matrix"]["matrix"]
    confusion = Table(title="confusion matrix (rows: true, columns: predicted)")
    confusion.add_column("")
    for name in labels:
        confusion.add_column(name, justify="right")
    for name, row in zip(labels, matrix):
        confusion.add_row(name, *map(str, row))
    console.print(confusion)


def print_evaluation(results: Dict, split: str, labels: List[str], console: Optional[Console] = None) -> None:
    """Everything `encoderfit eval` shows: summary, per-class, calibration and the abstention threshold."""
    console = console or Console()
    rows = {role: results[role] for role in ("validation", "test") if role in results} or {split: results[split]}
    if "baseline" in results:
        rows["baseline (TF-IDF+LR), test"] = results["baseline"]
    print_summary(rows, console)
    m = results[split]
    print_per_class(m, console)
    cal = m["calibration"]
    console.print(
        f"calibration ({split}): temperature {results['calibration']['temperature']:.3f} "
        f"({results['calibration']['fitted_on']}); ECE {cal['before']['ece']:.4f} -> {cal['after']['ece']:.4f}, "
        f"Brier {cal['before']['brier']:.4f} -> {cal['after']['brier']:.4f}, NLL {cal['before']['nll']:.4f} -> {cal['after']['nll']:.4f}"
    )
    threshold = results["threshold"]
    row = threshold.get(split)
    if threshold["value"] is None:
        target = threshold["target_accuracy"]
        console.print("abstention threshold: none" + (f" (no threshold reaches accuracy {target} on validation)" if target else ""))
    elif row:
        console.print(
            f"abstention threshold {threshold['value']:.2f} (target accuracy {threshold['target_accuracy']}, chosen on "
            f"{threshold['chosen_on']}): on {split} answers {row['coverage']:.1%} with accuracy {row['accuracy'] or 0:.4f}"
        )
