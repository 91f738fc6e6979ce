"""Multi-label classification: a set of labels per text (possibly empty), one sigmoid per label.

Head fitted on validation: a decision threshold per label, the one maximising that label's F1; a label with fewer
than `MIN_POSITIVES` validation positives is too rare to tune and takes the single threshold that maximises
micro-F1 over all labels (Fan & Lin 2007's SCut with a floor).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Dict, List, Optional

import numpy as np

from ...core.errors import UserError
from ..base import Decoding, Modeling, Scoring, Targets, Task, fit_each, tfidf_features
from .pages import MultilabelPages

log = logging.getLogger(__name__)
MIN_POSITIVES = 5
C_GRID = (1.0, 10.0)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    from scipy.special import expit  # no overflow warning for a probe's large negative logits (exactly 0 there)

    return expit(np.asarray(logits, dtype=np.float64))


def best_threshold(probs: np.ndarray, y: np.ndarray) -> tuple:
    """(threshold, F1) maximising F1 of the decisions probs >= t over every cut point the scores allow
    (precision_recall_curve), placed midway to the next lower score; probs and y may be 1-D (a label) or 2-D (micro).
    A fixed grid misses labels whose scores all lie below its floor and cannot separate scores closer than its step."""
    from sklearn.metrics import precision_recall_curve

    scores, truth = np.ravel(np.asarray(probs, dtype=np.float64)), np.ravel(y) > 0
    if not truth.any():
        return 0.5, 0.0
    precision, recall, cuts = precision_recall_curve(truth, scores)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    k = int(np.argmax(f1))
    below = scores[scores < cuts[k]]
    return float((cuts[k] + below.max()) / 2 if below.size else cuts[k]), float(f1[k])


def fit_thresholds(probs: np.ndarray, y: np.ndarray, labels: List[str]) -> Dict:
    """Per-label F1-optimal thresholds; labels with < MIN_POSITIVES positives take the micro-F1-optimal one."""
    global_t, _ = best_threshold(probs, y)
    thresholds, tuned = {}, []
    for j, name in enumerate(labels):
        if y[:, j].sum() >= MIN_POSITIVES:
            thresholds[name] = best_threshold(probs[:, j], y[:, j])[0]
            tuned.append(name)
        else:
            thresholds[name] = global_t
    return {"thresholds": thresholds, "global_threshold": global_t, "tuned": len(tuned), "min_positives": MIN_POSITIVES,
            "labels": list(labels)}


def threshold_vector(head: Dict, labels: Optional[List[str]] = None) -> np.ndarray:
    """The head's thresholds for `labels` (default: the labels the head was fitted for, in the model's output order),
    looked up by name, so every caller decodes the same way whatever order the saved mapping is in."""
    saved = head.get("thresholds") or {}
    names = labels if labels is not None else head.get("labels") or list(saved)  # heads before 0.2.1: the mapping's order
    return np.asarray([saved.get(name, head.get("global_threshold", 0.5)) for name in names], dtype=float)


class MultilabelTargets(Targets):
    def read_targets(self, ds, data, where):
        from datasets import ClassLabel, Sequence

        column, separator = data.label_column, data.label_separator
        feature = ds.features["labels"]
        inner = feature.feature if isinstance(feature, Sequence) else getattr(feature, "feature", None)
        out, empty = [], 0
        for i, value in enumerate(ds["labels"]):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                names = []
            elif isinstance(value, str):
                if separator is None:
                    raise UserError(f"{where}: column '{column}' holds text, not lists of labels; set --data.label_separator "
                                    "(e.g. '|' or ',') to split it into label sets")
                names = [part.strip() for part in value.split(separator) if part.strip()]
            elif isinstance(value, (list, tuple)):
                names = [inner.int2str(v) if isinstance(inner, ClassLabel) else str(v).strip() for v in value]
                names = [n for n in names if n]
            else:
                raise UserError(f"{where}: row {i + 1}: column '{column}' holds {type(value).__name__}; a multi-label target "
                                "is a list of labels or a string joined by --data.label_separator")
            empty += not names
            out.append(sorted(set(names)))
        if empty == len(out):
            hint = f"; data.label_separator '{separator}' splits every row into nothing" if separator else ""
            raise UserError(f"{where}: no row has any label in column '{column}'{hint}")
        if empty:
            log.info("%s: %d of %d rows have an empty label set (allowed: they train every label's 'no')", where, empty, len(out))
        return out

    def label_names(self, targets, feature, column, where):
        labels = sorted({name for row in targets for name in row})
        if len(labels) < 2:
            raise UserError(f"{where}: only one label ({labels}) in column '{column}'; multi-label classification needs two or more")
        return labels

    def encode(self, ds, targets, labels, where):
        from datasets import Sequence, Value

        index = {name: j for j, name in enumerate(labels)}
        rows = []
        for i, names in enumerate(targets):
            row = [0.0] * len(labels)
            for name in names:
                if name not in index:
                    raise UserError(f"{where}: row {i + 1}: label '{name}' does not occur in the training labels; "
                                    "fix the label or add training examples for it")
                row[index[name]] = 1.0
            rows.append(row)
        ds = ds.remove_columns("labels").add_column("labels", rows)
        return ds.cast_column("labels", Sequence(Value("float32")))

    def holdout(self, ds, size, seed, single_note):
        from ...data.sources import multilabel_holdout

        return multilabel_holdout(ds, size, seed)

    def targets_to_json(self, targets, labels):
        return [[labels[j] for j in np.flatnonzero(row)] for row in np.asarray(targets)]

    def targets_from_json(self, values, labels, where):
        index = {name: j for j, name in enumerate(labels)}
        unknown = sorted({n for row in values for n in row} - set(index))
        if unknown:
            raise UserError(f"{where}: label set does not match the run's labels (found {unknown[:5]}); re-run `encoderfit eval`")
        out = np.zeros((len(values), len(labels)), dtype=np.float32)
        for i, row in enumerate(values):
            out[i, [index[n] for n in row]] = 1.0
        return out

    def summarize_targets(self, targets, labels):
        y = np.asarray(targets)
        return {"positives": y.sum(0).astype(int).tolist(), "examples": int(len(y))}


class MultilabelModeling(Modeling):
    probes = True
    probes_by_default = True  # one output per label: a rare label's row barely moves from a fresh start (LP-FT first)

    def output_bias(self, stats):
        """Each label's log-odds in the training split (smoothed): a new head starts at the priors, so the encoder is
        not pushed to a constant vector to learn them (which predicts the priors for every text)."""
        positives = np.asarray(stats["positives"], dtype=np.float64)
        p = (positives + 0.5) / (stats["examples"] + 1.0)
        return np.log(p / (1 - p))

    def loss(self, stats, train):
        import torch

        pos_weight = None
        if train.class_weights == "balanced":  # negatives / positives per label, capped: rare labels weigh more, not infinitely
            positives = np.maximum(np.asarray(stats["positives"], dtype=np.float64), 1)
            pos_weight = torch.tensor(np.clip((stats["examples"] - positives) / positives, 1.0, 100.0), dtype=torch.float32)
            log.info("positive weights (balanced, capped at 100): median %.1f", float(pos_weight.median()))

        def loss(outputs, labels, num_items_in_batch=None):
            logits = outputs.logits.float()
            weight = None if pos_weight is None else pos_weight.to(logits.device)
            per_label = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float(), pos_weight=weight, reduction="none")
            # The Trainer counts num_items_in_batch as the label tensor's elements (examples x labels), so this is the
            # mean over every (example, label) decision, as in the single-process, unaccumulated case.
            return per_label.mean() if num_items_in_batch is None else per_label.sum() / num_items_in_batch

        return loss


    def distill_loss(self, stats, train, distill):
        import torch
        import torch.nn.functional as F

        t, alpha = distill.temperature, distill.alpha

        def each(outputs, labels, teacher, gold):
            logits = outputs.logits.float()
            # each label's Bernoulli: the student's at temperature t against the teacher's, times t^2; mean over labels
            soft = F.binary_cross_entropy_with_logits(logits / t, torch.sigmoid(teacher / t), reduction="none").mean(-1) * t * t
            hard = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none").mean(-1)
            return soft.where(~gold, alpha * soft + (1 - alpha) * hard)

        return each


class MultilabelScoring(Scoring):
    agreement_metric = "subset_accuracy"

    def trainer_metrics(self, labels, stats):
        from sklearn.metrics import f1_score

        def compute(eval_pred):
            # Under the per-label thresholds the finished model will use, fitted on these validation predictions: at
            # a fixed 0.5 a model of many rare labels scores F1 0 for epochs while it ranks well (debtags: 0.0 after
            # epoch 1), and checkpoints would be chosen by a decision rule nobody ships.
            logits, y_true = eval_pred
            y_true, probs = np.asarray(y_true), sigmoid(logits)
            y_pred = probs >= threshold_vector(fit_thresholds(probs, y_true, labels), labels)
            return {"f1_micro": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
                    "f1_macro": float(f1_score(y_true, y_pred, average="macro", zero_division=0))}

        return compute

    def fit_head(self, validation, labels, cfg):
        return {**fit_thresholds(sigmoid(validation.logits), np.asarray(validation.targets), labels), "fitted_on": "validation"}

    def analyse(self, preds, labels, head, cfg):
        from ...core.metrics import multilabel_metrics

        return multilabel_metrics(np.asarray(preds.targets), sigmoid(preds.logits), threshold_vector(head, labels), labels,
                                  preds.shown(), cfg.report.max_examples)

    def head_summary(self, head, analysed):
        return {"thresholds": {**head, "fitted_on": head.get("fitted_on", "saved")}}

    def baseline(self, splits, labels, cfg=None):
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier

        from ...core.metrics import multilabel_metrics

        started = time.time()
        x = tfidf_features(splits)
        y = {role: np.asarray(ds["labels"]) for role, ds in splits.as_dict().items()}
        trainable = y["train"].sum(0) > 0  # a label never positive in train cannot be fitted: it is never predicted
        def fit(c):
            clf = OneVsRestClassifier(LogisticRegression(C=c, max_iter=1000, solver="liblinear")).fit(x["train"], y["train"][:, trainable])
            probs = np.zeros_like(y["validation"], dtype=np.float64)
            probs[:, trainable] = clf.predict_proba(x["validation"])
            head = fit_thresholds(probs, y["validation"], labels)
            return multilabel_metrics(y["validation"], probs, threshold_vector(head, labels), labels)["f1_micro"], c, clf, head

        best = None
        for f1, c, clf, head in fit_each(fit, C_GRID):  # the C values at once
            if best is None or f1 > best[0]:
                best = (f1, c, clf, head)
        f1, c, clf, head = best
        probs = np.zeros_like(y["test"], dtype=np.float64)
        probs[:, trainable] = clf.predict_proba(x["test"])
        result = multilabel_metrics(y["test"], probs, threshold_vector(head, labels), labels)
        result.update({"model": "tfidf-1-2gram + one-vs-rest logistic regression, per-label thresholds on validation", "C": c,
                       "validation_f1_micro": float(f1), "seconds": round(time.time() - started, 2)})
        log.info("baseline (TF-IDF + one-vs-rest LR, C=%g): test micro-F1 %.4f, macro-F1 %.4f", c, result["f1_micro"], result["f1_macro"])
        p = np.clip(probs, 1e-7, 1 - 1e-7)
        return {"metrics": result, "logits": np.log(p / (1 - p)), "head": head}

    def interval_metrics(self, preds, labels, head):
        y = np.asarray(preds.targets) > 0.5
        pred = sigmoid(preds.logits) >= threshold_vector(head, labels)[None, :]
        tp, fp, fn = pred & y, pred & ~y, ~pred & y
        tp_row, fp_row, fn_row = tp.sum(1), fp.sum(1), fn.sum(1)
        row_f1 = np.divide(2 * tp_row, 2 * tp_row + fp_row + fn_row, out=np.zeros(len(y)), where=(2 * tp_row + fp_row + fn_row) > 0)
        exact = (pred == y).all(1)

        def f1_micro(idx):
            t = tp_row[idx].sum()
            return float(2 * t / max(2 * t + fp_row[idx].sum() + fn_row[idx].sum(), 1))

        def f1_macro(idx):
            t, f, n = tp[idx].sum(0), fp[idx].sum(0), fn[idx].sum(0)
            return float(np.divide(2 * t, 2 * t + f + n, out=np.zeros(len(labels)), where=(2 * t + f + n) > 0).mean())

        return ({"f1_micro": f1_micro, "f1_macro": f1_macro, "f1_samples": lambda idx: float(row_f1[idx].mean()),
                 "subset_accuracy": lambda idx: float(exact[idx].mean())}, None)


class MultilabelDecoding(Decoding):
    def probabilities(self, logits, head, calibrated=True):
        return sigmoid(logits)

    def decode(self, logits, labels, head, calibrated=True, abstain=False):
        probs, thresholds = sigmoid(logits), threshold_vector(head, labels)
        results = []
        for row in probs:
            chosen = [j for j in np.argsort(-row) if row[j] >= thresholds[j]]
            results.append({"labels": [labels[j] for j in chosen], "probabilities": {name: float(p) for name, p in zip(labels, row)}})
        return results

    def _thresholds(self, head, n):
        """The head's thresholds in the model's output order (by name, as decode reads them)."""
        thresholds = threshold_vector(head)
        return thresholds if len(thresholds) == n else np.full(n, head.get("global_threshold", 0.5))

    def decision_margin(self, logits, head):
        t = np.clip(self._thresholds(head, logits.shape[1]), 1e-6, 1 - 1e-6)
        return np.abs(logits - np.log(t / (1 - t))).min(1)  # in logit units, like the logits themselves

    def margin_drop(self, quick, exact, head):
        return np.abs(quick - exact).max(1)

    def compare(self, reference, got, head):
        t = self._thresholds(head, reference.shape[1])
        a, b = sigmoid(reference) >= t, sigmoid(got) >= t
        return {**super().compare(reference, got, head), "label_set_agreement": float((a == b).all(1).mean()),
                "label_decision_agreement": float((a == b).mean())}

    def csv_header(self, labels):
        return ["labels", *[f"prob_{name}" for name in labels]]

    def csv_row(self, result, labels):
        return ["|".join(result["labels"]), *[f"{result['probabilities'][n]:.6f}" for n in labels]]

    def signals(self, result):
        return {"labels": result["labels"]}

    def monitored(self, result):
        return {"label": "|".join(sorted(result["labels"])), "score": None, "confidence": None,
                "detail": {"probabilities": result["probabilities"]}}

    def feedback_value(self, value, labels):
        names = value.split("|") if isinstance(value, str) else value
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError("send the labels as a list of names (or one string joined by '|'; [] or '' for none)")
        names = sorted({n.strip() for n in names if n.strip()})  # " food " is food, as training reads it
        unknown = [n for n in names if n not in labels]
        if unknown:
            raise ValueError(f"label(s) {unknown} are not among the model's labels {labels}")
        return names


class Multilabel(Task):
    name = "multilabel"
    stages = (Task.stages | {"distill"}) - {"cv"}  # `encoderfit distill` trains students of its runs
    unsupported = {"cv": "each fold fits its own per-label thresholds, which one pooled comparison cannot apply; use train "
                         "with a larger test split"}
    problem_type = "multi_label_classification"
    metrics_for_best = {"loss": False, "f1_micro": True, "f1_macro": True}
    summary = (("f1_micro", "micro-F1"), ("f1_macro", "macro-F1"), ("f1_samples", "samples-F1"), ("subset_accuracy", "subset accuracy"),
               ("hamming_loss", "Hamming loss"))
    lower_is_better = frozenset({"hamming_loss"})
    Targets = MultilabelTargets
    Modeling = MultilabelModeling
    Scoring = MultilabelScoring
    Decoding = MultilabelDecoding
    Pages = MultilabelPages
