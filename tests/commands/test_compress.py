"""`encoderfit compress` on tiny random-init models: the pruned model is a plain model of a smaller config (no masks,
the same outputs after a reload through AutoModel and pipeline), layers go by their measured effect, FFN pruning
keeps the important neurons, the full command writes a normal run directory (eval, predict, int8 export read it),
and bad input is one line with exit 2 and nothing written."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from conftest import make_rows, write_csv
from failing import cli_fails
from running import run_cli

RECOVER = ["--train.epochs", "3", "--train.batch_size", "16", "--train.learning_rate", "3e-3", "--train.warmup_ratio", "0.05",
           "--train.logging_steps", "5", "--report.baseline", "false"]


def tiny_bert(layers: int = 4, intermediate: int = 64):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=intermediate, num_labels=3)
    return BertForSequenceClassification(config).eval()


def tiny_modernbert(layers: int = 4):
    from transformers import ModernBertConfig, ModernBertForSequenceClassification

    torch.manual_seed(0)
    config = ModernBertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                              intermediate_size=64, pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1,
                              sep_token_id=2, global_attn_every_n_layers=2, num_labels=3)
    return ModernBertForSequenceClassification(config).eval()


@pytest.mark.parametrize("build", [tiny_bert, tiny_modernbert])
def test_pruned_model_is_a_plain_smaller_model_that_reloads_with_the_same_outputs(build, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from encoderfit.models import pruning

    model = build()
    encoder = pruning.encoder_of(model)
    types = list(getattr(model.config, "layer_types", None) or [])
    pruning.drop_layers(encoder, [0, 2, 3])
    x = torch.randint(3, 120, (4, 12))
    scores = pruning.ffn_importance(encoder, lambda: model(input_ids=x))
    pruning.prune_ffn(encoder, pruning.top_neurons(scores, 24))
    pruning.check_plain(model)
    with torch.no_grad():
        before = model(input_ids=x).logits
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["num_hidden_layers"] == 3 and saved["intermediate_size"] == 24
    if types:  # ModernBERT: each kept layer keeps its own attention pattern
        assert saved["layer_types"] == [types[0], types[2], types[3]]
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert not [n for n, _ in reloaded.named_buffers() if "mask" in n.lower()]
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=x).logits, before, atol=1e-6)


def test_the_layer_whose_removal_changes_outputs_least_is_dropped():
    """Layer 2 made a no-op (its attention and FFN outputs zeroed: the residual passes through) must go first, though
    it is neither the first nor the last layer."""
    from encoderfit.models import pruning

    model = tiny_bert(layers=4)
    with torch.no_grad():
        layer = model.bert.encoder.layer[2]
        for linear in (layer.attention.output.dense, layer.output.dense):
            linear.weight.zero_()
            linear.bias.zero_()
        for norm in (layer.attention.output.LayerNorm, layer.output.LayerNorm):  # BERT is post-norm: keep it identity-like
            norm.weight.fill_(1.0)
            norm.bias.zero_()
    x = torch.randint(3, 120, (8, 10))
    with torch.no_grad():
        reference = model(input_ids=x).logits
        # LayerNorm of an already normalised stream is not exactly the identity, but nearly

        def distance():
            with torch.no_grad():
                return float((model(input_ids=x).logits - reference).pow(2).mean())

        steps = pruning.measured_layer_choice(pruning.encoder_of(model), 1, distance)
    assert steps[0]["dropped"] == 2 and set(steps[0]["candidates"]) == {"0", "1", "2", "3"}
    assert model.config.num_hidden_layers == 3 and len(model.bert.encoder.layer) == 3


def test_modernbert_keeps_its_first_layer():
    from encoderfit.models import pruning

    model = tiny_modernbert(layers=3)
    steps = pruning.measured_layer_choice(pruning.encoder_of(model), 2, lambda: 0.0)
    assert [s["dropped"] for s in steps] == [1, 2] and "0" not in steps[0]["candidates"]


def test_ffn_pruning_keeps_the_most_important_neurons():
    """Neurons 5, 9 and 30 carry large output weights and activations; the rest almost nothing: they are the ones kept."""
    from encoderfit.models import pruning

    model = tiny_bert(layers=1, intermediate=40)
    layer = model.bert.encoder.layer[0]
    important = [5, 9, 30]
    with torch.no_grad():
        layer.output.dense.weight.mul_(0.01)
        layer.output.dense.weight[:, important] *= 1000
    x = torch.randint(3, 120, (4, 10))
    scores = pruning.ffn_importance(pruning.encoder_of(model), lambda: model(input_ids=x))
    kept = pruning.top_neurons(scores, 3)
    assert kept[0].tolist() == important
    weight = layer.output.dense.weight[:, important].clone()
    pruning.prune_ffn(pruning.encoder_of(model), kept)
    assert torch.equal(model.bert.encoder.layer[0].output.dense.weight, weight)
    assert model.bert.encoder.layer[0].intermediate.dense.out_features == 3 == model.config.intermediate_size


def test_cost_model_plan_and_an_unreachable_target():
    from encoderfit.core.errors import UserError
    from encoderfit.models.pruning import Shape, plan_for_speedup

    minilm = Shape(layers=6, hidden=384, intermediate=1536, glu=False)
    plan = plan_for_speedup(minilm, 64, 2.0)
    assert plan["speedup"] >= 2.0 and 1 <= plan["layers"] < 6 and plan["intermediate_size"] % 64 == 0
    assert minilm.flops(64) / minilm.flops(64, plan["layers"], plan["intermediate_size"]) == pytest.approx(plan["speedup"], rel=1e-3)
    with pytest.raises(UserError, match="out of reach"):
        plan_for_speedup(minilm, 64, 50)


@pytest.fixture(scope="module")
def compressed(tmp_path_factory, trained_run):
    out = tmp_path_factory.mktemp("compressed") / "run"
    proc = run_cli("compress", str(trained_run), "--compress.layers", "1", "--compress.ffn", "64", "--output_dir", str(out),
                   "--quantize", "int8", *RECOVER)
    return out, proc.stderr


def test_compress_writes_a_normal_run_of_a_smaller_model(compressed, trained_run, tmp_path):
    from transformers import AutoConfig, pipeline

    compressed, log = compressed
    assert "initialised afresh" not in log and "the output layer fitted" not in log  # the student starts from the run's head
    assert "the saved pruned model, reloaded, gives the pruned model's validation outputs" in log

    config = AutoConfig.from_pretrained(compressed / "model")
    assert config.num_hidden_layers == 1 and config.intermediate_size == 64
    metrics = json.loads((compressed / "metrics.json").read_text())
    section = metrics["compression"]
    assert section["plan"]["layers"] == 1 and section["plan"]["layer_choice"][0]["dropped"] == 1  # ModernBERT keeps layer 0
    assert section["parameters"]["compressed"] < section["parameters"]["original"]
    names = [r["model"] for r in section["table"]]
    assert names == ["original", "compressed", "compressed + int8", "original int8"]
    for r in section["table"][1:]:
        assert r["against_original"]["outcome"] in ("better", "worse", "not distinguishable") and r["size_mb"] > 0
    assert section["table"][2]["size_mb"] < section["table"][1]["size_mb"]
    assert metrics["distillation"]["teacher"]["run"] == str(trained_run)
    assert json.loads((compressed / "onnx" / "parity.json").read_text())["fp32"]["max_abs_logit_diff"] < 1e-4
    assert not (trained_run / "onnx").exists()  # the original run is left as it was
    assert pipeline("text-classification", model=str(compressed / "model"))("goal team match")[0]["label"] in ("food", "sport", "tech")
    assert "test" in run_cli("eval", str(compressed)).stdout
    (tmp_path / "in.txt").write_text("garlic soup oven chef\n", encoding="utf-8")
    row = json.loads(run_cli("predict", str(compressed), "--input", str(tmp_path / "in.txt")).stdout.splitlines()[0])
    assert row["label"] in ("food", "sport", "tech")
    assert json.loads(run_cli("predict", str(compressed), "--input", str(tmp_path / "in.txt"), "--backend", "onnx-int8"
                              ).stdout.splitlines()[0])["label"] in ("food", "sport", "tech")


def test_bad_compress_input_is_one_line_and_writes_nothing(trained_run, tmp_path, toy_csv):
    out = tmp_path / "out"

    def refused(*args, match):
        err = cli_fails("compress", *args, "--output_dir", str(out), *RECOVER)
        assert match in err, err
        assert not out.exists() and not list(tmp_path.glob(".out*"))

    refused(str(trained_run), "--compress.target_speedup", "50", match="out of reach")
    refused(str(trained_run), "--compress.heads", "2", match="head_dim")
    refused(str(trained_run), match="nothing to prune")
    refused(str(trained_run), "--compress.layers", "5", match="keep at most")
    gone = tmp_path / "moved"
    shutil.copytree(trained_run, gone)
    data = tmp_path / "toy.csv"
    write_csv(data, make_rows(120, seed=0))
    cfg = (gone / "config.yaml").read_text().replace(str(toy_csv), str(data))
    (gone / "config.yaml").write_text(cfg)
    data.unlink()
    refused(str(gone), "--compress.layers", "1", match=str(data))


@pytest.fixture(scope="module")
def tiny_bert_sentence_model(tmp_path_factory, tiny_model):
    """A 2-layer BERT (random init, the tiny BPE tokenizer) as a sentence-transformers directory with mean pooling: a
    MiniLM-like base, which encoderfit fine-tunes as a pooled classifier (models/pooling.py)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    home = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(home / "hf")
    tokenizer.save_pretrained(home / "hf")
    body = Transformer(str(home / "hf"))
    SentenceTransformer(modules=[body, Pooling(body.get_embedding_dimension(), "mean")], device="cpu").save(str(home / "st"))
    return home / "st"


