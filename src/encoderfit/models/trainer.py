"""The transformers Trainer, set up the encoderfit way.

- Training batches are grouped by length and padded per batch (never to max_length); the validation set is sorted
  by length, so evaluation barely pads either.
- The shuffle depends only on (seed, epoch): a resumed run replays the same batches, and every process of a
  multi-process run draws the same order (accelerate then deals the batches out), so N processes at the same
  global batch size see the same batches as one.
- Checkpoints every evaluation and every `save_steps`, sealed once complete (see core/checkpoints.py).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Dict, Optional

import torch
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_pt_utils import LengthGroupedSampler

from ..core.checkpoints import seal
from ..core.args import TrainArgs
from ..core.device import has_cuda, loader_workers, pick_compile
from ..core.distributed import barrier, is_main, world_size
from ..core.errors import UserError, raise_if_signalled
from ..data.arrow import column_values
from .token_budget import EpochToBatches, TokenBudgetBatches, budget_loader, token_budget

log = logging.getLogger(__name__)


def per_process_batch(train: TrainArgs) -> int:
    processes = world_size()
    if train.batch_size % processes:
        raise UserError(f"train.batch_size {train.batch_size} does not divide over {processes} processes; use a multiple of {processes}")
    return train.batch_size // processes


def training_arguments(train: TrainArgs, precision: str, checkpoints: Path, greater_is_better: bool = False,
                       cls=TrainingArguments, **extra) -> TrainingArguments:
    """The Trainer's arguments for `train` (`cls`: a TrainingArguments subclass, given its own `extra` settings)."""
    if train.eval_steps is not None:
        strategy, every = "steps", train.eval_steps
    elif train.max_steps is not None:
        strategy, every = "steps", train.max_steps  # evaluate once, at the end
    else:
        strategy, every = "epoch", None
    metric = "eval_loss" if train.metric_for_best == "loss" else f"eval_{train.metric_for_best}"
    if train.max_batch_tokens and cls.__module__.startswith("sentence_transformers"):
        raise UserError("train.max_batch_tokens: this task trains with sentence-transformers' trainer, which batches by "
                        "texts; drop train.max_batch_tokens and set train.batch_size")
    workers = loader_workers(train.num_workers)
    if train.fsdp and (world_size() < 2 or not has_cuda()):  # accelerate shards on GPUs only
        raise UserError(f"train.fsdp: FSDP needs GPUs and a multi-process launch (torchrun --nproc_per_node N); this run has "
                        f"{world_size()} process(es){'' if has_cuda() else ' and no GPU'}: drop train.fsdp here")
    return cls(
        **extra,
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
        lr_scheduler_kwargs={"decay_ratio": train.decay_ratio} if train.lr_scheduler == "warmup_stable_decay" else None,
        adam_beta1=train.adam_beta1,
        adam_beta2=train.adam_beta2,
        adam_epsilon=train.adam_epsilon,
        max_grad_norm=train.max_grad_norm,
        seed=train.seed,
        data_seed=train.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not has_cuda(),
        eval_strategy=strategy,
        save_strategy=strategy,
        eval_steps=every,
        save_steps=every,
        save_total_limit=train.keep_checkpoints,  # with load_best_model_at_end the best checkpoint is kept as well
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=greater_is_better,
        logging_steps=train.logging_steps,
        logging_first_step=True,
        report_to=[r for r in train.report_to if r != "tensorboard"] or "none",
        length_column_name="length",
        logging_nan_inf_filter=False,  # True reads the loss back every step: a host sync that stalls a GPU's queue
        dataloader_num_workers=workers,  # collation in worker processes while the GPU computes (CUDA default)
        dataloader_persistent_workers=workers > 0,  # kept between epochs and evaluations, not restarted
        dataloader_pin_memory=has_cuda(),
        accelerator_config={"non_blocking": has_cuda()},  # host-to-device copies from pinned memory, asynchronous
        torch_compile=pick_compile(train.torch_compile),
        fsdp=train.fsdp,
        fsdp_config=train.fsdp_config,
        deepspeed=train.deepspeed,
        disable_tqdm=not is_main(),
    )


