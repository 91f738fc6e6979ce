"""The onnx and onnx-int8 backends: the run's model exported to ONNX (dynamic batch and sequence axes), fp32 or
dynamically int8-quantized, run by onnxruntime on the CPU; int8 re-checks its near-ties in fp32.

ModernBERT exports with eager attention and nothing compiled (flash-attention and compiled paths do not export);
BERT-family models export as they are.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

from ...core.args import ModelArgs
from ...core.errors import UserError
from ..rundir import ModelDir, RunDir
from .base import ExportJob, InferenceBackend, Loaded, Recheck

MIN_OPSET = 11  # below: no export of ModernBERT's arange (7-8) or dynamic Slice (9); opset 10's graph gathers out of range


class OnnxModel:
    """An exported model run by onnxruntime: numpy inputs -> logits."""

    def __init__(self, path: Path, spin: bool = True):
        import onnxruntime as ort
        import torch

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # every core, as PyTorch uses
        if not spin:  # idle threads sleep at once rather than spin, leaving the cores to the other session
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, batch: Dict[str, Any]):
        import numpy as np

        return self.session.run(["logits"], {k: np.asarray(batch[k], dtype=np.int64) for k in self.inputs})[0]


class OnnxBackend(InferenceBackend):
    """The exported fp32 graph (model.onnx): the same logits as PyTorch within 1e-4."""

    name = "onnx"
    format = "onnx"
    parity_key = "fp32"
    parity_atol = 1e-4
    parity_hint = "try another --opset"

    def file(self, directory: ModelDir) -> Path:
        return directory.onnx_file(self.quantization == "int8")

    def exported_dir(self, path: Path) -> ModelDir:
        """The directory holding a run's exported files (RUN/onnx, or the path itself), with this backend's file."""
        path = Path(path)
        directory = ModelDir(path / RunDir.ONNX if (path / RunDir.ONNX).is_dir() else path)
        if not self.file(directory).is_file():
            flag = f" --quantize {self.quantization}" if self.quantization else ""
            raise UserError(f"{path}: no {self.file(directory).name}; export it first with `encoderfit export {path}{flag}`")
        return directory

    def load(self, path: Path, device: Optional[str], packing, recheck: bool) -> Loaded:
        """The exported graph on the CPU, with the tokenizer exported beside it (`device` and `packing` do not apply)."""
        from ...models.loading import load_tokenizer

        directory = self.exported_dir(path)
        tokenizer = load_tokenizer(ModelArgs(name_or_path=str(directory.path)))
        checker = self.recheck(directory) if recheck else None
        return Loaded(OnnxModel(self.file(directory), spin=checker is None), tokenizer, directory, "cpu", checker)

    def export(self, job: ExportJob) -> OnnxModel:
        export_fp32(job.model, job.tokenizer, job.names, self.file(job.target), job.opset, job.task.output_axes)
        return OnnxModel(self.file(job.target))


class OnnxInt8Backend(OnnxBackend):
    """model.onnx quantized (model.int8.onnx); texts whose int8 decision margin is under the one fitted at export
    (int8_recheck.json) run again through model.onnx, so near-ties keep the fp32 decision."""

    name = "onnx-int8"
    quantization = "int8"
    parity_key = "int8"
    parity_atol = None
    recheck_against = "onnx"

    def export(self, job: ExportJob) -> OnnxModel:
        quantize_int8(job.target.onnx_file(False), self.file(job.target))
        return OnnxModel(self.file(job.target))

    def recheck(self, directory: ModelDir) -> Optional[Recheck]:
        file, exact = directory / self.recheck_file, directory.onnx_file(False)
        if not file.is_file() or not exact.is_file():
            return None
        margin = json.loads(file.read_text()).get("margin")
        return (OnnxModel(exact, spin=False), float(margin)) if margin else None


def max_opset() -> int:
    """The newest ONNX opset the installed torch exports to."""
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET
    except ImportError:  # private: older or newer torch without it
        return 20
    return int(ONNX_MAX_OPSET)


def wrapped(model, names: List[str]):
    """`model` with only logits out, taking its inputs by position, so the ONNX graph has one named output."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return self.model(**dict(zip(names, inputs))).logits

    return Logits()


def export_fp32(model, tokenizer, names: List[str], path: Path, opset: int, output_axes: Dict[int, str]) -> None:
    import torch

    example = tokenizer(["export example text", "another, longer example text for the export"], truncation=True,
                        max_length=32, padding=True, return_tensors="pt")
    args = tuple(example[k] for k in names)
    axes = {k: {0: "batch", 1: "sequence"} for k in names}
    axes["logits"] = dict(output_axes)
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
        # a copy: with torch 2.13 and transformers 5 the exporter changes the module it traces (seen on BERT:
        # eager outputs moved by up to 1.5 after export while the ONNX graph kept the original function)
        torch.onnx.export(wrapped(copy.deepcopy(model), names), args, str(path), input_names=names, output_names=["logits"],
                          dynamic_axes=axes, opset_version=opset, do_constant_folding=True, dynamo=False)


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantization: per-channel int8 weights of the MatMul/Gemm layers with constant weights; the
    activation-by-activation attention products stay fp32. Measured on the MiniLM runs (docs/benchmarks.md):
    quantizing those too, or per-tensor scales, cost 1-2 accuracy points and 5% label agreement."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
                     per_channel=True, extra_options={"MatMulConstBOnly": True})
