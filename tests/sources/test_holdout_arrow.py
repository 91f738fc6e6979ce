"""The stratified holdout reads its strata through Arrow and draws datasets' own stratified indices: the same split
as datasets' `train_test_split(stratify_by_column=...)`, whose row-at-a-time read of the column it avoids."""

import random

import pytest
from datasets import ClassLabel, Dataset

from encoderfit.data.arrow import as_array, column_values, take_rows
from encoderfit.data.sources import stratified_holdout


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


def test_arrow_column_takes_a_selection_in_one_vectorised_read(tmp_path):
    """A split is a selection (an indices mapping over the source's Arrow file): its column comes back in the split's
    order, from a file-backed dataset and a nested selection too, without datasets' row-by-row gather."""
    from datasets import load_from_disk

    from encoderfit.data.arrow import arrow_column

    Dataset.from_dict({"a": list(range(100)), "s": [f"r{i}" for i in range(100)]}).save_to_disk(tmp_path / "ds")
    ds = load_from_disk(str(tmp_path / "ds"))
    picked = ds.shuffle(seed=3).select(range(10, 60)).select([5, 0, 49, 7])
    expected = [row["a"] for row in picked]
    assert arrow_column(picked, "a").to_pylist() == expected
    assert arrow_column(picked, "s").to_pylist() == [f"r{i}" for i in expected]
    assert arrow_column(ds, "a").to_pylist() == list(range(100))  # no selection: the column itself
    assert column_values(picked, "a").tolist() == expected


def test_arrow_column_of_a_large_selection_holds_no_per_row_objects():
    """datasets' own read of a selection's column builds one slice object per row (~500 bytes each: the per-row
    memory growth of train at scale, docs/scaling.md); the column read here allocates nothing per row in Python."""
    import tracemalloc

    from encoderfit.data.arrow import arrow_column

    n = 200_000
    picked = Dataset.from_dict({"a": list(range(n))}).select(range(n - 1, -1, -1))
    tracemalloc.start()
    try:
        column = arrow_column(picked, "a")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert column[0].as_py() == n - 1 and column[n - 1].as_py() == 0
    assert peak < 1 << 20, f"{peak / n:.0f} bytes of Python objects per row"


def test_a_shuffled_split_is_tokenised_and_hashed_in_file_order_with_its_own_order_kept(tmp_path, tiny_model):
    """tokenize and row_hashes read a shuffled selection in the order its rows lie in the file (sequential reads) and
    give back exactly what reading it in its own order gives."""
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from encoderfit.data.arrow import file_order
    from encoderfit.data.sources import tokenize
    from encoderfit.runs.splits import row_hashes

    texts = [f"row {i} " + "word " * (i % 13) for i in range(300)]
    Dataset.from_dict({"text": texts, "labels": [i % 3 for i in range(300)]}).save_to_disk(tmp_path / "ds")
    split = load_from_disk(str(tmp_path / "ds")).shuffle(seed=5).select(range(40, 260))
    order = file_order(split)
    assert order is not None and sorted(order.tolist()) == list(range(len(split)))
    assert file_order(split.select(order)) is None  # already in file order
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    got = tokenize(split, tokenizer, 16)
    wanted = [tokenizer(t, truncation=True, max_length=16)["input_ids"] for t in split["text"]]
    assert got["input_ids"] == wanted and got["labels"] == split["labels"]
    direct = [hashlib_digest(row) for row in split["text"]]
    assert row_hashes(split, ["text"]).tolist() == direct


def hashlib_digest(text):
    import hashlib
    import json

    return hashlib.blake2b(json.dumps((text,), ensure_ascii=False).encode(), digest_size=16).digest()


def test_text_column_reads_a_split_in_file_order_and_returns_it_in_the_splits(tmp_path):
    """Validation, test and review texts are read in the file's order and put back: the same list as datasets' own
    row-by-row read, through nested shuffled selections, with missing values, and for a column that is not text."""
    from datasets import load_from_disk

    from encoderfit.data.arrow import text_column

    texts = [None if i % 17 == 0 else f"text {i} é" for i in range(300)]
    Dataset.from_dict({"text": texts, "n": list(range(300))}).save_to_disk(tmp_path / "ds")
    ds = load_from_disk(str(tmp_path / "ds"))
    picked = ds.shuffle(seed=5).select(range(20, 280)).shuffle(seed=6).select(range(200))
    assert text_column(picked, "text") == list(picked["text"]) != sorted(picked["text"], key=str)
    assert text_column(picked, "n") == list(picked["n"])  # not strings: read as datasets reads it
    assert text_column(ds, "text") == texts


