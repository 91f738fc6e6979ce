"""The drift-test registry (runs/drift/): a test registered from outside the package (here, this test module:
docs/development.md's "Recipe: a new drift test") is run by the real `monitor`, counted by its multiple-test
correction and shown in its report, with no other file changed; a test whose needs the window lacks is neither run nor
counted; and monitoring reads sentence vectors through the Predictor's public `sentence_vectors` (issue 51, items 2,
5 and 7)."""

import ast
import json
from pathlib import Path

import numpy as np
import pytest

import encoderfit
from conftest import make_rows, make_search_rows, run_cli, write_csv
from encoderfit.runs.drift import DRIFT_TESTS, DriftTest, Window, histogram
from encoderfit.runs.predictor import Predictor

ALPHA = 0.01  # monitor's default
SHIPPED = ["length", "unknown_tokens", "label_shares", "confidence", "embeddings"]


def text_chars(window: Window):
    """Characters per text, validation against the window's rows that hold their texts: Welch's t-test of the means."""
    from scipy.stats import ttest_ind

    held = window.current("text").dropna()
    if len(held) < window.options.min_rows:
        return None
    reference, current = [len(t) for t in window.validation.texts], [len(t) for t in held]
    window.histograms["text_chars"] = [reference, current]
    result = ttest_ind(reference, current, equal_var=False)
    return {"statistic": float(result.statistic), "p_value": float(result.pvalue), "reference_mean": float(np.mean(reference)),
            "current_mean": float(np.mean(current)), "rows": len(current)}


# the recipe's one module (here, this file) and its record; the default effect cell shows the two means
TEXT_CHARS = DriftTest("text_chars", "characters per text (Welch t-test)", ("text",), text_chars,
                       figure=histogram("characters per text", "characters"))


@pytest.fixture
def text_chars_registered(monkeypatch):
    monkeypatch.setitem(DRIFT_TESTS, TEXT_CHARS.name, TEXT_CHARS)  # the recipe's one registry entry
    yield TEXT_CHARS
    monkeypatch.undo()
    assert TEXT_CHARS.name not in DRIFT_TESTS and list(DRIFT_TESTS) == SHIPPED


def monitor(run, db, out):
    proc = run_cli("monitor", str(run), "--log", str(db), "--output", str(out), "--min_rows", "20", "--permutations", "100",
                   check=False)
    assert proc.returncode in (0, 3) and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc, json.loads((out / "monitor.json").read_text()), (out / "monitor.html").read_text()


def counted(report):
    """The tests the correction counted: those that gave a p-value."""
    return [name for name, test in report["tests"].items() if test and test.get("p_value") is not None]


@pytest.fixture(scope="module")
def long_texts(trained_run, tmp_path_factory):
    """60 logged predictions of the toy run, with their texts: the training topics, each text three times over."""
    home = tmp_path_factory.mktemp("drift-registry")
    rows = [{"text": " ".join([r["text"]] * 3), "label": r["label"]} for r in make_rows(20, seed=41)]
    run_cli("predict", str(trained_run), "--input", str(write_csv(home / "in.csv", rows)), "--output", str(home / "out.jsonl"),
            "--log", str(home / "log.db"), "--log_texts", "true")
    return home / "log.db"


def test_a_drift_test_registered_from_a_test_module_is_run_counted_and_reported(trained_run, long_texts, text_chars_registered,
                                                                                tmp_path):
    proc, report, html = monitor(trained_run, long_texts, tmp_path / "m")
    assert list(report["tests"]) == SHIPPED + ["text_chars"]  # the registry's order, the new test last
    test = report["tests"]["text_chars"]
    assert test["rows"] == report["rows"] == 60 and test["current_mean"] > 2.5 * test["reference_mean"]
    assert counted(report) == SHIPPED + ["text_chars"] and report["threshold"] == pytest.approx(ALPHA / 6)
    assert test["alarm"] and proc.returncode == 3
    alarm = next(a for a in report["alarms"] if a.startswith("text_chars drift"))
    assert alarm.endswith(f"(alpha {ALPHA:g} / 6 tests)") and alarm in proc.stderr
    assert "characters per text (Welch t-test)" in html and 'data-metric="tests.text_chars.p_value"' in html
    assert 'data-metric="tests.text_chars.current_mean"' in html  # the default effect cell: the two means
    assert "<img alt='characters per text'" in html  # its figure


