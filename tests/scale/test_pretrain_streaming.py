"""Pre-training corpora larger than memory (pretraining/streaming.py): documents read a line at a time, deduplicated
in fixed memory, held out by hash with a cap, packed into memory-mapped Arrow blocks exactly as the in-memory `pack`
cuts them; a streamed run trains, loads as fill-mask, and a killed one resumes from its streamed files."""

from __future__ import annotations

import gzip
import json
import logging
import signal
from pathlib import Path

import numpy as np
import pytest

from conftest import load_run, max_weight_difference, run_cli
from shared import kill_after, pretrain_args, toy_documents

from encoderfit.core.errors import UserError
from encoderfit.pretraining import streaming
from encoderfit.pretraining.corpus import CorpusArgs, load_corpus


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    """Three files of the toy corpus: plain, CRLF with whitespace-only lines, gzip; a repeated and a short document."""
    folder = tmp_path_factory.mktemp("stream-corpus")
    docs = toy_documents(420, 1)
    (folder / "a.txt").write_text("\n\n".join(docs[:140] + [docs[0], "too short"]) + "\n", encoding="utf-8")
    (folder / "b.txt").write_bytes(("\r\n  \r\n".join(docs[140:280]) + "\r\n\r\n\r\n").encode("utf-8"))
    (folder / "sub").mkdir()
    with gzip.open(folder / "sub" / "c.txt.gz", "wt", encoding="utf-8") as handle:
        handle.write("\n\n".join(docs[280:]))
    return folder


@pytest.fixture(scope="module")
def streamed_run(tmp_path_factory, corpus_dir) -> Path:
    out = tmp_path_factory.mktemp("streamed") / "run"
    run_cli(*pretrain_args(corpus_dir, out, "--corpus.streaming", "true", "--train.save_steps", "10"))
    return out


@pytest.mark.parametrize("documents", ["paragraphs", "lines"])
def test_streamed_documents_are_the_in_memory_ones(corpus_dir, tmp_path, documents):
    args = CorpusArgs(sources=[str(corpus_dir)], documents=documents, streaming=True)
    train, validation = load_corpus(args)
    streamed = streaming.read_documents(args, streaming.plan(args).files, tmp_path)
    import pyarrow as pa

    with pa.memory_map(str(streamed.documents_file)) as source:
        streamed_train = pa.ipc.open_stream(source).read_all().column("text").to_pylist()
    assert sorted(streamed_train + streamed.validation_docs) == sorted(train + validation)  # same split, dedup, filter
    assert streamed.stats["duplicates"] >= 1 and streamed.stats["too_short"] >= 1
    assert streamed.stats["documents_read"] == len(train) + len(validation) + streamed.stats["duplicates"] + streamed.stats["too_short"]


def test_blocks_are_cut_as_pack_cuts_the_same_stream(corpus_dir, tmp_path, streamed_run):
    from datasets import Dataset
    from transformers import AutoTokenizer

    from encoderfit.tasks.mlm.task import pack, unigram_baseline

    tok = AutoTokenizer.from_pretrained(str(streamed_run / "model"))
    args = CorpusArgs(sources=[str(corpus_dir)], streaming=True)
    streamed = streaming.read_documents(args, streaming.plan(args).files, tmp_path)
    streaming.write_blocks(streamed, tok, 32, "test")
    docs = Dataset.from_file(str(streamed.documents_file))["text"]
    expected, tokens = pack(list(docs), tok, 32, "test")
    blocks = Dataset.from_file(str(streamed.blocks_file))
    assert streamed.tokens == tokens and len(blocks) == len(expected)
    assert np.array_equal(np.asarray(blocks["input_ids"]), np.asarray(expected["input_ids"]))
    masked = Dataset.from_dict({"labels": np.asarray(expected["input_ids"])[:4]})
    assert unigram_baseline(blocks, masked, len(tok), streamed.counts) == unigram_baseline(expected, masked, len(tok))


def test_a_streamed_run_trains_loads_as_fill_mask_and_says_what_it_read(streamed_run):
    from transformers import pipeline

    metrics = json.loads((streamed_run / "metrics.json").read_text())
    corpus = metrics["corpus"]["streamed"]
    assert corpus["files"] == 3 and corpus["duplicates"] >= 1 and corpus["too_short"] >= 1
    assert corpus["duplicate_filter"]["false_positive_rate"] < 1e-9
    assert metrics["corpus"]["documents"]["train"] == corpus["train"]
    assert metrics["validation"]["loss"] < metrics["baseline"]["loss"]
    assert not (streamed_run / streaming.FOLDER).exists()  # the Arrow files are not part of the run
    guesses = pipeline("fill-mask", model=str(streamed_run / "model"))("the chef baked garlic [MASK] today", top_k=2)
    assert len(guesses) == 2


