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

from conftest import FILLER, run_cli, write_csv
from shared import TRIGGERS



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
    from encoderfit.tasks.multilabel.task import best_threshold, fit_thresholds

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
    from encoderfit.core.args import ModelArgs
    from encoderfit.models.loading import load_model, output_layer
    from encoderfit.tasks import get_task

    task = get_task("multilabel")
    bias = task.modeling.output_bias({"positives": [1, 30, 300], "examples": 1000})
    assert np.allclose(bias, np.log([1.5 / 999.5, 30.5 / 970.5, 300.5 / 700.5]))
    fresh = load_model(ModelArgs(name_or_path=str(tiny_model)), task, ["a", "b", "c"], bias)
    assert np.allclose(output_layer(fresh, 3).bias.detach().numpy(), bias, atol=1e-6)
    labels = json.loads((multilabel_run / "model" / "encoderfit.json").read_text())["labels"]
    kept = load_model(ModelArgs(name_or_path=str(multilabel_run / "model")), task, labels, bias)
    from safetensors.numpy import load_file

    saved = load_file(multilabel_run / "model" / "model.safetensors")["classifier.bias"]
    assert np.allclose(output_layer(kept, 3).bias.detach().numpy(), saved)  # re-fine-tuning keeps the trained head
    assert fresh.head_is_new and not kept.head_is_new  # and a linear probe leaves it as it is
    relabelled = load_model(ModelArgs(name_or_path=str(multilabel_run / "model")), task, labels[::-1], bias)
    assert relabelled.head_is_new  # the same size for other labels: a new head


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


# ---------------------------------------------------------------- sentence-transformers checkpoints: a pooled head


def test_a_sentence_transformers_checkpoint_is_fine_tuned_through_its_own_pooling(tiny_sentence_model, toy_csv, tmp_path):
    from sentence_transformers import SentenceTransformer

    from encoderfit.runs.predictor import Predictor

    out = tmp_path / "run"
    proc = run_cli("train", "--data.source", str(toy_csv), "--model.name_or_path", str(tiny_sentence_model), "--output_dir", str(out),
                   "--train.epochs", "4", "--train.batch_size", "16", "--train.learning_rate", "2e-3", "--report.baseline", "false")
    assert "mean-pooled sentence vector" in proc.stderr
    model = out / "model"
    pooling = json.loads((model / "1_Pooling" / "config.json").read_text())
    assert pooling.get("pooling_mode") == "mean" or pooling.get("pooling_mode_mean_tokens")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.9, metrics["test"]
    texts = ["garlic soup in the oven", "the team won the match", "a compiler for the cloud kernel"]
    predictor = Predictor.from_pretrained(out)
    logits = SentenceTransformer(str(model), device="cpu").encode(texts)  # the standard loader gives the logits
    ours = predictor.logits(texts)
    assert np.allclose(logits, ours, atol=1e-4)
    assert [r["label"] for r in predictor.predict(texts)] == ["food", "sport", "tech"]
    assert "SentenceTransformer" in (model / "README.md").read_text()
    assert yaml_pooling(out) == "mean"
    run_cli("export", str(out))  # ONNX runs the same modules: pooling and the Dense head
    parity = json.loads((out / "onnx" / "parity.json").read_text())["fp32"]
    assert parity["max_abs_logit_diff"] < 1e-4 and parity["label_agreement"] == 1.0


def yaml_pooling(run):
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())["resolved"].get("pooling")


def test_classifier_pooling_on_a_token_task_or_plain_bert_is_explained(tiny_sentence_model, ner_data, tmp_path):
    proc = run_cli("train", "--task", "ner", "--data.source", str(ner_data / "train.jsonl"), "--model.name_or_path",
                   str(tiny_sentence_model), "--model.classifier_pooling", "mean", "--output_dir", str(tmp_path / "r"), check=False)
    assert proc.returncode == 2 and "pools nothing" in proc.stderr


def test_a_sentence_encoder_trains_without_attention_dropout_unless_asked(tiny_sentence_model):
    """Embedding and similarity runs load through sentence-transformers; model.attention_dropout applies there too
    (BERT's 0.1 knocks PyTorch's CPU attention off its fused kernel: about 2x slower steps)."""
    from encoderfit.core.args import ModelArgs
    from encoderfit.tasks.embedding.model import load_sentence_model

    def dropout(**kwargs):
        model = load_sentence_model(ModelArgs(name_or_path=str(tiny_sentence_model), **kwargs), 64)
        return model[0].auto_model.config.attention_probs_dropout_prob

    assert dropout() == 0.0
    assert dropout(attention_dropout=None) == 0.1  # null keeps the model's own value
    assert dropout(attention_dropout=0.2) == 0.2


