"""A run's settings as one file, config.yaml: written when a run starts, the one source later stages read (a resumed
run compares itself with it), readable by later versions (renamed and moved settings mapped, unknown ones named)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import yaml

from .args import DataArgs, ModelArgs, ReportArgs, TrainArgs
from .errors import UserError, closest

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
LEGACY_TASK = "classification"  # the only task before encoderfit 0.2: what a run or model directory without one holds
GROUPS = ("data", "model", "train", "report")
# Settings renamed since a run directory could have been written: old dotted key -> new one. An old run directory
# then still loads, with a warning.
RENAMED: Dict[str, str] = {}
# Settings that moved into their task's own group (the task's `Options`, `--ner.documents`): old dotted key -> (name in
# the group, its old default, the tasks that read it). An old config.yaml's value moves into the run's task's group
# when it is not the old default and that task reads it; the default is dropped.
MOVED: Dict[str, Tuple[str, object, Tuple[str, ...]]] = {
    "data.target_range": ("target_range", None, ("regression", "similarity")),
    "data.tag_scheme": ("tag_scheme", None, ("ner",)),
    "data.documents": ("documents", False, ("ner",)),
    "data.invalid_tags": ("invalid_tags", "repair", ("ner",)),
    "train.subword_labels": ("subword_labels", "all", ("ner",)),
    "train.regression_loss": ("loss", "mse", ("regression",)),
    "train.embedding_loss": ("loss", "auto", ("embedding", "similarity")),
    "train.contrastive_mini_batch": ("mini_batch", None, ("embedding", "similarity")),
    "train.matryoshka_dims": ("matryoshka_dims", None, ("embedding", "similarity")),
}


def flat(tree: dict, prefix: str = "") -> dict:
    """A config mapping as {"group.setting": value}; free-form settings (fsdp_config) stay whole."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and key != "fsdp_config":
            out.update(flat(value, f"{name}."))
        else:
            out[name] = value
    return out


def moved_flag(flag: str) -> Optional[str]:
    """What to write instead of an old flag such as --data.documents (None if it did not move)."""
    key = flag.lstrip("-").split("=", 1)[0]
    if key not in MOVED:
        return None
    name, _, tasks = MOVED[key]
    return " or ".join(f"--{task}.{name}" for task in tasks)


class SavedConfig:
    """A run's settings as config.yaml: the one file later stages (and a resumed run) read back."""

    def to_dict(self) -> dict:
        raw = dataclasses.asdict(self)
        if raw.get("distill", 0) is None:  # only a distilled student has the section
            del raw["distill"]
        return {**{k: v for k, v in raw.items() if k != "options"}, **raw.get("options", {})}  # task groups: top level

    def save(self, directory: Path) -> Path:
        path = Path(directory) / CONFIG_FILE
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


@dataclass
class RunConfig(SavedConfig):
    """Everything a run was made with, plus what was resolved at run time (task, labels, max_length, precision)."""

    data: DataArgs
    model: ModelArgs
    train: TrainArgs
    report: ReportArgs = field(default_factory=ReportArgs)
    task: str = LEGACY_TASK
    labels: List[str] = field(default_factory=list)
    resolved: dict = field(default_factory=dict)
    options: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    """The settings of the task's own group ({"ner": {"documents": True}}), as the task read them: config.yaml keeps
    each group at the top level, as a YAML config given to --config has it."""
    distill: Optional[Dict[str, Any]] = None
    """For a student of `encoderfit distill`: its teacher run and model, the distillation settings and the transfer
    set's make-up."""

    @classmethod
    def from_dict(cls, raw: dict, where: str = "config") -> "RunConfig":
        """Build from a saved mapping. Keys this version does not know are dropped with a warning (renamed ones are
        mapped); one that looks like a misspelling of a missing key is an error, since its meaning is unclear."""
        if not isinstance(raw, dict):
            raise UserError(f"{where}: expected a mapping of settings, found {type(raw).__name__}; restore the file or re-train")
        task = str(raw.get("task") or LEGACY_TASK)
        plain = set(GROUPS) | {"task", "labels", "resolved", "distill"}
        options = {task: dict(raw[task])} if isinstance(raw.get(task), dict) else {}  # the task's own group
        groups = {}
        for group, kind in (("data", DataArgs), ("model", ModelArgs), ("train", TrainArgs), ("report", ReportArgs)):
            values = _moved(dict(raw.get(group) or {}), group, task, options)
            groups[group] = build_group(kind, group, known_settings(kind, group, values, where), where)
        extra = sorted(set(raw) - plain - set(options))
        if extra:
            log.warning("warning: %s: ignoring unknown top-level key(s) %s (written by another encoderfit version?)", where, extra)
        return cls(**groups, task=task, labels=list(raw.get("labels") or []), resolved=dict(raw.get("resolved") or {}),
                   options={key: values for key, values in options.items() if values}, distill=raw.get("distill"))

    @classmethod
    def load(cls, run_dir: Path, check: Optional[Callable[[dict, str], None]] = None) -> "RunConfig":
        """A run directory's config.yaml; `check(raw, where)` first sees the saved mapping (the run directory asks the
        task registry whether the run is a fine-tuning one: the config layer knows no tasks)."""
        path = Path(run_dir) / CONFIG_FILE
        if not path.is_file():
            raise UserError(f"{run_dir}: not a run directory ({CONFIG_FILE} is missing); pass the directory that `encoderfit train` wrote")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            reason = getattr(err, "problem", None) or type(err).__name__
            raise UserError(f"{path}: not valid YAML ({reason}{where}); restore the file or re-train the run") from None
        if check is not None and isinstance(raw, dict):
            check(raw, str(path))
        return cls.from_dict(raw or {}, str(path))


def _moved(values: dict, group: str, task: str, options: Dict[str, dict]) -> dict:
    """A group's settings without those that moved into a task's group (config.yaml of encoderfit <= 0.2.0): a value
    other than the old default goes to the run's task's group, when that task reads it."""
    for key in [k for k in values if f"{group}.{k}" in MOVED]:
        name, default, tasks = MOVED[f"{group}.{key}"]
        value = values.pop(key)
        if value != default and task in tasks:
            options.setdefault(task, {}).setdefault(name, value)
    return values


def known_settings(kind, group: str, values: dict, where: str) -> dict:
    """The settings of one group that this version knows, renamed ones mapped to their new names."""
    fields = {f.name for f in dataclasses.fields(kind)}
    for key in sorted(set(values) - fields):
        new = RENAMED.get(f"{group}.{key}", "")
        if new.startswith(f"{group}.") and new.split(".", 1)[1] in fields:
            log.warning("warning: %s: %s.%s is now %s", where, group, key, new)
            values.setdefault(new.split(".", 1)[1], values.pop(key))
            continue
        hint = closest(key, sorted(fields - set(values)))
        if hint:
            raise UserError(f"{where}: unknown key {group}.{key}{hint}; rename it in the file")
        log.warning("warning: %s: ignoring unknown key %s.%s (written by another encoderfit version?)", where, group, key)
        values.pop(key)
    return values


def build_group(kind, group: str, values: dict, where: str):
    try:
        return kind(**values)
    except UserError as err:
        raise UserError(f"{where}: {err}") from None
    except TypeError as err:
        raise UserError(f"{where}: the {group} settings are malformed ({err}); restore the file or re-train") from None
