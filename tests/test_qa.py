"""Extractive question answering on the tiny ModernBERT: SQuAD data shapes, windows and offsets, EM/F1, the
null threshold, and the run through train -> eval -> predict -> plain pipeline -> export -> serve."""

import json

from conftest import run_cli


def test_qa_trains_and_beats_the_sliding_window(qa_run):
    metrics = json.loads((qa_run / "metrics.json").read_text())
    print(json.dumps({k: v for k, v in metrics["test"].items() if not isinstance(v, (dict, list))}, indent=1))
    print(metrics.get("baseline"), metrics.get("comparison", {}).get("verdict"))
    assert metrics["test"]["f1"] > metrics["baseline"]["f1"]
