"""Evaluation that decides whether to ship, and `encoderfit eval`.

Per split: accuracy, precision/recall/F1 (macro, micro, weighted), per-class scores, confusion matrix;
calibration before/after temperature scaling (fitted on validation); the coverage sweep and the
abstention threshold for a target accuracy (chosen on validation); the most confused label pairs and
the most confident mistakes. On a run's own data it also flags suspected label noise in the training
split and runs a TF-IDF baseline, then writes the report and the model card.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Dict, List, Optional

from .analysis import PREDICTIONS_DIR, Predictions, analyse
from .baseline import tfidf_baseline
from .calibration import softmax
from .config import ReportArgs, RunConfig
from .data import Splits, canonical, encode_labels, load_source, prepare
from .errors import UserError
from .files import atomic_file, write_json
from .predict import CALIBRATION_FILE, Classifier
from .metrics import wrong_with_confidence
from .report import NOISE_FILE, write_report
from .tables import print_evaluation

log = logging.getLogger(__name__)


def write_label_noise(path: Path, rows: List[Dict]) -> None:
    with atomic_file(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=["row", "label", "predicted", "confidence", "text"])
        writer.writeheader()
        writer.writerows({**r, "confidence": f"{r['confidence']:.4f}"} for r in rows)


def evaluate_run(run_dir: Path, cfg: RunConfig, classifier: Classifier, splits: Splits) -> Dict:
    """Full evaluation of a run on its own splits; writes predictions/, metrics.json, model/calibration.json,
    label_noise.csv, report.html and model/README.md. Used at the end of `train` and by `eval`."""
    preds = {role: Predictions.of(classifier, ds) for role, ds in (("validation", splits.validation), ("test", splits.test))}
    for role, p in preds.items():
        p.save(run_dir / PREDICTIONS_DIR / f"{role}.jsonl", cfg.labels)
    results = analyse(cfg.labels, preds, cfg.report)
    temperature, threshold = results["calibration"]["temperature"], results["threshold"]["value"]
    write_json(run_dir / "model" / CALIBRATION_FILE, {"temperature": temperature, "threshold": threshold,
                                                       "target_accuracy": cfg.report.target_accuracy, "fitted_on": "validation"})
    train = Predictions.of(classifier, splits.train)
    noise = wrong_with_confidence(train.texts, train.labels, softmax(train.logits, temperature), cfg.labels, cfg.report.noise_confidence)
    write_label_noise(run_dir / NOISE_FILE, noise)
    results["label_noise"] = {"count": len(noise), "of": len(train.texts), "min_confidence": cfg.report.noise_confidence}
    if cfg.report.baseline:
        results["baseline"] = tfidf_baseline(splits, cfg.labels)
    previous = run_dir / "metrics.json"
    if previous.is_file():
        results["train"] = json.loads(previous.read_text()).get("train")
    write_json(previous, results)
    write_report(run_dir, results)
    return results


def evaluate(
    run: Path,
    data: Optional[str] = None,
    split: str = "test",
    text_column: Optional[str] = None,
    text_pair_column: Optional[str] = None,
    label_column: Optional[str] = None,
    report: Optional[ReportArgs] = None,
    output: Optional[Path] = None,
    device: Optional[str] = None,
) -> Dict:
    """Score a trained run: metrics, calibration, coverage sweep and threshold, error analysis, HTML report.

    Args:
        run: Run directory written by `encoderfit train`.
        data: Labelled data to score: a file, a directory of split files, a hub dataset or a recipe. Default: the
            run's own data, split exactly as in training; then the run's report, calibration, threshold and
            model card are refreshed as well.
        split: Which split to print (train, validation or test). A single file given as --data is scored whole.
        text_column: Column holding the text. Default: the run's data.text_column.
        text_pair_column: Column holding the second text of a pair. Default: the run's data.text_pair_column.
        label_column: Column holding the label. Default: the run's data.label_column.
        report: Threshold target, baseline and error-analysis settings (e.g. --report.target_accuracy 0.995).
            Default: the run's own; flags given override only themselves.
        output: Where to write the metrics JSON for --data. Default: RUN/eval/<split>.json.
        device: Device to run on (cpu, cuda, cuda:1). Default: cuda when available.
    """
    run = Path(run)
    cfg = RunConfig.load(run)
    if report is not None:  # flags given: apply those that differ from the defaults onto the run's own settings
        changed = {k: v for k, v in asdict(report).items() if v != getattr(ReportArgs(), k)}
        cfg.report = replace(cfg.report, **changed)
    args = replace(cfg.data, text_column=text_column or cfg.data.text_column,
                   text_pair_column=text_pair_column or cfg.data.text_pair_column,
                   label_column=label_column or cfg.data.label_column)
    classifier = Classifier.from_pretrained(run, device=device)
    if classifier.labels != cfg.labels:
        raise UserError(f"{run}: the model's labels {classifier.labels} differ from config.yaml's {cfg.labels}; the run directory is inconsistent")
    if data is None:
        if split not in ("validation", "test"):
            raise UserError(f"--split: '{split}' must be validation or test for the run's own data")
        results = evaluate_run(run, replace(cfg, data=args), classifier, prepare(args))
        cfg.save(run)
        print_evaluation(results, split, cfg.labels)
        return results[split]
    loaded = load_source(data, None)
    name = split if split in loaded else (next(iter(loaded)) if len(loaded) == 1 else None)
    if name is None:
        raise UserError(f"--split: no split '{split}' in {data}; splits are {list(loaded)}")
    where = f"{data} [{name}]"
    preds = {name: Predictions.of(classifier, encode_labels(canonical(loaded[name], args, where), args, where, cfg.labels))}
    results = analyse(cfg.labels, preds, cfg.report, classifier.temperature, classifier.threshold)
    results[name]["data"] = where
    out = Path(output) if output else run / "eval" / f"{split}.json"
    write_json(out, {**results[name], "calibration_applied": results["calibration"], "threshold": results["threshold"]})
    print_evaluation(results, name, cfg.labels)
    log.info("wrote %s", out)
    return results[name]
