"""`encoderfit launch modal [--gpu ...] -- train --config my.yaml ...`: the same command in a Modal container.

`launch modal` writes a Modal app (.encoderfit/launch/NAME/modal_app.py, a plain file you can read and run again
with `modal run`), then runs it with Modal's own CLI, which builds the image, streams the log and returns the exit
code; the finished run directory is then copied from the runs volume to where it would have been written here.

The app: an image of Python 3.11 with the locked torch (CUDA build from PyPI) and every package of the project's lock,
the local encoderfit source, and the local files the command reads (config files, data, teacher runs) at the same
absolute paths as here, so every path in the config resolves alike. The output goes to a `modal.Volume` of runs
(committed as it trains; a retried or preempted container resumes from the newest sealed checkpoint), the Hugging
Face cache to another volume. HF_TOKEN, WANDB_API_KEY and the MLflow variables are read from this environment into a
Modal secret when the app runs (`modal.Secret.from_local_environ`): never written to the file or the log. Several GPUs
(`--gpu H100:4`) run the command under torchrun, one process per GPU.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

from ..core.errors import UserError, closest
from ..core.files import atomic_file, partial_dir, publish_dir
from .job import DISTRIBUTED, LAUNCH_DIR, Job, describe, locked_packages, parse_job, relative_key

log = logging.getLogger(__name__)
GPUS = ("T4", "L4", "A10", "A10G", "L40S", "A100", "A100-40GB", "A100-80GB", "RTX-PRO-6000", "H100", "H100!", "H200", "B200")
RUNS_ROOT, CACHE_ROOT, SOURCE_ROOT = "/runs", "/cache", "/opt/encoderfit"

TEMPLATE = '''"""Modal app written by `encoderfit launch modal` (encoderfit {version}).

Run it again with `modal run` on this file (RUN_AGAIN); `encoderfit launch pull OUTPUT` copies the run back.
Secrets are read from your environment when it runs (SECRETS names them); none is stored here.
Every value below is a Python literal (repr): a path or argument is data here, never code.
"""

import os
import subprocess
import sys

import modal

NAME = {name!r}
GPU = {gpu!r}
GPU_COUNT = {gpu_count!r}
TIMEOUT = {timeout!r}
RETRIES = {retries!r}
PYTHON = "3.11"  # the lock's Python
TORCH = {torch!r}
PACKAGES = {packages!r}  # requirements/lock.txt
SOURCE = {source!r}
UPLOADS = {uploads!r}  # (local path, path in the container): the same absolute paths as here
WORKDIR = {workdir!r}
RUNS_VOLUME, RUNS_ROOT = {runs_volume!r}, {runs_root!r}
CACHE_VOLUME, CACHE_ROOT = {cache_volume!r}, {cache_root!r}
SECRETS = {secrets!r}
COMMAND = {command!r}
DISTRIBUTED = {distributed!r}
DETACH = {detach!r}
OUTPUT = {output!r}  # where the run comes back to, relative to WORKDIR
RUN_AGAIN = {run_again!r}

image = (
    modal.Image.debian_slim(python_version=PYTHON)
    .pip_install(*TORCH)
    .pip_install(*PACKAGES)
    .env({{"HF_HOME": CACHE_ROOT + "/huggingface", "PYTHONPATH": {source_root!r}, "PYTHONUNBUFFERED": "1"}})
    .add_local_dir(SOURCE, {source_root!r} + "/encoderfit")
)
for local, remote in UPLOADS:
    image = image.add_local_dir(local, remote) if os.path.isdir(local) else image.add_local_file(local, remote)

app = modal.App(NAME)
runs = modal.Volume.from_name(RUNS_VOLUME, create_if_missing=True)
cache = modal.Volume.from_name(CACHE_VOLUME, create_if_missing=True)
secrets = [modal.Secret.from_local_environ(SECRETS)] if SECRETS else []  # empty inside the container


@app.function(image=image, gpu=GPU if GPU_COUNT == 1 else f"{{GPU}}:{{GPU_COUNT}}", timeout=TIMEOUT,
              retries=modal.Retries(max_retries=RETRIES, initial_delay=10.0), volumes={{RUNS_ROOT: runs, CACHE_ROOT: cache}},
              secrets=secrets)
def run() -> int:
    """The encoderfit command, resumed from its newest sealed checkpoint when a retry or preemption restarts it."""
    os.makedirs(WORKDIR, exist_ok=True)
    launcher = [sys.executable, "-m", "encoderfit"]
    if DISTRIBUTED and GPU_COUNT > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={{GPU_COUNT}}", "-m", "encoderfit"]
    code = subprocess.call(launcher + COMMAND, cwd=WORKDIR)
    runs.commit()
    if code not in (0, 2):  # 2: a user error, which a retry would only repeat
        raise RuntimeError(f"encoderfit exited with code {{code}}")
    return code


@app.local_entrypoint()
def main():
    if DETACH:
        call = run.spawn()
        print(f"submitted: function call {{call.object_id}}; `encoderfit launch pull` copies the run back when done")
        return
    code = run.remote()
    if code:
        sys.exit(code)
'''


def parse_gpu(gpu: str) -> tuple:
    """'H100' -> ('H100', 1); 'A100-80GB:4' -> ('A100-80GB', 4); an unknown name is a clear error."""
    name, _, count = gpu.partition(":")
    match = next((g for g in GPUS if g.lower() == name.lower()), None)
    if match is None:
        raise UserError(f"launch modal: unknown GPU '{name}'{closest(name, list(GPUS))}; one of: {', '.join(GPUS)} "
                        "(with :N for N of them)")
    if count and not (count.isdigit() and 1 <= int(count) <= 8):
        raise UserError(f"launch modal: --gpu {gpu}: the count after ':' must be 1 to 8")
    return match, int(count or 1)


def check_credentials() -> None:
    """Modal's token, from MODAL_TOKEN_ID/MODAL_TOKEN_SECRET or ~/.modal.toml (`modal token new` writes it)."""
    import modal.config

    if not (modal.config.config.get("token_id") and modal.config.config.get("token_secret")):
        raise UserError("launch modal: no Modal credentials; run `modal token new` (or set MODAL_TOKEN_ID and "
                        "MODAL_TOKEN_SECRET); nothing was submitted")


