"""Drift tests of the input's token figures: each text's length in tokens and its share of unknown tokens, validation
against the window, two-sample Kolmogorov-Smirnov (core/drift.py)."""

from __future__ import annotations

from typing import Dict

from ...core import drift
from .base import DriftTest, histogram
from .window import Window


def length(window: Window) -> Dict:
    reference, current = window.reference("tokens"), window.current("tokens")
    window.histograms["length"] = [reference, current.tolist()]
    return drift.ks(reference, current)


def unknown_tokens(window: Window) -> Dict:
    return drift.ks(window.reference("unknown"), window.current("unknown"))


LENGTH = DriftTest("length", "length in tokens (KS)", ("tokens",), length, figure=histogram("length in tokens", "tokens"))
UNKNOWN_TOKENS = DriftTest("unknown_tokens", "share of unknown tokens (KS)", ("unknown",), unknown_tokens)
