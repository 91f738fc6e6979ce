"""The real CLI trains the tiny ModernBERT end to end; its run directory is complete, standard and consistent."""

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import ON_CUDA, TOPICS, read_jsonl, run_cli


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
        "model/README.md", "model/config.json", "model/encoderfit.json", "model/model.safetensors",
        "model/tokenizer.json", "model/tokenizer_config.json",
        "predictions/baseline-test.parquet", "predictions/test.parquet", "predictions/train.parquet",
        "predictions/validation.parquet", "report.html",
    ]
    assert any(f.startswith("logs/events.out.tfevents") for f in files), "no TensorBoard log"
    assert not list(trained_run.parent.glob(".*partial*")), "temporary run directory left behind"


def test_resolved_config_records_overrides_labels_and_max_length(trained_run, tiny_model):
    from encoderfit.core.device import cuda_bf16_native

    cfg = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert cfg["train"]["learning_rate"] == pytest.approx(3e-3)  # the CLI override, not the default
    assert cfg["train"]["adam_beta2"] == 0.98 and cfg["train"]["adam_epsilon"] == 1e-6
    assert cfg["task"] == "classification" and cfg["labels"] == sorted(TOPICS)
    # no max_length given: min(512, the model's positions, the tokenizer's limit)
    limit = min(json.loads((tiny_model / "config.json").read_text())["max_position_embeddings"],
                json.loads((tiny_model / "tokenizer_config.json").read_text())["model_max_length"])
    assert cfg["resolved"]["max_length"] == min(512, limit)
    assert cfg["resolved"]["precision"] == ("bf16" if cuda_bf16_native() else "fp32")  # emulated bf16 does not count
    model_cfg = json.loads((trained_run / "model" / "config.json").read_text())
    assert model_cfg["id2label"] == {"0": "food", "1": "sport", "2": "tech"}
    assert model_cfg["problem_type"] == "single_label_classification"
    info = json.loads((trained_run / "model" / "encoderfit.json").read_text())
    assert info["task"] == "classification" and info["max_length"] == cfg["resolved"]["max_length"]
    assert info["head"]["fitted_on"] == "validation" and info["head"]["temperature"] > 0


def test_model_loads_in_a_plain_transformers_pipeline(trained_run):
    from transformers import pipeline

    from encoderfit import Predictor

    texts = ["the chef made garlic soup", "the team won the trophy", "a new compiler for the kernel"]
    clf = Predictor.from_pretrained(trained_run, calibrated=False, device="cpu")  # pipelines know nothing of the temperature
    pipe = pipeline("text-classification", model=str(trained_run / "model"), device="cpu")
    ours = clf.predict(texts)
    theirs = pipe(texts)
    assert [r["label"] for r in ours] == [r["label"] for r in theirs] == ["food", "sport", "tech"]
    assert [r["score"] for r in ours] == pytest.approx([r["score"] for r in theirs], abs=1e-5)


def test_predict_cli_matches_python_api(trained_run, tmp_path):
    from encoderfit import Predictor

    texts = ["garlic sauce in the oven", "referee and coach", "cloud server data", "this is it"]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    proc = run_cli("predict", str(trained_run), "--input", str(tmp_path / "in.txt"))
    rows = read_jsonl(proc.stdout)
    api = Predictor.from_pretrained(trained_run).predict(texts)
    assert [r["text"] for r in rows] == texts
    assert [r["label"] for r in rows] == [r["label"] for r in api]
    for row, ref in zip(rows, api):
        assert row["probabilities"] == pytest.approx(ref["probabilities"], abs=1e-5)

    run_cli("predict", str(trained_run), "--input", "-", "--output", str(tmp_path / "out.csv"), input="\n".join(texts))
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines[0] == "text,label,score,prob_food,prob_sport,prob_tech"
    assert [line.split(",")[1] for line in lines[1:]] == [r["label"] for r in api]


