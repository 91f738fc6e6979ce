"""Extractive question answering: the answer is a span of the context, found by start and end logits per token.

Data: SQuAD JSON (v1.1, v2.0) or flat rows with question, context and answers ({text: [...], answer_start: [...]},
as the hub's rajpurkar/squad ships them; empty lists: unanswerable). An answer_start that does not slice its text out
of the context is moved to the text when it occurs once within REPAIR_CHARS of it (qa_data.py), else refused with the
row named.
Splits are made by article (the `title` column, else the context), so no paragraph is in two splits, with the
answerable share alike in each (qa_data.py).

Model: AutoModelForQuestionAnswering. Question and context are read as a pair (question first, the context cut into
windows of max_length tokens that overlap by model.window_overlap, as transformers' run_qa.py does); a window that
holds the whole answer is trained on it, the others on [CLS] (no answer there). Decoding: the n-best start and end
tokens of every window, spans of at most --qa.max_answer_tokens, the best over the windows, sliced from the context
by character offsets; against it, the no-answer score ([CLS] start + end, the smallest over the windows). The span
is given when its score beats the no-answer score by more than the null threshold fitted on validation (SQuAD 2.0's
best-F1 threshold; none for data without unanswerable questions), saved in the model directory's head.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Dict, List

import numpy as np

from ...core.errors import UserError, closest
from . import metrics as qm
from ..base import Decoding, Modeling, Scoring, Targets, Task
from . import answerability
from .data import describe, locate, read_answers, split_by_article
from .pages import QaPages
from .spans import Span, answer_tokens, answered, answers, check_questions, encode_windows, find_spans, span_logits

log = logging.getLogger(__name__)
MAX_CONTEXT_CHARS = 100_000  # a context is a paragraph or a page; past this it is a whole book: split it first
SHOWN_DIFFERENCES = 10  # questions shown that only the model (or only the baseline) answers exactly


@dataclass
class QaOptions:
    """The qa task's settings (`--qa.*`)."""

    n_best: int = 20
    """Start and end candidates per window whose pairs are scored (transformers' run_qa.py: 20)."""
    max_answer_tokens: int = 30
    """The longest answer span, in tokens (run_qa.py: 30)."""

    def __post_init__(self) -> None:
        for name in ("n_best", "max_answer_tokens"):
            if getattr(self, name) < 1:
                raise UserError(f"qa.{name} must be at least 1 (got {getattr(self, name)})")


def _column(ds, configured: str, default: str, fallbacks, where: str, flag: str) -> str:
    for name in (configured, default, *fallbacks):
        if name and name in ds.column_names:
            return name
    raise UserError(f"{where}: no column '{configured or default}'{closest(configured or default, ds.column_names)}; columns are "
                    f"{ds.column_names}; set --data.{flag} (QA rows: question, context, answers)")


