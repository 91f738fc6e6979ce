"""Embeddings for search: a sentence encoder fine-tuned so a query lands next to its relevant documents.

Data shapes (columns found by name, or named with --data.text_column / --data.text_pair_column):
- (anchor, positive) pairs: anchor/positive, query/document, sentence1/sentence2, text_a/text_b, text/text_pair;
- (anchor, positive, negative) triplets: the same plus a `negative` column (a hard negative per row);
- (query, document, relevant) judgements: a `relevant` (or `relevance`) column; rows judged relevant (> 0) train
  as pairs, and every query needs at least one.
The loss is multiple-negatives ranking (every other document of the batch is a negative; cached, GradCache-style,
with --embedding.mini_batch), batches hold no text twice. Splits are made by connected groups of queries and
documents, so no held-out query or document is ever seen in training.

Outputs ("logits" to the stages): a split's row is [embedding(query) | embedding(document)], each normalised. The
baseline's rows are [BM25 rank, base-model rank] (the head says so); every metric is computed from filtered ranks
(retrieval.py), so the model, BM25 and the base model are scored by the same functions on the same rows.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import ClassVar, Dict, List, Literal, Optional

import numpy as np

from ...core.errors import UserError, closest
from ..base import Decoding, Modeling, Scoring, Targets, Task
from .pages import EmbeddingPages

log = logging.getLogger(__name__)
PAIR_NAMES = (("anchor", "positive"), ("query", "document"), ("query", "positive"), ("sentence1", "sentence2"),
              ("text_a", "text_b"), ("text", "text_pair"))
JUDGEMENT_COLUMNS = ("relevant", "relevance")
SHOWN_CHANGES = 20


def _text_columns(ds, data, where):
    """(first text column, second text column) of a pairs table."""
    names = ds.column_names
    if data.text_pair_column:
        return data.text_column, data.text_pair_column
    for first, second in PAIR_NAMES:
        if first in names and second in names:
            return first, second
    raise UserError(f"{where}: no pair of text columns found in {names}; name them anchor/positive (or query/document), "
                    "or set --data.text_column and --data.text_pair_column")


def _check_texts(ds, columns: Dict[str, str], where: str) -> None:
    for name, column in columns.items():  # canonical name -> the data's own
        for i, value in enumerate(ds[name]):
            if not isinstance(value, str) or not value.strip():
                what = "empty text" if value is None or isinstance(value, str) else f"{type(value).__name__}, not text"
                raise UserError(f"{where}: row {i + 1}: {what} in column '{column}'; fill it in or remove the row")


def _judged(ds, column: str, where: str):
    """Judgement rows -> the relevant ones; a non-numeric judgement, or a query with none relevant, is an error."""
    first_row, any_relevant, keep = {}, {}, []
    for i, (query, value) in enumerate(zip(ds["text"], ds[column])):
        try:
            grade = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: row {i + 1}: '{value}' in column '{column}' is not a number; judgements are 0 "
                            "(not relevant) or a positive grade") from None
        if not math.isfinite(grade):  # NaN > 0 is False: it would silently count as "not relevant"
            raise UserError(f"{where}: row {i + 1}: judgement {value} in column '{column}' is not a finite number; give 0 "
                            "(not relevant) or a positive grade, or remove the row")
        relevant = grade > 0
        first_row.setdefault(query, i + 1)
        any_relevant[query] = any_relevant.get(query, False) or relevant
        if relevant:
            keep.append(i)
    lonely = next((q for q, ok in any_relevant.items() if not ok), None)
    if lonely is not None:
        raise UserError(f"{where}: row {first_row[lonely]}: query '{lonely[:60]}' has no relevant document (every "
                        f"judgement of it in column '{column}' is 0); add one or remove the query")
    log.info("%s: %d judged-relevant pairs kept of %d judgements", where, len(keep), len(ds))
    return ds.select(keep).remove_columns(column)


@dataclass
class EmbeddingOptions:
    """The embedding task's settings (`--embedding.*`; the similarity task has them too)."""

    group: ClassVar[str] = "embedding"

    loss: Literal["auto", "mnrl", "cosent", "angle"] = "auto"
    """mnrl (multiple-negatives ranking: the batch's other documents are the negatives) for pairs and triplets,
    cosent or angle for scored pairs; auto picks by the data's shape."""
    mini_batch: Optional[int] = None
    """With mnrl: embed each batch in chunks of this many (GradCache), so train.batch_size (the number of in-batch
    negatives) can be larger than memory allows; the result is the same as one big batch."""
    matryoshka_dims: Optional[List[int]] = None
    """Also train truncations of the vector to these sizes (Matryoshka), e.g. [384, 256, 128, 64]."""

    def __post_init__(self) -> None:
        if self.mini_batch is not None and self.mini_batch < 1:
            raise UserError(f"{self.group}.mini_batch must be at least 1 (got {self.mini_batch})")
        if self.matryoshka_dims and min(self.matryoshka_dims) < 1:
            raise UserError(f"{self.group}.matryoshka_dims must be positive (got {self.matryoshka_dims})")


