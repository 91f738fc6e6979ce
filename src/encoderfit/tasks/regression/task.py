"""Regression: one number per text.

The model trains on standardized targets ((y - mean) / sd of the training split), whatever their scale; when
training ends the scaling is folded into the output layer, so the saved model (and a plain pipeline with
`function_to_apply="none"`) answers in the target's own units. Head fitted on validation: a split-conformal
prediction interval (Vovk et al. 2005; Lei et al. 2018): the ceil((n+1)c)/n quantile of the absolute validation
residuals, so that an interval [y - q, y + q] covers the true value with probability at least c on exchangeable data.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import List, Literal, Optional

import numpy as np

from ...core.errors import UserError
from ..base import Decoding, Modeling, Scoring, Targets, Task, tfidf_features
from .pages import RegressionPages

log = logging.getLogger(__name__)
BINS = 10  # quantile bins the splits are stratified by (fewer for small sets)
ALPHAS = (0.1, 1.0, 10.0, 100.0)
POINTS = 2000  # (true, predicted) pairs kept in metrics.json for the report's scatter plots


def as_number(value, column: str, where: str, row: int, need: str = "regression needs numeric targets") -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise UserError(f"{where}: row {row}: empty target in column '{column}'; fill it in or remove the row")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: row {row}: '{value}' in column '{column}' is not a number; {need}") from None
    if not math.isfinite(number):
        raise UserError(f"{where}: row {row}: target {value} in column '{column}' is not finite; fix or remove the row")
    return number


def numeric_targets(ds) -> Optional[np.ndarray]:
    """The `labels` column as float64 (NaN where missing) when it holds numbers, else None (text to parse)."""
    import pyarrow as pa

    from ...data.arrow import arrow_column

    column = arrow_column(ds, "labels")
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        return None
    return column.cast(pa.float64()).to_numpy().astype(np.float64, copy=False)


def clip(values: np.ndarray, target_range: Optional[List[float]]) -> np.ndarray:
    return np.clip(values, *target_range) if target_range else values


def conformal_halfwidth(residuals: np.ndarray, coverage: float) -> float:
    """The split-conformal quantile: the ceil((n+1)c)-th smallest absolute residual (inf when n is too small)."""
    n = len(residuals)
    rank = math.ceil((n + 1) * coverage)
    return float(np.sort(np.abs(residuals))[rank - 1]) if rank <= n else float("inf")


def check_range(target_range: Optional[List[float]], group: str) -> None:
    if not (target_range is None or (len(target_range) == 2 and target_range[0] < target_range[1])):
        raise UserError(f"{group}.target_range must be [low, high] with low < high (got {target_range})")


@dataclass
class RegressionOptions:
    """The regression task's settings (`--regression.*`)."""

    target_range: Optional[List[float]] = None
    """[low, high] of valid targets; a target outside is an error, predictions and intervals are clipped to it."""
    loss: Literal["mse", "huber"] = "mse"
    """Squared error, or Huber (less pulled by outliers), on standardized targets."""

    def __post_init__(self) -> None:
        check_range(self.target_range, "regression")


