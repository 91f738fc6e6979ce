"""`torchrun --nnodes 2 --nproc_per_node 1` as two local "nodes" (two torchrun processes on 127.0.0.1, node ranks 0
and 1, a free port, gloo on the CPU) for `train` and `pretrain`; and the SkyPilot task's run command is that command.

Tolerances, and why:
- train: the two-node run must equal one process at the same global batch (2 x 4 = 8) within 1e-4 absolute on every
  weight, as the two-process single-node test does (tests/scale/test_distributed.py): the ranks only all-reduce gradients in
  another order (observed there: 2.7e-6); accuracies and step counts are equal.
- pretrain: each rank masks its half of every batch with a generator seeded by its rank, so one process never draws
  the same masks as two; the reference at the same global batch is therefore two processes on one node (the same
  ranks, the same masks): two nodes must give it within 1e-4 on every weight, and the held-out loss within 1e-4
  relative (40 steps: the reference is the two-process run tests/commands/test_pretrain.py checks, built once in
  conftest's `two_process_pretrain`).
"""

import json
import os
import shlex
import socket
import subprocess
import sys

import yaml

from conftest import STEADY_TRAIN, load_run, max_weight_difference
from shared import files_under
from shared import pretrain_args

TOLERANCE = 1e-4


def train_argv(toy_csv, tiny_model, out) -> list:
    """conftest's steady run, with the output last (where the SkyPilot task puts it)."""
    return ["train", "--data.source", str(toy_csv), "--model.name_or_path", str(tiny_model), *STEADY_TRAIN, "--output_dir", str(out)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_command(node_rank: int, port: int, argv: list) -> list:
    """One "node" of a two-node launch: what the SkyPilot task runs on each node, with 127.0.0.1 as the first node."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node_rank),
            "--master_addr", "127.0.0.1", "--master_port", str(port), "--nproc_per_node", "1", "-m", "encoderfit", *argv]


def cpu_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def run_two_nodes(argv: list, timeout: int = 300) -> str:
    """Both nodes started, both waited for; a node that fails fails the test with its stderr. Returns node 0's stderr."""
    port = free_port()
    nodes = [subprocess.Popen(node_command(rank, port, argv), env=cpu_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for rank in (1, 0)]
    try:
        outputs = [node.communicate(timeout=timeout) for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
                node.wait()
    for node, (_, err) in zip(nodes, outputs):
        assert node.returncode == 0, err[-3000:]
    return outputs[1][1]


def test_train_on_two_nodes_matches_one_process_at_the_same_global_batch(steady_run, toy_csv, tiny_model, tmp_path):
    out = tmp_path / "two-nodes"
    err = run_two_nodes(train_argv(toy_csv, tiny_model, out))
    metrics, weights = load_run(out)
    ref_metrics, ref_weights = load_run(steady_run)
    assert max_weight_difference(weights, ref_weights) <= TOLERANCE
    assert metrics["train"]["steps"] == ref_metrics["train"]["steps"]  # batch 8 = 2 nodes x 1 process x 4
    for split in ("validation", "test"):
        assert metrics[split]["accuracy"] == ref_metrics[split]["accuracy"]
    assert files_under(out) == files_under(steady_run) and err.count("run written to") == 1  # node 0 alone writes
    assert "processes: 2" in (out / "config.yaml").read_text()


def test_pretrain_on_two_nodes_matches_two_processes_on_one_node(corpus_file, two_process_pretrain, tmp_path):
    from conftest import GPUS

    one_node = two_process_pretrain / "ddp"  # the two-process test's run (conftest), on the CPU where there are < 2 GPUs
    if GPUS >= 2:  # that run used two GPUs: the reference here must be the CPU's, as the two nodes are
        one_node = tmp_path / "one-node"
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
                               "encoderfit", *pretrain_args(corpus_file, one_node)], env=cpu_env(), capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    two_nodes = tmp_path / "two-nodes"
    run_two_nodes(pretrain_args(corpus_file, two_nodes))

    from safetensors.numpy import load_file

    weights, reference = (load_file(run / "model" / "model.safetensors") for run in (two_nodes, one_node))
    assert max_weight_difference(weights, reference) <= TOLERANCE
    metrics, ref = (json.loads((run / "metrics.json").read_text()) for run in (two_nodes, one_node))
    assert metrics["train"]["steps"] == ref["train"]["steps"] == 40
    assert abs(metrics["validation"]["loss"] - ref["validation"]["loss"]) <= TOLERANCE * ref["validation"]["loss"]
    assert files_under(two_nodes) == files_under(one_node)


def test_the_skypilot_task_runs_the_two_node_test_command(toy_csv, tiny_model, tmp_path, monkeypatch):
    """The generated task's run line, with SkyPilot's variables for node 1 of 2 (1 GPU each) filled in, is the
    command test_train_on_two_nodes ran, modulo the rendezvous address/port, the python and the output directory."""
    project = tmp_path / "proj"
    project.mkdir()
    monkeypatch.chdir(project)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    out = tmp_path / "two-nodes"
    argv = train_argv(toy_csv, tiny_model, out)
    from conftest import run_cli

    run_cli("launch", "skypilot", "--gpus", "L4:1", "--nodes", "2", "--dry_run", "true", "--",
            *[a if a != str(out) else "runs/toy" for a in argv], cwd=project)
    task = yaml.safe_load((project / ".encoderfit" / "launch" / "encoderfit-train-runs-toy" / "sky.yaml").read_text())
    line = next(line for line in task["run"].splitlines() if "torch.distributed.run" in line)
    variables = {"$PY": sys.executable, "$SKYPILOT_NUM_NODES": "2", "$SKYPILOT_NODE_RANK": "1",
                 "$MASTER_ADDR": "127.0.0.1", "$SKYPILOT_NUM_GPUS_PER_NODE": "1"}
    for name, value in variables.items():
        line = line.replace(f'"{name}"', value)
    generated = shlex.split(line)
    port = generated[generated.index("--master_port") + 1]
    expected = node_command(1, int(port), argv)
    output = generated.index("--output_dir")
    assert generated[output + 1].endswith("/proj/runs/toy")
    generated[output + 1] = str(out)
    assert generated == expected
