"""The drift tests of `encoderfit monitor`, a plain dict like tasks' TASKS: monitor runs each registered test whose
needs the window meets, in this order, the multiple-test correction (Bonferroni) counts those that gave a p-value, and
the report shows each one's row and figure (runs/monitor_report.py).

A new test is one module (a `DriftTest`: name, needs, compute, report title, effect and figure; base.py) plus one
entry below (docs/development.md, "Recipe: a new drift test").
"""

from __future__ import annotations

from typing import Dict

from .base import SIGNALS, DriftTest, histogram, histograms, mean_shift
from .embeddings import EMBEDDINGS
from .predictions import CONFIDENCE, LABEL_SHARES
from .tokens import LENGTH, UNKNOWN_TOKENS
from .window import DriftOptions, Window, sample

DRIFT_TESTS: Dict[str, DriftTest] = {test.name: test for test in (LENGTH, UNKNOWN_TOKENS, LABEL_SHARES, CONFIDENCE, EMBEDDINGS)}

__all__ = ["DRIFT_TESTS", "SIGNALS", "DriftOptions", "DriftTest", "Window", "histogram", "histograms", "mean_shift", "sample"]
