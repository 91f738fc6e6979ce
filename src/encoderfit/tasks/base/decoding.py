"""From logits to results: decisions under the fitted head, probabilities, decision margins (int8
re-checks), parity of two models' outputs, CSV rows, the server's monitoring signals, the saved columns."""

from __future__ import annotations

from typing import Any, Dict, List

from ...core.errors import UserError
from .part import Part, Result


class Decoding(Part):
    def logits_to_columns(self, logits) -> Dict[str, list]:
        """Model outputs -> columns of the saved predictions file."""
        return {"logits": [[float(v) for v in row] for row in logits]}

    def logits_from_columns(self, rows: Dict[str, list], labels: List[str], where: str):
        import numpy as np

        logits = np.asarray(rows["logits"], dtype=np.float32).reshape(len(rows["text"]), -1)
        if logits.shape[1] != self.task.targets.num_outputs(labels):
            raise UserError(f"{where}: {logits.shape[1]} logits per row, but the run has {self.task.targets.num_outputs(labels)} outputs; "
                            "re-run `encoderfit eval` on the run")
        return logits

    def decode(self, logits, labels: List[str], head: Dict[str, Any], calibrated: bool = True,
               abstain: bool = False) -> List[Result]:
        """Raw logits -> one result dict per row."""
        raise NotImplementedError

    def probabilities(self, logits, head: Dict[str, Any], calibrated: bool = True):
        raise UserError(f"the {self.task.name} task has no class probabilities; use predict()")

    def decision_margin(self, logits, head: Dict[str, Any]):
        """Per row, how far the logits are from changing the decision (inf where nothing is decided)."""
        import numpy as np

        return np.full(len(logits), np.inf)

    def margin_drop(self, quick, exact, head: Dict[str, Any]):
        """Per row, how much `quick` (e.g. int8) logits overstate the decision margin of the `exact` ones: a
        decision can only change where the quick margin is under this."""
        import numpy as np

        return np.zeros(len(quick))

    def compare(self, reference, got, head: Dict[str, Any]) -> Dict[str, float]:
        """Parity of two models' logits on the same texts (export): max difference and decision agreement."""
        import numpy as np

        return {"max_abs_logit_diff": float(np.abs(got - reference).max()) if len(got) else 0.0}

    def csv_header(self, labels: List[str]) -> List[str]:
        raise NotImplementedError

    def csv_row(self, result: Result, labels: List[str]) -> List[str]:
        raise NotImplementedError

    def signals(self, result: Result) -> Dict[str, Any]:
        """What the server's monitoring records for one result: any of labels (counted), confidence (a probability),
        score (a predicted number), abstained (bool)."""
        return {}

    def monitored(self, result: Result) -> Dict[str, Any]:
        """What the prediction log keeps of one result (runs/predlog.py): label (the decision as one string, or
        None), score (a predicted number, or None), confidence (the calibrated probability that the decision is right,
        or None) and detail (a small JSON-able dict, or None). Default: from `signals`."""
        signals = self.signals(result)
        labels = signals.get("labels")
        return {"label": "|".join(labels) if labels is not None else None, "score": signals.get("score"),
                "confidence": signals.get("confidence"), "detail": None}

    def feedback_value(self, value: Any, labels: List[str]) -> Any:
        """A corrected decision as a person sends it (`POST /v1/feedback`, `encoderfit feedback`) -> the JSON value the
        prediction log keeps and `targets.targets_from_json` reads back; a ValueError says what is wrong with it."""
        raise ValueError(f"the {self.task.name} task takes no feedback labels yet")
