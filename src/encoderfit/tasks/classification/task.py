"""Single-label classification: one class per text, softmax over classes.

Head fitted on validation: a temperature (Guo et al. 2017) and the lowest confidence threshold whose accuracy on
answered texts reaches `report.target_accuracy` (predict and serve can answer UNKNOWN below it).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Dict, List

import numpy as np

from ...core.errors import UserError
from ..base import Decoding, Modeling, Scoring, Targets, Task, fit_each, tfidf_features
from .pages import ClassificationPages

log = logging.getLogger(__name__)
UNKNOWN = "UNKNOWN"
C_GRID = (0.1, 1.0, 10.0, 100.0)
TEXT_CHARS = 300  # texts in the error tables are cut to this length


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip())


def _cut(text: str) -> str:
    return text if len(text) <= TEXT_CHARS else text[: TEXT_CHARS - 1] + "…"


def label_strings(values, feature, column: str, where: str) -> List[str]:
    """Each row's label as a string; surrounding whitespace stripped ("pos " is "pos"), and said so."""
    from datasets import ClassLabel

    out, stripped, one = [], 0, {}  # `one`: a single string object per label, not one per row (millions of rows)
    for i, value in enumerate(values):
        if _missing(value) or (isinstance(feature, ClassLabel) and value < 0):
            raise UserError(f"{where}: row {i + 1}: empty label in column '{column}'; fill it in or remove the row")
        if isinstance(feature, ClassLabel):
            out.append(feature.int2str(value))
        elif isinstance(value, float) and value.is_integer():
            out.append(str(int(value)))
        else:
            text = str(value)
            stripped += text != text.strip()
            text = text.strip()
            out.append(one.setdefault(text, text))
    if stripped:
        log.info("%s: stripped surrounding whitespace from %d label(s)", where, stripped)
    return out


def ordered_names(strings: List[str], feature) -> List[str]:
    """ClassLabel order when there is one; integers numerically; else alphabetically."""
    from datasets import ClassLabel

    if isinstance(feature, ClassLabel):
        return list(feature.names)
    unique = set(strings)
    if unique and all(s.lstrip("-").isdigit() for s in unique):
        return [str(v) for v in sorted(int(s) for s in unique)]
    return sorted(unique)


def report_near_duplicates(labels: List[str], where: str) -> None:
    """Warn about labels that differ only by case or inner whitespace ("Pos" and "pos"): probably one class."""
    groups: Dict[str, List[str]] = {}
    for name in labels:
        groups.setdefault(" ".join(name.split()).casefold(), []).append(name)
    for names in groups.values():
        if len(names) > 1:
            log.warning("warning: %s: labels %s differ only by case or whitespace and are trained as %d classes; "
                        "if they are one class, make them identical in the data", where, " and ".join(f"'{n}'" for n in names), len(names))


def index_of(strings: List[str], labels: List[str], where: str) -> List[int]:
    index = {name: i for i, name in enumerate(labels)}
    for i, s in enumerate(strings):
        if s not in index:
            raise UserError(f"{where}: row {i + 1}: label '{s}' does not occur in the training labels {labels}; "
                            "fix the label or add training examples for it")
    return [index[s] for s in strings]


class ClassificationTargets(Targets):
    def read_targets(self, ds, data, where):
        return label_strings(ds["labels"], ds.features["labels"], data.label_column, where)

    def label_names(self, targets, feature, column, where):
        labels = ordered_names(targets, feature)
        report_near_duplicates(labels, where)
        if len(labels) < 2:
            raise UserError(f"{where}: only one label ({labels}) in column '{column}'; a classifier needs two or more")
        return labels

    def encode(self, ds, targets, labels, where):
        from datasets import ClassLabel

        ds = ds.remove_columns("labels").add_column("labels", index_of(targets, labels, where))
        return ds.cast_column("labels", ClassLabel(names=labels))

    def holdout(self, ds, size, seed, single_note):
        from ...data.arrow import column_values
        from ...data.sources import stratified_holdout

        return stratified_holdout(ds, size, seed, column_values(ds, "labels"), ds.features["labels"].names, single_note)

    def targets_to_json(self, targets, labels):
        return [labels[int(y)] for y in targets]

    def targets_from_json(self, values, labels, where):
        unknown = sorted(set(values) - set(labels))
        if unknown:
            raise UserError(f"{where}: label set does not match the run's labels {labels} (found {unknown}); re-run `encoderfit eval`")
        return np.asarray(index_of(list(values), labels, where))

    def summarize_targets(self, targets, labels):
        return {"counts": np.bincount(np.asarray(targets), minlength=len(labels)).tolist()}


