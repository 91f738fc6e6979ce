"""Streaming `encoderfit predict`: chunked reading, parts and resume after SIGKILL, bad rows, folders and globs."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import read_jsonl
from failing import cli_fails
from conftest import run_cli
from shared import texts, write_texts_jsonl



def test_killed_predict_continues_to_byte_identical_output(trained_run, tmp_path):
    source = write_texts_jsonl(tmp_path / "big.jsonl", texts(3000))
    whole = tmp_path / "whole.jsonl"
    run_cli("predict", str(trained_run), "--input", str(source), "--output", str(whole), "--chunk_rows", "100")
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    args = [sys.executable, "-m", "encoderfit", "predict", str(trained_run), "--input", str(source), "--output",
            str(out), "--chunk_rows", "100"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    parts = Path(f"{out}.parts")
    deadline = time.time() + 300
    while not (parts / "part-00009.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(parts.glob("part-*.json"))
    assert not out.exists() and 10 <= len(done) < 30, "killed mid-way, with some parts published"
    again = subprocess.run(args, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert out.read_bytes() == whole.read_bytes() and not parts.exists()
    rows = read_jsonl(out.read_text())
    assert [r["text"] for r in rows] == texts(3000), "every row once, in input order"


def test_a_folder_of_mixed_files_keeps_order_into_csv_and_parquet(trained_run, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    values = texts(250, seed=3)
    folder = tmp_path / "in"
    folder.mkdir()
    write_texts_jsonl(folder / "a.jsonl", values[:100])
    with open(folder / "b.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["text", "other"], *[[t, "x"] for t in values[100:200]]])
    pq.write_table(pa.table({"text": values[200:]}), folder / "c.parquet")
    run_cli("predict", str(trained_run), "--input", str(folder), "--output", str(tmp_path / "o.jsonl"), "--chunk_rows", "64")
    rows = read_jsonl((tmp_path / "o.jsonl").read_text())
    assert [r["text"] for r in rows] == values
    run_cli("predict", str(trained_run), "--input", str(folder / "*.*"), "--output", str(tmp_path / "o.csv"))
    with open(tmp_path / "o.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [r["text"] for r in table] == values and [r["label"] for r in table] == [r["label"] for r in rows]
    run_cli("predict", str(trained_run), "--input", f"file://{folder}", "--output", str(tmp_path / "o.parquet"))
    got = pq.read_table(tmp_path / "o.parquet")
    assert got.column("text").to_pylist() == values and got.column("label").to_pylist() == [r["label"] for r in rows]
    # the same predictions as the whole-file path (stdout) on one of the files (to float noise: other batches)
    whole = read_jsonl(run_cli("predict", str(trained_run), "--input", str(folder / "a.jsonl")).stdout)
    assert [(r["text"], r["label"]) for r in whole] == [(r["text"], r["label"]) for r in rows[:100]]
    assert all(abs(a["score"] - b["score"]) < 1e-5 for a, b in zip(whole, rows))


def test_bad_and_empty_rows_are_written_with_their_reason_or_stop_with_one_line(trained_run, tmp_path):
    source = tmp_path / "in.jsonl"
    lines = [json.dumps({"text": t}) for t in texts(40)]
    lines[12] = '{"text": "broken'
    lines[20] = json.dumps({"text": 7})
    lines[30] = json.dumps({"text": "   "})
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    line = cli_fails("predict", str(trained_run), "--input", str(source), "--output", str(out), "--chunk_rows", "8")
    assert f"{source}: line 13: not valid JSON" in line and "--on_error skip" in line and not out.exists()
    run_cli("predict", str(trained_run), "--input", str(source), "--output", str(out), "--on_error", "skip", "--chunk_rows", "8")
    rows = read_jsonl(out.read_text())
    assert len(rows) == 40
    assert rows[12]["error"].startswith("not valid JSON") and "label" not in rows[12]
    assert "holds int (7), not text" in rows[20]["error"] and rows[20]["text"] is None
    assert rows[30] == {"text": "   ", "error": "empty text: nothing to label"}
    assert all("label" in r for i, r in enumerate(rows) if i not in (12, 20, 30))
    run_cli("predict", str(trained_run), "--input", str(source), "--output", str(tmp_path / "o.csv"), "--on_error", "skip")
    with open(tmp_path / "o.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 40 and table[30]["error"] == "empty text: nothing to label" and table[0]["error"] == ""


def test_another_model_or_input_is_refused_until_overwrite(trained_run, pair_run, tmp_path):
    source = write_texts_jsonl(tmp_path / "in.jsonl", texts(30))
    out = tmp_path / "out.jsonl"
    parts = Path(f"{out}.parts")
    parts.mkdir()
    (parts / "manifest.json").write_text(json.dumps({"input": [], "model": "0" * 64, "options": {}}))
    line = cli_fails("predict", str(trained_run), "--input", str(source), "--output", str(out))
    assert "interrupted run with another input" in line and "--overwrite" in line and not out.exists()
    run_cli("predict", str(trained_run), "--input", str(source), "--output", str(out), "--overwrite", "true")
    assert len(read_jsonl(out.read_text())) == 30 and not parts.exists()


def test_unwritable_output_fails_before_the_model_loads(trained_run, tmp_path):
    source = write_texts_jsonl(tmp_path / "in.jsonl", texts(5))
    (tmp_path / "file").write_text("x")
    line = cli_fails("predict", str(trained_run), "--input", str(source), "--output", str(tmp_path / "file" / "o.jsonl"))
    assert "--output" in line
    assert "no file matches" in cli_fails("predict", str(trained_run), "--input", str(tmp_path / "*.csv"),
                                          "--output", str(tmp_path / "o.jsonl"))
    assert "--chunk_rows must be at least 1" in cli_fails("predict", str(trained_run), "--input", str(source),
                                                          "--output", str(tmp_path / "o.jsonl"), "--chunk_rows", "0")


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_streamed_output_equals_the_whole_file_format(trained_run, tmp_path, fmt):
    source = write_texts_jsonl(tmp_path / "in.jsonl", texts(50))
    out = tmp_path / f"o.{fmt}"
    run_cli("predict", str(trained_run), "--input", str(source), "--output", str(out))  # one chunk, as the whole file
    stdout = run_cli("predict", str(trained_run), "--input", str(source)).stdout
    if fmt == "jsonl":
        assert out.read_text() == stdout
    else:
        header = out.read_text().splitlines()[0]
        assert header.startswith("text,label") and "error" not in header


def test_a_file_of_no_rows_is_one_line_and_writes_nothing(trained_run, tmp_path):
    (tmp_path / "blank.jsonl").write_text("\n\n")
    out = tmp_path / "o.jsonl"
    assert "no rows" in cli_fails("predict", str(trained_run), "--input", str(tmp_path / "blank.jsonl"), "--output", str(out))
    assert not out.exists() and not Path(f"{out}.parts").exists()
