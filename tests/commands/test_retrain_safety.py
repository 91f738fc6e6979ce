"""`encoderfit retrain` never replaces or repoints a deployed model it did not promote: an output directory that is
the deployed run or the pointer, a pointer that serves another run or lies in a missing directory, and held-out
feedback no model can be compared on are refused before any training (exit 2, nothing written); a retrain killed
mid-way is resumed by the same command, which leaves no partial directory or lock behind."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

from conftest import make_regression_rows, run_cli
from shared import logged_feedback, new_rows


def deployed_copy(run, home, name="a"):
    """A copy of a session run under home/runs/ that a test may lose without harming the other tests."""
    (home / "runs").mkdir(exist_ok=True)
    copy = home / "runs" / name
    shutil.copytree(run, copy)
    return copy


def weights(run):
    return (run / "model" / "model.safetensors").read_bytes()


def test_retrain_refuses_an_output_dir_that_is_the_deployed_run_or_the_pointer(trained_run, tmp_path):
    run = deployed_copy(trained_run, tmp_path)
    log = logged_feedback(run, tmp_path, "fb", new_rows(30, seed=1))
    before = weights(run)
    for out in (run, run / "model", tmp_path / "runs"):
        proc = run_cli("retrain", str(run), "--feedback", str(log), "--output_dir", str(out), "--overwrite", "true", check=False)
        assert proc.returncode == 2 and "would replace the deployed model" in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
    assert weights(run) == before and sorted(os.listdir(tmp_path / "runs")) == ["a"]

    latest = tmp_path / "runs" / "latest"
    latest.symlink_to("a")
    proc = run_cli("retrain", str(latest), "--feedback", str(log), "--output_dir", str(latest), "--overwrite", "true", check=False)
    assert proc.returncode == 2 and f"--output_dir: {latest} is the --pointer" in proc.stderr, proc.stderr[-2000:]
    assert latest.is_symlink() and os.readlink(latest) == "a"
    assert sorted(os.listdir(tmp_path / "runs")) == ["a", "latest"]  # no .latest.PID.tmp, no .latest.old


def test_retrain_refuses_a_pointer_that_serves_another_run_or_lies_in_a_missing_directory(trained_run, tmp_path):
    a, b = deployed_copy(trained_run, tmp_path, "a"), deployed_copy(trained_run, tmp_path, "b")
    log = logged_feedback(a, tmp_path, "fb", new_rows(30, seed=1))
    latest = tmp_path / "runs" / "latest"
    latest.symlink_to("b")
    proc = run_cli("retrain", str(a), "--feedback", str(log), check=False)  # the default pointer: runs/latest
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"--pointer: {latest} points to {b.resolve()}, not to the run being retrained ({a.resolve()})" in proc.stderr
    assert os.readlink(latest) == "b" and sorted(os.listdir(tmp_path / "runs")) == ["a", "b", "latest"]

    missing = tmp_path / "missing-dir" / "latest"
    proc = run_cli("retrain", str(a), "--feedback", str(log), "--pointer", str(missing), check=False)
    assert proc.returncode == 2 and f"--pointer: directory {missing.parent} does not exist" in proc.stderr, proc.stderr[-2000:]
    assert sorted(os.listdir(tmp_path / "runs")) == ["a", "b", "latest"] and not missing.parent.exists()


def test_retrain_on_feedback_values_that_are_all_equal_is_refused_before_training(regression_run, tmp_path):
    rows = [{"text": r["text"], "label": 1.0} for r in make_regression_rows(24, seed=7)]
    log = logged_feedback(regression_run, tmp_path, "flat", rows)
    out = tmp_path / "r"
    proc = run_cli("retrain", str(regression_run), "--feedback", str(log), "--output_dir", str(out), "--pointer",
                   str(tmp_path / "latest"), check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "pearson is undefined on the held-out feedback (the 12 held-out feedback labels are all 1.0)" in proc.stderr
    assert not out.exists() and not (tmp_path / ".r.partial").exists() and not (tmp_path / "latest").exists()


def test_paired_test_on_a_metric_undefined_on_every_resample_says_so():
    from encoderfit.core.stats import paired_bootstrap, verdict

    y = np.ones(20)
    pearson = lambda idx, who: float("nan") if y[idx].std() == 0 else 0.0  # noqa: E731  (all values equal)
    diff = paired_bootstrap(pearson, len(y))
    assert diff["undefined"] and diff["low"] is None and diff["high"] is None and diff["p_value"] is None
    said = verdict(diff, True, "pearson", None, baseline="deployed model", on="the held-out feedback")
    assert said["outcome"] == "not distinguishable"
    assert "cannot be compared on the held-out feedback: pearson is undefined there" in said["sentence"]


def test_a_killed_retrain_is_resumed_by_the_same_command_and_leaves_nothing_behind(trained_run, tmp_path):
    run = deployed_copy(trained_run, tmp_path)
    runs = tmp_path / "runs"
    log = logged_feedback(run, tmp_path, "shift", new_rows(60, seed=1))
    args = ["retrain", str(run), "--feedback", str(log), "--epochs", "4", "--repeat", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "encoderfit", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 600
    while not list(runs.glob(".a-retrained-*.partial/checkpoints/checkpoint-*/encoderfit-complete.json")):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:] if proc.stderr else ""
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    (partial,) = runs.glob(".a-retrained-*.partial")
    assert list(runs.glob(".a-retrained-*.lock"))  # what a SIGKILL leaves

    again = run_cli(*args, check=False)  # the same command
    assert again.returncode in (0, 4), again.stderr[-3000:]
    name = partial.name[1:-len(".partial")]
    assert sorted(os.listdir(runs)) == ["a", name] + (["latest"] if again.returncode == 0 else [])  # no partial, no lock
    moved = (f"now points to {(runs / name).resolve()} (before: no pointer)" if again.returncode == 0 else
             f"no pointer was made at {runs / 'latest'}")  # exactly what it moved
    assert moved in again.stderr, again.stderr[-2000:]
    train = json.loads((runs / name / "metrics.json").read_text())["train"]
    assert (train["resumed_from"] or "").startswith("checkpoint-"), train
    same = run_cli(*args, check=False)  # once more: nothing trained, and why
    said = f"{runs / 'latest'} points to {(runs / name).resolve()}" if again.returncode == 0 else f"{runs / name} is this same retrain"
    assert same.returncode == 2 and said in same.stderr, same.stderr[-2000:]