def test_a_pooled_classifier_of_the_same_labels_starts_from_its_own_head(tiny_bert_sentence_model, tmp_path):
    """The pruned student of a pooled (sentence-transformers) classifier run must not start under a random head."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense

    from encoderfit.core.args import ModelArgs
    from encoderfit.models.pooling import pooled_classifier
    from encoderfit.tasks import get_task

    st = SentenceTransformer(str(tiny_bert_sentence_model), device="cpu")
    torch.manual_seed(1)
    st.append(Dense(32, 3, bias=True, activation_function=torch.nn.Identity()))
    st.save(str(tmp_path / "clf"))
    labels = ["food", "sport", "tech"]
    (tmp_path / "clf" / "encoderfit.json").write_text(json.dumps({"task": "classification", "max_length": 64, "labels": labels}))
    task = get_task("classification")
    model = pooled_classifier(ModelArgs(name_or_path=str(tmp_path / "clf")), task, labels)
    assert torch.equal(model.head.weight, st[2].linear.weight) and not model.head_is_new
    other = pooled_classifier(ModelArgs(name_or_path=str(tmp_path / "clf")), task, ["a", "b", "c"])
    assert not torch.equal(other.head.weight, st[2].linear.weight) and other.head_is_new


def test_a_bert_sentence_model_run_is_compressed_from_its_own_head(tiny_bert_sentence_model, toy_csv, tmp_path):
    """The MiniLM path (BertModel in a sentence-transformers directory, fine-tuned as a pooled classifier): the layer
    chosen by measurement goes, the student starts from the run's head, and the compressed run predicts."""
    from sentence_transformers import SentenceTransformer

    from encoderfit.runs.predictor import Predictor

    run = tmp_path / "bert"
    run_cli("train", "--data.source", str(toy_csv), "--model.name_or_path", str(tiny_bert_sentence_model), "--output_dir",
            str(run), *RECOVER)
    out = tmp_path / "small"
    log = run_cli("compress", str(run), "--compress.target_speedup", "1.4", "--output_dir", str(out), *RECOVER).stderr
    assert "own linear head, trained for these labels, is kept" in log and "plan (target_speedup 1.4)" in log
    plan = json.loads((out / "metrics.json").read_text())["compression"]["plan"]
    assert plan["speedup"] >= 1.4 and len(plan["layer_choice"]) == 3 - plan["layers"]
    encoder = SentenceTransformer(str(out / "model"), device="cpu")[0].auto_model
    assert encoder.config.num_hidden_layers == plan["layers"] and encoder.config.intermediate_size == plan["intermediate_size"]
    assert Predictor.from_pretrained(out).predict("goal team match")["label"] in ("food", "sport", "tech")


