"""Length-aware batching, input order, and the Predictor API's shapes."""

import random

import numpy as np

from encoderfit.runs.predictor import Predictor, length_batches
from encoderfit.runs.inputs import read_inputs


def test_length_batches_cover_every_index_once_within_budget():
    rng = random.Random(0)
    lengths = [rng.randint(1, 300) for _ in range(500)]
    batches = length_batches(lengths, max_tokens=1024, max_batch_size=64)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(500))
    for batch in batches:
        assert len(batch) <= 64
        assert len(batch) == 1 or max(lengths[i] for i in batch) * len(batch) <= 1024
        assert min(lengths[i] for i in batch) >= 0.5 * max(lengths[i] for i in batch)  # at most half padding
    longest = [max(lengths[i] for i in b) for b in batches]
    assert longest == sorted(longest, reverse=True)


def tolerance(predictor) -> float:
    """How far one text's logits may move with the batch it is in: float noise on a CPU; on a GPU, bf16 autocast (8
    mantissa bits) and TF32 products whose kernels depend on the batch's shape."""
    return 1e-4 if str(predictor.device).startswith("cpu") else 5e-2


def test_shuffled_mixed_lengths_come_back_in_input_order(trained_run):
    rng = random.Random(1)
    words = "goal team chef oven cloud server the a of and very".split()
    texts = [" ".join(rng.choices(words, k=rng.randint(1, 120))) for _ in range(60)]
    clf = Predictor.from_pretrained(trained_run, max_tokens=256)
    batched = clf.logits(texts)
    one_by_one = np.stack([clf.logits([t])[0] for t in texts])
    np.testing.assert_allclose(batched, one_by_one, atol=tolerance(clf))


def test_chunked_logits_with_a_progress_bar_equal_one_pass_and_count_every_text(trained_run, capsys):
    texts = [f"the chef baked {'bread ' * (i % 7)}loaf {i}" for i in range(23)]
    whole = Predictor.from_pretrained(trained_run).logits(texts)
    chunked = Predictor.from_pretrained(trained_run, chunk_size=5)
    np.testing.assert_allclose(chunked.logits(texts, progress="labelling"), whole, atol=tolerance(chunked))
    bar = capsys.readouterr().err
    assert "labelling" in bar and "23/23" in bar
    chunked.logits(texts[:4], progress="labelling")  # within one chunk: no bar
    assert "labelling" not in capsys.readouterr().err


def test_single_text_gives_a_dict_and_a_list_gives_a_list(trained_run):
    clf = Predictor.from_pretrained(trained_run)
    one = clf.predict("the chef baked bread")
    assert set(one) == {"label", "score", "probabilities"} and one["label"] in clf.labels
    many = clf.predict(["a", "b c"])
    assert isinstance(many, list) and len(many) == 2
    probs = clf.predict_proba(["x", "y y", "z z z"])
    assert probs.shape == (3, len(clf.labels))
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert clf.predict([]) == []


def test_read_inputs_from_table_column(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"body": "first"}\n{"body": "second"}\n')
    texts, pairs = read_inputs(str(tmp_path / "in.jsonl"), "body")
    assert texts == ["first", "second"] and pairs is None


def test_predict_missing_input_column_is_a_clear_error(trained_run, tmp_path, capsys):
    from encoderfit import cli

    (tmp_path / "in.csv").write_text("body\nhello\n")
    assert cli.main(["predict", str(trained_run), "--input", str(tmp_path / "in.csv")]) == 2
    err = capsys.readouterr().err
    assert "no column 'text'" in err and "['body']" in err
