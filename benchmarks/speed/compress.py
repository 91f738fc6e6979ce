"""Pruned + distilled against the original (`encoderfit compress`), measured alone: texts/s and latency per text on
the CPU in PyTorch and ONNX int8, the test metric with its interval and the paired test against the original.

    python benchmarks/speed/compress.py                        # VADER movies, BBC News, CoNLL-2003, mpnet vs MiniLM
    python benchmarks/speed/compress.py --sets vader --targets 2 3 --repeats 3

Per set: the original run is trained from the example config when RUNS/SET is missing (`encoderfit train`), then
compressed at each --targets speed-up with `--quantize int8` (RUNS/SET-xT: the command's own table has the metric's
interval and the paired test against the original, on the same test texts). The timings here are this script's:
best of --repeats passes over the test texts after a warm-up (texts/s), and the median of single-text calls over
the first 64 (ms per text), one model at a time, alone on the machine. `mpnet`: all-mpnet-base-v2 trained on VADER,
pruned to MiniLM-L6's cost (the cost model's ratio), against MiniLM distilled from the same mpnet run: the accuracy
of each at their measured speed. Writes RUNS/compress-results.json and the `compress` section of docs/compress.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import best_of, cpu_name, write_section  # noqa: E402

CONLL = ROOT.parent / "shared" / "data" / "conll2003"
SETS = {
    "vader": ["--config", "examples/vader-movies.yaml"],
    "bbc": ["--config", "examples/bbc-news.yaml"],
    "conll": ["--config", "examples/conll2003.yaml", "--data.source", str(CONLL)],
}
MPNET = ["--config", "examples/vader-movies.yaml", "--model.name_or_path", "all-mpnet-base-v2", "--train.learning_rate", "5e-5"]


def encoderfit(*args: str) -> None:
    print("$ encoderfit", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "encoderfit", *args], check=True, cwd=ROOT)


def trained(path: Path, args) -> Path:
    if not (path / "metrics.json").is_file():
        encoderfit("train", *args, "--output_dir", str(path))
    return path


def compressed(original: Path, target: float, extra=()) -> Path:
    out = original.parent / f"{original.name}-x{target:g}"
    if not (out / "metrics.json").is_file():
        encoderfit("compress", str(original), "--compress.target_speedup", str(target), "--quantize", "int8",
                   "--output_dir", str(out), "--overwrite", "true", *extra)
    return out


def timed(path: Path, backend: str, texts, repeats: int) -> dict:
    from encoderfit.runs.predictor import Predictor

    model = Predictor.from_pretrained(path, device="cpu", backend=backend)
    seconds, _ = best_of(lambda: model.logits(texts), repeats)
    single = []
    for text in texts[:64]:
        started = time.perf_counter()
        model.logits([text])
        single.append(time.perf_counter() - started)
    return {"texts_per_s": round(len(texts) / seconds, 1), "ms_per_text": round(1000 * statistics.median(single), 2)}


def measure(name: str, original: Path, runs, repeats: int) -> list:
    """Rows of one set: the original (PyTorch, int8) and each compressed run (PyTorch, int8), timed here; the metric,
    its interval and the paired test from the compressed run's own table."""
    texts, rows, base = test_texts(original), [], None
    for run in runs:
        table = json.loads((run / "metrics.json").read_text())["compression"]["table"]
        plan = json.loads((run / "metrics.json").read_text())["compression"]["plan"]
        for entry in table:
            if entry["model"].startswith("original") and any(r["model"] == entry["model"] for r in rows):
                continue  # the original's rows once per set
            path = original if entry["model"].startswith("original") else run
            backend = "onnx-int8" if "int8" in entry["model"] else "torch"
            if entry["model"] == "original int8":
                path = run.parent / f".{original.name}-int8"
                if not (path / "model.int8.onnx").is_file():
                    encoderfit("export", str(original), "--quantize", "int8", "--output", str(path))
            speed = timed(path, backend, texts, repeats)
            if entry["model"] == "original":
                base = speed["texts_per_s"]
            rows.append({"set": name, "model": entry["model"], "run": str(run if path == run else original),
                         "plan": None if entry["model"].startswith("original") else
                         f"{plan['layers']}/{plan['original']['layers']} layers, FFN {plan['intermediate_size']}",
                         "size_mb": entry["size_mb"], **speed, "speedup": round(speed["texts_per_s"] / base, 2),
                         "metric": entry["metric"], "test": entry["test"], "against_original": entry.get("against_original")})
            print(rows[-1], flush=True)
    return rows


