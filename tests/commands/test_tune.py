"""`encoderfit tune`: an Optuna search on the tiny model whose best trial becomes a normal run directory."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml

from conftest import run_cli

SPACE = json.dumps({"train.learning_rate": {"low": 1e-7, "high": 1e-2, "log": True}})


def tune_args(toy_csv, tiny_model, out, trials=3):
    return ["tune", "--data.source", str(toy_csv), "--model.name_or_path", str(tiny_model), "--output_dir", str(out),
            "--trials", str(trials), "--space", SPACE, "--startup_trials", "1", "--train.epochs", "2",
            "--train.batch_size", "8", "--report.baseline", "false"]


def load_study(home):
    return optuna.load_study(study_name="encoderfit", storage=f"sqlite:///{home / 'study.db'}")


def test_three_trials_prune_a_bad_one_and_keep_the_best_as_a_run(toy_csv, tiny_model, tmp_path):
    out, home = tmp_path / "tuned", tmp_path / "tuned-tune"
    home.mkdir()
    # Optuna's own way to try given settings first: a good learning rate, then one far too small to learn.
    study = optuna.create_study(storage=f"sqlite:///{home / 'study.db'}", study_name="encoderfit", direction="minimize")
    study.enqueue_trial({"train.learning_rate": 3e-3})
    study.enqueue_trial({"train.learning_rate": 1e-7})
    run_cli(*tune_args(toy_csv, tiny_model, out))

    trials = load_study(home).trials
    assert [t.state.name for t in trials[:2]] == ["COMPLETE", "PRUNED"]  # worse than the median after epoch 1
    assert len(trials) == 3 and trials[2].state.name in ("COMPLETE", "PRUNED")
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    best = min(complete, key=lambda t: t.value)

    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["state"] for r in rows] == [t.state.name.lower() for t in trials]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["tune"]["best_trial"] == best.number
    assert metrics["train"]["best_checkpoint"]["value"] == pytest.approx(best.value)  # the kept model is that trial's
    assert metrics["test"]["accuracy"] >= 0.9  # evaluated on test once, as a normal run
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["train"]["learning_rate"] == pytest.approx(best.params["train.learning_rate"])
    assert not list(home.glob("trial-*")), "trial directories left behind"

    from transformers import pipeline

    assert pipeline("text-classification", model=str(out / "model"), device="cpu")("the team won the match")[0]["label"] == "sport"


def test_an_interrupted_search_continues_from_its_sqlite_study(toy_csv, tiny_model, tmp_path):
    out, home = tmp_path / "tuned", tmp_path / "tuned-tune"
    args = tune_args(toy_csv, tiny_model, out)
    proc = subprocess.Popen([sys.executable, "-m", "encoderfit", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (home / "trial-001").is_dir():  # the second trial has started
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    cut = load_study(home).trials
    assert [t.state.name for t in cut] == ["COMPLETE", "RUNNING"]

    proc = run_cli(*args)  # the same command again
    assert "trial 1 was interrupted; running it again" in proc.stderr
    trials = load_study(home).trials
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 3 and [t.state.name for t in trials].count("FAIL") == 1
    assert trials[2].params == cut[1].params  # the interrupted settings ran first
    assert out.is_dir() and (out / "model" / "model.safetensors").is_file()


def test_a_bad_search_space_is_a_one_line_error(toy_csv, tiny_model, tmp_path):
    args = tune_args(toy_csv, tiny_model, tmp_path / "x")
    args[args.index("--space") + 1] = json.dumps({"train.learning_rte": {"low": 1e-5, "high": 1e-4}})
    proc = run_cli(*args, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "space: 'train.learning_rte' cannot be tuned (did you mean 'train.learning_rate'?)" in proc.stderr
