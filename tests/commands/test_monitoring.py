"""After deployment: the prediction log (bounded, complete under concurrent requests, intact after SIGKILL), feedback
over HTTP and from a file, and `encoderfit monitor` (exit 0 on traffic like validation, 3 on shifted traffic)."""

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import FILLER, TOPICS, free_port, make_rows, run_cli, serving, write_csv
from running import wait_until_up
from encoderfit.runs.predlog import PredictionLog, new_id

KEY = "k-123"
AUTH = {"Authorization": f"Bearer {KEY}"}


def rows_of(path):
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT id FROM predictions").fetchall()


def fake_row(i, text):
    return {"id": new_id(), "time": time.time() + i * 1e-6, "model": "m", "source": "test", "tokens": 5, "unknown": 0.0,
            "label": "a", "score": None, "confidence": 0.9, "detail": None, "text": text, "text_pair": None}


@pytest.mark.parametrize("text_chars, chunks, per", [(1000, 140, 30), (0, 500, 30), (9000, 24, 64)])
def test_log_stays_within_its_size_bound_and_reads_with_pandas(tmp_path, text_chars, chunks, per):
    # ~4 MB into a 1 MB log, with texts and without (small rows: the random-id index is then a large share of the
    # file, and deleting rows rewrites most of its pages through the write-ahead file: 113% of the bound before);
    # and requests of 64 texts of 9 kB (576 kB a request, once one commit through the write-ahead file: 176% before)
    path = tmp_path / "log.db"
    store = PredictionLog(path, max_mb=1)
    largest, done = [0], threading.Event()

    def watch():  # sizes are sampled while rows are deleted too, not only between appends
        while not done.is_set():
            size = sum(p.stat().st_size for p in tmp_path.iterdir() if p.name in ("log.db", "log.db-wal") and p.exists())
            largest[0] = max(largest[0], size)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for chunk in range(chunks):
            store.append([fake_row(i, "x" * text_chars + str(chunk)) for i in range(per)])
    finally:
        done.set()
        watcher.join()
    assert largest[0] <= 2 ** 20, f"{largest[0]} bytes at most"
    frame = store.frame()
    assert 0 < len(frame) < chunks * 30 and frame["text"].str.endswith(str(chunks - 1)).any()  # the newest kept, the oldest gone
    assert not frame["text"].str.fullmatch("x*0").any()
    assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store.close()


def test_log_refuses_what_is_not_a_log(tmp_path):
    other = tmp_path / "notes.db"
    other.write_bytes(b"this is not sqlite" * 100)
    for path, message in ((other, "is not a prediction log"), (tmp_path, "is a directory"), (tmp_path / "no" / "x.db", "does not exist")):
        with pytest.raises(Exception, match=message):
            PredictionLog(path)


def test_served_log_every_answer_once_feedback_and_gauges(trained_run, tmp_path):
    path = tmp_path / "served.db"
    texts = [f"the coach and the team {i}" for i in range(4)] + ["garlic sauce in the oven", "a kernel compiler"]
    with serving(trained_run, "--api_key", KEY, "--log", str(path), "--log_texts", "true", "--max_wait_ms", "5") as url:
        def one(i):
            body = {"texts": texts[i % 6: i % 6 + 2]}
            r = httpx.post(url + "/v1/predict", json=body, headers=AUTH, timeout=60)
            assert r.status_code == 200, r.text
            return [x["id"] for x in r.json()["results"]]

        with ThreadPoolExecutor(16) as pool:
            acked = [i for ids in pool.map(one, range(200)) for i in ids]
        logged = [r[0] for r in rows_of(path)]  # read while the server runs: WAL readers see every commit
        assert len(acked) == len(set(acked)) and sorted(logged) == sorted(acked)
        good = acked[0]
        post = lambda body, headers=AUTH: httpx.post(url + "/v1/feedback", json=body, headers=headers, timeout=30)  # noqa: E731
        assert post({"id": good, "label": "sport"}).json() == {"id": good, "label": "sport", "stored": True}
        for body, status, message in (({"id": "nope", "label": "sport"}, 404, "not in the prediction log"),
                                      ({"id": good, "label": "weather"}, 422, "not one of the model's labels"),
                                      ({"id": good}, 422, "label"), ({"id": good, "label": "food", "x": 1}, 422, "x")):
            r = post(body)
            assert r.status_code == status and message in r.json()["error"], (body, r.text)
        assert post({"id": good, "label": "food"}, headers={}).status_code == 401
        metrics = httpx.get(url + "/metrics", headers=AUTH).text
        assert 'encoderfit_window_label_share{label="sport"}' in metrics and "encoderfit_window_tokens " in metrics
        predictions = float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("encoderfit_window_predictions ")))
        assert predictions == len(acked)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT label FROM feedback WHERE id = ?", (good,)).fetchone() == ('"sport"',)
        assert conn.execute("SELECT COUNT(*) FROM predictions WHERE text IS NULL").fetchone() == (0,)


