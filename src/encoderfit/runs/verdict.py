"""A run's predictions and what they say: each split's predictions (reused when the same model made them), every
metric under the head, bootstrap intervals, and the verdict against the baseline on the same examples. Used by the
end-of-run evaluation (evaluate.py), `encoderfit report` (report.py), seeds and cross-validation."""

from __future__ import annotations

import logging
from typing import Dict, List, Optional

from ..core.runconfig import RunConfig
from ..data.arrow import text_column
from .rundir import Predictions, RunDir
from ..tasks import Task

log = logging.getLogger(__name__)


def predict_split(predictor, ds) -> Predictions:
    """A split's predictions: its texts (and pairs), encoded targets and the model's logits."""

    texts, pairs = split_texts(ds)
    words = ds["words"] if "words" in ds.column_names else None  # tasks that label words: the data's own
    return Predictions(texts, pairs, predictor.task.targets.targets_array(ds["labels"]),
                       predictor.task.scoring.outputs(predictor, texts, pairs, words))


def split_texts(ds):
    """A split's texts and pairs (None without a pair column), read in its file's order (data/arrow.py)."""
    return text_column(ds, "text"), (text_column(ds, "text_pair") if "text_pair" in ds.column_names else None)


def split_predictions(run: RunDir, role: str, ds, predictor, task: Task, labels: List[str], fingerprint: str) -> Predictions:
    """The saved predictions when this model made them for these texts; else computed now and saved."""

    saved = run.predictions(role, task, labels, fingerprint)
    texts, pairs = split_texts(ds) if saved is not None else (None, None)
    if saved is not None and saved.texts == texts and saved.pairs == pairs:
        log.info("%s: reusing the saved predictions of this model", role)
        return Predictions(saved.texts, pairs, task.targets.targets_array(ds["labels"]), saved.logits)
    preds = predict_split(predictor, ds)
    run.write_predictions(role, preds, task, labels, fingerprint)
    return preds


BASELINE_SPLIT = "baseline-test"  # the baseline's test predictions, saved beside the model's


def intervals(task: Task, preds: Predictions, labels: List[str], head: Dict) -> Dict[str, Dict]:
    """Bootstrap confidence intervals of the task's main metrics on one split (stratified where the task says)."""
    from ..core.stats import bootstrap_ci

    fns, strata = task.scoring.interval_metrics(preds, labels, head)
    clusters = task.scoring.clusters(preds)
    return {key: bootstrap_ci(fn, len(preds.texts), strata=strata, clusters=clusters) for key, fn in fns.items()}


def compare(task: Task, model: Predictions, base: Predictions, labels: List[str], head: Dict, base_head: Dict,
            against: Optional[tuple] = None, on: str = "test") -> Dict:
    """The model against the baseline on the same test examples: paired bootstrap differences of the main metrics,
    the task's exact test (McNemar for classification) and the verdict on the primary metric, in plain words.
    `against`: (formal, plain) names of another model compared the same way (a distilled student's teacher); `on`:
    the examples compared, as the sentence names them."""
    from ..core.stats import paired_bootstrap, verdict

    mine, strata = task.scoring.interval_metrics(model, labels, head)
    theirs = task.scoring.interval_metrics(base, labels, base_head)[0]
    clusters = task.scoring.clusters(model)
    differences = {key: paired_bootstrap(lambda idx, who, key=key: (mine if who == "model" else theirs)[key](idx),
                                         len(model.texts), strata=strata, clusters=clusters)
                   for key, _ in task.summary if key in mine}
    exact = task.scoring.paired_test(model, base, labels, head, base_head)
    primary = task.summary[0][0]
    p_value = exact[task.exact_test]["p_value"] if exact and task.exact_test else differences[primary]["p_value"]
    names = dict(zip(("baseline", "plain"), against or (task.baseline_name, task.baseline_plain)))
    return {"differences": differences, **(exact or {}),
            "verdict": verdict(differences[primary], task.scoring.greater_is_better(primary), primary, p_value, **names, on=on)}


def analyse(task: Task, preds: Dict[str, Predictions], cfg: RunConfig, head: Dict, baseline: Optional[tuple] = None) -> Dict:
    """Each split's metrics under `head`, with confidence intervals on test; the head's decisions with what they do on
    each split; and, given (baseline test predictions, baseline head), the comparison with the baseline."""
    analysed = {role: task.scoring.analyse(p, cfg.labels, head, cfg) for role, p in preds.items()}
    if "test" in preds:
        analysed["test"]["ci"] = intervals(task, preds["test"], cfg.labels, head)
    results = {**analysed, **task.scoring.head_summary(head, analysed)}
    if baseline is not None and "test" in preds:
        results["comparison"] = compare(task, preds["test"], baseline[0], cfg.labels, head, baseline[1])
    return results


def saved_baseline(run: RunDir, task: Task, labels: List[str], metrics: Dict) -> Optional[tuple]:
    """(the baseline's saved test predictions, its head), when the run has them."""
    preds = run.predictions(BASELINE_SPLIT, task, labels) if metrics.get("baseline") else None
    return (preds, metrics["baseline"].get("head") or {}) if preds is not None else None
