"""The stratified holdout reads its strata through Arrow and draws datasets' own stratified indices: the same split
as datasets' `train_test_split(stratify_by_column=...)`, whose row-at-a-time read of the column it avoids."""

import random

import pytest
from datasets import ClassLabel, Dataset

from encoderfit.data.sources import as_array, column_values, stratified_holdout


@pytest.mark.parametrize("classes,size", [(2, 0.1), (3, 0.3), (8, 0.05), (20, 0.5)])
def test_holdout_is_datasets_stratified_split(classes, size):
    rng = random.Random(classes)
    labels = [i % classes for i in range(2 * classes)] + [rng.randrange(classes) for _ in range(400)]
    ds = Dataset.from_dict({"text": [f"t{i}" for i in range(len(labels))], "labels": labels})
    keep, held = stratified_holdout(ds, size, 7, column_values(ds, "labels"), [str(c) for c in range(classes)], None)
    strat = ds.cast_column("labels", ClassLabel(num_classes=classes))
    expected = strat.train_test_split(test_size=size, stratify_by_column="labels", seed=7)
    assert list(held["text"]) == list(expected["test"]["text"])
    assert sorted(keep["text"]) == sorted(expected["train"]["text"])
    assert set(keep["labels"]) == set(range(classes))  # every class keeps an example


def test_as_array_reads_numbers_through_arrow_and_falls_back_otherwise():
    ds = Dataset.from_dict({"a": [3, 1, 2], "b": [0.5, None, 1.0], "c": [[1, 0], [0, 1], [1, 1]]}).select([2, 0])
    assert as_array(ds["a"]).tolist() == [2, 3]
    assert as_array(ds["b"]).tolist() == [1.0, 0.5]
    assert as_array(ds["c"]).shape == (2, 2)