def test_eval_cli_reproduces_the_test_metrics(trained_run, toy_csv, tmp_path):
    import shutil

    run = tmp_path / "run"  # a copy: the session's run stays as training left it
    shutil.copytree(trained_run, run)
    trained = json.loads((run / "metrics.json").read_text())["test"]
    proc = run_cli("eval", str(run), "--report.target_accuracy", "0.995")
    assert "reusing the saved predictions" in proc.stderr  # the same model: no inference again
    assert yaml.safe_load((run / "config.yaml").read_text())["report"]["target_accuracy"] == 0.995
    assert json.loads((run / "model" / "encoderfit.json").read_text())["head"]["target_accuracy"] == 0.995
    assert "accuracy" in proc.stdout and "confusion matrix" in proc.stdout and "temperature" in proc.stdout
    evaluated = json.loads((run / "metrics.json").read_text())["test"]
    for key in ("accuracy", "f1_macro", "f1_micro", "f1_weighted", "precision_macro", "recall_weighted"):
        assert evaluated[key] == pytest.approx(trained[key])
    assert evaluated["confusion_matrix"] == trained["confusion_matrix"]

    run_cli("eval", str(run), "--report.target_accuracy", "0.99")  # back to the default: an override, not ignored
    assert yaml.safe_load((run / "config.yaml").read_text())["report"]["target_accuracy"] == 0.99

    run_cli("eval", str(run), "--data", str(toy_csv))  # a single file is scored whole
    whole = json.loads((run / "eval" / "test.json").read_text())
    assert whole["n"] == 360 and whole["data"].endswith("toy.csv [train]")
    saved = json.loads((run / "model" / "encoderfit.json").read_text())["head"]
    assert whole["head"]["calibration"]["temperature"] == pytest.approx(saved["temperature"])  # applied, not refitted