class QaTargets(Targets):
    def canonical(self, ds, data, where, need_labels=True):
        from datasets import Dataset

        if len(ds) == 0:
            raise UserError(f"{where}: no rows; it must hold at least one example")
        question = _column(ds, data.text_column if data.text_column != "text" else None, "question", ("text",), where, "text_column")
        context = _column(ds, data.text_pair_column, "context", ("text_pair",), where, "text_pair_column")
        columns = {"text": list(ds[question]), "text_pair": list(ds[context])}
        for name, column in (("text", question), ("text_pair", context)):
            for i, value in enumerate(columns[name]):
                if not isinstance(value, str) or not value.strip():
                    raise UserError(f"{where}: row {i + 1}: the {'question' if name == 'text' else 'context'} (column '{column}') "
                                    "is empty or not text; fill it in or remove the row")
        for i, value in enumerate(columns["text_pair"]):
            if len(value) > MAX_CONTEXT_CHARS:
                raise UserError(f"{where}: row {i + 1}: a context of {len(value):,} characters (more than {MAX_CONTEXT_CHARS:,}); "
                                "split it into paragraphs, one row each")
        if need_labels:
            answer_column = _column(ds, data.label_column if data.label_column != "label" else None, "answers", ("label",), where,
                                    "label_column")
            columns["labels"] = [read_answers(v, where, i, answer_column) for i, v in enumerate(ds[answer_column])]
        titles = list(ds["title"]) if "title" in ds.column_names else [None] * len(ds)  # the article; else the paragraph
        columns["group"] = [str(t) if t is not None and str(t).strip() else c for t, c in zip(titles, columns["text_pair"])]
        return Dataset.from_dict(columns)

    def read_targets(self, ds, data, where):
        out, repaired = [], 0
        for i, (value, context) in enumerate(zip(ds["labels"], ds["text_pair"])):  # answers read by canonical
            fixed = []
            for text, start in zip(value["text"], value["answer_start"]):
                start, moved = locate(str(text), int(start), context, where, i)
                repaired += moved
                fixed.append((str(text), start))
            out.append({"text": [t for t, _ in fixed], "start": [s for _, s in fixed]})
        if repaired:
            log.info("%s: moved %d answer_start value(s) to where their answer text is (it occurs once nearby)", where, repaired)
        return out

    def target_column(self, ds, data):
        return data.label_column if data.label_column != "label" else "answers"

    def label_names(self, targets, feature, column, where):
        return ["answer"]

    def encode(self, ds, targets, labels, where):
        return ds.remove_columns("labels").add_column("labels", targets)

    def holdout(self, ds, size, seed, single_note):
        """Whole articles (or, without titles, whole contexts) go to one side, the answerable share alike on both
        (qa_data.split_by_article)."""
        groups, answerable = list(ds["group"]), [bool(t["text"]) for t in ds["labels"]]
        kept, held = split_by_article(groups, answerable, size, seed)
        log.info("split by article: kept %s; held out %s", describe(kept, groups, answerable), describe(held, groups, answerable))
        return ds.select(kept), ds.select(held)

    def num_outputs(self, labels):
        return 1

    def summarize_targets(self, targets, labels):
        """How many training questions are unanswerable: with any, the model gets its answerability head."""
        return {"questions": len(targets), "unanswerable": sum(1 for t in targets if not t["text"])}

    def targets_array(self, values):
        return list(values)

    def targets_to_json(self, targets, labels):
        return [{"text": list(t["text"]), "answer_start": list(t["start"])} for t in targets]

    def targets_from_json(self, values, labels, where):
        return [{"text": list(v.get("text") or []), "start": list(v.get("answer_start") or [])} for v in values]

    def tokenize(self, ds, tokenizer, max_length, windows, train, role):
        """Windows of question + context with each window's answer tokens as `labels` [start, end] ([0, 0]: not
        in this window, or unanswerable)."""
        stride = (windows or {}).get("overlap", 0)

        def encode(batch):
            check_questions(tokenizer, batch["text"], max_length, f"{role} split")
            enc = encode_windows(tokenizer, batch["text"], batch["text_pair"], max_length, stride)
            source = enc.pop("overflow_to_sample_mapping")
            labels = []
            for w, offsets in enumerate(enc.pop("offset_mapping")):
                target = batch["labels"][source[w]]
                labels.append(answer_tokens(enc.sequence_ids(w), offsets, target))
            enc["labels"] = labels
            enc["length"] = [len(ids) for ids in enc["input_ids"]]
            return enc

        return ds.map(encode, batched=True, remove_columns=ds.column_names)



