"""The inference backends, a plain dict like tasks' TASKS: `--backend NAME` in predict, serve, embed and search, and
`Predictor.from_pretrained(..., backend=NAME)`, look NAME up here; `encoderfit export --format F --quantize Q` writes
the files of the backends of that format.

A new backend is one module (a subclass of base.InferenceBackend: load; export if it runs an exported file; recheck
if it is lossy) plus one entry below (docs/development.md, "Recipe: a new inference backend").
"""

from __future__ import annotations

from typing import Dict, List, Optional

from ...core.errors import UserError
from .base import ExportJob, InferenceBackend, Loaded, Recheck, is_torch_model
from .onnx import OnnxBackend, OnnxInt8Backend, OnnxModel
from .pytorch import TorchBackend

BACKENDS: Dict[str, InferenceBackend] = {backend.name: backend for backend in (TorchBackend(), OnnxBackend(), OnnxInt8Backend())}

BackendName = str
"""The type of every `backend` option: a name in BACKENDS (a str, so that a backend registered later is accepted;
`get_backend` refuses any other in one line)."""

__all__ = ["BACKENDS", "BackendName", "ExportJob", "InferenceBackend", "Loaded", "OnnxModel", "Recheck", "exports_for",
           "get_backend", "is_torch_model"]


def get_backend(name: str) -> InferenceBackend:
    """The registered backend called `name`, or one line naming the registered ones (exit 2)."""
    if name not in BACKENDS:
        raise UserError(f"--backend: '{name}' is not valid; expected one of: {', '.join(BACKENDS)}")
    return BACKENDS[name]


def exports_for(format: str, quantize: Optional[str]) -> List[InferenceBackend]:
    """The backends `encoderfit export --format FORMAT [--quantize QUANTIZE]` writes: the format's unquantized one
    first (the quantized one is made from its file), then the quantized one."""
    formats = list(dict.fromkeys(b.format for b in BACKENDS.values() if b.format))
    if format not in formats:
        raise UserError(f"--format: '{format}' is not valid; expected one of: {', '.join(formats)}")
    chosen = [b for b in BACKENDS.values() if b.format == format and b.quantization in (None, quantize)]
    if quantize is not None and all(b.quantization is None for b in chosen):
        known = [b.quantization for b in BACKENDS.values() if b.format == format and b.quantization]
        raise UserError(f"--quantize: '{quantize}' is not valid; expected one of: {', '.join(known + ['null'])}")
    return sorted(chosen, key=lambda b: b.quantization is not None)
