"""One model trained in a directory: the run's data, tokenizer and settings loaded once (`Prepared`, which tune and
cross-validation reuse), the Trainer built by the task, and what a finished training leaves (model/, the history, the
train section of metrics.json, the resolved settings in config.yaml). Resuming starts from `resume_point`. The
decisions around it (a new run or a resumed one, seeds, publishing) are train.py's."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, Optional

from .. import __version__
from ..core.checkpoints import checkpoints_in, newest_complete
from ..core.args import DataArgs, ModelArgs, ReportArgs, TrainArgs
from ..core.runconfig import RunConfig
from ..core.device import keep_freed_memory, pick_precision
from ..core.distributed import is_main
from ..core.errors import UserError
from ..core.files import write_json
from ..models.loading import load_config, load_tokenizer, resolve_max_length
from ..models.packing import enable_packing
from .rundir import ModelInfo, RunDir
from .splits import Splits, prepare
from ..tasks import Task, task_for

log = logging.getLogger(__name__)


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
    distill: Optional[Any] = None
    """DistillArgs when the training rows carry a teacher's outputs (`encoderfit distill`)."""

    @classmethod
    def load(cls, data: DataArgs, model: ModelArgs, train: TrainArgs, task: Optional[str] = None,
             options: Optional[Dict[str, dict]] = None) -> "Prepared":
        return cls.from_splits(prepare(data, task, options), model, train)  # data first: its mistakes come before torch loads

    @classmethod
    def from_splits(cls, splits: Splits, model: ModelArgs, train: TrainArgs) -> "Prepared":
        precision = pick_precision(train.precision)
        chosen = task_for(splits.task, model, splits.options)
        if train.linear_probe and not chosen.modeling.probes:
            if model.head != "linear":  # the task itself probes; this head is fitted its own way
                raise UserError(f"train.linear_probe: model.head {model.head} fits its head on the tuned embeddings after "
                                "training, so there is no output layer to probe first; drop one of the two")
            raise UserError(f"train.linear_probe: the {chosen.name} task has no per-text output layer to probe; drop it")
        if train.metric_for_best not in chosen.metrics_for_best:  # before the model loads: the task knows its metrics
            raise UserError(f"train.metric_for_best: '{train.metric_for_best}' is not a metric of the {chosen.name} task; "
                            f"choose from {sorted(chosen.metrics_for_best)}")
        tokenizer = load_tokenizer(model)
        max_length = resolve_max_length(model, load_config(model), tokenizer)
        shown = splits.labels if len(splits.labels) <= 20 else f"{len(splits.labels)} labels ({', '.join(splits.labels[:5])}, ...)"
        log.info("%s: %s; examples: %s", chosen.output_noun, shown,
                 {k: len(v) for k, v in splits.as_dict().items()})
        windowed = model.long_texts == "windows" or chosen.always_windows
        overlap = model.window_overlap
        if windowed and model.long_texts != "windows" and overlap >= max_length // 2:  # windows the task asked for: a fitting overlap
            if overlap != ModelArgs.window_overlap:  # one the user chose is refused, not replaced
                raise UserError(f"model.window_overlap {overlap} must be under half of max_length {max_length} (the "
                                f"{chosen.name} task reads long texts in overlapping windows); e.g. --model.window_overlap {max_length // 4}")
            overlap = max_length // 4
            log.info("%s task: long texts are read in windows of %d tokens, overlapping by %d (the default model.window_overlap "
                     "%d is not under half of max_length; config.yaml records %d)", chosen.name, max_length, overlap,
                     model.window_overlap, overlap)
        windows = {"overlap": overlap, "aggregation": model.window_aggregation} if windowed else None
        if windows and overlap >= max_length // 2:
            raise UserError(f"model.window_overlap {model.window_overlap} must be under half of max_length {max_length}")
        tokenized = {role: chosen.targets.tokenize(splits.as_dict()[role], tokenizer, max_length, windows, train, role)
                     for role in ("train", "validation")}
        if windows:
            log.info("windows of %d tokens (overlap %d): %d training rows from %d texts", max_length, overlap,
                     len(tokenized["train"]), len(splits.train))
        stats = chosen.targets.summarize_targets(chosen.targets.targets_array(splits.train["labels"]), splits.labels)
        return cls(splits, chosen, tokenizer, max_length, precision, tokenized, stats, windows)

    def config(self, data: DataArgs, model: ModelArgs, train: TrainArgs, report: ReportArgs) -> RunConfig:
        if self.windows and self.windows["overlap"] != model.window_overlap:  # the overlap used, not the default it replaced
            model = replace(model, window_overlap=self.windows["overlap"])
        if train.linear_probe is None:  # the task's default, recorded in config.yaml as what was done
            train = replace(train, linear_probe=default_probe(self.task, self.distill is not None))
        return RunConfig(data=self.splits.resolve(data), model=model, train=train, report=report, task=self.task.name,
                         labels=self.splits.labels, options=self.task.options_dict())


@dataclass
class Trained:
    trainer: Any
    stale: bool
    """The saved weights differ from the in-memory model (the task adjusted them, or the model is sharded)."""


def default_probe(task: Task, distilled: bool) -> bool:
    """What train.linear_probe left at null means for `task`, said in the log: on where the task probes by default
    (multi-label: a fresh head barely learns its rare labels), never for a student (it learns its teacher's outputs)."""
    on = task.modeling.probes and task.modeling.probes_by_default and not distilled
    if on:
        log.info("linear probe: on, the %s default (each output fitted on the frozen features first, LP-FT: rare labels "
                 "start trained); --train.linear_probe false turns it off", task.name)
    return on


