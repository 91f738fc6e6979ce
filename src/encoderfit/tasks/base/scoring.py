"""How a task is measured: the Trainer's metrics, the head fitted on validation, every metric of a split,
the intervals and paired test against the baseline, the baseline itself, training rows worth a look."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ...data.arrow import text_column
from .part import Part


class Scoring(Part):
    softmax_outputs = False
    """Whether the outputs are class logits under one softmax (a row per text, or per word): `encoderfit compress`
    then measures how far a pruned model's outputs moved by KL divergence, else by their squared change."""

    def trainer_metrics(self, labels: List[str], stats: Dict[str, Any]) -> Callable:
        """compute_metrics for the Trainer's evaluations: logits and targets -> {metric: value}."""
        raise NotImplementedError

    def derive_metrics(self, metrics: Dict[str, float], prefix: str) -> Dict[str, float]:
        """Evaluation metrics computed from the Trainer's others (e.g. perplexity from the loss)."""
        return {}

    def fit_head(self, validation, labels: List[str], cfg) -> Dict[str, Any]:
        """The head state fitted on validation predictions: what predict/serve/export apply."""
        return {}

    def analyse(self, preds, labels: List[str], head: Dict[str, Any], cfg) -> Dict[str, Any]:
        """Every metric of one split's predictions, under the given head."""
        raise NotImplementedError

    def head_summary(self, head: Dict[str, Any], analysed: Dict[str, Dict]) -> Dict[str, Any]:
        """The head's decisions with what they do on each analysed split (metrics.json's `head` section)."""
        return dict(head)

    def outputs(self, predictor, texts: List[str], pairs: Optional[List[str]], words=None):
        """A split's outputs as its predictions keep them (the Predictor's logits)."""
        return predictor.logits(texts, pairs, words)

    def baseline(self, splits, labels: List[str], cfg=None) -> Optional[Dict[str, Any]]:
        """A simple model on the same split (TF-IDF based): {"metrics": its test metrics and choices, "logits": its
        test outputs in the form the model's take (so the same metric functions apply), "head": its decisions}."""
        return None

    def interval_metrics(self, preds, labels: List[str], head: Dict[str, Any]) -> Tuple[Dict[str, Callable], Any]:
        """({metric: f(indices) -> value on those examples}, strata for a stratified bootstrap or None): the metrics
        that get confidence intervals and paired comparisons with the baseline."""
        return {}, None

    def clusters(self, preds) -> Optional[Sequence]:
        """A group id per example where examples are not independent (QA: the questions on one paragraph), so the
        bootstrap resamples whole groups; None: examples are resampled one by one."""
        return None

    def paired_test(self, model, baseline, labels: List[str], head: Dict[str, Any], baseline_head: Dict[str, Any]) -> Optional[Dict]:
        """An exact test of the model against the baseline on the same examples, where the task has one."""
        return None

    agreement_metric: Optional[str] = None
    """The test metric that the share of logged decisions equal to their feedback labels estimates (classification:
    accuracy), for `encoderfit monitor`; None: the task's decisions are not compared with feedback that way."""

    def confidence_correct(self, preds, labels: List[str], head: Dict[str, Any]) -> Optional[Tuple[Any, Any]]:
        """(calibrated confidence of each decision, whether it is right) on a labelled split: what label-free accuracy
        estimates are fitted on (`encoderfit monitor`); None where the task has no such confidence."""
        return None

    def greater_is_better(self, metric: str) -> bool:
        return metric not in self.task.lower_is_better

    def review_train(self, predictions: Callable, labels: List[str], head: Dict[str, Any], cfg) -> Optional[List[Dict]]:
        """Training examples worth a person's look (suspected label noise), or None when the task has none.
        `predictions()` gives the training split's predictions (computed, or reused, only when called)."""
        return None


def fit_each(fit: Callable[[Any], Any], values: Sequence[Any]) -> List[Any]:
    """[fit(v) for v in values], the values fitted at the same time in threads (joblib; scikit-learn's liblinear and
    SciPy's sparse products release the GIL): a baseline's grid of C values takes about as long as its slowest fit."""
    import os

    from joblib import Parallel, delayed

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return Parallel(n_jobs=max(1, min(len(values), cores)), prefer="threads")(delayed(fit)(v) for v in values)


def tfidf_features(splits, roles: Sequence[str] = ("train", "validation", "test")):
    """TF-IDF word 1-2-grams fitted on train: {role: sparse matrix} (a pair is joined with a separator token)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    def texts(ds):
        if "text_pair" in ds.column_names:
            return [f"{a} [SEP] {b}" for a, b in zip(text_column(ds, "text"), text_column(ds, "text_pair"))]
        return text_column(ds, "text")

    data = {role: texts(splits.as_dict()[role]) for role in roles}
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2 if len(data["train"]) >= 1000 else 1, sublinear_tf=True)
    return {role: (vectorizer.fit_transform if role == "train" else vectorizer.transform)(t) for role, t in data.items()}
