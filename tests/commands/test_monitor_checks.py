"""`monitor` on every task without a traceback, its options refused before any work, and the embedding test on the
rows that hold texts (issue 50, items 13, 15 and 18); `serve --max_batch_tokens 0` refused as -3 is."""

import json
import sqlite3
import subprocess
import sys

import pytest

from conftest import (free_port, make_ner_rows, make_pair_rows, make_qa_rows, make_rows, make_search_rows, run_cli, write_csv,
                      write_jsonl)


def monitor(run, db, out, *extra, check_rc=(0, 3)):
    proc = run_cli("monitor", str(run), "--log", str(db), "--output", str(out), "--min_rows", "20", "--permutations", "100",
                   *extra, check=False)
    assert proc.returncode in check_rc and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def logged_traffic(trained_run, tmp_path_factory):
    """185 logged predictions of the toy run: 180 with their texts, then 5 from a job run without --log_texts."""
    home = tmp_path_factory.mktemp("monitor-checks")
    db = home / "log.db"
    run_cli("predict", str(trained_run), "--input", str(write_csv(home / "a.csv", make_rows(60, seed=31))), "--output",
            str(home / "a.jsonl"), "--log", str(db), "--log_texts", "true")
    run_cli("predict", str(trained_run), "--input", str(write_csv(home / "b.csv", make_rows(2, seed=32)[:5])), "--output",
            str(home / "b.jsonl"), "--log", str(db))
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*), COUNT(text) FROM predictions").fetchone() == (185, 180)
    return db


@pytest.mark.parametrize("which", ["qa_run", "ner_run", "pair_run", "embedding_run"])
def test_monitor_of_each_task_runs_every_test_without_a_traceback(which, request, tmp_path):
    # a QA run's sentence vectors were read from its span head: AttributeError 'QuestionAnsweringModelOutput' ...;
    # a pair run's rows need both texts, an embedding run's (whose validation split holds pairs) one text each
    run = request.getfixturevalue(which)
    db = tmp_path / "log.db"
    if which == "qa_run":
        rows = [{"question": r["question"], "context": r["context"]} for r in make_qa_rows(12, seed=7)]
        source = write_jsonl(tmp_path / "in.jsonl", rows)
    elif which == "pair_run":
        source = write_csv(tmp_path / "in.csv", make_pair_rows(60, seed=7), ("text", "text_pair", "label"))
    else:
        source = tmp_path / "in.txt"
        texts = [" ".join(r["tokens"]) for r in make_ner_rows(60, seed=7)] if which == "ner_run" else \
            [r["query"] for r in make_search_rows(60, seed=7)]
        source.write_text("\n".join(texts) + "\n")
    run_cli("predict", str(run), "--input", str(source), "--output", str(tmp_path / "p.jsonl"), "--log", str(db), "--log_texts", "true")
    monitor(run, db, tmp_path / "m")
    report = json.loads((tmp_path / "m" / "monitor.json").read_text())
    assert report["status"] == "tested" and "embeddings_skipped" not in report, report.get("embeddings_skipped")
    assert report["tests"]["embeddings"]["rows"][1] == report["rows"] >= 20


def test_embedding_test_runs_on_the_rows_that_hold_texts(trained_run, logged_traffic, tmp_path):
    monitor(trained_run, logged_traffic, tmp_path / "m")
    report = json.loads((tmp_path / "m" / "monitor.json").read_text())
    assert report["rows"] == 185 and "embeddings_skipped" not in report
    assert report["tests"]["embeddings"]["rows"][1] == 180
    assert "180 of 185 rows" in report["embeddings_rows"]
    assert "180 of 185 rows" in (tmp_path / "m" / "monitor.html").read_text()
    proc = monitor(trained_run, logged_traffic, tmp_path / "m2", "--min_rows", "181")  # too few with texts: said so
    skipped = json.loads((tmp_path / "m2" / "monitor.json").read_text())["embeddings_skipped"]
    assert "only 180 of the 185" in skipped and "--min_rows" in skipped and proc.returncode in (0, 3)


def test_monitor_refuses_bad_output_and_until_before_any_work(trained_run, logged_traffic, tmp_path):
    a_file = tmp_path / "report.html"
    a_file.write_text("not a directory")
    for output, message in ((a_file, f"--output: {a_file} is a file"),
                            (a_file / "monitor", "is a file, not a directory")):
        proc = monitor(trained_run, logged_traffic, output, check_rc=(2,))
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert a_file.read_text() == "not a directory" and not (trained_run / "monitor").exists()
    proc = monitor(trained_run, logged_traffic, tmp_path / "m", "--until", "garbage", check_rc=(2,))
    assert "--until: 'garbage'" in proc.stderr and "--since" not in proc.stderr.split("is neither")[0]
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("budget", ["0", "-3"])
def test_serve_refuses_a_token_budget_under_one(trained_run, budget):
    # its own process with a time limit: a server that accepts the budget would otherwise serve for ever
    proc = subprocess.run([sys.executable, "-m", "encoderfit", "serve", str(trained_run), "--port", str(free_port()),
                           "--max_batch_tokens", budget], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "max_batch_tokens" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
