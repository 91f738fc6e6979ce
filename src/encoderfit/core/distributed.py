"""Multi-process training (`torchrun`, `accelerate launch`): which process writes, and waiting for the others.

The launcher sets RANK/WORLD_SIZE; accelerate (through the Trainer) joins the process group: gloo on CPU,
NCCL on GPUs, one GPU per process (process LOCAL_RANK takes cuda:LOCAL_RANK). A machine with fewer GPUs than
processes on it is refused before anything loads (NCCL cannot share one GPU between two ranks); hide the GPUs
(CUDA_VISIBLE_DEVICES="") to run the processes on the CPU over gloo. Everything that writes the run directory runs on
the main process only.
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


def local_processes() -> int:
    """Processes of this launch on this machine (torchrun's LOCAL_WORLD_SIZE)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))


def check_gpus(processes: int, gpus: int) -> None:
    """Each of a machine's processes needs a GPU of its own when there are GPUs: rank N asks for cuda:N."""
    if processes > 1 and 0 < gpus < processes:
        from .errors import UserError

        raise UserError(f"{processes} processes on this machine but {gpus} GPU(s): each process needs a GPU of its own; "
                         f"launch with --nproc_per_node {gpus}, or hide the GPUs (CUDA_VISIBLE_DEVICES=) to train on the "
                         "CPU over gloo")


def join() -> None:
    """Join the launcher's process group now, so the processes can wait for each other before the Trainer exists."""
    if world_size() > 1:
        import torch
        from accelerate import PartialState

        check_gpus(local_processes(), torch.cuda.device_count() if torch.cuda.is_available() else 0)

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
