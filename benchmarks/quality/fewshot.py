"""Few labels: full fine-tuning against classification on embeddings (SetFit, `--model.head embedding`), with 8, 16
and 64 labelled examples per class, on VADER movies and BBC News; all-MiniLM-L6-v2, the whole test split each time.

    python benchmarks/quality/fewshot.py                       # ~30 min on 2 CPU cores
    python benchmarks/quality/fewshot.py --sizes 8 --data vader-movies   # a smoke run

For each data set the recipe is split as its example config splits it (seeded, stratified); k examples per class are
drawn (seeded) from its training split for training and k per class from its validation split for validation (a
few-shot user has no large validation set either); test is the full test split. Full fine-tuning: the example's
learning rate and batch size for max(50, 2 epochs) optimizer steps (a handful of examples is otherwise one or two
steps). SetFit: 10 pairs per text, one pass, learning rate 2e-5 (the SetFit paper's), logistic regression on top.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import write_section  # noqa: E402
from speed.run import cpu_description  # noqa: E402

from encoderfit.core.args import DataArgs, ModelArgs, ReportArgs, TrainArgs  # noqa: E402
from encoderfit.runs.splits import prepare  # noqa: E402
from encoderfit.commands.train import fit  # noqa: E402

SETTINGS = {"vader-movies": {"max_length": 128, "learning_rate": 8e-5}, "bbc-news": {"max_length": 256, "learning_rate": 8e-5}}


def per_class(ds, labels, k: int, seed: int) -> list:
    rng = random.Random(seed)
    rows = [{"text": t, "label": labels[y]} for t, y in zip(ds["text"], ds["labels"])]
    by_class = {}
    for r in rows:
        by_class.setdefault(r["label"], []).append(r)
    return [r for name in sorted(by_class) for r in rng.sample(by_class[name], min(k, len(by_class[name])))]


def write(path: Path, rows: list) -> None:
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def one(source: str, k: int, head: str, home: Path, seed: int) -> dict:
    splits = prepare(DataArgs(source=source, split_seed=42))
    data = home / f"{source}-{k}"
    data.mkdir(parents=True, exist_ok=True)
    write(data / "train.jsonl", per_class(splits.train, splits.labels, k, seed))
    write(data / "validation.jsonl", per_class(splits.validation, splits.labels, k, seed + 1))
    write(data / "test.jsonl", [{"text": t, "label": splits.labels[y]} for t, y in zip(splits.test["text"], splits.test["labels"])])
    n = k * len(splits.labels)
    settings = SETTINGS[source]
    if head == "linear":
        train = TrainArgs(batch_size=16, learning_rate=settings["learning_rate"], max_steps=max(50, 2 * math.ceil(n / 16)),
                          seed=seed, report_to=[])
    else:
        train = TrainArgs(batch_size=16, learning_rate=2e-5, epochs=1, seed=seed, report_to=[], contrastive_pairs=10)
    started = time.time()
    out = fit(DataArgs(source=str(data)), ModelArgs(name_or_path="all-MiniLM-L6-v2", max_length=settings["max_length"], head=head),
              train, ReportArgs(baseline=head == "linear"), task="classification", output_dir=home / f"run-{source}-{k}-{head}", overwrite=True)
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    return {"accuracy": metrics["test"]["accuracy"], "ci": metrics["test"]["ci"]["accuracy"], "seconds": time.time() - started,
            "tfidf": (metrics.get("baseline") or {}).get("accuracy"), "n": metrics["test"]["n"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 64])
    parser.add_argument("--data", nargs="+", default=["vader-movies", "bbc-news"])
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    started = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for source in args.data:
            for k in args.sizes:
                full, setfit = (one(source, k, head, Path(tmp), args.seed) for head in ("linear", "embedding"))
                show = lambda r: f"{100 * r['accuracy']:.1f}% [{100 * r['ci']['low']:.1f}–{100 * r['ci']['high']:.1f}] ({r['seconds']:.0f} s)"  # noqa: E731
                rows.append(f"| {source} | {k} | {show(full)} | {show(setfit)} | {100 * full['tfidf']:.1f}% |")
                print(rows[-1], flush=True)
    text = f"""## Few labels: full fine-tuning against SetFit

`{" ".join(["python benchmarks/quality/fewshot.py", *sys.argv[1:]])}` ({time.time() - started:.0f} s), on {cpu_description()}, {torch.get_num_threads()} threads,
torch {torch.__version__}, Python {platform.python_version()}: all-MiniLM-L6-v2 trained on k labelled examples per class
(validation: k per class as well), scored on the whole test split (test accuracy, 95% bootstrap CI, wall time of the
run including evaluation). One draw of the k examples (seed {args.seed}): with so few examples the draw itself moves
accuracy by points, so read neighbouring sizes together. TF-IDF: the bag-of-words baseline on the same k per class.

| data | k per class | full fine-tuning | SetFit (`--model.head embedding`) | TF-IDF |
|---|---|---|---|---|
""" + "\n".join(rows)
    write_section("fewshot", text)
    print(text)


if __name__ == "__main__":
    main()