class RegressionTargets(Targets):
    def read_targets(self, ds, data, where):
        values = numeric_targets(ds)  # a column of numbers: one float64 array read through Arrow, no Python float a row
        bad = np.flatnonzero(~np.isfinite(values)) if values is not None else None
        if values is None or len(bad):  # text, or a missing/non-finite value: the row-by-row read names the first bad row
            start = int(bad[0]) if values is not None else 0
            rows = ds.select(range(start, len(ds)))["labels"] if start else ds["labels"]
            parsed = [as_number(v, data.label_column, where, start + i + 1) for i, v in enumerate(rows)]
            values = np.asarray(parsed, dtype=np.float64) if values is None else values
        if self.task.options.target_range:
            lo, hi = self.task.options.target_range
            outside = np.flatnonzero((values < lo) | (values > hi))
            if len(outside):
                i = int(outside[0])
                raise UserError(f"{where}: row {i + 1}: target {values[i]:g} is outside regression.target_range [{lo:g}, {hi:g}]; "
                                "fix the row or widen the range")
        return values

    def label_names(self, targets, feature, column, where):
        if len(np.unique(targets)) < 2:
            raise UserError(f"{where}: every target in column '{column}' is {targets[0]:g}; regression needs values that vary")
        return [column]

    def encode(self, ds, targets, labels, where):
        from datasets import Value

        return ds.remove_columns("labels").add_column("labels", targets).cast_column("labels", Value("float32"))

    def holdout(self, ds, size, seed, single_note):
        from ...data.sources import stratified_holdout

        y = np.asarray(ds["labels"], dtype=np.float64)
        bins = max(1, min(BINS, int(len(y) * min(size, 1 - size)), len(y) // 2))  # each bin can give both sides a row
        edges = np.unique(np.quantile(y, np.linspace(0, 1, bins + 1))[1:-1])
        strata = np.searchsorted(edges, y, side="right")
        return stratified_holdout(ds, size, seed, strata, [f"bin {b}" for b in range(len(edges) + 1)], None)

    def num_outputs(self, labels):
        return 1

    def targets_to_json(self, targets, labels):
        return [float(y) for y in targets]

    def targets_from_json(self, values, labels, where):
        return np.asarray(values, dtype=np.float64)

    def summarize_targets(self, targets, labels):
        y = np.asarray(targets, dtype=np.float64)
        return {"mean": float(y.mean()), "sd": float(y.std()) or 1.0, "min": float(y.min()), "max": float(y.max())}


class RegressionModeling(Modeling):
    probes = True

    def model_kwargs(self, labels):
        return {"num_labels": 1, "id2label": {0: labels[0]}, "label2id": {labels[0]: 0}, "problem_type": self.task.problem_type}

    def loss(self, stats, train):
        import torch

        mean, sd = stats["mean"], stats["sd"]
        kind = self.task.options.loss

        def loss(outputs, labels, num_items_in_batch=None):
            predicted = outputs.logits.float().squeeze(-1)
            target = (labels.float() - mean) / sd
            if kind == "huber":
                each = torch.nn.functional.huber_loss(predicted, target, reduction="none", delta=1.0)
            else:
                each = torch.nn.functional.mse_loss(predicted, target, reduction="none")
            return each.mean() if num_items_in_batch is None else each.sum() / num_items_in_batch

        return loss

    def distill_loss(self, stats, train, distill):
        import torch.nn.functional as F

        mean, sd, alpha = stats["mean"], stats["sd"], distill.alpha

        def each(outputs, labels, teacher, gold):
            # the student learns standardised targets; the teacher's saved model gives raw ones (no temperature: a
            # score has no distribution to soften)
            predicted = outputs.logits.float().squeeze(-1)
            soft = F.mse_loss(predicted, (teacher.squeeze(-1) - mean) / sd, reduction="none")
            hard = F.mse_loss(predicted, (labels.float() - mean) / sd, reduction="none")
            return soft.where(~gold, alpha * soft + (1 - alpha) * hard)

        return each

    def after_training(self, model_dir, stats, trainer=None):
        """Fold y = z * sd + mean into the output layer: the one (1, hidden) weight with its (1,) bias."""
        from safetensors.numpy import load_file, save_file

        path = model_dir / "model.safetensors"
        weights = load_file(path)
        heads = [k for k, v in weights.items() if k.endswith(".weight") and v.ndim == 2 and v.shape[0] == 1
                 and k[: -len("weight")] + "bias" in weights]
        if len(heads) != 1:
            raise UserError(f"{path}: cannot find the regression output layer (found {heads or 'none'}); this model family "
                            "is not supported for regression yet")
        weight, bias = heads[0], heads[0][: -len("weight")] + "bias"
        weights[weight] = (weights[weight] * stats["sd"]).astype(weights[weight].dtype)
        weights[bias] = (weights[bias] * stats["sd"] + stats["mean"]).astype(weights[bias].dtype)
        save_file(weights, str(path), metadata={"format": "pt"})
        return True


class RegressionScoring(Scoring):
    def trainer_metrics(self, labels, stats):
        from ...core.metrics import regression_metrics

        def compute(eval_pred):
            logits, y_true = eval_pred
            predicted = np.asarray(logits).reshape(-1) * stats["sd"] + stats["mean"]  # still standardized while training
            m = regression_metrics(np.asarray(y_true, dtype=np.float64), predicted)
            return {k: m[k] for k in ("pearson", "spearman", "mae", "rmse")}

        return compute

    def fit_head(self, validation, labels, cfg):
        predicted = clip(np.asarray(validation.logits).reshape(-1), self.task.options.target_range)
        residuals = np.asarray(validation.targets) - predicted
        coverage = cfg.report.coverage
        return {"coverage": coverage, "halfwidth": conformal_halfwidth(residuals, coverage), "target_range": self.task.options.target_range,
                "validation_examples": len(residuals), "fitted_on": "validation"}

    def analyse(self, preds, labels, head, cfg):
        from ...core.metrics import regression_metrics

        y = np.asarray(preds.targets, dtype=np.float64)
        predicted = clip(np.asarray(preds.logits, dtype=np.float64).reshape(-1), head.get("target_range"))
        m = regression_metrics(y, predicted)
        q = head.get("halfwidth")
        if q is not None:
            low, high = clip(predicted - q, head.get("target_range")), clip(predicted + q, head.get("target_range"))
            m["interval"] = {"coverage_target": head["coverage"], "coverage": float(((y >= low) & (y <= high)).mean()),
                             "mean_width": float((high - low).mean())}
        order = np.argsort(-np.abs(predicted - y), kind="stable")[: cfg.report.max_examples]
        texts = preds.shown()
        m["largest_errors"] = [{"row": int(i) + 1, "true": float(y[i]), "predicted": float(predicted[i]), "text": texts[i][:300]}
                               for i in order]
        keep = np.random.default_rng(0).permutation(len(y))[:POINTS]
        m["points"] = {"true": np.round(y[keep], 4).tolist(), "predicted": np.round(predicted[keep], 4).tolist()}
        return m

    def head_summary(self, head, analysed):
        return {"interval": {**head, **{role: m.get("interval") for role, m in analysed.items()}}}

    def baseline(self, splits, labels, cfg=None):
        from sklearn.linear_model import Ridge

        from ...core.metrics import regression_metrics

        started = time.time()
        x = tfidf_features(splits)
        y = {role: np.asarray(ds["labels"], dtype=np.float64) for role, ds in splits.as_dict().items()}
        best = None
        for alpha in ALPHAS:
            model = Ridge(alpha=alpha).fit(x["train"], y["train"])
            rmse = float(np.sqrt(np.mean((model.predict(x["validation"]) - y["validation"]) ** 2)))
            if best is None or rmse < best[0]:
                best = (rmse, alpha, model)
        rmse, alpha, model = best
        predicted = model.predict(x["test"])
        result = regression_metrics(y["test"], predicted)
        result.update({"model": "tfidf-1-2gram + ridge regression", "alpha": alpha, "validation_rmse": rmse,
                       "seconds": round(time.time() - started, 2)})
        log.info("baseline (TF-IDF + ridge, alpha=%g): test Pearson %.4f, RMSE %.4f", alpha, result["pearson"], result["rmse"])
        return {"metrics": result, "logits": predicted.reshape(-1, 1), "head": {}}

    def interval_metrics(self, preds, labels, head):
        from scipy.stats import rankdata

        y = np.asarray(preds.targets, dtype=np.float64)
        predicted = clip(np.asarray(preds.logits, dtype=np.float64).reshape(-1), head.get("target_range"))
        error = predicted - y

        def pearson(idx):
            a, b = y[idx], predicted[idx]
            return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")

        def spearman(idx):
            a, b = rankdata(y[idx]), rankdata(predicted[idx])
            return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")

        fns = {"pearson": pearson, "spearman": spearman, "mae": lambda idx: float(np.abs(error[idx]).mean()),
               "rmse": lambda idx: float(np.sqrt((error[idx] ** 2).mean()))}
        q = head.get("halfwidth")
        if q is not None:
            low, high = clip(predicted - q, head.get("target_range")), clip(predicted + q, head.get("target_range"))
            covered = (y >= low) & (y <= high)
            fns["interval_coverage"] = lambda idx: float(covered[idx].mean())
        return fns, None


class RegressionDecoding(Decoding):
    def decode(self, logits, labels, head, calibrated=True, abstain=False):
        predicted = clip(np.asarray(logits, dtype=np.float64).reshape(-1), head.get("target_range"))
        q = head.get("halfwidth")
        results = []
        for value in predicted:
            result = {"score": float(value)}
            if q is not None:
                result["low"] = float(clip(np.array([value - q]), head.get("target_range"))[0])
                result["high"] = float(clip(np.array([value + q]), head.get("target_range"))[0])
            results.append(result)
        return results

    def compare(self, reference, got, head):
        a, b = np.asarray(reference).reshape(-1), np.asarray(got).reshape(-1)
        same = float(np.corrcoef(a, b)[0, 1]) if len(a) > 1 and a.std() and b.std() else 1.0
        return {**super().compare(reference, got, head), "pearson_with_reference": same}

    def csv_header(self, labels):
        return ["score", "low", "high"]

    def csv_row(self, result, labels):
        return [f"{result['score']:.6f}", *(f"{result[k]:.6f}" if k in result else "" for k in ("low", "high"))]

    def signals(self, result):
        return {"score": result["score"]}

    def monitored(self, result):
        width = result["high"] - result["low"] if "high" in result and "low" in result else None
        return {"label": None, "score": result["score"], "confidence": None, "detail": {"width": width} if width is not None else None}

    def feedback_value(self, value, labels):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"label {value!r} is not a number; send the true value as a JSON number")
        return float(value)


class Regression(Task):
    name = "regression"
    problem_type = "regression"
    stages = Task.stages | {"distill"}  # `encoderfit distill` trains students of its runs
    output_noun = "target"
    metrics_for_best = {"loss": False, "pearson": True, "spearman": True, "mae": False, "rmse": False}
    summary = (("pearson", "Pearson r"), ("spearman", "Spearman ρ"), ("mae", "MAE"), ("rmse", "RMSE"), ("r2", "R²"))
    lower_is_better = frozenset({"mae", "rmse"})
    Options = RegressionOptions
    Targets = RegressionTargets
    Modeling = RegressionModeling
    Scoring = RegressionScoring
    Decoding = RegressionDecoding
    Pages = RegressionPages
