"""`encoderfit export`: a run's model as ONNX (dynamic batch and sequence axes), optionally int8-quantized, with the
tokenizer, config and encoderfit.json beside it, and a parity check against PyTorch before anything is kept.

ModernBERT exports with eager attention and nothing compiled (flash-attention and compiled paths do not export);
BERT-family models export as they are. Parity is the task's: logits, and the decisions made from them (labels,
label sets; for regression the scores themselves)."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Optional
from ..core.args import ModelArgs
from ..core.errors import UserError
from ..core.files import check_writable, partial_dir, publish_dir, write_json
from ..runs.backends import ExportJob, exports_for
from ..runs.export import MIN_OPSET, export_backends, max_opset
from ..runs.rundir import ModelDir, RunDir, locate
from ..tasks import get_task

log = logging.getLogger(__name__)


def export(
    run: Path,
    format: str = "onnx",
    quantize: Optional[str] = None,
    output: Optional[Path] = None,
    opset: int = 17,
    recheck_quantile: float = 0.99,
) -> Path:
    """Export a run's model to ONNX (dynamic batch and sequence), optionally int8, and check parity with PyTorch.

    Writes OUTPUT (default RUN/onnx/) with model.onnx, model.int8.onnx (with --quantize int8), the tokenizer,
    config.json, encoderfit.json (task, head), parity.json and exported_from.json (the fingerprint of the model exported,
    which stamps the rows `predict`/`serve --log` write from this directory). fp32 must match PyTorch within 1e-4 in
    every logit.

    Args:
        run: Run directory written by `encoderfit train` (or a model directory).
        format: Export format: that of a backend in runs/backends (onnx, the one there is).
        quantize: int8: also write a dynamically int8-quantized model (weights int8, activations at run time).
        output: Directory to write. Default: RUN/onnx.
        opset: ONNX opset version (11 up to the newest the installed torch exports, 23 for torch 2.13).
        recheck_quantile: With int8, fit on the validation split the decision margin under which int8 predictions
            are run again in fp32 (int8_recheck.json): at most 1 - this share of texts can then change decision.
            0 turns the re-check off.
    """
    from ..models.loading import load_tokenizer, load_trained

    run = Path(run)
    backends = exports_for(format, quantize)  # onnx, and onnx-int8 with --quantize int8
    if not MIN_OPSET <= opset <= max_opset():
        raise UserError(f"--opset: {opset} is outside the range this torch exports encoders to, {MIN_OPSET}-{max_opset()}; "
                        "use e.g. --opset 17 (the default)")
    if not 0 <= recheck_quantile <= 1:
        raise UserError(f"--recheck_quantile must be between 0 and 1 (got {recheck_quantile}); 0 turns the re-check off")
    rundir, source = locate(run)
    out = Path(output) if output else (rundir.path if rundir else run.parent) / RunDir.ONNX
    check_writable(out, "--output")
    info = source.info()
    task = get_task(info.task, "export")
    tokenizer = load_tokenizer(ModelArgs(name_or_path=str(source.path)))
    model = load_trained(str(source.path), task, info.members, attn_implementation="eager").eval()
    if getattr(model.config, "reference_compile", None):
        model.config.reference_compile = False
    names = [k for k in tokenizer.model_input_names if k in ("input_ids", "attention_mask", "token_type_ids")]

    work = partial_dir(out)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    target = ModelDir(work)
    try:
        job = ExportJob(model, tokenizer, names, source, target, task, opset)
        check = export_backends(job, backends, rundir, info, recheck_quantile)
        tokenizer.save_pretrained(work)
        model.config.save_pretrained(work)
        target.write_info(replace(info, members=[]))  # the ONNX graph holds every member
        if (source / ModelDir.CARD).is_file():
            shutil.copy(source / ModelDir.CARD, target / ModelDir.CARD)
        write_json(target / ModelDir.PARITY, {**check, "inputs": names, "opset": opset})
        write_json(target / ModelDir.EXPORTED_FROM, {"model_sha256": source.fingerprint(), "model_dir": str(source.path.resolve())})
        publish_dir(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    for name, result in check.items():
        if isinstance(result, dict):
            log.info("%s against PyTorch on %d texts: %s", name, check["texts"], json.dumps(result))
    log.info("wrote %s", out)
    return out
