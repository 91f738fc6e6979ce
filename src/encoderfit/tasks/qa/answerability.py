"""SQuAD 2.0's answerability head: whether a window holds the answer, read from the pooled sequence, trained jointly
with the span head, saved beside the standard question-answering model, and the validation-fitted rule that decides
from it (and from the span's margin over the no-answer score) whether a question is answered.

Only data with unanswerable questions gets the head (SQuAD v1.1-style data trains and saves the plain model exactly
as before). The head is one linear layer on [the first token's vector ; the mean of the sequence's vectors], the same
vectors the span layer reads (caught on their way in, so any architecture's question-answering model serves); its
target is 1 for a window that holds the whole answer, 0 for the others (an unanswerable question's, and an answerable
question's windows that miss it); a question's answerability logit is the largest over its windows. Loss: the span
cross-entropy as before (the no-answer [CLS] target kept, so plain transformers' null-score rule still works) plus the
binary cross-entropy of the head, per window. The model directory stays a plain AutoModelForQuestionAnswering; the head
is `answerability.safetensors` beside it, which encoderfit's loader reads (plain transformers ignores it).

The decision (fitted on validation, never on test; see `fit_decision`): both signals standardised on validation,
mixed as (1 - w) x answerability + w x margin for w in MIX_WEIGHTS, each with its best-F1 threshold; the w with the
best validation F1 is kept (w = 1 is the old margin-only rule, so it can only be chosen over when the head helps
validation).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

log = logging.getLogger(__name__)
HEAD_FILE = "answerability.safetensors"
MIX_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # weight of the span margin against the answerability logit
ANSWERABILITY_WEIGHT = 1.0  # of the head's binary cross-entropy against the span loss


def span_layer(model):
    """The question-answering model's output layer (start and end per token): the last linear layer outside the
    encoder with two outputs."""
    from ...models.loading import output_layer

    layer = output_layer(model, 2)
    if layer is None:
        raise ValueError(f"{type(model).__name__} has no linear layer of 2 outputs outside its encoder (start, end)")
    return layer


def pooled_features(sequence, attention_mask):
    """[first token ; mean over the unpadded tokens] of the sequence's vectors (batch, 2 x hidden)."""
    import torch

    if attention_mask is None:
        mean = sequence.mean(dim=1)
    else:
        mask = attention_mask[:, : sequence.shape[1]].unsqueeze(-1).to(sequence.dtype)
        mean = (sequence * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    return torch.cat([sequence[:, 0], mean], dim=-1)


def build_model(qa_model, head_state: Optional[Dict] = None):
    """The question-answering model with its answerability head (new, or loaded from `head_state`)."""
    import torch
    from transformers.utils import ModelOutput

    @dataclass
    class AnswerabilityOutput(ModelOutput):
        start_logits: Optional[torch.FloatTensor] = None
        end_logits: Optional[torch.FloatTensor] = None
        answer_logits: Optional[torch.FloatTensor] = None

    class AnswerabilityModel(torch.nn.Module):
        """A question-answering model whose outputs add `answer_logits` (batch,): does the window hold the answer."""

        _keys_to_ignore_on_save = None  # the Trainer asks this of any model it resumes
        base_model_prefix = "encoder"  # what is not in it is the task head (train.head_learning_rate)

        def __init__(self):
            super().__init__()
            self.qa = qa_model
            self.config = qa_model.config
            hidden = qa_model.config.hidden_size
            self.answerability = torch.nn.Linear(2 * hidden, 1)
            self.dropout = torch.nn.Dropout(getattr(qa_model.config, "hidden_dropout_prob", 0.1) or 0.0)
            self.caught: Dict[int, object] = {}  # the span layer's input, per thread (servers run batches in threads)
            span_layer(qa_model).register_forward_pre_hook(self._catch)

        @property
        def encoder(self):
            return getattr(self.qa, self.qa.base_model_prefix)

        def _catch(self, module, inputs):
            self.caught[threading.get_ident()] = inputs[0]

        def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None):
            extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            out = self.qa(input_ids=input_ids, attention_mask=attention_mask, **extra)
            features = self.dropout(pooled_features(self.caught.pop(threading.get_ident()), attention_mask))
            logit = self.answerability(features.to(self.answerability.weight.dtype)).squeeze(-1)
            return AnswerabilityOutput(start_logits=out.start_logits, end_logits=out.end_logits, answer_logits=logit)

    model = AnswerabilityModel()
    if head_state is None:
        torch.nn.init.normal_(model.answerability.weight, std=getattr(qa_model.config, "initializer_range", 0.02))
        torch.nn.init.zeros_(model.answerability.bias)
    else:
        model.answerability.load_state_dict(head_state)
    model.head_is_new = getattr(qa_model, "head_is_new", True)
    return model


