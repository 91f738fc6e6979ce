"""`encoderfit tune-pretrain`: the Optuna search of `encoderfit tune` over pre-training settings.

The corpus is read, the tokenizer trained and the documents packed once; every trial pre-trains from the same
initialisation (train.seed) on the same blocks and is scored on the same held-out blocks, masked once at the
config's `mlm.masking_rate` (so a trial that trains at another masking rate is judged on the same task as the
others). The study lives in OUTPUT_DIR-tune/study.db as for `tune`: run the same command again to continue it. The
best trial becomes a normal pre-training run directory (see pretrain.py) with trials.csv beside its metrics.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Dict

from ..core.args import TrainArgs
from ..pretraining.corpus import load_corpus
from ..core.errors import UserError
from ..core.files import publish_dir
from ..pretraining.settings import PretrainConfig
from ..runs.rundir import RunDir
from ..core.tables import print_rows
from ..runs.tuning import check_space_values, search, start_search
from .options import PRETRAINING, RUN_DIR, SEARCH, shared

log = logging.getLogger(__name__)

# Around the ModernBERT recipe (peak 5e-4 to 8e-4, short warmup, weight decay 1e-5); replace any with --space.
DEFAULT_SPACE: Dict[str, Dict[str, Any]] = {
    "train.learning_rate": {"low": 1e-4, "high": 2e-3, "log": True},
    "train.warmup_ratio": {"low": 0.0, "high": 0.1},
    "train.weight_decay": {"choices": [0.0, 1e-5, 1e-2]},
}
TUNABLE = {f"train.{f.name}" for f in dataclasses.fields(TrainArgs)} | {"mlm.masking_rate"}
RESULTS = "results.json"  # a trial's metrics until the best trial's pages are written


@shared(PRETRAINING, SEARCH, RUN_DIR)
def tune_pretrain(corpus=..., tokenizer=..., model=..., mlm=..., train=..., output_dir: Path = Path("runs/pretrain-tuned"),
                  trials: int = 10, space=..., pruner=..., startup_trials=..., timeout=..., overwrite=...) -> Path:
    """Search pre-training settings with Optuna by held-out MLM loss; the best trial becomes a pre-training run.

    Args:
        tokenizer: The tokenizer to train (once, shared by every trial) or reuse.
        mlm: Block size and masking rate; the held-out blocks are masked once at this rate for every trial.
        train: Training settings; the searched ones are overridden per trial. train.metric_for_best (loss or
            accuracy) is the value searched.
        output_dir: The run directory the best trial becomes; the study lives beside it in OUTPUT_DIR-tune/.
        trials: Finished trials (complete or pruned) the search should reach, counting those of an earlier,
            interrupted invocation.
        space: Settings to search, each {choices: [...]} or {low: ..., high: ..., log: true}: any train.* setting
            and mlm.masking_rate. Default: peak learning rate 1e-4..2e-3 (log), warmup 0..0.1, weight decay
            0/1e-5/1e-2.
        pruner: median: stop a trial whose held-out value is worse than the median of earlier trials at the same
            point; none: run every trial to the end.
    """
    from ..pretraining.mlm_training import mlm_task, packed_corpus, train_mlm
    from ..pretraining.streaming import FOLDER, plan
    from ..tasks.mlm.pages import write_pages

    if train.seeds > 1:
        raise UserError("train.seeds: pre-training trains one model per trial; drop --train.seeds")
    out, space, home = start_search(Path(output_dir), overwrite, trials, train, space or DEFAULT_SPACE, TUNABLE)
    task = mlm_task()
    if train.metric_for_best not in task.metrics_for_best:
        raise UserError(f"train.metric_for_best: '{train.metric_for_best}' is not a pre-training metric; choose from "
                        f"{sorted(task.metrics_for_best)}")
    cfg = PretrainConfig(corpus=corpus, tokenizer=tokenizer, model=model, mlm=mlm, train=train)
    check_space_values(cfg, space)
    reading = plan(corpus)  # streamed, or in memory
    documents = load_corpus(corpus) if reading.files is None else None  # before OUTPUT_DIR-tune/ exists: a bad corpus leaves nothing
    made = not home.exists()
    home.mkdir(parents=True, exist_ok=True)
    try:
        tok, packed = packed_corpus(cfg, home, reading, documents)
    except BaseException:
        if made:
            shutil.rmtree(home, ignore_errors=True)
        raise

    def run_trial(trial_cfg: PretrainConfig, workdir: Path, report_to) -> float:
        results = train_mlm(trial_cfg, task, tok, packed, workdir, callbacks=[report_to])
        (workdir / RESULTS).write_text(json.dumps(results))
        return results["validation"][trial_cfg.train.metric_for_best]

    greater = task.metrics_for_best[train.metric_for_best]
    best, rows, workdir = search(home, cfg, space, trials, pruner, startup_trials, timeout, greater, run_trial)
    run = RunDir(workdir)
    results = json.loads((workdir / RESULTS).read_text())
    results["train"]["tune"] = {"trials": len(rows), "best_trial": best.number, "metric": train.metric_for_best,
                                "value": best.value, "params": best.params, "study": str(home / "study.db")}
    shutil.copy(home / "trials.csv", run / RunDir.TRIALS)
    write_pages(run, PretrainConfig.load(workdir), results)
    (workdir / RESULTS).unlink()
    publish_dir(workdir, out)
    shutil.rmtree(home / FOLDER, ignore_errors=True)  # a streamed corpus's Arrow files (a continued search streams again)
    print_rows(f"encoderfit tune-pretrain: held-out {train.metric_for_best} per trial (best: trial {best.number})", rows)
    log.info("best trial %d (held-out %s %.4g) written to %s", best.number, train.metric_for_best, best.value, out)
    return out
