"""The train/test overlap warning compares what the model reads (issue 50): in a pair task the pair, since one premise
in many pairs is how entailment sets are made, and it says how many pairs overlap."""

from __future__ import annotations

from conftest import make_pair_rows, make_rows, write_csv
from encoderfit.core.args import DataArgs
from encoderfit.runs.splits import prepare

PAIR = ("text", "text_pair", "label")


def test_a_pair_set_warns_of_overlapping_pairs_not_of_shared_premises(tmp_path, caplog):
    train = make_pair_rows(60, seed=0)
    # every test premise is a training premise; only 3 test pairs are whole training pairs
    test = [dict(row) for row in train[:3]] + [{**row, "text_pair": other["text_pair"], "label": other["label"]}
                                               for row, other in zip(train[3:12], make_pair_rows(9, seed=1))]
    for name, rows in (("train", train), ("validation", make_pair_rows(12, seed=2)), ("test", test)):
        write_csv(tmp_path / f"{name}.csv", rows, PAIR)
    with caplog.at_level("WARNING"):
        prepare(DataArgs(source=str(tmp_path), text_pair_column="text_pair"))
    assert "3 of 12 test pairs (text, text_pair) also occur in the training split" in caplog.text
    assert "12 test pairs share their first text with a training pair" in caplog.text
    assert "test texts also occur" not in caplog.text


def test_a_single_text_set_still_warns_of_overlapping_texts(tmp_path, caplog):
    train = make_rows(20, seed=0)
    for name, rows in (("train", train), ("validation", make_rows(4, seed=1)), ("test", train[:5] + make_rows(3, seed=2))):
        write_csv(tmp_path / f"{name}.csv", rows)
    with caplog.at_level("WARNING"):
        prepare(DataArgs(source=str(tmp_path)))
    assert "5 of 14 test texts also occur in the training split; test metrics will be optimistic" in caplog.text
