"""What a CUDA machine changes, and what must not change on one: JAX kept off the GPU, one GPU per process, the
settings the Trainer gets (workers, pinned memory, no per-step sync, compile), bf16 only where native, the baseline
fitted beside training. The CPU tests check the choices; the tests marked for CUDA run them (`make gpu-check`)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ON_CUDA, run_cli
from encoderfit.core.errors import UserError

CUDA_ONLY = pytest.mark.skipif(not ON_CUDA, reason="needs a CUDA GPU (make gpu-check runs these)")

JAX_ENV = """
import os, sys
import encoderfit.tasks.embedding.retrieval  # what imports bm25s, which imports JAX
print(os.environ.get("JAX_PLATFORMS"), os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE"))
"""


@pytest.mark.parametrize("user,expected", [({}, "cpu false"),
                                           ({"JAX_PLATFORMS": "cuda", "XLA_PYTHON_CLIENT_PREALLOCATE": "true"}, "cuda true")])
def test_our_retrieval_module_keeps_jax_on_the_cpu_unless_the_user_said_otherwise(user, expected):
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_PYTHON_CLIENT_PREALLOCATE")}
    out = subprocess.run([sys.executable, "-c", JAX_ENV], env={**env, **user}, capture_output=True, text=True, check=True)
    assert out.stdout.split() == expected.split()


def test_two_processes_on_one_gpu_are_refused_before_anything_loads():
    from encoderfit.core.distributed import check_gpus

    with pytest.raises(UserError, match="2 processes on this machine but 1 GPU.*--nproc_per_node 1.*CUDA_VISIBLE_DEVICES="):
        check_gpus(2, 1)
    check_gpus(2, 0)  # no GPU: gloo on the CPU
    check_gpus(2, 2)  # one GPU each
    check_gpus(1, 1)


def test_the_trainer_settings_follow_the_device(tmp_path):
    from encoderfit.core import device
    from encoderfit.core.args import TrainArgs
    from encoderfit.models.trainer import training_arguments

    args = training_arguments(TrainArgs(report_to=[]), "fp32", tmp_path)
    assert args.logging_nan_inf_filter is False  # it reads the loss back every step: a host sync
    assert args.torch_compile is ON_CUDA and device.compiling() is ON_CUDA
    if ON_CUDA:
        assert args.dataloader_num_workers == device.loader_workers(None) > 0 and args.dataloader_persistent_workers
        assert args.dataloader_pin_memory and args.accelerator_config.non_blocking
    else:
        assert args.dataloader_num_workers == 0 and not args.dataloader_persistent_workers
        assert device.pad_multiple(100) == 16  # four buckets per doubling
    two = training_arguments(TrainArgs(report_to=[], num_workers=2, torch_compile=False), "fp32", tmp_path)
    assert two.dataloader_num_workers == 2 and two.dataloader_persistent_workers and two.torch_compile is False
    assert not device.compiling()


def test_torch_compile_takes_auto_true_and_false_on_the_command_line(tmp_path):
    from encoderfit.core.args import TrainArgs

    assert TrainArgs().torch_compile == "auto" and TrainArgs().num_workers is None
    proc = run_cli("train", "--train.torch_compile", "maybe", "--output_dir", str(tmp_path / "x"), check=False)
    assert proc.returncode == 2 and "torch_compile" in proc.stderr and not (tmp_path / "x").exists()


def test_bf16_only_where_the_gpu_does_it_natively():
    from encoderfit.core.device import cuda_bf16_native, pick_precision

    if not ON_CUDA:
        assert not cuda_bf16_native() and pick_precision("auto") == "fp32"
        return
    import torch

    major = torch.cuda.get_device_capability()[0]
    assert cuda_bf16_native() == (major >= 8)  # a V100 or T4 emulates bf16: fp32 there
    assert pick_precision("auto") == ("bf16" if major >= 8 else "fp32")


def test_predictions_in_bf16_on_a_gpu_and_unchanged_on_a_cpu():
    from encoderfit.runs.predictor import inference_precision

    assert inference_precision("auto", "cpu") == "fp32"
    assert inference_precision("fp32", "cuda:0") == "fp32"  # a run trained in fp32
    assert inference_precision("auto", "cuda:0", onnx=True) == "fp32"
    with pytest.raises(UserError, match="precision: 'fp8' is not one of auto, fp32, bf16"):
        inference_precision("fp8", "cpu")
    if ON_CUDA:
        from encoderfit.core.device import cuda_bf16_native

        assert inference_precision("auto", "cuda:0") == ("bf16" if cuda_bf16_native() else "fp32")


@pytest.mark.parametrize("parallel", [False, True])
def test_the_baseline_beside_training_gives_what_it_gives_after_it(parallel):
    from encoderfit.runs.background import Background

    done = Background(lambda: {"C": 10.0}, parallel=parallel)
    assert done.result() == {"C": 10.0} and done.result() == {"C": 10.0}
    failing = Background(lambda: 1 / 0, parallel=parallel)
    with pytest.raises(ZeroDivisionError):
        failing.result()


def test_a_checkpoint_is_hashed_once_and_a_changed_byte_is_found(tmp_path):
    from encoderfit.core.checkpoints import MANIFEST, problem, seal

    checkpoint = tmp_path / "checkpoint-5"
    (checkpoint / "sub").mkdir(parents=True)
    for name, size in (("model.safetensors", 3 << 20), ("optimizer.pt", 5 << 20), ("sub/rng.pth", 10)):
        (checkpoint / name).write_bytes(os.urandom(size))
    seal(checkpoint)
    manifest = json.loads((checkpoint / MANIFEST).read_text())["files"]
    assert sorted(manifest) == ["model.safetensors", "optimizer.pt", "sub/rng.pth"] and problem(checkpoint) is None
    with open(checkpoint / "optimizer.pt", "r+b") as handle:
        handle.seek(1 << 20)
        byte = handle.read(1)
        handle.seek(1 << 20)
        handle.write(bytes([byte[0] ^ 1]))
    assert problem(checkpoint) == "optimizer.pt does not match its checksum"


# ---------------------------------------------------------------- on a CUDA GPU


@CUDA_ONLY
def test_jax_stays_off_the_gpu_when_bm25_runs():
    pytest.importorskip("jax")
    code = JAX_ENV + "import jax, bm25s\nprint(jax.default_backend())\n"
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_PYTHON_CLIENT_PREALLOCATE")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == "cpu"


@CUDA_ONLY
def test_a_compiled_run_with_a_token_budget_trains_on_the_gpu(toy_csv, tiny_model, tmp_path):
    out = tmp_path / "compiled"
    proc = run_cli("train", "--data.source", str(toy_csv), "--model.name_or_path", str(tiny_model), "--output_dir", str(out),
                   "--train.epochs", "3", "--train.learning_rate", "3e-3", "--train.torch_compile", "true",
                   "--train.max_batch_tokens", "512", "--report.baseline", "false")
    assert "token-budget batches:" in proc.stderr and "training on cuda" in proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.8


@CUDA_ONLY
def test_the_bf16_predictor_agrees_with_fp32(trained_run):
    import numpy as np

    from encoderfit import Predictor

    texts = [f"the chef baked {'bread ' * (i % 9)}with garlic {i}" for i in range(40)] + ["the team won the match"] * 5
    fast, exact = (Predictor.from_pretrained(trained_run, precision=p) for p in ("auto", "fp32"))
    a, b = fast.logits(texts), exact.logits(texts)
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.95 and np.abs(a - b).max() < 0.1