class QaModeling(Modeling):
    def model_kwargs(self, labels):
        return {}  # the architecture's start and end logits

    def load_model(self, args, labels, max_length, stats=None):
        """The question-answering model; with unanswerable training questions, with its answerability head
        (answerability.py)."""
        model = super().load_model(args, labels, max_length, stats)
        return answerability.build_model(model) if (stats or {}).get("unanswerable") else model

    def loss(self, stats, train):
        import torch

        def loss(outputs, labels, num_items_in_batch=None):
            # cross-entropy of the answer's start and end tokens, summed over the step's windows; the Trainer counts
            # both labels of every window in num_items_in_batch, so this is the mean of (start + end) / 2; with the
            # answerability head, plus its binary cross-entropy per window
            start = torch.nn.functional.cross_entropy(outputs.start_logits.float(), labels[:, 0], reduction="sum")
            end = torch.nn.functional.cross_entropy(outputs.end_logits.float(), labels[:, 1], reduction="sum")
            n = num_items_in_batch if num_items_in_batch is not None else 2 * labels.shape[0]
            head = answerability.head_loss(outputs, labels)
            return (start + end) / n + answerability.ANSWERABILITY_WEIGHT * head / (n / 2)

        return loss

    def preprocess_logits(self):
        import torch

        return lambda logits, labels: torch.zeros(1)  # the Trainer keeps the loss only; spans are found by eval

    def inference_model(self, model, model_dir):
        return self.logits_model(answerability.load_head(model, model_dir))

    def after_training(self, model_dir, stats, trainer=None):
        if trainer is not None and hasattr(trainer.model, "answerability"):
            answerability.save_head(model_dir, trainer)  # the weights are the same; only their files are arranged
        return False

    def logits_model(self, model):
        return span_logits(model)

    def windows_per_text(self, tokenizer, texts, pairs, max_length, overlap):
        from collections import Counter

        enc = encode_windows(tokenizer, texts, pairs, max_length, overlap, offsets=False)
        counts = Counter(enc["overflow_to_sample_mapping"])
        return [counts[i] for i in range(len(texts))]

    def infer(self, predictor, texts, pairs, words=None):
        options = self.task.options
        return find_spans(predictor, list(texts), list(pairs), options.n_best, options.max_answer_tokens)


def null_head(spans: List[Span], targets, model: bool = True) -> Dict:
    """The head: the no-answer threshold with the best F1 on these (validation) spans, or none when every question
    has an answer; with the answerability head, the answer rule fitted beside it (answerability.fit_decision), which
    then decides. A model (not the baseline) whose rule answers none or all of them is warned about."""
    references = [t["text"] for t in targets]
    rows = qm.per_question([s.text for s in spans], references)
    if rows["has_answer"].all():
        return {"null_threshold": None}
    margins = np.asarray([s.margin for s in spans])
    threshold, f1 = qm.best_null_threshold(margins, rows, rows["f1"])
    answered = float(np.mean(margins > threshold))
    log.info("no-answer threshold %.3f (the span is given when its score beats the no-answer score by more): "
             "validation F1 %.2f, %.1f%% of its questions answered", threshold, 100 * f1, 100 * answered)
    rule = answerability.fit_decision(margins, np.asarray([s.answer_logit for s in spans]), rows, qm.best_null_threshold)
    if rule is not None:
        answered = rule["validation_answered"] / 100
    if model and answered in (0.0, 1.0):
        log.warning("warning: the best no-answer threshold on validation answers %s of its %d questions (%d answerable): "
                    "the no-answer score does not tell answerable questions from the others (their spans score F1 %.1f "
                    "when every question is answered); more training questions or epochs may teach it",
                    "none" if answered == 0 else "all", len(spans), int(rows["has_answer"].sum()),
                    100 * float(rows["f1"][rows["has_answer"]].mean()))
    return {"null_threshold": threshold, "validation_f1": 100 * f1, "validation_answered": 100 * float(np.mean(margins > threshold)),
            **({"answerability": rule} if rule is not None else {})}


def decision_scores(spans: List[Span], head: Dict) -> np.ndarray:
    """Each question's score under the head's answer rule (answerability.decision_scores), or its span margin."""
    margins = np.asarray([s.margin for s in spans], dtype=float)
    rule = head.get("answerability")
    if not rule:
        return margins
    return answerability.decision_scores(margins, np.asarray([s.answer_logit for s in spans], dtype=float), rule)


