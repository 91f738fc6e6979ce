"""The quality table of the README, made from the runs' own metrics.json (nothing typed by hand).

    python benchmarks/results.py [runs/NAME ...]     # default: every run directory under runs/

For each run: the command's settings that matter, the test figures with their 95% bootstrap CIs, the baseline (TF-IDF; a CRF for ner; BM25 for embedding),
the verdict against it (McNemar p for classification, paired bootstrap otherwise), the spread over seeds when there
were several, the share of texts longer than max_length and the training time. Writes its section of
docs/benchmarks.md and prints the markdown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import write_section  # noqa: E402
from encoderfit.errors import UserError  # noqa: E402
from encoderfit.rundir import RunDir  # noqa: E402
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
    text = "\n".join(["## Quality: `python benchmarks/results.py`", "",
                      "Every figure from the runs' own metrics.json: primary and secondary test metrics (classification: "
                      "accuracy and macro-F1; multi-label: micro- and macro-F1; regression: Pearson and Spearman; ner: entity F1 and "
                      "precision; embedding: MRR@10 and recall@1 over all held-out documents) with "
                      "1,000-resample bootstrap 95% CIs over test examples.", "", *lines])
    write_section("results", text)
    print(text)


if __name__ == "__main__":
    main()
