"""Training data larger than memory (issue 52, item 3): a folder or glob of parts read as one memory-mapped split; the
checks that pass over a whole split (text checks, duplicates, overlap, fingerprints) read it in batches, never as Python
lists; the TF-IDF baseline is fitted on a capped sample that metrics.json, config.yaml and the report state."""

import json
import random
import tracemalloc

import pytest

from conftest import TOPICS, make_text
from running import run_cli


def rows(n: int, seed: int, width: int = 1):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = list(TOPICS)[i % len(TOPICS)]
        out.append({"text": " ".join(make_text(rng, label) for _ in range(width)) + f" #{seed}-{i}", "label": label})
    return out


def write_jsonl(path, items):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")
    return path


def write_parquet(path, items):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(items), path)
    return path


def test_a_folder_of_parts_and_a_glob_are_one_memory_mapped_split_in_name_order(tmp_path):
    from encoderfit.data.sources import load_source

    parts = [rows(30, seed) for seed in range(3)]
    for i, part in enumerate(parts):
        write_parquet(tmp_path / "data" / "train" / f"part-{i:05d}.parquet", part)
    write_jsonl(tmp_path / "data" / "validation" / "part-00000.jsonl", rows(10, 9))
    loaded = load_source(str(tmp_path / "data"))
    assert sorted(loaded) == ["train", "validation"]
    assert loaded["train"]["text"] == [r["text"] for part in parts for r in part]
    assert loaded["train"].cache_files, "the parts are read from the datasets cache (memory-mapped Arrow)"

    globbed = load_source(str(tmp_path / "data" / "train" / "*.parquet"))
    assert list(globbed) == ["train"] and globbed["train"]["text"] == loaded["train"]["text"]


@pytest.mark.parametrize("case", ["other columns", "no match"])
def test_a_bad_part_is_one_line_naming_it(tmp_path, case):
    data = tmp_path / "data"
    write_parquet(data / "train" / "part-0.parquet", rows(5, 0))
    if case == "other columns":
        write_parquet(data / "train" / "part-1.parquet", [{"body": r["text"], "label": r["label"]} for r in rows(5, 1)])
        source, message = str(data), "part-1.parquet: its columns"
    else:
        source, message = str(data / "train" / "*.csv"), "matches no"
    proc = run_cli("train", "--data.source", source, "--output_dir", str(tmp_path / "out"), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "out").exists()


def test_splitting_a_source_never_holds_its_texts_as_python_strings(tmp_path):
    """prepare() over ~12 MB of text in 20k rows (duplicates dropped, validation/test made, overlap and fingerprints computed):
    Python's own allocations (tracemalloc: str objects, lists; not Arrow's memory-mapped buffers) peak far below the
    text's size. Before, the text checks, the duplicate drop and the fingerprints each built the column as a list."""
    from encoderfit.core.args import DataArgs
    from encoderfit.runs.splits import prepare

    items = rows(20000, 0, width=12)
    items += items[:50]  # exact duplicates, dropped by their hashes
    for i in range(0, len(items), 5000):
        write_jsonl(tmp_path / "big" / "train" / f"part-{i // 5000:03d}.jsonl", items[i:i + 5000])
    size = sum(len(r["text"].encode()) for r in items)
    assert size > 10e6
    prepare(DataArgs(source=str(tmp_path / "big")))  # the datasets cache written once, outside the measurement
    tracemalloc.start()
    try:
        splits = prepare(DataArgs(source=str(tmp_path / "big")))
        splits.fingerprints()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(splits.train) + len(splits.validation) + len(splits.test) == 20000
    assert peak < size / 3, f"peak of Python allocations {peak / 1e6:.1f} MB for {size / 1e6:.1f} MB of text"


def test_dedupe_and_overlap_by_hashes_give_what_sets_of_texts_gave(tmp_path, caplog):
    from datasets import Dataset

    from encoderfit.runs.splits import _dedupe, warn_overlap

    texts = ["a", "b", "a", "c", "b", "d"]
    kept = _dedupe(Dataset.from_dict({"text": texts, "labels": list(range(6))}))
    assert kept["text"] == ["a", "b", "c", "d"] and kept["labels"] == [0, 1, 3, 5]  # the first of each, in order
    pairs = Dataset.from_dict({"text": ["p", "p", "q"], "text_pair": ["x", "y", "x"]})
    assert _dedupe(pairs)["text_pair"] == ["x", "y", "x"]
    train = Dataset.from_dict({"text": ["p", "p", "q"], "text_pair": ["x", "y", "x"]})
    test = Dataset.from_dict({"text": ["p", "p", "r"], "text_pair": ["x", "z", "x"]})
    assert warn_overlap(train, test) == 1
    assert "1 of 3 test pairs" in caplog.text and "(2 test pairs share their first text" in caplog.text


def test_repeated_rows_are_np_unique_s_and_tell_apart_digests_that_share_a_prefix():
    """repeated_rows sorts 8-byte prefixes (17 bytes a row, not np.unique's ~60 on 16-byte strings): the rows it drops
    are exactly those np.unique(return_index=True) does not keep, and two digests with one prefix stay apart."""
    import hashlib

    import numpy as np

    from encoderfit.runs.splits import repeated_rows

    rng = np.random.default_rng(0)
    for n in (0, 1, 2, 10, 5000):
        values = rng.integers(0, max(1, n // 3), n)
        digests = np.array([hashlib.blake2b(str(v).encode(), digest_size=16).digest() for v in values], dtype="S16")
        _, first = np.unique(digests, return_index=True)
        assert repeated_rows(digests).tolist() == np.setdiff1d(np.arange(n), first).tolist()
    one, other = b"A" * 8 + b"x" * 8, b"A" * 8 + b"y" * 8  # a 64-bit prefix collision
    assert repeated_rows(np.array([one, other, one, b"C" * 16, other], dtype="S16")).tolist() == [2, 4]


def test_the_baseline_and_label_noise_pass_read_capped_samples_that_metrics_config_and_report_state(toy_csv, tiny_model, tmp_path):
    out = tmp_path / "capped"
    run_cli("train", "--data.source", str(toy_csv), "--model.name_or_path", str(tiny_model), "--output_dir", str(out),
            "--train.epochs", "1", "--train.batch_size", "16", "--report.baseline_max_rows", "40",
            "--report.review_max_rows", "30")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["baseline"]["train_examples"] == 40 and metrics["baseline"]["max_rows"] == 40
    assert metrics["baseline"]["of"] > 40  # every training example, of which the baseline saw 40
    assert metrics["baseline"]["n"] == metrics["test"]["n"]  # scored on the whole test split
    config = (out / "config.yaml").read_text()
    assert "baseline_max_rows: 40" in config and "review_max_rows: 30" in config
    noise = metrics["label_noise"]
    assert noise["of"] == 30 and noise["max_rows"] == 30 and noise["train_examples"] == metrics["baseline"]["of"]
    assert f"seeded sample of 40 of the {metrics['baseline']['of']:,} training examples" in (out / "report.html").read_text()


def test_baseline_max_rows_is_checked():
    from encoderfit.core.args import ReportArgs
    from encoderfit.core.errors import UserError

    with pytest.raises(UserError, match="report.baseline_max_rows must be at least 2"):
        ReportArgs(baseline_max_rows=1)
    with pytest.raises(UserError, match="report.review_max_rows must be at least 1"):
        ReportArgs(review_max_rows=0)
    assert ReportArgs().baseline_max_rows == 200_000 and ReportArgs(baseline_max_rows=None).baseline_max_rows is None
