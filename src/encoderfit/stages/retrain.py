"""`encoderfit retrain`: the deployed run fine-tuned again on its training split plus the feedback labels of the
prediction log, then compared with the deployed model on feedback it never saw and on the original test split, and
promoted (the `latest` pointer moved to it) only when it is significantly better on the feedback and not
significantly worse on the test split (docs/monitoring.md).

Training, checkpoints, resuming, the evaluation and the run directory are a normal run's (train.py's `train_run`):
only the training rows differ. Feedback texts that are in the validation or test split are left out of training,
so the test comparison stays fair.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, Literal, Optional

import numpy as np

from ..core.errors import UserError
from ..core.files import exclusive
from .evaluate import check_same_splits
from .predlog import PredictionLog
from .rundir import Predictions, RunDir
from .splits import prepare
from .train import check_start, train_run
from .training import Prepared
from ..tasks import get_task
from ..tasks.base.decoding import Decoding

log = logging.getLogger(__name__)
EXIT_KEPT = 4
MIN_FEEDBACK = 10


@dataclass
class RetrainResult:
    """The new run, whether it was promoted and why, and the two comparisons behind the decision."""

    run: Path
    promoted: bool
    reason: str
    comparisons: Dict = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 0 if self.promoted else EXIT_KEPT


def read_feedback(path: Path, task, labels, text_pair: bool):
    """The log's feedback labels that have a text (the feedback's own or the logged one): (texts, pairs, values)."""
    store = PredictionLog(path, flag="--feedback", create=False)
    try:
        rows = store.labelled()
    finally:
        store.close()
    usable = rows["text"].notna() & (rows["text_pair"].notna() if text_pair else True)
    if (~usable).any():
        log.warning("%d feedback labels have no text in the log (the server ran without --log_texts): left out", int((~usable).sum()))
    rows = rows[usable].drop_duplicates(subset=["text", "text_pair"], keep="last").reset_index(drop=True)
    if len(rows) < MIN_FEEDBACK:
        raise UserError(f"--feedback: {path} holds {len(rows)} usable feedback labels (with their texts); at least "
                        f"{MIN_FEEDBACK} are needed (log texts with `serve --log_texts`, or give texts to `encoderfit feedback`)")
    values = [json.loads(v) for v in rows["label"]]
    for i, value in enumerate(values):
        try:
            task.decoding.feedback_value(value, labels)
        except ValueError as err:
            raise UserError(f"--feedback: label of {rows['id'][i]}: {err}") from None
    return list(rows["text"]), (list(rows["text_pair"]) if text_pair else None), values


def _dataset(task, features, texts, pairs, values, labels):
    from datasets import Dataset

    columns = {"text": texts, **({"text_pair": pairs} if pairs is not None else {}),
               "labels": task.targets.targets_from_json(values, labels, "feedback").tolist()}
    extra = sorted(set(features) - set(columns))
    if extra:
        raise UserError(f"retrain: the run's training rows have columns {extra} that feedback cannot give; retrain "
                        "takes runs trained on texts and labels")
    return Dataset.from_dict(columns).cast(features)


def _pointer(run: Path, pointer: Optional[Path]) -> Path:
    chosen = Path(pointer) if pointer is not None else (Path(run) if Path(run).is_symlink() else Path(run).parent / "latest")
    if chosen.exists() and not chosen.is_symlink():
        raise UserError(f"--pointer: {chosen} exists and is not a symbolic link; name another path for the pointer to "
                        "the promoted run (default: RUN's parent/latest)")
    return chosen


def promote(pointer: Path, target: Path) -> None:
    """Point `pointer` (a symbolic link) at `target`, atomically: a server started from it meanwhile sees one or the other."""
    temporary = pointer.with_name(f".{pointer.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    os.symlink(os.path.relpath(target.resolve(), pointer.parent.resolve()), temporary)
    os.replace(temporary, pointer)


def retrain(
    run: Path,
    feedback: Optional[Path] = None,
    start: Literal["deployed", "base"] = "deployed",
    output_dir: Optional[Path] = None,
    pointer: Optional[Path] = None,
    holdout: float = 0.5,
    repeat: int = 1,
    epochs: Optional[float] = None,
    learning_rate: Optional[float] = None,
    seed: int = 0,
    overwrite: bool = False,
) -> RetrainResult:
    """Fine-tune the deployed run on its training data plus feedback; promote it only if it is significantly better.

    Writes OUTPUT_DIR as `encoderfit train` does, with metrics.json's "retrain" section (the feedback used and held
    out, both comparisons, the decision). Exit codes: 0 promoted, 4 kept the deployed model (the message says why),
    2 a usage error.

    Args:
        run: The deployed run directory (or the `latest` pointer to it).
        feedback: The prediction log holding the feedback labels (`POST /v1/feedback`, `encoderfit feedback`).
        start: deployed: fine-tune the deployed model further; base: start again from the run's base model.
        output_dir: The new run directory. Default: beside RUN, named RUN-retrained-DATE-TIME.
        pointer: The symbolic link moved to the new run when it is promoted. Default: RUN itself when it is a link,
            else RUN's parent/latest (`encoderfit serve runs/latest`).
        holdout: Share of the feedback held out of training, on which old and new are compared.
        repeat: How many times each training feedback row is added to the training split (its weight).
        epochs: Training epochs. Default: the run's.
        learning_rate: Peak learning rate. Default: the run's.
        seed: Seed of the held-out draw.
        overwrite: Replace OUTPUT_DIR if it exists.
    """
    from datasets import concatenate_datasets

    if feedback is None:
        raise UserError("--feedback is missing: name the prediction log that holds the feedback labels")
    if not 0 < holdout < 1 or repeat < 1:
        raise UserError(f"retrain: --holdout must be between 0 and 1 (got {holdout}) and --repeat at least 1 (got {repeat})")
    deployed = RunDir(Path(run).resolve())
    cfg = deployed.config()
    task = get_task(cfg.task, "train", cfg.options)
    if type(task.decoding).feedback_value is Decoding.feedback_value:  # the task reads no feedback labels
        raise UserError(f"retrain: the {cfg.task} task takes no feedback labels yet")
    pointer = _pointer(Path(run), pointer)
    texts, pairs, values = read_feedback(Path(feedback), task, cfg.labels, deployed.model.info().text_pair)
    order = np.random.default_rng(seed).permutation(len(texts))
    held = order[: max(1, round(holdout * len(texts)))]
    taught = order[len(held):]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(output_dir) if output_dir else deployed.path.parent / f"{re.sub(r'-retrained-[0-9-]+$', '', deployed.path.name)}-retrained-{stamp}"
    model = replace(cfg.model, name_or_path=str(deployed.model.path)) if start == "deployed" else cfg.model
    train = replace(cfg.train, **{k: v for k, v in (("epochs", epochs), ("learning_rate", learning_rate)) if v is not None})
    check_start(out, overwrite, train)
    with exclusive(out, overwrite=overwrite):
        splits = prepare(cfg.data, cfg.task, cfg.options)
        recorded = cfg.resolved.get("splits")  # a retrained run's training split holds its feedback: held-out splits only
        check_same_splits(deployed.path, {k: v for k, v in recorded.items() if k != "train"} if recorded else None, splits.fingerprints())
        kept = set(splits.validation["text"]) | set(splits.test["text"])
        taught = [i for i in taught if texts[i] not in kept]
        pick = lambda rows, idx: [rows[i] for i in idx] if rows is not None else None  # noqa: E731
        added = _dataset(task, splits.train.features, pick(texts, taught), pick(pairs, taught), pick(values, taught), cfg.labels)
        grown = concatenate_datasets([splits.train] + [added] * repeat)
        log.info("retraining from %s on %d training examples + %d feedback labels (x%d); %d feedback labels held out",
                 "the deployed model" if start == "deployed" else cfg.model.name_or_path, len(splits.train), len(taught), repeat, len(held))
        prep = Prepared.from_splits(replace(splits, train=grown), model, train)
        new_cfg = prep.config(cfg.data, model, train, cfg.report)
        held_targets = task.targets.targets_from_json(pick(values, held), cfg.labels, "feedback")
        decision: Dict = {}

        def more(new: RunDir, results: Dict) -> Dict:
            decision.update(_decide(task, deployed, new, cfg.labels, pick(texts, held), pick(pairs, held), held_targets, splits))
            decision["feedback_used"] = {"training": len(taught), "held_out": len(held), "repeat": repeat, "start": start,
                                         "deployed": str(deployed.path)}
            return {"retrain": decision}

        train_run(prep, new_cfg, out, None, more)
    if decision["promoted"]:
        promote(pointer, out)
        log.info("promoted: %s now points to %s. %s", pointer, out, decision["reason"])
    else:
        log.warning("kept the deployed model (%s); the new run is in %s. %s", deployed.path, out, decision["reason"])
    return RetrainResult(out, decision["promoted"], decision["reason"], {k: decision[k] for k in ("feedback", "test")})


def _decide(task, deployed: RunDir, new: RunDir, labels, texts, pairs, targets, splits) -> Dict:
    """New against deployed on the held-out feedback and on the test split (paired, the task's exact test): promoted
    only when better on the first and not worse on the second."""
    from .predict import Predictor
    from .verdict import compare, predict_split

    old_head, new_head = deployed.model.info().head or {}, new.model.info().head or {}
    old_model, new_model = Predictor.from_pretrained(deployed.path), Predictor.from_pretrained(new.path)
    on_feedback = {who: Predictions(texts, pairs, targets, task.scoring.outputs(m, texts, pairs)) for who, m in
                   (("old", old_model), ("new", new_model))}
    old_test = deployed.predictions("test", task, labels)
    new_test = new.predictions("test", task, labels)
    if old_test is None or old_test.texts != new_test.texts:
        old_test = predict_split(old_model, splits.test)
    names = ("deployed model", "the deployed model")
    feedback = compare(task, on_feedback["new"], on_feedback["old"], labels, new_head, old_head, against=names,
                       on="the held-out feedback")["verdict"]
    test = compare(task, new_test, old_test, labels, new_head, old_head, against=names)["verdict"]
    shown = lambda v: (f"{v['metric']} {v['difference']['difference']:+.4f} (95% CI {v['difference']['low']:+.4f} to "  # noqa: E731
                       f"{v['difference']['high']:+.4f}{', p = %.3g' % v['p_value'] if v.get('p_value') is not None else ''})")
    better, worse = feedback["outcome"] == "better", test["outcome"] == "worse"
    if better and not worse:
        reason = f"Better on {len(texts)} held-out feedback labels ({shown(feedback)}) and not worse on test ({shown(test)})."
    elif not better:
        reason = f"Not significantly better on {len(texts)} held-out feedback labels ({shown(feedback)})."
    else:
        reason = f"Better on feedback ({shown(feedback)}) but significantly worse on the original test split ({shown(test)})."
    return {"promoted": better and not worse, "reason": reason, "feedback": feedback, "test": test}