def test_the_held_out_set_and_the_tokenizer_sample_are_capped_and_said(corpus_dir, tmp_path, caplog):
    args = CorpusArgs(sources=[str(corpus_dir)], validation_size=0.3, max_validation_documents=7, tokenizer_sample=25,
                      streaming=True)
    with caplog.at_level(logging.INFO, logger="encoderfit"):
        streamed = streaming.read_documents(args, streaming.plan(args).files, tmp_path)
    assert len(streamed.validation_docs) == 7 and streamed.stats["validation_cap_reached"]
    assert len(streamed.sample) == 25 and streamed.stats["tokenizer_sample"] == 25
    assert "capped at corpus.max_validation_documents 7" in caplog.text
    # the in-memory path holds the same cap
    assert len(load_corpus(args)[1]) == 7


def test_auto_streams_only_large_file_sources(corpus_dir, monkeypatch):
    reading = streaming.plan(CorpusArgs(sources=[str(corpus_dir)]))
    assert reading.files is None and "read in memory" in reading.why and "at most 1.07 GB" in reading.why
    monkeypatch.setattr(streaming, "STREAM_ABOVE_BYTES", 1000)
    reading = streaming.plan(CorpusArgs(sources=[str(corpus_dir)]))
    assert len(reading.files) == 3 and "streamed (corpus.streaming auto" in reading.why
    reading = streaming.plan(CorpusArgs(sources=[str(corpus_dir), "sotu"]))
    assert reading.files is None and "sotu is held whole" in reading.why  # a built-in corpus
    assert streaming.plan(CorpusArgs(sources=[str(corpus_dir)], streaming=False)).files is None
    with pytest.raises(UserError, match="sotu is not a text file"):
        streaming.plan(CorpusArgs(sources=["sotu"], streaming=True))


def test_bloom_filter_has_no_false_negatives_and_a_small_false_positive_rate():
    import hashlib

    bloom = streaming.BloomFilter(size_bytes=1 << 16)
    digests = [hashlib.blake2b(str(i).encode(), digest_size=20).digest() for i in range(20000)]
    assert sum(bloom.seen(d) for d in digests) < 20  # first sight: a few false positives at most (rate ~1e-3)
    assert all(bloom.seen(d) for d in digests)  # second sight: every one is found
    assert 1e-5 < bloom.false_positive_rate() < 1e-2


def test_bad_text_in_a_streamed_file_is_one_line_and_leaves_nothing(corpus_dir, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.txt").write_text((corpus_dir / "a.txt").read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "b.txt").write_bytes(b"a fine first line of text here\n\n" * 3 + b"caf\xe9 au lait and more text\n")
    out = tmp_path / "run"
    proc = run_cli(*pretrain_args(folder, out, "--corpus.streaming", "true"), check=False)
    error = proc.stderr.strip().splitlines()[-1]  # found while reading: what the run said before it is kept
    assert proc.returncode == 2 and error.startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    assert f"{folder / 'b.txt'}: line 7: byte 0xe9 is not valid UTF-8" in error
    assert not out.exists() and not (tmp_path / ".run.partial").exists()


@pytest.mark.slow  # three more pre-training runs; `make test-slow`
def test_a_killed_streamed_run_resumes_from_its_streamed_files(streamed_run, corpus_dir, tmp_path):
    out = tmp_path / "run"
    args = pretrain_args(corpus_dir, out, "--corpus.streaming", "true", "--train.save_steps", "10")
    kill_after(args, tmp_path / ".run.partial", checkpoints=1, sig=signal.SIGKILL)
    proc = run_cli(*args)
    assert "read back" in proc.stderr
    metrics, weights = load_run(out)
    reference, ref_weights = load_run(streamed_run)
    assert metrics["train"]["resumed_from"] is not None
    assert max_weight_difference(weights, ref_weights) <= 1e-5
    assert metrics["validation"]["loss"] == pytest.approx(reference["validation"]["loss"], rel=1e-5)


@pytest.mark.slow  # three more pre-training runs; `make test-slow`
def test_tune_pretrain_streams_too_and_scores_the_same_held_out_blocks(streamed_run, corpus_dir, tmp_path):
    out = tmp_path / "tuned"
    args = pretrain_args(corpus_dir, out, "--corpus.streaming", "true", "--trials", "1")
    proc = run_cli("tune-pretrain", *args[1:])
    assert "corpus: streamed (corpus.streaming true)" in proc.stderr
    metrics, reference = (json.loads((run / "metrics.json").read_text()) for run in (out, streamed_run))
    assert metrics["corpus"]["streamed"]["train"] == reference["corpus"]["streamed"]["train"]
    assert metrics["validation"]["masked_tokens"] == reference["validation"]["masked_tokens"]
    assert not (tmp_path / "tuned-tune" / streaming.FOLDER).exists()


def test_max_documents_counts_the_held_out_ones_and_stops_reading(corpus_dir, tmp_path):
    args = CorpusArgs(sources=[str(corpus_dir)], max_documents=50, validation_size=0.2, streaming=True)
    streamed = streaming.read_documents(args, streaming.plan(args).files, tmp_path)
    assert streamed.stats["train"] + len(streamed.validation_docs) == 50 and len(streamed.validation_docs) > 0
