"""Drift tests of the model's answers: its predicted label shares (chi-square test of the 2 x K table, and the PSI)
and its confidence (two-sample Kolmogorov-Smirnov), validation against the window (core/drift.py)."""

from __future__ import annotations

from typing import Dict

from ...core import drift
from .base import FIGURES as f, DriftTest, histogram
from .window import Window


def label_shares(window: Window) -> Dict:
    return drift.label_shift(window.reference("label"), list(window.current("label")), window.labels)


def psi(name: str, test: Dict) -> str:
    return f"PSI {f.num(test['psi'], f'tests.{name}.psi', '.3f')}"


def confidence(window: Window) -> Dict:
    reference, current = window.reference("confidence"), window.current("confidence")
    window.histograms["confidence"] = [reference, current.tolist()]
    return drift.ks(reference, current)


LABEL_SHARES = DriftTest("label_shares", "predicted label shares (chi-square; PSI)", ("label",), label_shares,
                         statistic="chi2", effect=psi)
CONFIDENCE = DriftTest("confidence", "confidence (KS)", ("confidence",), confidence,
                       figure=histogram("confidence", "calibrated top probability"))
