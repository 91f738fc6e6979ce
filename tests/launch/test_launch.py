"""`encoderfit launch modal|skypilot -- COMMAND`: what would be submitted, checked without cloud or credentials.

The Modal app is imported with Modal's own library and its function described (GPU, volumes, secrets, timeout,
packages, command); the SkyPilot task is parsed with SkyPilot's own `sky.Task.from_yaml` (SkyPilot lives in its own
environment, `make setup-sky`); the SkyPilot run command itself is run here after a simulated preemption (SIGKILL
mid-run, the same bucket directory) and resumes.
"""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import CPU_EXACT, STEADY_TRAIN, load_run
from running import run_cli
from shared import sealed

ROOT = Path(__file__).resolve().parents[2]
SKY_PYTHON = ROOT / ".tools" / "skypilot" / "bin" / "python"
SECRET_VALUE = "hf_not-a-real-token-0123456789"


@pytest.fixture
def project(tmp_path, monkeypatch, toy_csv):
    """A user's project folder: a recipe naming a data file in it and one outside it; no cloud credentials."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "data").mkdir()
    (root / "data" / "toy.csv").write_text(toy_csv.read_text())
    (root / "recipe.yaml").write_text("data:\n  source: data/toy.csv\nmodel:\n  name_or_path: answerdotai/ModernBERT-base\n")
    monkeypatch.chdir(root)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.modal.toml, ~/.aws ...
    for name in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "WANDB_API_KEY", "WANDB_MODE", "AWS_ACCESS_KEY_ID", "AWS_PROFILE",
                 "GOOGLE_APPLICATION_CREDENTIALS", "KUBECONFIG", "AZURE_CLIENT_ID", "RUNPOD_API_KEY", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    return root


def lock_pins() -> list[str]:
    return [line.split("#")[0].strip() for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines() if "==" in line.split("#")[0]]


def test_modal_app_describes_the_gpu_image_volumes_secrets_and_command(project, monkeypatch, toy_csv):
    pytest.importorskip("modal")
    monkeypatch.setenv("HF_TOKEN", SECRET_VALUE)
    proc = run_cli("launch", "modal", "--gpu", "a100-80gb:2", "--timeout", "7200", "--retries", "3", "--dry_run", "true",
                   "--", "train", "--config", "recipe.yaml", "--data.source", str(toy_csv), "--output_dir", "runs/bbc",
                   cwd=project)
    assert "gpu: A100-80GB:2" in proc.stdout and "secrets (names only): [\"HF_TOKEN\"]" in proc.stdout
    app_file = project / ".encoderfit" / "launch" / "encoderfit-train-runs-bbc" / "modal_app.py"
    text = app_file.read_text()
    assert SECRET_VALUE not in text and SECRET_VALUE not in proc.stdout + proc.stderr  # the value never leaves the environment
    spec = importlib.util.spec_from_file_location("launched_app", app_file)
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)  # Modal's library builds the app from the file as `modal run` would
    import modal

    assert isinstance(app.app, modal.App) and app.app.name == "encoderfit-train-runs-bbc"
    function = app.run
    described = function._spec_  # Modal's own description of the function it will create
    assert described.gpus == "A100-80GB:2"
    assert {path: repr(v) for path, v in described.volumes.items()} == {
        "/runs": "modal.Volume.from_name('encoderfit-runs')", "/cache": "modal.Volume.from_name('encoderfit-hf-cache')"}
    assert [repr(s) for s in described.secrets] == ["Secret.from_dict([HF_TOKEN])"]
    assert (app.TIMEOUT, app.RETRIES, app.GPU_COUNT, app.DISTRIBUTED) == (7200, 3, 2, True)
    assert app.PACKAGES == lock_pins() and app.TORCH == ["torch==2.13.0"]
    assert app.COMMAND == ["train", "--config", "recipe.yaml", "--data.source", str(toy_csv), "--output_dir", "/runs/proj/runs/bbc"]
    # the recipe (in the project) and the data file the flag names instead of the recipe's (outside it)
    assert sorted(local for local, _ in app.UPLOADS) == sorted([str(project / "recipe.yaml"), str(toy_csv)])
    assert all(local == remote for local, remote in app.UPLOADS) and app.WORKDIR == str(project)
    assert Path(app.SOURCE, "cli.py").is_file()


def launch_fails(project: Path, *args: str) -> str:
    proc = run_cli("launch", *args, check=False, cwd=project)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (project / ".encoderfit").exists()  # nothing written, nothing submitted
    return proc.stderr


def test_launch_bad_input_is_one_line_exit_2_and_submits_nothing(project, monkeypatch):
    assert "name the command to run after `--`" in launch_fails(project, "modal", "--gpu", "H100")
    assert "name the command to run after `--`" in launch_fails(project, "skypilot", "--")
    assert "cannot run `serve` remotely" in launch_fails(project, "modal", "--", "serve", "runs/x")
    assert "unknown GPU 'H1000' (did you mean 'H100'?)" in launch_fails(project, "modal", "--gpu", "H1000", "--", "train", "--config", "recipe.yaml")
    assert "unknown GPU 'A1OO'" in launch_fails(project, "skypilot", "--gpus", "A1OO:8", "--", "train", "--config", "recipe.yaml")
    assert "modal token new" in launch_fails(project, "modal", "--", "train", "--config", "recipe.yaml")
    no_aws = launch_fails(project, "skypilot", "--run", "true", "--cloud", "aws", "--", "train", "--config", "recipe.yaml")
    assert "sky check" in no_aws and "AWS_ACCESS_KEY_ID" in no_aws
    assert "unknown cloud 'awz'" in launch_fails(project, "skypilot", "--cloud", "awz", "--", "train", "--config", "recipe.yaml")
    (project / "missing.yaml").write_text("data:\n  source: data/nope.csv\n")
    assert "data.source names data/nope.csv, which does not exist here" in launch_fails(project, "modal", "--dry_run", "true", "--", "train", "--config", "missing.yaml")
    assert "File does not exist" in launch_fails(project, "modal", "--dry_run", "true", "--", "train", "--config", "nope.yaml")
    assert "needs WANDB_API_KEY" in launch_fails(project, "modal", "--dry_run", "true", "--", "train", "--config", "recipe.yaml", "--train.report_to", "[wandb]")
    assert "MLFLOW_TRACKING_URI" in launch_fails(project, "modal", "--dry_run", "true", "--", "train", "--config", "recipe.yaml", "--train.report_to", "[mlflow]")
    assert "--nodes > 1 is for" in launch_fails(project, "skypilot", "--nodes", "2", "--", "export", "runs/x")
    assert "did you mean 'gpu'" in launch_fails(project, "modal", "--gpux", "H100", "--", "train")


def sky_task(path: Path) -> dict:
    """The task as SkyPilot's own parser reads it."""
    if not SKY_PYTHON.is_file():
        pytest.skip("SkyPilot's environment is missing: run `make setup-sky` (make setup does)")
    code = ("import json, sys, sky\nt = sky.Task.from_yaml(sys.argv[1])\nr = list(t.resources)[0]\n"
            "print(json.dumps({'name': t.name, 'num_nodes': t.num_nodes, 'run': t.run, 'setup': t.setup, 'workdir': t.workdir,"
            " 'file_mounts': t.file_mounts, 'storage': {k: [v.name, v.mode.value] for k, v in t.storage_mounts.items()},"
            " 'accelerators': r.accelerators, 'spot': r.use_spot, 'secrets': sorted([r.name for r in t.managed_secret_refs] + list(t.secrets))}))")
    proc = subprocess.run([str(SKY_PYTHON), "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_skypilot_task_loads_with_skypilots_parser_with_torchrun_nodes_and_mounts(project, monkeypatch, toy_csv):
    monkeypatch.setenv("WANDB_API_KEY", SECRET_VALUE)
    proc = run_cli("launch", "skypilot", "--gpus", "H100:8", "--nodes", "2", "--bucket", "my-runs", "--dry_run", "true", "--",
                   "pretrain", "--corpus.sources", f"[{toy_csv}]", "--train.report_to", "[wandb]", "--output_dir", "runs/pt",
                   cwd=project)
    path = project / ".encoderfit" / "launch" / "encoderfit-pretrain-runs-pt" / "sky.yaml"
    assert SECRET_VALUE not in path.read_text() and SECRET_VALUE not in proc.stdout
    task = sky_task(path)
    assert task["num_nodes"] == 2 and task["accelerators"] == {"H100": 8} and task["spot"] is True
    assert task["workdir"] == str(project) and task["secrets"] == ["WANDB_API_KEY"]
    assert task["storage"] == {"/encoderfit-runs": ["my-runs", "MOUNT_CACHED"]}
    outside = os.path.normpath(os.path.join("~/sky_workdir", os.path.relpath(toy_csv, project)))
    assert task["file_mounts"][outside] == str(toy_csv)  # a data file outside the project, where the command looks
    assert task["file_mounts"]["~/encoderfit-src/src"] == str(ROOT / "src")
    assert "requirements/lock.txt" in task["setup"] and "--python 3.11" in task["setup"]
    run = " ".join(task["run"].split())
    assert ('-m torch.distributed.run --nnodes "$SKYPILOT_NUM_NODES" --node_rank "$SKYPILOT_NODE_RANK" --master_addr "$MASTER_ADDR"'
            ' --master_port 29500 --nproc_per_node "$SKYPILOT_NUM_GPUS_PER_NODE" -m encoderfit pretrain') in run
    assert 'MASTER_ADDR=$(echo "$SKYPILOT_NODE_IPS" | head -n1)' in task["run"]
    assert run.endswith("--output_dir /encoderfit-runs/proj/runs/pt")
    assert "sky jobs launch --yes --name encoderfit-pretrain-runs-pt --secret WANDB_API_KEY" in proc.stdout


@CPU_EXACT
def test_a_preempted_skypilot_job_resumes_from_the_bucket_when_relaunched(project, tiny_model, toy_csv, steady_run, tmp_path):
    """The task's own run command, run here as one node with one process: SIGKILL it after its first sealed
    checkpoint lands in the bucket directory, run it again, and it resumes and ends as an uninterrupted run does."""
    bucket = tmp_path / "bucket"
    run_cli("launch", "skypilot", "--gpus", "L4:1", "--runs_mount", str(bucket), "--dry_run", "true", "--",
            "train", "--data.source", str(toy_csv), "--model.name_or_path", str(tiny_model), *STEADY_TRAIN,
            "--output_dir", "runs/toy", cwd=project)
    task = yaml.safe_load((project / ".encoderfit" / "launch" / "encoderfit-train-runs-toy" / "sky.yaml").read_text())
    env = {**os.environ, "SKYPILOT_NUM_NODES": "1", "SKYPILOT_NODE_RANK": "0", "SKYPILOT_NODE_IPS": "127.0.0.1",
           "SKYPILOT_NUM_GPUS_PER_NODE": "1", "ENCODERFIT_PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"}
    output = bucket / "proj" / "runs" / "toy"
    partial = output.parent / ".toy.partial"

    first = subprocess.Popen(["bash", "-c", task["run"]], cwd=project, env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while len(sealed(partial)) < 1:
        assert first.poll() is None, f"the run ended before it could be preempted:\n{first.stderr.read()[-2000:]}"
        assert time.time() < deadline
        time.sleep(0.01)
    import psutil

    node = psutil.Process(first.pid)
    for process in [*node.children(recursive=True), node]:  # the spot instance goes away: every process on the node
        process.send_signal(signal.SIGKILL)              # (torchrun's workers run in sessions of their own)
    first.communicate(timeout=60)
    assert not output.exists() and sealed(partial)

    again = subprocess.run(["bash", "-c", task["run"]], cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resum" in again.stderr.lower()
    metrics, _ = load_run(output)
    reference, _ = load_run(steady_run)
    assert metrics["train"]["resumed_from"] and metrics["train"]["steps"] == reference["train"]["steps"]
    assert metrics["test"]["accuracy"] == reference["test"]["accuracy"]


@pytest.mark.parametrize("engine", ["modal", "skypilot", "pull"])
def test_launch_help_documents_every_option(engine):
    proc = run_cli("launch", engine, "--help", check=False)
    assert proc.returncode == 0, proc.stderr
    options = {"modal": ["--gpu", "--timeout", "--retries", "--detach", "--dry_run", "--runs_volume"],
               "skypilot": ["--gpus", "--nodes", "--cloud", "--spot", "--bucket", "--run", "--dry_run"],
               "pull": ["--runs_volume", "--overwrite"]}[engine]
    for option in options:
        assert option in proc.stdout
    assert "--command" not in proc.stdout  # the command comes after `--`


class FolderVolume:
    """A stand-in for a modal.Volume (Modal's servers are out of reach here) over a local folder, answering the two
    calls `download` makes with Modal's own FileEntry records."""

    def __init__(self, root: Path):
        self.root = root

    def listdir(self, path: str, recursive: bool = False):
        from modal.volume import FileEntry, FileEntryType

        where = self.root / path
        if not where.exists():
            raise FileNotFoundError(path)
        found = [where] if where.is_file() else sorted(where.rglob("*"))
        return [FileEntry(path=str(p.relative_to(self.root)), type=FileEntryType.FILE if p.is_file() else FileEntryType.DIRECTORY,
                          mtime=0, size=p.stat().st_size) for p in found]

    def read_file_into_fileobj(self, path: str, fileobj) -> int:
        data = (self.root / path).read_bytes()
        fileobj.write(data)
        return len(data)


def test_pull_copies_a_run_directory_or_one_file_into_place(trained_run, tmp_path):
    pytest.importorskip("modal")
    import shutil

    from encoderfit.core.errors import UserError
    from encoderfit.launch.on_modal import download

    volume = tmp_path / "volume"
    shutil.copytree(trained_run, volume / "proj" / "runs" / "toy")
    target = tmp_path / "proj" / "runs" / "toy"
    download(FolderVolume(volume), "proj/runs/toy", target)
    copied = sorted(p.relative_to(target) for p in target.rglob("*") if p.is_file())
    assert copied == sorted(p.relative_to(trained_run) for p in trained_run.rglob("*") if p.is_file())
    assert (target / "model" / "model.safetensors").read_bytes() == (trained_run / "model" / "model.safetensors").read_bytes()
    assert not list(target.parent.glob(".*partial*"))
    (volume / "proj" / "runs" / "toy" / "eval").mkdir()
    (volume / "proj" / "runs" / "toy" / "eval" / "test.json").write_text('{"accuracy": 1.0}')
    one = download(FolderVolume(volume), "proj/runs/toy/eval/test.json", tmp_path / "proj" / "out" / "test.json")
    assert json.loads(one.read_text()) == {"accuracy": 1.0}
    with pytest.raises(UserError, match="is not in the runs volume"):
        download(FolderVolume(volume), "proj/runs/missing", tmp_path / "x")


# Paths a careless or hostile user could give: each must reach the remote command as the same string, and run nothing
HOSTILE = ["runs/$(touch pwned)/y", 'a"""; import os; os.system("touch pwned") #', "runs/it's \"quoted\"/y",
           "runs/two\nlines/y", "runs/`touch pwned`/y", "runs/x; touch pwned; y/z"]


def no_pwned(*roots: Path) -> None:
    assert not [p for root in roots for p in root.rglob("pwned")], "a generated file ran a command"


@pytest.mark.parametrize("hostile", HOSTILE)
def test_skypilot_task_keeps_a_hostile_output_dir_as_data_when_its_run_script_runs(project, tmp_path, hostile):
    """The task is parsed back (YAML, SkyPilot's parser when installed), both scripts pass `bash -n`, and the run
    script itself runs here with a stand-in Python that records its arguments: the path arrives whole, its folder
    is made, and no command hidden in it runs."""
    bucket = tmp_path / "bucket"
    run_cli("launch", "skypilot", "--runs_mount", str(bucket), "--dry_run", "true", "--", "train", "--config", "recipe.yaml",
            "--output_dir", hostile, cwd=project)
    (path,) = (project / ".encoderfit" / "launch").glob("*/sky.yaml")
    task = yaml.safe_load(path.read_text())
    if SKY_PYTHON.is_file():
        assert sky_task(path)["run"] == task["run"]
    for script in (task["setup"], task["run"]):
        check = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
    record = tmp_path / "argv.json"
    stub = tmp_path / "stub-python"
    stub.write_text(f"#!{sys.executable}\nimport json, sys\njson.dump(sys.argv[1:], open({str(record)!r}, 'w'))\n")
    stub.chmod(0o755)
    env = {**os.environ, "ENCODERFIT_PYTHON": str(stub), "SKYPILOT_NUM_NODES": "1", "SKYPILOT_NODE_RANK": "0",
           "SKYPILOT_NODE_IPS": "127.0.0.1", "SKYPILOT_NUM_GPUS_PER_NODE": "1"}
    ran = subprocess.run(["bash", "-c", task["run"]], cwd=project, env=env, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    no_pwned(project, tmp_path)
    argv = json.loads(record.read_text())
    remote = f"{bucket}/proj/{hostile}"
    assert argv[-2:] == ["--output_dir", remote] and argv[argv.index("encoderfit") + 1:-2] == ["train", "--config", "recipe.yaml"]
    assert os.path.isdir(os.path.dirname(remote))


def import_app(app_file: Path, monkeypatch):
    """The generated module's top level run as `modal run` runs it (with Modal's library, or a stand-in for it where
    Modal is not installed)."""
    import ast
    from unittest import mock

    tree = ast.parse(app_file.read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "system"]
    if importlib.util.find_spec("modal") is None:
        monkeypatch.setitem(sys.modules, "modal", mock.MagicMock())
    spec = importlib.util.spec_from_file_location("launched_app", app_file)
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    return tree, app


@pytest.mark.parametrize("hostile", HOSTILE)
def test_modal_app_keeps_a_hostile_output_dir_as_data_when_imported(project, tmp_path, monkeypatch, hostile):
    run_cli("launch", "modal", "--dry_run", "true", "--", "train", "--config", "recipe.yaml", "--output_dir", hostile,
            cwd=project)
    (app_file,) = (project / ".encoderfit" / "launch").glob("*/modal_app.py")
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    monkeypatch.chdir(sandbox)
    import ast

    tree, app = import_app(app_file, monkeypatch)
    no_pwned(project, sandbox)
    assert hostile not in (ast.get_docstring(tree) or "")
    assert app.OUTPUT == hostile and app.COMMAND[-2:] == ["--output_dir", f"/runs/proj/{hostile}"]
    assert app.RUN_AGAIN == ["modal", "run", str(app_file)]


def test_launch_distill_uploads_the_teachers_run_and_data(project, trained_run, tiny_model, toy_csv):
    proc = run_cli("launch", "modal", "--dry_run", "true", "--", "distill", "--teacher", str(trained_run), "--student",
                   str(tiny_model), "--output_dir", "runs/student", cwd=project)
    uploads = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("uploads: "))[len("uploads: "):])
    assert {str(trained_run), str(tiny_model), str(toy_csv)} <= set(uploads)  # the teacher's data: distill reads it again


def test_launch_distill_refuses_what_distill_refuses_with_its_message(project, trained_run, tiny_model, tmp_path):
    from shared import quick_qa_run

    qa_run = quick_qa_run(tmp_path, tiny_model)  # a QA run, which distill refuses as a teacher
    local = run_cli("distill", "--teacher", str(qa_run), "--student", str(tiny_model), "--output_dir", "runs/s",
                    check=False, cwd=project)
    assert local.returncode == 2
    message = local.stderr.strip().splitlines()[-1].removeprefix("error: ")
    assert "is a qa run" in message
    assert message in launch_fails(project, "modal", "--dry_run", "true", "--", "distill", "--teacher", str(qa_run),
                                   "--student", str(tiny_model), "--output_dir", "runs/s")
    head = launch_fails(project, "skypilot", "--dry_run", "true", "--", "distill", "--teacher", str(trained_run),
                        "--student", str(tiny_model), "--model.head", "embedding", "--output_dir", "runs/s")
    assert "--model.head embedding: a student is distilled with a linear head" in head