def test_without_it_the_shipped_tests_run_and_are_counted_alone(trained_run, long_texts, tmp_path):
    assert list(DRIFT_TESTS) == SHIPPED
    _, report, html = monitor(trained_run, long_texts, tmp_path / "m")
    assert counted(report) == SHIPPED and report["threshold"] == pytest.approx(ALPHA / 5)
    assert "text_chars" not in report["tests"] and "characters per text" not in html
    assert 'data-metric="tests.label_shares.chi2"' in html and 'data-metric="tests.embeddings.mmd2"' in html


def test_a_test_whose_needs_the_window_lacks_is_neither_run_nor_counted(embedding_run, tmp_path, monkeypatch):
    # an embedding model's outputs are vectors: no label, no confidence, so label_shares and confidence do not run
    # there, and neither does a registered test that needs a confidence
    calls = []
    needs_confidence = DriftTest("confidence_mean", "mean confidence", ("confidence",), lambda window: calls.append(1))
    monkeypatch.setitem(DRIFT_TESTS, needs_confidence.name, needs_confidence)
    monkeypatch.setitem(DRIFT_TESTS, TEXT_CHARS.name, TEXT_CHARS)
    (tmp_path / "in.txt").write_text("\n".join(r["query"] for r in make_search_rows(60, seed=7)) + "\n")
    run_cli("predict", str(embedding_run), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "p.jsonl"),
            "--log", str(tmp_path / "log.db"), "--log_texts", "true")
    _, report, _ = monitor(embedding_run, tmp_path / "log.db", tmp_path / "m")
    assert calls == [] and counted(report) == ["length", "unknown_tokens", "embeddings", "text_chars"]
    assert report["threshold"] == pytest.approx(ALPHA / 4)


def test_a_test_needing_an_unknown_signal_is_refused_when_declared():
    with pytest.raises(ValueError, match=r"needs \['colour'\] are not signals; expected some of tokens, unknown, label"):
        DriftTest("colour", "colour of the text", ("colour",), lambda window: None)


def test_sentence_vectors_come_from_the_predictor_batched_as_one_text_at_a_time(trained_run, embedding_run):
    import torch

    from encoderfit.models.hidden_vectors import encoder_body

    texts = [r["text"] for r in make_rows(4, seed=5)] + ["a", "garlic " * 40]  # lengths unlike each other: padded batches
    predictor = Predictor.from_pretrained(trained_run)
    vectors = predictor.sentence_vectors(texts)
    body = encoder_body(predictor.model)
    with torch.inference_mode():
        alone = [body(**{k: torch.tensor([v]) for k, v in predictor.tokenizer(t, truncation=True, max_length=predictor.max_length).items()
                         if k in ("input_ids", "attention_mask")}).last_hidden_state[0].mean(0).numpy() for t in texts]
    assert vectors.shape == (len(texts), body.config.hidden_size) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, np.stack(alone), atol=1e-4)
    embedder = Predictor.from_pretrained(embedding_run)  # an embedding model: its own outputs
    np.testing.assert_allclose(embedder.sentence_vectors(texts[:3]), embedder.logits(texts[:3]), atol=1e-6)


def test_no_module_calls_the_predictors_private_methods():
    """Monitoring padded its batches with `predictor._pad` (issue 51, item 5): the Predictor's internals are its own."""
    private = {name for name in vars(Predictor) if name.startswith("_") and not name.startswith("__")}
    package = Path(encoderfit.__file__).parent
    found = [f"{path.relative_to(package)}:{node.lineno} {ast.unparse(node)}"
             for path in sorted(package.rglob("*.py")) if path.name != "predictor.py"
             for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
             if isinstance(node, ast.Attribute) and node.attr in private
             and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))]
    assert found == []
