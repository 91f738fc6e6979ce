"""Token classification (named entities): a tag per word, entities out with character offsets.

Data in any scheme (IO, IOB1, IOB2, BIOES/BILOU; tags.py) and shape (CoNLL files, token/tag lists with string or
ClassLabel tags, raw text with character spans; ner_data.py) is read into words with IOB2 tags. The model labels
sub-words (tasks/base/words.py): each word is trained and predicted at its first sub-word; long texts are windowed, never
truncated. Metrics are entity-level (seqeval, strict IOB2) with token accuracy beside them; the baseline is a
linear-chain CRF on word features (sklearn-crfsuite).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np

from ...core.errors import UserError
from ..base.words import IGNORE, WordScores, aligned_windows
from . import data as ner_data
from ..base import BucketedPadding, Decoding, Modeling, Scoring, Targets, Task
from .pages import NerPages
from .metrics import counts, entity_metrics, fit_entity_temperature, gold, predicted, prf
from .tags import at, convert, tag_names, to_iob2

log = logging.getLogger(__name__)


@dataclass
class NerOptions:
    """The ner task's settings (`--ner.*`)."""

    tag_scheme: Optional[Literal["io", "iob1", "iob2", "bioes"]] = None
    """The scheme the tags are written in (BILOU reads as bioes). Default: detected from the tags; io also accepts
    bare type names (PER, LOC) as tags."""
    documents: bool = False
    """Read the sentences of each document (CoNLL's -DOCSTART- lines, or the hub's one-token -DOCSTART- rows) as one
    text, so every word is read with its neighbouring sentences (in windows of max_length): the document context of
    BERT's CoNLL-2003 result (Devlin et al. 2019). Predict then takes whole documents too."""
    invalid_tags: Literal["repair", "error"] = "repair"
    """A tag its scheme does not allow there (an I- with no entity of its type before it): repair (read it as
    starting an entity, and log how many rows had one) or error (name the first such row)."""
    subword_labels: Literal["all", "first"] = "all"
    """Train each word's tag on all its sub-words (later pieces get the I- tag, so the plain pipeline's "simple"
    aggregation, which groups sub-words, finds the same entities as encoderfit), or on the first only (the rest
    ignored in the loss, as transformers' run_ner.py). Prediction reads each word's first sub-word."""


class NerTargets(Targets):
    def canonical(self, ds, data, where, need_labels=True):
        return ner_data.canonical(ds, data, where, need_labels, self.task.options.documents)

    def read_targets(self, ds, data, where):
        rows = list(ds["labels"])
        lines = ds[ner_data.LINES] if ner_data.LINES in ds.column_names else None  # CoNLL: name file lines, not rows
        spans, scheme = convert(rows, self.task.options.tag_scheme, self.task.options.invalid_tags, where, lines)
        log.info("%s: tags read as %s, %d entities in %d rows", where, scheme.upper(), sum(map(len, spans)), len(rows))
        return [to_iob2(found, len(row)) for found, row in zip(spans, rows)]

    def target_column(self, ds, data):
        return ner_data.source_column(ds) or data.label_column

    def label_names(self, targets, feature, column, where):
        types = {tag[2:] for row in targets for tag in row if tag != "O"}
        if not types:
            raise UserError(f"{where}: no entities in column '{column}' (every tag is O); there is nothing to learn")
        return tag_names(types)

    def encode(self, ds, targets, labels, where):
        from datasets import Sequence, Value

        index = {name: i for i, name in enumerate(labels)}
        lines = ds[ner_data.LINES] if ner_data.LINES in ds.column_names else None
        ids = []
        for r, row in enumerate(targets):
            unknown = next((k for k, t in enumerate(row) if t not in index), None)
            if unknown is not None:
                raise UserError(f"{at(where, r, lines, unknown)}: entity type '{row[unknown][2:]}' does not occur in the "
                                "training split; add training examples of it or relabel it")
            ids.append([index[t] for t in row])
        ds = ds.remove_columns([c for c in ("labels", ner_data.LINES) if c in ds.column_names]).add_column("labels", ids)
        return ds.cast_column("labels", Sequence(Value("int64")))

    def holdout(self, ds, size, seed, single_note):
        parts = ds.train_test_split(test_size=size, seed=seed)
        return parts["train"], parts["test"]

    def targets_array(self, values):
        return [np.asarray(row, dtype=np.int64) for row in values]

    def targets_to_json(self, targets, labels):
        return [[labels[i] for i in row] for row in targets]

    def targets_from_json(self, values, labels, where):
        index = {name: i for i, name in enumerate(labels)}
        try:
            return [np.asarray([index[t] for t in row], dtype=np.int64) for row in values]
        except KeyError as err:
            raise UserError(f"{where}: tag {err} is not one of the run's tags; re-run `encoderfit eval`") from None

    def summarize_targets(self, targets, labels):
        entities = Counter(kind for row in targets for kind, _, _ in gold(row, labels))
        return {"entities": dict(sorted(entities.items())), "words": int(sum(len(r) for r in targets)), "rows": len(targets)}

    def tokenize(self, ds, tokenizer, max_length, windows, train, role):
        # tags.tag_names orders the outputs O, B-x, I-x, B-y, I-y...: a B- id (odd) continues as the I- id after it
        top = max((max(r, default=0) for r in ds["labels"]), default=0)
        continuation = {i: i + 1 if i % 2 else i for i in range(top + 2)}
        overlap = windows["overlap"] if windows else 0
        if role == "train" and uncased(tokenizer):
            log.warning("warning: this model's tokenizer lower-cases its input, so it cannot see capitalisation, the "
                        "strongest cue for names (on CoNLL-2003 it costs the CRF baseline %s entity F1; see "
                        "docs/benchmarks.md); a cased encoder finds more entities", CASING_COST)

        def encode(batch):
            enc = aligned_windows(tokenizer, batch["text"], batch["words"], batch["labels"], max_length, overlap,
                                  self.task.options.subword_labels, continuation, batch.get("teacher"))
            if "gold" in batch:  # a distillation transfer set: each window keeps whether its text has gold tags
                enc["gold"] = [batch["gold"][i] for i in enc.pop("source")]
            return enc

        return ds.map(encode, batched=True, remove_columns=ds.column_names)


