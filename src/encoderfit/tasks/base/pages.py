"""How a task's results are shown: the report's cards and sections, the model card, `encoderfit eval`'s
details."""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from .part import Part


class Pages(Part):
    def headline(self, metrics: Dict[str, Any]) -> List[Tuple[str, str, str]]:
        """(title, metrics.json path, format) of the report's cards."""
        return [(title, f"test.{key}", ".4f") for key, title in self.task.summary[:2]]

    def report_sections(self, metrics: Dict[str, Any], cfg, noise: List[Dict]) -> List[str]:
        """The report's task-specific HTML sections."""
        return []

    def card_results(self, metrics: Dict[str, Any]) -> List[Tuple[str, float, str, Dict]]:
        """(metric type, value, name, args) of the model card's eval results (test split)."""
        return [(key, metrics["test"][key], f"Test {title}", {}) for key, title in self.task.summary if key in metrics["test"]]

    def intended_use(self, labels: List[str]) -> str:
        """The model card's first sentence on use: what the model does, and the limit particular to the task."""
        return "Predicting for text like the training data."

    def plain_usage(self, cfg) -> List[str]:
        """The model card's lines of Python that load the model without encoderfit."""
        if cfg.resolved.get("pooling") or getattr(cfg.model, "head", "linear") == "embedding":
            return ["# or sentence-transformers (its Dense module gives the logits; a transformers pipeline refuses it):",
                    "from sentence_transformers import SentenceTransformer",
                    'logits = SentenceTransformer("path/to/model").encode(["a text"])']
        return ["# or plain transformers:", "from transformers import pipeline", f'pipe = pipeline("{self.task.pipeline_tag}", model="path/to/model")']

    def card_sections(self, metrics: Dict[str, Any], cfg) -> List[str]:
        """Markdown paragraphs of the model card about the head (calibration, thresholds, intervals)."""
        return []

    def print_details(self, results: Dict[str, Any], split: str, labels: List[str], console) -> None:
        """What `encoderfit eval` prints after the summary table."""
        return None
