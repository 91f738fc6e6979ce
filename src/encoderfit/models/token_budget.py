"""Token-budget training batches (`--train.max_batch_tokens`): as many texts of similar length per batch as fit in a
number of tokens, so short texts come many to a batch and long ones few, and a step costs about the same whatever
the lengths.

- The texts are sorted by length and cut into batches greedily: a batch ends where one more text would take its
  padded size (rows x the collator's padded width, `core.device.padded_length`) or, packed, its real tokens, past the
  budget. The cut points depend on the lengths alone, so every epoch has the same number of batches (the Trainer
  counts steps once, and a resumed run skips a fixed number of batches).
- Which of the equally long texts go together, and the order of the batches, are drawn from (seed, epoch) alone, as
  models/trainer.py's EpochSeededLengthSampler does: a resumed run replays the same batches, and every process of a
  multi-process run draws the same list (accelerate deals the batches out, one per process: the budget is per
  process). The batch with the most tokens comes first in every epoch, so a budget too large for the device fails
  at the first step, not hours in.
- Batches hold different numbers of examples; the loss stays the mean over the optimizer step's examples because
  the Trainer passes each task loss `num_items_in_batch` (the step's label count over its accumulated batches and
  processes), which the losses divide their sums by.
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Iterator, List, Optional, Sequence

import numpy as np
from transformers import TrainerCallback

from ..core.distributed import rank

log = logging.getLogger(__name__)


def batch_sizes(sorted_lengths: Sequence[int], max_tokens: int, width: Callable[[int], int], packed: bool = False) -> List[int]:
    """Rows per batch, cutting ascending `sorted_lengths` greedily under `max_tokens` (padded: rows x width(longest);
    packed: the sum of the lengths). A single text over the budget makes a batch of its own."""
    sizes: List[int] = []
    rows = total = 0
    for length in sorted_lengths:
        cost = total + length if packed else (rows + 1) * width(length)
        if rows and cost > max_tokens:
            sizes.append(rows)
            rows = total = 0
        rows += 1
        total += length
    if rows:
        sizes.append(rows)
    return sizes


class TokenBudgetBatches:
    """A batch sampler (lists of row indices) under a token budget; see the module's docstring."""

    def __init__(self, lengths: Sequence[int], max_tokens: int, seed: int, width: Optional[Callable[[int], int]] = None,
                 packed: bool = False):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.max_tokens, self.seed, self.packed, self.epoch = max_tokens, seed, packed, 0
        self.width = width or (lambda n: n)
        self.sizes = batch_sizes(np.sort(self.lengths, kind="stable").tolist(), max_tokens, self.width, packed)
        ends = np.cumsum(self.sizes)
        sorted_lengths = np.sort(self.lengths, kind="stable")
        cost = [int(sorted_lengths[s:e].sum()) if packed else (e - s) * self.width(int(sorted_lengths[e - 1]))
                for s, e in zip(ends - self.sizes, ends)]
        self.tokens = cost  # per batch, in the sorted order: what the budget counted
        self.heaviest = int(np.argmax(cost)) if cost else 0

    def set_epoch(self, epoch: int) -> None:  # accelerate (and the EpochToBatches callback) call this every epoch
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sizes)

    def batches(self, epoch: int) -> List[List[int]]:
        """The epoch's batches, in order."""
        rng = np.random.default_rng([self.seed, epoch])
        order = np.lexsort((rng.random(len(self.lengths)), self.lengths))  # by length; equal lengths in random order
        ends = np.cumsum(self.sizes)
        chunks = [order[s:e].tolist() for s, e in zip(ends - self.sizes, ends)]
        rest = [i for i in rng.permutation(len(chunks)).tolist() if i != self.heaviest]
        return [chunks[i] for i in [self.heaviest, *rest]] if chunks else []

    def __iter__(self) -> Iterator[List[int]]:
        return iter(self.batches(self.epoch))

    def describe(self) -> str:
        """One line for the log: batches, rows per batch, tokens per batch against the budget."""
        rows = np.asarray(self.sizes)
        kind = "real" if self.packed else "padded"
        return (f"{len(rows)} batches of {rows.min()}-{rows.max()} texts (mean {rows.mean():.1f}) under {self.max_tokens} "
                f"{kind} tokens (mean {np.mean(self.tokens):.0f}, {np.mean(self.tokens) / self.max_tokens:.0%} of it)")


class EpochToBatches(TrainerCallback):
    """Tells token-budget batches the epoch at its start, whichever loader wraps them (accelerate reaches a bare batch
    sampler's set_epoch, not one inside its multi-process shard after a resume)."""

    def __init__(self, batches: TokenBudgetBatches):
        self.batches = batches

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.batches.set_epoch(epoch_of(state.epoch or 0.0))


def _worker_seeding(workers: int, rank: int):
    """The Trainer's worker_init_fn (transformers.trainer_utils.seed_worker) with what its version takes."""
    import inspect
    from functools import partial

    from transformers.trainer_utils import seed_worker

    taken = inspect.signature(seed_worker).parameters
    return partial(seed_worker, **{k: v for k, v in (("num_workers", workers), ("rank", rank)) if k in taken})


def token_budget(train, lengths, tokenizer, net) -> Optional[TokenBudgetBatches]:
    """train.max_batch_tokens as batches over these training lengths (None when off); refused when the longest
    training row alone would not fit."""
    if not train.max_batch_tokens:
        return None
    from ..core.device import padded_length
    from ..core.errors import UserError

    packed = _packed(net)
    limit = getattr(tokenizer, "model_max_length", None)
    limit = limit if limit and limit < 1e6 else None
    width = (lambda n: padded_length(n, limit))
    longest = int(max(lengths, default=0))
    needed = longest if packed else width(longest)
    if needed > train.max_batch_tokens:
        raise UserError(f"train.max_batch_tokens: {train.max_batch_tokens} is below the longest training row ({needed} "
                        f"tokens{'' if packed else ' padded'}); use at least {needed}, or a smaller model.max_length")
    batches = TokenBudgetBatches(lengths, train.max_batch_tokens, train.seed, width, packed)
    if rank() == 0:
        log.info("token-budget batches: %s", batches.describe())
    return batches


def _packed(net) -> bool:
    """The model runs packed batches (train.packing; models/packing.py), so a budget counts real tokens."""
    try:
        from .packing import is_packed
    except ImportError:
        return False
    return net is not None and bool(is_packed(net))


def budget_loader(trainer, batches: TokenBudgetBatches):
    """The Trainer's training loader (its collator, workers, pinned memory, accelerate's sharding and device placement)
    over `batches`, as transformers' Trainer._get_dataloader builds it for batch_size rows."""
    import datasets
    from torch.utils.data import DataLoader

    dataset, args = trainer.train_dataset, trainer.args
    if isinstance(dataset, datasets.Dataset):
        dataset = trainer._remove_unused_columns(dataset, description="Training")
    params = {"batch_sampler": batches, "collate_fn": trainer.data_collator, "num_workers": args.dataloader_num_workers,
              "pin_memory": args.dataloader_pin_memory, "persistent_workers": args.dataloader_persistent_workers}
    if args.dataloader_num_workers:
        params.update(prefetch_factor=args.dataloader_prefetch_factor,
                      worker_init_fn=_worker_seeding(args.dataloader_num_workers, args.process_index))
    return trainer.accelerator.prepare(DataLoader(dataset, **params))


def epoch_of(progress: float) -> int:
    """The epoch a Trainer whose state.epoch is `progress` is in (e + steps/steps_in_epoch during epoch e)."""
    return int(math.floor(progress + 1e-9))
