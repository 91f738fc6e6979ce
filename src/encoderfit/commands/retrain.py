"""`encoderfit retrain`: the deployed run fine-tuned again on its training split plus the feedback labels of the
prediction log, then compared with the deployed model on feedback it never saw and on the original test split, and
promoted (the `latest` pointer moved to it) only when it is significantly better on the feedback and not
significantly worse on the test split (docs/monitoring.md).

Training, checkpoints, resuming, the evaluation and the run directory are a normal run's (train.py's `train_run`):
only the training rows differ. Feedback texts that are in the validation or test split are left out of training,
so the test comparison stays fair. The new run's default name is derived from its inputs (the deployed model, the
feedback, the settings), so running the same command again after an interrupt resumes it.

Nothing is trained before every output is known to be safe: the new run never replaces the deployed run (or a
directory holding it) or the pointer, and the pointer is moved only from RUN itself (a pointer serving another run
is refused) to the promoted run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, Literal, Optional

import numpy as np

from ..core.errors import UserError
from ..core.files import check_writable, exclusive
from ..runs.evaluation import check_same_splits
from ..runs.predlog import PredictionLog
from ..runs.rundir import Predictions, RunDir
from ..runs.splits import prepare
from ..runs.lifecycle import check_start, train_run
from ..runs.training import Prepared
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
    store = PredictionLog(path, flag="--feedback", readonly=True)
    try:
        rows = store.labelled()
    finally:
        store.close()
    usable = rows["text"].notna() & (rows["text_pair"].notna() if text_pair else True)
    if rows["text"].isna().any():
        log.warning("%d feedback labels have no text in the log (the server ran without --log_texts): left out", int(rows["text"].isna().sum()))
    if text_pair and (rows["text"].notna() & rows["text_pair"].isna()).any():
        log.warning("%d feedback labels have a text but not its second text, which this model reads (give feedback by the "
                    "prediction's id, or with the pair: `encoderfit feedback` reads the run's pair column): left out",
                    int((rows["text"].notna() & rows["text_pair"].isna()).sum()))
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


def check_pointer(run: Path, pointer: Optional[Path], deployed: Path) -> Path:
    """The pointer to move on promotion, checked before any work: a symbolic link to the deployed run (or a path to
    create one at) in a writable directory. A pointer serving another run is refused: its model was not retrained."""
    chosen = Path(pointer) if pointer is not None else (Path(run) if Path(run).is_symlink() else Path(run).parent / "latest")
    if chosen.exists() and not chosen.is_symlink():
        raise UserError(f"--pointer: {chosen} exists and is not a symbolic link; name another path for the pointer to "
                        "the promoted run (default: RUN's parent/latest)")
    if chosen.is_symlink() and Path(os.path.realpath(chosen)) != deployed:
        target = Path(os.path.realpath(chosen))
        raise UserError(f"--pointer: {chosen} points to {target}{'' if target.exists() else ' (missing)'}, not to the run "
                        f"being retrained ({deployed}); promoting would replace that deployed model with a retrain of "
                        f"another. Retrain what it serves (encoderfit retrain {chosen} ...), or name another --pointer")
    if not chosen.parent.is_dir():
        raise UserError(f"--pointer: directory {chosen.parent} does not exist; create it, or name another --pointer")
    check_writable(chosen, "--pointer")
    return chosen


def check_output(out: Path, deployed: Path, pointer: Path) -> None:
    """Before any work: the new run's directory is neither the deployed run, nor inside it or above it, nor the
    pointer (publishing a run there would replace the deployed model or turn the link into a directory)."""
    where = out.resolve()
    if out.is_symlink() or out.absolute() == pointer.absolute():
        what = "the --pointer" if out.absolute() == pointer.absolute() else f"a symbolic link (to {where})"
        raise UserError(f"--output_dir: {out} is {what}; the retrained run is a new directory: name another --output_dir "
                        "(default: beside RUN, named by its inputs)")
    if where == deployed or deployed in where.parents or where in deployed.parents:
        what = "the deployed run" if where == deployed else "inside the deployed run" if deployed in where.parents else "above the deployed run"
        raise UserError(f"--output_dir: {out} is {what} {deployed}; writing the retrained run there would replace the "
                        "deployed model: name another --output_dir (default: beside RUN, named by its inputs)")


def default_output(deployed: RunDir, inputs: Dict) -> Path:
    """RUN-retrained-DIGEST beside RUN, DIGEST from the inputs: the same command finds its interrupted run again."""
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:12]
    return deployed.path.parent / f"{re.sub(r'-retrained-[0-9a-f-]+$', '', deployed.path.name)}-retrained-{digest}"


def check_comparable(task, preds: Predictions, labels, head: Dict, values) -> None:
    """Before training: the deployed model's primary metric is defined on the held-out feedback (a Pearson r of
    all-equal values is not), or no model could be compared with it there."""
    metric = task.summary[0][0]
    functions = task.scoring.interval_metrics(preds, labels, head)[0]
    if metric in functions and not np.isfinite(functions[metric](np.arange(len(preds.texts)))):
        same = len({json.dumps(v) for v in values}) == 1
        why = (f"the {len(values)} held-out feedback labels are all {values[0]!r}" if same else
               f"the deployed model gives the {len(values)} held-out feedback texts the same output")
        raise UserError(f"retrain: {metric} is undefined on the held-out feedback ({why}), so no model can be compared "
                        "with the deployed one there; collect feedback with varied labels first. Nothing was trained")


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
        output_dir: The new run directory (not RUN, nor the pointer). Default: beside RUN, named
            RUN-retrained-DIGEST from its inputs, so the same command resumes an interrupted retrain.
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
    task = deployed.task("train")
    if type(task.decoding).feedback_value is Decoding.feedback_value:  # the task reads no feedback labels
        raise UserError(f"retrain: the {cfg.task} task takes no feedback labels yet")
    pointer = check_pointer(Path(run), pointer, deployed.path)
    if output_dir is not None:
        check_output(Path(output_dir), deployed.path, pointer)
    texts, pairs, values = read_feedback(Path(feedback), task, cfg.labels, deployed.model.info().text_pair)
    order = np.random.default_rng(seed).permutation(len(texts))
    held = order[: max(1, round(holdout * len(texts)))]
    taught = order[len(held):]
    inputs = {"deployed": deployed.model.fingerprint(), "feedback": [texts, pairs, values], "start": start, "holdout": holdout,
              "repeat": repeat, "epochs": epochs, "learning_rate": learning_rate, "seed": seed}
    out = Path(output_dir) if output_dir else default_output(deployed, inputs)
    check_output(out, deployed.path, pointer)
    if output_dir is None and out.exists() and not overwrite:
        done = RunDir(out).metrics().get("retrain", {}) if (out / RunDir.METRICS).is_file() else {}
        raise UserError(f"retrain: {out} is this same retrain (the same deployed model, feedback and settings), finished "
                        f"already{' and promoted' if done.get('promoted') else ' and kept out' if done else ''}; pass "
                        "--overwrite true to train it again, or retrain once more feedback has come in")
    model = replace(cfg.model, name_or_path=str(deployed.model.path)) if start == "deployed" else cfg.model
    train = replace(cfg.train, **{k: v for k, v in (("epochs", epochs), ("learning_rate", learning_rate)) if v is not None})
    check_start(out, overwrite, train)
    pick = lambda rows, idx: [rows[i] for i in idx] if rows is not None else None  # noqa: E731
    held_targets = task.targets.targets_from_json(pick(values, held), cfg.labels, "feedback")
    from ..runs.predictor import Predictor

    old_model = Predictor.from_pretrained(deployed.path)
    old_on_feedback = Predictions(pick(texts, held), pick(pairs, held), held_targets,
                                  task.scoring.outputs(old_model, pick(texts, held), pick(pairs, held)))
    del old_model  # not held in memory beside the model being trained
    check_comparable(task, old_on_feedback, cfg.labels, deployed.model.info().head or {}, pick(values, held))
    previous = Path(os.path.realpath(pointer)) if pointer.is_symlink() else None
    with exclusive(out, overwrite=overwrite):
        splits = prepare(cfg.data, cfg.task, cfg.options)
        recorded = cfg.resolved.get("splits")  # a retrained run's training split holds its feedback: held-out splits only
        check_same_splits(deployed.path, {k: v for k, v in recorded.items() if k != "train"} if recorded else None, splits)
        kept = set(splits.validation["text"]) | set(splits.test["text"])
        taught = [i for i in taught if texts[i] not in kept]
        added = _dataset(task, splits.train.features, pick(texts, taught), pick(pairs, taught), pick(values, taught), cfg.labels)
        grown = concatenate_datasets([splits.train] + [added] * repeat)
        log.info("retraining from %s on %d training examples + %d feedback labels (x%d); %d feedback labels held out",
                 "the deployed model" if start == "deployed" else cfg.model.name_or_path, len(splits.train), len(taught), repeat, len(held))
        prep = Prepared.from_splits(replace(splits, train=grown), model, train)
        new_cfg = prep.config(cfg.data, model, train, cfg.report)
        decision: Dict = {}

        def more(new: RunDir, results: Dict) -> Dict:
            decision.update(_decide(task, deployed, new, cfg.labels, old_on_feedback, splits))
            decision["feedback_used"] = {"training": len(taught), "held_out": len(held), "repeat": repeat, "start": start,
                                         "deployed": str(deployed.path)}
            return {"retrain": decision}

        train_run(prep, new_cfg, out, None, more)
    if decision["promoted"]:
        promote(pointer, out)
        log.info("promoted: %s now points to %s (before: %s). %s", pointer, out.resolve(), previous or "no pointer",
                 decision["reason"])
    else:
        log.warning("kept the deployed model (%s): %s; the new run is in %s. %s", deployed.path,
                    f"{pointer} still points to it" if previous else f"no pointer was made at {pointer}", out, decision["reason"])
    return RetrainResult(out, decision["promoted"], decision["reason"], {k: decision[k] for k in ("feedback", "test")})


def _decide(task, deployed: RunDir, new: RunDir, labels, old_on_feedback: Predictions, splits) -> Dict:
    """New against deployed on the held-out feedback and on the test split (paired, the task's exact test): promoted
    only when better on the first and not worse on the second."""
    from ..runs.predictor import Predictor
    from ..runs.verdict import compare, predict_split

    old_head, new_head = deployed.model.info().head or {}, new.model.info().head or {}
    new_model = Predictor.from_pretrained(new.path)
    texts, pairs = old_on_feedback.texts, old_on_feedback.pairs
    on_feedback = {"old": old_on_feedback,
                   "new": Predictions(texts, pairs, old_on_feedback.targets, task.scoring.outputs(new_model, texts, pairs))}
    old_test = deployed.predictions("test", task, labels)
    new_test = new.predictions("test", task, labels)
    if old_test is None or old_test.texts != new_test.texts:
        old_test = predict_split(Predictor.from_pretrained(deployed.path), splits.test)
    names = ("deployed model", "the deployed model")
    feedback = compare(task, on_feedback["new"], on_feedback["old"], labels, new_head, old_head, against=names,
                       on="the held-out feedback")["verdict"]
    test = compare(task, new_test, old_test, labels, new_head, old_head, against=names)["verdict"]
    shown = lambda v: (f"{v['metric']} undefined for one of the models" if v["difference"]["low"] is None else  # noqa: E731
                       f"{v['metric']} {v['difference']['difference']:+.4f} (95% CI {v['difference']['low']:+.4f} to "
                       f"{v['difference']['high']:+.4f}{', p = %.3g' % v['p_value'] if v.get('p_value') is not None else ''})")
    better, worse = feedback["outcome"] == "better", test["outcome"] == "worse"
    if better and not worse:
        reason = f"Better on {len(texts)} held-out feedback labels ({shown(feedback)}) and not worse on test ({shown(test)})."
    elif not better:
        reason = f"Not significantly better on {len(texts)} held-out feedback labels ({shown(feedback)})."
    else:
        reason = f"Better on feedback ({shown(feedback)}) but significantly worse on the original test split ({shown(test)})."
    return {"promoted": better and not worse, "reason": reason, "feedback": feedback, "test": test}