class EmbeddingTargets(Targets):
    def canonical(self, ds, data, where, need_labels=True):
        if len(ds) == 0:
            raise UserError(f"{where}: no rows; it must hold at least one example")
        first, second = _text_columns(ds, data, where)
        for column in (first, second):
            if column not in ds.column_names:
                raise UserError(f"{where}: no column '{column}'{closest(column, ds.column_names)}; columns are "
                                f"{ds.column_names}; set --data.text_column / --data.text_pair_column")
        judgement = next((c for c in JUDGEMENT_COLUMNS if c in ds.column_names), None)
        extra = [c for c in ("negative", judgement) if c and c in ds.column_names]
        ds = ds.select_columns([first, second, *extra]).rename_columns(
            {k: v for k, v in {first: "text", second: "text_pair"}.items() if k != v})
        _check_texts(ds, {"text": first, "text_pair": second, **({"negative": "negative"} if "negative" in extra else {})}, where)
        if judgement:
            ds = _judged(ds, judgement, where)
        return ds.add_column("labels", [1.0] * len(ds))

    def read_targets(self, ds, data, where):
        return [1.0] * len(ds)

    def label_names(self, targets, feature, column, where):
        return ["relevant"]

    def encode(self, ds, targets, labels, where):
        return ds

    def holdout(self, ds, size, seed, single_note):
        """Whole groups of rows that share a query or a document (connected components) go to one side."""
        parent = list(range(2 * len(ds)))

        def find(x):
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        first_seen: Dict[tuple, int] = {}
        for i, (query, doc) in enumerate(zip(ds["text"], ds["text_pair"])):
            for key in (("q", query), ("d", doc)):
                j = first_seen.setdefault(key, i)
                parent[find(i)] = find(j)
        groups: Dict[int, List[int]] = {}
        for i in range(len(ds)):
            groups.setdefault(find(i), []).append(i)
        order = list(groups.values())
        if max(map(len, order)) > (1 - size) * len(ds):  # one group is nearly everything (every text paired with all)
            log.warning("warning: the texts are so interlinked that no split can keep held-out texts out of training; "
                        "splitting rows at random: held-out scores will be optimistic")
            order = [[i] for i in range(len(ds))]
        np.random.default_rng(seed).shuffle(order)
        held, target = [], size * len(ds)
        for rows in order:
            if len(held) >= target:
                break
            held.extend(rows)
        kept = sorted(set(range(len(ds))) - set(held))
        return ds.select(kept), ds.select(sorted(held))

    def distill_texts(self, ds):
        """Every distinct text of the rows (queries, documents, negatives): the teacher embeds each one."""
        texts = [t for c in ("text", "text_pair", "negative") if c in ds.column_names for t in ds[c]]
        return list(dict.fromkeys(texts)), None, None

    def tokenize(self, ds, tokenizer, max_length, windows, train, role):
        """sentence-transformers tokenizes each batch itself: the text columns, in the order its losses read (a
        distillation's rows: the text and the teacher's vector, as the label its distance loss reads)."""
        if windows:
            raise UserError("model.long_texts: windows do not apply to embeddings (one vector per text); texts are truncated")
        if "teacher" in ds.column_names:
            return ds.select_columns(["text", "teacher"]).rename_column("teacher", "label")
        return ds.select_columns([c for c in ("text", "text_pair", "negative") if c in ds.column_names])

    def targets_array(self, values):
        return np.asarray(values, dtype=np.float32)

    def num_outputs(self, labels):
        return 0  # the embedding's width is the model's (head["dimension"] once evaluated)

    def targets_to_json(self, targets, labels):
        return [float(t) for t in targets]

    def targets_from_json(self, values, labels, where):
        return np.asarray(values, dtype=np.float32)


