"""The command a launch runs elsewhere: its resolved config, the local files it reads, where it writes, what secrets
it needs. Engine-neutral: modal.py and skypilot.py turn a Job into a Modal app or a SkyPilot task.

The command's config is resolved by encoderfit itself (`encoderfit SUBCOMMAND ... --print_config`), so a launch
reads config files and flags exactly as the remote run will, and a mistake is caught here, before anything is
submitted.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import yaml

from ..core.errors import UserError, closest

from ..commands import COMMANDS as REGISTRY

# what a launch can run (the registry's records say): the commands that write a run (or its evaluation/export) and gain
# from a GPU; those started with torchrun over the GPUs (and nodes) they are given
COMMANDS = tuple(name for name, command in REGISTRY.items() if command.remote)
DISTRIBUTED = tuple(name for name, command in REGISTRY.items() if command.distributed)
FILE_SUFFIXES = {".csv", ".tsv", ".json", ".jsonl", ".parquet", ".txt", ".yaml", ".yml", ".conll", ".iob", ".bio", ".gz",
                 ".zip", ".bz2", ".xz", ".xml", ".sgm", ".arrow", ".md"}
LAUNCH_DIR = Path(".encoderfit") / "launch"  # in the project: each launch's generated app or task, by name
# forwarded to the remote run when set here (never written to a file or the log)
SECRETS = ("HF_TOKEN", "WANDB_API_KEY", "WANDB_ENTITY", "WANDB_PROJECT", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN",
           "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_EXPERIMENT_NAME")


@dataclass
class Job:
    """One encoderfit command to run on another machine."""

    command: str                       # the subcommand: train, pretrain ...
    argv: List[str]                    # its arguments, as given
    config: Dict                       # the resolved config (what the remote run will read)
    project: Path                      # the local working directory: relative paths are relative to it
    inputs: List[Path] = field(default_factory=list)   # local files and directories the command reads
    output: Optional[Path] = None      # where the command would have written here (absolute)
    output_flag: str = "--output_dir"  # the option that names it
    secrets: List[str] = field(default_factory=list)   # environment variables to forward

    @property
    def key(self) -> str:
        """The output's place in the runs volume or bucket: <project folder>/<output relative to the project>."""
        return f"{self.project.name}/{relative_key(self.output, self.project)}"

    @property
    def name(self) -> str:
        """A short name for the launch (app, task, files): encoderfit-<command>-<output's last two parts>."""
        slug = re.sub(r"[^a-z0-9]+", "-", "-".join(self.output.parts[-2:]).lower()).strip("-")
        return f"encoderfit-{self.command}-{slug}"[:60].rstrip("-")

    def remote_argv(self, runs_root: str) -> List[str]:
        """The command to run there: the same arguments, with the output moved into the runs volume/bucket."""
        argv, skip = [], False
        for arg in self.argv:  # the output given here is replaced, not repeated
            if skip or arg == self.output_flag or arg.startswith(self.output_flag + "="):
                skip = arg == self.output_flag
                continue
            argv.append(arg)
        return [self.command, *argv, self.output_flag, f"{runs_root.rstrip('/')}/{self.key}"]

    @property
    def report_to(self) -> List[str]:
        return list(((self.config.get("train") or {}).get("report_to")) or [])


def relative_key(path: Path, project: Path) -> str:
    try:
        return path.relative_to(project).as_posix()
    except ValueError:  # outside the project: keyed by its absolute path
        return "_abs/" + path.as_posix().lstrip("/")


def resolve_config(command: List[str], cwd: Path) -> Dict:
    """`encoderfit COMMAND... --print_config` in a process of its own: the config the remote run will read."""
    proc = subprocess.run([sys.executable, "-m", "encoderfit", *command, "--print_config"], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1].removeprefix("error: ") if lines else f"exit code {proc.returncode}"
        raise UserError(f"launch: `encoderfit {' '.join(command[:1])}` would fail: {reason}; nothing was submitted")
    return yaml.safe_load(proc.stdout) or {}


def _values(config: Dict, dotted: str) -> Iterator[str]:
    value = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return
        value = value[part]
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, (str, Path)) and str(item):
            yield str(item)


def looks_local(value: str) -> bool:
    """A value written as a path (./x, ../x, /x, ~/x, or a file name with a data suffix), not a hub or recipe name."""
    return value.startswith(("./", "../", "/", "~")) or Path(value).suffix.lower() in FILE_SUFFIXES


def config_files(argv: List[str]) -> List[str]:
    files = []
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            files.append(argv[i + 1])
        elif arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
    return files


def _run_data(command: str, config: Dict, project: Path) -> Iterator[Tuple[str, str]]:
    """(where, source) of the data a run named by the command's run options was trained on (a teacher's: distill
    re-reads it), as its config.yaml records it."""
    from ..runs.rundir import RunDir

    for option in REGISTRY[command].run_options:
        for value in _values(config, option):
            run = project / Path(value).expanduser()
            if RunDir.is_run(run):
                source = RunDir(run).config().data.source
                if source:
                    yield f"{option} {value}: its data.source", str(source)


