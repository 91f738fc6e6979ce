"""A split's predictions, saved and loaded, and the analysis built from them: metrics, calibration before and
after temperature scaling, the coverage sweep and threshold, confused pairs and confident mistakes.

Needs no model: `encoderfit report` rebuilds everything from the saved predictions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from .calibration import (calibration_metrics, coverage_sweep, fit_temperature, reliability_bins, softmax,
                          threshold_for)
from .config import ReportArgs
from .errors import UserError
from .files import atomic_file
from .metrics import classification_metrics, confused_pairs, wrong_with_confidence

PREDICTIONS_DIR = "predictions"
TEXT_CHARS = 300  # texts in the report's error tables are cut to this length


@dataclass
class Predictions:
    """A split's texts, true label ids and raw logits: everything the analysis and the report need."""

    texts: List[str]
    labels: np.ndarray
    logits: np.ndarray

    @classmethod
    def of(cls, classifier, ds) -> "Predictions":
        pairs = ds["text_pair"] if "text_pair" in ds.column_names else None
        texts = ds["text"] if pairs is None else [f"{a} ‖ {b}" for a, b in zip(ds["text"], pairs)]
        return cls(list(texts), np.asarray(ds["labels"]), classifier.logits(ds["text"], pairs))

    def save(self, path: Path, names: List[str]) -> None:
        with atomic_file(path) as handle:
            for text, y, row in zip(self.texts, self.labels, self.logits):
                handle.write(json.dumps({"text": text, "label": names[y], "logits": [round(float(v), 6) for v in row]}) + "\n")

    @classmethod
    def load(cls, path: Path, names: List[str]) -> "Predictions":
        if not path.is_file():
            raise UserError(f"{path} is missing: the run has no saved predictions; run `encoderfit eval {path.parent.parent}` to make them")
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        index = {name: i for i, name in enumerate(names)}
        unknown = sorted({r["label"] for r in rows} - set(index))
        if unknown or any(len(r["logits"]) != len(names) for r in rows):
            raise UserError(f"{path}: label set does not match the run's labels {names} (found {unknown or 'a different number of logits'}); re-run `encoderfit eval`")
        return cls([r["text"] for r in rows], np.array([index[r["label"]] for r in rows]), np.array([r["logits"] for r in rows]))


# ---------------------------------------------------------------- the analysis


def analyse_split(p: Predictions, labels: List[str], temperature: float, max_examples: int) -> Dict:
    raw, cal = softmax(p.logits), softmax(p.logits, temperature)
    m = classification_metrics(p.labels, raw.argmax(1), labels)
    m["calibration"] = {
        "before": calibration_metrics(raw, p.labels), "after": calibration_metrics(cal, p.labels),
        "reliability_before": reliability_bins(raw, p.labels), "reliability_after": reliability_bins(cal, p.labels),
    }
    m["sweep"] = coverage_sweep(cal, p.labels)
    m["confused_pairs"] = confused_pairs(m["confusion_matrix"]["matrix"], labels)
    mistakes = wrong_with_confidence(p.texts, p.labels, cal, labels)[:max_examples]
    m["confident_mistakes"] = [{**row, "text": _cut(row["text"])} for row in mistakes]
    return m


def analyse(labels: List[str], preds: Dict[str, Predictions], report: ReportArgs,
            temperature: Optional[float] = None, threshold: Optional[float] = None) -> Dict:
    """Metrics for each split; temperature and threshold are fitted on validation unless given."""
    fitted = temperature is None
    if fitted:
        temperature = fit_temperature(preds["validation"].logits, preds["validation"].labels)
    out: Dict = {role: analyse_split(p, labels, temperature, report.max_examples) for role, p in preds.items()}
    if fitted and report.target_accuracy is not None:
        threshold = threshold_for(out["validation"]["sweep"], report.target_accuracy)
    out["calibration"] = {"temperature": temperature, "fitted_on": "validation" if fitted else "saved"}
    out["threshold"] = {"target_accuracy": report.target_accuracy, "value": threshold, "chosen_on": "validation" if fitted else "saved",
                        **{role: at_threshold(out[role]["sweep"], threshold) for role in preds}}
    return out


def at_threshold(sweep: List[Dict], threshold: Optional[float]) -> Optional[Dict]:
    if threshold is None:
        return None
    return min(sweep, key=lambda row: abs(row["threshold"] - threshold))


def _cut(text: str) -> str:
    return text if len(text) <= TEXT_CHARS else text[: TEXT_CHARS - 1] + "…"
