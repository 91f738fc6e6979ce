"""CPU training steps with glibc's default allocator against encoderfit's `--train.keep_cpu_memory` (the default).

glibc maps every block over 32 MiB afresh and unmaps it when freed, so each training step's large activations arrive
as new zeroed pages, a page fault per 4 KiB. Each setting runs in a fresh process: the model, AdamW, a batch of
random token ids of one length, one warm-up step, then timed steps (forward, backward, optimizer step), the same
for both. Writes docs/benchmarks.md's "cpu-memory" section.

    python benchmarks/speed/cpu_memory.py                 # all-MiniLM-L6-v2, and all-mpnet-base-v2 when installed
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import cpu_name, write_section  # noqa: E402

STEPS = """
import json, resource, sys, time
from encoderfit.core.device import keep_freed_memory
from encoderfit.models.loading import resolve_name
how, name, length, batch, steps, precision = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
if how == "kept":
    assert keep_freed_memory()
import torch
from transformers import AutoModelForSequenceClassification
model = AutoModelForSequenceClassification.from_pretrained(resolve_name(name), num_labels=90,
                                                           problem_type="multi_label_classification")
optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
torch.manual_seed(0)
ids = torch.randint(1000, 20000, (batch, length))
labels = (torch.rand(batch, 90) < 0.02).float()
rows = []
for step in range(steps + 1):
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):  # as the Trainer runs bf16 on a CPU
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    if step:  # the first step is a warm-up in both settings
        rows.append((time.perf_counter() - t0, r1.ru_stime - r0.ru_stime, r1.ru_minflt - r0.ru_minflt))
print(json.dumps({"seconds": sum(r[0] for r in rows) / len(rows), "system": sum(r[1] for r in rows) / len(rows),
                  "faults": sum(r[2] for r in rows) / len(rows),
                  "params": sum(p.numel() for p in model.parameters()) / 1e6,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(how: str, name: str, length: int, batch: int, steps: int, precision: str = "fp32") -> dict:
    """One setting in a fresh process: `how` is "default" (glibc's allocator) or "kept"; precision fp32 or bf16."""
    out = subprocess.run([sys.executable, "-c", STEPS, how, name, str(length), str(batch), str(steps), precision], capture_output=True,
                         text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(doc: str, script: str, section: str, title: str, header: str, settings, row) -> None:
    """The command line and table both CPU step benchmarks share: for each model and length, two settings
    (`settings`: (how, precision) pairs) measured in fresh processes; `row(first, second)` formats the table's cells
    after the model and length; the table goes to docs/benchmarks.md's `section`."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["all-MiniLM-L6-v2", "all-mpnet-base-v2"])
    parser.add_argument("--lengths", nargs="*", type=int, default=[64, 256])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    import torch
    import transformers

    from encoderfit.core.errors import UserError
    from encoderfit.models.loading import resolve_name

    rows = [f"| model | tokens per text | {header} |", "|---|---|" + "---|" * (header.count("|") + 1)]
    for name in args.models:
        try:
            resolve_name(name)  # a packaged model: extracted once, here, not inside the timed processes
        except UserError as err:
            print(f"skipped {name}: {err}")
            continue
        for length in args.lengths:
            first, second = (measure(how, name, length, args.batch, args.steps, precision) for how, precision in settings)
            rows.append(f"| {name} ({first['params']:.1f}M) | {length} | {row(first, second)} |")
            print(rows[-1], flush=True)
    text = "\n".join(rows) + (
        f"\n\n`python benchmarks/{script}`: batches of {args.batch} texts of random token ids, mean of {args.steps} "
        f"optimizer steps after a warm-up, each setting in a fresh process; {cpu_name()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, transformers {transformers.__version__}; alone on the machine.")
    write_section(section, f"## {title}\n\n" + text)
    print(text)


def main() -> None:
    compare(__doc__, "cpu_memory.py", "cpu-memory", "CPU training: freed memory kept for reuse",
            "glibc default: s per step (kernel s) | kept: s per step (kernel s) | page faults per step, default / kept | "
            "peak memory, default / kept | speed-up", [("default", "fp32"), ("kept", "fp32")],
            lambda plain, kept: f"{plain['seconds']:.2f} ({plain['system']:.2f}) | {kept['seconds']:.2f} ({kept['system']:.2f}) | "
                                f"{plain['faults']:,.0f} / {kept['faults']:,.0f} | {plain['peak_mib']:,.0f} / {kept['peak_mib']:,.0f} MiB | "
                                f"{plain['seconds'] / kept['seconds']:.2f}x")


if __name__ == "__main__":
    main()
