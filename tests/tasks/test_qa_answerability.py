"""SQuAD 2.0's answerability head (issue 50): trained jointly with the span head on data with unanswerable questions,
saved beside the plain question-answering model (which plain transformers still loads, head and all, without a
random layer), read back by predict/serve/export, and deciding with the rule fitted on validation; v1.1-style data
(every question answerable) trains the plain model as before."""

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, write_jsonl
from encoderfit.runs.predictor import Predictor
from encoderfit.tasks.qa import answerability
from encoderfit.tasks.qa.metrics import best_null_threshold, per_question
from shared import v2_rows

TRAIN = ("--model.max_length", "64", "--train.epochs", "6", "--train.batch_size", "16", "--train.learning_rate", "3e-3",
         "--train.warmup_ratio", "0.05", "--qa.max_answer_tokens", "4")


@pytest.fixture(scope="module")
def head_run(tmp_path_factory, tiny_model) -> Path:
    home = tmp_path_factory.mktemp("qa-answerability")
    run = home / "run"
    run_cli("train", "--task", "qa", "--data.source", str(write_jsonl(home / "v2.jsonl", v2_rows(200, seed=3))),
            "--model.name_or_path", str(tiny_model), "--output_dir", str(run), *TRAIN)
    return run


def test_a_v2_run_trains_saves_and_decides_with_its_answerability_head(head_run):
    """The v2 decision was the [CLS] null score alone, which 4,583 SQuAD 2.0 questions do not teach: the run now
    trains an answerability head, saves it beside the standard model and decides with the rule fitted on validation."""
    model_dir = head_run / "model"
    assert (model_dir / answerability.HEAD_FILE).is_file()
    head = json.loads((model_dir / "encoderfit.json").read_text())["head"]
    rule = head["answerability"]
    assert rule["weight"] in answerability.MIX_WEIGHTS and set(rule["tried"]) == {str(w) for w in answerability.MIX_WEIGHTS}
    assert head["null_threshold"] is not None  # the plain null-score rule is still fitted (the card states it)
    metrics = json.loads((head_run / "metrics.json").read_text())
    assert metrics["head"]["answerability"]["threshold"] == rule["threshold"]
    assert metrics["test"]["HasAns_f1"] > 0 and metrics["test"]["NoAns_f1"] > 0, metrics["test"]
    rows = v2_rows(40, seed=11)
    got = Predictor.from_pretrained(head_run).predict([r["question"] for r in rows], [r["context"] for r in rows])
    logits = np.asarray([g["answerability_logit"] for g in got])
    margins = np.asarray([g["no_answer_margin"] for g in got])
    given = answerability.decision_scores(margins, logits, rule) > rule["threshold"]
    assert [g["answer"] is not None for g in got] == list(given)  # predict decides by the fitted rule
    answerable = np.asarray([bool(r["answers"]["text"]) for r in rows])
    assert logits[answerable].mean() > logits[~answerable].mean()  # the head learned which questions have an answer
    right = [g["answer"] == (r["answers"]["text"] or [None])[0] for g, r in zip(got, rows)]
    assert np.mean(right) > 0.5
    assert "answerability head" in (model_dir / "README.md").read_text()


def test_the_model_directory_stays_a_plain_question_answering_model(head_run):
    """Plain transformers loads the directory as the standard model, every weight from the files (no random layer),
    and gives the start and end logits encoderfit's own loader gives; the head file is what encoderfit adds."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    model_dir = head_run / "model"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"][0].endswith("ForQuestionAnswering")
    plain, info = AutoModelForQuestionAnswering.from_pretrained(str(model_dir), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not any(k.startswith(("qa.", "answerability.")) for k in load_file(str(model_dir / "model.safetensors")))
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    enc = tok("where does alice live ?", "we saw alice lives in oslo .", return_tensors="pt")
    ours = Predictor.from_pretrained(head_run).model
    with torch.inference_mode():
        a = plain.eval()(**enc)
        b = ours(**enc).logits
    assert torch.allclose(a.start_logits, b[..., 0], atol=1e-5) and torch.allclose(a.end_logits, b[..., 1], atol=1e-5)
    assert b.shape[-1] == 3  # the third channel: the answerability logit


def test_an_all_answerable_run_has_no_answerability_head(tmp_path, tiny_model):
    """v1.1-style data (no unanswerable question) trains and decides exactly as before: no head, no rule."""
    rows = [r for r in v2_rows(160, seed=5) if r["answers"]["text"]]
    run = tmp_path / "run"
    run_cli("train", "--task", "qa", "--data.source", str(write_jsonl(tmp_path / "v1.jsonl", rows)),
            "--model.name_or_path", str(tiny_model), "--output_dir", str(run), *TRAIN[:2], "--train.epochs", "1",
            "--train.batch_size", "16")
    assert not (run / "model" / answerability.HEAD_FILE).exists()
    head = json.loads((run / "model" / "encoderfit.json").read_text())["head"]
    assert head == {"null_threshold": None}
    got = Predictor.from_pretrained(run).predict(rows[0]["question"], rows[0]["context"])
    assert "answerability_logit" not in got and got["answer"] is not None


def test_the_answer_rule_is_chosen_on_validation_between_the_two_signals():
    """When the answerability logit separates the two kinds and the margin does not, the rule leans on the logit
    (weight 0), and the other way round (weight 1: the old margin rule)."""
    rng = np.random.default_rng(0)
    answerable = rng.random(400) < 0.5
    references = [["oslo"] if a else [] for a in answerable]
    rows = per_question(["oslo"] * 400, references)
    informative, noise = np.where(answerable, 2.0, -2.0) + rng.normal(0, 0.5, 400), rng.normal(0, 1, 400)
    by_logit = answerability.fit_decision(noise, informative, rows, best_null_threshold)
    by_margin = answerability.fit_decision(informative, noise, rows, best_null_threshold)
    assert by_logit["weight"] < 0.5 and by_margin["weight"] > 0.5, (by_logit, by_margin)
    assert by_logit["validation_f1"] > 90 and by_margin["validation_f1"] > 90
    assert answerability.fit_decision(noise, np.full(400, np.nan), rows, best_null_threshold) is None  # no head: none
