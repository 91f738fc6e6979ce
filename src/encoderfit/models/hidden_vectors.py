"""Sentence vectors of any fine-tuned encoder: the mean of its encoder's last hidden states over each text's tokens.

`encoder_body` finds the bare encoder under a task head (and under the wrappers inference puts round it);
`MeanVectors` wraps it as a module whose `.logits` are those vectors, so the Predictor's own batching and padding run
it (`Predictor.sentence_vectors`, runs/predictor.py). The pooling is models/pooling.py's.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from .pooling import pool


class NoHiddenStates(Exception):
    """The encoder's outputs hold no `last_hidden_state`: this model gives no sentence vectors."""


def encoder_body(model):
    """The encoder under a task head and under the wrappers inference puts round it (QA's span logits, a pooled
    sentence-transformers module, models/pooling.py): the transformers model whose outputs hold `last_hidden_state`,
    or None where there is none to find."""
    from transformers import PreTrainedModel

    for _ in range(4):
        if isinstance(model, PreTrainedModel):
            return model.base_model  # the model itself when it is a bare encoder
        inner = getattr(model, "encoder", None)
        model = inner if inner is not None else getattr(model, "model", None)
        if model is None:
            return None
    return None


class MeanVectors(torch.nn.Module):
    """An encoder whose outputs' `.logits` are the mean of its last hidden states over each row's real tokens."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask, **extra):
        hidden = getattr(self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra), "last_hidden_state", None)
        if hidden is None:
            raise NoHiddenStates(type(self.encoder).__name__)
        return SimpleNamespace(logits=pool(hidden.float(), attention_mask, "mean"))