@pytest.mark.parametrize("fixture", ["multilabel_run", "regression_run", "ner_run", "embedding_run"])
def test_every_task_with_a_per_text_or_per_token_head_is_compressed(fixture, request, tmp_path):
    from encoderfit.runs.predictor import Predictor

    run = request.getfixturevalue(fixture)
    out = tmp_path / "small"
    run_cli("compress", str(run), "--compress.layers", "1", "--compress.ffn", "32", "--output_dir", str(out), "--quantize", "int8",
            "--train.epochs", "1", "--train.batch_size", "16", "--train.learning_rate", "3e-3", "--report.baseline", "false")
    section = json.loads((out / "metrics.json").read_text())["compression"]
    assert section["plan"]["kept_layers"] == [0] and [r["model"] for r in section["table"]] == \
        ["original", "compressed", "compressed + int8", "original int8"]
    assert all(r["against_original"]["outcome"] for r in section["table"][1:])
    assert section["parameters"]["compressed"] < section["parameters"]["original"]
    assert Predictor.from_pretrained(out).predict("alice lives in paris today") is not None


def test_a_qa_run_is_refused_in_one_line(trained_run, tmp_path):
    """A QA run (here a run directory whose config says qa: the refusal comes before its model is read)."""
    qa_run = tmp_path / "qa"
    shutil.copytree(trained_run, qa_run)
    (qa_run / "config.yaml").write_text((qa_run / "config.yaml").read_text().replace("task: classification", "task: qa"))
    err = cli_fails("compress", str(qa_run), "--compress.layers", "1", "--output_dir", str(tmp_path / "out"))
    assert "qa run" in err and "distillation" in err and not (tmp_path / "out").exists()


def test_a_family_that_cannot_be_pruned_is_refused_in_one_line(trained_run, tmp_path):
    """A run whose model is a DistilBERT (its own layer layout): one line naming the families that can be pruned."""
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification

    run = tmp_path / "distilbert"
    shutil.copytree(trained_run, run)
    tokenizer = AutoTokenizer.from_pretrained(run / "model")
    labels = json.loads((run / "model" / "encoderfit.json").read_text())["labels"]
    config = DistilBertConfig(vocab_size=len(tokenizer), dim=32, hidden_dim=64, n_layers=2, n_heads=4,
                              num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    for name in ("model.safetensors", "config.json"):
        (run / "model" / name).unlink()
    DistilBertForSequenceClassification(config).save_pretrained(run / "model")
    err = cli_fails("compress", str(run), "--compress.layers", "1", "--output_dir", str(tmp_path / "out"))
    assert "a distilbert model cannot be pruned structurally" in err and "modernbert" in err
    assert not (tmp_path / "out").exists()
