"""Masked-LM pre-training (`encoderfit pretrain`): tokenizer training, masking, packing, training, resume, outputs.

The corpus is toy text (conftest's topic sentences); the models are ModernBERTs shrunk by --model.overrides, so every
run takes seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import CPU_EXACT, load_run, max_weight_difference, run_cli, write_csv
from shared import kill_after
from shared import pretrain_args, toy_documents



@pytest.fixture(scope="session")
def mlm_run(tmp_path_factory, corpus_file) -> Path:
    out = tmp_path_factory.mktemp("mlm") / "run"
    run_cli(*pretrain_args(corpus_file, out))
    return out


# ---------------------------------------------------------------- tokenizer


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_trained_tokenizer_round_trips_with_the_families_special_tokens(kind, tmp_path):
    from transformers import AutoTokenizer

    from encoderfit.pretraining.tokenizer import SPECIAL_TOKENS, TokenizerArgs, train_tokenizer

    train_tokenizer(toy_documents(300, 1), TokenizerArgs(kind=kind, vocab_size=384), 512).save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert set(SPECIAL_TOKENS) <= set(tok.get_vocab()) and len(tok) <= 384
    assert (tok.cls_token, tok.sep_token, tok.mask_token, tok.pad_token) == ("[CLS]", "[SEP]", "[MASK]", "[PAD]")
    text = "the chef baked garlic soup today"
    ids = tok(text, "the team won")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids.count(tok.sep_token_id) == 2 and ids[-1] == tok.sep_token_id
    assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text
    masked = tok.convert_ids_to_tokens(tok("the chef [MASK] soup")["input_ids"])
    assert "[MASK]" in masked and masked[masked.index("[MASK]") - 1] != "Ġ"  # the space goes with the mask
    if kind == "bpe":  # byte-level: any text, accents and emoji included, comes back exactly
        odd = "Crème brûlée 🍮  twice"
        assert tok.decode(tok(odd)["input_ids"], skip_special_tokens=True) == odd


def test_vocab_size_must_be_a_multiple_of_64_and_leave_room_for_the_special_tokens():
    from encoderfit.core.errors import UserError
    from encoderfit.pretraining.tokenizer import TokenizerArgs

    with pytest.raises(UserError, match="multiple of 64"):
        TokenizerArgs(vocab_size=1000)
    with pytest.raises(UserError, match="at least 384"):
        TokenizerArgs(kind="bpe", vocab_size=256)


# ---------------------------------------------------------------- packing and masking


def test_packing_fills_every_block_without_padding_and_keeps_the_stream_in_order(mlm_run):
    from transformers import AutoTokenizer

    from encoderfit.tasks.mlm.task import pack

    tok = AutoTokenizer.from_pretrained(mlm_run / "model")
    docs = toy_documents(50, 2)
    blocks, tokens = pack(docs, tok, 32, "toy")
    ids = np.asarray(blocks["input_ids"])
    assert ids.shape == (tokens // 30, 32) and tok.pad_token_id not in ids
    assert (ids[:, 0] == tok.cls_token_id).all() and (ids[:, -1] == tok.sep_token_id).all()
    stream = [t for d in docs for t in tok(d, add_special_tokens=False)["input_ids"] + [tok.sep_token_id]]
    assert ids[:, 1:-1].ravel().tolist() == stream[: ids.shape[0] * 30]  # documents run on across block boundaries


def test_validation_documents_are_held_out_whole_and_duplicates_dropped(tmp_path):
    from encoderfit.pretraining.corpus import CorpusArgs, load_corpus

    docs = toy_documents(200, 3)
    (tmp_path / "a.txt").write_text("\n\n".join(docs + docs[:20]), encoding="utf-8")  # 20 exact duplicates
    train, validation = load_corpus(CorpusArgs(sources=[str(tmp_path / "a.txt")], validation_size=0.1))
    assert len(train) + len(validation) == len(set(docs)) and not set(train) & set(validation)
    assert len(validation) == round(0.1 * len(set(docs)))


def test_masking_rate_and_80_10_10_replacement(mlm_run):
    from transformers import AutoTokenizer

    from encoderfit.tasks.mlm.task import MaskingCollator, pack

    tok = AutoTokenizer.from_pretrained(mlm_run / "model")
    blocks, _ = pack(toy_documents(400, 4), tok, 32, "toy")
    original = np.asarray(blocks["input_ids"])
    import torch

    torch.manual_seed(0)
    batch = MaskingCollator(tok, 0.3)([{"input_ids": row} for row in original.tolist()])
    ids, labels = batch["input_ids"].numpy(), batch["labels"].numpy()
    special = np.isin(original, tok.all_special_ids)
    chosen = labels != -100
    assert not (chosen & special).any()  # [CLS]/[SEP] are never masked
    assert (labels[chosen] == original[chosen]).all()
    assert chosen.sum() / (~special).sum() == pytest.approx(0.3, abs=0.01)
    as_mask = (ids[chosen] == tok.mask_token_id).mean()
    unchanged = (ids[chosen] == original[chosen]).mean()
    assert as_mask == pytest.approx(0.8, abs=0.02) and unchanged == pytest.approx(0.1 + 0.1 / len(tok), abs=0.02)
    assert (ids[~chosen] == original[~chosen]).all()


# ---------------------------------------------------------------- training and outputs


def test_pretraining_lowers_the_held_out_loss_below_the_unigram_baseline(mlm_run):
    metrics = json.loads((mlm_run / "metrics.json").read_text())
    history = json.loads((mlm_run / "logs" / "history.json").read_text())
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    train_losses = [h["loss"] for h in history if "loss" in h]
    assert train_losses[-1] < train_losses[0] - 1.0
    assert evals[-1] < evals[0] and metrics["validation"]["loss"] < metrics["baseline"]["loss"]
    assert metrics["validation"]["accuracy"] > metrics["baseline"]["accuracy"]
    assert metrics["validation"]["perplexity"] == pytest.approx(np.exp(metrics["validation"]["loss"]), rel=1e-6)
    assert metrics["train"]["tokens_seen"] == 40 * 16 * 32
    page = (mlm_run / "report.html").read_text()
    assert f'data-metric="validation.perplexity">{metrics["validation"]["perplexity"]:.1f}<' in page
    assert "[MASK]" in page and metrics["examples"]


def test_the_schedule_warms_up_holds_and_decays(mlm_run):
    history = json.loads((mlm_run / "logs" / "history.json").read_text())
    lr = {h["step"]: h["learning_rate"] for h in history if "learning_rate" in h}
    peak = 2e-3
    assert lr[1] < peak / 2  # warming up (6% of 40 steps)
    assert lr[5] == pytest.approx(peak) and lr[30] == pytest.approx(peak)  # stable
    assert lr[40] < peak / 5  # decayed over the last 10% of the steps


def test_the_model_loads_in_a_fill_mask_pipeline_and_fine_tunes(mlm_run, tmp_path):
    from transformers import AutoModelForMaskedLM, pipeline

    from conftest import make_rows

    fill = pipeline("fill-mask", model=str(mlm_run / "model"))
    guesses = fill("the chef baked garlic [MASK] today", top_k=3)
    assert len(guesses) == 3 and all("[MASK]" not in g["sequence"] for g in guesses)
    config = AutoModelForMaskedLM.from_pretrained(mlm_run / "model").config
    assert config.model_type == "modernbert" and config.classifier_pooling == "mean"  # MLM never trains [CLS]
    data = write_csv(tmp_path / "d.csv", make_rows(30, 0))
    run_cli("train", "--data.source", str(data), "--model.name_or_path", str(mlm_run / "model"), "--train.max_steps", "3",
            "--report.baseline", "false", "--output_dir", str(tmp_path / "ft"))
    config = json.loads((tmp_path / "ft" / "model" / "config.json").read_text())
    assert config["architectures"] == ["ModernBertForSequenceClassification"]


def test_other_stages_say_what_to_do_with_a_pretraining_run(mlm_run):
    for args in (["predict", str(mlm_run), "--input", "-"], ["eval", str(mlm_run)], ["export", str(mlm_run)]):
        proc = run_cli(*args, check=False, input="text\n")
        assert proc.returncode == 2 and "fill-mask" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    proc = run_cli("train", "--task", "mlm", "--data.source", "x.csv", check=False)
    assert proc.returncode == 2 and "mlm" in proc.stderr


@CPU_EXACT
@pytest.mark.parametrize("sig", ["SIGKILL", "SIGINT", "SIGTERM"])
def test_a_killed_pretraining_resumes_and_ends_where_an_uninterrupted_one_does(mlm_run, corpus_file, tmp_path, sig):
    import signal

    out = tmp_path / "run"
    args = pretrain_args(corpus_file, out, "--train.save_steps", "10")
    err = kill_after(args, tmp_path / ".run.partial", checkpoints=1, sig=getattr(signal, sig))
    if sig != "SIGKILL":  # Ctrl-C and SIGTERM say what was kept, without a traceback
        assert "checkpoints kept in" in err and "Traceback" not in err
    run_cli(*args)
    metrics, weights = load_run(out)
    reference, ref_weights = load_run(mlm_run)
    assert metrics["train"]["resumed_from"] is not None
    assert max_weight_difference(weights, ref_weights) <= 1e-5
    assert metrics["validation"]["loss"] == pytest.approx(reference["validation"]["loss"], rel=1e-5)


def test_tune_pretrain_searches_by_held_out_loss_on_the_same_masks_and_keeps_the_best_as_a_run(mlm_run, corpus_file, tmp_path):
    import optuna

    out, home = tmp_path / "tuned", tmp_path / "tuned-tune"
    home.mkdir()
    study = optuna.create_study(storage=f"sqlite:///{home / 'study.db'}", study_name="encoderfit", direction="minimize")
    study.enqueue_trial({"train.learning_rate": 2e-3, "mlm.masking_rate": 0.15})  # the mlm_run's rate of learning
    study.enqueue_trial({"train.learning_rate": 1e-7, "mlm.masking_rate": 0.3})  # far too small to learn: pruned
    space = json.dumps({"train.learning_rate": {"low": 1e-7, "high": 3e-3, "log": True}, "mlm.masking_rate": {"choices": [0.15, 0.3]}})
    args = pretrain_args(corpus_file, out, "--trials", "3", "--space", space, "--startup_trials", "1")
    run_cli("tune-pretrain", *args[1:])

    trials = optuna.load_study(study_name="encoderfit", storage=f"sqlite:///{home / 'study.db'}").trials
    assert [t.state.name for t in trials[:2]] == ["COMPLETE", "PRUNED"] and len(trials) == 3
    best = min((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    metrics, reference = (json.loads((run / "metrics.json").read_text()) for run in (out, mlm_run))
    assert metrics["train"]["tune"]["best_trial"] == best.number
    assert metrics["validation"]["loss"] == pytest.approx(best.value)
    # every trial is scored on the held-out blocks masked once at the config's rate (0.3), whatever rate it trained at
    assert metrics["validation"]["masked_tokens"] == reference["validation"]["masked_tokens"]
    assert (out / "trials.csv").is_file() and (out / "report.html").is_file() and not list(home.glob("trial-*"))
    from transformers import pipeline

    assert pipeline("fill-mask", model=str(out / "model"))("the chef baked [MASK] today")


def test_continued_pretraining_gives_a_headless_encoder_a_tied_head(tmp_path, corpus_file):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import AutoModelForMaskedLM, BertConfig, BertModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(toy_documents(200, 5), trainers.WordPieceTrainer(
        vocab_size=300, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False))
    tok.post_processor = processors.BertProcessing(("[SEP]", tok.token_to_id("[SEP]")), ("[CLS]", tok.token_to_id("[CLS]")))
    encoder = tmp_path / "encoder"
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                            mask_token="[MASK]").save_pretrained(encoder)
    BertModel(BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(encoder)  # no MLM head
    out = tmp_path / "adapted"
    proc = run_cli("pretrain", "--corpus.sources", f"[{corpus_file}]", "--model.size", "null", "--model.name_or_path", str(encoder),
                   "--tokenizer.kind", "reuse", "--mlm.block_size", "32", "--train.max_steps", "10", "--train.batch_size", "8",
                   "--train.learning_rate", "1e-3", "--output_dir", str(out))
    assert "no MLM head" in proc.stderr and "tied" in proc.stderr
    model = AutoModelForMaskedLM.from_pretrained(out / "model")
    assert model.cls.predictions.decoder.weight.data_ptr() == model.bert.embeddings.word_embeddings.weight.data_ptr()
    start = AutoModelForMaskedLM.from_pretrained(encoder)
    assert not np.allclose(model.bert.embeddings.word_embeddings.weight.detach(), start.bert.embeddings.word_embeddings.weight.detach())


# ---------------------------------------------------------------- bad input


def _gpt2(tmp_path: Path) -> Path:
    from transformers import GPT2Config

    path = tmp_path / "gpt2"
    GPT2Config(n_layer=1, n_embd=16, n_head=2).save_pretrained(path)
    return path


BAD = {
    "empty corpus": (lambda d: (d / "e.txt").write_text(""), ["--corpus.sources", "[{d}/e.txt]"], "0 usable document"),
    "smaller than one block": (lambda d: (d / "s.txt").write_text("\n\n".join(toy_documents(4, 6))),
                               ["--corpus.sources", "[{d}/s.txt]", "--mlm.block_size", "512"], "less than one block"),
    "binary file": (lambda d: (d / "b.txt").write_bytes(b"\x00\x01\x02" * 100), ["--corpus.sources", "[{d}/b.txt]"], "binary file"),
    "vocab too small": (None, ["--tokenizer.vocab_size", "128"], "too small"),
    "not an encoder": (_gpt2, ["--model.size", "null", "--model.config", "{d}/gpt2"], "no masked-language-model form"),
    "block above positions": (None, ["--model.overrides", '{"max_position_embeddings": 64}', "--mlm.block_size", "128"],
                              "above"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_pretraining_input_is_one_line_exit_2_and_leaves_nothing(case, corpus_file, tmp_path):
    make, extra, message = BAD[case]
    if make:
        make(tmp_path)
    out = tmp_path / "out"
    args = ["pretrain", "--corpus.sources", f"[{corpus_file}]", "--tokenizer.vocab_size", "384", "--mlm.block_size", "32",
            "--train.max_steps", "2", "--output_dir", str(out), *[a.replace("{d}", str(tmp_path)) for a in extra]]
    proc = run_cli(*args, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not out.exists() and not (tmp_path / ".out.partial").exists()


def test_two_processes_pretrain_with_one_writer(mlm_run, two_process_pretrain):
    """torchrun DDP over gloo: each process masks its half of every batch with its own generator, so the run is not
    bitwise the one-process run; it must train (loss falls), write once, and leave the same files."""
    from shared import files_under

    out, stderr = two_process_pretrain / "ddp", (two_process_pretrain / "stderr.txt").read_text()
    assert files_under(out) == files_under(mlm_run) and not list(two_process_pretrain.glob(".*"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["validation"]["loss"] < metrics["baseline"]["loss"] and metrics["train"]["steps"] == 40
    assert "processes: 2" in (out / "config.yaml").read_text() and stderr.count("pre-trained model written") == 1


def test_packing_asked_of_pretraining_is_said_not_dropped(corpus_file, tmp_path):
    # pre-training blocks are full already; `--train.packing true` is named in the log as unused, not ignored silently
    proc = run_cli(*pretrain_args(corpus_file, tmp_path / "run", "--train.max_steps", "2", "--train.packing", "true"))
    assert "train.packing: not used by pre-training" in proc.stderr, proc.stderr[-2000:]