def length_grouped_order(lengths, batch_size: int, generator=None):
    """transformers' `get_length_grouped_indices` on numpy arrays: the same permutation, mega-batches (50 batches, or
    a quarter of the data), stable descending sort within each and longest-first swap, so the same order, as one
    int64 array (8 bytes a row) where transformers builds a Python int and list slots per row every epoch (tens of
    bytes a row: GBs at tens of millions of rows)."""
    import numpy as np

    lengths = np.asarray(lengths, dtype=np.int64)
    n = len(lengths)
    size = (min(n // (batch_size * 4), 50) or 1) * batch_size
    order = torch.randperm(n, generator=generator).numpy()
    for start in range(0, n, size):
        block = order[start:start + size]
        order[start:start + size] = block[np.argsort(-lengths[block], kind="stable")]  # Python's sorted(reverse) is stable
    firsts = np.arange(0, n, size)
    if n:
        longest = firsts[int(np.argmax(lengths[order[firsts]]))]  # the first of the longest mega-batch heads
        order[0], order[longest] = order[longest], order[0]
    return order


class EpochSeededLengthSampler(LengthGroupedSampler):
    """Length-grouped shuffling whose order is a function of (seed, epoch) alone, never of the global RNG; the
    lengths a numpy array, the order made by `length_grouped_order` and handed out one index at a time."""

    def __init__(self, lengths, group_size: int, seed: int):
        import numpy as np

        super().__init__(group_size, lengths=np.asarray(lengths, dtype=np.int64))
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:  # accelerate calls this at the start of every epoch
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return map(int, length_grouped_order(self.lengths, self.batch_size, generator))


class Timings(TrainerCallback):
    """Seconds spent evaluating and writing checkpoints during training (the Trainer's train_runtime includes both):
    from the end of the step before each to its end, so training throughput can be reported apart."""

    def __init__(self):
        self.evaluation_s = self.checkpoint_s = 0.0
        self.last = None

    def on_step_end(self, args, state, control, **kwargs):
        self.last = time.perf_counter()

    def on_evaluate(self, args, state, control, **kwargs):
        self.evaluation_s += self._since()

    def on_save(self, args, state, control, **kwargs):
        self.checkpoint_s += self._since()

    def _since(self) -> float:
        now, before = time.perf_counter(), self.last
        self.last = now
        return now - before if before is not None else 0.0

    def summary(self) -> Dict[str, float]:
        return {"evaluation_s": round(self.evaluation_s, 2), "checkpoint_s": round(self.checkpoint_s, 2)}


class EncoderTrainer(Trainer):
    def __init__(self, *args, lengths, derive=None, head_learning_rate=None, budget: Optional[TokenBudgetBatches] = None,
                 **kwargs):
        self.head_learning_rate = head_learning_rate  # before the Trainer's own set-up, which may build the optimizer
        super().__init__(*args, **kwargs)
        self.lengths = lengths  # read before the Trainer drops the columns the model does not take (numpy)
        self.derive = derive  # the task's metrics computed from the others (perplexity from the loss)
        self.budget = budget  # train.max_batch_tokens: batches by tokens (models/token_budget.py)
        if budget is not None:
            self.add_callback(EpochToBatches(budget))
        self.timings = Timings()
        self.add_callback(self.timings)

    def get_train_dataloader(self):
        """With train.max_batch_tokens: token-budget batches (models/token_budget.py) instead of batch_size rows."""
        return super().get_train_dataloader() if self.budget is None else budget_loader(self, self.budget)

    def create_optimizer(self, model=None):
        """AdamW as the Trainer builds it; with train.head_learning_rate, the task head's parameters (outside the
        encoder) in groups of their own at that rate (the schedule scales every group alike)."""
        if self.optimizer is not None or self.head_learning_rate is None:
            return super().create_optimizer(model)
        net = self.model
        encoder = getattr(net, getattr(net, "base_model_prefix", ""), None)
        inside = {id(p) for p in encoder.parameters()} if encoder is not None else set()
        decay = set(self.get_decay_parameter_names(net))
        groups = {}
        for name, param in net.named_parameters():
            if param.requires_grad:
                key = (id(param) not in inside, name in decay)
                groups.setdefault(key, []).append(param)
        optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, net)
        self.optimizer = optimizer_cls(
            [{"params": params, "weight_decay": self.args.weight_decay if decayed else 0.0,
              **({"lr": self.head_learning_rate} if head else {})} for (head, decayed), params in groups.items()], **kwargs)
        return self.optimizer

    def _get_train_sampler(self, train_dataset=None):
        group = self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
        return EpochSeededLengthSampler(self.lengths, group, self.args.seed)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        kwargs = self.args.lr_scheduler_kwargs or {}
        if "decay_ratio" in kwargs:  # warmup-stable-decay: the decay's length in steps, now that the total is known
            self.args.lr_scheduler_kwargs = {"num_decay_steps": max(1, round(kwargs["decay_ratio"] * num_training_steps)),
                                             "decay_type": "1-sqrt"}  # ModernBERT's decay (Hägele et al., 2024)
        return super().create_scheduler(num_training_steps, optimizer)

    def evaluation_loop(self, *args, **kwargs):
        output = super().evaluation_loop(*args, **kwargs)
        if self.derive is not None:
            prefix = kwargs.get("metric_key_prefix", "eval")  # Trainer.evaluate passes it by name
            output.metrics.update(self.derive(output.metrics, prefix))
        return output


class DistillCollator:
    """The task's collator for rows that carry `teacher` (a vector per row, or a vector per sub-word: padded with NaN
    to the batch's length, as the labels are padded) and `gold`; rows without them (validation) pass through."""

    def __init__(self, base):
        self.base = base

    def __call__(self, features):
        if "teacher" not in features[0]:
            return self.base(features)
        taught = [(f.pop("teacher"), f.pop("gold")) for f in features]
        batch = self.base(features)
        batch["gold"] = torch.tensor([g for _, g in taught], dtype=torch.bool)
        first = taught[0][0]
        if first and isinstance(first[0], (list, tuple)):  # per sub-word
            width = max(len(v) for t, _ in taught for v in t if len(v))
            out = torch.full((len(taught), batch["input_ids"].shape[1], width), float("nan"))
            for i, (t, _) in enumerate(taught):
                rows = [v if len(v) == width else [float("nan")] * width for v in t]
                out[i, : len(rows)] = torch.tensor(rows, dtype=torch.float32).reshape(len(rows), width)
            batch["teacher"] = out
        else:
            batch["teacher"] = torch.tensor([t for t, _ in taught], dtype=torch.float32)
        return batch


class DistillTrainer(EncoderTrainer):
    """Trains on a transfer set whose rows carry the teacher's outputs (`teacher`) and whether a gold label is there
    (`gold`): the loss is the task's distillation loss, summed over the rows and divided by the rows of the whole
    accumulated step (every row counts, gold label or not). Evaluation rows have neither column and are scored by the
    task's own loss on their gold labels, so checkpoints are chosen as in any run."""

    EXTRA = ("teacher", "gold")

    def __init__(self, *args, distill_loss, **kwargs):
        self.distill_loss = distill_loss
        super().__init__(*args, **kwargs)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        self._signature_columns += [c for c in self.EXTRA if c not in self._signature_columns]

    def _get_num_items_in_batch(self, batch_samples, device):
        # rows, not label elements: -100-free zeros, one per row, counted (and summed over processes) the Trainer's way
        return super()._get_num_items_in_batch([{"labels": torch.zeros(len(b["input_ids"]))} for b in batch_samples], device)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "teacher" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        teacher, gold, labels = inputs.pop("teacher"), inputs.pop("gold"), inputs.pop("labels")
        outputs = model(**inputs)
        each = self.distill_loss(outputs, labels, teacher.float(), gold.bool().reshape(-1))
        loss = each.mean() if num_items_in_batch is None else each.sum() / num_items_in_batch
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # the Trainer's own scaling: gradients are averaged over processes
        return (loss, outputs) if return_outputs else loss


class SealCheckpoints(TrainerCallback):
    """After each save: wait for every process's files (each rank writes its own RNG state), then seal."""

    def on_save(self, args, state, control, **kwargs):
        barrier()
        if state.is_world_process_zero:
            seal(Path(args.output_dir) / f"checkpoint-{state.global_step}")
        barrier()


class ReraiseSignals(TrainerCallback):
    """A Ctrl-C or SIGTERM that the CLI caught but that was swallowed on its way (core.errors.raise_if_signalled)
    stops training at the end of the step, as it would have."""

    def on_step_end(self, args, state, control, **kwargs):
        raise_if_signalled()

    def on_prediction_step(self, args, state, control, **kwargs):
        raise_if_signalled()


class SaveEverySteps(TrainerCallback):
    """Checkpoint every N optimizer steps as well as at each evaluation (the Trainer allows only one strategy)."""

    def __init__(self, every: int):
        self.every = every

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0:
            control.should_save = True
        return control


def trainer_callbacks(train: TrainArgs, logs: Path, extra: list) -> list:
    callbacks = [SealCheckpoints(), ReraiseSignals(), *extra]
    if train.save_steps:
        callbacks.append(SaveEverySteps(train.save_steps))
    if "tensorboard" in train.report_to and is_main():  # one event file, written by the main process only
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        callbacks.append(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(logs))))
    if train.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=train.early_stopping_patience))
    return callbacks


