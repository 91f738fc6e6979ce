"""`encoderfit export`: a run's model as ONNX (dynamic batch and sequence axes), optionally int8-quantized,
with the tokenizer and label config beside it, and a parity check against PyTorch before anything is kept.

ModernBERT exports with eager attention and nothing compiled (flash-attention and compiled paths do not
export); BERT-family models export as they are.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import warnings
from pathlib import Path
from typing import Dict, List, Literal, Optional

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

from .config import ModelArgs
from .errors import UserError
from .files import check_writable, partial_dir, publish_dir, write_json
from .modeling import load_tokenizer, load_weights
from .predict import CALIBRATION_FILE, Classifier, OnnxModel, model_dir_of, top_margin

log = logging.getLogger(__name__)
ONNX_DIR = "onnx"
FP32_FILE, INT8_FILE = "model.onnx", "model.int8.onnx"
RECHECK_FILE = "int8_recheck.json"  # the margin under which onnx-int8 predictions are run again in fp32
RECHECK_TEXTS = 2000  # validation texts the margin is fitted on, at most
FORMATS = ("onnx",)
PARITY_ATOL = 1e-4


class _Logits(torch.nn.Module):
    """Only logits out, so the ONNX graph has one named output."""

    def __init__(self, model, names: List[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs):
        return self.model(**dict(zip(self.names, inputs))).logits


def _saved_texts(run: Path, split: str, n: int) -> List[str]:
    """The first n texts of a split as the run's evaluation saved them (predictions/SPLIT.jsonl), if it did."""
    saved = run / "predictions" / f"{split}.jsonl"
    if not saved.is_file():
        return []
    return [json.loads(line)["text"] for line in saved.read_text(encoding="utf-8").splitlines()[:n]]


def _sample_texts(run: Path, n: int = 64) -> List[str]:
    return _saved_texts(run, "test", n) or ["a short text", "a somewhat longer text with more words in it " * 3, "x"]


def _encode(tokenizer, texts: List[str], max_length: int, names: List[str]) -> Dict[str, np.ndarray]:
    enc = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="np")
    return {k: enc[k].astype(np.int64) for k in names}


def export_fp32(model, tokenizer, names: List[str], path: Path, opset: int) -> None:
    example = _encode(tokenizer, ["export example text", "another, longer example text for the export"], 32, names)
    args = tuple(torch.from_numpy(example[k]) for k in names)
    axes = {k: {0: "batch", 1: "sequence"} for k in names}
    axes["logits"] = {0: "batch"}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
        # a copy: with torch 2.13 and transformers 5 the exporter changes the module it traces (seen on BERT:
        # eager outputs moved by up to 1.5 after export while the ONNX graph kept the original function)
        torch.onnx.export(_Logits(copy.deepcopy(model), names), args, str(path), input_names=names, output_names=["logits"],
                          dynamic_axes=axes, opset_version=opset, do_constant_folding=True, dynamo=False)


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantization: per-channel int8 weights of the MatMul/Gemm layers with constant weights; the
    activation-by-activation attention products stay fp32. Measured on the MiniLM runs (docs/benchmarks.md):
    quantizing those too, or per-tensor scales, cost 1-2 accuracy points and 5% label agreement."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
                     per_channel=True, extra_options={"MatMulConstBOnly": True})


def _validation_texts(run: Path) -> tuple:
    """(texts, where from) of the run's validation split: its saved predictions, else the data its config names."""
    saved = _saved_texts(run, "validation", RECHECK_TEXTS)
    if saved:
        return saved, str(run / "predictions" / "validation.jsonl")
    if (run / "config.yaml").is_file():
        from .config import RunConfig
        from .data import prepare

        cfg = RunConfig.load(run)
        try:
            return list(prepare(cfg.data).validation["text"][:RECHECK_TEXTS]), f"{cfg.data.source} validation split"
        except (UserError, OSError) as err:
            log.warning("int8 re-check: could not load the validation split (%s)", err)
    return [], ""


def fit_recheck_margin(fp32: OnnxModel, int8: OnnxModel, tokenizer, texts: List[str], max_length: int,
                       quantile: float) -> Dict:
    """The int8 top-2 margin under which a prediction is run again in fp32, fitted on held-out texts.

    For each text, `drop` is how much int8 overstates its top class's lead over any other class compared with
    fp32. int8 can only change a label whose int8 margin is under its drop, so re-checking every margin under
    the drop's `quantile` leaves at most (1 - quantile) of texts, of this distribution, able to flip.
    """
    exact = Classifier(fp32, tokenizer, max_length).logits(texts)
    quick = Classifier(int8, tokenizer, max_length).logits(texts)
    top = quick.argmax(1)[:, None]
    lead_int8 = np.take_along_axis(quick, top, 1) - quick
    lead_fp32 = np.take_along_axis(exact, top, 1) - exact
    drop = np.clip(lead_int8 - lead_fp32, 0, None).max(1)
    margin = float(np.quantile(drop, quantile))
    rechecked = top_margin(quick) < margin
    agreement = np.where(rechecked, True, quick.argmax(1) == exact.argmax(1)).mean()
    return {"margin": margin, "quantile": quantile, "texts": len(texts), "rechecked_share": float(rechecked.mean()),
            "label_agreement_without": float((quick.argmax(1) == exact.argmax(1)).mean()),
            "label_agreement_with": float(agreement)}


