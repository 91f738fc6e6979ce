"""Distillation, measured: teachers, students trained directly, and students distilled from the teachers, each run by
the real CLI alone, its wall time recorded, and the table of docs/benchmarks.md ("Distillation") and docs/distill.md
written from the runs' metrics.json (test metric with its CI, and the paired tests against teacher and direct student).

    python benchmarks/distill.py                    # every run below, in order (about 1 h 40 min on 2 cores)
    python benchmarks/distill.py --runs vader-distilled
    python benchmarks/distill.py --table-only       # rebuild the tables from runs/distill/*

Then `python benchmarks/distill_speed.py runs/distill/vader-mpnet runs/distill/vader-minilm runs/distill/vader-distilled-aug4`
for the speed/accuracy trade-off.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import cpu_name, write_section  # noqa: E402

OUT = ROOT / "runs" / "distill"
VADER = ["--config", "examples/vader-movies.yaml"]
BBC = ["--config", "examples/bbc-news.yaml"]
STUDENT = ["--student", "all-MiniLM-L6-v2"]

# name -> (what it is, command arguments); runs later in the list read runs earlier in it
RUNS = {
    "vader-mpnet": ("teacher: all-mpnet-base-v2 on the labels",
                    ["train", *VADER, "--model.name_or_path", "all-mpnet-base-v2", "--train.learning_rate", "5e-5"]),
    "vader-minilm": ("student model on the labels alone", ["train", *VADER]),
    "vader-distilled": ("distilled on the training split", ["distill", "--teacher", str(OUT / "vader-mpnet"), *STUDENT, *VADER,
                                                            "--distill.compare", str(OUT / "vader-minilm")]),
    "vader-distilled-aug4": ("distilled on the training split + 4 augmented variants per text",
                             ["distill", "--teacher", str(OUT / "vader-mpnet"), *STUDENT, *VADER, "--distill.compare",
                              str(OUT / "vader-minilm"), "--distill.augment", "4"]),
    "vader-distilled-aug8": ("distilled on the training split + 8 augmented variants per text",
                             ["distill", "--teacher", str(OUT / "vader-mpnet"), *STUDENT, *VADER, "--distill.compare",
                              str(OUT / "vader-minilm"), "--distill.augment", "8"]),
    "bbc-seeds3": ("teacher: a 3-seed MiniLM ensemble", ["train", *BBC, "--train.seeds", "3", "--train.ensemble", "true"]),
    "bbc-from-ensemble": ("one MiniLM distilled from the 3-seed ensemble", ["distill", "--teacher", str(OUT / "bbc-seeds3"),
                                                                            *STUDENT, *BBC]),
}


def run(name: str) -> None:
    out = OUT / name
    command = ["encoderfit", *RUNS[name][1], "--output_dir", str(out), "--overwrite", "true"]
    print("$", " ".join(command), flush=True)
    started = time.time()
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    record = {"command": " ".join(["encoderfit", *RUNS[name][1]]).replace(str(ROOT) + "/", ""), "wall_s": round(time.time() - started, 1),
              "date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores, {cpu_name()}"}
    (out / "wall.json").write_text(json.dumps(record) + "\n")


def _pct(value, ci=None) -> str:
    shown = f"**{100 * value:.2f}%**"
    return f"{shown} [{100 * ci['low']:.1f}–{100 * ci['high']:.1f}]" if ci else shown


def _against(section: dict) -> str:
    if not section:
        return "–"
    c = section["comparison"]
    d, m = c["verdict"]["difference"], c.get("mcnemar") or {}
    said = f"{c['verdict']['outcome']}: {100 * d['difference']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}] points"
    return said + (f", McNemar p = {m['p_value']:.2g} ({m['model_only_right']} vs {m['baseline_only_right']})" if m else "")


def table() -> str:
    import torch
    import transformers
    import yaml

    rows = ["| run | what | model | test accuracy (95% CI) | TF-IDF, same split | against the teacher | against the student trained on labels | transfer set | wall time |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, (what, _) in RUNS.items():
        out = OUT / name
        if not (out / "metrics.json").is_file():
            continue
        metrics = json.loads((out / "metrics.json").read_text())
        wall = json.loads((out / "wall.json").read_text()) if (out / "wall.json").is_file() else {}
        test, d = metrics["test"], metrics.get("distillation") or {}
        transfer = d.get("transfer")
        sizes = f"{transfer['total']:,} texts ({transfer['train']:,} + {transfer['augmented']:,} augmented)" if transfer else "–"
        took = f"{int(wall['wall_s']) // 60} min {int(wall['wall_s']) % 60:02d} s" if wall.get("wall_s") else "–"
        took = f"at most {took} (other jobs ran beside it)" if wall.get("alone") is False else took
        name_or_path = yaml.safe_load((out / "config.yaml").read_text())["model"]["name_or_path"]
        rows.append(f"| `{name}` | {what} | {name_or_path} | {_pct(test['accuracy'], (test.get('ci') or {}).get('accuracy'))} | "
                    f"{100 * metrics['baseline']['accuracy']:.2f}% | {_against(d.get('teacher'))} | {_against(d.get('direct'))} | "
                    f"{sizes} | {took} |")
    return "\n".join(rows) + (
        f"\n\nEach run alone on the machine unless said ({cpu_name()}, {os.cpu_count()} cores), torch "
        f"{torch.__version__}, transformers {transformers.__version__}; `python benchmarks/distill.py` re-runs them and rewrites "
        "this table. Differences are the student's minus the other model's, paired bootstrap over the same test texts.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--table-only", action="store_true", help="only rebuild the tables from runs/distill/*")
    args = parser.parse_args()
    if not args.table_only:
        for name in args.runs:
            run(name)
    text = table()
    write_section("distill-results", "## Distillation\n\n" + text)
    write_section("distill-results", text, path=ROOT / "docs" / "distill.md")
    print(text)


if __name__ == "__main__":
    main()
