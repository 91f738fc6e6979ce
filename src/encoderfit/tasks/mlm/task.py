"""Masked-language-model pre-training as a task: unlabelled text packed into blocks, masked on the fly.

- Packing: every document is tokenized without special tokens and followed by [SEP]; the stream is cut into blocks
  of `block_size` tokens, each `[CLS] ... [SEP]` (as BERT and ModernBERT pre-train on full sequences). Every block is
  full, so no padding is ever computed; only the stream's last partial block is dropped. Validation blocks come from
  held-out documents only (pretraining/corpus.py holds out whole documents).
- Masking: transformers' DataCollatorForLanguageModeling (rate, 80/10/10 replacement; special tokens never masked),
  drawn afresh for every training batch from a generator seeded by (seed, batch number), so a resumed run masks as
  the uninterrupted one would. The validation blocks are masked once with a fixed seed, so every evaluation scores the same task.
- Metrics: masked-token loss (the model's own), perplexity exp(loss), and masked-token accuracy; the baseline is a
  unigram model of the training blocks (predicting each masked token by its frequency).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from ...core.errors import UserError
from ..base import Modeling, Scoring, Task

IGNORE = -100


class MlmModeling(Modeling):
    def loss(self, stats: Dict[str, Any], train) -> Optional[Callable]:
        return None  # the model's own masked-token cross-entropy (averaged over the step's masked tokens)

    def collator(self, tokenizer, rate: float = 0.3, seed: int = 0):
        return MaskingCollator(tokenizer, rate, seed)

    def preprocess_logits(self):
        def top_ids(logits, labels):
            """(n, block) predicted ids, not (n, block, vocab) logits. A model with sparse prediction (ModernBERT's
            option) returns the masked positions' logits only, in row-major order: they are put back in place."""
            if logits.dim() == 3:
                return logits.argmax(-1)
            full = labels.new_full(labels.shape, IGNORE)
            full[labels != IGNORE] = logits.argmax(-1)
            return full

        return top_ids


class MlmScoring(Scoring):
    def derive_metrics(self, metrics: Dict[str, float], prefix: str) -> Dict[str, float]:
        loss = metrics.get(f"{prefix}_loss")
        return {f"{prefix}_perplexity": math.exp(min(loss, 50.0))} if loss is not None else {}

    def trainer_metrics(self, labels: List[str], stats: Dict[str, Any]) -> Callable:
        def compute(pred) -> Dict[str, float]:
            ids, targets = np.asarray(pred.predictions), np.asarray(pred.label_ids)
            masked = targets != IGNORE
            return {"accuracy": float((ids[masked] == targets[masked]).mean()) if masked.any() else 0.0}

        return compute


class MaskedLM(Task):
    name = "mlm"
    problem_type = "masked_lm"
    pipeline_tag = "fill-mask"
    output_noun = "tokens"
    auto_model = "AutoModelForMaskedLM"
    stages = frozenset({"pretrain"})
    metrics_for_best = {"loss": False, "accuracy": True}
    summary = (("loss", "MLM loss"), ("perplexity", "perplexity"), ("accuracy", "masked-token accuracy"))
    lower_is_better = frozenset({"loss", "perplexity"})
    unsupported = {"*": "an mlm run is a pre-trained encoder: use its model/ with transformers.pipeline('fill-mask', model=RUN/model), "
                   "or fine-tune it with `encoderfit train --model.name_or_path RUN/model`"}
    Modeling = MlmModeling
    Scoring = MlmScoring


