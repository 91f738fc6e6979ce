"""The subcommands, one record each: what the CLI (`cli.py`) and `encoderfit launch` (launch/job.py) both read.

A record names the function that implements the command ("module:function" in this package, imported on first use,
so `import encoderfit.commands` stays light) and what a launch needs to know of it: whether it can run on another
machine, which of its options name local files or directories to upload, which name run directories whose training
data it reads again, whether it runs under torchrun over the GPUs (and nodes) it is given, and a check of its
resolved config to make before anything is submitted. A new subcommand is one module here plus one entry.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple


@dataclass(frozen=True)
class Command:
    function: str
    """"module:function" (a module of encoderfit.commands, or any importable one): the function whose signature and docstring are the command's --help."""
    remote: bool = False
    """`encoderfit launch ... -- COMMAND` can run it on another machine (it writes a run, an evaluation or an export)."""
    distributed: bool = False
    """Started with torchrun over the GPUs (and nodes) a launch gives it."""
    path_options: Tuple[str, ...] = ()
    """Options (dotted, as in its resolved config) whose values may name local files or directories to upload."""
    run_options: Tuple[str, ...] = ()
    """Options naming run directories whose training data (their config's data.source) the command reads again."""
    check: Optional[str] = None
    """"module:function" called with (resolved config, project directory) before a launch submits anything."""

    def load(self) -> Callable:
        return _load(self.function)

    def load_check(self) -> Optional[Callable]:
        return _load(self.check) if self.check else None


def _load(reference: str) -> Callable:
    """"module:function": a module of this package by its name, else any importable module (a plugin's, a test's)."""
    module, name = reference.split(":")
    if "." not in module and importlib.util.find_spec(f"{__name__}.{module}") is not None:
        module = f"{__name__}.{module}"
    return getattr(importlib.import_module(module), name)


TRAINING = ("data.source", "model.name_or_path", "train.deepspeed")
PRETRAINING = ("corpus.sources", "tokenizer.path", "model.name_or_path", "train.deepspeed")

COMMANDS: Dict[str, Command] = {
    "train": Command("train:fit", remote=True, distributed=True, path_options=TRAINING),
    "cv": Command("cv:cross_validate", remote=True, path_options=TRAINING),
    "tune": Command("tune:tune", remote=True, path_options=(*TRAINING, "space")),
    "eval": Command("eval:evaluate", remote=True, path_options=("run", "data")),
    "predict": Command("predict:predict", remote=True, path_options=("run", "input")),
    "report": Command("report:report"),
    "export": Command("export:export", remote=True, path_options=("run",)),
    "serve": Command("serve:serve"),
    "pretrain": Command("pretrain:pretrain", remote=True, distributed=True, path_options=PRETRAINING),
    "tune-pretrain": Command("tune_pretrain:tune_pretrain", remote=True, path_options=(*PRETRAINING, "space")),
    "embed": Command("embed:embed"),
    "search": Command("search:search"),
    "distill": Command("distill:train_student", remote=True, distributed=True,
                       path_options=(*TRAINING, "teacher", "student", "distill.unlabelled", "distill.compare"),
                       run_options=("teacher", "distill.compare"), check="encoderfit.runs.distillation:check_config"),
    "monitor": Command("monitor:monitor"),
    "feedback": Command("feedback:feedback"),
    "retrain": Command("retrain:retrain"),
    "compress": Command("compress:compress_run", remote=True,
                        path_options=("run", "distill.unlabelled", "distill.compare", "train.deepspeed"),
                        run_options=("run", "distill.compare")),
}


def functions() -> Dict[str, Callable]:
    """Each subcommand's name -> its function (imported now)."""
    return {name: command.load() for name, command in COMMANDS.items()}
