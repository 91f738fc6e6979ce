"""What a drift test reads: the reference (the run's validation split, as the model saw it) and the window of logged
rows of the run's model, with the signals of SIGNALS on both sides, each computed once, when a test first asks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

SIGNALS: Dict[str, Tuple[Optional[str], bool]] = {
    # signal -> (its column in the prediction log, whether every row of the window must hold it for a test that needs
    # it to run; the reference, the run's validation split, must give it too)
    "tokens": ("tokens", True),  # length in sub-word tokens, not truncated
    "unknown": ("unknown", True),  # share of unknown tokens
    "label": ("label", True),  # the model's own top label(s) (an abstention keeps it)
    "confidence": ("confidence", True),  # calibrated top probability
    "text": ("text", False),  # held by the rows logged with --log_texts: a test reads those, and says how many
    "sentence_vectors": (None, False),  # the model's own, of those texts (Predictor.sentence_vectors); None from ONNX
}


@dataclass(frozen=True)
class DriftOptions:
    """monitor's options the drift tests read."""

    min_rows: int
    """Fewest rows a test runs on (the embedding test: rows that hold their texts)."""
    max_rows: int
    """Most texts on each side of the embedding test (a seeded sample beyond)."""
    permutations: int
    """Permutations of a permutation test (its smallest p-value is 1 / (permutations + 1))."""


class Window:
    """The reference and the window for the drift tests of one `monitor` call.

    run: the RunDir; task: the run's Task; labels, head: the model's labels and fitted head; validation: the
    validation split's saved predictions (texts, pairs, logits); frame: the window's logged rows of this model (a
    pandas frame with the prediction log's columns); figures: monitor.json being built (a test may write the top-level
    keys its record names in `notes`); histograms: name -> [reference sample, window sample] for the report's figures.
    """

    def __init__(self, run, task, labels: List[str], head: Dict, validation, frame, figures: Dict, options: DriftOptions):
        self.run, self.task, self.labels, self.head = run, task, labels, head
        self.validation, self.frame, self.figures, self.options = validation, frame, figures, options
        self.histograms: Dict[str, list] = figures.setdefault("histograms", {})
        self._cache: Dict[str, Optional[list]] = {}
        self._predictor = None

    def reference(self, signal: str) -> Optional[list]:
        """The validation split's values of a row signal (tokens, unknown, label, confidence), one per text; None where
        the task gives none (a label for regression, a confidence for NER ...)."""
        if signal not in self._cache:
            if signal in ("tokens", "unknown"):
                from ...core.args import ModelArgs
                from ...models.loading import load_tokenizer
                from ..predlog import TokenStats

                stats = TokenStats(load_tokenizer(ModelArgs(name_or_path=str(self.run.model.path))))
                self._cache["tokens"], self._cache["unknown"] = stats(self.validation.texts, self.validation.pairs)
            elif signal in ("label", "confidence"):
                decoding = self.task.decoding
                seen = [decoding.monitored(r) for r in decoding.decode(self.validation.logits, self.labels, self.head)]
                for name in ("label", "confidence"):
                    self._cache[name] = [s[name] for s in seen] if seen and seen[0][name] is not None else None
            else:
                raise KeyError(f"'{signal}' is not a row signal of the reference (tokens, unknown, label, confidence)")
        return self._cache[signal]

    def current(self, signal: str):
        """The window's column of a signal (a pandas Series, one value per logged row)."""
        return self.frame[SIGNALS[signal][0]]

    def has(self, signal: str) -> bool:
        """Whether a test that needs `signal` can run: for a signal every row must hold, the reference gives it and
        every row of the window holds it; the others (texts, sentence vectors) the test checks itself."""
        column, every_row = SIGNALS[signal]
        if not every_row:
            return True
        return self.reference(signal) is not None and bool(self.frame[column].notna().all())

    def predictor(self):
        """The run's Predictor (loaded once): `predictor().sentence_vectors(texts, pairs)`."""
        if self._predictor is None:
            from ..predictor import Predictor

            self._predictor = Predictor.from_pretrained(self.run.path)
        return self._predictor


def sample(n: int, most: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded sample of `most` of n rows (all n when n <= most)."""
    return np.sort(np.random.default_rng(seed).choice(n, most, replace=False)) if n > most else np.arange(n)
