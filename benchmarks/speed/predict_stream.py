"""Streaming `encoderfit predict`: rows/s and peak RSS by input size, kill-and-resume byte identity, Ray's overhead.

Each measurement is one `python -m encoderfit predict` child process; its peak RSS is the kernel's (os.wait4's
ru_maxrss of that child). Inputs are synthetic JSONL texts whose word counts follow a long-tailed spread (most short,
some past the model's max_length), as real corpora have them.

    python benchmarks/speed/predict_stream.py --run RUN                              # 10k, 100k, 1M rows
    python benchmarks/speed/predict_stream.py --run RUN --sizes 10000 --resume --ray # + kill/resume, --engine ray
    python benchmarks/speed/predict_stream.py --run MINILM_RUN --sizes 100000         # the real MiniLM

RUN: any run directory (the tests' tiny random-init run, or one trained on MiniLM). `--max-seconds S` stops a size
after S seconds and reports the rows done and the peak so far (marked partial).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("the a of and to in is was for on that with as by at from it his her market team film court price goal "
         "season report election company share player minister music police bank growth album record").split()


def synthetic(path: Path, rows: int, seed: int = 0) -> Path:
    """JSONL texts with a long-tailed length spread: lognormal word counts (median ~25 words, a tail past 400)."""
    rng = random.Random(seed)
    with open(path, "w") as handle:
        for i in range(rows):
            n = max(1, min(600, int(rng.lognormvariate(3.2, 0.9))))
            handle.write(json.dumps({"text": " ".join(rng.choices(WORDS, k=n)) + f" #{i}"}) + "\n")
    return path


def command(run: str, source: Path, output: Path, *extra: str) -> list:
    return [sys.executable, "-m", "encoderfit", "predict", run, "--input", str(source), "--output", str(output), *extra]


def measure(args: list, max_seconds: float, kill_at_part: int = 0) -> dict:
    """Run one child; wall seconds, peak RSS (MiB), and whether it finished (or was killed at `kill_at_part`)."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = Path(f"{args[args.index('--output') + 1]}.parts")
    killed = False
    while True:  # os.wait4, not Popen.poll: it reaps the child with its own rusage
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        over = time.perf_counter() - start > max_seconds
        if over or (kill_at_part and (parts / f"part-{kill_at_part - 1:05d}.json").exists()):
            os.kill(proc.pid, signal.SIGKILL)
            killed = True
            _, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    proc.returncode = status
    done = sum(json.loads(p.read_text())["rows"] for p in parts.glob("part-*.json")) if parts.exists() else None
    return {"seconds": time.perf_counter() - start, "peak_rss_mib": usage.ru_maxrss / 1024, "killed": killed,
            "status": status, "rows_in_parts": done}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--chunk-rows", type=int, default=10_000)
    parser.add_argument("--max-seconds", type=float, default=3600)
    parser.add_argument("--resume", action="store_true", help="kill at ~50%% and re-run: byte identity, no row lost")
    parser.add_argument("--ray", action="store_true", help="--engine ray (2 workers) against the local engine")
    parser.add_argument("--workdir", type=Path, default=None)
    opts = parser.parse_args()
    work = opts.workdir or Path(tempfile.mkdtemp(prefix="predict-stream-"))
    work.mkdir(parents=True, exist_ok=True)
    chunk = ["--chunk_rows", str(opts.chunk_rows)]
    results = []
    for size in opts.sizes:
        source = synthetic(work / f"in-{size}.jsonl", size)
        out = work / f"out-{size}.jsonl"
        got = measure(command(opts.run, source, out, *chunk, "--overwrite", "true"), opts.max_seconds)
        rows = size if not got["killed"] else got["rows_in_parts"] or 0
        results.append({"rows": size, "done": rows, "partial": got["killed"], "peak_rss_mib": round(got["peak_rss_mib"], 1),
                        "rows_per_s": round(rows / got["seconds"], 1), "input_mib": round(source.stat().st_size / 2**20, 1)})
        print(json.dumps(results[-1]), flush=True)
        if opts.resume and not got["killed"]:
            again = work / f"resumed-{size}.jsonl"
            half = max(1, size // opts.chunk_rows // 2)
            first = measure(command(opts.run, source, again, *chunk, "--overwrite", "true"), opts.max_seconds, kill_at_part=half)
            second = measure(command(opts.run, source, again, *chunk), opts.max_seconds)
            lines = again.read_text().splitlines()
            texts = [json.loads(line)["text"].rsplit("#", 1)[1] for line in lines]
            print(json.dumps({"rows": size, "killed_after_rows": first["rows_in_parts"], "resumed_ok": second["status"] == 0,
                              "byte_identical": again.read_bytes() == out.read_bytes(),
                              "every_row_once_in_order": texts == [str(i) for i in range(size)]}), flush=True)
        if opts.ray and not got["killed"]:
            ray_out = work / f"ray-{size}.jsonl"
            ray = measure(command(opts.run, source, ray_out, *chunk, "--engine", "ray", "--workers", "2"), opts.max_seconds)
            a = [json.loads(line) for line in out.read_text().splitlines()]
            b = [json.loads(line) for line in ray_out.read_text().splitlines()]
            print(json.dumps({"rows": size, "ray_over_local_wall": round(ray["seconds"] / max(1e-9, rows / results[-1]["rows_per_s"]), 2),
                              "same_labels_in_order": [(r["text"], r.get("label")) for r in a] == [(r["text"], r.get("label")) for r in b],
                              "max_score_difference": max(abs(x.get("score", 0) - y.get("score", 0)) for x, y in zip(a, b)),
                              "ray_peak_rss_mib_driver": round(ray["peak_rss_mib"], 1)}), flush=True)


if __name__ == "__main__":
    main()
