"""The visual report (one self-contained HTML file, figures embedded) and `encoderfit report`.

The page is the same for every task: what was trained, headline cards, the summary table against the baseline and
the training curves; then the task's own sections (tasks/*_pages.py). Every number on it is formatted from
metrics.json and carries a data-metric attribute naming its JSON path, so tests can check the page against the JSON.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..runs.rundir import RunDir
from ..runs.report import write_report

log = logging.getLogger(__name__)


def report(run: Path) -> Path:
    """Rebuild a run's HTML report and model card from its saved predictions (no model needed, seconds).

    The head saved in the model directory (temperature, thresholds, intervals) is applied as it is: only
    `encoderfit eval` and training fit it.

    Args:
        run: Run directory written by `encoderfit train`.
    """
    from ..runs.verdict import analyse, saved_baseline

    rundir = RunDir(run)
    cfg = rundir.config()
    task = rundir.task("report")
    previous = rundir.metrics()
    preds = {role: rundir.require_predictions(role, task, cfg.labels) for role in ("validation", "test")}
    metrics = {**previous, **analyse(task, preds, cfg, rundir.model.info().head, saved_baseline(rundir, task, cfg.labels, previous))}
    rundir.write_metrics(metrics)
    path = write_report(rundir, cfg, metrics)
    log.info("wrote %s", path)
    return path
