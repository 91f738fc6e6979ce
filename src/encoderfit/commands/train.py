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
from typing import Dict, Optional

from ..core.args import DataArgs, ModelArgs, ReportArgs, TrainArgs
from ..core.distributed import is_main
from ..core.files import exclusive
from ..runs.training import Prepared
from ..runs.lifecycle import (
    TaskName,
    check_start,
    train_run,
)

log = logging.getLogger(__name__)


def fit(
    data: DataArgs = DataArgs(),
    model: ModelArgs = ModelArgs(),
    train: TrainArgs = TrainArgs(),
    report: ReportArgs = ReportArgs(),
    task: Optional[TaskName] = None,
    options: Optional[Dict[str, dict]] = None,
    output_dir: Path = Path("runs/latest"),
    overwrite: bool = False,
    resume: Optional[bool] = None,
) -> Path:
    """Fine-tune a transformer encoder on labelled text; evaluate it on validation and test.

    Writes OUTPUT_DIR with model/ (loads with transformers.pipeline), config.yaml, metrics.json, predictions/,
    report.html and logs/ (see rundir.py).

    Args:
        data: Where the labelled text comes from and how it is split.
        model: Which encoder to fine-tune.
        train: Optimisation and evaluation settings.
        report: Abstention threshold, prediction-interval coverage, baseline and error-analysis settings of the final
            evaluation.
        task: classification (one class per text), multilabel (a set of labels per text), regression (a number),
            ner (a tag per word: token lists with tags, CoNLL files, or text with character spans), qa (an answer
            span of a context: SQuAD files or question/context/answers rows), embedding or similarity (never inferred
            but the first three).
            Default: inferred from the label column (lists or --data.label_separator: multilabel; numbers that are
            not whole: regression; else classification), and stated in the log.
        options: The task's own settings, {task: {setting: value}} (the CLI's --ner.documents true is
            {"ner": {"documents": True}}); a task's settings are listed in `encoderfit train --help` under its name.
        output_dir: The run directory to write.
        overwrite: Replace OUTPUT_DIR if it already exists.
        resume: Continue an interrupted run from its newest complete checkpoint. Default (null): resume when the
            same config was interrupted before; true: insist on resuming; false: discard it and start over.
    """
    started = time.time()
    out = check_start(output_dir, overwrite, train)
    with exclusive(out, enabled=is_main(), overwrite=overwrite):  # one writer per output directory
        prep = Prepared.load(data, model, train, task, options)
        train_run(prep, prep.config(data, model, train, report), out, resume)
        if is_main():  # the other processes of a multi-process launch leave the writing (and saying) to it
            log.info("run written to %s (%.0f s)", out, time.time() - started)
        return out


