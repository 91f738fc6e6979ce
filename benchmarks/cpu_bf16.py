"""CPU training steps in fp32 against `--train.precision bf16` (autocast, as the Trainer runs it on a CPU).

On a CPU with bf16 hardware (Intel AMX or AVX512-BF16) oneDNN runs autocast's matrix products in bf16; the weights
and AdamW stay fp32. Each setting runs in a fresh process with freed memory kept (the default): the model, AdamW, a
batch of random token ids of one length, one warm-up step, then timed steps (forward, backward, optimizer step).
The quality side is measured by whole runs (docs/benchmarks.md: `squad-v1.1-bf16` against `squad-v1.1`). Writes
docs/benchmarks.md's "cpu-bf16" section.

    python benchmarks/cpu_bf16.py                   # all-MiniLM-L6-v2, and all-mpnet-base-v2 when installed
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import cpu_name, write_section  # noqa: E402
from cpu_memory import measure  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["all-MiniLM-L6-v2", "all-mpnet-base-v2"])
    parser.add_argument("--lengths", nargs="*", type=int, default=[64, 256])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    import torch
    import transformers

    from encoderfit.core.device import cpu_bf16_native
    from encoderfit.core.errors import UserError
    from encoderfit.models.loading import resolve_name

    rows = ["| model | tokens per text | fp32: s per step | bf16 autocast: s per step | peak memory, fp32 / bf16 | speed-up |",
            "|---|---|---|---|---|---|"]
    for name in args.models:
        try:
            resolve_name(name)  # a packaged model: extracted once, here, not inside the timed processes
        except UserError as err:
            print(f"skipped {name}: {err}")
            continue
        for length in args.lengths:
            fp32, bf16 = (measure("kept", name, length, args.batch, args.steps, precision) for precision in ("fp32", "bf16"))
            rows.append(f"| {name} ({fp32['params']:.1f}M) | {length} | {fp32['seconds']:.2f} | {bf16['seconds']:.2f} | "
                        f"{fp32['peak_mib']:,.0f} / {bf16['peak_mib']:,.0f} MiB | {fp32['seconds'] / bf16['seconds']:.2f}x |")
            print(rows[-1], flush=True)
    hardware = "with bf16 hardware (AMX/AVX512-BF16)" if cpu_bf16_native() else "without bf16 hardware (bf16 emulated)"
    text = "\n".join(rows) + (
        f"\n\n`python benchmarks/cpu_bf16.py`: batches of {args.batch} texts of random token ids, mean of {args.steps} "
        f"optimizer steps after a warm-up, each setting in a fresh process; {cpu_name()} {hardware}, {os.cpu_count()} "
        f"cores, torch {torch.__version__}, transformers {transformers.__version__}; alone on the machine.")
    write_section("cpu-bf16", "## CPU training: bf16 autocast\n\n" + text)
    print(text)


if __name__ == "__main__":
    main()
