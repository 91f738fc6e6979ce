"""`encoderfit launch skypilot [--gpus H100:8] [--nodes 2] -- pretrain --config ...`: a SkyPilot task for any cloud.

Writes .encoderfit/launch/NAME/sky.yaml and, with `--run true`, submits it as a managed job (`sky jobs launch`),
which SkyPilot restarts after a spot preemption or a failure. The task:
- workdir: this project, synced to every node; local files outside it that the command reads are file mounts at the
  path the command names them by;
- setup: Python 3.11 (uv), the locked torch (CUDA build from PyPI) and the project's lock, encoderfit installed from
  its source checkout (mounted at ~/encoderfit-src) or, for a PyPI install, its release;
- a bucket mounted at /encoderfit-runs (MOUNT_CACHED: written locally, uploaded in the background) holds the run
  directory, so a relaunched job finds the interrupted run's sealed checkpoints and resumes from the newest;
- run: `torchrun --nnodes $SKYPILOT_NUM_NODES --node_rank $SKYPILOT_NODE_RANK --master_addr <first node's IP>
  --nproc_per_node $SKYPILOT_NUM_GPUS_PER_NODE -m encoderfit COMMAND ... --output_dir /encoderfit-runs/<key>`;
- secrets: HF_TOKEN, WANDB_API_KEY and the MLflow variables by name; `sky jobs launch --secret NAME` reads their
  values from this environment, so they are never written into the YAML.
SkyPilot itself lives in its own environment (`make setup-sky`, or `pipx install skypilot`): its pins (click<8.2)
conflict with this project's. It is found on PATH or in .tools/skypilot.
"""

from __future__ import annotations

import os
import posixpath
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

import yaml

from ..core.errors import UserError, closest
from ..core.files import atomic_file
from .job import DISTRIBUTED, LAUNCH_DIR, Job, describe, parse_job

ACCELERATORS = ("T4", "L4", "A10", "A10G", "A40", "A100", "A100-80GB", "L40", "L40S", "H100", "H100-MEGA", "H100-SXM",
                "H200", "B200", "GB200", "V100", "V100-32GB", "P100", "K80", "RTX3090", "RTX4090", "RTX6000", "RTXPRO6000",
                "MI300X", "MI325X", "MI355X")
CLOUDS = ("aws", "gcp", "azure", "kubernetes", "lambda", "runpod", "nebius", "oci", "paperspace", "fluidstack",
          "cudo", "vast", "do", "ibm", "scp", "vsphere", "ssh")
# where each cloud keeps the credentials `sky check` verifies: an environment variable or a file
CREDENTIALS = {
    "aws": (["AWS_ACCESS_KEY_ID", "AWS_PROFILE"], ["~/.aws/credentials", "~/.aws/config"]),
    "gcp": (["GOOGLE_APPLICATION_CREDENTIALS"], ["~/.config/gcloud/application_default_credentials.json"]),
    "azure": (["AZURE_CLIENT_ID"], ["~/.azure/azureProfile.json"]),
    "kubernetes": (["KUBECONFIG"], ["~/.kube/config"]),
    "lambda": ([], ["~/.lambda_cloud/lambda_keys"]),
    "runpod": (["RUNPOD_API_KEY"], ["~/.runpod/config.toml"]),
    "nebius": ([], ["~/.nebius/credentials.json"]),
    "oci": ([], ["~/.oci/config"]),
}
RUNS_MOUNT = "/encoderfit-runs"


def parse_accelerators(gpus: str) -> str:
    """'H100:8' -> 'H100:8' (the canonical spelling); an unknown accelerator is a clear error."""
    name, _, count = gpus.partition(":")
    match = next((a for a in ACCELERATORS if a.lower() == name.lower()), None)
    if match is None and not name.lower().startswith("tpu-"):
        raise UserError(f"launch skypilot: unknown GPU '{name}'{closest(name, list(ACCELERATORS))}; e.g. "
                        f"{', '.join(ACCELERATORS[:12])} ... (`sky show-gpus` lists them), with :N for N per node")
    if count and not (count.isdigit() and 1 <= int(count) <= 16):
        raise UserError(f"launch skypilot: --gpus {gpus}: the count after ':' must be 1 to 16 per node")
    return f"{match or name}:{int(count or 1)}"


