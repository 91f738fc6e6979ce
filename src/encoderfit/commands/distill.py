"""`encoderfit distill`: a student model trained on a teacher run's outputs (knowledge distillation, Hinton et al.
2015), for the big model's answers at the small model's cost.

The student learns on the teacher's own data, split as the teacher's was (checked by the splits' fingerprints), so
its test split is the teacher's. The transfer set is the teacher's training split (gold labels mixed in by
distill.alpha), plus more text the teacher labels (`--distill.unlabelled`) and label-free variants of the training
texts (`--distill.augment`, data/augment.py); no validation or test text ever enters it. The teacher's outputs are
computed once, up front, by its Predictor (an ensemble run gives its members' average). Training, checkpoints,
resuming, evaluation and the run directory are a normal run's (train.py); the task supplies the loss
(`Modeling.distill_loss`). The student's metrics then stand beside the teacher's, and beside a student trained
directly on the labels (`--distill.compare`), each with a paired test on the same test examples.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, Optional

from ..core.args import DistillArgs, ModelArgs
from ..core.distributed import is_main
from ..core.files import exclusive
from ..runs.evaluation import check_same_splits
from ..runs.rundir import RunDir
from ..runs.splits import prepare
from ..runs.lifecycle import check_start, train_run
from ..runs.training import Prepared
from ..runs.distillation import (
    COMPARE_FIX,
    TEACHER_FIX,
    against,
    check_request,
    check_tokenizer,
    transfer_set,
)
from .options import FINE_TUNING, RUN_DIR, shared

log = logging.getLogger(__name__)


@shared(FINE_TUNING, RUN_DIR)
def train_student(teacher: Optional[Path] = None, student: Optional[str] = None, distill: DistillArgs = DistillArgs(),
                  model=..., train=..., report=..., data=..., task: Optional[str] = None, options=...,
                  output_dir: Path = Path("runs/distilled"), overwrite=..., resume=...) -> Path:
    """Train a small student model on a teacher run's outputs; evaluate it against the teacher on the same test split.

    Writes OUTPUT_DIR as `encoderfit train` does (model/, metrics.json, report.html ...), with metrics.json's
    "distillation" section: the transfer set, the teacher's test metrics and the paired test against it (and against
    --distill.compare).

    Args:
        teacher: The teacher: a run directory of `encoderfit train` (classification, multilabel, regression, ner,
            embedding or similarity; a --train.seeds K --train.ensemble true run distils its ensemble).
        student: The student encoder (a hub name, a local directory, or a packaged model such as
            all-MiniLM-L6-v2); the same as --model.name_or_path.
        distill: The distillation settings: temperature, alpha, more text, augmentation.
        model: The student's model settings. Default max_length: the teacher's.
        train: The student's training settings (a recipe's, e.g. --config examples/vader-movies.yaml).
        report: Evaluation settings, as for train.
        data: Must be the teacher's or left out: the student learns on the teacher's data and splits.
        task: Must be the teacher's task or left out.
        options: The task's own settings ({task: {setting: value}}, the CLI's --ner.documents): the teacher's or left out.
        output_dir: The run directory to write.
        resume: As for train: continue an interrupted distillation of the same settings.
    """
    from ..models.loading import load_tokenizer
    from ..runs.predictor import Predictor

    started = time.time()
    teacher_dir, teacher_cfg, kind = check_request(teacher, task, data, options, model, train, distill.compare)
    model = replace(model, name_or_path=student or model.name_or_path,
                    max_length=model.max_length or teacher_cfg.resolved.get("max_length"))
    out = check_start(output_dir, overwrite, train)
    with exclusive(out, enabled=is_main(), overwrite=overwrite):
        splits = prepare(teacher_cfg.data, teacher_cfg.task, teacher_cfg.options, settle=False)
        check_same_splits(teacher, teacher_cfg.resolved.get("splits"), splits, TEACHER_FIX)
        if distill.compare:  # before hours of training: the run to compare with must have the same splits
            check_same_splits(distill.compare, RunDir(Path(distill.compare)).config().resolved.get("splits"), splits,
                              COMPARE_FIX)
        teacher_tokenizer = load_tokenizer(ModelArgs(name_or_path=str(teacher_dir.model.path)))
        mask = teacher_tokenizer.mask_token
        texts, pairs, gold, counts, words = transfer_set(kind, splits, distill, mask)
        prep = Prepared.from_splits(splits, model, train)
        check_tokenizer(prep.tokenizer, texts, model.name_or_path, teacher_tokenizer)
        tutor = Predictor.from_pretrained(teacher)
        log.info("transfer set: %d training texts, %d unlabelled, %d augmented; the teacher labels them", counts["train"],
                 counts["unlabelled"], counts["augmented"])
        modeling, targets = prep.task.modeling, prep.task.targets
        outputs = tutor.logits(texts, pairs, words, progress="the teacher labels the transfer set")
        rows = modeling.distill_rows(texts, pairs, gold, words, splits.train, outputs)
        prep.tokenized["train"] = targets.tokenize(rows, prep.tokenizer, prep.max_length, prep.windows, train, "train")
        if prep.task.distill_validation:  # checkpoints chosen by closeness to the teacher on the validation texts
            seen, seen_pairs, seen_words = targets.distill_texts(splits.validation)
            rows = modeling.distill_rows(seen, seen_pairs, [False] * len(seen), seen_words, splits.validation,
                                         tutor.logits(seen, seen_pairs, seen_words))
            prep.tokenized["validation"] = targets.tokenize(rows, prep.tokenizer, prep.max_length, prep.windows, train, "validation")
        del tutor
        prep.distill = distill
        cfg = prep.config(teacher_cfg.data, model, train, report)
        cfg.distill = {"teacher": str(teacher), "teacher_model": teacher_cfg.model.name_or_path,
                       **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(distill).items()}, "transfer": counts}

        def more(run: RunDir, results: Dict) -> Dict:
            head = run.model.info().head or {}
            section = {"transfer": counts, "temperature": distill.temperature, "alpha": distill.alpha,
                       "teacher": against(prep.task, run, splits, cfg.labels, head, teacher_dir.path,
                                          teacher_cfg.model.name_or_path, "teacher")}
            if distill.compare:
                direct = RunDir(Path(distill.compare)).config().model.name_or_path
                section["direct"] = against(prep.task, run, splits, cfg.labels, head, Path(distill.compare), direct,
                                            "student trained on the labels")
            return {"distillation": section}

        train_run(prep, cfg, out, resume, more)
        if is_main():
            log.info("student written to %s (%.0f s)", out, time.time() - started)
        return out


distill = train_student  # the Python API's name (`encoderfit.distill`); the CLI's group --distill.* needs another name