class QaScoring(Scoring):
    def trainer_metrics(self, labels, stats):
        return None  # validation loss chooses the checkpoint; spans are decoded by the evaluation that follows

    def fit_head(self, validation, labels, cfg):
        return null_head(validation.logits, validation.targets)

    def head_summary(self, head, analysed):
        return {"head": dict(head)}  # metrics.json's `head`, which the report and the card read

    def analyse(self, preds, labels, head, cfg):
        given = answers(preds.logits, head)
        references = [t["text"] for t in preds.targets]
        rows = qm.per_question(given, references)
        out = qm.summary(rows)
        words = np.asarray([qm.question_word(q) for q in preds.texts])
        out["by_question_word"] = {w: qm.summary(rows, np.flatnonzero(words == w)) for w in sorted(set(words), key=lambda w: -(words == w).sum())}
        lengths = np.asarray([min(len(qm.normalize_answer(r[0]).split()), 6) if r else 0 for r in references])
        out["by_answer_words"] = {str(k) if k < 6 else "6+": qm.summary(rows, np.flatnonzero(lengths == k)) for k in range(1, 7)
                                  if (lengths == k).any()}
        probability = np.asarray([s.probability for s in preds.logits])
        wrong = [i for i in np.argsort(-probability) if rows["f1"][i] == 0][: cfg.report.max_examples if cfg else 20]
        out["confident_wrong"] = [{"question": preds.texts[i], "context": preds.pairs[i], "predicted": given[i],
                                   "start": preds.logits[i].start, "end": preds.logits[i].end, "answers": list(references[i]),
                                   "probability": float(probability[i])} for i in wrong]
        if not rows["has_answer"].all() and rows["has_answer"].any():
            scores = decision_scores(preds.logits, head)  # the rule's score (the margin without the head)
            grid = np.quantile(scores[np.isfinite(scores)], np.linspace(0.02, 0.98, 25))
            out["threshold_curve"] = [{"threshold": float(t), **qm.summary(qm.per_question(
                [s.text if v > t else "" for s, v in zip(preds.logits, scores)], references))} for t in grid]
        return out

    def interval_metrics(self, preds, labels, head):
        rows = qm.per_question(answers(preds.logits, head), [t["text"] for t in preds.targets])
        return {"f1": lambda idx: 100 * float(rows["f1"][idx].mean()),
                "exact_match": lambda idx: 100 * float(rows["em"][idx].mean())}, None

    def clusters(self, preds):
        return list(preds.pairs)  # questions on one paragraph share its difficulty: resample paragraphs

    def paired_test(self, model, baseline, labels, head, baseline_head):
        """McNemar's exact test on exact match, and examples of the questions only one of the two gets exactly right."""
        from ...core.stats import mcnemar_exact

        references = [t["text"] for t in model.targets]
        mine, theirs = answers(model.logits, head), answers(baseline.logits, baseline_head)
        right = qm.per_question(mine, references)["em"] == 1
        base_right = qm.per_question(theirs, references)["em"] == 1

        def shown(mask):
            return [{"question": model.texts[i], "model": mine[i], "baseline": theirs[i], "answers": list(references[i])}
                    for i in np.flatnonzero(mask)[:SHOWN_DIFFERENCES]]

        return {"mcnemar_exact_match": mcnemar_exact(right, base_right), "model_only": shown(right & ~base_right),
                "baseline_only": shown(~right & base_right)}

    def baseline(self, splits, labels, cfg=None):
        started = time.time()
        spans = {}
        for role in ("validation", "test"):
            ds = splits.as_dict()[role]
            spans[role] = []
            for question, context in zip(ds["text"], ds["text_pair"]):
                value, start, end = qm.sliding_window(question, context)
                spans[role].append(Span(value, 0.0, start, end, context[start:end], 0.0))
        head = null_head(spans["validation"], splits.validation["labels"], model=False)
        test_references = [t["text"] for t in splits.test["labels"]]
        result = qm.summary(qm.per_question(answers(spans["test"], head), test_references))
        result.update({"model": "sliding window (Rajpurkar et al. 2016): question words near each span of up to 4 words",
                       "seconds": round(time.time() - started, 2)})
        log.info("baseline (sliding window): test EM %.2f, F1 %.2f", result["exact_match"], result["f1"])
        return {"metrics": result, "logits": spans["test"], "head": head}


