"""Device and precision, chosen once, here, with the reason logged and an override. On a CPU, autocast only when asked
(`--train.precision bf16`).

Everything else asks these functions (or `has_cuda`) instead of testing for CUDA itself.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from typing import Optional

from .errors import UserError

log = logging.getLogger(__name__)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
_kept = False


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def pad_multiple(longest: int) -> int:
    """What a training batch whose longest row has `longest` tokens is padded to a multiple of. On a GPU 8 (tensor
    cores). On a CPU a quarter of the largest power of two at or below `longest` (at least 8): lengths fall into four
    buckets per doubling (at most 25% padding, about 12% on average) instead of one shape per length, because every
    new shape leaves memory behind that a long CPU run never gets back (docs/speed.md, benchmarks/cpu_shapes.py)."""
    if has_cuda():
        return 8
    return max(8, (1 << (max(longest, 1).bit_length() - 1)) // 4)


def flash_attention_ready() -> bool:
    """flash_attention_2 can run: a CUDA GPU and the flash-attn package."""
    return has_cuda() and importlib.util.find_spec("flash_attn") is not None


def can_compile() -> bool:
    """torch.compile's GPU backend can run: a CUDA GPU and triton."""
    return has_cuda() and importlib.util.find_spec("triton") is not None


def pick_device(requested: Optional[str] = None):
    """cuda when available, else cpu; `requested` (e.g. "cpu", "cuda:1") overrides. Logs the reason."""
    import torch

    if requested:
        try:
            device, why = torch.device(requested), "requested"
        except RuntimeError:
            raise UserError(f"--device: '{requested}' is not a device; use cpu, cuda or cuda:N") from None
        if device.type not in ("cpu", "cuda"):
            raise UserError(f"--device: '{requested}' is not supported; use cpu, cuda or cuda:N")
        if device.type == "cuda" and not has_cuda():
            raise UserError(f"--device: {requested} needs a CUDA GPU and none is available here; use --device cpu")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device: {requested} does not exist; this machine has {torch.cuda.device_count()} GPU(s)")
    elif has_cuda():
        device, why = torch.device("cuda"), f"CUDA GPU found ({torch.cuda.get_device_name(0)})"
    else:
        device, why = torch.device("cpu"), "no CUDA GPU"
    log.info("device: %s (%s)", device, why)
    return device


def cpu_bf16_native() -> bool:
    """The CPU multiplies bf16 in hardware (Intel AMX or AVX512-BF16, read from /proc/cpuinfo): oneDNN then runs
    autocast's bf16 matrix products 2-3x faster than fp32 (benchmarks/cpu_bf16.py). False where it cannot tell."""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def pick_precision(requested: str = "auto") -> str:
    """fp32/bf16/fp16. auto: bf16 on a GPU that supports it (fp16 overflows in ModernBERT), else fp32. On a CPU, bf16
    is autocast (weights and optimizer stay fp32) and only when asked: it changes the numbers a run gives."""
    cuda = has_cuda()
    if requested == "auto":
        import torch

        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
        why = "GPU supports bf16" if precision == "bf16" else "no bf16-capable GPU; on a CPU, autocast only when asked"
        if not cuda and cpu_bf16_native():
            why += "; this CPU has bf16 hardware: --train.precision bf16 trains 2-3x faster"
        log.info("precision: %s (%s)", precision, why)
        return precision
    if requested == "fp16" and not cuda:
        raise UserError("train.precision: fp16 needs a CUDA GPU and none is available; use --train.precision bf16 "
                        "(autocast on the CPU) or fp32")
    if requested == "bf16" and not cuda:
        native = cpu_bf16_native()
        (log.info if native else log.warning)(
            "precision: bf16 autocast on the CPU (%s)", "AMX/AVX512-BF16 hardware" if native else
            "this CPU has no bf16 hardware: emulated, likely slower than fp32")
    return requested


def keep_freed_memory(device_type: str = "cpu", wanted: bool = True) -> bool:
    """CPU training under glibc (Linux): keep freed memory in the process for the next step. glibc maps each block
    over 32 MiB afresh and unmaps it when freed, so every step's large activations (a batch of 32 x 256 tokens in a
    110M encoder: ~100 MiB each) arrive as new zeroed pages, one page fault per 4 KiB: measured here, nearly half of an
    all-mpnet-base-v2 step was spent in the kernel (benchmarks/cpu_memory.py). With mmap off and no trimming, freed
    blocks are reused; the process keeps its peak memory until it exits. Once per process; False where it cannot apply
    (not `wanted`: --train.keep_cpu_memory false; training on a GPU; not glibc)."""
    global _kept
    if _kept or device_type != "cpu" or not wanted or not sys.platform.startswith("linux"):
        return _kept
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False
    _kept = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    if _kept:
        log.info("CPU memory: freed blocks kept for reuse (glibc mallopt), no page faults for each step's activations "
                 "(--train.keep_cpu_memory false turns it off)")
    return _kept
