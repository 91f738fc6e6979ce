"""The visual report (one self-contained HTML file, figures embedded) and `encoderfit report`.

The page is the same for every task: what was trained, headline cards, the summary table against the baseline and
the training curves; then the task's own sections (tasks/*_pages.py). Every number on it is formatted from
metrics.json and carries a data-metric attribute naming its JSON path, so tests can check the page against the JSON.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Dict, List

from .config import RunConfig
from .files import atomic_file
from .rundir import RunDir
from .tasks import get_task

log = logging.getLogger(__name__)
CSS = """body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;padding:0 1em}
h1{margin-bottom:.1em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}
td.t,th.t{text-align:left;max-width:620px}img{max-width:100%;border:1px solid #eee}.muted{color:#777}
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;min-width:150px}
.card b{font-size:1.5em;display:block}"""


def _metric(metrics: Dict, path: str):
    value = metrics
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def render(metrics: Dict, cfg: RunConfig, history: List[Dict], noise: List[Dict]) -> str:
    from . import figures as f

    task = get_task(cfg.task)
    shown = ", ".join(cfg.labels[:12]) + (f", … ({len(cfg.labels)} in all)" if len(cfg.labels) > 12 else "")
    cards = [(title, f.num(_metric(metrics, path), path, fmt)) for title, path, fmt in task.headline(metrics)]
    if metrics.get("baseline"):
        key, title = task.summary[0]
        cards.insert(1, (f"baseline test {title}", f.num(metrics["baseline"][key], f"baseline.{key}")))
    summary = []
    for name, key in (("validation", "validation"), ("test", "test"), ("TF-IDF baseline (test)", "baseline")):
        if metrics.get(key):
            m = metrics[key]
            summary.append([name, str(m["n"]), *(f.num(m.get(k), f"{key}.{k}") for k, _ in task.summary)])
    sections = [
        f"<h1>encoderfit report</h1><p class=muted>{task.name} · base model <b>{f.esc(cfg.model.name_or_path)}</b> · data "
        f"<b>{f.esc(cfg.data.source)}</b> · {task.output_noun} {f.esc(shown)} · "
        f"max_length {cfg.resolved.get('max_length')}</p>",
        "<div class=cards>" + "".join(f"<div class=card>{t}<b>{v}</b></div>" for t, v in cards) + "</div>",
        "<h2>Summary</h2>" + f.table(["split", "n", *(title for _, title in task.summary)], summary, (0,)),
        "<h2>Training curves</h2>" + f.image("training curves", f.training(history, [k for k in task.metrics_for_best if k != "loss"])),
        *task.report_sections(metrics, cfg, noise),
    ]
    return (f"<!doctype html><html><head><meta charset=utf-8><title>encoderfit report</title><style>{CSS}</style></head>"
            f"<body>{''.join(sections)}</body></html>")


def write_report(run: RunDir, cfg: RunConfig, metrics: Dict) -> Path:
    """Render report.html and the model card from `cfg` and `metrics` as given (nothing is re-read from disk)."""
    from .card import write_card

    noise_file = run / RunDir.NOISE
    noise = list(csv.DictReader(noise_file.open(encoding="utf-8"))) if noise_file.is_file() else []
    with atomic_file(run / RunDir.REPORT) as handle:
        handle.write(render(metrics, cfg, run.history(), noise))
    write_card(run.model, cfg, metrics)
    return run / RunDir.REPORT


def report(run: Path) -> Path:
    """Rebuild a run's HTML report and model card from its saved predictions (no model needed, seconds).

    The head saved in the model directory (temperature, thresholds, intervals) is applied as it is: only
    `encoderfit eval` and training fit it.

    Args:
        run: Run directory written by `encoderfit train`.
    """
    from .evaluate import analyse

    rundir = RunDir(run)
    cfg = rundir.config()
    task = get_task(cfg.task)
    previous = rundir.metrics()
    preds = {role: rundir.require_predictions(role, task, cfg.labels) for role in ("validation", "test")}
    metrics = {**previous, **analyse(task, preds, cfg, rundir.model.info().head)}
    rundir.write_metrics(metrics)
    path = write_report(rundir, cfg, metrics)
    log.info("wrote %s", path)
    return path