class ClassificationModeling(Modeling):
    probes = True

    def loss(self, stats, train):
        import torch

        weights = None
        if train.class_weights == "balanced":
            from sklearn.utils.class_weight import compute_class_weight

            counts = np.asarray(stats["counts"])
            present = np.flatnonzero(counts)
            y = np.repeat(present, counts[present])
            weights = np.ones(len(counts))
            weights[present] = compute_class_weight("balanced", classes=present, y=y)
            log.info("class weights (balanced): %s", np.round(weights, 3).tolist())
            weights = torch.tensor(weights, dtype=torch.float32)

        def loss(outputs, labels, num_items_in_batch=None):
            logits = outputs.logits.float()
            weight = None if weights is None else weights.to(logits.device)
            # per example in training and evaluation alike: the weighted sum over the examples (of all accumulated
            # batches in training), never over the weights, so the validation loss is the training objective
            count = labels.numel() if num_items_in_batch is None else num_items_in_batch
            return torch.nn.functional.cross_entropy(logits, labels, weight=weight, reduction="sum") / count

        return loss


    def distill_loss(self, stats, train, distill):
        import torch.nn.functional as F

        t, alpha = distill.temperature, distill.alpha

        def each(outputs, labels, teacher, gold):
            logits = outputs.logits.float()
            # KL(teacher || student) at temperature t, times t^2 (Hinton et al. 2015)
            soft = F.kl_div(F.log_softmax(logits / t, -1), F.log_softmax(teacher / t, -1), log_target=True,
                            reduction="none").sum(-1) * t * t
            hard = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")
            return soft.where(~gold, alpha * soft + (1 - alpha) * hard)

        return each


