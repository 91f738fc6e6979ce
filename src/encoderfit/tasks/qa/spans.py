"""Extractive QA's spans: questions and contexts encoded as windows over the context, the answer's tokens in each
window (training), and each question's best span over its windows against the no-answer score (inference), mapped
back to characters of the original context."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

from ...core.errors import UserError
from .answerability import answered_mask

QUESTION_SHARE = 0.5  # a question may take at most this share of max_length tokens (the rest is for the context)


def encode_windows(tokenizer, questions: List[str], contexts: List[str], max_length: int, stride: int, offsets: bool = True):
    """Question + context pairs, the context cut into windows of max_length tokens overlapping by `stride`
    (`overflow_to_sample_mapping`: each window's question), never padded; with character offsets."""
    return tokenizer([q.lstrip() for q in questions], contexts, truncation="only_second", max_length=max_length, stride=stride,
                     return_overflowing_tokens=True, return_offsets_mapping=offsets)


@dataclass
class Span:
    """A question's best span: its score (start + end logits) against the no-answer score, where it is in the context
    (characters), its text, its probability (start x end probabilities in its window) and the answerability head's
    logit (the largest over the windows; NaN for a model without the head)."""

    score: float
    null_score: float
    start: int
    end: int
    text: str
    probability: float
    answer_logit: float = math.nan

    @property
    def margin(self) -> float:
        return self.score - self.null_score


def check_questions(tokenizer, questions: List[str], max_length: int, role: str) -> None:
    limit = int(QUESTION_SHARE * max_length)
    questions = [q.lstrip() for q in questions]
    for i, ids in enumerate(tokenizer(questions, add_special_tokens=False)["input_ids"]):
        if len(ids) > limit:
            fix = ("shorten it: this model reads questions of at most {} tokens".format(limit) if role == "input" else
                   "shorten it or raise --model.max_length")
            raise UserError(f"{role}: a question of {len(ids)} tokens ('{questions[i][:60]}...'), more than half of "
                            f"model.max_length {max_length}; {fix}")


def _context_range(sequence_ids) -> tuple:
    tokens = [k for k, s in enumerate(sequence_ids) if s == 1]
    return (tokens[0], tokens[-1]) if tokens else (None, None)


def answer_tokens(sequence_ids, offsets, target) -> List[int]:
    """[start token, end token] of the target's first answer in this window; [0, 0] when it is not all in it."""
    if not target["text"]:
        return [0, 0]
    first, last = _context_range(sequence_ids)
    start_char = target["start"][0]
    end_char = start_char + len(target["text"][0])
    if first is None or offsets[first][0] > start_char or offsets[last][1] < end_char:
        return [0, 0]
    s = first
    while s <= last and offsets[s][0] <= start_char:
        s += 1
    e = last
    while e >= first and offsets[e][1] >= end_char:
        e -= 1
    return [s - 1, e + 1]


def find_spans(predictor, questions: List[str], contexts: List[str], n_best: int, max_answer_tokens: int) -> List[Span]:
    """Each question's best span over its context's windows (length-batched through the predictor's model)."""
    import torch

    if not questions:
        return []
    stride = (predictor.info.windows or {}).get("overlap", 0)
    with torch.inference_mode():
        check_questions(predictor.tokenizer, questions, predictor.max_length, "input")
        enc = encode_windows(predictor.tokenizer, questions, contexts, predictor.max_length, stride)
        source = list(enc.pop("overflow_to_sample_mapping"))
        offsets = enc.pop("offset_mapping")
        sequence_ids = [enc.sequence_ids(w) for w in range(len(source))]
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        lengths = [len(ids) for ids in enc["input_ids"]]
        tokens: list = [None] * len(lengths)
        predictor.run_tokens(predictor.model, enc, keys, lengths, range(len(lengths)), tokens)
    best: List[Optional[Span]] = [None] * len(questions)
    null = [math.inf] * len(questions)
    answerable = [-math.inf if tokens and tokens[0].shape[1] > 2 else math.nan] * len(questions)
    for w, i in enumerate(source):
        start_logits, end_logits = tokens[w][:, 0].astype(np.float64), tokens[w][:, 1].astype(np.float64)
        null[i] = min(null[i], float(start_logits[0] + end_logits[0]))
        if tokens[w].shape[1] > 2:  # the answerability head's logit, the same at every token of the window
            answerable[i] = max(answerable[i], float(tokens[w][0, 2]))
        first, last = _context_range(sequence_ids[w])
        if first is None:
            continue
        context_tokens = np.arange(first, last + 1)
        starts = context_tokens[np.argsort(-start_logits[context_tokens])[:n_best]]
        ends = context_tokens[np.argsort(-end_logits[context_tokens])[:n_best]]
        scores = start_logits[starts][:, None] + end_logits[ends][None, :]
        length = ends[None, :] - starts[:, None]
        scores = np.where((length >= 0) & (length < max_answer_tokens), scores, -np.inf)
        a, b = np.unravel_index(int(np.argmax(scores)), scores.shape)
        if not np.isfinite(scores[a, b]) or (best[i] is not None and scores[a, b] <= best[i].score):
            continue
        s, e = int(starts[a]), int(ends[b])
        window = np.concatenate([[0], context_tokens])  # [CLS] and the context: what the probabilities are over
        p_start = np.exp(start_logits[s] - _logsumexp(start_logits[window]))
        p_end = np.exp(end_logits[e] - _logsumexp(end_logits[window]))
        char_start, char_end = _trimmed(contexts[i], int(offsets[w][s][0]), int(offsets[w][e][1]))
        best[i] = Span(float(scores[a, b]), 0.0, char_start, char_end, contexts[i][char_start:char_end], float(p_start * p_end))
    out = []
    for i, span in enumerate(best):
        span = span or Span(-math.inf, 0.0, 0, 0, "", 0.0)
        span.null_score = null[i] if math.isfinite(null[i]) else 0.0
        span.answer_logit = answerable[i]
        out.append(span)
    return out


def _trimmed(context: str, start: int, end: int) -> tuple:
    """A span without the whitespace at its edges (byte-level BPE tokens carry the space before a word)."""
    while start < end and context[start].isspace():
        start += 1
    while end > start and context[end - 1].isspace():
        end -= 1
    return start, end


def answered(spans: List[Span], head: Dict) -> np.ndarray:
    """Whether each question is answered under the head (answerability.answered_mask)."""
    return answered_mask([s.margin for s in spans], [s.answer_logit for s in spans], head)


def answers(spans: List[Span], head: Dict) -> List[str]:
    """Each question's answer under the head: its span's text, or "" (no answer)."""
    return [s.text if given else "" for s, given in zip(spans, answered(spans, head))]


def _logsumexp(values: np.ndarray) -> float:
    top = float(values.max())
    return top + math.log(float(np.exp(values - top).sum()))


def span_logits(model):
    """The question-answering model with one output `.logits`, [start, end] per token (batch, sequence, 2), and a
    third channel with the answerability head's logit at every token where the model has the head: how predict,
    serve and the ONNX export read every token-level model. A model already wrapped is returned as it is."""
    import torch

    if getattr(model, "span_logits", False):
        return model

    class Wrapped(torch.nn.Module):
        span_logits = True

        def __init__(self):
            super().__init__()
            self.model = model
            self.config = model.config

        def forward(self, **inputs):
            out = self.model(**inputs)
            channels = [out.start_logits, out.end_logits]
            if getattr(out, "answer_logits", None) is not None:
                channels.append(out.answer_logits[:, None].to(out.start_logits.dtype).expand_as(out.start_logits))
            return type("Output", (), {"logits": torch.stack(channels, dim=-1)})()

    return Wrapped()