def fit_probe(prep: Prepared, net, train: TrainArgs) -> Dict:
    """train.linear_probe: the model's new output layer fitted on the frozen features of the training split, with the
    task's own loss (models/probe.py); what was done, for the log."""
    from ..models.probe import probe_head

    modeling = prep.task.modeling
    return probe_head(net, prep.task.targets.num_outputs(prep.splits.labels), prep.tokenized, modeling.collator(prep.tokenizer),
                      modeling.loss(prep.stats, train), train.seed)


def train_model(prep: Prepared, cfg: RunConfig, workdir: Path, checkpoint: Optional[str] = None,
                callbacks: Optional[list] = None) -> Trained:
    """Train in `workdir`; the main process leaves model/, logs/history.json and metrics.json's train section there
    and fills cfg.resolved. The Trainer's state tells how training went."""
    import torch
    import transformers
    from transformers import set_seed

    set_seed(cfg.train.seed)
    net = prep.task.modeling.load_model(cfg.model, prep.splits.labels, prep.max_length, prep.stats)
    packed = enable_packing(net, cfg.train.packing, cfg.model.attn_implementation)  # models/packing.py; logs the path
    if cfg.train.linear_probe and not checkpoint and not getattr(net, "head_is_new", True):
        log.info("linear probe: skipped, %s's output layer is already trained for these labels and is kept",
                 cfg.model.name_or_path)
    elif cfg.train.linear_probe and not checkpoint:  # a resumed run's checkpoint replaces the head anyway
        probed = fit_probe(prep, net, cfg.train)
        log.info("linear probe: the output layer fitted on the frozen features of %d training rows (%d features), L2 "
                 "penalty %g chosen by validation loss %s, %.1f s", probed["rows"], probed["features"], probed["penalty"],
                 probed["validation_loss"], probed["seconds"])
    distill = {"distill": prep.distill} if prep.distill is not None else {}
    trainer = prep.task.modeling.build_trainer(net, prep.tokenizer, prep.splits.labels, prep.stats, prep.tokenized, cfg.train,
                                               prep.precision, workdir, callbacks, **distill)
    engine = "FSDP" if trainer.is_fsdp_enabled else "DeepSpeed" if trainer.is_deepspeed_enabled else "DDP" if trainer.args.world_size > 1 else "single process"
    if cfg.train.fsdp and not trainer.is_fsdp_enabled:  # never ignore it silently
        raise UserError(f"train.fsdp: accelerate did not enable FSDP on {trainer.args.device.type}; drop train.fsdp here")
    if is_main():
        log.info("training on %s: %s, %d process(es)", trainer.args.device, engine, trainer.args.world_size)
    keep_freed_memory(trainer.args.device.type, cfg.train.keep_cpu_memory)
    result = trainer.train(resume_from_checkpoint=checkpoint or None)
    run = RunDir(workdir)
    prep.tokenizer.model_max_length = prep.max_length  # so plain pipelines truncate like encoderfit does
    trainer.save_model(str(run.model.path))  # every process takes part (FSDP gathers); the main one writes
    if not is_main():
        return Trained(trainer, True)
    (run.model / "training_args.bin").unlink(missing_ok=True)  # a pickle; config.yaml has the settings
    adjusted = prep.task.modeling.after_training(run.model.path, prep.stats, trainer)
    pooling = getattr(trainer.model, "mode", None) if type(trainer.model).__name__ == "PooledClassifier" else None
    if pooling:  # a linear head on the pooled vector: written as a sentence-transformers directory
        from ..models.pooling import save_sentence_classifier

        save_sentence_classifier(run.model.path, trainer.model, prep.max_length)
        adjusted = True
    pairs = "text_pair" in prep.splits.train.column_names and not prep.task.supports("embed")  # an embedding model reads one text at a time
    run.model.write_info(ModelInfo(prep.task.name, prep.max_length, prep.splits.labels, pairs,
                                   windows=prep.windows, options=prep.task.options_dict()))
    write_json(run.history_file, trainer.state.log_history)
    shutil.rmtree(run / RunDir.CHECKPOINTS, ignore_errors=True)
    cfg.resolved = {
        "max_length": prep.max_length,
        "precision": prep.precision,
        "device": str(trainer.args.device),
        "processes": trainer.args.world_size,
        "engine": engine,
        "packing": packed,
        "examples": {k: len(v) for k, v in prep.splits.as_dict().items()},
        "splits": prep.splits.fingerprints(),  # eval re-reads the source only while it gives these same splits
        "target_stats": prep.stats,
        **({"pooling": pooling} if pooling else {}),
        "versions": {"encoderfit": __version__, "transformers": transformers.__version__, "torch": str(torch.__version__)},
    }
    run.save_config(cfg)
    run.write_metrics({"train": {
        "train_runtime_s": round(result.metrics.get("train_runtime", 0.0), 1),
        **(trainer.timings.summary() if hasattr(trainer, "timings") else {}),  # evaluation_s, checkpoint_s: inside it
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "final_train_loss": next((h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h), None),
        "resumed_from": Path(checkpoint).name if checkpoint else None,
        "best_checkpoint": {"metric": cfg.train.metric_for_best, "value": trainer.state.best_metric},
    }})
    sharded = bool(cfg.train.fsdp or cfg.train.deepspeed)  # sharded modules do not run whole in one process
    return Trained(trainer, adjusted or sharded)
