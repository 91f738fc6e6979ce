"""`encoderfit retrain`: feedback on texts the deployed model gets wrong is learnt and the new run promoted (the pointer
moves); a handful of random labels is not significantly better, so the deployed model is kept (exit 4)."""

import json
import os

from conftest import run_cli
from shared import logged_feedback, new_rows

# A new way of writing about each topic that the toy training data never uses: the deployed model cannot know it.


def test_retrain_promotes_when_better_and_keeps_the_old_model_otherwise(trained_run, tmp_path):
    log = logged_feedback(trained_run, tmp_path, "shift", new_rows(120, seed=1))
    pointer = tmp_path / "latest"
    args = ["--pointer", str(pointer), "--epochs", "2", "--repeat", "3"]
    proc = run_cli("retrain", str(trained_run), "--feedback", str(log), "--output_dir", str(tmp_path / "r1"), *args, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.path.realpath(pointer) == str((tmp_path / "r1").resolve()) and "promoted" in proc.stderr
    section = json.loads((tmp_path / "r1" / "metrics.json").read_text())["retrain"]
    assert section["promoted"] and section["feedback_used"] == {"training": 60, "held_out": 60, "repeat": 3, "start": "deployed",
                                                                "deployed": str(trained_run.resolve())}
    assert section["feedback"]["outcome"] == "better" and section["test"]["outcome"] != "worse"
    assert "on the held-out feedback" in section["feedback"]["sentence"] and "on test" not in section["feedback"]["sentence"]

    noise = logged_feedback(trained_run, tmp_path, "noise", new_rows(20, seed=2, noise=True))
    proc = run_cli("retrain", str(pointer), "--feedback", str(noise), "--output_dir", str(tmp_path / "r2"), *args, check=False)
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert "kept the deployed model" in proc.stderr and "Not significantly better on 10 held-out feedback labels" in proc.stderr
    assert os.path.realpath(pointer) == str((tmp_path / "r1").resolve())  # the pointer did not move
    assert (tmp_path / "r2" / "model").is_dir()  # the new run is written all the same, for a look


def test_retrain_refuses_too_little_feedback_and_a_pointer_that_is_a_directory(trained_run, tmp_path):
    log = logged_feedback(trained_run, tmp_path, "few", new_rows(5, seed=3))
    proc = run_cli("retrain", str(trained_run), "--feedback", str(log), "--pointer", str(tmp_path / "p"), "--output_dir", str(tmp_path / "r"), check=False)
    assert proc.returncode == 2 and "5 usable feedback labels" in proc.stderr and not (tmp_path / "r").exists()
    (tmp_path / "real").mkdir()
    proc = run_cli("retrain", str(trained_run), "--feedback", str(log), "--pointer", str(tmp_path / "real"), check=False)
    assert proc.returncode == 2 and "is not a symbolic link" in proc.stderr
