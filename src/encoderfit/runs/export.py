"""What `encoderfit export` does for any backend it writes (runs/backends/): each backend's export in turn, the
re-check margin a lossy one fits on validation, and the parity check against PyTorch before anything is kept. Parity
is the task's: logits, and the decisions made from them (labels, label sets; for regression the scores themselves).
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Tuple

from ..core.errors import UserError
from ..core.files import write_json
from .backends import BACKENDS, ExportJob, InferenceBackend
from .backends.onnx import MIN_OPSET, max_opset  # noqa: F401  (the --opset range, as export checks it)
from .predictor import Predictor
from .rundir import ModelInfo, RunDir
from ..tasks import Task

log = logging.getLogger(__name__)
RECHECK_TEXTS = 2000  # validation texts the re-check margin is fitted on, at most
SAMPLE_TEXTS = 64  # test texts the parity check runs on
Texts = Tuple[List[str], Optional[List[str]]]


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


def fit_recheck_margin(exact, quick, tokenizer, info: ModelInfo, task: Task, texts: List[str],
                       pairs: Optional[List[str]], quantile: float) -> Dict:
    """The decision margin of a lossy model (`quick`: int8) under which a prediction is run again through the exact
    one (fp32), fitted on held-out texts.

    For each text, `drop` is how much the lossy model overstates how far its decision is from changing, compared with
    the exact one (the task's margin_drop). It can only change a decision whose margin is under its drop, so
    re-checking every margin under the drop's `quantile` leaves at most (1 - quantile) of texts, of this distribution,
    able to change. The agreement with the re-check is measured by running it, not assumed.
    """
    import numpy as np

    reference = Predictor(exact, tokenizer, info).logits(texts, pairs)
    fast = Predictor(quick, tokenizer, info).logits(texts, pairs)
    margin = float(np.quantile(task.decoding.margin_drop(fast, reference, info.head), quantile)) if len(texts) else 0.0
    checked = Predictor(quick, tokenizer, info, recheck=(exact, margin)).logits(texts, pairs)
    return {"margin": margin, "quantile": quantile, "texts": len(texts),
            "rechecked_share": float((task.decoding.decision_margin(fast, info.head) < margin).mean()),
            "without": task.decoding.compare(reference, fast, info.head), "with": task.decoding.compare(reference, checked, info.head)}


def parity(job: ExportJob, info: ModelInfo, texts: List[str], pairs: Optional[List[str]], exported: Dict[str, Any],
           rechecked: Dict[str, Tuple[Any, Any, float]]) -> Dict:
    """The task's parity (max |logit difference|, decision agreement) against PyTorch of each exported model (by its
    parity key), and of each lossy one with its re-check (KEY_rechecked: (model, exact model, margin)), through the same
    length-batched Predictor path that predict and serve use."""
    reference = Predictor(job.model, job.tokenizer, info).logits(texts, pairs)
    runs = {key: Predictor(model, job.tokenizer, info) for key, model in exported.items()}
    for key, (model, exact, margin) in rechecked.items():
        runs[f"{key}_rechecked"] = Predictor(model, job.tokenizer, info, recheck=(exact, margin))
    compare = job.task.decoding.compare
    return {"texts": len(texts), **{key: compare(reference, p.logits(texts, pairs), info.head) for key, p in runs.items()}}


def export_backends(job: ExportJob, backends: List[InferenceBackend], run: Optional[RunDir], info: ModelInfo,
                    recheck_quantile: float) -> Dict:
    """Each backend's files written into job.target (in order: a quantized one reads the file before it), a re-check
    margin fitted on validation for each lossy one (0 quantile: none), and the parity of each against PyTorch on
    test texts, which a backend with a `parity_atol` must meet (else UserError, nothing kept). Returns the parity."""
    rechecked = {}
    for backend in backends:
        job.models[backend.name] = backend.export(job)
        if recheck_quantile > 0 and backend.fits_recheck(job.task):
            margin = fit_recheck(job, backend, run, info, recheck_quantile)
            if margin is not None:
                rechecked[backend.parity_key] = (job.models[backend.name], job.models[backend.recheck_against], margin)
    texts, pairs = sample_texts(run, info, job.task)
    check = parity(job, info, texts, pairs, {b.parity_key: job.models[b.name] for b in backends}, rechecked)
    for backend in backends:
        diff = check[backend.parity_key]["max_abs_logit_diff"]
        if backend.parity_atol is not None and diff > backend.parity_atol:
            raise UserError(f"{backend.format.upper()} export of {job.source.path} does not match PyTorch: max |logit "
                            f"difference| {diff:.2e} > {backend.parity_atol:g}; {backend.parity_hint}")
    return check


def fit_recheck(job: ExportJob, backend: InferenceBackend, run: Optional[RunDir], info: ModelInfo,
                quantile: float) -> Optional[float]:
    """The re-check margin of `backend` against its exact one, fitted on the run's validation texts and written to
    its recheck_file; None (with a warning) where the run has no validation texts."""
    texts, pairs, where = validation_texts(run, job.task, info.labels)
    if not texts:
        log.warning("%s re-check off: no validation texts found for %s (evaluate the run first)", backend.quantization,
                    run.path if run else job.source.path)
        return None
    exact = job.models[backend.recheck_against]
    fitted = fit_recheck_margin(exact, job.models[backend.name], job.tokenizer, info, job.task, texts, pairs, quantile)
    write_json(job.target / backend.recheck_file, {**fitted, "fitted_on": where})
    log.info("%s re-check: margin %.3f re-runs %.1f%% of %d validation texts in %s (without: %s; with: %s)",
             backend.quantization, fitted["margin"], 100 * fitted["rechecked_share"], len(texts),
             BACKENDS[backend.recheck_against].parity_key, fitted["without"], fitted["with"])
    return fitted["margin"]
