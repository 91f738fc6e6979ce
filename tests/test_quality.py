"""Quality on the shapes real data has (issue: every task beats its classical baseline).

The toy multi-label fixture has dense labels (each topic in about half the texts), which hid a collapse that real
tag sets show: with a few per cent positives per label, a head whose biases start at 0 (p = 0.5) learns the priors by
flattening the encoder's output, and then predicts the priors for every text.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from conftest import FILLER, TOPICS, run_cli, write_csv

TRIGGERS = sorted(w for words in TOPICS.values() for w in words)[:12]  # one word per label, in the tokenizer's vocabulary


def sparse_multilabel_rows(n: int, seed: int, rate: float = 0.06) -> list[dict]:
    """Texts of filler words; each of 12 labels is present in ~6% of texts, signalled by its own word."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        present = [w for w in TRIGGERS if rng.random() < rate]
        words = rng.choices(FILLER, k=rng.randint(4, 9))
        for w in present:
            words.insert(rng.randrange(len(words) + 1), w)
        rows.append({"text": " ".join(words), "label": "|".join(present)})
    return rows


@pytest.fixture(scope="module")
def sparse_run(tmp_path_factory, tiny_model):
    home = tmp_path_factory.mktemp("sparse")
    data = write_csv(home / "sparse.csv", sparse_multilabel_rows(900, seed=1))
    out = home / "run"
    run_cli("train", "--data.source", str(data), "--data.label_separator", "|", "--model.name_or_path", str(tiny_model),
            "--output_dir", str(out), "--train.epochs", "4", "--train.batch_size", "16", "--train.learning_rate", "1e-3",
            "--train.warmup_ratio", "0.05", "--train.logging_steps", "10")
    return out


def test_sparse_multilabel_beats_the_prior_and_starts_from_it(sparse_run):
    metrics = json.loads((sparse_run / "metrics.json").read_text())
    test, predicted_per_text = metrics["test"], metrics["test"]["cardinality"]
    # predicting each label at its prior rate scores a micro-F1 near the rate (~0.06); the trigger words make it easy
    assert test["f1_micro"] >= 0.6, test["f1_micro"]
    assert predicted_per_text["predicted"] <= 3 * predicted_per_text["true"] + 0.5  # not every label for every text
    history = json.loads((sparse_run / "logs" / "history.json").read_text())
    first = next(h["loss"] for h in history if "loss" in h)  # step 1 (logging_first_step)
    assert first < 0.6  # the head started at the priors (0.23 nats plus its random weights' noise), not at p = 0.5 (0.69+)


def test_thresholds_reach_every_cut_point():
    from encoderfit.tasks.multilabel import best_threshold, fit_thresholds

    # a label whose scores all lie below 0.02 (the old grid's floor) is still separable
    probs = np.array([0.001, 0.002, 0.003, 0.011, 0.012, 0.013, 0.014, 0.015])
    y = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    t, f1 = best_threshold(probs, y)
    assert f1 == 1.0 and 0.003 < t < 0.011
    # two scores 0.001 apart (below the old grid's step) are told apart
    t, f1 = best_threshold(np.array([0.5, 0.5004, 0.5006, 0.501]), np.array([0, 0, 1, 1]))
    assert f1 == 1.0 and 0.5004 < t < 0.5006
    head = fit_thresholds(np.column_stack([probs, 1 - probs]), np.column_stack([y, 1 - y]), ["rare", "other"])
    assert 0.003 < head["thresholds"]["rare"] < 0.011  # tuned (5 positives), not the micro threshold


def test_a_new_head_starts_at_the_training_priors_and_a_kept_head_keeps_its_bias(tiny_model, multilabel_run):
    from encoderfit.config import ModelArgs
    from encoderfit.modeling import load_model, output_layer
    from encoderfit.tasks import get_task

    task = get_task("multilabel")
    bias = task.output_bias({"positives": [1, 30, 300], "examples": 1000})
    assert np.allclose(bias, np.log([1.5 / 999.5, 30.5 / 970.5, 300.5 / 700.5]))
    fresh = load_model(ModelArgs(name_or_path=str(tiny_model)), task, ["a", "b", "c"], bias)
    assert np.allclose(output_layer(fresh, 3).bias.detach().numpy(), bias, atol=1e-6)
    labels = json.loads((multilabel_run / "model" / "encoderfit.json").read_text())["labels"]
    kept = load_model(ModelArgs(name_or_path=str(multilabel_run / "model")), task, labels, bias)
    from safetensors.numpy import load_file

    saved = load_file(multilabel_run / "model" / "model.safetensors")["classifier.bias"]
    assert np.allclose(output_layer(kept, 3).bias.detach().numpy(), saved)  # re-fine-tuning keeps the trained head


def test_head_learning_rate_gives_the_head_its_own_rate(toy_csv, tiny_model, tmp_path):
    out = tmp_path / "run"
    run_cli("train", "--data.source", str(toy_csv), "--model.name_or_path", str(tiny_model), "--output_dir", str(out),
            "--train.max_steps", "4", "--train.learning_rate", "1e-4", "--train.head_learning_rate", "1e-2",
            "--train.warmup_ratio", "0", "--train.lr_scheduler", "constant_with_warmup", "--report.baseline", "false")
    from safetensors.numpy import load_file

    before = load_file(tiny_model / "model.safetensors")
    after = load_file(out / "model" / "model.safetensors")
    layer = "model.layers.0.attn.Wqkv.weight"
    encoder_step = np.abs(after[layer] - before[layer]).max()
    assert encoder_step < 4 * 1e-4 * 1.01  # Adam moves a weight about one learning rate a step
    assert np.abs(after["classifier.bias"]).max() > 10 * encoder_step  # the new head's biases started at 0
    proc = run_cli("train", "--data.source", str(toy_csv), "--model.name_or_path", str(tiny_model), "--output_dir",
                   str(tmp_path / "bad"), "--train.head_learning_rate", "0", check=False)
    assert proc.returncode == 2 and "train.head_learning_rate must be > 0" in proc.stderr
