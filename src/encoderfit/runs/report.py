"""A run's report.md, rendered from its metrics.json, settings, history and label-noise review."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Dict, List
from ..core.runconfig import RunConfig
from ..core.files import atomic_file
from .card import distillation_lines
from .rundir import RunDir

log = logging.getLogger(__name__)


def _metric(metrics: Dict, path: str):
    value = metrics
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _baseline_sample(metrics: Dict) -> str:
    """The baseline's training examples, when report.baseline_max_rows capped them to a sample."""
    seen = metrics.get("baseline") or {}
    if not seen.get("of") or seen.get("train_examples", seen["of"]) >= seen["of"]:
        return ""
    return (f"<p class=muted>The baseline was fitted on a seeded sample of {seen['train_examples']:,} of the {seen['of']:,} "
            "training examples (report.baseline_max_rows); the model trained on all of them.</p>")


def render(metrics: Dict, cfg: RunConfig, task, history: List[Dict], noise: List[Dict]) -> str:
    from ..core import figures as f

    shown = ", ".join(cfg.labels[:12]) + (f", … ({len(cfg.labels)} in all)" if len(cfg.labels) > 12 else "")
    cards = [(title, f.num(_metric(metrics, path), path, fmt)) for title, path, fmt in task.pages.headline(metrics)]
    if metrics.get("baseline"):
        key, title = task.summary[0]
        cards.insert(1, (f"baseline test {title}", f.num(metrics["baseline"][key], f"baseline.{key}")))
    summary = []
    for name, key in (("validation", "validation"), ("test (95% CI below)", "test"), (f"{task.baseline_name} (test)", "baseline")):
        if metrics.get(key):
            m = metrics[key]
            summary.append([name, str(m["n"]), *(f.num_ci(m.get(k), f"{key}.{k}", (m.get("ci") or {}).get(k)) for k, _ in task.summary)])
    verdict = (metrics.get("comparison") or {}).get("verdict")
    sections = [
        f"<h1>encoderfit report</h1><p class=muted>{task.name} · base model <b>{f.esc(cfg.model.name_or_path)}</b> · data "
        f"<b>{f.esc(cfg.data.source)}</b> · {task.output_noun} {f.esc(shown)} · "
        f"max_length {cfg.resolved.get('max_length')}. {f.esc(_inputs(metrics))}</p>",
        (f"<p class='verdict {verdict['outcome'].split()[0]}'><b>Verdict.</b> {f.esc(verdict['sentence'])} "
         f"{f.esc(_uncertainty(metrics))}</p>" if verdict else ""),
        "<div class=cards>" + "".join(f"<div class=card>{t}<b>{v}</b></div>" for t, v in cards) + "</div>",
        "<h2>Summary</h2>" + f.table(["split", "n", *(title for _, title in task.summary)], summary, (0,)) + _baseline_sample(metrics),
        _seeds_section(metrics),
        ("<h2>Distillation</h2>" + "".join(f"<p>{f.esc(line)}</p>" for line in distillation_lines(metrics, task))
         if metrics.get("distillation") else ""),
        "<h2>Training curves</h2>" + f.image("training curves", f.training(history, [k for k in task.metrics_for_best if k != "loss"])),
        *task.pages.report_sections(metrics, cfg, noise),
    ]
    return (f"<!doctype html><html><head><meta charset=utf-8><title>encoderfit report</title><style>{f.CSS}</style></head>"
            f"<body>{''.join(sections)}</body></html>")


def _seeds_section(metrics: Dict) -> str:
    """With several seeds: each metric's spread over them, and which model was kept."""
    from ..core import figures as f

    seeds = (metrics.get("train") or {}).get("seeds")
    if not seeds:
        return ""
    rows = [[f"{role} {key}", f.num(v["mean"], f"train.seeds.spread.{role}.{key}.mean"), f.num(v["sd"], f"train.seeds.spread.{role}.{key}.sd"),
             f"{f.num(v['min'], f'train.seeds.spread.{role}.{key}.min')}–{f.num(v['max'], f'train.seeds.spread.{role}.{key}.max')}"]
            for role, values in seeds["spread"].items() for key, v in values.items()]
    kept = seeds["kept"]
    how = (f"the member best on {kept['by']} (seed {kept['seed']})" if kept["kind"] == "best member" else
           f"an ensemble of all {kept['members']}: {kept['kind']} (validation {kept['validation']['metric']}: weight average "
           f"{kept['validation']['weight average']:.4f}, logit average {kept['validation']['logit average']:.4f})")
    return (f"<h2>Seeds</h2><p>{len(seeds['seeds'])} models trained on the same split with seeds "
            f"{', '.join(map(str, seeds['seeds']))}; each evaluated under its own head. Kept: {f.esc(how)}.</p>"
            + f.table(["metric", "mean", "sd", "range"], rows, (0,)))


def _inputs(metrics: Dict) -> str:
    """One sentence on texts longer than max_length and what was done with them."""
    inputs = (metrics.get("inputs") or {}).get("test")
    if not inputs:
        return ""
    done = (f"cut into overlapping windows whose logits are aggregated ({inputs['windows_per_text']:.2f} windows per text "
            "on average)" if inputs["treatment"] == "windows" else "truncated to their first tokens")
    return (f"{inputs['longer_than_max_length']:.1%} of test texts are longer than max_length {inputs['max_length']}: "
            f"{done}.")


def _uncertainty(metrics: Dict) -> str:
    """One sentence on how many test examples the figures rest on."""
    n = metrics["test"]["n"]
    resamples = next(iter((metrics["test"].get("ci") or {}).values()), {}).get("resamples")
    return (f"The test split has {n} examples, so one example moves a share by {100 / n:.2f} points; intervals are "
            f"{resamples}-resample bootstrap 95% CIs over test examples." if resamples else "")


def write_report(run: RunDir, cfg: RunConfig, metrics: Dict) -> Path:
    """Render report.html and the model card from `cfg` and `metrics` as given (nothing is re-read from disk)."""
    from .card import write_card

    noise_file = run / RunDir.NOISE
    noise = list(csv.DictReader(noise_file.open(encoding="utf-8"))) if noise_file.is_file() else []
    with atomic_file(run / RunDir.REPORT) as handle:
        handle.write(render(metrics, cfg, run.task("report"), run.history(), noise))
    write_card(run.model, cfg, metrics)
    return run / RunDir.REPORT