def pack(documents: List[str], tokenizer, block_size: int, where: str):
    """(Documents -> a Dataset of full blocks, [CLS] + block_size-2 tokens of the stream + [SEP], with a length
    column; the stream's length in tokens)."""
    from datasets import Dataset

    body = block_size - 2
    sep, cls = tokenizer.sep_token_id, tokenizer.cls_token_id
    if sep is None or cls is None:
        raise UserError(f"{where}: the tokenizer has no [CLS]/[SEP] (or <s>/</s>) tokens; an encoder's tokenizer needs both")
    pieces = []
    for start in range(0, len(documents), 1000):  # batched: the fast tokenizer runs in Rust threads
        for ids in tokenizer(documents[start:start + 1000], add_special_tokens=False, verbose=False)["input_ids"]:
            pieces.append(np.asarray(ids + [sep], dtype=np.int64))
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    blocks = len(stream) // body
    if blocks == 0:
        raise UserError(f"{where}: {len(stream)} tokens, less than one block of {block_size}; give more text or a smaller "
                        f"--mlm.block_size")
    body_ids = stream[: blocks * body].reshape(blocks, body)
    ids = np.concatenate([np.full((blocks, 1), cls), body_ids, np.full((blocks, 1), sep)], axis=1)
    return Dataset.from_dict({"input_ids": ids, "length": [block_size] * blocks}), len(stream)


class MaskingCollator:
    """Masks training batches with transformers' DataCollatorForLanguageModeling; passes pre-masked (validation)
    rows, which carry their labels, through unchanged.

    Batch k of a run is masked with a generator seeded from (seed, k) alone, so a run resumed after N optimizer steps
    masks its next batch exactly as the uninterrupted run did (`resume_at`), whatever the data loader fetched ahead."""

    def __init__(self, tokenizer, rate: float, seed: int = 0):
        from transformers import DataCollatorForLanguageModeling

        self.masker = DataCollatorForLanguageModeling(tokenizer, mlm_probability=rate, mask_replace_prob=0.8,
                                                      random_replace_prob=0.1, seed=seed)
        self.seed, self.batches = seed, 0

    def resume_at(self, batches: int) -> None:
        """Continue as if `batches` training batches had been masked already."""
        self.batches = batches

    def __call__(self, features: List[Dict]):
        import torch

        if "labels" in features[0]:
            return {key: torch.tensor([f[key] for f in features]) for key in ("input_ids", "labels")}
        # the masker builds its generator from `seed` when it has none (transformers >= 5.25 also replaces a generator
        # it did not build itself, so setting `generator` directly is ignored for the first batch of a process)
        self.masker.seed = int(np.random.SeedSequence([self.seed, self.batches]).generate_state(1)[0])
        self.masker.generator = None
        self.batches += 1
        return self.masker([{"input_ids": f["input_ids"]} for f in features])  # special tokens are never masked


def mask_once(blocks, tokenizer, rate: float, seed: int):
    """The validation blocks masked once, reproducibly: input_ids with masks, labels (-100 where not masked)."""
    from datasets import Dataset

    collate = MaskingCollator(tokenizer, rate, seed=seed)
    ids, labels = [], []
    for start in range(0, len(blocks), 256):
        batch = collate([blocks[i] for i in range(start, min(start + 256, len(blocks)))])
        ids.append(batch["input_ids"].numpy())
        labels.append(batch["labels"].numpy())
    return Dataset.from_dict({"input_ids": np.concatenate(ids), "labels": np.concatenate(labels),
                              "length": [len(blocks[0]["input_ids"])] * len(blocks)})


def unigram_baseline(train_blocks, masked_validation, vocab_size: int, counts: Optional[np.ndarray] = None) -> Dict[str, float]:
    """A unigram model of the training tokens scored on the masked validation tokens: loss, perplexity, accuracy.
    `counts`: the training blocks' token counts where they were summed already (a streamed corpus's)."""
    if counts is None:
        counts = np.zeros(vocab_size, dtype=np.float64)
        for start in range(0, len(train_blocks), 4096):
            counts += np.bincount(np.asarray(train_blocks[start:start + 4096]["input_ids"]).ravel(), minlength=vocab_size)[:vocab_size]
    counts = np.asarray(counts, dtype=np.float64)[:vocab_size]
    probs = (counts + 1) / (counts.sum() + vocab_size)  # add-one smoothing: no token has probability 0
    targets = np.asarray(masked_validation["labels"]).ravel()
    targets = targets[targets != IGNORE]
    loss = float(-np.log(probs[targets]).mean())
    return {"loss": loss, "perplexity": math.exp(loss), "accuracy": float((targets == probs.argmax()).mean()),
            "masked_tokens": int(len(targets))}
