"""`encoderfit cv`: K-fold cross-validation, for data sets whose test split is too small to tell two models apart.

All labelled examples (train, validation and test alike) are cut into K folds by the task's own stratification
(classes, label sets, target bins, query groups): each fold is held out once while a model trains on the others
(its validation split made from them, as `train` makes one), so every example is scored exactly once by a model
that never saw it. The baseline is fitted on the same K training sets. Metrics, bootstrap intervals and the paired
comparison with the baseline are then computed over all out-of-fold predictions: on BBC News, 2,127 articles
instead of a 213-article test split. Each fold is a complete run directory (folds/fold-NN, with its report), built
hidden and renamed into place when complete; a re-run of the same command keeps the folds already finished, and a
re-run with other settings is refused, naming them (as train refuses to resume another config). No model is shipped: train one with `encoderfit train`.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ..core.args import DataArgs, ModelArgs, ReportArgs, TrainArgs
from ..runs.splits import Splits, prepare
from ..core.distributed import is_main
from ..core.errors import UserError
from ..runs.evaluation import evaluate_run
from ..runs.verdict import BASELINE_SPLIT, analyse
from ..core.files import exclusive, partial_dir, publish_dir, write_json
from ..runs.rundir import Predictions, RunDir
from ..tasks import get_task
from ..runs.lifecycle import check_start, config_changes
from ..runs.training import Prepared, train_model
from .options import FINE_TUNING, RUN_DIR, shared

log = logging.getLogger(__name__)
ROW = "_row"  # each example's position in the pooled data, carried through the folds
FOLDS = "folds"


def fold_parts(task, pool, k: int, seed: int) -> List:
    """The pool cut into k disjoint folds with the task's stratified hold-out: fold i takes 1/(k - i) of what the
    earlier folds left, so every fold holds about 1/k of each class (label, bin, group)."""
    parts, rest = [], pool
    for i in range(k - 1):
        rest, held = task.targets.holdout(rest, 1.0 / (k - i), seed + i, None)
        parts.append(held)
    return parts + [rest]


def concat(preds: List[Predictions]) -> Predictions:
    """Several splits' predictions as one, in order (targets and logits as arrays or per-row lists, like the task's)."""

    def join(values):
        return np.concatenate(values) if isinstance(values[0], np.ndarray) else [x for v in values for x in v]

    pairs = None if preds[0].pairs is None else [p for x in preds for p in x.pairs]
    return Predictions([t for x in preds for t in x.texts], pairs, join([x.targets for x in preds]), join([x.logits for x in preds]))


def _fold_splits(task, parts, i: int, data: DataArgs, labels: List[str], name: str):
    """(fold i's splits: test = fold i, train and validation made from the others; the pooled rows of its test)."""
    from datasets import concatenate_datasets

    rest = concatenate_datasets([p for j, p in enumerate(parts) if j != i])
    share = min(0.5, data.validation_size * len(parts) / (len(parts) - 1))  # validation: validation_size of all data
    train, validation = task.targets.holdout(rest, share, data.split_seed, None)
    strip = lambda ds: ds.remove_columns(ROW)  # noqa: E731
    return (Splits(train=strip(train), validation=strip(validation), test=strip(parts[i]), labels=labels, task=name,
                   options=task.options_dict()),
            list(parts[i][ROW]))


def _finished(fold_dir: Path) -> bool:
    """A fold kept by a re-run: a complete run directory (RunDir.complete: report and card written too)."""
    return fold_dir.is_dir() and RunDir(fold_dir).complete()


def _run_fold(fold_splits: Splits, model: ModelArgs, train: TrainArgs, report: ReportArgs, data: DataArgs, fold_dir: Path) -> None:
    """Train and evaluate one fold in its hidden work directory, renamed to `fold_dir` only when complete."""
    from ..runs.predictor import Predictor

    prep = Prepared.from_splits(fold_splits, model, train)
    cfg = prep.config(data, model, train, report)
    work = partial_dir(fold_dir)
    for stale in (fold_dir, work):
        shutil.rmtree(stale, ignore_errors=True)
    work.mkdir(parents=True)
    trained = train_model(prep, cfg, work)
    model_obj = None if trained.stale else trained.trainer.model
    run = RunDir(work)
    predictor = Predictor(model_obj, prep.tokenizer, run.model.info()) if model_obj is not None else Predictor.from_pretrained(work)
    evaluate_run(run, cfg, predictor, fold_splits, review_train=False)  # the training texts' review: for a shipped run
    publish_dir(work, fold_dir)


def _continues(workdir: Path, settings: Dict, resume: Optional[bool]) -> bool:
    """Whether the folds finished in `workdir` are kept: only for the same settings (train's rule: a changed config
    is refused, naming what changed, rather than its folds deleted without a word)."""
    finished = [f for f in sorted((workdir / FOLDS).glob("fold-*")) if _finished(f)] if workdir.is_dir() else []
    if resume is False or not finished:
        if resume:
            raise UserError(f"--resume: no interrupted cross-validation to resume in {workdir}; run without --resume")
        return False
    try:
        before = _read(workdir / "cv.json")
    except (OSError, ValueError):
        before = None
    changes = ["its cv.json is missing or unreadable"] if before is None else config_changes(before, _plain(settings))
    if changes:
        raise UserError(f"{workdir} holds {len(finished)} finished fold(s) of a cross-validation with other settings "
                        f"({'; '.join(changes[:5])}{'; ...' if len(changes) > 5 else ''}); run the same settings to continue "
                        "it, or pass --resume false to discard its folds and start over")
    return True


@shared(FINE_TUNING, RUN_DIR)
def cross_validate(data=..., model=..., train=..., report=..., task=..., options=..., folds: int = 10,
                   output_dir: Path = Path("runs/cv"), overwrite=..., resume=...) -> Path:
    """K-fold cross-validation: every example scored once, out of fold, against the baseline's out-of-fold predictions.

    Writes OUTPUT_DIR with metrics.json (pooled out-of-fold metrics with bootstrap intervals, the comparison with the
    baseline, each fold's figures), predictions/ (every example's out-of-fold prediction) and folds/fold-NN (one run
    directory per fold). Running the same command again after an interruption keeps the finished folds.

    Args:
        data: The labelled data (all of its splits are pooled, then cut into folds); data.validation_size is the
            share of all examples each fold's model holds out for validation.
        train: Optimisation and evaluation settings (one seed per fold).
        folds: Number of folds K (2 or more): each model trains on (K-1)/K of the examples.
        output_dir: The cross-validation directory to write.
        resume: Keep the folds an interrupted run of the same settings finished. Default (null): when its settings are
            the same (other settings are refused, naming them); true: insist; false: discard them and start over.
    """
    started = time.time()
    if folds < 2:
        raise UserError(f"--folds must be at least 2 (got {folds})")
    if train.seeds > 1:
        raise UserError("train.seeds: cross-validation trains one model per fold; drop train.seeds")
    out = check_start(output_dir, overwrite, train)
    if not is_main():
        raise UserError("encoderfit cv runs in one process; launch it without torchrun")
    with exclusive(out, overwrite=overwrite):
        splits = prepare(data, task, options, holdout=False)  # pooled and cut into folds below
        data = splits.resolve(data)  # the columns inferred, for every fold's config
        chosen = get_task(splits.task, "train", splits.options)
        if not chosen.supports("cv"):
            raise UserError(f"encoderfit cv: {chosen.name} runs are not cross-validated: {chosen.why_not('cv')}")
        from datasets import concatenate_datasets

        pool = concatenate_datasets([splits.train, splits.validation, splits.test])
        pool = pool.add_column(ROW, list(range(len(pool))))
        if len(pool) < 4 * folds:
            most = len(pool) // 4
            fix = f"lower --folds to {most} or fewer" if most >= 2 else "add examples (at least 8 for 2 folds)"
            raise UserError(f"{data.source}: {len(pool)} examples are too few for {folds} folds (each fold's model needs "
                            f"training, validation and test examples: at least 4 examples per fold); {fix}")
        parts = fold_parts(chosen, pool, folds, data.split_seed)
        workdir = partial_dir(out)
        settings = {"data": data, "model": model, "train": train, "folds": folds, **chosen.options_dict()}
        saved = workdir / "cv.json"
        if workdir.is_dir() and not _continues(workdir, settings, resume):
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        write_json(saved, _plain(settings))
        roles = ("validation", "test", *((BASELINE_SPLIT,) if report.baseline else ()))
        pooled: Dict[str, List[Predictions]] = {role: [] for role in roles}
        rows, per_fold = [], []
        try:
            for i in range(folds):
                fold_dir = workdir / FOLDS / f"fold-{i + 1:02d}"
                fold_splits, held = _fold_splits(chosen, parts, i, data, splits.labels, splits.task)
                if _finished(fold_dir):
                    log.info("fold %d/%d: finished before, kept", i + 1, folds)
                else:
                    log.info("fold %d/%d: training on %d examples, validating on %d, scoring %d", i + 1, folds,
                             len(fold_splits.train), len(fold_splits.validation), len(fold_splits.test))
                    _run_fold(fold_splits, model, train, report, data, fold_dir)
                run = RunDir(fold_dir)
                for role in pooled:
                    got = run.predictions(role, chosen, splits.labels)
                    if got is None:
                        raise UserError(f"{fold_dir}: no {role} predictions; delete the folder and run the same command again")
                    pooled[role].append(got)
                rows += held
                metrics = run.metrics()
                primary = chosen.summary[0][0]
                per_fold.append({"fold": i + 1, "examples": len(fold_splits.test), primary: metrics["test"].get(primary),
                                 f"baseline_{primary}": (metrics.get("baseline") or {}).get(primary)})
            return _pool(chosen, pooled, rows, per_fold, workdir, out, splits.labels, data, model, train, report, started)
        except BaseException:
            _abandon(workdir)
            raise


def _abandon(workdir: Path) -> None:
    """After a failure or an interrupt: keep the finished folds for the next run of the same command, else leave
    nothing behind (a fold's own work directory never survives)."""
    for work in (workdir / FOLDS).glob(".fold-*.partial"):
        shutil.rmtree(work, ignore_errors=True)
    finished = [f for f in (workdir / FOLDS).glob("fold-*") if _finished(f)]
    if finished:
        log.warning("cross-validation stopped; %d finished fold(s) kept in %s: run the same command again to continue",
                    len(finished), workdir)
    else:
        shutil.rmtree(workdir, ignore_errors=True)


def _plain(settings: Dict) -> Dict:
    import dataclasses

    return {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in settings.items()}


def _read(path: Path) -> Dict:
    import json

    return json.loads(path.read_text(encoding="utf-8"))


def _pool(task, pooled, rows, per_fold, workdir: Path, out: Path, labels, data, model, train, report, started) -> Path:
    """Pooled out-of-fold metrics: one head fitted on all folds' validation predictions (each from its own fold's
    model), every test example once, the baseline's out-of-fold predictions beside them."""
    from ..core.runconfig import RunConfig
    from ..core.tables import print_evaluation

    cfg = RunConfig(data=data, model=model, train=train, report=report, task=task.name, labels=labels,
                    options=task.options_dict())
    val, test = concat(pooled["validation"]), concat(pooled["test"])
    base = concat(pooled[BASELINE_SPLIT]) if report.baseline else None
    head = task.scoring.fit_head(val, labels, cfg)
    results = analyse(task, {"validation": val, "test": test}, cfg, head, (base, {}) if report.baseline else None)
    if report.baseline:
        results["baseline"] = task.scoring.analyse(base, labels, {}, cfg)
        verdict = results["comparison"]["verdict"]
        everything = f"on all {len(rows)} examples, scored out of fold"
        verdict["sentence"] = verdict["sentence"].replace("on this test set", everything).replace("on test:", everything + ":")
    primary = task.summary[0][0]
    values = [f[primary] for f in per_fold if f[primary] is not None]
    results["cv"] = {"folds": len(per_fold), "examples": len(rows), "scored_once": sorted(rows) == list(range(len(rows))),
                     "per_fold": per_fold, "primary": primary, "fold_mean": float(np.mean(values)) if values else None,
                     "fold_sd": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                     "seconds": round(time.time() - started, 1)}
    run = RunDir(workdir)
    run.write_predictions("test", test, task, labels, "out-of-fold")
    if base is not None:
        run.write_predictions(BASELINE_SPLIT, base, task, labels, "tfidf-baseline")
    write_json(workdir / RunDir.METRICS, results)
    publish_dir(workdir, out)
    print_evaluation(results, "test", task, labels)
    log.info("%d-fold cross-validation written to %s (%.0f s): out-of-fold %s %.4f", len(per_fold), out,
             time.time() - started, primary, results["test"][primary])
    return out
