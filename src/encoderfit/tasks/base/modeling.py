"""The model a task trains and how: the output layer, the loss, the collator and the Trainer, and what
runs at inference (a sentence-transformers directory's pooling)."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from .part import Part


class Modeling(Part):
    probes = False
    """Whether train.linear_probe can fit this task's output layer (one row of outputs per text)."""
    probes_by_default = False
    """Whether train.linear_probe left at its default (null) probes this task's new output layer first."""

    def model_kwargs(self, labels: List[str]) -> Dict[str, Any]:
        """from_pretrained keyword arguments for the output layer: num_labels, id2label, label2id, problem_type."""
        return {"num_labels": self.task.targets.num_outputs(labels), "id2label": dict(enumerate(labels)),
                "label2id": {name: i for i, name in enumerate(labels)}, "problem_type": self.task.problem_type}

    def loss(self, stats: Dict[str, Any], train) -> Callable:
        """The training loss (outputs, labels, num_items_in_batch) -> scalar: summed over the step's examples and
        divided by their count over all processes, so 1 or N processes and any accumulation give the same mean."""
        raise NotImplementedError

    def distill_loss(self, stats: Dict[str, Any], train, distill) -> Callable:
        """The distillation loss (outputs, labels, teacher outputs, has a gold label) -> one loss per row: the
        student's outputs against the teacher's (softened by distill.temperature), mixed with the gold label's loss
        by distill.alpha where a row has one. Tasks whose `distillation` is None define it."""
        raise NotImplementedError

    def distill_rows(self, texts: List[str], pairs: Optional[List[str]], gold: List[bool], words, train, outputs):
        """The transfer set as training rows: text (pair, words), labels (the training split's gold label, or a
        placeholder where there is none), gold, and the teacher's outputs (a row of logits per text; per word where
        the task labels words)."""
        import numpy as np
        from datasets import Dataset

        from ...data.sources import LABEL, PAIR, TEXT

        known = list(train[LABEL])
        if words is not None:
            placeholder = [[0] * len(w) for w in words[len(known):]]  # tag 0 (O), never learned: gold is 0
            teacher = [np.asarray(o.logits, dtype=np.float32).tolist() for o in outputs]
        else:
            placeholder = [known[0]] * (len(texts) - len(known))
            teacher = np.asarray(outputs, dtype=np.float32).reshape(len(texts), -1).tolist()
        columns = {TEXT: texts, **({PAIR: pairs} if pairs is not None else {}), **({"words": words} if words is not None else {}),
                   LABEL: known + placeholder, "gold": [int(g) for g in gold], "teacher": teacher}
        return Dataset.from_dict(columns)

    def load_model(self, args, labels: List[str], max_length: int, stats: Optional[Dict[str, Any]] = None):
        """The model to fine-tune: the encoder with this task's output layer (a new layer's bias at the training
        split's priors, where the task has them)."""
        from ...models.loading import load_model
        from ...models.pooling import pooled_classifier

        bias = self.output_bias(stats) if stats else None
        return pooled_classifier(args, self.task, labels, bias) or load_model(args, self.task, labels, bias)

    def output_bias(self, stats: Dict[str, Any]):
        """A new output layer's starting bias from the training split's statistics (None: the architecture's)."""
        return None

    def build_trainer(self, net, tokenizer, labels: List[str], stats: Dict[str, Any], tokenized: Dict, train, precision: str,
                      workdir, callbacks: Optional[list] = None, distill=None):
        """The Trainer that fine-tunes `net` (trainer.build_trainer: this task's loss, metrics and collator; with
        `distill`, its distillation loss on training rows that carry a teacher's outputs)."""
        from ...models.trainer import build_trainer

        return build_trainer(net, tokenizer, self.task, labels, stats, tokenized, train, precision, workdir, callbacks,
                             distill=distill)

    def inference_model(self, model, model_dir):
        """The loaded model as inference runs it (a module whose outputs have `.logits`): a sentence-transformers
        directory's transformer with its pooling (and its linear head, for classification on embeddings)."""
        from ...models.loading import is_sentence_model

        if is_sentence_model(model_dir):
            from ...models.pooling import pooled

            return pooled(model, model_dir)
        return model

    def windows_per_text(self, tokenizer, texts: List[str], pairs: Optional[List[str]], max_length: int, overlap: int) -> List[int]:
        """How many windows of max_length tokens each text (or pair) takes, as this task reads long inputs."""
        from collections import Counter

        from ...data.sources import encode_texts

        counts = Counter(encode_texts(tokenizer, texts, pairs, max_length, {"overlap": overlap})["overflow_to_sample_mapping"])
        return [counts[i] for i in range(len(texts))]

    def logits_model(self, model):
        """The model as inference runs it, whose outputs have `.logits` (QA stacks its start and end logits); applied
        to any model a Predictor is given, so it must leave an already adapted one as it is."""
        return model

    def infer(self, predictor, texts: List[str], pairs: Optional[List[str]], words=None):
        """The model's outputs for these texts as decode takes them, through the predictor's length-batched model: a
        row of logits per text (long texts' windows aggregated) by default; a task that reads tokens (NER's words,
        QA's spans) reads them its own way."""
        return predictor.text_logits(texts, pairs)

    def collator(self, tokenizer):
        """Batches for the Trainer: each padded to its own longest row, rounded up to `core.device.pad_multiple`."""
        from transformers import DataCollatorWithPadding

        return BucketedPadding(DataCollatorWithPadding(tokenizer))

    def preprocess_logits(self) -> Optional[Callable]:
        """What the Trainer keeps of each evaluation batch's logits (None: all of them)."""
        return None

    def after_training(self, model_dir, stats: Dict[str, Any], trainer=None) -> bool:
        """Adjust the saved weights once training is over; True when they changed (the in-memory model is stale)."""
        return False


class BucketedPadding:
    """A transformers padding collator whose multiple is chosen per batch from its longest row
    (`core.device.pad_multiple`): few distinct shapes, little padding."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, features):
        from ...core.device import pad_multiple

        longest = max(len(row["input_ids"]) for row in features)
        multiple = pad_multiple(longest)
        limit = getattr(self.collator.tokenizer, "model_max_length", None) or 0
        within = limit > 1e6 or -(-longest // multiple) * multiple <= limit  # never past the model's positions
        self.collator.pad_to_multiple_of = multiple if within else None
        return self.collator(features)
