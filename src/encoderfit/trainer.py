"""The transformers Trainer, set up the encoderfit way.

- Training batches are grouped by length and padded per batch (never to max_length); the validation set is sorted
  by length, so evaluation barely pads either.
- The shuffle depends only on (seed, epoch): a resumed run replays the same batches, and every process of a
  multi-process run draws the same order (accelerate then deals the batches out), so N processes at the same
  global batch size see the same batches as one.
- Checkpoints every evaluation and every `save_steps`, sealed once complete (see checkpoints.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch
from transformers import DataCollatorWithPadding, EarlyStoppingCallback, Trainer, TrainingArguments
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

from .checkpoints import SaveEverySteps, SealCheckpoints
from .config import TrainArgs
from .data import LABEL, Splits
from .distributed import is_main, world_size
from .errors import UserError
from .metrics import trainer_metrics

log = logging.getLogger(__name__)


def per_process_batch(train: TrainArgs) -> int:
    processes = world_size()
    if train.batch_size % processes:
        raise UserError(f"train.batch_size {train.batch_size} does not divide over {processes} processes; use a multiple of {processes}")
    return train.batch_size // processes


def training_arguments(train: TrainArgs, precision: str, checkpoints: Path) -> TrainingArguments:
    if train.eval_steps is not None:
        strategy, every = "steps", train.eval_steps
    elif train.max_steps is not None:
        strategy, every = "steps", train.max_steps  # evaluate once, at the end
    else:
        strategy, every = "epoch", None
    metric = "eval_loss" if train.metric_for_best == "loss" else f"eval_{train.metric_for_best}"
    if train.fsdp and (world_size() < 2 or not torch.cuda.is_available()):  # accelerate shards on GPUs only
        raise UserError(f"train.fsdp: FSDP needs GPUs and a multi-process launch (torchrun --nproc_per_node N); this run has "
                        f"{world_size()} process(es){'' if torch.cuda.is_available() else ' and no GPU'}: drop train.fsdp here")
    return TrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=train.epochs,
        max_steps=train.max_steps or -1,
        per_device_train_batch_size=per_process_batch(train),
        per_device_eval_batch_size=train.eval_batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        learning_rate=train.learning_rate,
        weight_decay=train.weight_decay,
        warmup_steps=train.warmup_ratio,  # a float below 1 is a share of all steps
        lr_scheduler_type=train.lr_scheduler,
        adam_beta1=train.adam_beta1,
        adam_beta2=train.adam_beta2,
        adam_epsilon=train.adam_epsilon,
        max_grad_norm=train.max_grad_norm,
        seed=train.seed,
        data_seed=train.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        eval_strategy=strategy,
        save_strategy=strategy,
        eval_steps=every,
        save_steps=every,
        save_total_limit=train.keep_checkpoints,  # with load_best_model_at_end the best checkpoint is kept as well
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=train.metric_for_best != "loss",
        logging_steps=train.logging_steps,
        logging_first_step=True,
        report_to=[r for r in train.report_to if r != "tensorboard"] or "none",
        length_column_name="length",
        dataloader_num_workers=train.num_workers,
        torch_compile=train.torch_compile,
        fsdp=train.fsdp,
        fsdp_config=train.fsdp_config,
        deepspeed=train.deepspeed,
        disable_tqdm=not is_main(),
    )


class EpochSeededLengthSampler(LengthGroupedSampler):
    """Length-grouped shuffling whose order is a function of (seed, epoch) alone, never of the global RNG."""

    def __init__(self, lengths, group_size: int, seed: int):
        super().__init__(group_size, lengths=list(lengths))
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:  # accelerate calls this at the start of every epoch
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


class EncoderTrainer(Trainer):
    def __init__(self, *args, lengths, **kwargs):
        super().__init__(*args, **kwargs)
        self.lengths = list(lengths)  # read before the Trainer drops the columns the model does not take

    def _get_train_sampler(self, train_dataset=None):
        group = self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
        return EpochSeededLengthSampler(self.lengths, group, self.args.seed)


def balanced_weights(labels: np.ndarray, num_labels: int) -> torch.Tensor:
    """n / (k * count_c): each class contributes equally to the loss (scikit-learn's "balanced")."""
    counts = np.bincount(labels, minlength=num_labels).astype(np.float64)
    return torch.tensor(len(labels) / (num_labels * np.maximum(counts, 1)), dtype=torch.float32)


def classification_loss(weights: Optional[torch.Tensor] = None):
    """Cross-entropy summed over the batch and divided by the Trainer's count of examples in the whole step (all
    processes, all accumulated micro-batches), so 1 or N processes and any accumulation give the same mean.
    (The model's own loss is a per-process mean, which the Trainer scales by the number of processes.)"""

    def loss(outputs, labels, num_items_in_batch=None):
        logits = outputs.logits.float()
        weight = None if weights is None else weights.to(logits.device)
        if num_items_in_batch is None:  # evaluation
            return torch.nn.functional.cross_entropy(logits, labels, weight=weight)
        total = torch.nn.functional.cross_entropy(logits, labels, weight=weight, reduction="sum")
        return total / num_items_in_batch

    return loss


def _callbacks(train: TrainArgs, logs: Path, extra: list) -> list:
    callbacks = [SealCheckpoints(), *extra]
    if train.save_steps:
        callbacks.append(SaveEverySteps(train.save_steps))
    if "tensorboard" in train.report_to and is_main():  # one event file, written by the main process only
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        callbacks.append(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(logs))))
    if train.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=train.early_stopping_patience))
    return callbacks


def build_trainer(
    net, tokenizer, splits: Splits, tokenized: Dict, train: TrainArgs, precision: str, workdir: Path,
    callbacks: Optional[list] = None,
) -> Trainer:
    args = training_arguments(train, precision, workdir / "checkpoints")
    weights = None
    if train.class_weights == "balanced":
        weights = balanced_weights(np.asarray(splits.train[LABEL]), len(splits.labels))
        log.info("class weights (balanced): %s", np.round(weights.numpy(), 3).tolist())
    return EncoderTrainer(
        model=net,
        args=args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["validation"].sort("length"),  # sorted: evaluation batches barely pad either
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if torch.cuda.is_available() else None),
        compute_metrics=trainer_metrics,
        compute_loss_func=classification_loss(weights),
        callbacks=_callbacks(train, workdir / "logs", callbacks or []),
        lengths=tokenized["train"]["length"],
    )
