"""W&B and MLflow tracking without network: `--train.report_to [wandb, mlflow]` under WANDB_MODE=offline and a local
sqlite:/// MLflow store. Each tracker must hold the resolved config, the training curve, the final test metrics with
their confidence bounds, the verdict, and the model (MLflow: a pyfunc model that loads back and predicts)."""

import json
import sqlite3

import pytest

from conftest import STEADY_TRAIN
from conftest import run_cli
from shared import pretrain_args

pytest.importorskip("wandb")
pytest.importorskip("mlflow")


def wandb_records(path):
    """The protobuf records of a W&B transaction log (*.wandb): a LevelDB-style log of 32 KiB blocks, each record in
    chunks of (crc32 4 bytes, length 2, type 1: full/first/middle/last), after a 7-byte file header."""
    import struct
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, pending = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            break
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def offline_run(path):
    """What an offline W&B run holds, read from its transaction log: the config, the final summary, the history
    rows, the tags and the artifacts (name -> file paths)."""
    config, summary, history, tags, artifacts = {}, {}, [], [], {}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
            tags = list(record.run.tags)
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "summary":
            summary.update({item.key: json.loads(item.value_json) for item in record.summary.update if item.key})
        elif kind == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
        elif kind == "artifact":
            artifacts[record.artifact.name] = [entry.path for entry in record.artifact.manifest.contents]
    return config, summary, history, tags, artifacts


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, tiny_model, toy_csv):
    home = tmp_path_factory.mktemp("tracked")
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(home), "WANDB_PROJECT": "encoderfit-test", "WANDB_SILENT": "true",
           "MLFLOW_TRACKING_URI": f"sqlite:///{home}/mlflow.db", "MLFLOW_EXPERIMENT_NAME": "toy"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mp.delenv("WANDB_API_KEY", raising=False)
        proc = run_cli("train", "--data.source", str(toy_csv), "--model.name_or_path", str(tiny_model),
                       "--output_dir", str(home / "run"), *STEADY_TRAIN, "--report.baseline", "true",
                       "--train.report_to", "[wandb, mlflow]", cwd=home)
    return home, json.loads((home / "run" / "metrics.json").read_text()), proc


