"""Peak memory of `train` and `pretrain` as the source grows (issue 52, item 3): memory, not time.

For each size (GB of text) a folder of JSONL parts (labelled, for train: DIR/train/part-NNNNN.jsonl) and a folder of
.txt files (for pretrain) are written under --workdir (free disk checked first; both deleted after each size). Each
command runs in a fresh process with its own datasets cache; its peak RSS is the child's ru_maxrss (os.wait4).
Texts are drawn from a pool of synthetic three-topic rows with a real length spread (log-normal words per row), each
made unique by its row number, so no row is a duplicate.

    python benchmarks/speed/scale_memory.py --sizes 0.25 0.5 1 --steps 200
    python benchmarks/speed/scale_memory.py --sizes 0.01 0.02 --steps 20 --skip pretrain   # a smoke run
    python benchmarks/speed/scale_memory.py --sizes 1 --memory-cap-mib 1024   # each command in a 1 GiB memory cgroup

With --memory-cap-mib each command runs in a memory cgroup of that size (Linux, root: cgroup v1 or v2), which counts
the page cache the process touches as well and reclaims it at the cap: a command that completes there needs no more
memory than the cap, whatever its RSS showed without one (memory-mapped pages are resident while memory is free).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

TOPICS = {"sport": "match team goal season player coach league win score cup".split(),
          "tech": "software chip network data cloud model device code server user".split(),
          "food": "recipe flavour dish kitchen bake sauce taste chef menu spice".split()}
COMMON = "the a of and to in is that it was for on with as by at from this be".split()
PART_BYTES = 64 << 20


def pool(n: int = 5000, seed: int = 0):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = list(TOPICS)[i % 3]
        words = max(5, int(rng.lognormvariate(4.0, 0.7)))  # median ~55 words, a long tail
        rows.append((" ".join(rng.choice(TOPICS[label]) if rng.random() < 0.3 else rng.choice(COMMON) for _ in range(words)), label))
    return rows


def write_parts(folder: Path, gigabytes: float, labelled: bool) -> int:
    """Parts of ~64 MB until `gigabytes` are written; returns the rows written."""
    folder.mkdir(parents=True)
    rows, total, part, out, written, count = pool(), 0, 0, None, 0, 0
    target = int(gigabytes * 1e9)
    while total < target:
        if out is None or written >= PART_BYTES:
            if out is not None:
                out.close()
            name = f"part-{part:05d}.jsonl" if labelled else f"part-{part:05d}.txt"
            out, written, part = open(folder / name, "w", encoding="utf-8"), 0, part + 1
        text, label = rows[count % len(rows)]
        line = (json.dumps({"text": f"{text} #{count}", "label": label}) if labelled else f"{text} #{count}") + "\n"
        count += 1
        out.write(line)
        written += len(line)
        total += len(line)
    out.close()
    return count


def _status_kib(pid: int) -> dict:
    """RssAnon (the process's own memory) and RssFile (resident pages of mapped files, e.g. the memory-mapped Arrow
    caches: counted in RSS but reclaimable) from /proc, in KiB; {} once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in text.splitlines()) if k in ("RssAnon", "RssFile")}


class MemoryCap:
    """A memory cgroup of `mib` MiB for one child (v2: memory.max; v1: memory.limit_in_bytes, swap included where the
    kernel accounts it); its peak usage (page cache included) and how often the cap was hit, read before removal."""

    def __init__(self, mib: int):
        base, name = Path("/sys/fs/cgroup"), f"encoderfit-scale-{os.getpid()}"
        self.v2 = (base / "cgroup.controllers").exists()
        self.path = base / name if self.v2 else base / "memory" / name
        try:
            self.path.mkdir()
            limit = str(mib << 20)
            (self.path / ("memory.max" if self.v2 else "memory.limit_in_bytes")).write_text(limit)
            if not self.v2 and (self.path / "memory.memsw.limit_in_bytes").exists():
                (self.path / "memory.memsw.limit_in_bytes").write_text(limit)
        except OSError as e:
            sys.exit(f"--memory-cap-mib: cannot make a memory cgroup at {self.path} ({e}); run as root on Linux")

    def enter(self) -> None:  # in the child, before exec
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def close(self) -> dict:
        def read(name):
            file = self.path / name
            return int(file.read_text().split()[-1]) if file.exists() else None

        peak = read("memory.peak") if self.v2 else read("memory.max_usage_in_bytes")
        if self.v2:  # memory.events: "max N" counts the times usage reached the cap
            hits = int(dict(line.split() for line in (self.path / "memory.events").read_text().splitlines()).get("max", 0))
        else:
            hits = read("memory.failcnt")
        self.path.rmdir()
        return {"cgroup_peak_mib": round(peak / 2**20) if peak else None, "cap_hits": hits}


