"""The comparison `encoderfit compress` writes into metrics.json's "compression" section: the original run, the
compressed one and, with --quantize int8, each as int8 ONNX (commands/export.py's path, with its parity check): size on disk,
CPU latency per text and texts/s (short, on the validation texts, measured by the command itself), the test metric
with its interval and the paired test against the original on the same test examples."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from .rundir import RunDir

log = logging.getLogger(__name__)

LATENCY_TEXTS = 32  # one at a time: the median is the latency per text
THROUGHPUT_TEXTS = 256  # in the predictor's own length batches


def weights_bytes(directory: Path, int8: Optional[bool] = None) -> int:
    """Bytes of a model directory's weights: its .safetensors files, or (int8 given) its fp32 or int8 ONNX file."""
    from .rundir import ModelDir

    if int8 is not None:
        return ModelDir(directory).onnx_file(int8).stat().st_size
    return sum(p.stat().st_size for p in Path(directory).rglob("*.safetensors"))


def speed(predictor, texts: List[str], pairs: Optional[List[str]]) -> Dict:
    """CPU latency per text (median of single-text calls) and texts/s (one call over the texts)."""
    some = texts[:LATENCY_TEXTS]
    predictor.logits(some[:2], pairs[:2] if pairs else None)  # warm-up
    single = []
    for i, text in enumerate(some):
        t0 = time.perf_counter()
        predictor.logits([text], [pairs[i]] if pairs else None)
        single.append(time.perf_counter() - t0)
    many, many_pairs = texts[:THROUGHPUT_TEXTS], pairs[:THROUGHPUT_TEXTS] if pairs else None
    t0 = time.perf_counter()
    predictor.logits(many, many_pairs)
    took = time.perf_counter() - t0
    return {"latency_ms": round(1000 * float(np.median(single)), 3), "texts_per_s": round(len(many) / took, 1),
            "texts_timed": len(many)}


def row(name: str, predictor, preds, original, task, labels: List[str], head: Dict, original_head: Dict,
        texts: List[str], pairs, size: int) -> Dict:
    """One line of the table: size, speed, the test metric with its interval, the paired test against the original."""
    from .verdict import compare, intervals

    primary = task.summary[0][0]
    ci = intervals(task, preds, labels, head).get(primary, {})
    ci = {"value": float(task.scoring.interval_metrics(preds, labels, head)[0][primary](np.arange(len(preds.texts)))), **ci}
    result = {"model": name, "size_mb": round(size / 2 ** 20, 2), **speed(predictor, texts, pairs), "metric": primary,
              "test": ci}
    if original is not None:
        verdict = compare(task, preds, original, labels, head, original_head, against=("the original run", "the original"))["verdict"]
        result["against_original"] = {"outcome": verdict["outcome"], "difference": verdict["difference"],
                                      "p_value": verdict.get("p_value")}
    return result


def comparison(source: RunDir, compressed: RunDir, splits, original_int8: Optional[Path] = None) -> Dict:
    """The table's rows (original, compressed, and where `original_int8` names the original's int8 export, the
    compressed run's RUN/onnx and that one) and sizes."""
    from .predictor import Predictor
    from .verdict import predict_split

    cfg = compressed.config()
    labels = cfg.labels
    texts, pairs, _ = compressed.task().targets.distill_texts(splits.validation)  # as the model reads them
    models = [("original", source.path, "torch"), ("compressed", compressed.path, "torch")]
    if original_int8 is not None:
        models += [("compressed + int8", compressed.path, "onnx-int8"), ("original int8", original_int8, "onnx-int8")]
    rows, original, original_head = [], None, None
    for name, path, backend in models:
        predictor = Predictor.from_pretrained(path, device="cpu", backend=backend)
        task = predictor.task
        head = predictor.head
        saved = RunDir(path).predictions("test", task, labels) if backend == "torch" else None
        preds = saved if saved is not None else predict_split(predictor, splits.test)
        if name == "original":
            original, original_head = preds, head
        where = Path(path) / RunDir.ONNX if (Path(path) / RunDir.ONNX).is_dir() else Path(path)
        size = weights_bytes(RunDir(path).model.path) if backend == "torch" else weights_bytes(where, int8=True)
        rows.append(row(name, predictor, preds, None if name == "original" else original, task, labels, head,
                        original_head, texts, pairs, size))
        del predictor
    for r in rows:
        ci = r["test"]
        vs = r.get("against_original")
        log.info("%-18s %8.2f MB %8.2f ms/text %8.1f texts/s  %s %s%s", r["model"], r["size_mb"], r["latency_ms"],
                 r["texts_per_s"], r["metric"], _interval(ci),
                 f"  vs original {vs['difference']['difference']:+.4f} ({vs['outcome']})" if vs else "")
    return {"table": rows, "size_mb": {"original": rows[0]["size_mb"], "compressed": rows[1]["size_mb"]},
            "speed_note": "measured by the command on this machine, on the validation texts"}



def _interval(ci: Dict) -> str:
    if not ci:
        return "-"
    value = ci.get("value", ci.get("estimate"))
    return f"{value:.4f} [{ci.get('low', float('nan')):.4f}, {ci.get('high', float('nan')):.4f}]"
