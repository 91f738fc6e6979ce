"""The real CLI trains the tiny ModernBERT end to end; its run directory is complete, standard and consistent."""

import json

import numpy as np
import pytest
import yaml

from conftest import TOPICS, read_jsonl, run_cli


def files_under(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def test_tiny_modernbert_learns_the_toy_task(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.9, metrics["test"]
    assert metrics["validation"]["accuracy"] >= 0.9, metrics["validation"]
    for split in ("validation", "test"):
        m = metrics[split]
        assert set(m["per_class"]) == set(TOPICS)
        assert np.asarray(m["confusion_matrix"]["matrix"]).sum() == m["n"]
    history = json.loads((trained_run / "logs" / "history.json").read_text())
    losses = [h["loss"] for h in history if "loss" in h]
    assert losses[-1] < losses[0]


def test_run_directory_has_exactly_the_promised_files(trained_run):
    files = files_under(trained_run)
    assert [f for f in files if not f.startswith("logs/events.out.tfevents")] == [
        "config.yaml", "label_noise.csv", "logs/history.json", "metrics.json",
        "model/README.md", "model/calibration.json", "model/config.json", "model/model.safetensors",
        "model/tokenizer.json", "model/tokenizer_config.json",
        "predictions/test.jsonl", "predictions/validation.jsonl", "report.html",
    ]
    assert any(f.startswith("logs/events.out.tfevents") for f in files), "no TensorBoard log"
    assert not list(trained_run.parent.glob(".*partial*")), "temporary run directory left behind"


def test_resolved_config_records_overrides_labels_and_max_length(trained_run):
    cfg = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert cfg["train"]["learning_rate"] == pytest.approx(3e-3)  # the CLI override, not the default
    assert cfg["train"]["adam_beta2"] == 0.98 and cfg["train"]["adam_epsilon"] == 1e-6
    assert cfg["labels"] == sorted(TOPICS)
    assert cfg["resolved"]["max_length"] == 512 and cfg["resolved"]["precision"] == "fp32"
    model_cfg = json.loads((trained_run / "model" / "config.json").read_text())
    assert model_cfg["id2label"] == {"0": "food", "1": "sport", "2": "tech"}


def test_model_loads_in_a_plain_transformers_pipeline(trained_run):
    from transformers import pipeline

    from encoderfit import Classifier

    texts = ["the chef made garlic soup", "the team won the trophy", "a new compiler for the kernel"]
    clf = Classifier.from_pretrained(trained_run, calibrated=False)  # pipelines know nothing of the temperature
    pipe = pipeline("text-classification", model=str(trained_run / "model"), device="cpu")
    ours = clf.predict(texts)
    theirs = pipe(texts)
    assert [r["label"] for r in ours] == [r["label"] for r in theirs] == ["food", "sport", "tech"]
    assert [r["score"] for r in ours] == pytest.approx([r["score"] for r in theirs], abs=1e-5)


def test_predict_cli_matches_python_api(trained_run, tmp_path):
    from encoderfit import Classifier

    texts = ["garlic sauce in the oven", "referee and coach", "cloud server data", "this is it"]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    proc = run_cli("predict", str(trained_run), "--input", str(tmp_path / "in.txt"))
    rows = read_jsonl(proc.stdout)
    api = Classifier.from_pretrained(trained_run).predict(texts)
    assert [r["text"] for r in rows] == texts
    assert [r["label"] for r in rows] == [r["label"] for r in api]
    for row, ref in zip(rows, api):
        assert row["probabilities"] == pytest.approx(ref["probabilities"], abs=1e-5)

    run_cli("predict", str(trained_run), "--input", "-", "--output", str(tmp_path / "out.csv"), input="\n".join(texts))
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines[0] == "text,label,score,prob_food,prob_sport,prob_tech"
    assert [line.split(",")[1] for line in lines[1:]] == [r["label"] for r in api]


def test_eval_cli_reproduces_the_test_metrics(trained_run, toy_csv):
    trained = json.loads((trained_run / "metrics.json").read_text())["test"]
    proc = run_cli("eval", str(trained_run), "--report.target_accuracy", "0.995")
    assert yaml.safe_load((trained_run / "config.yaml").read_text())["report"]["target_accuracy"] == 0.995
    assert json.loads((trained_run / "model" / "calibration.json").read_text())["target_accuracy"] == 0.995
    assert "accuracy" in proc.stdout and "confusion matrix" in proc.stdout and "temperature" in proc.stdout
    evaluated = json.loads((trained_run / "metrics.json").read_text())["test"]
    for key in ("accuracy", "f1_macro", "f1_micro", "f1_weighted", "precision_macro", "recall_weighted"):
        assert evaluated[key] == pytest.approx(trained[key])
    assert evaluated["confusion_matrix"] == trained["confusion_matrix"]

    run_cli("eval", str(trained_run), "--data", str(toy_csv))  # a single file is scored whole
    whole = json.loads((trained_run / "eval" / "test.json").read_text())
    assert whole["n"] == 360 and whole["data"].endswith("toy.csv [train]")
    assert whole["calibration_applied"]["fitted_on"] == "saved"


def test_balanced_class_weights_favour_the_rare_class():
    import torch

    from encoderfit.trainer import balanced_weights, classification_loss

    labels = np.array([0] * 90 + [1] * 10)
    assert balanced_weights(labels, 2).tolist() == pytest.approx([100 / 180, 100 / 20])
    loss = classification_loss(balanced_weights(labels, 2))
    labels_batch = torch.tensor([0, 1])
    predict_common = torch.tensor([[2.0, 0.0], [2.0, 0.0]])  # wrong on the rare example
    predict_rare = torch.tensor([[0.0, 2.0], [0.0, 2.0]])  # wrong on the common example
    mistake_on_rare = loss(type("Out", (), {"logits": predict_common})(), labels_batch)
    mistake_on_common = loss(type("Out", (), {"logits": predict_rare})(), labels_batch)
    assert mistake_on_rare > 2 * mistake_on_common


def test_training_loss_is_one_mean_over_the_whole_step():
    """Summed per micro-batch and divided by the step's example count: two halves add up to the whole batch's mean,
    which is what makes 2 processes (or 2 accumulated micro-batches) equal to 1."""
    import torch

    from encoderfit.trainer import classification_loss

    torch.manual_seed(0)
    logits, labels = torch.randn(8, 3), torch.randint(0, 3, (8,))
    out = lambda x: type("Out", (), {"logits": x})()  # noqa: E731
    loss = classification_loss()
    whole = loss(out(logits), labels, num_items_in_batch=torch.tensor(8))
    halves = loss(out(logits[:4]), labels[:4], num_items_in_batch=torch.tensor(8)) + loss(out(logits[4:]), labels[4:], num_items_in_batch=torch.tensor(8))
    assert whole.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-6)
    assert halves.item() == pytest.approx(whole.item(), rel=1e-6)