def sky_executable() -> Optional[str]:
    """SkyPilot's CLI: on PATH, or in the .tools/skypilot environment of encoderfit's checkout (`make setup-sky`)."""
    local = Path(__file__).resolve().parents[3] / ".tools" / "skypilot" / "bin" / "sky"
    return shutil.which("sky") or (str(local) if local.is_file() else None)


def check_credentials(cloud: Optional[str], env: Dict[str, str]) -> None:
    """Some cloud's credentials are present here (SkyPilot checks them for real when the job is submitted)."""
    clouds = [cloud] if cloud else list(CREDENTIALS)
    for name in clouds:
        variables, files = CREDENTIALS.get(name, ([], []))
        if name not in CREDENTIALS or any(env.get(v) for v in variables) or any(Path(f).expanduser().is_file() for f in files):
            return
    where = "; ".join(f"{n}: {' or '.join(CREDENTIALS[n][0] + CREDENTIALS[n][1])}" for n in clouds[:4])
    raise UserError(f"launch skypilot: no {cloud or 'cloud'} credentials here ({where}); set them up, then run "
                    "`sky check`; nothing was submitted")


def run_script(job: Job, runs_mount: str) -> str:
    """The task's run command: torchrun over every GPU of every node for the commands that train, else rank 0 only."""
    output = f"{runs_mount.rstrip('/')}/{job.key}"
    argv = " ".join(shlex.quote(a) for a in job.remote_argv(runs_mount))
    lines = ["set -euo pipefail", 'PY="${ENCODERFIT_PYTHON:-$HOME/encoderfit-env/bin/python}"  # setup\'s environment',
             f"mkdir -p {shlex.quote(posixpath.dirname(output))}"]  # every user value shell-quoted
    if job.command in DISTRIBUTED:
        lines += ['MASTER_ADDR=$(echo "$SKYPILOT_NODE_IPS" | head -n1)',
                  '"$PY" -m torch.distributed.run --nnodes "$SKYPILOT_NUM_NODES" --node_rank '
                  '"$SKYPILOT_NODE_RANK" --master_addr "$MASTER_ADDR" --master_port 29500 --nproc_per_node '
                  f'"$SKYPILOT_NUM_GPUS_PER_NODE" -m encoderfit {argv}']
    else:
        lines += ['if [ "$SKYPILOT_NODE_RANK" = "0" ]; then', f'  "$PY" -m encoderfit {argv}', "fi"]
    return "\n".join(lines) + "\n"


class _Literal(yaml.SafeDumper):
    """Multi-line strings (setup, run) as YAML literal blocks, as they are written by hand."""


_Literal.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))


SOURCE = "~/encoderfit-src"  # where encoderfit's own source checkout (or nothing, for a PyPI install) is mounted
SETUP = """set -euo pipefail
python3 -m pip install --user -q uv
python3 -m uv venv --python 3.11 --allow-existing ~/encoderfit-env
{install}
"""


def setup_script(mounts: Dict[str, object], extras: str = "track") -> str:
    """Python 3.11, the locked torch and packages, encoderfit (with `extras`): from the mounted source checkout (the
    lock is in it), else encoderfit's release of this version from PyPI."""
    from .. import __version__

    root = Path(__file__).resolve().parents[3]
    uv = "python3 -m uv pip install --python ~/encoderfit-env/bin/python"
    if (root / "pyproject.toml").is_file() and (root / "requirements" / "lock.txt").is_file():
        for part in ("pyproject.toml", "README.md", "src", "requirements"):
            mounts[f"{SOURCE}/{part}"] = str(root / part)
        install = f"{uv} -r {SOURCE}/requirements/torch.txt\n{uv} -c {SOURCE}/requirements/lock.txt -e \"$HOME/encoderfit-src[{extras}]\""
    else:
        install = f"{uv} \"encoderfit[{extras}]=={__version__}\""
    return SETUP.format(install=install)


