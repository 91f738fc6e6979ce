"""`torchrun --nproc_per_node 2 -m encoderfit train` (DDP over gloo on CPU) equals one process at the same global batch."""

import subprocess
import sys

from conftest import GPUS, load_run, max_weight_difference, steady_args, two_process_env
from shared import files_under

TOLERANCE = 1e-4  # observed on CPU: 2.7e-6 (the two processes all-reduce gradients in another order)


def test_two_processes_match_one_and_only_the_main_process_writes(steady_run, toy_csv, tiny_model, tmp_path):
    out = tmp_path / "ddp"
    env = {**two_process_env(), "CUDA_VISIBLE_DEVICES": ""}  # gloo on the CPU: compared bit for bit with one CPU process
    if GPUS:  # the reference then runs on the CPU too, in a process of its own (steady_run trained on the GPU)
        steady_run = tmp_path / "cpu-reference"
        single = subprocess.run([sys.executable, "-m", "encoderfit", *steady_args(toy_csv, tiny_model, steady_run)],
                                capture_output=True, text=True, env=env, timeout=600)
        assert single.returncode == 0, single.stderr[-3000:]
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "encoderfit", *steady_args(toy_csv, tiny_model, out)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    metrics, weights = load_run(out)
    ref_metrics, ref_weights = load_run(steady_run)
    assert max_weight_difference(weights, ref_weights) <= TOLERANCE
    for split in ("validation", "test"):
        assert metrics[split]["accuracy"] == ref_metrics[split]["accuracy"]
    assert metrics["train"]["steps"] == ref_metrics["train"]["steps"]  # batch 8 = 2 processes x 4
    assert abs(metrics["train"]["final_train_loss"] - ref_metrics["train"]["final_train_loss"]) <= 1e-4 * ref_metrics["train"]["final_train_loss"] + 1e-7

    # one writer: the same files as the single-process run, one TensorBoard log, one summary, nothing left over
    assert files_under(out) == files_under(steady_run)
    assert len(list((out / "logs").glob("events.out.tfevents*"))) == 1
    assert proc.stdout.count("encoderfit metrics") == 1 and proc.stderr.count("run written to") == 1
    assert not list(tmp_path.glob(".*"))
    assert "processes: 2" in (out / "config.yaml").read_text()


def test_fsdp_on_a_cpu_is_refused_not_ignored(toy_csv, tiny_model, tmp_path):
    from conftest import run_cli

    proc = run_cli(*steady_args(toy_csv, tiny_model, tmp_path / "fsdp"), "--train.fsdp", "true", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "train.fsdp: FSDP needs GPUs and a multi-process launch" in proc.stderr
    assert not list(tmp_path.iterdir()), "nothing left behind"


def test_fsdp_and_deepspeed_settings_are_checked(tmp_path):
    import json

    import pytest

    from encoderfit.core.args import TrainArgs
    from encoderfit.core.errors import UserError
    from encoderfit.models.trainer import training_arguments

    fsdp = TrainArgs(fsdp=True, fsdp_config={"transformer_layer_cls_to_wrap": ["ModernBertEncoderLayer"]})
    with pytest.raises(UserError, match="FSDP needs GPUs"):  # one process, no GPU here
        training_arguments(fsdp, "fp32", tmp_path)
    with pytest.raises(UserError, match="train.deepspeed: .* is not a file"):
        TrainArgs(deepspeed=str(tmp_path / "missing.json")).check_runnable()
    (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    assert TrainArgs(deepspeed=str(tmp_path / "ds.json")).deepspeed.endswith("ds.json")
