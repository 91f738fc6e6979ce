"""Terminal tables (rich): the summary every task shares, and building blocks the tasks' details use."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple


def _console(console=None):
    from rich.console import Console

    return console or Console()


def summary_table(rows: Dict[str, Dict], columns: Sequence[Tuple[str, str]], title: str = "encoderfit metrics"):
    """One row per split (or model): n and the task's summary metrics."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("split", justify="left")
    table.add_column("n", justify="right")
    for _, name in columns:
        table.add_column(name, justify="right")
    for split, m in rows.items():
        cells = []
        for k, _ in columns:
            ci = (m.get("ci") or {}).get(k)
            value = f"{m[k]:.4f}" if isinstance(m.get(k), (int, float)) else "–"
            cells.append(f"{value}\n({ci['low']:.4f}–{ci['high']:.4f})" if ci and ci.get("low") is not None else value)
        table.add_row(split, str(m.get("n", "")), *cells)
    return table


def per_label_table(title: str, per_label: Dict[str, Dict], keys: Sequence[str]):
    """One row per class or label: its scores."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("label", justify="left")
    for key in keys:
        table.add_column(key, justify="right")
    for name, m in per_label.items():
        table.add_row(name, *(str(m[k]) if isinstance(m[k], int) else f"{m[k]:.4f}" for k in keys))
    return table


def square_table(title: str, labels: List[str], matrix: List[List[int]]):
    """A labels x labels matrix (a confusion matrix: rows true, columns predicted)."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("")
    for name in labels:
        table.add_column(name, justify="right")
    for name, row in zip(labels, matrix):
        table.add_row(name, *map(str, row))
    return table


def print_evaluation(results: Dict, split: str, task, labels: List[str], console=None) -> None:
    """Everything `encoderfit eval` shows: the summary (with the baseline), then the task's own details."""
    console = _console(console)
    rows = {role: results[role] for role in ("validation", "test") if role in results} or {split: results[split]}
    if results.get("baseline"):
        rows[f"{task.baseline_name}, test"] = results["baseline"]
    console.print(summary_table(rows, task.summary, "encoderfit metrics (test: 95% bootstrap CI beneath)"))
    verdict = (results.get("comparison") or {}).get("verdict")
    if verdict:
        console.print(f"verdict: {verdict['sentence']}")
    task.pages.print_details(results, split, labels, console)


def print_rows(title: str, rows: List[Dict], columns: Optional[List[str]] = None, console=None) -> None:
    """A list of dicts as a table (tune's trials)."""
    from rich.table import Table

    columns = columns or list(dict.fromkeys(k for row in rows for k in row))
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*("" if row.get(c) is None else f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in columns))
    _console(console).print(table)