def test_eval_report_settings_reach_the_report(trained_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    run_cli("eval", str(run), "--report.noise_confidence", "0.55")
    page = (run / "report.html").read_text()
    assert "probability ≥ 0.55" in page and "probability ≥ 0.9" not in page


def test_balanced_class_weights_favour_the_rare_class():
    import torch

    from encoderfit.core.args import TrainArgs
    from encoderfit.tasks import get_task

    task = get_task("classification")
    loss = task.modeling.loss(task.targets.summarize_targets(np.array([0] * 90 + [1] * 10), ["a", "b"]), TrainArgs(class_weights="balanced"))
    labels_batch = torch.tensor([0, 1])
    out = lambda x: type("Out", (), {"logits": x})()  # noqa: E731
    mistake_on_rare = loss(out(torch.tensor([[2.0, 0.0], [2.0, 0.0]])), labels_batch)
    mistake_on_common = loss(out(torch.tensor([[0.0, 2.0], [0.0, 2.0]])), labels_batch)
    assert mistake_on_rare > 2 * mistake_on_common  # weights 100/180 and 100/20, as scikit-learn's "balanced"


@pytest.mark.parametrize("name", ["classification", "multilabel", "regression"])
def test_training_loss_is_one_mean_over_the_whole_step(name, tmp_path):
    """Summed per micro-batch and divided by the step's item count as the Trainer itself counts it: two halves add up
    to the whole batch's mean, which is what makes 2 processes (or 2 accumulated micro-batches) equal to 1, and the
    training loss equals the evaluation mean (a multi-label loss once came out divided by the label count: the
    Trainer counts examples x labels, and 172 debtags labels made the gradients too small to learn anything)."""
    import torch
    from transformers import Trainer, TrainingArguments

    from encoderfit.core.args import TrainArgs
    from encoderfit.tasks import get_task

    torch.manual_seed(0)
    task = get_task(name)
    logits = torch.randn(8, 1 if name == "regression" else 3)
    labels = {"classification": torch.randint(0, 3, (8,)), "multilabel": torch.randint(0, 2, (8, 3)).float(),
              "regression": torch.randn(8) * 3 + 1}[name]
    stats = task.targets.summarize_targets(labels.numpy(), ["a", "b", "c"])
    loss = task.modeling.loss(stats, TrainArgs())
    out = lambda x: type("Out", (), {"logits": x})()  # noqa: E731
    trainer = Trainer(model=torch.nn.Linear(2, 2), args=TrainingArguments(output_dir=str(tmp_path), report_to=[]), compute_loss_func=loss)
    count = trainer._get_num_items_in_batch([{"labels": labels[:4]}, {"labels": labels[4:]}], torch.device("cpu"))
    whole = loss(out(logits), labels, num_items_in_batch=count)
    halves = loss(out(logits[:4]), labels[:4], num_items_in_batch=count) + loss(out(logits[4:]), labels[4:], num_items_in_batch=count)
    assert halves.item() == pytest.approx(whole.item(), rel=1e-6)
    assert whole.item() == pytest.approx(loss(out(logits), labels).item(), rel=1e-6)  # the evaluation mean


def test_multilabel_checkpoints_are_scored_under_the_thresholds_they_will_ship_with():
    """A model that ranks every label perfectly but is never above 0.5 (many rare labels, early in training) scores
    F1 1.0, not 0: checkpoints are compared under per-label thresholds fitted on validation, as the model is used."""
    from encoderfit.tasks import get_task

    rng = np.random.default_rng(0)
    y = (rng.random((60, 4)) < 0.2).astype(np.float32)
    y[:6] = np.eye(4, dtype=np.float32)[np.arange(6) % 4]  # every label has positives
    logits = np.where(y > 0, -1.0, -4.0) + rng.normal(0, 0.1, y.shape)  # positives rank first, all below p = 0.5
    scores = get_task("multilabel").scoring.trainer_metrics(["a", "b", "c", "d"], {})((logits, y))
    assert scores["f1_micro"] == pytest.approx(1.0) and scores["f1_macro"] == pytest.approx(1.0)


FAULTS = """
import resource, sys, torch
from encoderfit.core.device import keep_freed_memory
if sys.argv[1] == "kept":
    assert keep_freed_memory()
def step():  # a training step's pattern: two large activations freed, a small tensor kept
    big, other = torch.ones(16 * 2**20), torch.ones(8 * 2**20)
    return big[:100] + other[:100]
for _ in range(20):  # warm-up: the heap settles
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator (Linux) only")
def test_cpu_training_reuses_freed_memory_instead_of_faulting_it_in_each_step(trained_run):
    from encoderfit.core import device

    if ON_CUDA:  # the run above trained on the GPU: glibc's settings are not touched for that
        assert not device.keep_freed_memory("cuda")
    else:
        assert device._kept  # the run above trained on the CPU in this process, so training applied it
    faults = {how: int(subprocess.run([sys.executable, "-c", FAULTS, how], capture_output=True, text=True, check=True).stdout)
              for how in ("default", "kept")}
    pages = 5 * 24 * 2**20 * 4 // 4096  # five steps of 96 MiB in 4 KiB pages
    assert faults["default"] > pages // 2, faults  # glibc maps each freed-and-reallocated block afresh
    assert faults["kept"] < pages // 20, faults  # kept: the same pages serve every step


def test_bf16_on_a_cpu_is_autocast_and_the_saved_model_stays_fp32(tmp_path, tiny_model, toy_csv):
    """--train.precision bf16 without a GPU trains under CPU autocast: the run records bf16, learns the toy task, and
    the weights it saves (and everything that loads them) stay fp32; fp16 still needs a GPU."""
    import torch
    from safetensors import safe_open

    from conftest import TINY_TRAIN

    if torch.cuda.is_available():
        pytest.skip("a GPU machine: bf16 there is the GPU's, tested by the default precision")
    out = tmp_path / "bf16"
    result = run_cli("train", "--data.source", str(toy_csv), "--model.name_or_path", str(tiny_model), "--output_dir", str(out),
                     *TINY_TRAIN, "--train.precision", "bf16")
    assert "bf16 autocast on the CPU" in result.stderr + result.stdout
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["resolved"]["precision"] == "bf16"
    assert json.loads((out / "metrics.json").read_text())["test"]["accuracy"] >= 0.8
    with safe_open(str(out / "model" / "model.safetensors"), "pt") as weights:
        assert {weights.get_tensor(k).dtype for k in weights.keys()} == {torch.float32}
    refused = run_cli("train", "--data.source", str(toy_csv), "--model.name_or_path", str(tiny_model), "--output_dir",
                      str(tmp_path / "fp16"), "--train.precision", "fp16", check=False)
    assert refused.returncode == 2 and "fp16 needs a CUDA GPU" in refused.stderr
    assert not (tmp_path / "fp16").exists()