def peak_rss(argv, env, cap_mib: int = 0) -> dict:
    """Run `python -m encoderfit ARGV` in a fresh process: its peak RSS (MiB; ru_maxrss), the peaks of its anonymous
    and file-backed parts (sampled from /proc every 0.2 s), wall time and the last stderr lines."""
    import threading

    start = time.perf_counter()
    cap = MemoryCap(cap_mib) if cap_mib else None
    proc = subprocess.Popen([sys.executable, "-m", "encoderfit", *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=cap.enter if cap else None)
    err = []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read().decode(errors="replace")), daemon=True)
    reader.start()
    peaks = {"RssAnon": 0, "RssFile": 0}
    # WNOWAIT: look without reaping it (Popen.poll would reap it before wait4 reads its resource usage)
    while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        for key, value in _status_kib(proc.pid).items():
            peaks[key] = max(peaks[key], value)
        time.sleep(0.2)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=10)
    capped = {"cap_mib": cap_mib, **cap.close()} if cap else {}
    return {**capped, "peak_mib": round(usage.ru_maxrss / 1024), "anon_peak_mib": round(peaks["RssAnon"] / 1024),
            "file_peak_mib": round(peaks["RssFile"] / 1024), "seconds": round(time.perf_counter() - start, 1),
            "rc": proc.returncode, "tail": "".join(err).strip().splitlines()[-3:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 2, 4], help="GB of text per source")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--workdir", default="/tmp/encoderfit-scale")
    parser.add_argument("--skip", nargs="*", default=[], choices=["train", "pretrain"])
    parser.add_argument("--memory-cap-mib", type=int, default=0, help="run each command in a memory cgroup of this size")
    parser.add_argument("--pretrain-streaming", default="true", choices=["auto", "true", "false"],
                        help="pretrain's --corpus.streaming (true: the streamed path at every size; false: in memory)")
    args = parser.parse_args()
    work = Path(args.workdir)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    free = shutil.disk_usage(work).free / 1e9
    need = max(args.sizes) * 4  # the text, its Arrow cache (~2x) and the tokenised cache
    if free < need:
        sys.exit(f"{work}: {free:.0f} GB free, {need:.0f} GB needed for --sizes {max(args.sizes)}")
    from gpu.gpu import build_model

    model = build_model([t for t, _ in pool()], work / "tiny-model", smoke=True)
    results = []
    try:
        for size in args.sizes:
            source = work / f"src-{size:g}"
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                   "HF_DATASETS_CACHE": str(work / f"cache-{size:g}"), "CUDA_VISIBLE_DEVICES": ""}
            row = {"gb": size}
            if "train" not in args.skip:
                t0 = time.perf_counter()
                row["rows"] = write_parts(source / "train", size, labelled=True)
                row["written_s"] = round(time.perf_counter() - t0, 1)
                row["train"] = peak_rss(["train", "--data.source", str(source), "--model.name_or_path", str(model),
                                         "--output_dir", str(work / f"run-{size:g}"), "--model.max_length", "64",
                                         "--train.max_steps", str(args.steps), "--train.batch_size", "16",
                                         "--train.eval_steps", str(args.steps), "--train.save_steps", str(args.steps),
                                         "--data.validation_size", "0.002", "--data.test_size", "0.002",
                                         "--report.baseline_max_rows", "20000", "--report.review_max_rows", "20000"], env,
                                       args.memory_cap_mib)
                shutil.rmtree(source / "train")
            if "pretrain" not in args.skip:
                write_parts(source / "text", size, labelled=False)
                row["pretrain"] = peak_rss(["pretrain", "--corpus.sources", f"[{source / 'text'}]", "--corpus.documents", "lines",
                                            "--corpus.streaming", args.pretrain_streaming,
                                            "--tokenizer.vocab_size", "2048", "--model.size", "tiny", "--mlm.block_size", "64",
                                            "--train.max_steps", str(args.steps), "--train.batch_size", "16",
                                            "--output_dir", str(work / f"pre-{size:g}")], env, args.memory_cap_mib)
            shutil.rmtree(source, ignore_errors=True)
            shutil.rmtree(work / f"cache-{size:g}", ignore_errors=True)
            results.append(row)
            print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for kind in ("train", "pretrain"):
        peaks = [r[kind]["peak_mib"] for r in results if kind in r and r[kind]["rc"] == 0]
        if len(peaks) > 1:
            print(f"{kind}: peak RSS {peaks} MiB; growth from the smallest to the largest source "
                  f"{(max(peaks[1:]) / peaks[0] - 1) * 100:+.0f}%")


if __name__ == "__main__":
    main()