class NerModeling(Modeling):
    def infer(self, predictor, texts, pairs, words=None):
        from ..base.words import word_logits

        return word_logits(predictor, texts, words)

    def model_kwargs(self, labels):
        return {"num_labels": len(labels), "id2label": dict(enumerate(labels)), "label2id": {n: i for i, n in enumerate(labels)}}

    def collator(self, tokenizer):
        from transformers import DataCollatorForTokenClassification

        return BucketedPadding(DataCollatorForTokenClassification(tokenizer))

    def loss(self, stats, train):
        import torch

        def loss(outputs, labels, num_items_in_batch=None):
            logits = outputs.logits.float()
            summed = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                       ignore_index=IGNORE, reduction="sum")
            # the Trainer counts num_items_in_batch as the labelled sub-words of the step on every process
            n = num_items_in_batch if num_items_in_batch is not None else (labels != IGNORE).sum().clamp(min=1)
            return summed / n

        return loss

    def preprocess_logits(self):
        return lambda logits, labels: logits.argmax(-1)

    def distill_loss(self, stats, train, distill):
        import torch
        import torch.nn.functional as F

        t, alpha = distill.temperature, distill.alpha

        def each(outputs, labels, teacher, gold):
            logits = outputs.logits.float()  # (rows, sub-words, tags); the teacher's: NaN on sub-words it does not teach
            taught = ~torch.isnan(teacher[..., 0])
            kl = F.kl_div(F.log_softmax(logits / t, -1), F.log_softmax(torch.nan_to_num(teacher) / t, -1), log_target=True,
                          reduction="none").sum(-1) * t * t
            soft = (kl * taught).sum(1) / taught.sum(1).clamp(min=1)  # per row: the mean over its taught words
            tagged = labels != IGNORE
            ce = F.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
            hard = (ce * tagged).sum(1) / tagged.sum(1).clamp(min=1)
            return soft.where(~gold, alpha * soft + (1 - alpha) * hard)

        return each


class NerScoring(Scoring):
    softmax_outputs = True

    def trainer_metrics(self, labels, stats):
        def compute(eval_pred):
            ids, y = eval_pred
            true, pred = [], []
            for p_row, y_row in zip(np.asarray(ids), np.asarray(y)):
                keep = y_row != IGNORE
                true.append(gold(y_row[keep], labels))
                pred.append(gold(p_row[keep], labels))
            return prf(counts(true, pred))

        return compute

    def fit_head(self, validation, labels, cfg):
        return {**fit_entity_temperature(validation.targets, validation.logits, labels), "fitted_on": "validation"}

    def analyse(self, preds, labels, head, cfg):
        return entity_metrics(preds.targets, preds.logits, labels, cfg.report.max_examples, head.get("temperature") or 1.0)

    def baseline(self, splits, labels, cfg=None):
        from .baseline import crf_baseline

        started = time.time()
        fitted = crf_baseline(splits, labels)
        result = entity_metrics(splits.test["labels"], fitted["logits"], labels)
        result.update({"model": fitted["model"], "seconds": round(time.time() - started, 2)})
        log.info("baseline (%s): test entity F1 %.4f", fitted["model"], result["f1"])
        return {"metrics": result, "logits": fitted["logits"], "head": {}}

    def interval_metrics(self, preds, labels, head):
        true = [gold(row, labels) for row in preds.targets]
        c = counts(true, [predicted(s.logits, labels)[0] for s in preds.logits])
        right = np.asarray([(np.asarray(t) == s.logits.argmax(-1)).sum() if len(t) else 0 for t, s in zip(preds.targets, preds.logits)])
        words = np.asarray([len(t) for t in preds.targets])
        return ({"f1": lambda idx: prf(c[idx])["f1"], "precision": lambda idx: prf(c[idx])["precision"],
                 "recall": lambda idx: prf(c[idx])["recall"],
                 "token_accuracy": lambda idx: float(right[idx].sum() / max(words[idx].sum(), 1))}, None)


