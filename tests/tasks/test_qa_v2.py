"""SQuAD 2.0 on the tiny ModernBERT: a model that answers some questions and abstains on others, its no-answer
threshold used by predict, serve and export, and its input errors as JSON 4xx."""

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import run_cli, serving_in_thread, write_jsonl
from encoderfit.runs.predictor import Predictor
from encoderfit.tasks.qa import answerability
from failing import cli_fails
from shared import v2_rows

# ---------------------------------------------------------------- a SQuAD 2.0 model that answers (issue 44)


@pytest.fixture(scope="module")
def v2_run(tmp_path_factory, tiny_model) -> Path:
    home = tmp_path_factory.mktemp("qa-v2-small")
    run = home / "run"  # model.window_overlap left at its default (64), which max_length 64 cannot take
    run_cli("train", "--task", "qa", "--data.source", str(write_jsonl(home / "v2.jsonl", v2_rows(200, seed=0))),
            "--model.name_or_path", str(tiny_model), "--model.max_length", "64", "--output_dir", str(run), "--train.epochs", "6",
            "--train.batch_size", "16", "--train.learning_rate", "3e-3", "--train.warmup_ratio", "0.05", "--qa.max_answer_tokens", "4")
    return run


def test_a_v2_model_answers_some_questions_and_abstains_on_others(v2_run):
    """SQuAD 2.0 runs abstained on every test question (test F1 = the all-abstain baseline's): on data a model can
    learn, the no-answer threshold fitted on validation must leave it answering some questions and abstaining on others,
    in the run's test metrics and in predict."""
    import yaml

    test = json.loads((v2_run / "metrics.json").read_text())["test"]
    assert test["HasAns_f1"] > 0 and test["NoAns_f1"] > 0, test  # some answerable questions answered, some others not
    assert test["f1"] > 100 * test["NoAns_total"] / test["n"], test  # better than answering nothing
    rows = v2_rows(24, seed=1)
    got = Predictor.from_pretrained(v2_run).predict([r["question"] for r in rows], [r["context"] for r in rows])
    assert {g["answer"] is None for g in got} == {True, False}
    right = [g["answer"] == (r["answers"]["text"] or [None])[0] for g, r in zip(got, rows)]
    assert np.mean(right) > 0.5
    # the card said "It answers every question" and the report "threshold (none)": they read metrics.json's head
    assert "No answer is given when" in (v2_run / "model" / "README.md").read_text()
    assert 'data-metric="head.null_threshold"' in (v2_run / "report.html").read_text()
    # the default overlap was replaced for max_length 64 while config.yaml kept 64: it records the overlap used
    saved = yaml.safe_load((v2_run / "config.yaml").read_text())["model"]["window_overlap"]
    assert saved == json.loads((v2_run / "model" / "encoderfit.json").read_text())["windows"]["overlap"] == 16


def test_a_qa_models_input_errors_are_4xx_and_name_the_field(v2_run, tmp_path):
    numeric = write_jsonl(tmp_path / "n.jsonl", [{"question": "where does bob live ?", "context": 1923}])  # train refuses it
    assert "row 1: column 'context' holds int (1923), not text" in cli_fails("predict", str(v2_run), "--input", str(numeric))
    good = {"question": "where does bob live ?", "context": "we saw bob lives in oslo ."}
    with serving_in_thread(v2_run) as url:
        def post(body):
            return httpx.post(url + "/v1/predict", json=body, timeout=30)

        long = post({"question": "where " * 60, "context": good["context"]})  # was a 500 (UserError in the server log)
        named = post({"question": good["question"], "context": " "})
        listed = post({"inputs": [good, {"question": " ", "context": "y"}]})
        paired = post({"pairs": [[good["question"], good["context"]], [good["question"], " "]]})
        fine = post(good)
    assert long.status_code == 422 and "a question of" in long.json()["error"] and "at most 32 tokens" in long.json()["error"]
    assert named.status_code == 422 and named.json()["error"] == "context: empty text"  # was texts.0 / pairs.0
    assert listed.status_code == 422 and listed.json()["error"] == "inputs.1.question: empty text"
    assert paired.status_code == 422 and paired.json()["error"] == "pairs.1.1: empty text"
    assert fine.status_code == 200 and "answer" in fine.json()["results"][0]


def test_unanswerable_questions_get_a_threshold_used_by_predict_serve_and_export(v2_run):
    run = v2_run  # SQuAD 2.0-style rows (v2_rows, below): the threshold is fitted on validation
    info = json.loads((run / "model" / "encoderfit.json").read_text())
    assert info["head"]["null_threshold"] is not None and info["options"] == {"qa": {"n_best": 20, "max_answer_tokens": 4}}
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"HasAns_f1", "NoAns_f1", "threshold_curve"} <= set(metrics["test"])
    rows = v2_rows(8, seed=98)
    model = Predictor.from_pretrained(run)
    mine = model.predict([r["question"] for r in rows], [r["context"] for r in rows])
    rule = info["head"]["answerability"]  # the answer rule fitted on validation decides (tests/tasks/test_qa_answerability.py)
    scores = answerability.decision_scores(np.asarray([r["no_answer_margin"] for r in mine]),
                                           np.asarray([r["answerability_logit"] for r in mine]), rule)
    assert [r["answer"] is None for r in mine] == list(scores <= rule["threshold"])
    with serving_in_thread(run) as url:
        served = httpx.post(url + "/v1/predict", json={"inputs": [{"question": r["question"], "context": r["context"]} for r in rows]},
                            timeout=30)
        one = httpx.post(url + "/v1/predict", json={"question": rows[0]["question"], "context": rows[0]["context"]}, timeout=30)
        missing = httpx.post(url + "/v1/predict", json={"question": rows[0]["question"]}, timeout=30)
        fine = httpx.post(url + "/v1/predict", json={"pairs": [[rows[1]["question"], rows[1]["context"]]]}, timeout=30)
    assert [r["answer"] for r in served.json()["results"]] == [r["answer"] for r in mine]
    assert one.json()["results"][0]["answer"] == mine[0]["answer"] and fine.status_code == 200
    assert missing.status_code == 422 and "send the fields ['context', 'question']" in missing.json()["error"]
    run_cli("export", str(run), "--quantize", "int8")
    parity = json.loads((run / "onnx" / "parity.json").read_text())
    assert parity["fp32"]["max_abs_logit_diff"] < 1e-4 and parity["fp32"]["answer_agreement"] == 1.0
    onnx = Predictor.from_pretrained(run, backend="onnx").predict([r["question"] for r in rows], [r["context"] for r in rows])
    assert [r["answer"] for r in onnx] == [r["answer"] for r in mine]