def test_wandb_offline_run_holds_config_curve_test_metrics_verdict_and_model(tracked_run):
    home, metrics, _ = tracked_run
    runs = list((home / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    config, summary, history, tags, artifacts = offline_run(next(runs[0].glob("*.wandb")))
    assert summary["test/accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert summary["test/accuracy_ci_low"] == pytest.approx(metrics["test"]["ci"]["accuracy"]["low"])
    assert summary["test/accuracy_ci_high"] == pytest.approx(metrics["test"]["ci"]["accuracy"]["high"])
    assert summary["verdict"] == metrics["comparison"]["verdict"]["outcome"]
    assert f"verdict: {summary['verdict']}" in tags and "classification" in tags
    assert config["train.learning_rate"] == "0.003" and config["data.source"].endswith("toy.csv")
    losses = [row["train/loss"] for row in history if "train/loss" in row]  # the Trainer's curve, in this run
    assert len(losses) >= 5 and losses[-1] < losses[0]
    assert {"model.safetensors", "config.json", "encoderfit.json"} <= set(artifacts["model-run"])


def test_mlflow_store_holds_params_curve_metrics_verdict_and_a_model_that_loads(tracked_run):
    import mlflow

    home, metrics, _ = tracked_run
    mlflow.set_tracking_uri(f"sqlite:///{home}/mlflow.db")
    run = mlflow.search_runs(experiment_names=["toy"], output_format="list")
    assert len(run) == 1
    run = run[0]
    assert run.data.params["train.learning_rate"] == "0.003"
    assert run.data.params["model.name_or_path"].endswith("/tiny-modernbert")
    assert run.data.metrics["test/accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert run.data.metrics["test/accuracy_ci_low"] == pytest.approx(metrics["test"]["ci"]["accuracy"]["low"])
    assert run.data.tags["verdict"] == metrics["comparison"]["verdict"]["outcome"]
    assert run.info.status == "FINISHED"
    curve = mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "loss")
    assert len(curve) >= 2  # the Trainer's MLflowCallback logged into this run, not a run of its own
    with sqlite3.connect(home / "mlflow.db") as db:
        assert db.execute("select count(*) from runs").fetchone()[0] == 1
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    texts = ["the goalkeeper saved a penalty in the final", "the central bank raised interest rates"]
    predicted = model.predict(texts)
    from encoderfit import Predictor

    assert [p["label"] for p in predicted] == [p["label"] for p in Predictor.from_pretrained(home / "run").predict(texts)]


def test_a_pretraining_run_is_tracked_in_mlflow_with_its_curve_perplexity_and_model_files(tmp_path, monkeypatch, corpus_file):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "mlm")
    run_cli(*pretrain_args(corpus_file, tmp_path / "mlm", "--train.report_to", "[mlflow]"), cwd=tmp_path)
    metrics = json.loads((tmp_path / "mlm" / "metrics.json").read_text())
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = mlflow.search_runs(experiment_names=["mlm"], output_format="list")
    assert run.data.params["mlm.masking_rate"] == "0.3" and run.info.status == "FINISHED"
    assert run.data.metrics["validation/perplexity"] == pytest.approx(metrics["validation"]["perplexity"])
    assert len(mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "loss")) >= 2
    files = {f.path for f in mlflow.tracking.MlflowClient().list_artifacts(run.info.run_id, "model")}
    assert {"model/model.safetensors", "model/tokenizer.json"} <= files


def closed_port() -> int:
    """A loopback port nothing listens on: bound, then let go."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Answering:
    """A real HTTP server on loopback that answers every request with one status (a proxy, a server that is not
    MLflow, a W&B that refuses the key)."""

    def __init__(self, status: int, body: bytes = b'{"error": "no"}'):
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def refused(tmp_path, tiny_model, toy_csv, tracker: str) -> str:
    """A run with --train.report_to [TRACKER] that must stop in one line, exit 2, with nothing left behind."""
    import time

    started = time.monotonic()
    proc = run_cli("train", "--data.source", str(toy_csv), "--model.name_or_path", str(tiny_model), "--output_dir",
                   str(tmp_path / "runs" / "t"), "--train.epochs", "1", "--train.report_to", f"[{tracker}]", check=False,
                   cwd=tmp_path)
    seconds = time.monotonic() - started
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())  # no run, no .t.partial
    return proc.stderr.strip().splitlines()[-1] + f"  [{seconds:.1f} s]"


@pytest.fixture
def no_tracker_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc from `wandb login`
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "MLFLOW_TRACKING_URI", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")


def test_an_mlflow_server_that_does_not_answer_stops_the_run_at_once(no_tracker_env, monkeypatch, tmp_path, tiny_model, toy_csv):
    port = closed_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    line = refused(tmp_path, tiny_model, toy_csv, "mlflow")
    assert f"MLflow server at http://127.0.0.1:{port} does not answer" in line and "unset MLFLOW_TRACKING_URI" in line
    assert float(line.rsplit("[", 1)[1].split()[0]) < 10  # MLflow's own client retries for minutes


@pytest.mark.parametrize("uri, says", [
    ("htp://host:5000", "MLflow has no tracking store for 'htp:'"),
    ("http://[::1", "is not a valid URI"),
    ("http://", "names no host"),
    ("{file}", "is a file, but MLflow keeps a folder of runs there"),
    ("{file}/mlruns", "is a file, not a directory"),
    ("sqlite:///{file}/mlflow.db", "is a file, not a directory"),
    ("sqlite:///{file}", "is not an SQLite database"),
])
def test_a_malformed_mlflow_tracking_uri_is_one_line(no_tracker_env, monkeypatch, tmp_path, tiny_model, toy_csv, uri, says):
    file = tmp_path / "notes.txt"
    file.write_text("not a folder, not a database\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri.format(file=file))
    line = refused(tmp_path, tiny_model, toy_csv, "mlflow")
    assert "MLFLOW_TRACKING_URI" in line and says in line


def test_a_server_that_is_not_mlflow_fails_in_one_line_and_leaves_no_partial_run(no_tracker_env, monkeypatch, tmp_path, tiny_model, toy_csv):
    """It answers (so the check before training passes), but MLflow cannot open a run there: the run directory
    already being built is removed."""
    with Answering(404) as server:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
        line = refused(tmp_path, tiny_model, toy_csv, "mlflow")
    assert f"MLflow ({server.url}) could not start a run" in line


def test_wandb_online_without_a_key_or_a_reachable_server_or_with_a_refused_key_stops_at_once(no_tracker_env, monkeypatch, tmp_path, tiny_model, toy_csv):
    line = refused(tmp_path, tiny_model, toy_csv, "wandb")
    assert "no W&B API key" in line and "WANDB_MODE=offline" in line
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef0123456789abcdef01234567")
    port = closed_port()
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    line = refused(tmp_path, tiny_model, toy_csv, "wandb")
    assert f"cannot reach W&B at http://127.0.0.1:{port}" in line and "WANDB_MODE=offline" in line
    assert float(line.rsplit("[", 1)[1].split()[0]) < 10
    with Answering(401) as server:
        monkeypatch.setenv("WANDB_BASE_URL", server.url)
        line = refused(tmp_path, tiny_model, toy_csv, "wandb")
    assert f"W&B at {server.url} refused the API key (HTTP 401)" in line and "WANDB_API_KEY" in line
