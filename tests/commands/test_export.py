"""ONNX export: parity with PyTorch for ModernBERT (tiny) and BERT (real MiniLM), int8, and the onnx backends."""

import json
import random
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import read_jsonl, run_cli, serving
from encoderfit import cli
from encoderfit.runs.predictor import Predictor
from encoderfit.tasks import get_task


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "onnx"  # not inside the shared run: other tests check its file set
    assert cli.main(["export", str(trained_run), "--quantize", "int8", "--output", str(out)]) == 0
    return out


def mixed_texts(n=40, seed=2):
    rng = random.Random(seed)
    words = "goal team chef oven cloud server the a of and very garlic kernel".split()
    return [" ".join(rng.choices(words, k=rng.randint(1, 90))) for _ in range(n)]


def test_export_writes_a_self_contained_directory(exported):
    names = sorted(p.name for p in exported.iterdir())
    for name in ("model.onnx", "model.int8.onnx", "config.json", "tokenizer.json", "encoderfit.json", "parity.json",
                 "int8_recheck.json", "README.md"):
        assert name in names
    parity = json.loads((exported / "parity.json").read_text())
    assert parity["fp32"]["max_abs_logit_diff"] <= 1e-4
    assert parity["int8"]["label_agreement"] >= 0.9
    # int8 weights for every MatMul; the tiny model's embedding table (not quantized) keeps the ratio above 1/4
    assert (exported / "model.int8.onnx").stat().st_size < 0.75 * (exported / "model.onnx").stat().st_size


def test_onnx_backend_matches_torch_in_input_order(exported, trained_run):
    texts = mixed_texts()
    torch_logits = Predictor.from_pretrained(trained_run).logits(texts)
    onnx = Predictor.from_pretrained(exported, backend="onnx", max_tokens=300)  # many small, sorted batches
    np.testing.assert_allclose(onnx.logits(texts), torch_logits, atol=1e-4)
    int8 = Predictor.from_pretrained(exported, backend="onnx-int8")
    assert (int8.logits(texts).argmax(1) == torch_logits.argmax(1)).mean() >= 0.9
    assert onnx.head == Predictor.from_pretrained(trained_run).head and onnx.max_length == Predictor.from_pretrained(trained_run).max_length


def test_int8_recheck_margin_is_fitted_on_validation(exported, trained_run):
    fitted = json.loads((exported / "int8_recheck.json").read_text())
    validation = pq.read_table(trained_run / "predictions" / "validation.parquet").column("text").to_pylist()
    assert fitted["fitted_on"].endswith("validation.parquet") and fitted["texts"] == len(validation)
    assert fitted["margin"] >= 0 and fitted["quantile"] == 0.99
    # measured, not assumed: int8 with its re-check, run on the texts the margin was fitted on, against fp32 ONNX;
    # only drops above the 99% quantile can still flip a label there
    fp32 = Predictor.from_pretrained(exported, backend="onnx").logits(validation)
    checked = Predictor.from_pretrained(exported, backend="onnx-int8").logits(validation)
    agreement = float((checked.argmax(1) == fp32.argmax(1)).mean())
    assert agreement == pytest.approx(fitted["with"]["label_agreement"])
    assert agreement >= fitted["quantile"]
    assert json.loads((exported / "parity.json").read_text())["int8_rechecked"]["label_agreement"] >= 0.9