class QaDecoding(Decoding):
    def logits_to_columns(self, spans):
        return {"span": [[s.score, s.null_score, float(s.start), float(s.end), s.probability, s.answer_logit] for s in spans],
                "answer_text": [s.text for s in spans]}

    def logits_from_columns(self, rows, labels, where):
        if "span" not in rows:
            raise UserError(f"{where}: no span column; re-run `encoderfit eval` on the run")
        return [Span(v[0], v[1], int(v[2]), int(v[3]), text, v[4], *(v[5:6] or [math.nan]))
                for v, text in zip(rows["span"], rows["answer_text"])]

    def decode(self, logits, labels, head, calibrated=True, abstain=False):
        out = []
        for s, given in zip(logits, answered(logits, head)):
            out.append({"answer": s.text if given else None, "start": s.start if given else None,
                        "end": s.end if given else None, "score": s.probability,
                        "no_answer_margin": s.margin if math.isfinite(s.margin) else None,
                        **({"answerability_logit": s.answer_logit} if math.isfinite(s.answer_logit) else {})})
        return out

    def decision_margin(self, logits, head):
        rule, t = head.get("answerability"), head.get("null_threshold")
        if rule:
            return np.abs(decision_scores(logits, head) - rule["threshold"])
        return np.asarray([abs(s.margin - t) if t is not None else np.inf for s in logits])

    def compare(self, reference, got, head):
        diffs = [max(abs(a.score - b.score), abs(a.null_score - b.null_score),
                     abs(a.answer_logit - b.answer_logit) if math.isfinite(a.answer_logit) else 0.0) for a, b in zip(reference, got)
                 if math.isfinite(a.score) and math.isfinite(b.score)]
        same = [(a.start, a.end) == (b.start, b.end) for a, b in zip(reference, got)]
        decided = [x == y for x, y in zip(answers(reference, head), answers(got, head))]
        return {"max_abs_logit_diff": float(max(diffs)) / 2 if diffs else 0.0,  # a score is a start + an end logit
                "span_agreement": float(np.mean(same)) if same else 1.0, "answer_agreement": float(np.mean(decided)) if decided else 1.0}

    def csv_header(self, labels):
        return ["answer", "start", "end", "score"]

    def csv_row(self, result, labels):
        return ["" if result["answer"] is None else result["answer"], "" if result["start"] is None else str(result["start"]),
                "" if result["end"] is None else str(result["end"]), f"{result['score']:.4f}"]

    def signals(self, result):
        return {"confidence": result["score"], "abstained": result["answer"] is None}


class QuestionAnswering(Task):
    name = "qa"
    problem_type = "question_answering"
    pipeline_tag = "question-answering"
    output_noun = "answers"
    auto_model = "AutoModelForQuestionAnswering"
    inputs = ("question", "context")
    metrics_for_best = {"loss": False}
    summary = (("f1", "F1"), ("exact_match", "EM"))
    stages = frozenset({"train", "cv", "eval", "predict", "export", "serve", "report"})
    unsupported = {"tune": "the qa task has no hyper-parameter search yet; run `encoderfit train` with chosen settings",
                   **Task.unsupported}
    baseline_name = "sliding-window baseline"
    baseline_plain = "question words near the answer (a sliding window)"
    always_windows = True
    output_axes = {0: "batch", 1: "sequence"}
    int8_recheck = False
    Options = QaOptions
    Targets = QaTargets
    Modeling = QaModeling
    Scoring = QaScoring
    Decoding = QaDecoding
    Pages = QaPages