class EmbeddingModeling(Modeling):
    def load_model(self, args, labels, max_length, stats=None):
        from .model import load_sentence_model

        return load_sentence_model(args, max_length)

    def build_trainer(self, net, tokenizer, labels, stats, tokenized, train, precision, workdir, callbacks=None, distill=None):
        from .model import build_sentence_trainer, distill_trainer

        if distill is not None:
            return distill_trainer(net, tokenized, train, precision, workdir, callbacks)
        shape = "triplets" if "negative" in tokenized["train"].column_names else "pairs"
        return build_sentence_trainer(net, shape, tokenized, train, precision, workdir, callbacks, options=self.task.options)

    def distill_rows(self, texts, pairs, gold, words, train, outputs):
        """A text and the teacher's (normalised) vector of it per row."""
        from datasets import Dataset

        return Dataset.from_dict({"text": texts, "teacher": np.asarray(outputs, dtype=np.float32).tolist()})

    def after_training(self, model_dir, stats, trainer=None):
        return True  # the in-memory model is a SentenceTransformer: inference reloads the transformer from disk


class EmbeddingScoring(Scoring):
    def outputs(self, predictor, texts, pairs, words=None):
        """[embedding(query) | embedding(document)] per row (each distinct text embedded once)."""
        if pairs is None:
            return predictor.logits(texts)
        distinct = list(dict.fromkeys([*texts, *pairs]))
        vectors = predictor.logits(distinct)
        at = {t: i for i, t in enumerate(distinct)}
        return np.hstack([vectors[[at[t] for t in texts]], vectors[[at[t] for t in pairs]]])

    def fit_head(self, validation, labels, cfg):
        return {"dimension": int(validation.logits.shape[1] // 2), "similarity": "cosine"}

    def ranks(self, preds, head):
        from .retrieval import embedding_ranks

        if head.get("ranks"):  # the baseline's rows: ranks already
            return preds.logits[:, 0]
        half = preds.logits.shape[1] // 2
        return embedding_ranks(preds.logits[:, :half], preds.logits[:, half:], preds.texts, preds.pairs)

    def analyse(self, preds, labels, head, cfg):
        from .retrieval import corpus_of, metrics_of

        return metrics_of(self.ranks(preds, head), len(corpus_of(preds.texts, preds.pairs)[0]))

    def interval_metrics(self, preds, labels, head):
        from .retrieval import per_row

        rows = per_row(self.ranks(preds, head))
        return {key: (lambda idx, v=values: float(v[idx].mean())) for key, values in rows.items()}, None

    def baseline(self, splits, labels, cfg=None):
        """BM25 on the test split, and the base model before fine-tuning (when the run's config is given)."""
        import time

        from .retrieval import bm25_ranks, corpus_of, embedding_ranks, metrics_of

        test = splits.test
        queries, docs = list(test["text"]), list(test["text_pair"])
        started = time.time()
        bm25 = bm25_ranks(queries, docs)
        size = len(corpus_of(queries, docs)[0])
        metrics = {**metrics_of(bm25, size), "seconds": round(time.time() - started, 1), "model": "BM25 (bm25s, k1 1.5, b 0.75)"}
        base = np.zeros_like(bm25)
        if cfg is not None:
            from ...models.loading import DEFAULT_MAX_LENGTH
            from .model import load_sentence_model

            model = load_sentence_model(cfg.model, cfg.resolved.get("max_length") or DEFAULT_MAX_LENGTH)
            distinct = list(dict.fromkeys(queries + docs))
            vectors = dict(zip(distinct, model.encode(distinct, batch_size=32, normalize_embeddings=True)))
            base = embedding_ranks(np.stack([vectors[q] for q in queries]), np.stack([vectors[d] for d in docs]), queries, docs)
            metrics["base_model"] = {**metrics_of(base, size), "model": cfg.model.name_or_path}
            log.info("base model %s before fine-tuning: MRR@10 %.4f", cfg.model.name_or_path, metrics["base_model"]["mrr@10"])
        log.info("BM25: MRR@10 %.4f", metrics["mrr@10"])
        return {"metrics": metrics, "logits": np.stack([bm25, base], 1).astype(np.float32), "head": {"ranks": ["bm25", "base_model"]}}

    def paired_test(self, model, baseline, labels, head, baseline_head):
        """The model against the base model before fine-tuning, on the same rows: the differences, the rows that moved."""
        from ...core.stats import paired_bootstrap
        from .retrieval import changed_queries, per_row

        before = baseline.logits[:, 1]
        if not before.any():
            return None
        after = self.ranks(model, head)
        mine, theirs = per_row(after), per_row(before)
        differences = {key: paired_bootstrap(lambda idx, who, key=key: float((mine if who == "model" else theirs)[key][idx].mean()), len(after))
                       for key in ("mrr@10", "recall@10")}
        return {"base_model": {"differences": differences,
                               "got_worse": changed_queries(model.texts, model.pairs, before, after, True, SHOWN_CHANGES),
                               "got_better": changed_queries(model.texts, model.pairs, before, after, False, SHOWN_CHANGES),
                               "worse": int((after > before).sum()), "better": int((after < before).sum())}}


class EmbeddingDecoding(Decoding):
    def logits_from_columns(self, rows, labels, where):
        return np.asarray(rows["logits"], dtype=np.float32).reshape(len(rows["text"]), -1)

    def decode(self, logits, labels, head, calibrated=True, abstain=False):
        return [{"embedding": [round(float(v), 6) for v in row]} for row in logits]

    def compare(self, reference, got, head):
        cosine = (reference * got).sum(1) / np.maximum(np.linalg.norm(reference, axis=1) * np.linalg.norm(got, axis=1), 1e-12)
        return {"max_abs_logit_diff": float(np.abs(got - reference).max()) if len(got) else 0.0,
                "min_cosine": float(cosine.min()) if len(got) else 1.0}

    def csv_header(self, labels):
        return ["embedding"]

    def csv_row(self, result, labels):
        return [" ".join(f"{v:.6g}" for v in result["embedding"])]


class Embedding(Task):
    name = "embedding"

    problem_type = "embedding"
    pipeline_tag = "sentence-similarity"
    output_noun = "embeddings"
    auto_model = "AutoModel"
    metrics_for_best = {"loss": False}
    summary = (("mrr@10", "MRR@10"), ("recall@1", "recall@1"), ("recall@10", "recall@10"), ("recall@100", "recall@100"),
               ("ndcg@10", "nDCG@10"))
    # distill: the student's vectors move to the teacher's (cosine distance: EmbedDistillLoss)
    stages = frozenset({"train", "eval", "predict", "export", "serve", "report", "distill", "embed"})
    unsupported = {"tune": "the embedding task has no hyper-parameter search yet; run `encoderfit train` with chosen settings",
                   "cv": "each fold's model embeds into its own vector space, so the folds' documents cannot be searched as "
                         "one corpus; use train with a larger test split"}
    baseline_name = "BM25"
    baseline_plain = "BM25 keyword search"
    int8_recheck = False  # no decisions: int8 is judged by cosine to fp32 and by recall (benchmarks/speed/embeddings.py)
    Options = EmbeddingOptions
    distill_validation = True  # checkpoints by that distance on the validation texts: pairs hold no teacher vectors
    Targets = EmbeddingTargets
    Modeling = EmbeddingModeling
    Scoring = EmbeddingScoring
    Decoding = EmbeddingDecoding
    Pages = EmbeddingPages