def task(job: Job, gpus: str, nodes: int, cloud: Optional[str], spot: bool, bucket: str, runs_mount: str) -> Dict:
    """The SkyPilot task (its YAML as a mapping)."""
    mounts: Dict[str, object] = {runs_mount: {"name": bucket, "mode": "MOUNT_CACHED"}}
    for path in job.inputs:  # inside the project they come with the workdir; outside, at the path the command uses
        if job.project not in path.parents:
            relative = os.path.relpath(path, job.project)
            mounts[posixpath.normpath(f"~/sky_workdir/{relative}") if not relative.startswith("/") else str(path)] = str(path)
    resources: Dict[str, object] = {"accelerators": gpus, "use_spot": spot, "disk_size": 256}
    if cloud:
        resources["cloud"] = cloud
    return {"name": job.name, "num_nodes": nodes, "resources": resources, "workdir": str(job.project),
            "file_mounts": mounts, **({"secrets": {name: None for name in job.secrets}} if job.secrets else {}),
            "setup": setup_script(mounts, "track,ray" if job.config.get("engine") == "ray" else "track"),
            "run": run_script(job, runs_mount)}


def launch_skypilot(command: List[str], gpus: str = "H100:1", nodes: int = 1, cloud: Optional[str] = None,
                    spot: bool = True, bucket: Optional[str] = None, run: bool = False, dry_run: bool = False,
                    runs_mount: str = RUNS_MOUNT) -> Path:
    """Write a SkyPilot task for an encoderfit command (several nodes under torchrun) and, with --run, submit it.

    Args:
        command: The encoderfit command after `--` (train, distill and pretrain run under torchrun on every GPU of
            every node; the others on the first node's first GPU).
        gpus: Accelerators per node, NAME:N (H100:8, A100-80GB:4, L4:1 ...).
        nodes: Nodes; torchrun joins them (the first node's IP is the rendezvous).
        cloud: A cloud to insist on (aws, gcp, azure, kubernetes, lambda, runpod ...); default: SkyPilot's cheapest.
        spot: Use spot instances; a managed job relaunches after a preemption and resumes from the newest sealed
            checkpoint in the bucket.
        bucket: The bucket for run directories (created by SkyPilot when missing). Default: encoderfit-runs-<user>.
        run: Submit with `sky jobs launch` (needs SkyPilot and cloud credentials); default: only write the task.
        dry_run: Print the task's YAML and what would be submitted, without credentials or network.
        runs_mount: Where the bucket is mounted on the nodes.
    """
    accelerators = parse_accelerators(gpus)
    job = parse_job(command)
    if nodes < 1 or nodes > 64:
        raise UserError(f"launch skypilot: --nodes must be 1 to 64 (got {nodes})")
    if nodes > 1 and job.command not in DISTRIBUTED:
        raise UserError(f"launch skypilot: `{job.command}` runs on one node; --nodes > 1 is for {', '.join(DISTRIBUTED)}")
    if cloud is not None and cloud not in CLOUDS:
        raise UserError(f"launch skypilot: unknown cloud '{cloud}'{closest(cloud, list(CLOUDS))}; one of: {', '.join(CLOUDS)}")
    bucket = bucket or f"encoderfit-runs-{os.environ.get('USER', 'user')}".lower()
    sky = sky_executable()
    if run and not dry_run:
        if sky is None:
            raise UserError("launch skypilot: SkyPilot is not installed; `make setup-sky` (or `pipx install skypilot`), "
                            "then `sky check`")
        check_credentials(cloud, dict(os.environ))
    spec = task(job, accelerators, nodes, cloud, spot, bucket, runs_mount)
    path = job.project / LAUNCH_DIR / job.name / "sky.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        yaml.dump(spec, f, Dumper=_Literal, sort_keys=False, width=1000)
    submit = [sky or "sky", "jobs", "launch", "--yes", "--name", job.name, *[a for s in job.secrets for a in ("--secret", s)], str(path)]
    print(describe({"task": str(path), "nodes": nodes, "gpus per node": accelerators, "cloud": cloud or "cheapest",
                    "spot": spot, "bucket": f"{bucket} at {runs_mount}", "secrets (names only)": job.secrets,
                    "command": shlex.join(job.remote_argv(runs_mount)), "submit": shlex.join(submit),
                    "resume after preemption": "automatic (managed job); or run the submit command again"}))
    if dry_run:
        print(path.read_text())
        return path
    if run:
        code = subprocess.call(submit, cwd=job.project)
        if code != 0:
            raise UserError(f"launch skypilot: `sky jobs launch` failed (exit code {code}); its output is above")
    return path