class ClassificationScoring(Scoring):
    agreement_metric = "accuracy"
    softmax_outputs = True

    def confidence_correct(self, preds, labels, head):
        probs = self.task.decoding.probabilities(preds.logits, head)
        return probs.max(1), probs.argmax(1) == np.asarray(preds.targets)

    def trainer_metrics(self, labels, stats):
        from sklearn.metrics import accuracy_score, f1_score

        def compute(eval_pred):
            logits, y_true = eval_pred
            y_pred = np.asarray(logits).argmax(-1)
            return {"accuracy": float(accuracy_score(y_true, y_pred)),
                    "f1_macro": float(f1_score(y_true, y_pred, average="macro", zero_division=0))}

        return compute

    def fit_head(self, validation, labels, cfg):
        from ...core.calibration import coverage_sweep, fit_temperature_cv, softmax, threshold_for

        scaling = fit_temperature_cv(validation.logits, validation.targets)
        threshold, target = None, cfg.report.target_accuracy
        if target:
            threshold = threshold_for(coverage_sweep(softmax(validation.logits, scaling["temperature"]), validation.targets), target)
        return {**scaling, "threshold": threshold, "target_accuracy": target, "fitted_on": "validation"}

    def analyse(self, preds, labels, head, cfg):
        from ...core.calibration import calibration_metrics, coverage_sweep, reliability_bins, softmax
        from ...core.metrics import classification_metrics, confused_pairs, wrong_with_confidence

        raw, cal = softmax(preds.logits), softmax(preds.logits, head.get("temperature") or 1.0)
        m = classification_metrics(preds.targets, raw.argmax(1), labels)
        m["calibration"] = {
            "before": calibration_metrics(raw, preds.targets), "after": calibration_metrics(cal, preds.targets),
            "reliability_before": reliability_bins(raw, preds.targets), "reliability_after": reliability_bins(cal, preds.targets),
        }
        m["sweep"] = coverage_sweep(cal, preds.targets)
        m["confused_pairs"] = confused_pairs(m["confusion_matrix"]["matrix"], labels)
        mistakes = wrong_with_confidence(preds.shown(), preds.targets, cal, labels)[: cfg.report.max_examples]
        m["confident_mistakes"] = [{**row, "text": _cut(row["text"])} for row in mistakes]
        if head.get("threshold") is not None:
            from ...core.stats import bootstrap_ci

            answered = np.flatnonzero(cal.max(1) >= head["threshold"])
            right = (cal.argmax(1) == np.asarray(preds.targets))[answered]
            m["at_threshold"] = {"coverage": len(answered) / max(len(preds.targets), 1),
                                 "accuracy": float(right.mean()) if len(answered) else None,
                                 "accuracy_ci": bootstrap_ci(lambda idx: float(right[idx].mean()), len(right)) if len(answered) else None}
        return m

    def head_summary(self, head, analysed):
        threshold = head.get("threshold")
        at = {role: ({**min(m["sweep"], key=lambda r: abs(r["threshold"] - threshold)),
                      "accuracy_ci": (m.get("at_threshold") or {}).get("accuracy_ci")} if threshold is not None else None)
              for role, m in analysed.items()}
        return {"calibration": {"temperature": head.get("temperature") or 1.0, "fitted_on": head.get("fitted_on", "saved"),
                                **{k: head[k] for k in ("decision", "cv_folds", "cv_nll_scaled", "cv_nll_unscaled") if k in head}},
                "threshold": {"target_accuracy": head.get("target_accuracy"), "value": threshold,
                              "chosen_on": head.get("fitted_on", "saved"), **at}}

    def baseline(self, splits, labels, cfg=None):
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import f1_score

        from ...core.metrics import classification_metrics

        started = time.time()
        x = tfidf_features(splits)
        y = {role: np.asarray(ds["labels"]) for role, ds in splits.as_dict().items()}
        def fit(c):
            clf = LogisticRegression(C=c, max_iter=2000).fit(x["train"], y["train"])
            return f1_score(y["validation"], clf.predict(x["validation"]), average="macro"), c, clf

        best = None
        for f1, c, clf in fit_each(fit, C_GRID):  # the C values at once
            if best is None or f1 > best[0]:
                best = (f1, c, clf)
        f1, c, clf = best
        probs = clf.predict_proba(x["test"])
        result = classification_metrics(y["test"], probs.argmax(1), labels)
        result.update({"model": "tfidf-1-2gram + logistic regression", "C": c, "validation_f1_macro": float(f1),
                       "seconds": round(time.time() - started, 2)})
        log.info("baseline (TF-IDF + LR, C=%g): test accuracy %.4f, macro-F1 %.4f", c, result["accuracy"], result["f1_macro"])
        return {"metrics": result, "logits": np.log(np.clip(probs, 1e-12, 1.0)), "head": {}}

    def interval_metrics(self, preds, labels, head):
        from ...core.calibration import ece, softmax

        y = np.asarray(preds.targets)
        raw, cal = softmax(preds.logits), softmax(preds.logits, head.get("temperature") or 1.0)
        predicted, k = raw.argmax(1), len(labels)
        correct = predicted == y

        def f1_macro(idx):
            counts = np.bincount(y[idx] * k + predicted[idx], minlength=k * k).reshape(k, k)
            tp, support, chosen = np.diag(counts), counts.sum(1), counts.sum(0)
            f1 = np.divide(2 * tp, support + chosen, out=np.zeros(k), where=(support + chosen) > 0)
            return float(f1.mean())

        return ({"accuracy": lambda idx: float(correct[idx].mean()), "f1_macro": f1_macro,
                 "ece_before": lambda idx: ece(raw[idx], y[idx]), "ece_after": lambda idx: ece(cal[idx], y[idx])}, y)

    def paired_test(self, model, baseline, labels, head, baseline_head):
        from ...core.stats import mcnemar_exact

        y = np.asarray(model.targets)
        return {"mcnemar": mcnemar_exact(model.logits.argmax(1) == y, baseline.logits.argmax(1) == y)}

    def review_train(self, predictions, labels, head, cfg):
        from ...core.calibration import softmax
        from ...core.metrics import wrong_with_confidence

        preds = predictions()
        probs = softmax(preds.logits, head.get("temperature") or 1.0)
        return wrong_with_confidence(preds.shown(), preds.targets, probs, labels, cfg.report.noise_confidence)


