"""Memory of a long CPU training loop whose batch lengths vary, as length-grouped batches do: the process's resident
memory every 20 steps, with freed memory kept (encoderfit's default) or glibc's default allocator, fp32 or bf16
autocast, and lengths used as drawn or rounded up to a multiple. Each setting in a fresh process; prints one line.

    python benchmarks/speed/cpu_shapes.py kept bf16 160 1 all-MiniLM-L6-v2     # HOW PRECISION STEPS MULTIPLE MODEL
    (MULTIPLE 1: lengths as drawn; 0: encoderfit's training buckets, core.device.pad_multiple)

Measured 2026-12-06 (Intel Xeon, 2 cores, torch 2.13.0+cpu; MiniLM, 32 texts a batch, lengths uniform in 32-256):
kept bf16 5.2 -> 8.5 GB and still rising over 160 steps, kept fp32 5.2 -> 7.3 GB, default bf16 3.0 -> 6.0 GB (and
1.4x slower), kept bf16 with lengths rounded up to a multiple of 32: flat at 5.5 GB (4% slower than as drawn).
Then (same machine, alone) encoderfit's buckets (four per doubling of length), kept bf16: 3.6 GB at step 20, 5.6 GB
from step 40, 5.86 GB from step 80 to 160: flat; 277 s.
"""

import random
import sys
import time

from encoderfit.core.device import keep_freed_memory, pad_multiple
from encoderfit.models.loading import resolve_name

how, precision, steps, multiple, name = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
if how == "kept":
    keep_freed_memory()
import torch  # noqa: E402
from transformers import AutoModelForQuestionAnswering  # noqa: E402

torch.manual_seed(0)
random.seed(0)
model = AutoModelForQuestionAnswering.from_pretrained(resolve_name(name))
model.train()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)


def resident_mib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 // 2**20


started, seen = time.time(), []
for step in range(steps):
    length = random.randint(32, 256)
    step_multiple = multiple or pad_multiple(length)  # 0: encoderfit's buckets
    length = -(-length // step_multiple) * step_multiple
    ids = torch.randint(1000, 20000, (32, length))
    positions = torch.randint(0, length, (32,))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), start_positions=positions, end_positions=positions).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    if step % 20 == 19:
        seen.append(resident_mib())
print(how, precision, f"multiple {multiple}:", "resident MiB every 20 steps", seen, f"{time.time() - started:.0f} s", flush=True)
