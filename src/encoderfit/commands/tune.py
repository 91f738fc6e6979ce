"""`encoderfit tune`: hyperparameter search with Optuna, ending in a normal run directory.

Each trial trains on the same split with the same seed and is scored on the validation split by
`train.metric_for_best` (the value of the checkpoint it keeps). Trials report after every evaluation, and the
median pruner stops one that is worse than the median of earlier trials at the same point. The study lives in
SQLite (OUTPUT_DIR-tune/study.db): running the same command again continues it, and a trial cut off by a crash
is run again first. The test split is touched once, at the end, to evaluate the best trial, which becomes
OUTPUT_DIR. OUTPUT_DIR-tune/trials.csv (also copied into the run) lists every trial.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ..core.runconfig import RunConfig
from ..core.errors import UserError
from ..runs.rundir import RunDir
from ..core.tables import print_rows
from ..runs.lifecycle import finish_run
from ..runs.training import Prepared, train_model
from ..runs.tuning import (
    DEFAULT_SPACE,
    TUNABLE,
    search,
    start_search,
)
from .options import FINE_TUNING, RUN_DIR, SEARCH, shared

log = logging.getLogger(__name__)


@shared(FINE_TUNING, SEARCH, RUN_DIR)
def tune(data=..., model=..., train=..., report=..., task=..., options=..., output_dir: Path = Path("runs/tuned"),
         trials: int = 20, space=..., pruner=..., startup_trials=..., timeout=..., overwrite=...) -> Path:
    """Search training hyperparameters with Optuna; the best trial becomes a normal run directory.

    Args:
        train: Training settings; the searched ones are overridden per trial.
        report: Settings of the final evaluation of the best trial.
        task: classification, multilabel or regression. Default: inferred from the label column, as in `train`.
        output_dir: The run directory the best trial becomes; the study lives beside it in OUTPUT_DIR-tune/.
        trials: Finished trials (complete or pruned) the search should reach, counting those of an earlier,
            interrupted invocation.
        space: Settings to search, each {choices: [...]} or {low: ..., high: ..., log: true}. Default: learning rate
            1e-5..1e-4 (log), epochs 1-3, batch size 16/32, weight decay 0/1e-5/1e-2, warmup 0..0.2.
    """
    out, space, home = start_search(Path(output_dir), overwrite, trials, train, space or DEFAULT_SPACE, TUNABLE)
    prep = Prepared.load(data, model, train, task, options)
    cfg = prep.config(data, model, train, report)
    if train.metric_for_best not in prep.task.metrics_for_best:
        raise UserError(f"train.metric_for_best: '{train.metric_for_best}' is not a metric of the {prep.task.name} task; "
                        f"choose from {sorted(prep.task.metrics_for_best)}")
    greater = prep.task.metrics_for_best[train.metric_for_best]

    def run_trial(trial_cfg: RunConfig, workdir: Path, report_to) -> float:
        return train_model(prep, trial_cfg, workdir, callbacks=[report_to]).trainer.state.best_metric

    best, rows, workdir = search(home, cfg, space, trials, pruner, startup_trials, timeout, greater, run_trial)
    best_run = RunDir(workdir)
    shutil.copy(home / "trials.csv", best_run / RunDir.TRIALS)
    best_cfg = best_run.config()  # the trial's settings, as it saved them
    metrics = best_run.metrics()
    metrics["train"]["tune"] = {"trials": len(rows), "best_trial": best.number, "metric": train.metric_for_best,
                                "value": best.value, "params": best.params, "study": str(home / "study.db")}
    best_run.write_metrics(metrics)
    finish_run(prep, best_cfg, workdir, out)
    print_rows(f"encoderfit tune: validation {train.metric_for_best} per trial (best: trial {best.number})", rows)
    log.info("best trial %d (validation %s %.4g) written to %s", best.number, train.metric_for_best, best.value, out)
    return out


