"""`encoderfit train`: fine-tune an encoder with the transformers Trainer and write a run directory (rundir.py).

The run directory is built in a hidden .NAME.partial directory and renamed into place when complete. Interrupted
runs: the hidden directory keeps its sealed checkpoints (checkpoints.py); running the same command again continues
from the newest complete one, with optimizer, scheduler, RNG and data-order state, and ends where an uninterrupted
run would. Under torchrun every process trains; only the main one writes.

The run's task (tasks/) decides the targets, the output layer, the loss and the metrics; this module only drives.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..core.distributed import is_main
from ..core.files import exclusive
from ..runs.training import Prepared
from ..runs.lifecycle import check_start, train_run
from .options import FINE_TUNING, RUN_DIR, shared

log = logging.getLogger(__name__)


@shared(FINE_TUNING, RUN_DIR)
def fit(data=..., model=..., train=..., report=..., task=..., options=...,
        output_dir: Path = Path("runs/latest"), overwrite=..., resume=...) -> Path:
    """Fine-tune a transformer encoder on labelled text; evaluate it on validation and test.

    Writes OUTPUT_DIR with model/ (loads with transformers.pipeline), config.yaml, metrics.json, predictions/,
    report.html and logs/ (see rundir.py).

    Args:
        output_dir: The run directory to write.
    """
    started = time.time()
    out = check_start(output_dir, overwrite, train)
    with exclusive(out, enabled=is_main(), overwrite=overwrite):  # one writer per output directory
        prep = Prepared.load(data, model, train, task, options)
        train_run(prep, prep.config(data, model, train, report), out, resume)
        if is_main():  # the other processes of a multi-process launch leave the writing (and saying) to it
            log.info("run written to %s (%.0f s)", out, time.time() - started)
        return out