def build_trainer(net, tokenizer, task, labels, stats: Dict, tokenized: Dict, train: TrainArgs, precision: str, workdir: Path,
                  callbacks: Optional[list] = None, collator=None, distill=None) -> Trainer:
    """The Trainer for `task`: its loss, metrics and collator (`collator` replaces the task's default), the checkpoint
    kept by `train.metric_for_best` in its direction. With `distill` (DistillArgs), training rows carry a teacher's
    outputs and the task's distillation loss trains on them."""
    if train.metric_for_best not in task.metrics_for_best:
        raise UserError(f"train.metric_for_best: '{train.metric_for_best}' is not a metric of the {task.name} task; "
                        f"choose from {sorted(task.metrics_for_best)}")
    # label_names: every task's targets are `labels` (QA's too, [start, end] per window, read by its loss; the
    # Trainer would otherwise look for start_positions/end_positions and skip the validation loss)
    args = training_arguments(train, precision, workdir / "checkpoints", task.metrics_for_best[train.metric_for_best],
                              label_names=["labels"])
    extra = {"distill_loss": task.modeling.distill_loss(stats, train, distill)} if distill is not None else {}
    lengths = column_values(tokenized["train"], "length")  # numpy, through Arrow: a Column is read row by row
    return (DistillTrainer if distill is not None else EncoderTrainer)(
        **extra,
        model=net,
        args=args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["validation"].sort("length"),  # sorted: evaluation batches barely pad either
        processing_class=tokenizer,
        data_collator=(DistillCollator if distill is not None else (lambda c: c))(collator or task.modeling.collator(tokenizer)),
        compute_metrics=task.scoring.trainer_metrics(labels, stats),
        preprocess_logits_for_metrics=task.modeling.preprocess_logits(),
        derive=task.scoring.derive_metrics,
        compute_loss_func=task.modeling.loss(stats, train),
        callbacks=trainer_callbacks(train, workdir / "logs", callbacks or []),
        lengths=lengths,
        head_learning_rate=train.head_learning_rate,
        budget=token_budget(train, lengths, tokenizer, net),
    )