class ClassificationDecoding(Decoding):
    def probabilities(self, logits, head, calibrated=True):
        from ...core.calibration import softmax

        return softmax(logits, (head.get("temperature") or 1.0) if calibrated else 1.0)

    def decode(self, logits, labels, head, calibrated=True, abstain=False):
        if abstain and head.get("threshold") is None:
            raise UserError("abstain needs a threshold; evaluate the run with --report.target_accuracy to choose one")
        if abstain and not calibrated:
            raise UserError("--abstain: the threshold was chosen on calibrated probabilities; drop --calibrated false")
        probs = self.probabilities(logits, head, calibrated)
        results = []
        for row in probs:
            best = int(row.argmax())
            unknown = abstain and row[best] < head["threshold"]
            results.append({"label": UNKNOWN if unknown else labels[best], "score": float(row[best]),
                            "probabilities": {name: float(p) for name, p in zip(labels, row)}})
        return results

    def decision_margin(self, logits, head):
        if logits.shape[1] < 2:
            return np.full(len(logits), np.inf)
        top2 = np.partition(logits, -2, axis=1)[:, -2:]
        return top2[:, 1] - top2[:, 0]

    def margin_drop(self, quick, exact, head):
        top = quick.argmax(1)[:, None]
        lead_quick = np.take_along_axis(quick, top, 1) - quick
        lead_exact = np.take_along_axis(exact, top, 1) - exact
        return np.clip(lead_quick - lead_exact, 0, None).max(1)

    def compare(self, reference, got, head):
        return {**super().compare(reference, got, head), "label_agreement": float((got.argmax(1) == reference.argmax(1)).mean())}

    def csv_header(self, labels):
        return ["label", "score", *[f"prob_{name}" for name in labels]]

    def csv_row(self, result, labels):
        return [result["label"], f"{result['score']:.6f}", *[f"{result['probabilities'][n]:.6f}" for n in labels]]

    def signals(self, result):
        return {"labels": [result["label"]], "confidence": result["score"], "abstained": result["label"] == UNKNOWN}

    def monitored(self, result):
        """The model's own top label, also when the answer was UNKNOWN (marked in detail): monitor compares the
        logged label shares with validation's, decoded without abstention."""
        probs = result["probabilities"]
        top = max(probs, key=probs.get)  # the first of equal ones, as decode's argmax
        return {"label": top, "score": None, "confidence": result["score"],
                "detail": {"abstained": True} if result["label"] == UNKNOWN else None}

    def feedback_value(self, value, labels):
        value = value.strip() if isinstance(value, str) else value  # " food " is food, as training reads it
        if not isinstance(value, str) or value not in labels:
            raise ValueError(f"label {value!r} is not one of the model's labels {labels}")
        return value


class Classification(Task):
    name = "classification"
    problem_type = "single_label_classification"
    inference_options = frozenset({"calibrated", "abstain"})
    metrics_for_best = {"loss": False, "accuracy": True, "f1_macro": True}
    summary = (("accuracy", "accuracy"), ("f1_macro", "macro-F1"), ("f1_micro", "micro-F1"), ("f1_weighted", "weighted-F1"))
    lower_is_better = frozenset({"ece_before", "ece_after"})
    exact_test = "mcnemar"
    stages = Task.stages | {"distill"}  # `encoderfit distill` trains students of its runs
    Targets = ClassificationTargets
    Modeling = ClassificationModeling
    Scoring = ClassificationScoring
    Decoding = ClassificationDecoding
    Pages = ClassificationPages
