"""Runs survive a crash: SIGKILL mid-run, run the same command again, end exactly where an uninterrupted run ends.

Every figure is compared with `steady_run`, the same command run without interruption. On CPU the resumed run is
bitwise equal (weights and metrics); the tolerance below is for float noise on other machines.
"""

import os
from pathlib import Path

import pytest

from conftest import CPU_EXACT, load_run, max_weight_difference, run_cli, steady_args
from shared import sealed, kill_after

pytestmark = CPU_EXACT

TOLERANCE = 1e-5  # observed on CPU: 0.0


def assert_same_run(run: Path, reference: Path) -> None:
    metrics, weights = load_run(run)
    ref_metrics, ref_weights = load_run(reference)
    assert max_weight_difference(weights, ref_weights) <= TOLERANCE
    for split in ("validation", "test"):
        assert metrics[split]["accuracy"] == ref_metrics[split]["accuracy"]
        assert metrics[split]["calibration"]["before"]["nll"] == pytest.approx(ref_metrics[split]["calibration"]["before"]["nll"], rel=1e-4, abs=1e-7)
    assert metrics["train"]["steps"] == ref_metrics["train"]["steps"]
    assert metrics["train"]["best_checkpoint"]["value"] == pytest.approx(ref_metrics["train"]["best_checkpoint"]["value"], rel=1e-4)
    assert metrics["train"]["final_train_loss"] == pytest.approx(ref_metrics["train"]["final_train_loss"], rel=1e-4)


def test_same_seed_and_config_give_the_same_run(steady_run, toy_csv, tiny_model, tmp_path):
    again = tmp_path / "again"
    run_cli(*steady_args(toy_csv, tiny_model, again))
    metrics, weights = load_run(again)
    ref_metrics, ref_weights = load_run(steady_run)
    assert max_weight_difference(weights, ref_weights) == 0.0
    assert {k: metrics[k] for k in ("validation", "test")} == {k: ref_metrics[k] for k in ("validation", "test")}


def test_killed_run_resumes_from_its_newest_checkpoint_and_ends_where_an_uninterrupted_one_does(steady_run, toy_csv, tiny_model, tmp_path):
    out, partial = tmp_path / "crashy", tmp_path / ".crashy.partial"
    args = steady_args(toy_csv, tiny_model, out)
    kill_after(args, partial, checkpoints=1)
    assert not out.exists() and partial.is_dir()
    newest = max(sealed(partial), key=lambda p: int(p.parent.name.split("-")[1])).parent.name

    proc = run_cli(*args)  # the same command again
    assert f"resuming from {partial / 'checkpoints' / newest}" in proc.stderr
    assert not partial.exists()
    assert_same_run(out, steady_run)
    assert load_run(out)[0]["train"]["resumed_from"] == newest


def test_a_run_killed_during_its_evaluation_is_evaluated_again_without_training(steady_run, toy_csv, tiny_model, tmp_path):
    out, partial = tmp_path / "late", tmp_path / ".late.partial"
    args = steady_args(toy_csv, tiny_model, out)
    kill_after(args, partial, evaluating=True)
    assert not out.exists() and not sealed(partial)  # checkpoints are gone once the model is saved

    proc = run_cli(*args)
    assert "holds a trained model whose evaluation did not finish" in proc.stderr and "resuming from" not in proc.stderr
    assert "train_runtime" not in proc.stderr and not partial.exists()
    assert_same_run(out, steady_run)


def test_a_corrupted_newest_checkpoint_is_skipped_with_a_warning(steady_run, toy_csv, tiny_model, tmp_path):
    out, partial = tmp_path / "corrupt", tmp_path / ".corrupt.partial"
    args = steady_args(toy_csv, tiny_model, out)
    kill_after(args, partial, checkpoints=2)
    complete = sorted((p.parent for p in sealed(partial)), key=lambda p: int(p.name.split("-")[1]))
    newest, previous = complete[-1], complete[-2]
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated, as by a full disk

    proc = run_cli(*args, "--resume", "true")
    assert f"skipping {newest.name}: model.safetensors has" in proc.stderr
    assert f"resuming from {previous}" in proc.stderr
    assert_same_run(out, steady_run)


def test_a_checkpoint_without_its_manifest_is_incomplete(tmp_path):
    from encoderfit.core.checkpoints import newest_complete, problem, seal

    older, newer = tmp_path / "checkpoint-5", tmp_path / "checkpoint-10"
    for path in (older, newer):
        path.mkdir()
        (path / "model.safetensors").write_bytes(os.urandom(256))
    seal(older)  # newer: killed while saving, before the manifest
    assert problem(older) is None
    assert "interrupted" in problem(newer)
    assert newest_complete(tmp_path) == older
    (older / "model.safetensors").write_bytes(os.urandom(256))  # same size, other bytes
    assert "checksum" in problem(older)


def test_resuming_with_another_config_or_nothing_to_resume_is_a_clear_error(toy_csv, tiny_model, tmp_path):
    out, partial = tmp_path / "changed", tmp_path / ".changed.partial"
    args = steady_args(toy_csv, tiny_model, out)
    proc = run_cli(*args, "--resume", "true", check=False)  # nothing was interrupted here
    assert proc.returncode == 2 and "no interrupted run to resume" in proc.stderr
    kill_after(args, partial, checkpoints=1)
    proc = run_cli(*args, "--train.learning_rate", "1e-3", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "train.learning_rate was 0.003, now 0.001" in proc.stderr
    assert "Traceback" not in proc.stderr and partial.is_dir()  # the interrupted run is left alone
    run_cli(*args, "--resume", "false")  # discard it and start over
    assert out.is_dir() and not partial.exists()