def render(job: Job, gpu: str, timeout: int, retries: int, detach: bool, runs_volume: str, cache_volume: str, path: Path,
           torch: List[str], packages: List[str]) -> str:
    """The Modal app's source for `job`, its image from the `torch` pin and the locked `packages`."""
    from .. import __version__

    name, count = parse_gpu(gpu)
    values = dict(version=__version__, name=job.name, gpu=name, gpu_count=count, timeout=timeout, retries=retries,
                  torch=torch, packages=packages, source=str(Path(__file__).resolve().parents[1]),
                  uploads=[(str(p), str(p)) for p in job.inputs], workdir=str(job.project), runs_volume=runs_volume,
                  runs_root=RUNS_ROOT, cache_volume=cache_volume, cache_root=CACHE_ROOT, secrets=job.secrets,
                  command=job.remote_argv(RUNS_ROOT), distributed=job.command in DISTRIBUTED, detach=detach,
                  source_root=SOURCE_ROOT, output=os.path.relpath(job.output, job.project),
                  run_again=["modal", "run", *(["--detach"] if detach else []), str(path)])
    return TEMPLATE.format(**values)


def launch_modal(command: List[str], gpu: str = "A100-40GB", timeout: int = 24 * 3600, retries: int = 2,
                 detach: bool = False, dry_run: bool = False, runs_volume: str = "encoderfit-runs",
                 cache_volume: str = "encoderfit-hf-cache") -> Path:
    """Run an encoderfit command on a Modal GPU; the run directory comes back here when it ends.

    Args:
        command: The encoderfit command after `--`: train, cv, tune, distill, pretrain, tune-pretrain, eval or export,
            with its options (`-- train --config my.yaml --train.epochs 3`).
        gpu: Modal GPU: T4, L4, A10G, L40S, A100-40GB, A100-80GB, H100, H200, B200 ...; NAME:N for N of them (the
            command then runs under torchrun, one process per GPU).
        timeout: Seconds the container may run (Modal's limit is 24 h).
        retries: Times Modal restarts a failed or preempted container; each restart resumes from the newest sealed
            checkpoint in the runs volume.
        detach: Submit and return; the run keeps going after this process exits (`encoderfit launch pull OUTPUT`
            copies it back later).
        dry_run: Write the app and print what would be submitted (image, GPU, volumes, secrets' names, command),
            without credentials or network.
        runs_volume: The Modal volume that holds run directories (created when missing).
        cache_volume: The Modal volume for the Hugging Face cache (models downloaded once).
    """
    parse_gpu(gpu)
    job = parse_job(command)
    if timeout < 60 or timeout > 24 * 3600:
        raise UserError(f"launch modal: --timeout must be 60 to 86400 seconds (got {timeout})")
    if retries < 0 or retries > 10:
        raise UserError(f"launch modal: --retries must be 0 to 10 (got {retries})")
    if not dry_run:
        check_credentials()
    path = job.project / LAUNCH_DIR / job.name / "modal_app.py"
    torch, packages = locked_packages()
    source = render(job, gpu, timeout, retries, detach, runs_volume, cache_volume, path, torch, packages)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        f.write(source)
    print(describe({"app": str(path), "image": f"python 3.11, {torch[0]} (CUDA), {len(packages)} locked packages, encoderfit source",
                    "gpu": "{}:{}".format(*parse_gpu(gpu)), "timeout_s": timeout, "retries": retries,
                    "volumes": {RUNS_ROOT: runs_volume, CACHE_ROOT: cache_volume},
                    "secrets (names only)": job.secrets, "uploads": [str(p) for p in job.inputs],
                    "command": shlex.join(job.remote_argv(RUNS_ROOT)), "comes back to": str(job.output)}))
    if dry_run:
        return path
    code = subprocess.call([sys.executable, "-m", "modal", "run", *(["--detach"] if detach else []), str(path)], cwd=job.project)
    if code != 0:
        raise UserError(f"launch modal: the remote command failed (exit code {code}); its log is above")
    if not detach:
        pull(job.output, runs_volume=runs_volume)
    return job.output


