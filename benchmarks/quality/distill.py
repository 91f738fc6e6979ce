"""Distillation, measured: teachers, students trained directly, and students distilled from the teachers, each run by
the real CLI alone, its wall time recorded, and the table of docs/benchmarks.md ("Distillation") and docs/distill.md
written from the runs' metrics.json (test metric with its CI, and the paired tests against teacher and direct student).

    python benchmarks/quality/distill.py                    # every run below, in order (about 3 h 30 min on 2 cores)
    python benchmarks/quality/distill.py --runs vader-distilled
    python benchmarks/quality/distill.py --table-only       # rebuild the tables from runs/distill/*

Then `python benchmarks/speed/distill_speed.py runs/distill/vader-mpnet runs/distill/vader-minilm runs/distill/vader-distilled-aug4`
for the speed/accuracy trade-off.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import cpu_name, write_section  # noqa: E402

OUT = ROOT / "runs" / "distill"
VADER = ["--config", "examples/vader-movies.yaml"]
BBC = ["--config", "examples/bbc-news.yaml"]
STUDENT = ["--student", "all-MiniLM-L6-v2"]
CONLL = ["--config", "examples/conll2003.yaml", "--data.source", str(ROOT.parent / "shared" / "data" / "conll2003")]
STSB = ["--config", "examples/stsb.yaml", "--data.source", str(ROOT / "runs" / "public" / "stsb-data")]  # public.py writes it
# unlabelled text for the VADER student: the sdist's other human-rated snippets (Amazon reviews, tweets, NYT editorials)
# and the near-neutral movie snippets that the recipe's labels drop (in no split); written by vader_other_texts()
VADER_OTHER = OUT / "vader-other-texts.txt"
PUBLIC = {"conll-mpnet": "conll2003-mpnet", "conll-minilm": "conll2003",  # the same runs in benchmarks/quality/public.py
          "stsb-mpnet": "stsb-mpnet", "stsb-minilm": "stsb"}

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
    # CoNLL-2003 (human labels; ../shared/data, never shipped): the teacher is benchmarks/quality/public.py's conll2003-mpnet run
    # and the direct student its conll2003 run (the same commands; copied here when those exist)
    "conll-mpnet": ("teacher: all-mpnet-base-v2 on the labels",
                    ["train", *CONLL, "--model.name_or_path", "all-mpnet-base-v2", "--train.learning_rate", "5e-5",
                     "--train.epochs", "3"]),
    "conll-minilm": ("student model on the labels alone", ["train", *CONLL]),
    "conll-distilled": ("distilled on the training split", ["distill", "--teacher", str(OUT / "conll-mpnet"), *STUDENT, *CONLL,
                                                            "--distill.compare", str(OUT / "conll-minilm")]),
    # a patient schedule (Beyer et al. 2022: distillation keeps gaining from long training on consistent teacher targets)
    "vader-distilled-aug4-e4": ("distilled on the training split + 4 augmented variants per text, 4 epochs",
                                ["distill", "--teacher", str(OUT / "vader-mpnet"), *STUDENT, *VADER, "--distill.compare",
                                 str(OUT / "vader-minilm"), "--distill.augment", "4", "--train.epochs", "4"]),
    # real unlabelled text beside the augmentations (the rows use none): what a user with related text would add
    "vader-distilled-aug4-other": ("distilled on the training split + 4 augmented variants per text + the VADER sdist's "
                                   "other snippets, unlabelled",
                                   ["distill", "--teacher", str(OUT / "vader-mpnet"), *STUDENT, *VADER, "--distill.compare",
                                    str(OUT / "vader-minilm"), "--distill.augment", "4", "--distill.unlabelled", str(VADER_OTHER)]),
    # STS-B (human similarity ratings; ../shared/data, never shipped): an embedding student. The teacher and the direct
    # student are benchmarks/quality/public.py's stsb-mpnet and stsb runs (run those first: they also write the data copy)
    "stsb-mpnet": ("teacher: all-mpnet-base-v2 on the ratings (bf16 autocast)",
                   ["train", *STSB, "--model.name_or_path", "all-mpnet-base-v2", "--train.precision", "bf16"]),
    "stsb-minilm": ("student model on the ratings alone", ["train", *STSB]),
    "stsb-distilled": ("distilled on the training split's sentences (cosine distance to the teacher's centred vectors)",
                       ["distill", "--teacher", str(OUT / "stsb-mpnet"), *STUDENT, "--distill.compare", str(OUT / "stsb-minilm")]),
    "bbc-seeds3": ("teacher: a 3-seed MiniLM ensemble", ["train", *BBC, "--train.seeds", "3", "--train.ensemble", "true"]),
    "bbc-from-ensemble": ("one MiniLM distilled from the 3-seed ensemble", ["distill", "--teacher", str(OUT / "bbc-seeds3"),
                                                                            *STUDENT, *BBC]),
}


def vader_other_texts() -> None:
    """VADER_OTHER: every Amazon, tweet and NYT snippet of the sdist, and the movie snippets the labelled recipe drops
    as near-neutral; one per line (the run itself drops any validation or test text)."""
    sys.path.insert(0, str(ROOT / "src"))
    from encoderfit.data.recipes import vader, vader_snippets

    labelled = set(vader("movies")["train"]["text"])
    neutral = [t for t, _ in vader_snippets("movies") if t not in labelled]
    texts = neutral + [t for corpus in ("amazon", "tweets", "nyt") for t, _ in vader_snippets(corpus)]
    VADER_OTHER.parent.mkdir(parents=True, exist_ok=True)
    VADER_OTHER.write_text("".join(" ".join(t.split()) + "\n" for t in texts if t.strip()), encoding="utf-8")
    print(f"{VADER_OTHER}: {len(texts):,} texts, {len(neutral):,} of them near-neutral movie snippets", flush=True)


def run(name: str) -> None:
    out = OUT / name
    if str(VADER_OTHER) in RUNS[name][1]:
        vader_other_texts()
    public = ROOT / "runs" / "public" / PUBLIC.get(name, "-")
    if (public / "wall.json").is_file():  # benchmarks/quality/public.py ran the same command: reuse it, never train it twice
        print(f"{name}: the same run as {public}, copied", flush=True)
        shutil.copytree(public, out, dirs_exist_ok=True)
        return
    if CONLL[-1] in RUNS[name][1] and not Path(CONLL[-1]).is_dir():
        sys.exit(f"{name}: {CONLL[-1]} is absent (CoNLL-2003 is not shipped; see ../shared/data/README.md)")
    command = ["encoderfit", *RUNS[name][1], "--output_dir", str(out), "--overwrite", "true"]
    print("$", " ".join(command), flush=True)
    started = time.time()
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    record = {"command": " ".join(["encoderfit", *RUNS[name][1]]).replace(str(ROOT) + "/", ""), "wall_s": round(time.time() - started, 1),
              "date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores, {cpu_name()}"}
    (out / "wall.json").write_text(json.dumps(record) + "\n")


def _pct(value, ci=None, key: str = "accuracy") -> str:
    if key == "spearman":  # a correlation, not a share: as the public table shows it
        shown = f"**{value:.3f}**"
        return f"{shown} [{ci['low']:.3f}–{ci['high']:.3f}]" if ci else shown
    shown = f"**{100 * value:.2f}%**"
    return f"{shown} [{100 * ci['low']:.1f}–{100 * ci['high']:.1f}]" if ci else shown


def _headline(test: dict) -> tuple[str, str]:
    """The test metric a run is judged by: accuracy, Spearman for similarity, or entity F1 for NER (its key, and how
    the table names it)."""
    for key, title in (("accuracy", "accuracy"), ("spearman", "Spearman")):
        if key in test:
            return key, title
    return "f1", "entity F1"


def _against(section: dict) -> str:
    if not section:
        return "–"
    c = section["comparison"]
    d, m = c["verdict"]["difference"], c.get("mcnemar") or {}
    if c["verdict"].get("metric") == "spearman":  # a difference of correlations
        said = f"{c['verdict']['outcome']}: {d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
    else:
        said = f"{c['verdict']['outcome']}: {100 * d['difference']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}] points"
    said += f", p = {d['p_value']:.2g}" if not m and d.get("p_value") is not None else ""
    return said + (f", McNemar p = {m['p_value']:.2g} ({m['model_only_right']} vs {m['baseline_only_right']})" if m else "")


def table() -> str:
    import torch
    import transformers
    import yaml

    rows = ["| run | what | model | test metric (95% CI) | classical baseline, same split | against the teacher | against the student trained on labels | transfer set | wall time |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, (what, _) in RUNS.items():
        out = OUT / name
        if not (out / "metrics.json").is_file():
            continue
        metrics = json.loads((out / "metrics.json").read_text())
        wall = json.loads((out / "wall.json").read_text()) if (out / "wall.json").is_file() else {}
        test, d = metrics["test"], metrics.get("distillation") or {}
        transfer = d.get("transfer")
        extra = f" + {transfer['unlabelled']:,} unlabelled" if transfer and transfer.get("unlabelled") else ""
        sizes = f"{transfer['total']:,} texts ({transfer['train']:,}{extra} + {transfer['augmented']:,} augmented)" if transfer else "–"
        took = f"{int(wall['wall_s']) // 60} min {int(wall['wall_s']) % 60:02d} s" if wall.get("wall_s") else "–"
        took = f"at most {took} (other jobs ran beside it)" if wall.get("alone") is False else took
        took += f" ({wall['where']})" if wall.get("where") else ""  # a run copied from another machine's session
        name_or_path = yaml.safe_load((out / "config.yaml").read_text())["model"]["name_or_path"]
        key, title = _headline(test)
        base = metrics["baseline"]
        shown = f"{base[key]:.3f}" if key == "spearman" else f"{100 * base[key]:.2f}%"
        rows.append(f"| `{name}` | {what} | {name_or_path} | {title} {_pct(test[key], (test.get('ci') or {}).get(key), key)} | "
                    f"{shown} ({base.get('model', 'baseline').split(' (')[0]}) | {_against(d.get('teacher'))} | {_against(d.get('direct'))} | "
                    f"{sizes} | {took} |")
    return "\n".join(rows) + (
        f"\n\nEach run alone on the machine unless said ({cpu_name()}, {os.cpu_count()} cores), torch "
        f"{torch.__version__}, transformers {transformers.__version__}; `python benchmarks/quality/distill.py` re-runs them and rewrites "
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
