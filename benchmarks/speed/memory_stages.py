"""Where a command's own memory rises: `encoderfit ARGS` run in this process beside a sampler thread that reads
RssAnon from /proc every 50 ms and, each time it passes its previous maximum by 4 MiB, records the main thread's
Python stack (and every second, to show the level between the rises). How issue 52's per-row growth of `train` was found
(docs/scaling.md): memray traces every allocation and was far too slow at millions of rows; this costs nothing.

    python benchmarks/speed/memory_stages.py --out stages.jsonl -- train --data.source DIR --output_dir runs/x ...
    python benchmarks/speed/memory_stages.py --show stages.jsonl          # the rises, with the code that made them

Memory only: the command runs as it would (timings beside another job are not figures).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import traceback

STEP_KIB = 4096


def anon_kib() -> int:
    with open("/proc/self/status") as status:
        return next((int(line.split()[1]) for line in status if line.startswith("RssAnon:")), 0)


def sample(records: list, started: float) -> None:
    main_id, best, last = threading.main_thread().ident, 0, 0.0
    while True:
        kib, now = anon_kib(), time.monotonic()
        if kib > best + STEP_KIB or now - last > 1:
            frame = sys._current_frames().get(main_id)
            stack = traceback.extract_stack(frame) if frame is not None else []
            records.append({"t": round(now - started, 1), "anon_mib": round(kib / 1024), "rise": kib > best + STEP_KIB,
                            "stack": [f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in stack[-14:]]})
            best, last = max(best, kib), now
        time.sleep(0.05)


def show(path: str) -> None:
    for line in open(path, encoding="utf-8"):
        r = json.loads(line)
        frames = [f for f in r["stack"] if not f.startswith(("threading.py", "<frozen", "fingerprint.py"))]
        print(f"{r['t']:8.1f} s {r['anon_mib']:6d} MiB {'rise' if r.get('rise', r.get('peak')) else '    '}  " + " <- ".join(reversed(frames[-6:])))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="memory-stages.jsonl")
    parser.add_argument("--show", metavar="FILE", help="print a recorded file and exit")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then encoderfit's arguments")
    args = parser.parse_args()
    if args.show:
        show(args.show)
        return 0
    argv = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not argv:
        parser.error("give encoderfit's arguments after --")
    records: list = []
    threading.Thread(target=sample, args=(records, time.monotonic()), daemon=True).start()
    from encoderfit.cli import main as encoderfit

    try:
        return encoderfit(argv)
    finally:
        with open(args.out, "w", encoding="utf-8") as out:
            out.writelines(json.dumps(r) + "\n" for r in list(records))
        peak = max((r["anon_mib"] for r in records), default=0)
        print(f"memory stages: {len(records)} records, anonymous peak {peak} MiB -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
