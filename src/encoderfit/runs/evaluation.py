"""A run evaluated on its splits: the head fitted on validation, test metrics with intervals, the verdict against the
baseline, the label-noise review; and the check that a run's splits are the ones it was trained on."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Callable, Dict, List, Optional
from ..core.runconfig import RunConfig
from ..core.errors import UserError
from ..core.files import atomic_file
from .rundir import Predictions, RunDir
from .verdict import BASELINE_SPLIT, analyse, split_predictions

log = logging.getLogger(__name__)


def write_review(path: Path, rows: List[Dict]) -> None:
    """Training examples worth a look (label_noise.csv), as a CSV a person can open."""
    fields = list(rows[0]) if rows else ["row", "label", "predicted", "confidence", "text"]
    with atomic_file(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows)


def evaluate_run(run: RunDir, cfg: RunConfig, predictor, splits, review_train: bool = True,
                 baseline_fit: Optional[Callable[[], Dict]] = None) -> Dict:
    """Full evaluation of a run on its own splits: predictions/, the head in model/encoderfit.json, metrics.json,
    label_noise.csv (where the task has a review, unless `review_train` is false), report.html and model/README.md.
    Used by `train`, `eval` and each fold of `cv`. `baseline_fit`: the baseline already being fitted (train starts it
    beside training: runs/background.py); default: fitted here."""
    from .report import write_report

    task = predictor.task  # the run's Task, opened with its model
    fingerprint = run.model.fingerprint()
    preds = {role: split_predictions(run, role, ds, predictor, task, cfg.labels, fingerprint)
             for role, ds in (("validation", splits.validation), ("test", splits.test))}
    head = task.scoring.fit_head(preds["validation"], cfg.labels, cfg)
    info = run.model.info()
    info.head = head
    run.model.write_info(info)
    predictor.info.head = head
    baseline = None
    if cfg.report.baseline:
        sample = splits.baseline_sample(cfg.report.baseline_max_rows, cfg.data.split_seed)  # what background.py fits too
        fitted = baseline_fit() if baseline_fit is not None else task.scoring.baseline(sample, cfg.labels, cfg)
        test = preds["test"]
        baseline = (Predictions(test.texts, test.pairs, test.targets, fitted["logits"]), fitted["head"])
        run.write_predictions(BASELINE_SPLIT, baseline[0], task, cfg.labels, "tfidf-baseline")
    results = analyse(task, preds, cfg, head, baseline)
    if baseline is not None:
        results["baseline"] = {**fitted["metrics"], "head": fitted["head"], "train_examples": len(sample.train),
                               "of": len(splits.train), "max_rows": cfg.report.baseline_max_rows}
    cap = cfg.report.review_max_rows
    reviewed = splits.train if not cap or len(splits.train) <= cap else splits.train.select(range(cap))  # rows keep their numbers
    train: Callable[[], Predictions] = lambda: split_predictions(run, "train", reviewed, predictor, task, cfg.labels, fingerprint)  # noqa: E731
    review = task.scoring.review_train(train, cfg.labels, head, cfg) if review_train else None
    if review is not None:
        write_review(run / RunDir.NOISE, review)
        results["label_noise"] = {"count": len(review), "of": len(reviewed), "train_examples": len(splits.train),
                                  "max_rows": cap, "min_confidence": cfg.report.noise_confidence}
    single = lambda p: p.pairs is not None and not predictor.info.text_pair  # noqa: E731  (embeddings: both sides are texts)
    results["inputs"] = {role: predictor.input_report(p.texts + p.pairs, None) if single(p) else predictor.input_report(p.texts, p.pairs)
                         for role, p in preds.items()}
    if (run / RunDir.METRICS).is_file():
        results["train"] = run.metrics().get("train")
    run.write_metrics(results)
    write_report(run, cfg, results)
    return results


EVAL_FIX = "Evaluate a fixed copy with --data FILE, or re-train on the source as it is now"


def check_same_splits(run: Path, trained: Optional[Dict], splits, fix: str = EVAL_FIX) -> None:
    """Refuse to evaluate on splits other than the ones the run was trained with (the source changed under it: a
    re-read apt index, a new hub revision, an edited file): test texts could now be training texts, and the head
    would be refitted on other validation data without a word. `splits` (runs.splits.Splits) are fingerprinted in
    the scheme `trained` recorded. Runs from before 0.2.1 recorded no fingerprints."""
    if not trained:
        log.warning("%s records no split fingerprints (trained before encoderfit 0.2.1): cannot check that the source "
                    "still gives the splits it was trained on", run)
        return
    now = splits.fingerprints(like=trained)
    changed = [f"{role} had {trained[role]['examples']} examples, now {now[role]['examples']}"
               + ("" if trained[role]["examples"] != now[role]["examples"] else " with other contents")
               for role in ("train", "validation", "test") if role in trained and trained[role]["sha256"] != now[role]["sha256"]]
    if changed:
        raise UserError(f"{run}: the run's data source no longer gives the splits it was trained on ({'; '.join(changed)}): "
                        f"its test examples may now be training examples. {fix}")
