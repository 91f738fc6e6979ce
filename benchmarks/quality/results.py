"""The quality table of docs/results.md, made from the runs' own metrics.json (nothing typed by hand).

    python benchmarks/quality/results.py [runs/NAME ...]     # default: every run directory under runs/

For each run: the command's settings that matter, the test figures with their 95% bootstrap CIs, the baseline (TF-IDF; a CRF for ner; BM25 for embedding),
the verdict against it (McNemar p for classification, paired bootstrap otherwise), the spread over seeds when there
were several, the share of texts longer than max_length and the training time. Then, for classification runs that
share a test split, the test texts every one of them and the baseline gets wrong, and the best accuracy (with its CI)
a model could reach while it too gets those wrong. Writes its sections of docs/benchmarks.md and prints the markdown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import write_section  # noqa: E402
from encoderfit.core.errors import UserError  # noqa: E402
from encoderfit.runs.rundir import RunDir  # noqa: E402
from encoderfit.core.stats import bootstrap_ci  # noqa: E402
from encoderfit.tasks import get_task  # noqa: E402


def figure(m: dict, key: str, percent: bool) -> str:
    value, ci = m[key], (m.get("ci") or {}).get(key)
    show = (lambda v: f"{100 * v:.2f}%") if percent else (lambda v: f"{v:.3f}")
    return show(value) + (f" ({show(ci['low'])}–{show(ci['high'])})" if ci and ci.get("low") is not None else "")


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def row(run: RunDir) -> list:
    cfg, m = run.config(), run.metrics()
    task = get_task(cfg.task)
    primary, secondary = task.summary[0][0], task.summary[1][0]
    percent = task.name not in ("regression", "embedding", "similarity")
    comparison = (m.get("comparison") or {}).get("verdict") or {}
    p = comparison.get("p_value")
    seeds = (m.get("train") or {}).get("seeds")
    spread = ""
    if seeds:
        s = seeds["spread"]["test"][primary]
        fmt = (lambda v: f"{100 * v:.2f}") if percent else (lambda v: f"{v:.3f}")
        spread = f"{fmt(s['mean'])} ± {fmt(s['sd'])} ({len(seeds['seeds'])} seeds); kept: {seeds['kept']['kind']}"
    inputs = (m.get("inputs") or {}).get("test") or {}
    long = f"{inputs['longer_than_max_length']:.0%} {inputs['treatment']}" if inputs else ""
    runtime = (m.get("train") or {}).get("train_runtime_s") or 0
    members = len(seeds["seeds"]) if seeds else 1
    name = run.path.resolve().relative_to(ROOT / "runs") if run.path.resolve().is_relative_to(ROOT / "runs") else run.path.name
    return [f"`{name}`", cfg.model.name_or_path, f"{cfg.resolved.get('max_length')}", figure(m["test"], primary, percent),
            figure(m["test"], secondary, percent), f"{100 * m['baseline'][primary]:.2f}%" if percent else f"{m['baseline'][primary]:.3f}",
            f"{comparison.get('outcome', '')}" + ((f" (p = {p:.2g})" if p else " (p < 0.002)" if p is not None else "")), spread, long,
            f"{minutes(runtime)}" + (" per seed" if members > 1 else "")]


SHOWN = 12  # shared errors listed per split


def split_key(run: RunDir) -> tuple:
    d = run.config().data
    return (d.source, d.config_name, d.test_split, d.test_size, d.validation_size, d.split_seed, d.dedupe, d.max_train_samples)


def wrong_rows(run: RunDir, split: str) -> tuple:
    """(targets, {row: predicted label} of the wrong ones, label names) of a classification run's saved split."""
    import numpy as np

    cfg = run.config()
    task, labels = get_task(cfg.task), run.model.info().labels
    preds = run.require_predictions(split, task, labels)
    predicted = np.asarray(preds.logits).argmax(1)
    return preds, {int(i): labels[predicted[i]] for i in np.flatnonzero(predicted != preds.targets)}, labels


