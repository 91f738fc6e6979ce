"""A run's model directory is what it says (issue 50, item 20): every task's directory loads with the standard loader
of its kind (transformers' pipeline / AutoModelFor..., or SentenceTransformer) with its trained head and gives the
Predictor's outputs, and the other loader raises or loads no newly initialised weights: never a random head."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import EMBED_TRAIN, make_pair_rows, make_rows, run_cli, write_csv

TEXTS = ["the chef made garlic soup", "the team won the trophy", "a new compiler for the kernel", "this is it"]


def loads_every_weight(model_class, directory):
    """The model as transformers loads it, asserting that every weight came from the directory (none newly initialised)."""
    model, info = model_class.from_pretrained(str(directory), output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"], info
    return model.eval()


def refused(model_class_or_pipeline, directory, *args):
    """transformers refuses the directory (it has no top-level config.json to build a model, and so no random head)."""
    with pytest.raises((OSError, ValueError)):
        model_class_or_pipeline(*args, model=str(directory)) if args else model_class_or_pipeline.from_pretrained(str(directory))


def st_outputs(directory, texts):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(directory), device="cpu").encode(texts, convert_to_numpy=True)


# ---------------------------------------------------------------- transformers directories (ModernBERT's own heads)


@pytest.mark.parametrize("fixture", ["trained_run", "pair_run", "multilabel_run", "regression_run"])
def test_a_sequence_run_loads_in_the_text_classification_pipeline_with_its_trained_head(fixture, request):
    from transformers import AutoModel, AutoModelForSequenceClassification, pipeline

    from encoderfit import Predictor

    run = request.getfixturevalue(fixture)
    pairs = [r["text_pair"] for r in make_pair_rows(len(TEXTS), seed=5)] if fixture == "pair_run" else None
    ours = Predictor.from_pretrained(run, calibrated=False, device="cpu")
    expected = ours.logits(TEXTS, pairs)
    loads_every_weight(AutoModelForSequenceClassification, run / "model")
    pipe = pipeline("text-classification", model=str(run / "model"), device="cpu", top_k=None, function_to_apply="none")
    inputs = [{"text": t, "text_pair": p} for t, p in zip(TEXTS, pairs)] if pairs else TEXTS
    theirs = [{r["label"]: r["score"] for r in row} for row in pipe(inputs)]
    got = np.asarray([[row[label] for label in ours.labels] for row in theirs])
    np.testing.assert_allclose(got, expected.reshape(got.shape), atol=1e-4)
    loads_every_weight(AutoModel, run / "model")  # SentenceTransformer(DIR) loads the encoder alone: no head at all
    assert 'transformers.pipeline("text-classification", model=DIR)' in (run / "model" / "README.md").read_text()


def test_a_token_run_and_a_qa_run_load_in_transformers_with_their_trained_heads(ner_run, qa_run):
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoModelForTokenClassification, AutoTokenizer

    from encoderfit import Predictor

    texts = ["alice saw new york", "bob met carol in rome"]
    for run, cls in ((ner_run, AutoModelForTokenClassification), (qa_run, AutoModelForQuestionAnswering)):
        plain = loads_every_weight(cls, run / "model")
        ours = Predictor.from_pretrained(run, device="cpu")
        enc = AutoTokenizer.from_pretrained(str(run / "model"))(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            theirs, mine = plain(**enc), ours.model(**enc)
        card = (run / "model" / "README.md").read_text()
        assert (f"{cls.__name__}.from_pretrained(DIR)" in card and "loads it with its trained head" in card
                and "library_name: transformers" in card)
        real = enc["attention_mask"].bool().numpy()  # the Predictor's padding-free model leaves padded positions unused
        if cls is AutoModelForTokenClassification:
            np.testing.assert_allclose(theirs.logits.numpy()[real], mine.logits.numpy()[real], atol=1e-4)
        else:  # the Predictor's span logits: start and end stacked
            stacked = torch.stack([theirs.start_logits, theirs.end_logits], -1).numpy()
            np.testing.assert_allclose(stacked[real], np.asarray(mine.logits)[..., :2].reshape(stacked.shape)[real], atol=1e-4)


# ---------------------------------------------------------------- sentence-transformers directories


def test_an_embedding_run_loads_in_sentence_transformers_and_its_encoder_in_transformers(embedding_run):
    from transformers import AutoModel

    from encoderfit import Predictor

    np.testing.assert_allclose(st_outputs(embedding_run / "model", TEXTS),
                               Predictor.from_pretrained(embedding_run, device="cpu").logits(TEXTS), atol=1e-4)
    loads_every_weight(AutoModel, embedding_run / "model")  # pipeline("feature-extraction"): the bare encoder, no head
    assert "`SentenceTransformer(DIR).encode(texts)` returns the embeddings" in (embedding_run / "model" / "README.md").read_text()


def test_a_similarity_run_loads_in_sentence_transformers(tmp_path, tiny_model):
    from encoderfit import Predictor

    rows = [{"text_a": r["text"], "text_b": r["text_pair"], "score": float(r["label"] == "sport")} for r in make_pair_rows(80, seed=3)]
    data = tmp_path / "s.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "similarity"
    run_cli("train", "--task", "similarity", "--data.source", str(data), "--model.name_or_path", str(tiny_model),
            "--output_dir", str(out), "--train.epochs", "1", "--report.baseline", "false", *EMBED_TRAIN)
    np.testing.assert_allclose(st_outputs(out / "model", TEXTS), Predictor.from_pretrained(out, device="cpu").logits(TEXTS), atol=1e-4)


def sentence_classifier_checks(out, texts):
    """A classifier kept as sentence-transformers modules: SentenceTransformer gives the Predictor's logits, every
    transformers loader refuses it (no config.json at the top), encoderfit's export and eval still read it, and the
    card says how it loads."""
    from transformers import AutoModelForSequenceClassification, pipeline

    from encoderfit import Predictor

    model = out / "model"
    logits = Predictor.from_pretrained(out, device="cpu").logits(texts)
    np.testing.assert_allclose(st_outputs(model, texts), logits, atol=1e-4)
    refused(pipeline, model, "text-classification")
    refused(AutoModelForSequenceClassification, model)
    assert not (model / "config.json").exists() and (model / "0_Transformer" / "config.json").is_file()
    card = (model / "README.md").read_text()
    assert "SentenceTransformer(DIR).encode(texts)` returns the logits" in card and "refuses" in card
    assert "library_name: sentence-transformers" in card
    return logits


def test_a_classifier_on_a_sentence_transformers_checkpoint_never_loads_under_a_random_head(tiny_sentence_model, toy_csv, tmp_path):
    """The VADER example's shape (MiniLM: mean pooling): saved before as a sentence-transformers directory whose
    top-level config.json said BertModel, which pipeline() loaded with a new random head (every score ~0.5)."""
    from encoderfit import Predictor

    out = tmp_path / "run"
    run_cli("train", "--data.source", str(toy_csv), "--model.name_or_path", str(tiny_sentence_model), "--output_dir", str(out),
            "--train.epochs", "2", "--train.batch_size", "16", "--train.learning_rate", "2e-3", "--report.baseline", "false")
    logits = sentence_classifier_checks(out, TEXTS)
    run_cli("export", str(out))  # the ONNX export reads the nested transformer
    assert json.loads((out / "onnx" / "parity.json").read_text())["fp32"]["max_abs_logit_diff"] < 1e-4
    run_cli("eval", str(out))
    texts = write_csv(tmp_path / "traffic.csv", make_rows(10, seed=4))  # predict's CLI with a log, and monitor, read it too
    run_cli("predict", str(out), "--input", str(texts), "--output", str(tmp_path / "p.jsonl"), "--log", str(tmp_path / "log.db"))
    proc = run_cli("monitor", str(out), "--log", str(tmp_path / "log.db"), "--output", str(tmp_path / "m"), "--permutations", "50",
                   "--min_rows", "5", check=False)
    assert proc.returncode in (0, 3) and "embeddings" in json.loads((tmp_path / "m" / "monitor.json").read_text())["tests"]
    # a run of the old layout (the transformer at the top level) still loads, to the same logits
    old = tmp_path / "old"
    shutil.copytree(out / "model", old)
    for file in (old / "0_Transformer").iterdir():
        file.rename(old / file.name)
    (old / "0_Transformer").rmdir()
    modules = json.loads((old / "modules.json").read_text())
    modules[0]["path"] = ""
    (old / "modules.json").write_text(json.dumps(modules))
    np.testing.assert_allclose(Predictor.from_pretrained(old, device="cpu").logits(TEXTS), logits, atol=1e-5)
    # and a run's model directory is a checkpoint to fine-tune further, through its own pooling again
    again = tmp_path / "again"
    proc = run_cli("train", "--data.source", str(toy_csv), "--model.name_or_path", str(out / "model"), "--output_dir",
                   str(again), "--train.epochs", "1", "--train.learning_rate", "1e-4", "--report.baseline", "false")
    assert "mean-pooled sentence vector" in proc.stderr and (again / "model" / "0_Transformer" / "config.json").is_file()


def test_a_regression_on_a_sentence_transformers_checkpoint_keeps_its_folded_scale(tiny_sentence_model, tmp_path):
    from conftest import make_regression_rows

    data = write_csv(tmp_path / "r.csv", make_regression_rows(200, seed=0))
    out = tmp_path / "run"
    run_cli("train", "--data.source", str(data), "--model.name_or_path", str(tiny_sentence_model), "--output_dir", str(out),
            "--train.epochs", "1", "--regression.target_range", "[-6, 6]", "--report.baseline", "false")
    assert sentence_classifier_checks(out, TEXTS).shape == (len(TEXTS), 1)


def test_an_embedding_head_run_gives_its_class_logits_through_sentence_transformers(tmp_path, tiny_model):
    """SetFit (model.head embedding): the logistic regression is a Dense module after Normalize, not a file beside a
    top-level transformer that pipeline() would load under a random head; the old layout still loads."""
    from safetensors.numpy import save_file

    from encoderfit import Predictor

    out = tmp_path / "setfit"
    data = write_csv(tmp_path / "toy.csv", make_rows(30, seed=1))
    run_cli("train", "--data.source", str(data), "--model.name_or_path", str(tiny_model), "--model.head", "embedding",
            "--output_dir", str(out), "--train.epochs", "1", "--train.contrastive_pairs", "2", "--report.baseline", "false",
            *EMBED_TRAIN)
    logits = sentence_classifier_checks(out, TEXTS)
    modules = json.loads((out / "model" / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling", "Normalize", "Dense"]
    # the layout of runs before: the transformer at the top level, the head in classifier.safetensors
    old = tmp_path / "old"
    shutil.copytree(out / "model", old)
    for file in (old / "0_Transformer").iterdir():
        file.rename(old / file.name)
    (old / "0_Transformer").rmdir()
    dense = modules[-1]["path"]
    from safetensors.numpy import load_file

    weights = load_file(str(old / dense / "model.safetensors"))
    save_file({"weight": weights["linear.weight"], "bias": weights["linear.bias"]}, str(old / "classifier.safetensors"))
    shutil.rmtree(old / dense)
    (old / "modules.json").write_text(json.dumps([{**m, "path": ""} if m["type"].endswith("Transformer") else m for m in modules[:-1]]))
    np.testing.assert_allclose(Predictor.from_pretrained(old, device="cpu").logits(TEXTS), logits, atol=1e-5)
    # the run's model is a checkpoint to go on from (retrain from the deployed model): the encoder, without the old head
    again = tmp_path / "again"
    run_cli("train", "--data.source", str(data), "--model.name_or_path", str(out / "model"), "--model.head", "embedding",
            "--output_dir", str(again), "--train.epochs", "1", "--train.contrastive_pairs", "2", "--report.baseline", "false",
            *EMBED_TRAIN)
    kinds = [m["type"].rsplit(".", 1)[-1] for m in json.loads((again / "model" / "modules.json").read_text())]
    assert kinds == ["Transformer", "Pooling", "Normalize", "Dense"]
