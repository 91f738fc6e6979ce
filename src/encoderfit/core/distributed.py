"""Multi-process training (`torchrun`, `accelerate launch`): which process writes, and waiting for the others.

The launcher sets RANK/WORLD_SIZE; accelerate (through the Trainer) joins the process group: gloo on CPU,
NCCL on GPUs. Everything that writes the run directory runs on the main process only.
"""

from __future__ import annotations

import os
import sys


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def join() -> None:
    """Join the launcher's process group now, so the processes can wait for each other before the Trainer exists."""
    if world_size() > 1:
        from accelerate import PartialState

        PartialState()


def _group():
    """torch.distributed when a process group is up, else None (never imports torch just to find out)."""
    dist = sys.modules.get("torch.distributed")
    return dist if dist is not None and dist.is_available() and dist.is_initialized() else None


def leave() -> None:
    """Leave the process group before the interpreter exits: a gloo group torn down at exit can abort a process
    ("terminate called without an active exception") after its work is done, failing the whole launch."""
    if _group():
        _group().destroy_process_group()


def barrier() -> None:
    if _group():
        _group().barrier()


def share(value):
    """The main process's `value`, on every process (it alone decides what to resume from, and logs why)."""
    if not _group():
        return value
    box = [value]
    _group().broadcast_object_list(box, src=0)
    return box[0]