def markdown(rows: list) -> str:
    lines = ["| set | model | plan | size MB | texts/s | ms/text | vs original | test metric [95% CI] | paired difference [95% CI] |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t, vs = r["test"], r.get("against_original")
        diff = (f"{vs['difference']['difference']:+.4f} [{vs['difference']['low']:+.4f}, {vs['difference']['high']:+.4f}] "
                f"({vs['outcome']})") if vs else "–"
        lines.append(f"| {r['set']} | {r['model']} | {r['plan'] or '–'} | {r['size_mb']:.1f} | {r['texts_per_s']:.0f} | "
                     f"{r['ms_per_text']:.2f} | {r['speedup']:.2f}x | {r['metric']} {t['value']:.4f} "
                     f"[{t['low']:.4f}, {t['high']:.4f}] | {diff} |")
    return "\n".join(lines)


def main() -> None:
    import torch
    import transformers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["vader", "bbc", "conll", "mpnet"], choices=[*SETS, "mpnet"])
    parser.add_argument("--targets", nargs="+", type=float, default=[2.0, 3.0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "compress")
    args = parser.parse_args()

    rows = []
    for name in [s for s in args.sets if s in SETS]:
        original = trained(args.runs / name, SETS[name])
        rows += measure(name, original, [compressed(original, t) for t in args.targets], args.repeats)
    if "mpnet" in args.sets:
        mpnet = trained(args.runs / "vader-mpnet", MPNET)
        minilm = args.runs / "vader-minilm-distilled"
        if not (minilm / "metrics.json").is_file():
            encoderfit("distill", "--teacher", str(mpnet), "--student", "all-MiniLM-L6-v2", "--config",
                       "examples/vader-movies.yaml", "--distill.augment", "4", "--output_dir", str(minilm))
        ratio = cost(mpnet) / cost(minilm)  # the cost model's ratio at the test texts' mean length
        rows += measure("mpnet pruned", mpnet, [compressed(mpnet, round(ratio, 2))], args.repeats)
        base = next(r for r in rows if r["set"] == "mpnet pruned" and r["model"] == "original")
        rows.append(student_row(minilm, mpnet, base["texts_per_s"], args.repeats))
    out = args.runs / "compress-results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    note = (f"\n\n`python benchmarks/speed/compress.py --sets {' '.join(args.sets)} --targets "
            f"{' '.join(f'{t:g}' for t in args.targets)}`: test texts, best of {args.repeats} passes after a warm-up, alone on "
            f"the machine ({cpu_name()}, {os.cpu_count()} cores), torch {torch.__version__}, transformers "
            f"{transformers.__version__}, {time.strftime('%Y-%m-%d')}. Intervals and paired tests: the compress command's "
            "own table (paired bootstrap on the same test texts).")
    text = kept_with(markdown(rows), note, {r["set"] for r in rows}, ROOT / "docs" / "compress.md")
    write_section("compress", text, path=ROOT / "docs" / "compress.md")
    print(markdown(rows) + note)


def kept_with(table: str, note: str, measured: set, doc: Path) -> str:
    """The section's new text: the rows (and notes) of the sets measured in earlier runs kept, this run's sets
    replaced, so `--sets conll` adds CoNLL beside VADER and BBC rather than erasing them."""
    import re

    found = re.search(r"<!-- compress -->(.*?)<!-- /compress -->", doc.read_text() if doc.is_file() else "", re.S)
    old = found.group(1).strip().splitlines() if found else []
    rows = [line for line in old[2:] if line.startswith("| ") and line.split("|")[1].strip() not in measured]
    notes = [line for line in old if line.strip() and not line.startswith("|")]
    lines = table.splitlines()
    return "\n".join([*lines[:2], *rows, *lines[2:]]) + "\n\n" + "\n\n".join([*notes, note.strip()])


def student_row(minilm: Path, mpnet: Path, original_speed: float, repeats: int) -> dict:
    """The MiniLM student distilled from the mpnet run: its speed timed here, its accuracy, interval and paired test
    against the mpnet run from its own metrics.json."""
    from encoderfit.runs.rundir import RunDir

    metrics = RunDir(minilm).metrics()
    speed = timed(minilm, "torch", test_texts(mpnet), repeats)
    verdict = metrics["distillation"]["teacher"]["comparison"]["verdict"]
    return {"set": "mpnet pruned", "model": "MiniLM-L6 distilled from mpnet", "run": str(minilm), "plan": "MiniLM-L6",
            "size_mb": round(sum(p.stat().st_size for p in (minilm / "model").rglob("*.safetensors")) / 2 ** 20, 2), **speed,
            "speedup": round(speed["texts_per_s"] / original_speed, 2), "metric": "accuracy",
            "test": {"value": metrics["test"]["accuracy"], **metrics["test"]["ci"]["accuracy"]},
            "against_original": {"outcome": verdict["outcome"], "difference": verdict["difference"]}}


def cost(run: Path) -> float:
    """The cost model's multiply-adds of a run's encoder for one test text of the mean length."""
    from encoderfit.models.pruning import Shape, encoder_of
    from encoderfit.commands.compress import mean_tokens
    from encoderfit.runs.predictor import Predictor

    predictor = Predictor.from_pretrained(run, device="cpu")
    length = mean_tokens(predictor.tokenizer, test_texts(run), None, predictor.max_length)
    return Shape.of(encoder_of(predictor.model).config).flops(length)


def test_texts(run: Path):
    from encoderfit.runs.rundir import RunDir
    from encoderfit.runs.splits import prepare
    from encoderfit.tasks import get_task

    cfg = RunDir(run).config()
    return get_task(cfg.task, options=cfg.options).targets.distill_texts(prepare(cfg.data, cfg.task, cfg.options, settle=False).test)[0]


if __name__ == "__main__":
    main()