def test_int8_recheck_runs_exactly_the_near_ties_in_fp32(exported):
    texts = mixed_texts(60, seed=5)
    fp32 = Predictor.from_pretrained(exported, backend="onnx").logits(texts)
    # the same batches for both: dynamic int8 scales activations per batch, so its logits depend on batch mates
    alone = Predictor.from_pretrained(exported, backend="onnx-int8", int8_recheck=False, max_tokens=300)
    assert alone.recheck is None
    int8 = alone.logits(texts)
    checked = Predictor.from_pretrained(exported, backend="onnx-int8", max_tokens=300)  # several recheck batches
    margin = json.loads((exported / "int8_recheck.json").read_text())["margin"]
    assert checked.recheck[1] == pytest.approx(margin)
    for forced in (float("inf"), 0.0, margin):
        checked.recheck = (checked.recheck[0], forced)
        got = checked.logits(texts)
        near = get_task("classification").decoding.decision_margin(int8, checked.head) < forced
        np.testing.assert_allclose(got[near], fp32[near], atol=1e-5)  # re-run in fp32, back in input order
        np.testing.assert_allclose(got[~near], int8[~near], atol=1e-5)  # int8 answers kept as they are


def test_export_without_recheck_and_a_bad_quantile(trained_run, tmp_path, capsys):
    assert cli.main(["export", str(trained_run), "--quantize", "int8", "--recheck_quantile", "0",
                     "--output", str(tmp_path / "onnx")]) == 0
    assert not (tmp_path / "onnx" / "int8_recheck.json").exists()
    assert Predictor.from_pretrained(tmp_path / "onnx", backend="onnx-int8").recheck is None
    assert cli.main(["export", str(trained_run), "--quantize", "int8", "--recheck_quantile", "1.5"]) == 2
    assert "--recheck_quantile must be between 0 and 1" in capsys.readouterr().err


def test_serve_onnx_int8_with_its_recheck(exported):
    import httpx

    texts = mixed_texts(12, seed=9)
    expected = Predictor.from_pretrained(exported, backend="onnx-int8").predict(texts)
    with serving(exported, "--backend", "onnx-int8", "--max_texts", "16") as url:
        info = httpx.get(url + "/v1/model", timeout=10).json()
        results = httpx.post(url + "/v1/predict", json={"texts": texts}, timeout=30).json()["results"]
    assert info["backend"] == "onnx-int8"
    assert info["int8_recheck_margin"] == pytest.approx(json.loads((exported / "int8_recheck.json").read_text())["margin"])
    assert [r["label"] for r in results] == [e["label"] for e in expected]


def test_predict_cli_onnx_backend(exported, trained_run, tmp_path):
    texts = ["garlic soup tonight", "the referee stopped the match", "a new server chip"]
    (tmp_path / "in.txt").write_text("\n".join(texts))
    rows = read_jsonl(run_cli("predict", str(exported), "--input", str(tmp_path / "in.txt"), "--backend", "onnx").stdout)
    assert [r["label"] for r in rows] == [r["label"] for r in Predictor.from_pretrained(trained_run).predict(texts)]


def test_onnx_backend_without_export_is_a_clear_error(trained_run, tmp_path, capsys):
    model_only = tmp_path / "model"
    shutil.copytree(trained_run / "model", model_only)
    (tmp_path / "in.txt").write_text("hello\n")
    assert cli.main(["predict", str(model_only), "--input", str(tmp_path / "in.txt"), "--backend", "onnx"]) == 2
    err = capsys.readouterr().err
    assert "no model.onnx" in err and "encoderfit export" in err


@pytest.mark.slow
def test_bert_family_export_parity(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from encoderfit.data.recipes import all_minilm_l6_v2

    source = all_minilm_l6_v2()
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=3, id2label={0: "a", 1: "b", 2: "c"},
                                                               label2id={"a": 0, "b": 1, "c": 2})
    model.save_pretrained(tmp_path / "minilm")
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.model_max_length = 128
    tokenizer.save_pretrained(tmp_path / "minilm")
    assert cli.main(["export", str(tmp_path / "minilm"), "--output", str(tmp_path / "onnx")]) == 0
    parity = json.loads((tmp_path / "onnx" / "parity.json").read_text())
    assert parity["fp32"]["max_abs_logit_diff"] <= 1e-4
    assert parity["inputs"] == ["input_ids", "token_type_ids", "attention_mask"]