def test_cross_validation_of_a_pooled_sentence_transformers_model(tiny_sentence_model, tmp_path):
    """`cv` with a checkpoint fine-tuned through its own pooling (saved as a sentence-transformers directory)."""
    from conftest import make_rows

    data = write_csv(tmp_path / "small.csv", make_rows(10, seed=7))
    out = tmp_path / "cv"
    run_cli("cv", "--data.source", str(data), "--model.name_or_path", str(tiny_sentence_model), "--folds", "2",
            "--output_dir", str(out), "--train.epochs", "1", "--train.learning_rate", "1e-3", "--report.baseline", "false")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["cv"]["scored_once"] and metrics["cv"]["examples"] == 30 and "comparison" not in metrics
    assert (out / "folds" / "fold-02" / "model" / "modules.json").is_file()


def test_the_length_grouped_sampler_covers_every_pair_once_in_batches_of_similar_length():
    from datasets import Dataset

    from encoderfit.tasks.embedding.model import length_grouped_sampler

    rng = random.Random(0)
    texts = [" ".join(["w"] * rng.randint(1, 60)) for _ in range(403)]
    ds = Dataset.from_dict({"text": texts, "text_pair": texts[::-1], "labels": [0.5] * len(texts)})
    sampler = length_grouped_sampler()(ds, batch_size=16, drop_last=False, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 26 and sorted(i for b in batches for i in b) == list(range(len(texts)))
    assert batches == list(sampler)  # the same order again for the same epoch (a resumed run)
    sampler.set_epoch(1)
    assert list(sampler) != batches  # and another one each epoch
    lengths = np.asarray(sampler.lengths)
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    shuffled = np.mean([np.ptp(lengths[b]) for b in np.array_split(np.random.default_rng(0).permutation(len(texts)), 26)])
    assert spread < 0.5 * shuffled  # similar lengths together: less padding than random batches


def test_the_length_grouped_sampler_pickles_with_the_training_arguments():
    import pickle

    from encoderfit.tasks.embedding import model as embedding_model

    cls = embedding_model.length_grouped_sampler()
    assert pickle.loads(pickle.dumps(cls)) is cls


def test_an_ensemble_of_sentence_transformers_members_averages_their_pooled_heads(tiny_sentence_model, toy_csv, tmp_path):
    """A logit-average ensemble whose members are sentence-transformers directories (mean pooling, a linear head in
    2_Dense/): each member loads with its own trained head, so the ensemble's logits are the mean of the members'."""
    import shutil

    from encoderfit.runs.predictor import Predictor
    from encoderfit.runs.seeds import attach_members

    runs = {}
    for seed in (1, 2):
        runs[seed] = tmp_path / f"seed-{seed}"
        run_cli("train", "--data.source", str(toy_csv), "--model.name_or_path", str(tiny_sentence_model), "--output_dir",
                str(runs[seed]), "--train.epochs", "1", "--train.learning_rate", "1e-3", "--train.seed", str(seed),
                "--report.baseline", "false")
    ensemble = tmp_path / "ensemble"
    shutil.copytree(runs[1] / "model", ensemble)
    attach_members(ensemble, {seed: run / "model" for seed, run in runs.items()})
    texts = ["goal team match today", "garlic soup oven", "kernel compiler code"]
    single = [Predictor.from_pretrained(run / "model").logits(texts) for run in runs.values()]
    both = Predictor.from_pretrained(ensemble).logits(texts)
    assert both.shape == (3, 3)  # the three topics, not an untrained 2-way head
    np.testing.assert_allclose(both, (single[0] + single[1]) / 2, atol=1e-5)


# ---------------------------------------------------------------- linear probe before fine-tuning (LP-FT)


def test_the_probe_penalty_grid_extends_past_an_edge_while_the_validation_loss_falls():
    """fit_linear: a penalty chosen at an end of the grid is not the last word: the grid goes on tenfold past that end
    while the validation loss keeps falling, from below and from above alike, to the same choice (a few signal
    features among 40, 200 training rows: the best penalty is 0.1); a choice inside the grid tries nothing more."""
    import torch
    import torch.nn.functional as F

    from encoderfit.models.probe import fit_linear

    def loss(out, y):
        return F.cross_entropy(out.logits, y)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 40, generator=g)
    y = (x[:, :5] @ torch.tensor([1.5, -1.0, 1.0, 0.5, -0.5]) + torch.randn(600, generator=g) > 0).long()

    def fit(*penalties):
        return fit_linear(x[:200], y[:200], x[200:], y[200:], loss, torch.zeros(2), penalties=penalties)

    wide = fit(*[10.0 ** k for k in range(-6, 1)])
    assert wide["penalty"] == 0.1, wide["validation_loss"]
    from_below, from_above, inside = fit(1e-6, 1e-5), fit(1.0), fit(1e-2, 1e-1, 1.0)
    assert from_below["penalty"] == from_above["penalty"] == inside["penalty"] == 0.1
    assert sorted(from_below["validation_loss"]) == [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]  # stopped by the loss rising
    assert sorted(from_above["validation_loss"]) == [1e-2, 1e-1, 1.0] and len(inside["validation_loss"]) == 3


