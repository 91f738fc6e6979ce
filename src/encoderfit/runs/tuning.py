"""Hyperparameter search with Optuna, shared by `tune` and `tune-pretrain`: the search space and its checks, the
study (resumable, in RUN/study.db), the pruning reporter, and the table of trials."""

from __future__ import annotations

import csv
import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set, Tuple
from ..core.args import TrainArgs
from ..core.distributed import world_size
from ..core.errors import UserError, closest
from ..core.files import atomic_file, check_writable
from .rundir import RunDir
from .lifecycle import config_changes

log = logging.getLogger(__name__)


STUDY_NAME = "encoderfit"


# The ModernBERT paper's fine-tuning sweep, widened a little: any of these can be replaced with --space.
DEFAULT_SPACE: Dict[str, Dict[str, Any]] = {
    "train.learning_rate": {"low": 1e-5, "high": 1e-4, "log": True},
    "train.epochs": {"choices": [1, 2, 3]},
    "train.batch_size": {"choices": [16, 32]},
    "train.weight_decay": {"choices": [0.0, 1e-5, 1e-2]},
    "train.warmup_ratio": {"low": 0.0, "high": 0.2},
}


# Settings a trial may change: everything in `train`, and the model settings that need no re-tokenizing.
TUNABLE = {f"train.{f.name}" for f in dataclasses.fields(TrainArgs)} | {"model.classifier_pooling", "model.attention_dropout"}


def check_space(space: Dict[str, Dict[str, Any]], tunable: Set[str]) -> None:
    if not space:
        raise UserError("space: empty search space; name at least one setting, e.g. train.learning_rate: {low: 1e-5, high: 1e-4, log: true}")
    for name, spec in space.items():
        if name not in tunable:
            raise UserError(f"space: '{name}' cannot be tuned{closest(name, tunable)}; tunable: train.* and {sorted(tunable - {n for n in tunable if n.startswith('train.')})}")
        if not isinstance(spec, dict) or not ("choices" in spec or {"low", "high"} <= set(spec)):
            raise UserError(f"space.{name}: give either {{choices: [...]}} or {{low: ..., high: ...}} (optional log: true, step: ...)")
        if "choices" not in spec and not spec["low"] < spec["high"]:
            raise UserError(f"space.{name}: low must be below high (got {spec['low']} and {spec['high']})")


def check_space_values(cfg, space: Dict[str, Dict[str, Any]]) -> None:
    """Every value a trial can draw is a valid setting: each range's bounds and every choice go through the config's
    own checks now, before a study exists (a bad bound would otherwise fail the first trial that draws it, and leave
    a study recording a space that the corrected command may not continue)."""
    for name, spec in space.items():
        values = list(spec["choices"]) if "choices" in spec else [spec["low"], spec["high"]]
        if "choices" not in spec and spec.get("log") and not spec["low"] > 0:
            raise UserError(f"space.{name}: a log range needs low > 0 (got {spec['low']}); drop log: true or raise low")
        for value in values:
            try:
                with_params(cfg, {name: value})
            except UserError as err:
                raise UserError(f"space.{name}: {value} is not a valid value ({err}); change the range or choices") from None
            except (TypeError, ValueError):
                raise UserError(f"space.{name}: {value!r} is not a valid value for this setting; change the range or choices") from None


def _suggest(trial, space: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    params = {}
    for name, spec in space.items():
        if "choices" in spec:
            params[name] = trial.suggest_categorical(name, list(spec["choices"]))
        elif isinstance(spec["low"], int) and isinstance(spec["high"], int) and not isinstance(spec["low"], bool):
            params[name] = trial.suggest_int(name, spec["low"], spec["high"], step=spec.get("step", 1), log=spec.get("log", False))
        else:
            params[name] = trial.suggest_float(name, float(spec["low"]), float(spec["high"]), step=spec.get("step"), log=spec.get("log", False))
    return params


def with_params(cfg, params: Dict[str, Any]):
    """A copy of `cfg` (a run's or a pre-training's config) with the trial's settings (validated by the dataclasses,
    like any config)."""
    groups = {}
    for group in {k.split(".", 1)[0] for k in params}:
        changes = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith(f"{group}.")}
        groups[group] = dataclasses.replace(getattr(cfg, group), **changes)
    return dataclasses.replace(cfg, **groups, resolved={})


def reporter(trial, metric: str):
    """A Trainer callback that tells the trial each validation score and stops training when the pruner says so."""
    from transformers import TrainerCallback

    class ReportToOptuna(TrainerCallback):
        pruned, reported = False, -1

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            step = round(state.epoch * 100)  # in hundredths of an epoch, comparable across batch sizes
            if step <= self.reported:  # a second evaluation at the same point (the final one): optuna keeps the first
                return control
            trial.report(metrics[f"eval_{metric}"], step=step)
            self.reported = step
            if trial.should_prune():
                self.pruned, control.should_training_stop = True, True
            return control

    return ReportToOptuna()