def test_rows_of_a_chunked_column_are_taken_without_copying_the_column():
    """pyarrow's ChunkedArray.take joins every chunk into one new array first: a split of a large source then copied
    its whole text column into memory (issue 52: 1 GiB at a 1 GB source). take_rows gives the same rows, allocating
    about what it returns."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    column = pa.chunked_array([pa.array([None if i % 97 == 0 else f"{'x' * 200}{i}" for i in range(j * 2000, (j + 1) * 2000)])
                               for j in range(50)])  # 100k rows, 20 MB, nulls included
    rng = np.random.default_rng(0)
    for rows in (rng.choice(len(column), 3000, replace=False), np.sort(rng.choice(len(column), 3000)), np.array([7, 7, 99_999, 0]),
                 np.array([], dtype=np.int64)):
        assert take_rows(column, rows).to_pylist() == column.take(pa.array(rows, pa.int64())).to_pylist()
    with pytest.raises(IndexError, match="out of bounds"):
        take_rows(column, [len(column)])
    rows = rng.choice(len(column), 3000, replace=False)
    grown, kept = {}, []
    for name, take in (("pyarrow", lambda pool: pc.take(column, pa.array(rows), memory_pool=pool)),
                       ("take_rows", lambda pool: take_rows(column, rows, memory_pool=pool))):
        pool = pa.proxy_memory_pool(pa.default_memory_pool())  # its own high-water mark
        kept.append((pool, take(pool)))
        grown[name] = pool.max_memory()
    assert grown["pyarrow"] > 0.9 * column.nbytes  # what was wrong: the whole column copied
    assert grown["take_rows"] < 0.1 * column.nbytes, grown


def test_select_rows_is_datasets_select_without_a_python_object_per_row(tmp_path, monkeypatch):
    """select_rows gives the rows, order, format and nested mapping of datasets' `select`; a contiguous run stays a
    slice; from MAPPED_ROWS rows the indices are memory-mapped from the cache folder (file-backed, not the process's
    own memory) and a re-run reuses that file; and it allocates no Python object per row, where datasets' select
    turns the positions into a list of numpy scalars (~32 bytes a row, measured here: a 1 GB source's split)."""
    import tracemalloc

    import numpy as np
    from datasets import load_from_disk

    import encoderfit.data.arrow as arrow

    Dataset.from_dict({"a": list(range(1000)), "s": [f"r{i}" for i in range(1000)]}).save_to_disk(tmp_path / "ds")
    ds = load_from_disk(str(tmp_path / "ds"))
    rng = np.random.default_rng(0)
    for base in (ds, ds.shuffle(seed=1), ds.select(range(100, 900)), ds.with_format("numpy", columns=["a"])):
        rows = rng.permutation(len(base))[:300]
        mine, theirs = arrow.select_rows(base, rows), base.select(rows.tolist())
        assert mine.format == theirs.format
        assert {k: np.asarray(v).tolist() for k, v in mine[:].items()} == {k: np.asarray(v).tolist() for k, v in theirs[:].items()}
        assert mine._fingerprint != base._fingerprint and arrow.select_rows(base, rows)._fingerprint == mine._fingerprint
    assert arrow.select_rows(ds, np.arange(5, 50))._indices is None  # a slice, as datasets makes it
    with pytest.raises(IndexError):
        arrow.select_rows(ds, np.array([0, 1000]))
    assert arrow.sample_rows(ds, 40, 3)["s"] == ds.shuffle(seed=3).select(range(40))["s"]

    monkeypatch.setattr(arrow, "MAPPED_ROWS", 100)
    mapped = arrow.select_rows(ds.shuffle(seed=2), rng.permutation(1000)[:500])
    files = [f["filename"] for f in mapped.cache_files if "indices-" in f["filename"]]
    assert len(files) == 1 and type(mapped._indices).__name__ == "MemoryMappedTable"
    assert mapped["s"] == [f"r{i}" for i in mapped["a"]] and len(list((tmp_path / "ds").glob("*.tmp"))) == 0

    n = 200_000
    big = Dataset.from_dict({"a": np.arange(n)}).select(range(n - 1, -1, -1))
    rows = rng.permutation(n)
    peaks = {}
    for name, select in (("select_rows", lambda: arrow.select_rows(big, rows)), ("datasets", lambda: big.select(rows))):
        tracemalloc.start()
        try:
            picked = select()
            peaks[name] = tracemalloc.get_traced_memory()[1] / n
        finally:
            tracemalloc.stop()
        assert picked["a"][:3] == (n - 1 - rows[:3]).tolist()
    assert peaks["select_rows"] < 1 and peaks["datasets"] > 10, peaks