def shared_errors(paths: list) -> str:
    """The test texts that every classification run on one split, and its TF-IDF baseline, gets wrong."""
    import numpy as np

    groups: dict = {}
    for path in paths:
        try:
            run = RunDir(path)
            if run.config().task == "classification" and run.predictions_file("test").is_file():
                groups.setdefault(split_key(run), []).append(run)
        except (KeyError, OSError, UserError):
            continue
    parts = ["## Errors every model shares: `python benchmarks/quality/results.py`", "",
             "Classification runs on the same test split (same source, sizes and split seed): the test texts that all of "
             "them and the baseline get wrong. A model that also gets these wrong (and everything else right) can reach "
             "at best the accuracy shown, with its stratified 1,000-resample bootstrap 95% CI."]
    for runs in (g for g in groups.values() if len(g) > 1):
        preds, wrong, labels = wrong_rows(runs[0], "test")
        for run in runs[1:]:
            other_preds, other, _ = wrong_rows(run, "test")
            if list(other_preds.texts) != list(preds.texts):
                raise SystemExit(f"{run.path}: its test texts differ from {runs[0].path}'s; not the same split")
            wrong = {i: f"{p}, {other[i]}" for i, p in wrong.items() if i in other}
        with_baseline = [r for r in runs if r.predictions_file("baseline-test").is_file()]
        if with_baseline:
            baseline = wrong_rows(with_baseline[0], "baseline-test")[1]
            wrong = {i: f"{p}, {baseline[i]}" for i, p in wrong.items() if i in baseline}
        n, right = len(preds.targets), np.ones(len(preds.targets), dtype=bool)
        right[list(wrong)] = False
        ci = bootstrap_ci(lambda idx: float(right[idx].mean()), n, strata=preds.targets)
        names = ", ".join(f"`{r.path.name}`" for r in runs)
        also = " and the baseline" if with_baseline else " (no baseline predictions saved)"
        parts += ["", f"### {runs[0].config().data.source}: {len(runs)} runs ({names}){also}", "",
                  f"{len(wrong)} of {n} test texts are wrong in every run{also}; the best accuracy with them "
                  f"wrong is {100 * right.mean():.2f}% (95% CI {100 * ci['low']:.2f}–{100 * ci['high']:.2f}).", "",
                  "| test row | label | predicted (each run, then the baseline) | text |", "| --- | --- | --- | --- |"]
        shown = sorted(wrong.items())[:SHOWN]
        for i, predicted in shown:
            text = " ".join(preds.texts[i].split())[:110].replace("|", "\\|")
            parts.append(f"| {i} | {labels[preds.targets[i]]} | {predicted} | {text}… |")
        if len(wrong) > SHOWN:
            parts.append(f"| … | | | and {len(wrong) - SHOWN} more |")
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*")
    args = parser.parse_args()
    paths = [Path(p) for p in args.runs] or sorted(p for p in (ROOT / "runs").iterdir() if RunDir.is_run(p))
    header = ["run", "model", "max_length", "test: primary metric (95% CI)", "secondary (95% CI)", "baseline (TF-IDF; ner: CRF; embedding: BM25)",
              "verdict vs baseline", "seeds: test mean ± sd", "texts > max_length", "training loop time"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for path in paths:
        try:
            lines.append("| " + " | ".join(row(RunDir(path))) + " |")
        except (KeyError, OSError, UserError) as err:  # e.g. a pre-training run: no test split
            print(f"[results] {path}: skipped ({err})", file=sys.stderr)
    text = "\n".join(["## Quality: `python benchmarks/quality/results.py`", "",
                      "Every figure from the runs' own metrics.json: primary and secondary test metrics (classification: "
                      "accuracy and macro-F1; multi-label: micro- and macro-F1; regression: Pearson and Spearman; ner: entity F1 and "
                      "precision; embedding: MRR@10 and recall@1 over all held-out documents) with "
                      "1,000-resample bootstrap 95% CIs over test examples.", "", *lines])
    write_section("results", text)
    print(text)
    shared = shared_errors(paths)
    write_section("shared-errors", shared)
    print(shared)


if __name__ == "__main__":
    main()