def parity(model, tokenizer, texts: List[str], max_length: int, onnx: Dict[str, OnnxModel],
           recheck_margin: Optional[float] = None) -> Dict:
    """Max |logit difference| and label agreement of each ONNX model (and of int8 with its fp32 re-check)
    against PyTorch, through the same length-batched Classifier path that predict and serve use."""
    reference = Classifier(model, tokenizer, max_length).logits(texts)
    report: Dict = {"texts": len(texts)}
    runs = {name: Classifier(session, tokenizer, max_length) for name, session in onnx.items()}
    if recheck_margin is not None:
        runs["int8_rechecked"] = Classifier(onnx["int8"], tokenizer, max_length, recheck=(onnx["fp32"], recheck_margin))
    for name, clf in runs.items():
        got = clf.logits(texts)
        report[name] = {"max_abs_logit_diff": float(np.abs(got - reference).max()),
                        "label_agreement": float((got.argmax(1) == reference.argmax(1)).mean())}
    return report


def export(
    run: Path,
    format: Literal["onnx"] = "onnx",
    quantize: Optional[Literal["int8"]] = None,
    output: Optional[Path] = None,
    opset: int = 17,
    recheck_quantile: float = 0.99,
) -> Path:
    """Export a run's model to ONNX (dynamic batch and sequence), optionally int8, and check parity with PyTorch.

    Writes OUTPUT (default RUN/onnx/) with model.onnx, model.int8.onnx (with --quantize int8), the tokenizer,
    config.json (labels), calibration.json and parity.json. fp32 must match PyTorch within 1e-4 in every logit.

    Args:
        run: Run directory written by `encoderfit train` (or a model directory).
        format: Export format; onnx is the one there is.
        quantize: int8: also write a dynamically int8-quantized model (weights int8, activations at run time).
        output: Directory to write. Default: RUN/onnx.
        opset: ONNX opset version.
        recheck_quantile: With int8, fit on the validation split the top-2 logit margin under which int8
            predictions are run again in fp32 (int8_recheck.json): at most 1 - this share of texts can then
            change label. 0 turns the re-check off.
    """
    run = Path(run)
    if not 0 <= recheck_quantile <= 1:
        raise UserError(f"--recheck_quantile must be between 0 and 1 (got {recheck_quantile}); 0 turns the re-check off")
    model_dir = model_dir_of(run)
    out = Path(output) if output else (run if model_dir != run else run.parent) / ONNX_DIR
    check_writable(out, "--output")
    tokenizer = load_tokenizer(ModelArgs(name_or_path=str(model_dir)))
    model = load_weights(AutoModelForSequenceClassification, str(model_dir), attn_implementation="eager").eval()
    if getattr(model.config, "reference_compile", None):
        model.config.reference_compile = False
    names = [k for k in tokenizer.model_input_names if k in ("input_ids", "attention_mask", "token_type_ids")]
    max_length = min(tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", 512))

    work = partial_dir(out)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        export_fp32(model, tokenizer, names, work / FP32_FILE, opset)
        onnx, fitted = {"fp32": OnnxModel(work / FP32_FILE, model.config)}, {}
        if quantize == "int8":
            quantize_int8(work / FP32_FILE, work / INT8_FILE)
            onnx["int8"] = OnnxModel(work / INT8_FILE, model.config)
            texts, source = _validation_texts(run) if recheck_quantile > 0 else ([], "")
            if texts:
                fitted = fit_recheck_margin(onnx["fp32"], onnx["int8"], tokenizer, texts, max_length, recheck_quantile)
                write_json(work / RECHECK_FILE, {**fitted, "fitted_on": source})
                log.info("int8 re-check: margin %.3f re-runs %.1f%% of %d validation texts in fp32 (label agreement "
                         "%.2f%% -> %.2f%%)", fitted["margin"], 100 * fitted["rechecked_share"], len(texts),
                         100 * fitted["label_agreement_without"], 100 * fitted["label_agreement_with"])
            elif recheck_quantile > 0:
                log.warning("int8 re-check off: no validation texts found for %s (evaluate the run first)", run)
        check = parity(model, tokenizer, _sample_texts(run), max_length, onnx, fitted.get("margin"))
        if check["fp32"]["max_abs_logit_diff"] > PARITY_ATOL:
            raise UserError(f"ONNX export of {model_dir} does not match PyTorch: max |logit difference| "
                            f"{check['fp32']['max_abs_logit_diff']:.2e} > {PARITY_ATOL:g}; try another --opset")
        tokenizer.save_pretrained(work)
        model.config.save_pretrained(work)
        if (model_dir / CALIBRATION_FILE).is_file():
            shutil.copy(model_dir / CALIBRATION_FILE, work / CALIBRATION_FILE)
        write_json(work / "parity.json", {**check, "inputs": names, "opset": opset})
        publish_dir(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    for name, result in check.items():
        if isinstance(result, dict):
            log.info("%s: max |logit diff| %.2e, label agreement %.2f%% on %d texts", name,
                     result["max_abs_logit_diff"], 100 * result["label_agreement"], check["texts"])
    log.info("wrote %s", out)
    return out