def test_a_linear_probe_fits_the_new_head_on_frozen_features_before_fine_tuning(tiny_sentence_model, tiny_model, ner_data,
                                                                                tmp_path):
    """train.linear_probe: the new output layer is fitted with the task's own loss on the frozen features of the
    training rows (whatever enters the final linear layer), so it starts far below the prior-only head's validation
    loss; the CLI logs it; a task without a per-text output layer refuses it in one line."""
    from types import SimpleNamespace

    import torch

    from encoderfit.core.args import DataArgs, ModelArgs, TrainArgs
    from encoderfit.models.loading import output_layer
    from encoderfit.models.probe import head_features, probe_head
    from encoderfit.runs.training import Prepared

    data = write_csv(tmp_path / "sparse.csv", sparse_multilabel_rows(600, seed=3, rate=0.15))
    train = TrainArgs(linear_probe=True)
    prep = Prepared.load(DataArgs(source=str(data), label_separator="|"), ModelArgs(name_or_path=str(tiny_sentence_model)), train)
    modeling = prep.task.modeling
    net = modeling.load_model(ModelArgs(name_or_path=str(tiny_sentence_model)), prep.splits.labels, prep.max_length, prep.stats)
    layer, loss = output_layer(net, len(prep.splits.labels)), modeling.loss(prep.stats, train)
    x, y = head_features(net, layer, prep.tokenized["validation"], modeling.collator(prep.tokenizer))
    with torch.no_grad():
        before = float(loss(SimpleNamespace(logits=layer(x)), y))
    encoder = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    done = probe_head(net, len(prep.splits.labels), prep.tokenized, modeling.collator(prep.tokenizer), loss, train.seed)
    with torch.no_grad():
        after = float(loss(SimpleNamespace(logits=layer(x)), y))
    assert done["rows"] == len(prep.tokenized["train"]) and done["features"] == x.shape[1]
    assert after < 0.8 * before, (before, after, done)  # the priors alone: ~0.42 nats per label at 15%
    assert all(torch.equal(v, net.encoder.state_dict()[k]) for k, v in encoder.items())  # the encoder is untouched
    # the pooled model names its encoder as transformers models do, so a head learning rate reaches the head alone
    fast = TrainArgs(head_learning_rate=1e-2, report_to=[])
    optimizer = modeling.build_trainer(net, prep.tokenizer, prep.splits.labels, prep.stats, prep.tokenized, fast, prep.precision,
                                       tmp_path / "opt").create_optimizer()
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert {rate[id(p)] for p in net.head.parameters()} == {1e-2}
    assert {rate[id(p)] for p in net.encoder.parameters()} == {fast.learning_rate}

    proc = run_cli("train", "--data.source", str(data), "--data.label_separator", "|", "--model.name_or_path", str(tiny_model),
                   "--output_dir", str(tmp_path / "run"), "--train.linear_probe", "true", "--train.max_steps", "2",
                   "--report.baseline", "false")
    assert "linear probe: the output layer fitted on the frozen features of" in proc.stderr
    refused = run_cli("train", "--task", "ner", "--data.source", str(ner_data), "--model.name_or_path", str(tiny_model),
                      "--output_dir", str(tmp_path / "ner"), "--train.linear_probe", "true", check=False)
    assert refused.returncode == 2 and "train.linear_probe: the ner task has no per-text output layer" in refused.stderr
    assert not (tmp_path / "ner").exists()