def local_inputs(command: str, config: Dict, argv: List[str], project: Path) -> List[Path]:
    """The local files and directories the command reads (a teacher run's data too); a path that does not exist here
    is a clear error."""
    found: List[Tuple[str, Path]] = [("--config", project / f) for f in config_files(argv)]
    named = [(option, value) for option in REGISTRY[command].path_options for value in _values(config, option)]
    for option, value in named + list(_run_data(command, config, project)):
        path = (project / Path(value).expanduser()).resolve()
        if path.exists():
            found.append((option, path))
        elif looks_local(value):
            raise UserError(f"launch: {option} names {value}, which does not exist here; fix the path (nothing "
                            "was submitted)")
    for option, path in found:
        if not path.exists():
            raise UserError(f"launch: {option} names {path}, which does not exist here; nothing was submitted")
    paths = sorted({p.resolve() for _, p in found})
    return [p for p in paths if not any(p != q and q in p.parents for q in paths)]  # a folder covers what it holds


def output_of(command: str, config: Dict, project: Path) -> Tuple[Path, str]:
    """Where the command writes (absolute) and the option that names it."""
    if "output_dir" in config:
        return (project / config["output_dir"]).resolve(), "--output_dir"
    run = project / str(config.get("run") or "")
    if command == "export":
        return (project / config["output"]).resolve() if config.get("output") else (run / "onnx").resolve(), "--output"
    if command == "eval":
        if not config.get("data"):
            raise UserError("launch eval: pass --data (a data set to score); re-scoring a run in place is quick local "
                            "work: `encoderfit eval RUN`")
        default = run / "eval" / f"{config.get('split') or 'test'}.json"
        return (project / config["output"]).resolve() if config.get("output") else default.resolve(), "--output"
    if command == "predict":  # a batch job over a corpus (with --engine ray, Ray Data on the node's GPUs)
        if not config.get("output"):
            raise UserError("launch predict: pass --output (a .jsonl, .csv or .parquet file) for the predictions")
        return (project / config["output"]).resolve(), "--output"
    raise UserError(f"launch: cannot tell where `encoderfit {command}` writes")  # pragma: no cover - COMMANDS cover it


def needed_secrets(report_to: List[str], env: Dict[str, str]) -> List[str]:
    """The variables the remote run needs from here; a tracker without its credentials is a clear error (the trackers'
    own check, runs/tracking.py, for a run elsewhere)."""
    from ..runs.tracking import check_trackers

    try:
        check_trackers(report_to, env, remote=True)
    except UserError as err:
        raise UserError(f"launch: {err}; nothing was submitted") from None
    return [name for name in SECRETS if env.get(name)]


def parse_job(command: List[str], project: Optional[Path] = None, env: Optional[Dict[str, str]] = None) -> Job:
    """Check the command after `--` and resolve what it reads and writes."""
    project = (project or Path.cwd()).resolve()
    env = dict(os.environ if env is None else env)
    if not command:
        raise UserError("launch: name the command to run after `--`, e.g. `encoderfit launch modal -- train --config "
                        f"my.yaml`; one of: {', '.join(COMMANDS)}")
    if command[0] not in COMMANDS:
        raise UserError(f"launch: cannot run `{command[0]}` remotely{closest(command[0], list(COMMANDS))}; one of: "
                        f"{', '.join(COMMANDS)}")
    config = resolve_config(command, project)
    check = REGISTRY[command[0]].load_check()  # the command's own checks (distill: the teacher, the student's settings)
    if check is not None:
        try:
            check(config, project)
        except UserError as err:
            raise UserError(f"launch: `encoderfit {command[0]}` would fail: {err}; nothing was submitted") from None
    output, flag = output_of(command[0], config, project)
    job = Job(command[0], list(command[1:]), config, project, local_inputs(command[0], config, command[1:], project), output, flag)
    job.secrets = needed_secrets(job.report_to, env)
    return job


def locked_packages(project_root: Optional[Path] = None) -> Tuple[List[str], List[str]]:
    """(torch pin, every other pin) of the project's lock (requirements/torch.txt, requirements/lock.txt); outside a
    source checkout, the versions installed here."""
    root = project_root or Path(__file__).resolve().parents[3]
    lock, torch = root / "requirements" / "lock.txt", root / "requirements" / "torch.txt"
    if lock.is_file() and torch.is_file():
        pins = [line.split("#")[0].strip() for line in lock.read_text().splitlines()]
        torch_pin = [line.split("#")[0].strip() for line in torch.read_text().splitlines() if line.strip().startswith("torch")]
        return torch_pin, [p for p in pins if "==" in p]
    from importlib.metadata import distributions

    installed = sorted({f"{d.metadata['Name'].lower()}=={d.version}" for d in distributions() if d.metadata["Name"]})
    torch_pin = [p.split("+")[0] for p in installed if p.startswith("torch==")]
    return torch_pin, [p for p in installed if not p.startswith(("torch==", "encoderfit=="))]


def describe(lines: Dict[str, object]) -> str:
    """What would be submitted, one `key: value` line each (values as JSON where not plain text)."""
    return "\n".join(f"{k}: {v if isinstance(v, str) else json.dumps(v)}" for k, v in lines.items())
