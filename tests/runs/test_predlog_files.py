"""What may be opened as a prediction log (issue 50): another application's SQLite file, an empty file, a directory
are refused and left as they were; `monitor` reads the log read-only and at once while a writer holds it; the
log's bounds live in the log; a hand-edited row is named, not a traceback."""

import hashlib
import logging
import sqlite3
import time

import pytest

from conftest import free_port, make_rows, run_cli, write_csv
from encoderfit.core.errors import UserError
from encoderfit.runs.predlog import PredictionLog, new_id

DAY = 86400.0


def row(text="a text", when=None, **values):
    out = {"id": new_id(), "time": time.time() if when is None else when, "model": "m", "source": "test", "tokens": 5,
           "unknown": 0.0, "label": "food", "score": None, "confidence": 0.9, "detail": None, "text": text, "text_pair": None}
    out.update(values)
    return out


def snapshot(folder):
    """Every file in the folder with the hash of its bytes: what 'left untouched' means."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def users_db(path, wal=False):
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users (name) VALUES ('ada'), ('alan')")
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize("wal", [False, True])
def test_another_applications_database_is_refused_by_every_command_and_left_untouched(trained_run, tmp_path, wal):
    home = tmp_path / "app"
    home.mkdir()
    other = users_db(home / "app.sqlite", wal)
    before = snapshot(home)
    labels = write_csv(tmp_path / "labels.csv", [{"id": "x", "label": "food"}], ("id", "label"))
    texts = write_csv(tmp_path / "in.csv", make_rows(2, seed=1))
    for args in (("monitor", str(trained_run), "--log", str(other), "--output", str(tmp_path / "m")),
                 ("feedback", str(trained_run), str(labels), "--log", str(other)),
                 ("predict", str(trained_run), "--input", str(texts), "--output", str(tmp_path / "p.jsonl"), "--log", str(other)),
                 ("serve", str(trained_run), "--port", str(free_port()), "--log", str(other)),
                 ("retrain", str(trained_run), "--feedback", str(other))):
        proc = run_cli(*args, check=False)
        assert proc.returncode == 2, (args[0], proc.stderr[-2000:])
        assert "is not a prediction log" in proc.stderr and "table(s) users" in proc.stderr and "Traceback" not in proc.stderr
        assert snapshot(home) == before, args[0]  # no table added, no journal mode switched, no -wal/-shm left
    with sqlite3.connect(other) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == ("wal" if wal else "delete")


def test_an_empty_file_is_a_new_log_for_writers_only_and_a_directory_is_refused(trained_run, tmp_path):
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    labels = write_csv(tmp_path / "labels.csv", [{"id": "x", "label": "food"}], ("id", "label"))
    texts = write_csv(tmp_path / "in.csv", make_rows(2, seed=1))
    for args in (("monitor", str(trained_run), "--log", str(empty), "--output", str(tmp_path / "m")),
                 ("feedback", str(trained_run), str(labels), "--log", str(empty))):
        proc = run_cli(*args, check=False)
        assert proc.returncode == 2 and "is empty (0 bytes)" in proc.stderr, proc.stderr[-2000:]
        assert [p.name for p in tmp_path.glob("empty.db*")] == ["empty.db"] and empty.stat().st_size == 0
    for args in (("monitor", str(trained_run), "--log", str(tmp_path)), ("feedback", str(trained_run), str(labels), "--log", str(tmp_path)),
                 ("predict", str(trained_run), "--input", str(texts), "--log", str(tmp_path))):
        proc = run_cli(*args, check=False)
        assert proc.returncode == 2 and "is a directory" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    run_cli("predict", str(trained_run), "--input", str(texts), "--output", str(tmp_path / "p.jsonl"), "--log", str(empty))
    store = PredictionLog(empty, readonly=True)
    assert len(store.frame()) == 6
    store.close()


def test_a_log_of_a_newer_version_or_not_sqlite_at_all_is_refused(tmp_path):
    path = tmp_path / "log.db"
    PredictionLog(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '9' WHERE key = 'version'")
    with pytest.raises(UserError, match="version 9"):
        PredictionLog(path)
    text = tmp_path / "notes.db"
    text.write_text("not a database at all\n" * 50)
    with pytest.raises(UserError, match="not an SQLite database"):
        PredictionLog(text)


def test_a_reader_needs_no_lock_and_an_exclusive_lock_is_named_at_once(tmp_path):
    path = tmp_path / "log.db"
    store = PredictionLog(path)
    store.append([row(f"text {i}") for i in range(5)])
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # a writer (another server, `feedback`) in the middle of its transaction
    holder.execute("INSERT INTO meta VALUES ('x', 'y')")
    start = time.time()
    reader = PredictionLog(path, readonly=True)  # was: 30 s of busy wait, then "is not a prediction log"
    assert len(reader.frame()) == 5 and time.time() - start < 5
    reader.close()
    holder.execute("ROLLBACK")
    store.close()
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")  # a process that keeps the file to itself (not encoderfit)
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("INSERT INTO meta VALUES ('x', 'y')")
    start = time.time()
    with pytest.raises(UserError, match="is locked by another process"):
        PredictionLog(path, readonly=True).frame()
    assert time.time() - start < 10
    holder.close()


def test_monitor_names_a_hand_edited_row_instead_of_a_traceback(trained_run, tmp_path):
    path = tmp_path / "log.db"
    store = PredictionLog(path)
    rows = [row(f"text {i}") for i in range(60)]
    store.append(rows)
    store.add_feedback([{"id": rows[0]["id"], "label": "food"}])
    store.close()
    out = tmp_path / "m"
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE predictions SET confidence = 'high' WHERE id = ?", (rows[3]["id"],))
    proc = run_cli("monitor", str(trained_run), "--log", str(path), "--output", str(out), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"predictions row id '{rows[3]['id']}', column 'confidence': 'high' is not a number" in proc.stderr
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE predictions SET confidence = 0.5 WHERE id = ?", (rows[3]["id"],))
        conn.execute("UPDATE feedback SET label = 'food' WHERE id = ?", (rows[0]["id"],))  # JSON would be '"food"'
    proc = run_cli("monitor", str(trained_run), "--log", str(path), "--output", str(out), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"feedback row id '{rows[0]['id']}', column 'label': 'food' is not JSON" in proc.stderr


def test_the_bounds_live_in_the_log_and_only_an_explicit_flag_changes_them(trained_run, tmp_path, caplog):
    path = tmp_path / "log.db"
    server = PredictionLog(path, max_mb=64, max_days=365)  # `serve --log_max_days 365 --log_max_mb 64`
    old = [row(f"old {i}", when=time.time() - 60 * DAY) for i in range(60)]
    server.append(old)
    server.add_feedback([{"id": r["id"], "label": "food"} for r in old[:20]])
    server.close()
    texts = write_csv(tmp_path / "in.csv", make_rows(2, seed=1))
    run_cli("predict", str(trained_run), "--input", str(texts), "--output", str(tmp_path / "p.jsonl"), "--log", str(path))
    store = PredictionLog(path, readonly=True)  # was: 60 -> 0 predictions, 20 -> 0 labels (the default 30 days)
    assert len(store.frame()) == 66 and len(store.frame("feedback")) == 20
    assert (store.max_bytes, store.max_age) == (64 * 2 ** 20, 365 * DAY)
    store.close()
    logging.getLogger().addHandler(caplog.handler)  # the CLI's logging.basicConfig(force=True) took it away
    with caplog.at_level("INFO"):
        PredictionLog(path, max_days=30).close()  # explicit: stored, said, and kept by every writer from now on
    assert "bounds changed: --log_max_days 365 -> 30 (stored in the log" in caplog.text
    again = PredictionLog(path)
    assert (again.max_bytes, again.max_age) == (64 * 2 ** 20, 30 * DAY)
    again.keep_bounds()
    assert len(again.frame()) == 6  # the 60-day-old rows go now that the log says 30 days
    again.close()
    with pytest.raises(UserError, match="--log_max_mb and --log_max_days must be positive"):
        PredictionLog(path, max_mb=0)
