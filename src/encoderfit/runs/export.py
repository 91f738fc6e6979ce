"""`encoderfit export`: a run's model as ONNX (dynamic batch and sequence axes), optionally int8-quantized, with the
tokenizer, config and encoderfit.json beside it, and a parity check against PyTorch before anything is kept.

ModernBERT exports with eager attention and nothing compiled (flash-attention and compiled paths do not export);
BERT-family models export as they are. Parity is the task's: logits, and the decisions made from them (labels,
label sets; for regression the scores themselves).
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..core.errors import UserError
from .predictor import OnnxModel, Predictor
from .rundir import ModelInfo, RunDir
from ..tasks import Task, get_task

log = logging.getLogger(__name__)
RECHECK_TEXTS = 2000  # validation texts the re-check margin is fitted on, at most
SAMPLE_TEXTS = 64  # test texts the parity check runs on
PARITY_ATOL = 1e-4
Texts = Tuple[List[str], Optional[List[str]]]


def _wrapped(model, names: List[str]):
    import torch

    class Logits(torch.nn.Module):
        """Only logits out, so the ONNX graph has one named output."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return self.model(**dict(zip(names, inputs))).logits

    return Logits()


MIN_OPSET = 11  # below: no export of ModernBERT's arange (7-8) or dynamic Slice (9); opset 10's graph gathers out of range


def max_opset() -> int:
    """The newest ONNX opset the installed torch exports to."""
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET
    except ImportError:  # private: older or newer torch without it
        return 20
    return int(ONNX_MAX_OPSET)


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
        torch.onnx.export(_wrapped(copy.deepcopy(model), names), args, str(path), input_names=names, output_names=["logits"],
                          dynamic_axes=axes, opset_version=opset, do_constant_folding=True, dynamo=False)


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantization: per-channel int8 weights of the MatMul/Gemm layers with constant weights; the
    activation-by-activation attention products stay fp32. Measured on the MiniLM runs (docs/benchmarks.md):
    quantizing those too, or per-tensor scales, cost 1-2 accuracy points and 5% label agreement."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
                     per_channel=True, extra_options={"MatMulConstBOnly": True})


def saved_texts(run: Optional[RunDir], split: str, n: int, task: Task, labels: List[str], text_pair: bool = True) -> Texts:
    """The first n texts (and pairs) of a split as the run's evaluation saved them, if it did. For a model of single
    texts whose data are pairs (embeddings: queries and documents), both sides are texts."""
    preds = run.predictions(split, task, labels) if run else None
    if preds is None:
        return [], None
    if preds.pairs is not None and not text_pair:
        return (preds.texts[: n - n // 2] + preds.pairs[: n // 2]), None
    return preds.texts[:n], preds.pairs[:n] if preds.pairs is not None else None


def sample_texts(run: Optional[RunDir], info: ModelInfo, task: Task) -> Texts:
    texts, pairs = saved_texts(run, "test", SAMPLE_TEXTS, task, info.labels, info.text_pair)
    if texts:
        return texts, pairs
    texts = ["a short text", "a somewhat longer text with more words in it " * 3, "x"]
    return texts, (list(reversed(texts)) if info.text_pair else None)


def validation_texts(run: Optional[RunDir], task: Task, labels: List[str]) -> Tuple[List[str], Optional[List[str]], str]:
    """(texts, pairs, where from) of the run's validation split: its saved predictions, else the data its config names."""
    texts, pairs = saved_texts(run, "validation", RECHECK_TEXTS, task, labels)
    if texts:
        return texts, pairs, str(run.predictions_file("validation"))
    if run is not None:
        from .splits import prepare

        cfg = run.config()
        try:
            ds = prepare(cfg.data, cfg.task, cfg.options, settle=False).validation
            ds = ds.select(range(min(RECHECK_TEXTS, len(ds))))
            pairs = list(ds["text_pair"]) if "text_pair" in ds.column_names else None
            return list(ds["text"]), pairs, f"{cfg.data.source} validation split"
        except (UserError, OSError) as err:
            log.warning("int8 re-check: could not load the validation split (%s)", err)
    return [], None, ""


def fit_recheck_margin(fp32: OnnxModel, int8: OnnxModel, tokenizer, info: ModelInfo, texts: List[str],
                       pairs: Optional[List[str]], quantile: float) -> Dict:
    """The int8 decision margin under which a prediction is run again in fp32, fitted on held-out texts.

    For each text, `drop` is how much int8 overstates how far its decision is from changing, compared with fp32
    (the task's margin_drop). int8 can only change a decision whose int8 margin is under its drop, so re-checking
    every margin under the drop's `quantile` leaves at most (1 - quantile) of texts, of this distribution, able to
    change. The agreement with the re-check is measured by running it, not assumed.
    """
    import numpy as np

    task = get_task(info.task, "export")
    exact = Predictor(fp32, tokenizer, info).logits(texts, pairs)
    quick = Predictor(int8, tokenizer, info).logits(texts, pairs)
    margin = float(np.quantile(task.decoding.margin_drop(quick, exact, info.head), quantile)) if len(texts) else 0.0
    checked = Predictor(int8, tokenizer, info, recheck=(fp32, margin)).logits(texts, pairs)
    return {"margin": margin, "quantile": quantile, "texts": len(texts),
            "rechecked_share": float((task.decoding.decision_margin(quick, info.head) < margin).mean()),
            "without": task.decoding.compare(exact, quick, info.head), "with": task.decoding.compare(exact, checked, info.head)}


def parity(model, tokenizer, info: ModelInfo, texts: List[str], pairs: Optional[List[str]], onnx: Dict[str, OnnxModel],
           recheck_margin: Optional[float] = None) -> Dict:
    """The task's parity (max |logit difference|, decision agreement) of each ONNX model, and of int8 with its fp32
    re-check, against PyTorch, through the same length-batched Predictor path that predict and serve use."""
    task = get_task(info.task, "export")
    reference = Predictor(model, tokenizer, info).logits(texts, pairs)
    runs = {name: Predictor(session, tokenizer, info) for name, session in onnx.items()}
    if recheck_margin is not None:
        runs["int8_rechecked"] = Predictor(onnx["int8"], tokenizer, info, recheck=(onnx["fp32"], recheck_margin))
    return {"texts": len(texts), **{name: task.decoding.compare(reference, p.logits(texts, pairs), info.head) for name, p in runs.items()}}