def head_loss(outputs, labels):
    """The answerability head's binary cross-entropy, summed over the windows (target: the window holds the answer,
    labels [start, end] not [0, 0]); 0 for a model without the head."""
    import torch

    logits = getattr(outputs, "answer_logits", None)
    if logits is None:
        return 0.0
    target = (labels[:, 0] > 0).to(torch.float32)
    return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), target, reduction="sum")


def save_head(model_dir: Path, trainer) -> None:
    """Turn the Trainer's save of the model with its head (qa.* and answerability.* in model.safetensors) into the
    plain question-answering model's directory, the head in HEAD_FILE beside it."""
    from safetensors.torch import load_file, save_file

    model_dir = Path(model_dir)
    weights = load_file(str(model_dir / "model.safetensors"))
    net = trainer.model
    net.qa.load_state_dict({k[len("qa."):]: v for k, v in weights.items() if k.startswith("qa.")})
    net.qa.save_pretrained(str(model_dir))  # config.json and model.safetensors: the standard model alone
    save_file({k[len("answerability."):]: v.contiguous() for k, v in weights.items() if k.startswith("answerability.")},
              str(model_dir / HEAD_FILE))


def load_head(qa_model, model_dir) -> object:
    """The loaded question-answering model, with its answerability head where the directory has one."""
    file = Path(model_dir) / HEAD_FILE
    if not file.is_file():
        return qa_model
    from safetensors.torch import load_file

    return build_model(qa_model, load_file(str(file)))


# ---------------------------------------------------------------- the decision, fitted on validation

def decision_scores(margins: np.ndarray, logits: np.ndarray, rule: Dict) -> np.ndarray:
    """The rule's score per question (answered when above rule["threshold"]); -inf where no span was found."""
    w = rule["weight"]
    z_margin = (margins - rule["margin_center"]) / rule["margin_scale"]
    z_logit = (logits - rule["logit_center"]) / rule["logit_scale"] if w < 1 else 0.0
    with np.errstate(invalid="ignore"):
        score = (1 - w) * z_logit + w * z_margin
    return np.where(np.isfinite(margins), score, -np.inf)


def fit_decision(margins: np.ndarray, logits: np.ndarray, rows: Dict[str, np.ndarray], best_threshold) -> Optional[Dict]:
    """The answer rule with the best validation F1 over MIX_WEIGHTS (see the module docstring); None without finite
    answerability logits (a model without the head). `best_threshold(scores, rows, f1)` -> (threshold, F1)."""
    finite = np.isfinite(margins)
    if not np.isfinite(logits).all() or finite.sum() < 2:
        return None

    def spread(values):
        scale = float(np.std(values))
        return float(np.mean(values)), scale if scale > 0 else 1.0

    margin_center, margin_scale = spread(margins[finite])
    logit_center, logit_scale = spread(logits[finite])
    tried = []
    for w in MIX_WEIGHTS:
        rule = {"weight": w, "margin_center": margin_center, "margin_scale": margin_scale, "logit_center": logit_center,
                "logit_scale": logit_scale}
        scores = decision_scores(margins, logits, rule)
        threshold, f1 = best_threshold(np.where(finite, scores, -1e9), rows, rows["f1"])
        tried.append((f1, -abs(w - 0.5), {**rule, "threshold": threshold, "validation_f1": 100 * f1,
                                          "validation_answered": 100 * float(np.mean(scores > threshold))}))
    best = max(tried, key=lambda t: (t[0], t[1]))[2]  # ties: the more even mix
    best["tried"] = {str(t[2]["weight"]): round(t[2]["validation_f1"], 2) for t in tried}
    log.info("answer rule: (1 - w) x answerability + w x span margin, w = %.2f chosen on validation (F1 by w: %s); "
             "validation F1 %.2f, %.1f%% answered", best["weight"], best["tried"], best["validation_f1"],
             best["validation_answered"])
    return best


def answered_mask(margins: List[float], logits: List[float], head: Dict) -> np.ndarray:
    """Whether each question is answered under the head: its answer rule where it has one, else the margin over the
    null threshold (none: every question with a span)."""
    margins, logits = np.asarray(margins, dtype=float), np.asarray(logits, dtype=float)
    rule, t = head.get("answerability"), head.get("null_threshold")
    if rule and np.isfinite(logits).all():
        return decision_scores(margins, logits, rule) > rule["threshold"]
    if t is None:
        return np.isfinite(margins)
    return np.isfinite(margins) & (margins > t)
