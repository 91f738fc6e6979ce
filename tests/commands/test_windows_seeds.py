"""Whole long documents (overlapping windows, aggregated logits) and several seeds (spread, best member, ensembles)."""

import json
import random
import shutil

import numpy as np
import pytest

from conftest import TOPICS, run_cli
from encoderfit.runs.predictor import Predictor, aggregate_windows


def test_windows_cover_every_token_and_map_back(tiny_model):
    from transformers import AutoTokenizer

    from encoderfit.data.sources import encode_texts

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rng = random.Random(0)
    texts = [" ".join(rng.choices(TOPICS["sport"] + TOPICS["food"], k=n)) for n in (3, 40, 95)]
    enc = encode_texts(tokenizer, texts, None, max_length=16, windows={"overlap": 4})
    source = enc["overflow_to_sample_mapping"]
    assert sorted(set(source)) == [0, 1, 2] and source == sorted(source)
    special = set(tokenizer.all_special_ids)
    for i, text in enumerate(texts):
        full = [t for t in tokenizer(text)["input_ids"] if t not in special]
        windows = [[t for t in ids if t not in special] for ids, s in zip(enc["input_ids"], source) if s == i]
        assert all(len(ids) <= 16 for ids, s in zip(enc["input_ids"], source) if s == i)
        rebuilt = windows[0] + [t for w in windows[1:] for t in w[4:]]  # each later window repeats 4 tokens
        assert rebuilt == full, f"text {i}: the windows do not cover its tokens exactly once"


def test_aggregation_is_per_text_and_order_independent():
    rng = np.random.default_rng(0)
    logits, source = rng.normal(size=(7, 3)).astype(np.float32), np.array([0, 0, 1, 2, 2, 2, 1])
    mean = aggregate_windows(logits, source, 3)
    np.testing.assert_allclose(mean[2], logits[[3, 4, 5]].mean(0), rtol=1e-6)
    order = rng.permutation(7)
    np.testing.assert_allclose(aggregate_windows(logits[order], source[order], 3), mean, rtol=1e-6)
    np.testing.assert_allclose(aggregate_windows(logits, source, 3, "max")[1], logits[[2, 6]].max(0))


@pytest.fixture(scope="module")
def windowed_run(tmp_path_factory, tiny_model, toy_csv):
    out = tmp_path_factory.mktemp("windows") / "run"
    run_cli("train", "--data.source", str(toy_csv), "--model.name_or_path", str(tiny_model), "--output_dir", str(out),
            "--model.max_length", "12", "--model.long_texts", "windows", "--model.window_overlap", "3",
            "--train.epochs", "6", "--train.batch_size", "16", "--train.learning_rate", "3e-3", "--report.baseline", "false")
    return out


def test_windowed_run_reads_whole_texts_everywhere(windowed_run, tmp_path):
    metrics = json.loads((windowed_run / "metrics.json").read_text())
    inputs = metrics["inputs"]["test"]
    assert inputs["treatment"] == "windows" and inputs["longer_than_max_length"] > 0.3 and inputs["windows_per_text"] > 1.3
    assert metrics["test"]["accuracy"] >= 0.85
    info = json.loads((windowed_run / "model" / "encoderfit.json").read_text())
    assert info["windows"] == {"overlap": 3, "aggregation": "mean"} and info["max_length"] == 12
    model = Predictor.from_pretrained(windowed_run)
    long_text = " ".join(["the", "a", "of"] * 30 + ["goal", "team", "coach", "league"])  # the topic only at the very end
    assert model.predict(long_text)["label"] == "sport"  # truncated to 12 tokens it would see filler only
    from encoderfit.commands.export import export

    out = export(windowed_run, output=tmp_path / "onnx")
    assert json.loads((out / "parity.json").read_text())["fp32"]["max_abs_logit_diff"] <= 1e-4
    onnx = Predictor.from_pretrained(out, backend="onnx")
    np.testing.assert_allclose(onnx.logits([long_text, "garlic soup"]), model.logits([long_text, "garlic soup"]), atol=1e-4)


def test_an_ensemble_predicts_the_mean_of_its_members_logits(trained_run, tmp_path):
    """A logit-average ensemble: model/members/seed-S/ beside the kept weights; predict and export run all members."""
    from safetensors.numpy import load_file, save_file

    model = tmp_path / "model"
    shutil.copytree(trained_run / "model", model)
    weights = load_file(model / "model.safetensors")
    rng = np.random.default_rng(0)
    members = []
    for seed in (1, 2):
        member = model / "members" / f"seed-{seed}"
        member.mkdir(parents=True)
        shutil.copy(model / "config.json", member / "config.json")
        save_file({k: (v + rng.normal(scale=0.05, size=v.shape)).astype(v.dtype) for k, v in weights.items()},
                  str(member / "model.safetensors"), metadata={"format": "pt"})
        members.append(member)
    info = json.loads((model / "encoderfit.json").read_text())
    info["members"] = ["members/seed-1", "members/seed-2"]
    (model / "encoderfit.json").write_text(json.dumps(info))
    texts = ["garlic soup", "the coach and the team", "a compiler for the kernel", "the a of"]
    single = []
    for member in members:  # each member on its own: a plain model directory
        alone = tmp_path / f"alone-{member.name}"
        shutil.copytree(trained_run / "model", alone)
        shutil.copy(member / "model.safetensors", alone / "model.safetensors")
        single.append(Predictor.from_pretrained(alone).logits(texts))
    ensemble = Predictor.from_pretrained(model).logits(texts)
    np.testing.assert_allclose(ensemble, np.mean(single, axis=0), atol=1e-5)
    assert np.abs(single[0] - single[1]).max() > 1e-3  # the members differ: the mean is not one of them
    from encoderfit.commands.export import export

    export(model, output=tmp_path / "onnx")
    np.testing.assert_allclose(Predictor.from_pretrained(tmp_path / "onnx", backend="onnx").logits(texts), ensemble, atol=1e-4)


def test_several_seeds_report_their_spread_and_ship_an_ensemble(toy_csv, tiny_model, tmp_path):
    out = tmp_path / "seeds"
    run_cli("train", "--data.source", str(toy_csv), "--model.name_or_path", str(tiny_model), "--output_dir", str(out),
            "--train.epochs", "4", "--train.batch_size", "16", "--train.learning_rate", "3e-3", "--report.baseline", "false",
            "--train.seeds", "2", "--train.ensemble", "true")
    seeds = json.loads((out / "metrics.json").read_text())["train"]["seeds"]
    assert seeds["seeds"] == [42, 43] and set(seeds["members"]) == {"42", "43"}
    spread = seeds["spread"]["test"]["accuracy"]
    accuracies = [seeds["members"][s]["test"]["accuracy"] for s in ("42", "43")]
    assert spread["mean"] == pytest.approx(np.mean(accuracies)) and spread["min"] == min(accuracies)
    kept = seeds["kept"]
    assert kept["kind"] in ("weight average", "logit average") and kept["members"] == 2
    scores = kept["validation"]  # the choice follows the validation scores (accuracy: greater is better)
    if kept["kind"] == "weight average":
        assert scores["weight average"] >= scores["logit average"]
    else:
        assert scores["weight average"] < scores["logit average"]
    assert not (out / "members").exists() and (out / "model" / "model.safetensors").is_file()
    assert "<h2>Seeds</h2>" in (out / "report.html").read_text()
