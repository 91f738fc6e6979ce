"""`encoderfit train`: fine-tune an encoder with the transformers Trainer and write a run directory (rundir.py).

The run directory is built in a hidden .NAME.partial directory and renamed into place when complete. Interrupted
runs: the hidden directory keeps its sealed checkpoints (checkpoints.py); running the same command again continues
from the newest complete one, with optimizer, scheduler, RNG and data-order state, and ends where an uninterrupted
run would. Under torchrun every process trains; only the main one writes.

The run's task (tasks/) decides the targets, the output layer, the loss and the metrics; this module only drives.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional

from . import __version__
from .checkpoints import checkpoints_in, newest_complete
from .config import DataArgs, ModelArgs, ReportArgs, RunConfig, TrainArgs
from .data import Splits, prepare
from .device import pick_precision
from .distributed import barrier, is_main, join, share
from .errors import UserError
from .files import check_writable, exclusive, partial_dir, publish_dir, write_json
from .modeling import load_config, load_tokenizer, resolve_max_length
from .rundir import ModelDir, ModelInfo, RunDir
from .tasks import LABELLED, Task, get_task

log = logging.getLogger(__name__)
TaskName = Literal[tuple(LABELLED)]  # the registry's fine-tuning tasks: --task's choices (mlm: `encoderfit pretrain`)

# Settings that may change between an interrupted run and its resumption without changing what is computed.
RESUMABLE_CHANGES = {"report", "train.report_to", "train.num_workers", "train.logging_steps", "train.save_steps",
                     "train.keep_checkpoints", "train.eval_batch_size"}


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and key != "fsdp_config":  # a free-form setting: compared whole
            flat.update(_flat(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def config_changes(before, now) -> List[str]:
    """Settings that differ between two runs (configs, or their saved mappings), ignoring those that do not change
    the result."""
    a, b = (_flat({k: v for k, v in (c if isinstance(c, dict) else c.to_dict()).items() if k not in ("resolved", "labels")})
            for c in (before, now))
    changed = []
    for key in sorted(set(a) | set(b)):
        if key.split(".")[0] in RESUMABLE_CHANGES or key in RESUMABLE_CHANGES:
            continue
        if a.get(key) != b.get(key):
            changed.append(f"{key} was {a.get(key)!r}, now {b.get(key)!r}")
    return changed


def trained_already(workdir: Path) -> bool:
    """Training finished in `workdir` (model/ and metrics.json's train section are its last writes) and only the
    evaluation is left: a run whose evaluation failed is finished without training again."""
    metrics = workdir / RunDir.METRICS
    return (workdir / RunDir.MODEL / ModelDir.INFO).is_file() and metrics.is_file() and "train" in RunDir(workdir).metrics()


def _progress(workdir: Path) -> List[Path]:
    """What an interrupted run left to continue from: a trained model, checkpoints, or members of a several-seed run."""
    if trained_already(workdir):
        return [workdir / RunDir.MODEL]
    members = sorted((workdir / RunDir.MEMBERS).glob("seed-*")) if (workdir / RunDir.MEMBERS).is_dir() else []
    return checkpoints_in(workdir / RunDir.CHECKPOINTS) + members


def continues(workdir: Path, cfg, resume: Optional[bool]) -> bool:
    """Whether to continue the interrupted run in `workdir` (its config, of cfg's type, must match) or start afresh.
    resume None means "if an interrupted run is there"."""
    if resume is False or not _progress(workdir):
        if resume:
            raise UserError(f"--resume: no interrupted run to resume in {workdir}; run without --resume to start one")
        return False
    try:
        before = type(cfg).load(workdir)
    except (UserError, TypeError, ValueError):
        before = None
    changes = ["its config.yaml is missing or unreadable"] if before is None else config_changes(before, cfg)
    if changes:
        raise UserError(f"{workdir} holds an interrupted run with another config ({changes[0]}); run the same config "
                        "to resume it, or pass --resume false to discard it and start over")
    return True


def resume_point(directory: Path, insist: bool) -> Optional[Path]:
    """The newest complete checkpoint of a directory being trained (None: start it from the beginning)."""
    checkpoints = directory / RunDir.CHECKPOINTS
    if not checkpoints_in(checkpoints):
        return None
    checkpoint = newest_complete(checkpoints)
    if checkpoint is None:
        if insist:
            raise UserError(f"--resume: {checkpoints} holds no complete checkpoint; pass --resume false to start over")
        log.warning("warning: %s holds no complete checkpoint; starting over", checkpoints)
        return None
    log.info("resuming from %s", checkpoint)
    return checkpoint


def _abandon(workdir: Path, interrupted: bool) -> None:
    """After a failure: keep the directory when it holds a trained model, a checkpoint or a member to resume from,
    else remove it; say which."""
    if trained_already(workdir):
        log.warning("the evaluation failed after training; the trained model is kept in %s: run the same command "
                    "again to evaluate it without training again", workdir)
        return
    kept = newest_complete(workdir / RunDir.CHECKPOINTS) or any((workdir / RunDir.MEMBERS).glob("seed-*/model")) or any(
        newest_complete(m / RunDir.CHECKPOINTS) for m in (workdir / RunDir.MEMBERS).glob("seed-*"))
    if not kept:
        shutil.rmtree(workdir, ignore_errors=True)
        if interrupted:
            log.warning("training stopped before its first complete checkpoint: nothing kept")
    else:
        log.warning("training stopped; checkpoints kept in %s: run the same command again to resume", workdir)


def check_start(output_dir: Path, overwrite: bool, train: TrainArgs) -> Path:
    """Before any work: the output directory can be written (and replaced only with --overwrite), the machine has
    what training needs; then join the other processes of a multi-process launch."""
    out = Path(output_dir)
    if out.exists() and not overwrite:
        raise UserError(f"output_dir: {out} already exists; pass --overwrite true to replace it, or choose another --output_dir")
    check_writable(out, "output_dir")
    train.check_runnable()
    join()
    return out


@dataclass
class Prepared:
    """Data, tokenizer and settings loaded once per run (`tune` reuses them for every trial)."""

    splits: Splits
    task: Task
    tokenizer: Any
    max_length: int
    precision: str
    tokenized: Dict
    stats: Dict
    windows: Optional[Dict]

    @classmethod
    def load(cls, data: DataArgs, model: ModelArgs, train: TrainArgs, task: Optional[str] = None) -> "Prepared":
        return cls.from_splits(prepare(data, task), model, train)  # data first: its mistakes come before torch loads

    @classmethod
    def from_splits(cls, splits: Splits, model: ModelArgs, train: TrainArgs) -> "Prepared":
        precision = pick_precision(train.precision)
        chosen = get_task(splits.task).for_model(model)
        tokenizer = load_tokenizer(model)
        max_length = resolve_max_length(model, load_config(model), tokenizer)
        shown = splits.labels if len(splits.labels) <= 20 else f"{len(splits.labels)} labels ({', '.join(splits.labels[:5])}, ...)"
        log.info("%s: %s; examples: %s", chosen.output_noun, shown,
                 {k: len(v) for k, v in splits.as_dict().items()})
        windowed = model.long_texts == "windows" or chosen.always_windows
        overlap = model.window_overlap
        if windowed and model.long_texts != "windows" and overlap >= max_length // 2:  # windows the task asked for: a fitting overlap
            overlap = max_length // 4
            log.info("%s task: long texts are read in windows of %d tokens, overlapping by %d", chosen.name, max_length, overlap)
        windows = {"overlap": overlap, "aggregation": model.window_aggregation} if windowed else None
        if windows and overlap >= max_length // 2:
            raise UserError(f"model.window_overlap {model.window_overlap} must be under half of max_length {max_length}")
        tokenized = {role: chosen.tokenize(splits.as_dict()[role], tokenizer, max_length, windows, train, role)
                     for role in ("train", "validation")}
        if windows:
            log.info("windows of %d tokens (overlap %d): %d training rows from %d texts", max_length, overlap,
                     len(tokenized["train"]), len(splits.train))
        stats = chosen.summarize_targets(chosen.targets_array(splits.train["labels"]), splits.labels)
        return cls(splits, chosen, tokenizer, max_length, precision, tokenized, stats, windows)

    def config(self, data: DataArgs, model: ModelArgs, train: TrainArgs, report: ReportArgs) -> RunConfig:
        return RunConfig(data=data, model=model, train=train, report=report, task=self.task.name, labels=self.splits.labels)


@dataclass
class Trained:
    trainer: Any
    stale: bool
    """The saved weights differ from the in-memory model (the task adjusted them, or the model is sharded)."""


def train_model(prep: Prepared, cfg: RunConfig, workdir: Path, checkpoint: Optional[str] = None,
                callbacks: Optional[list] = None) -> Trained:
    """Train in `workdir`; the main process leaves model/, logs/history.json and metrics.json's train section there
    and fills cfg.resolved. The Trainer's state tells how training went."""
    import torch
    import transformers
    from transformers import set_seed

    set_seed(cfg.train.seed)
    net = prep.task.load_model(cfg.model, prep.splits.labels, prep.max_length, prep.stats)
    trainer = prep.task.build_trainer(net, prep.tokenizer, prep.splits.labels, prep.stats, prep.tokenized, cfg.train,
                                      prep.precision, workdir, callbacks)
    engine = "FSDP" if trainer.is_fsdp_enabled else "DeepSpeed" if trainer.is_deepspeed_enabled else "DDP" if trainer.args.world_size > 1 else "single process"
    if cfg.train.fsdp and not trainer.is_fsdp_enabled:  # never ignore it silently
        raise UserError(f"train.fsdp: accelerate did not enable FSDP on {trainer.args.device.type}; drop train.fsdp here")
    if is_main():
        log.info("training on %s: %s, %d process(es)", trainer.args.device, engine, trainer.args.world_size)
    result = trainer.train(resume_from_checkpoint=checkpoint or None)
    run = RunDir(workdir)
    prep.tokenizer.model_max_length = prep.max_length  # so plain pipelines truncate like encoderfit does
    trainer.save_model(str(run.model.path))  # every process takes part (FSDP gathers); the main one writes
    if not is_main():
        return Trained(trainer, True)
    (run.model / "training_args.bin").unlink(missing_ok=True)  # a pickle; config.yaml has the settings
    adjusted = prep.task.after_training(run.model.path, prep.stats, trainer)
    pooling = getattr(trainer.model, "mode", None) if type(trainer.model).__name__ == "PooledClassifier" else None
    if pooling:  # a linear head on the pooled vector: written as a sentence-transformers directory
        from .pooling import save_sentence_classifier

        save_sentence_classifier(run.model.path, trainer.model, prep.max_length)
        adjusted = True
    pairs = bool(cfg.data.text_pair_column) and not prep.task.embeds  # an embedding model reads one text at a time
    run.model.write_info(ModelInfo(prep.task.name, prep.max_length, prep.splits.labels, pairs,
                                   windows=prep.windows))
    write_json(run.history_file, trainer.state.log_history)
    shutil.rmtree(run / RunDir.CHECKPOINTS, ignore_errors=True)
    cfg.resolved = {
        "max_length": prep.max_length,
        "precision": prep.precision,
        "device": str(trainer.args.device),
        "processes": trainer.args.world_size,
        "engine": engine,
        "examples": {k: len(v) for k, v in prep.splits.as_dict().items()},
        "splits": prep.splits.fingerprints(),  # eval re-reads the source only while it gives these same splits
        "target_stats": prep.stats,
        **({"pooling": pooling} if pooling else {}),
        "versions": {"encoderfit": __version__, "transformers": transformers.__version__, "torch": str(torch.__version__)},
    }
    run.save_config(cfg)
    run.write_metrics({"train": {
        "train_runtime_s": round(result.metrics.get("train_runtime", 0.0), 1),
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "final_train_loss": next((h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h), None),
        "resumed_from": Path(checkpoint).name if checkpoint else None,
        "best_checkpoint": {"metric": cfg.train.metric_for_best, "value": trainer.state.best_metric},
    }})
    sharded = bool(cfg.train.fsdp or cfg.train.deepspeed)  # sharded modules do not run whole in one process
    return Trained(trainer, adjusted or sharded)


def finish_run(prep: Prepared, cfg: RunConfig, workdir: Path, out: Path, model=None) -> Dict:
    """Evaluate the trained model in `workdir` (in memory when given, else from model/) and publish it as `out`."""
    from .evaluate import evaluate_run
    from .predict import Predictor
    from .tables import print_evaluation

    run = RunDir(workdir)
    predictor = Predictor(model, prep.tokenizer, run.model.info()) if model is not None else Predictor.from_pretrained(workdir)
    results = evaluate_run(run, cfg, predictor, prep.splits)
    publish_dir(workdir, out)
    print_evaluation(results, "test", prep.task, prep.splits.labels)
    return results


def fit(
    data: DataArgs = DataArgs(),
    model: ModelArgs = ModelArgs(),
    train: TrainArgs = TrainArgs(),
    report: ReportArgs = ReportArgs(),
    task: Optional[TaskName] = None,
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
        task: classification (one class per text), multilabel (a set of labels per text), regression (a number) or
            ner (a tag per word: token lists with tags, CoNLL files, or text with character spans; never inferred).
            Default: inferred from the label column (lists or --data.label_separator: multilabel; numbers that are
            not whole: regression; else classification), and stated in the log.
        output_dir: The run directory to write.
        overwrite: Replace OUTPUT_DIR if it already exists.
        resume: Continue an interrupted run from its newest complete checkpoint. Default (null): resume when the
            same config was interrupted before; true: insist on resuming; false: discard it and start over.
    """
    started = time.time()
    out = check_start(output_dir, overwrite, train)
    with exclusive(out, enabled=is_main(), overwrite=overwrite):  # one writer per output directory
        prep = Prepared.load(data, model, train, task)
        cfg = prep.config(data, model, train, report)

        workdir = partial_dir(out)
        keep = share(continues(workdir, cfg, resume) if is_main() else None)
        if is_main() and not keep:
            shutil.rmtree(workdir, ignore_errors=True)
            workdir.mkdir(parents=True)
            cfg.save(workdir)  # what a later run compares itself with before resuming
        barrier()
        try:
            if keep and trained_already(workdir):
                log.info("%s holds a trained model whose evaluation did not finish: evaluating it", workdir)
                cfg, model = RunConfig.load(workdir), None
            elif train.seeds > 1:
                from .seeds import train_seeds

                model = train_seeds(prep, cfg, workdir)
            else:
                checkpoint = share(str(resume_point(workdir, bool(resume)) or "") if is_main() and keep else "")
                trained = train_model(prep, cfg, workdir, checkpoint or None)
                model = None if trained.stale else trained.trainer.model
            if not is_main():
                return out
            finish_run(prep, cfg, workdir, out, model)
        except BaseException as err:
            if is_main():
                _abandon(workdir, interrupted=not isinstance(err, Exception))
            raise
        log.info("run written to %s (%.0f s)", out, time.time() - started)
        return out
