"""Semantic similarity: a sentence encoder fine-tuned so the cosine of two texts' embeddings follows a rated score.

Data: scored pairs (text_a, text_b, score): the pair's columns as for the embedding task, the score in
--data.label_column (or `score`), a number inside --similarity.target_range (default [0, 1]). Loss: CoSENT (or AnglE),
which only asks the cosines to be ordered as the scores are, so any scale works. Metrics: Spearman (the primary)
and Pearson correlation of cosine with the score. Baselines: TF-IDF cosine (word overlap) and the base model.
The model is the same kind as the embedding task's: embed, search, serve and export apply to it alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, List, Optional

import numpy as np

from ...core.errors import UserError
from ..embedding.task import Embedding, EmbeddingModeling, EmbeddingOptions, EmbeddingScoring, EmbeddingTargets
from ..regression.task import as_number, check_range

DEFAULT_RANGE = (0.0, 1.0)


def _cosines(logits: np.ndarray) -> np.ndarray:
    half = logits.shape[1] // 2
    a, b = logits[:, :half], logits[:, half:]
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def correlations(scores: np.ndarray, targets: np.ndarray) -> dict:
    from scipy.stats import pearsonr, spearmanr

    if len(scores) < 3 or np.ptp(scores) == 0 or np.ptp(targets) == 0:
        return {"spearman": float("nan"), "pearson": float("nan")}
    return {"spearman": float(spearmanr(scores, targets).statistic), "pearson": float(pearsonr(scores, targets).statistic)}


@dataclass
class SimilarityOptions(EmbeddingOptions):
    """The similarity task's settings (`--similarity.*`): the embedding task's, and the scale of the scores."""

    group: ClassVar[str] = "similarity"

    target_range: Optional[List[float]] = None
    """[low, high] of the scores (default [0, 1]); a score outside is an error."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self.target_range, "similarity")


class SimilarityTargets(EmbeddingTargets):
    def canonical(self, ds, data, where, need_labels=True):
        column = data.label_column if data.label_column in ds.column_names else "score"
        if need_labels and column not in ds.column_names:
            raise UserError(f"{where}: no score column ('{data.label_column}' or 'score'); columns are {ds.column_names}; "
                            "set --data.label_column (scored pairs: text_a, text_b, score)")
        pairs = super().canonical(ds, data, where, need_labels)
        if column not in ds.column_names:
            return pairs
        low, high = self.task.options.target_range or DEFAULT_RANGE
        scores = [as_number(v, column, where, i + 1, "scored pairs need a numeric similarity") for i, v in enumerate(ds[column])]
        for i, v in enumerate(scores):
            if not low <= v <= high:
                raise UserError(f"{where}: row {i + 1}: score {v:g} in column '{column}' is outside [{low:g}, {high:g}]; fix "
                                "the row, or set --similarity.target_range [LOW, HIGH] to the scale of the ratings")
        return pairs.remove_columns("labels").add_column("labels", scores)

    def read_targets(self, ds, data, where):
        return [float(v) for v in ds["labels"]]

    def label_names(self, targets, feature, column, where):
        if len(set(targets)) < 2:
            raise UserError(f"{where}: every score is {targets[0]:g}; similarity needs scores that vary")
        return ["similarity"]

    def encode(self, ds, targets, labels, where):
        from datasets import Value

        return ds.remove_columns("labels").add_column("labels", targets).cast_column("labels", Value("float32"))

    def tokenize(self, ds, tokenizer, max_length, windows, train, role):
        rows = super().tokenize(ds, tokenizer, max_length, windows, train, role)  # the same refusals
        return rows if "teacher" in ds.column_names else ds.select_columns(["text", "text_pair", "labels"])


class SimilarityModeling(EmbeddingModeling):
    def build_trainer(self, net, tokenizer, labels, stats, tokenized, train, precision, workdir, callbacks=None, distill=None):
        from ..embedding.model import build_sentence_trainer

        if distill is not None:
            return super().build_trainer(net, tokenizer, labels, stats, tokenized, train, precision, workdir, callbacks, distill)
        return build_sentence_trainer(net, "scored", tokenized, train, precision, workdir, callbacks,
                                      options=self.task.options)


class SimilarityScoring(EmbeddingScoring):
    def scores(self, preds, head):
        """Each row's similarity: the cosine of its two embeddings (or, for the baseline, its first column)."""
        return preds.logits[:, 0] if head.get("scores") else _cosines(preds.logits)

    def analyse(self, preds, labels, head, cfg):
        return {**correlations(self.scores(preds, head), np.asarray(preds.targets)), "n": len(preds.texts)}

    def interval_metrics(self, preds, labels, head):
        scores, targets = self.scores(preds, head), np.asarray(preds.targets)
        return {key: (lambda idx, key=key: correlations(scores[idx], targets[idx])[key]) for key in ("spearman", "pearson")}, None

    def baseline(self, splits, labels, cfg=None):
        from sklearn.feature_extraction.text import TfidfVectorizer

        train, test = splits.train, splits.test
        vectorizer = TfidfVectorizer(sublinear_tf=True).fit(list(train["text"]) + list(train["text_pair"]))
        a, b = vectorizer.transform(test["text"]), vectorizer.transform(test["text_pair"])
        tfidf = np.asarray(a.multiply(b).sum(1)).ravel()  # rows are l2-normalised: the product is the cosine
        targets = np.asarray(test["labels"])
        metrics = {**correlations(tfidf, targets), "n": len(test), "model": "TF-IDF cosine (fitted on the training texts)"}
        base = np.zeros_like(tfidf)
        if cfg is not None:
            from ...models.loading import DEFAULT_MAX_LENGTH
            from ..embedding.model import load_sentence_model

            model = load_sentence_model(cfg.model, cfg.resolved.get("max_length") or DEFAULT_MAX_LENGTH)
            base = (model.encode(list(test["text"]), normalize_embeddings=True) * model.encode(list(test["text_pair"]), normalize_embeddings=True)).sum(1)
            metrics["base_model"] = {**correlations(base, targets), "n": len(test), "model": cfg.model.name_or_path}
        return {"metrics": metrics, "logits": np.stack([tfidf, base], 1).astype(np.float32), "head": {"scores": ["tfidf", "base_model"]}}

    def paired_test(self, model, baseline, labels, head, baseline_head):
        from ...core.stats import paired_bootstrap

        before = baseline.logits[:, 1]
        if not before.any():
            return None
        targets, after = np.asarray(model.targets), self.scores(model, head)
        return {"base_model": {"differences": {"spearman": paired_bootstrap(
            lambda idx, who: correlations((after if who == "model" else before)[idx], targets[idx])["spearman"], len(after))}}}


class Similarity(Embedding):
    name = "similarity"
    stages = Embedding.stages | {"cv"}  # a pair's score is the cosine of its own two embeddings: pooling applies
    summary = (("spearman", "Spearman ρ"), ("pearson", "Pearson r"))
    baseline_name = "TF-IDF cosine"
    baseline_plain = "word overlap (TF-IDF cosine)"
    Options = SimilarityOptions
    Targets = SimilarityTargets
    Modeling = SimilarityModeling
    Scoring = SimilarityScoring
