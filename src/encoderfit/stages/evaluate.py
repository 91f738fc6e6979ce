"""Evaluation that decides whether to ship, and `encoderfit eval`, for any task.

On a run's own data: predictions on validation and test (reused when the same model made them), the head fitted on
validation (the task's: temperature and threshold, per-label thresholds, a conformal interval) and saved where
predict and serve read it, every metric of both splits under that head, the training examples worth a look, the
baseline, the report and the model card. On other data: the same metrics under the saved head.
"""

from __future__ import annotations

import csv
import logging
import re
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, List, Optional

from ..core.config import ReportOverrides
from ..core.runconfig import RunConfig
from ..core.errors import UserError
from ..core.files import atomic_file, check_output_file, check_writable, write_json
from .rundir import Predictions, RunDir
from ..tasks import get_task
from .verdict import BASELINE_SPLIT, analyse, intervals, predict_split, split_predictions

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
    beside training: stages/background.py); default: fitted here."""
    from .report import write_report

    task = get_task(cfg.task, "eval", cfg.options)
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


def check_same_splits(run: Path, trained: Optional[Dict], now: Dict, fix: str = EVAL_FIX) -> None:
    """Refuse to evaluate on splits other than the ones the run was trained with (the source changed under it: a
    re-read apt index, a new hub revision, an edited file): test texts could now be training texts, and the head
    would be refitted on other validation data without a word. Runs from before 0.2.1 recorded no fingerprints."""
    if not trained:
        log.warning("%s records no split fingerprints (trained before encoderfit 0.2.1): cannot check that the source "
                    "still gives the splits it was trained on", run)
        return
    changed = [f"{role} had {trained[role]['examples']} examples, now {now[role]['examples']}"
               + ("" if trained[role]["examples"] != now[role]["examples"] else " with other contents")
               for role in ("train", "validation", "test") if role in trained and trained[role]["sha256"] != now[role]["sha256"]]
    if changed:
        raise UserError(f"{run}: the run's data source no longer gives the splits it was trained on ({'; '.join(changed)}): "
                        f"its test examples may now be training examples. {fix}")


@contextmanager
def eval_flags():
    """The data checks name train's flags for the columns (--data.text_pair_column); eval's own are --text_column,
    --text_pair_column and --label_column: their messages name those."""
    try:
        yield
    except UserError as err:
        raise UserError(re.sub(r"--data\.(text_column|text_pair_column|label_column)\b", r"--\1", str(err))) from None


def evaluate(
    run: Path,
    data: Optional[str] = None,
    split: str = "test",
    text_column: Optional[str] = None,
    text_pair_column: Optional[str] = None,
    label_column: Optional[str] = None,
    report: ReportOverrides = ReportOverrides(),
    output: Optional[Path] = None,
    device: Optional[str] = None,
) -> Dict:
    """Score a trained run: metrics, the head's decisions (calibration, thresholds, intervals), error analysis, report.

    Args:
        run: Run directory written by `encoderfit train`.
        data: Labelled data to score: a file, a directory of split files, a hub dataset or a recipe. Default: the
            run's own data, split exactly as in training; then the head fitted on validation, the report and the
            model card are refreshed as well (predictions of the same model are reused, not recomputed).
        split: Which split to print (train, validation or test). A single file given as --data is scored whole.
        text_column: Column holding the text. Default: the run's data.text_column.
        text_pair_column: Column holding the second text of a pair. Default: the run's data.text_pair_column.
        label_column: Column holding the target. Default: the run's data.label_column.
        report: Report settings to change, e.g. --report.target_accuracy 0.995 (each one given replaces the run's
            own and is saved in its config.yaml; the others stay).
        output: Where to write the metrics JSON for --data. Default: RUN/eval/<split>.json.
        device: Device to run on (cpu, cuda, cuda:1). Default: cuda when available.
    """
    from ..data.sources import load_source
    from .splits import prepare
    from .predict import Predictor
    from ..core.tables import print_evaluation

    rundir = RunDir(run)
    cfg = rundir.config()
    cfg.report = report.apply(cfg.report)
    task = get_task(cfg.task, "eval", cfg.options)
    args = replace(cfg.data, text_column=text_column or cfg.data.text_column,
                   text_pair_column=text_pair_column or cfg.data.text_pair_column,
                   label_column=label_column or cfg.data.label_column)
    if data is None and split not in ("validation", "test"):
        raise UserError(f"--split: '{split}' must be validation or test for the run's own data")
    if output:  # a directory there would be found only after the whole evaluation
        check_output_file(Path(output), "--output", f"{split}.json")
    else:
        check_writable(rundir / RunDir.METRICS, "run")
    predictor = Predictor.from_pretrained(run, device=device)
    if predictor.labels != cfg.labels:
        raise UserError(f"{run}: the model's labels differ from config.yaml's; the run directory is inconsistent")
    if data is None:
        with eval_flags():
            splits = prepare(args, cfg.task, cfg.options, settle=False)
        check_same_splits(run, cfg.resolved.get("splits"), splits.fingerprints())
        results = evaluate_run(rundir, replace(cfg, data=args), predictor, splits)
        rundir.save_config(cfg)
        print_evaluation(results, split, task, cfg.labels)
        return results[split]
    loaded = load_source(data, None)
    name = split if split in loaded else (next(iter(loaded)) if len(loaded) == 1 else None)
    if name is None:
        raise UserError(f"--split: no split '{split}' in {data}; splits are {list(loaded)}")
    where = f"{data} [{name}]"
    with eval_flags():
        ds = task.targets.canonical(loaded[name], args, where)
        ds = task.targets.encode(ds, task.targets.read_targets(ds, args, where), cfg.labels, where)
    preds = predict_split(predictor, ds)
    results = analyse(task, {name: preds}, cfg, predictor.head)
    results[name].setdefault("ci", intervals(task, preds, cfg.labels, predictor.head))  # whatever the split is called
    results[name]["data"] = where
    out = Path(output) if output else rundir / RunDir.EVAL / f"{split}.json"
    write_json(out, {**results[name], "head": {k: v for k, v in results.items() if k != name}})
    print_evaluation(results, name, task, cfg.labels)
    log.info("wrote %s", out)
    return results[name]