class NerDecoding(Decoding):
    def logits_to_columns(self, logits):
        return {"words": [[list(w) for w in s.words] for s in logits], "logits": [s.logits.ravel().tolist() for s in logits]}

    def logits_from_columns(self, rows, labels, where):
        k = self.task.targets.num_outputs(labels)
        out = []
        for text, words, flat in zip(rows["text"], rows["words"], rows["logits"]):
            if len(flat) != k * len(words):
                raise UserError(f"{where}: {len(flat)} logits for {len(words)} words, but the run has {k} tags; re-run `encoderfit eval`")
            out.append(WordScores(text, [tuple(w) for w in words], np.asarray(flat, dtype=np.float32).reshape(len(words), k)))
        return out

    def decode(self, logits, labels, head, calibrated=True, abstain=False):
        results = []
        temperature = (head.get("temperature") or 1.0) if calibrated else 1.0
        for scores in logits:
            found, conf = predicted(scores.logits, labels, temperature)
            results.append({"entities": ner_data.spans_of(scores.text, scores.words, found, conf)})
        return results

    def decision_margin(self, logits, head):
        def margin(s):
            if not len(s.logits):
                return np.inf
            top = np.sort(s.logits, axis=-1)
            return float((top[:, -1] - top[:, -2]).min())

        return np.asarray([margin(s) for s in logits])

    def margin_drop(self, quick, exact, head):
        return np.asarray([2 * float(np.abs(q.logits - e.logits).max()) if len(q.logits) else 0.0 for q, e in zip(quick, exact)])

    def compare(self, reference, got, head):
        diffs = [float(np.abs(a.logits - b.logits).max()) for a, b in zip(reference, got) if len(a.logits)]
        words = sum(len(a.logits) for a in reference)
        same_tags = sum(int((a.logits.argmax(-1) == b.logits.argmax(-1)).sum()) for a, b in zip(reference, got) if len(a.logits))
        same_entities = [set(_entities(a)) == set(_entities(b)) for a, b in zip(reference, got)]
        return {"max_abs_logit_diff": max(diffs, default=0.0), "tag_agreement": same_tags / words if words else 1.0,
                "entity_set_agreement": float(np.mean(same_entities)) if same_entities else 1.0}

    def csv_header(self, labels):
        return ["entities"]

    def csv_row(self, result, labels):
        return [json.dumps(result["entities"], ensure_ascii=False)]

    def signals(self, result):
        return {"labels": [e["label"] for e in result["entities"]]}


class TokenClassification(Task):
    name = "ner"
    problem_type = "token_classification"
    pipeline_tag = "token-classification"
    output_noun = "tags"
    auto_model = "AutoModelForTokenClassification"
    stages = Task.stages | {"distill"}  # distill per word: the teacher's tag distribution on the student's first sub-word of the word
    baseline_name = "CRF baseline"
    baseline_plain = "a CRF on word features"
    always_windows = True
    output_axes = {0: "batch", 1: "sequence"}
    metrics_for_best = {"loss": False, "f1": True}
    inference_options = frozenset({"calibrated"})  # entity scores at the temperature fitted on validation
    summary = (("f1", "entity F1"), ("precision", "precision"), ("recall", "recall"), ("token_accuracy", "token accuracy"))
    Options = NerOptions
    Targets = NerTargets
    Modeling = NerModeling
    Scoring = NerScoring
    Decoding = NerDecoding
    Pages = NerPages


CASING_COST = "4.7 points of"  # benchmarks/quality/casing.py: the CRF on CoNLL-2003 as written, and lower-cased


def uncased(tokenizer) -> bool:
    """Whether the tokenizer lower-cases (all-MiniLM-L6-v2, all-mpnet-base-v2, bert-base-uncased do)."""
    return tokenizer.tokenize("Paris Hilton") == tokenizer.tokenize("paris hilton")


def _entities(scores: WordScores):
    """The entities of one text's logits, with types named by their output ids (for comparing two models)."""
    n = scores.logits.shape[1] if scores.logits.ndim == 2 else 1
    return predicted(scores.logits, ["O", *[f"{p}-{k}" for k in range((n - 1) // 2) for p in "BI"]])[0]
