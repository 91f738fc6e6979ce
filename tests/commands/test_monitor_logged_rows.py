"""What `predict --log` keeps is what `monitor` compares (issue 50, items 7-9): calibrated confidences whatever the
output shows, the model's own top label beside an abstention, and an ONNX export's rows stamped with the fingerprint
of the model it was exported from."""

import hashlib
import json
import shutil
import sqlite3

import pytest

from conftest import make_rows, run_cli, write_csv
from encoderfit.runs.rundir import ModelDir

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def logged(db):
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return {r["id"]: dict(r) for r in conn.execute("SELECT * FROM predictions")}


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def monitored(run, db, out, *extra):
    proc = run_cli("monitor", str(run), "--log", str(db), "--output", str(out), "--min_rows", "20", "--permutations", "100",
                   *extra, check=False)
    assert proc.returncode in (0, 3) and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc, json.loads((out / "monitor.json").read_text())


@pytest.fixture(scope="module")
def traffic(tmp_path_factory):
    """In-distribution traffic: texts drawn as the training data was (another seed)."""
    return write_csv(tmp_path_factory.mktemp("traffic") / "same.csv", make_rows(30, seed=21))


def edited_copy(run, tmp_path, **head):
    """A copy of the run whose head (model/encoderfit.json) says otherwise: the toy run is too sure of itself for a
    temperature to matter, or a threshold to abstain."""
    copy = tmp_path / "run"
    if not copy.exists():
        shutil.copytree(run, copy)
    info_file = copy / "model" / "encoderfit.json"
    info = json.loads(info_file.read_text())
    info["head"].update(head)
    info_file.write_text(json.dumps(info))
    return copy


def test_uncalibrated_output_logs_calibrated_confidences(trained_run, traffic, tmp_path):
    run = edited_copy(trained_run, tmp_path, temperature=4.0)  # calibrated probabilities well under the raw ones
    run_cli("predict", str(run), "--input", str(traffic), "--output", str(tmp_path / "calibrated.jsonl"))
    db = tmp_path / "log.db"
    run_cli("predict", str(run), "--input", str(traffic), "--output", str(tmp_path / "raw.jsonl"),
            "--calibrated", "false", "--log", str(db))
    calibrated, raw, rows = read_jsonl(tmp_path / "calibrated.jsonl"), read_jsonl(tmp_path / "raw.jsonl"), logged(db)
    assert len(raw) == len(calibrated) == len(rows) == 90
    assert max(abs(a["score"] - b["score"]) for a, b in zip(raw, calibrated)) > 1e-3  # the output is uncalibrated, as asked
    for shown, reference in zip(raw, calibrated):  # the log is not: it holds what monitor's reference holds
        assert rows[shown["id"]]["confidence"] == pytest.approx(reference["score"], abs=1e-5)
        assert rows[shown["id"]]["label"] == reference["label"]
    proc, report = monitored(run, db, tmp_path / "m")
    assert proc.returncode == 0 and report["alarms"] == [], report["alarms"]
    test = report["accuracy"]["test"]["value"]
    assert report["accuracy"]["atc"]["low"] - 0.05 <= test <= report["accuracy"]["atc"]["high"] + 0.05  # was 0.000 vs 1.0


def test_abstentions_keep_the_models_own_label_and_raise_no_label_alarm(trained_run, traffic, tmp_path):
    run = edited_copy(trained_run, tmp_path, temperature=4.0)
    run_cli("predict", str(run), "--input", str(traffic), "--output", str(tmp_path / "plain.jsonl"))
    plain = read_jsonl(tmp_path / "plain.jsonl")
    scores = sorted(r["score"] for r in plain)
    edited_copy(trained_run, tmp_path, threshold=scores[len(scores) // 2])  # it abstains on about half the traffic
    db = tmp_path / "log.db"
    run_cli("predict", str(run), "--input", str(traffic), "--output", str(tmp_path / "abstained.jsonl"), "--abstain", "true",
            "--log", str(db))
    shown, rows = read_jsonl(tmp_path / "abstained.jsonl"), logged(db)
    unknown = [r for r in shown if r["label"] == "UNKNOWN"]
    assert 30 <= len(unknown) <= 60  # the answers abstain, as asked
    for answer, before in zip(shown, plain):  # the log keeps the model's own top label, and the abstention apart
        row = rows[answer["id"]]
        assert row["label"] == before["label"] != "UNKNOWN"
        assert (json.loads(row["detail"]) if row["detail"] else {}).get("abstained", False) == (answer["label"] == "UNKNOWN")
    proc, report = monitored(run, db, tmp_path / "m")
    assert "label_shares" in report["tests"] and not report["tests"]["label_shares"]["alarm"], report["tests"]["label_shares"]
    assert proc.returncode == 0 and report["alarms"] == [] and report["abstained"] == len(unknown)
    assert "answered UNKNOWN" in (tmp_path / "m" / "monitor.html").read_text()


def test_onnx_export_rows_carry_the_fingerprint_of_the_model_exported(trained_run, traffic, tmp_path):
    from encoderfit.serving.logged import served_log
    from encoderfit.runs.predictor import Predictor

    onnx = tmp_path / "onnx"
    run_cli("export", str(trained_run), "--output", str(onnx))
    source = ModelDir(trained_run / "model").fingerprint()
    db = tmp_path / "log.db"
    run_cli("predict", str(onnx), "--backend", "onnx", "--input", str(traffic), "--output", str(tmp_path / "p.jsonl"),
            "--log", str(db))
    proc, report = monitored(trained_run, db, tmp_path / "m")
    assert report["rows"] == 90 and report["other_models_rows"] == 0 and proc.returncode == 0, report  # were "another model"
    assert {r["model"] for r in logged(db).values()} == {source} != {EMPTY_SHA256}
    assert json.loads((onnx / ModelDir.EXPORTED_FROM).read_text())["model_sha256"] == source  # recorded at export

    served = served_log(tmp_path / "served.db", onnx, Predictor.from_pretrained(onnx, backend="onnx"), False, 10, 30)
    try:
        assert served.fingerprint == source  # `serve RUN/onnx --backend onnx --log` stamps the same
    finally:
        served.store.close()
    (onnx / ModelDir.EXPORTED_FROM).unlink()  # an export from before the record: its own files, never the hash of nothing
    assert ModelDir(onnx).fingerprint() not in (EMPTY_SHA256, source)
    inside = tmp_path / "old-run"  # ... unless it is RUN/onnx, export's default place: then RUN's model
    shutil.copytree(trained_run / "model", inside / "model")
    shutil.copytree(onnx, inside / "onnx")
    assert ModelDir(inside / "onnx").fingerprint() == source