def _open_study(path: Path, cfg, space: Dict, pruner: str, startup_trials: int, greater_is_better: bool):
    import optuna

    direction = "maximize" if greater_is_better else "minimize"
    study = optuna.create_study(
        storage=f"sqlite:///{path}", study_name=STUDY_NAME, load_if_exists=True, direction=direction,
        sampler=optuna.samplers.TPESampler(seed=cfg.train.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=startup_trials) if pruner == "median" else optuna.pruners.NopPruner(),
    )
    if study.direction.name.lower() != direction:
        raise UserError(f"{path}: this study {study.direction.name.lower()}s, but train.metric_for_best={cfg.train.metric_for_best} "
                        f"needs {direction}; use another --output_dir")
    fingerprint = {"config": {k: v for k, v in cfg.to_dict().items() if k not in ("resolved", "labels")}, "space": space}
    before = study.user_attrs.get("config")
    if before is None:
        study.set_user_attr("config", fingerprint["config"])
        study.set_user_attr("space", space)
    else:
        changes = config_changes(before, cfg)
        if study.user_attrs.get("space") != space:
            changes.insert(0, "the search space changed")
        finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
        if changes and not finished:  # nothing of it is worth keeping: it must not block the corrected command
            log.warning("warning: %s holds a search with another config (%s) in which no trial finished; starting afresh",
                        path, changes[0])
            optuna.delete_study(study_name=STUDY_NAME, storage=f"sqlite:///{path}")
            return _open_study(path, cfg, space, pruner, startup_trials, greater_is_better)
        if changes:
            raise UserError(f"{path} holds a search with another config ({changes[0]}); run the same config to continue it, "
                            "or choose another --output_dir")
    for trial in study.trials:  # cut off by a crash: count it as failed, and run its settings again first
        if trial.state == optuna.trial.TrialState.RUNNING:
            log.warning("warning: trial %d was interrupted; running it again", trial.number)
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            study.enqueue_trial(trial.params, skip_if_exists=False)
    return study


def _write_table(study, path: Path) -> list:
    rows = [{"trial": t.number, "state": t.state.name.lower(), "value": t.value,
             "seconds": round(t.duration.total_seconds(), 1) if t.duration else None, **t.params} for t in study.trials]
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_file(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def start_search(out: Path, overwrite: bool, trials: int, train: TrainArgs, space: Dict, tunable: Set[str]) -> Tuple[Path, Dict, Path]:
    """Before any work: the arguments make sense and the output can be written. Returns (OUTPUT_DIR, the space,
    the study's home OUTPUT_DIR-tune/, made by `search` once the data is read)."""
    if trials < 1:
        raise UserError(f"trials must be at least 1 (got {trials})")
    if world_size() > 1:
        raise UserError("tune runs its trials one after another in one process; launch it without torchrun")
    if out.exists() and not overwrite:
        raise UserError(f"output_dir: {out} already exists; pass --overwrite true to replace it, or choose another --output_dir")
    check_writable(out, "output_dir")
    train.check_runnable()
    from .tracking import check_trackers

    check_trackers(train.report_to)
    space = dict(space)
    check_space(space, tunable)
    return out, space, out.parent / f"{out.name}-tune"


def search(home: Path, cfg, space: Dict, trials: int, pruner: str, startup_trials: int, timeout: Optional[float],
           greater: bool, run_trial: Callable[[Any, Path, Any], float]) -> Tuple[Any, List[Dict], Path]:
    """Run the study in `home` until `trials` trials have finished; each trains in home/trial-NNN with
    `run_trial(trial_cfg, workdir, report_to)`, which returns the trial's validation value. Only the best trial's
    directory is kept. Returns the best trial, the trials table (also home/trials.csv) and the best trial's directory."""
    import optuna

    check_space_values(cfg, space)
    home.mkdir(parents=True, exist_ok=True)
    study = _open_study(home / "study.db", cfg, space, pruner, startup_trials, greater)

    def objective(trial) -> float:
        trial_cfg = with_params(cfg, _suggest(trial, space))
        workdir = home / f"trial-{trial.number:03d}"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir()
        report_to = reporter(trial, trial_cfg.train.metric_for_best)
        value = run_trial(trial_cfg, workdir, report_to)
        if report_to.pruned:
            shutil.rmtree(workdir, ignore_errors=True)
            raise optuna.TrialPruned()
        return value

    def keep_only_the_best(study, trial) -> None:
        best = _best(study)
        for path in home.glob("trial-*"):
            if best is None or path.name != f"trial-{best.number:03d}":
                shutil.rmtree(path, ignore_errors=True)

    done = sum(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in study.trials)
    if done < trials:
        log.info("tune: %d trial(s) to run (%d finished before); study in %s", trials - done, done, home / "study.db")
        study.optimize(objective, n_trials=trials - done, timeout=timeout, callbacks=[keep_only_the_best], catch=())
    keep_only_the_best(study, None)
    best = _best(study)
    if best is None:
        raise UserError(f"tune: no trial completed (all pruned or failed); see {home / 'trials.csv'} and widen --space or use --pruner none")
    rows = _write_table(study, home / "trials.csv")
    workdir = home / f"trial-{best.number:03d}"
    if not (workdir / RunDir.MODEL).is_dir():
        raise UserError(f"tune: the best trial's model ({workdir}) is gone; run with --overwrite true and another --output_dir")
    return best, rows, workdir


def _best(study):
    import optuna

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return study.best_trial if complete else None