def pull(run: Path, runs_volume: str = "encoderfit-runs", overwrite: bool = False) -> Path:
    """Copy a run launched with `launch modal` from the runs volume to where it would have been written here.

    Args:
        run: The run's local path, as the launched command named it (its --output_dir or --output).
        runs_volume: The Modal volume that holds run directories.
        overwrite: Replace RUN if it exists here.
    """
    import modal

    check_credentials()
    project = Path.cwd().resolve()
    target = (project / run).resolve()
    if target.exists() and not overwrite:
        raise UserError(f"launch pull: {run} already exists here; pass --overwrite true to replace it")
    return download(modal.Volume.from_name(runs_volume), f"{project.name}/{relative_key(target, project)}", target)


def download(volume, key: str, target: Path) -> Path:
    """`key` of a Modal volume (a run directory, or one file) -> `target`, through a hidden directory (or a temporary
    file) renamed into place, so an interrupted copy leaves nothing half-written."""
    from modal.volume import FileEntryType

    try:
        entries = volume.listdir(key, recursive=True)
    except Exception as err:  # modal raises NotFoundError for a missing path
        raise UserError(f"launch pull: {key} is not in the runs volume (still running, or another --runs_volume?): {err}") from None
    files = [e for e in entries if e.type == FileEntryType.FILE]
    if not files:
        raise UserError(f"launch pull: {key} holds no files in the runs volume (the run has not written anything yet)")
    if len(files) == 1 and files[0].path.strip("/") == key.strip("/"):  # the output is one file (eval's metrics)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(target, "wb") as f:
            volume.read_file_into_fileobj(files[0].path, f)
        return target
    work = partial_dir(target)
    shutil.rmtree(work, ignore_errors=True)
    try:
        for entry in files:
            local = work / os.path.relpath(entry.path.strip("/"), key.strip("/"))
            local.parent.mkdir(parents=True, exist_ok=True)
            with open(local, "wb") as f:
                volume.read_file_into_fileobj(entry.path, f)
    except BaseException:  # an interrupted or failed copy leaves nothing half-copied
        shutil.rmtree(work, ignore_errors=True)
        raise
    if target.exists():
        shutil.rmtree(target)
    publish_dir(work, target)
    log.info("pulled %s (%d files) to %s", key, len(files), target)
    return target
