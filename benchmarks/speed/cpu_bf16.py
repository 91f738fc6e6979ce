"""CPU training steps in fp32 against `--train.precision bf16` (autocast, as the Trainer runs it on a CPU).

On a CPU with bf16 hardware (Intel AMX or AVX512-BF16) oneDNN runs autocast's matrix products in bf16; the weights
and AdamW stay fp32. Each setting runs in a fresh process with freed memory kept (the default): the model, AdamW, a
batch of random token ids of one length, one warm-up step, then timed steps (forward, backward, optimizer step).
The quality side is measured by whole runs (docs/benchmarks.md: `squad-v1.1-bf16` against `squad-v1.1`). Writes
docs/benchmarks.md's "cpu-bf16" section.

    python benchmarks/speed/cpu_bf16.py                   # all-MiniLM-L6-v2, and all-mpnet-base-v2 when installed
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from speed.cpu_memory import compare  # noqa: E402


def main() -> None:
    from encoderfit.core.device import cpu_bf16_native

    hardware = "with bf16 hardware (AMX/AVX512-BF16)" if cpu_bf16_native() else "without bf16 hardware (bf16 emulated)"
    compare(__doc__, "cpu_bf16.py", "cpu-bf16", f"CPU training: bf16 autocast ({hardware})",
            "fp32: s per step | bf16 autocast: s per step | peak memory, fp32 / bf16 | speed-up", [("kept", "fp32"), ("kept", "bf16")],
            lambda fp32, bf16: f"{fp32['seconds']:.2f} | {bf16['seconds']:.2f} | {fp32['peak_mib']:,.0f} / {bf16['peak_mib']:,.0f} MiB | "
                               f"{fp32['seconds'] / bf16['seconds']:.2f}x")


if __name__ == "__main__":
    main()