def test_sigkill_mid_load_keeps_every_acknowledged_prediction(trained_run, tmp_path):
    path = tmp_path / "killed.db"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "encoderfit", "serve", str(trained_run), "--port", str(port), "--log", str(path),
                             "--log_max_mb", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, proc)
        deadline = time.time()
        acked, lock, stop = [], threading.Lock(), threading.Event()

        def client():
            with httpx.Client(timeout=10) as http:
                while not stop.is_set():
                    try:
                        r = http.post(url + "/v1/predict", json={"texts": ["the team won the league", "a recipe for soup"]})
                    except httpx.HTTPError:
                        return  # the server is gone: this request was never acknowledged
                    if r.status_code == 200:
                        with lock:
                            acked.extend(x["id"] for x in r.json()["results"])

        threads = [threading.Thread(target=client) for _ in range(12)]
        for t in threads:
            t.start()
        while len(acked) < 300 and time.time() < deadline + 60:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)
        stop.set()
        for t in threads:
            t.join(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(acked) >= 300
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        logged = [r[0] for r in conn.execute("SELECT id FROM predictions")]
    assert len(logged) == len(set(logged)) and set(acked) <= set(logged)
    assert sum(p.stat().st_size for p in tmp_path.glob("killed.db*") if not p.name.endswith("-shm")) <= 2 * 2 ** 20


def shifted_rows(n, seed):
    """Texts unlike training: long runs of filler with a rare topic word, in another register."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(FILLER, k=rng.randint(25, 40)) + ["zebra", "quantum", "violin"][: rng.randint(1, 3)] +
                     rng.sample(TOPICS[rng.choice(sorted(TOPICS))], 1)) for _ in range(n)]


def test_monitor_quiet_in_distribution_alarm_on_shift_feedback_from_a_file(trained_run, tmp_path):
    same = write_csv(tmp_path / "same.csv", make_rows(40, seed=11))
    shifted = tmp_path / "shifted.txt"
    shifted.write_text("\n".join(shifted_rows(120, seed=3)) + "\n")
    quiet, loud = tmp_path / "quiet.db", tmp_path / "loud.db"
    out = tmp_path / "same.jsonl"
    run_cli("predict", str(trained_run), "--input", str(same), "--output", str(out), "--log", str(quiet), "--log_texts", "true")
    predicted = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(predicted) == 120 and all(len(r["id"]) == 32 for r in predicted)
    run_cli("predict", str(trained_run), "--input", str(shifted), "--output", str(tmp_path / "shifted.jsonl"), "--log", str(loud), "--log_texts", "true")

    labels = write_csv(tmp_path / "labels.csv", [{"id": r["id"], "label": r["label"]} for r in predicted[:30]], ("id", "label"))
    run_cli("feedback", str(trained_run), str(labels), "--log", str(quiet))
    bad = write_csv(tmp_path / "bad.csv", [{"id": predicted[0]["id"], "label": "sport"}, {"id": "missing", "label": "food"}], ("id", "label"))
    proc = run_cli("feedback", str(trained_run), str(bad), "--log", str(quiet), check=False)
    assert proc.returncode == 2 and "row 2: id 'missing' is not in the prediction log" in proc.stderr
    wrong = write_csv(tmp_path / "wrong.csv", [{"id": predicted[0]["id"], "label": "weather"}], ("id", "label"))
    proc = run_cli("feedback", str(trained_run), str(wrong), "--log", str(quiet), check=False)
    assert proc.returncode == 2 and "row 1, column 'label'" in proc.stderr

    ok = run_cli("monitor", str(trained_run), "--log", str(quiet), "--output", str(tmp_path / "m1"), "--permutations", "200", check=False)
    assert ok.returncode == 0, ok.stderr[-2000:]
    report = json.loads((tmp_path / "m1" / "monitor.json").read_text())
    assert report["rows"] == 120 and report["alarms"] == [] and set(report["tests"]) >= {"length", "label_shares", "confidence", "embeddings"}
    assert report["feedback"]["n"] == 30 and report["feedback"]["value"] == 1.0  # the labels given were the model's own
    reference = report["accuracy"]["reference"]  # ATC/CBPE fitted on both labelled held-out splits
    test_n = json.loads((trained_run / "metrics.json").read_text())["test"]["n"]
    assert reference["splits"] == ["validation", "test"] and reference["n"] > test_n
    assert report["accuracy"]["atc"]["low"] <= report["accuracy"]["atc"]["estimate"] <= report["accuracy"]["atc"]["high"]
    html = (tmp_path / "m1" / "monitor.html").read_text()
    assert "No alarm" in html and "data:image/png;base64" in html

    alarm = run_cli("monitor", str(trained_run), "--log", str(loud), "--output", str(tmp_path / "m2"), check=False)
    assert alarm.returncode == 3, alarm.stderr[-2000:]
    report = json.loads((tmp_path / "m2" / "monitor.json").read_text())
    assert report["tests"]["length"]["alarm"] and report["tests"]["embeddings"]["alarm"]  # p = 1/1001 < 0.01 / 5
    assert report["tests"]["embeddings"]["domain_auc"] > 0.9
    assert any("length drift" in a for a in report["alarms"]) and "ALARM" in alarm.stderr
    assert len(report["least_like_training"]) == 10

    too_early = run_cli("monitor", str(trained_run), "--log", str(loud), "--since", "yesterday", check=False)
    assert too_early.returncode == 2 and "--since: 'yesterday'" in too_early.stderr


def test_each_task_reads_feedback_labels_its_own_way():
    from encoderfit.tasks import get_task

    labels = ["food", "sport", "tech"]
    assert get_task("classification").decoding.feedback_value("sport", labels) == "sport"
    assert get_task("multilabel").decoding.feedback_value("tech|food", labels) == ["food", "tech"]
    assert get_task("multilabel").decoding.feedback_value([], labels) == []
    assert get_task("regression").decoding.feedback_value(2, ["score"]) == 2.0
    for task, value, message in (("classification", "weather", "not one of the model's labels"), ("classification", 1, "not one of"),
                                 ("multilabel", ["food", "x"], "\\['x'\\] are not among"), ("regression", "high", "not a number"),
                                 ("regression", float("nan"), "not a number"), ("ner", "PER", "takes no feedback labels yet")):
        with pytest.raises(ValueError, match=message):
            get_task(task).decoding.feedback_value(value, labels)
    result = {"label": "sport", "score": 0.9, "probabilities": {"food": 0.05, "sport": 0.9, "tech": 0.05}}
    assert get_task("classification").decoding.monitored(result) == {"label": "sport", "score": None, "confidence": 0.9, "detail": None}
    assert get_task("regression").decoding.monitored({"score": 1.5, "low": 1.0, "high": 2.5})["detail"] == {"width": 1.5}


def test_monitor_counts_the_feedback_of_the_windows_predictions_only(tmp_path):
    # A window's feedback accuracy is about the predictions made in it, however late their labels came: an old
    # batch of wrong predictions must not raise an alarm on every later window (found on the VADER shift run).
    from encoderfit.commands.monitor import _feedback
    from encoderfit.tasks import get_task

    store = PredictionLog(tmp_path / "log.db")
    early, late = [fake_row(i, f"early {i}") for i in range(40)], [fake_row(i, f"late {i}") for i in range(40)]
    for row in late:
        row["time"] += 100
    store.append(early + late)
    store.add_feedback([{"id": r["id"], "label": "b", "text": None, "text_pair": None, "source": "test"} for r in early])  # all wrong
    store.add_feedback([{"id": r["id"], "label": "a", "text": None, "text_pair": None, "source": "test"} for r in late])  # all right
    task, metrics = get_task("classification"), {"test": {"accuracy": 0.9, "n": 1000}}
    for since, until, right in ((None, None, 0.5), (late[0]["time"] - 1, None, 1.0), (None, late[0]["time"] - 1, 0.0)):
        alarms = []
        out = _feedback(store, "m", task, metrics, 0.01, 0.05, alarms, since, until)
        assert out["n"] == (80 if since is None and until is None else 40) and out["value"] == right
        assert bool(alarms) == (right < 0.8)
    store.close()
