"""Device and precision, chosen once, here, with the reason logged and an override. On a CPU, autocast only when asked
(`--train.precision bf16`).

Everything else asks these functions (or `has_cuda`) instead of testing for CUDA itself.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import sys
from typing import Optional

from .errors import UserError

log = logging.getLogger(__name__)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
_kept = False
_compiling = False
_cuda_set = False


JAX_DEFAULTS = {"JAX_PLATFORMS": "cpu", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}


def keep_jax_on_cpu() -> None:
    """Before anything of ours imports a library that imports JAX (bm25s does, where JAX is installed): JAX on the
    CPU and, should a GPU be allowed after all, allocating as it goes. JAX's GPU backend otherwise takes 75% of every
    visible GPU's memory the moment it starts, which the encoder training in the same process then runs out of. A value
    the user set stays (JAX_PLATFORMS=cuda gives BM25 the GPU)."""
    import os

    for name, value in JAX_DEFAULTS.items():
        os.environ.setdefault(name, value)


@functools.lru_cache(maxsize=None)
def has_cuda() -> bool:
    """A CUDA GPU is visible, asked once per process (a data-loader worker forked from it inherits the answer and
    never touches CUDA itself)."""
    import torch

    return torch.cuda.is_available()


def compiling(on: Optional[bool] = None) -> bool:
    """Whether this process trains a torch.compile'd model (set once by models/trainer.py; `pad_multiple` reads it)."""
    global _compiling
    if on is not None:
        _compiling = bool(on)
    return _compiling


def pad_multiple(longest: int) -> int:
    """What a training batch whose longest row has `longest` tokens is padded to a multiple of. On a GPU 8 (tensor
    cores), unless the model is compiled. On a CPU, and on a GPU under torch.compile, a quarter of the largest power
    of two at or below `longest` (at least 8): lengths fall into four buckets per doubling (at most 25% padding, about
    12% on average) instead of one shape per length, because every new shape leaves memory behind that a long CPU run
    never gets back (docs/speed.md, benchmarks/speed/cpu_shapes.py), and costs a compiled model a new graph."""
    if has_cuda() and not _compiling:
        return 8
    return max(8, (1 << (max(longest, 1).bit_length() - 1)) // 4)


def padded_length(longest: int, limit: Optional[int] = None) -> int:
    """The width a batch whose longest row has `longest` tokens is padded to (never past `limit`, the model's
    positions): what the training collator (tasks/base/modeling.py BucketedPadding) gives it."""
    multiple = pad_multiple(longest)
    width = -(-longest // multiple) * multiple
    return width if limit is None or width <= limit else longest


def process_device():
    """The device this process trains on: its own GPU (cuda:LOCAL_RANK, as accelerate assigns them) where there is
    one, else the CPU. For work before the Trainer exists (linear-probe features, a projection's starting point)."""
    import os

    import torch

    return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}") if has_cuda() else torch.device("cpu")


def flash_attention_ready() -> bool:
    """flash_attention_2 can run: a CUDA GPU and the flash-attn package."""
    return has_cuda() and importlib.util.find_spec("flash_attn") is not None


def can_compile() -> bool:
    """torch.compile's GPU backend can run: a CUDA GPU and triton."""
    return has_cuda() and importlib.util.find_spec("triton") is not None


COMPILE_MODE = "default"  # not reduce-overhead: CUDA graphs re-record per batch shape, and shapes vary per batch


def pick_compile(requested="auto") -> bool:
    """train.torch_compile: auto compiles on a CUDA GPU with triton (inductor, mode "default", shapes bucketed by
    `pad_multiple`), never on a CPU; true/false as given. Logs the choice and tells `pad_multiple`."""
    if requested == "auto":
        on = can_compile()
        log.info("torch.compile: %s", f"on (CUDA GPU with triton; mode {COMPILE_MODE}; batch widths in four buckets "
                                      "per doubling, so few graphs)" if on else
                 "off (" + ("no triton" if has_cuda() else "no CUDA GPU: on a CPU compiling costs more than it saves") + ")")
    else:
        on = bool(requested)
    return compiling(on)


def cuda_bf16_native() -> bool:
    """The GPU does bf16 in hardware (Ampere and newer). torch.cuda.is_bf16_supported() alone also counts emulation
    (a V100 or T4 then gets slow emulated bf16): asked without it where this torch has the parameter (2.3+)."""
    import inspect

    import torch

    if not has_cuda():
        return False
    if "including_emulation" in inspect.signature(torch.cuda.is_bf16_supported).parameters:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.cuda.get_device_capability()[0] >= 8 and torch.cuda.is_bf16_supported()


def use_tensor_cores() -> None:
    """On a CUDA GPU, once per process: fp32 matrix products in TF32 (10-bit mantissa inputs, fp32 accumulation:
    ~8x the fp32 rate on Ampere and newer; bf16 autocast is untouched). The per-backend switch where this torch has
    it (2.9+: torch.backends.cuda.matmul.fp32_precision), else set_float32_matmul_precision("high")."""
    global _cuda_set
    if _cuda_set or not has_cuda():
        return
    import torch

    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        matmul.fp32_precision = "tf32"
    else:
        torch.set_float32_matmul_precision("high")
    _cuda_set = True
    log.info("CUDA: fp32 matrix products in TF32")


def loader_workers(requested: Optional[int]) -> int:
    """train.num_workers: as given; default (None) min(4, CPU cores - 1) on a CUDA GPU, so batches are collated while
    the GPU computes, and 0 on a CPU (the cores are busy training)."""
    import os

    if requested is not None:
        return requested
    if not has_cuda():
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(4, cores - 1))


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
    if device.type == "cuda":
        use_tensor_cores()
    log.info("device: %s (%s)", device, why)
    return device


def cpu_bf16_native() -> bool:
    """The CPU multiplies bf16 in hardware (Intel AMX or AVX512-BF16, read from /proc/cpuinfo): oneDNN then runs
    autocast's bf16 matrix products 2-3x faster than fp32 (benchmarks/speed/cpu_bf16.py). False where it cannot tell."""
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
    use_tensor_cores()
    if requested == "auto":
        precision = "bf16" if cuda_bf16_native() else "fp32"
        why = ("GPU does bf16 natively" if precision == "bf16" else "GPU has no native bf16 (emulated is slower)" if cuda
               else "no GPU; on a CPU, autocast only when asked")
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


def release_freed_memory() -> None:
    """Hand the heap's free pages back to the OS (glibc's malloc_trim(0), which also returns free pages between live
    blocks): a server's batches of varying shape otherwise fragment the heap and resident memory creeps up although
    little is live. A no-op where it cannot apply (not glibc) and once training keeps its freed blocks
    (`keep_freed_memory`: trimming them would bring back the page faults that avoids)."""
    if _kept or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def keep_freed_memory(device_type: str = "cpu", wanted: bool = True) -> bool:
    """CPU training under glibc (Linux): keep freed memory in the process for the next step. glibc maps each block
    over 32 MiB afresh and unmaps it when freed, so every step's large activations (a batch of 32 x 256 tokens in a
    110M encoder: ~100 MiB each) arrive as new zeroed pages, one page fault per 4 KiB: measured here, nearly half of an
    all-mpnet-base-v2 step was spent in the kernel (benchmarks/speed/cpu_memory.py). With mmap off and no trimming, freed
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
