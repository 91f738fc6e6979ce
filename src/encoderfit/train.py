"""`encoderfit train`: fine-tune an encoder with the transformers Trainer and write a run directory.

Run directory (built in a hidden .NAME.partial directory, renamed into place when complete):
    model/         save_pretrained weights (safetensors), config with id2label, tokenizer
    config.yaml    the resolved run configuration; eval/predict read it back
    metrics.json   validation/test metrics, calibration, coverage sweep, threshold, baseline, training time
    predictions/   validation.jsonl and test.jsonl: text, label, logits (the report is rebuilt from these)
    label_noise.csv  training examples whose label the model contradicts with high confidence
    report.html    the self-contained visual report
    logs/          TensorBoard events and history.json (the Trainer's log history)
The model directory also holds calibration.json (temperature, threshold) and README.md (the model card).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Dict

import numpy as np
import torch
import transformers
from transformers import (
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    Trainer,
    TrainingArguments,
    set_seed,
)

from . import __version__
from .config import DataArgs, ModelArgs, ReportArgs, RunConfig, TrainArgs
from .data import LABEL, Splits, prepare, tokenize
from .errors import UserError
from .evaluate import evaluate_run
from .metrics import trainer_metrics
from .files import partial_dir, publish_dir, write_json
from .modeling import load_classifier, load_config, load_tokenizer, pick_precision, resolve_max_length
from .predict import Classifier
from .tables import print_evaluation

log = logging.getLogger(__name__)


def _training_arguments(train: TrainArgs, precision: str, checkpoints: Path) -> TrainingArguments:
    if train.eval_steps is not None:
        strategy, every = "steps", train.eval_steps
    elif train.max_steps is not None:
        strategy, every = "steps", train.max_steps  # evaluate once, at the end
    else:
        strategy, every = "epoch", None
    metric = "eval_loss" if train.metric_for_best == "loss" else f"eval_{train.metric_for_best}"
    return TrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=train.epochs,
        max_steps=train.max_steps or -1,
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=train.eval_batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        learning_rate=train.learning_rate,
        weight_decay=train.weight_decay,
        warmup_steps=train.warmup_ratio,  # a float below 1 is a share of all steps
        lr_scheduler_type=train.lr_scheduler,
        adam_beta1=train.adam_beta1,
        adam_beta2=train.adam_beta2,
        adam_epsilon=train.adam_epsilon,
        max_grad_norm=train.max_grad_norm,
        seed=train.seed,
        data_seed=train.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        eval_strategy=strategy,
        save_strategy=strategy,
        eval_steps=every,
        save_steps=every,
        save_total_limit=1,  # with load_best_model_at_end the best checkpoint is kept as well
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=train.metric_for_best != "loss",
        logging_steps=train.logging_steps,
        logging_first_step=True,
        report_to=[r for r in train.report_to if r != "tensorboard"] or "none",
        train_sampling_strategy="group_by_length",  # batches of similar length: little padding
        length_column_name="length",
        dataloader_num_workers=train.num_workers,
        torch_compile=train.torch_compile,
        disable_tqdm=False,
    )


def balanced_weights(labels: np.ndarray, num_labels: int) -> torch.Tensor:
    """n / (k * count_c): each class contributes equally to the loss (scikit-learn's "balanced")."""
    counts = np.bincount(labels, minlength=num_labels).astype(np.float64)
    return torch.tensor(len(labels) / (num_labels * np.maximum(counts, 1)), dtype=torch.float32)


def _class_weighted_loss(labels: np.ndarray, num_labels: int):
    weights = balanced_weights(labels, num_labels)
    log.info("class weights (balanced): %s", np.round(weights.numpy(), 3).tolist())

    def loss(outputs, labels, num_items_in_batch=None):
        logits = outputs.logits.float()
        return torch.nn.functional.cross_entropy(logits, labels, weight=weights.to(logits.device))

    return loss


def _callbacks(train: TrainArgs, logs: Path) -> list:
    callbacks = []
    if "tensorboard" in train.report_to:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        callbacks.append(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(logs))))
    if train.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=train.early_stopping_patience))
    return callbacks


def build_trainer(net, tokenizer, splits: Splits, tokenized: Dict, train: TrainArgs, precision: str, workdir: Path) -> Trainer:
    args = _training_arguments(train, precision, workdir / "checkpoints")
    loss = _class_weighted_loss(np.asarray(splits.train[LABEL]), len(splits.labels)) if train.class_weights == "balanced" else None
    return Trainer(
        model=net,
        args=args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["validation"].sort("length"),  # sorted: evaluation batches barely pad either
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if torch.cuda.is_available() else None),
        compute_metrics=trainer_metrics,
        compute_loss_func=loss,
        callbacks=_callbacks(train, workdir / "logs"),
    )


def fit(
    data: DataArgs = DataArgs(),
    model: ModelArgs = ModelArgs(),
    train: TrainArgs = TrainArgs(),
    report: ReportArgs = ReportArgs(),
    output_dir: Path = Path("runs/latest"),
    overwrite: bool = False,
) -> Path:
    """Fine-tune a transformer encoder for text classification; evaluate it on validation and test.

    Writes OUTPUT_DIR with model/ (loads with transformers.pipeline), config.yaml, metrics.json, predictions/,
    label_noise.csv, report.html and logs/.

    Args:
        data: Where the labelled text comes from and how it is split.
        model: Which encoder to fine-tune.
        train: Optimisation and evaluation settings.
        report: Abstention threshold, baseline and error-analysis settings of the final evaluation.
        output_dir: The run directory to write.
        overwrite: Replace OUTPUT_DIR if it already exists.
    """
    started = time.time()
    out = Path(output_dir)
    if out.exists() and not overwrite:
        raise UserError(f"output_dir: {out} already exists; pass --overwrite true to replace it, or choose another --output_dir")
    precision = pick_precision(train.precision)
    splits = prepare(data)
    tokenizer = load_tokenizer(model)
    max_length = resolve_max_length(model, load_config(model), tokenizer)
    log.info("labels: %s; examples: %s", splits.labels, {k: len(v) for k, v in splits.as_dict().items()})

    workdir = partial_dir(out)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    try:
        set_seed(train.seed)
        net = load_classifier(model, splits.labels)
        tokenized = {role: tokenize(splits.as_dict()[role], tokenizer, max_length) for role in ("train", "validation")}
        trainer = build_trainer(net, tokenizer, splits, tokenized, train, precision, workdir)
        result = trainer.train()

        tokenizer.model_max_length = max_length  # so plain pipelines truncate like encoderfit does
        trainer.save_model(str(workdir / "model"))
        (workdir / "model" / "training_args.bin").unlink(missing_ok=True)  # a pickle; config.yaml has the settings
        write_json(workdir / "logs" / "history.json", trainer.state.log_history)
        shutil.rmtree(workdir / "checkpoints", ignore_errors=True)

        resolved = {
            "max_length": max_length,
            "precision": precision,
            "device": str(trainer.args.device),
            "examples": {k: len(v) for k, v in splits.as_dict().items()},
            "versions": {"encoderfit": __version__, "transformers": transformers.__version__, "torch": str(torch.__version__)},
        }
        cfg = RunConfig(data=data, model=model, train=train, report=report, labels=splits.labels, resolved=resolved)
        cfg.save(workdir)
        write_json(workdir / "metrics.json", {"train": {
            "train_runtime_s": round(result.metrics.get("train_runtime", 0.0), 1),
            "steps": trainer.state.global_step,
            "epochs": trainer.state.epoch,
            "train_loss": result.training_loss,
            "best_checkpoint": {"metric": train.metric_for_best, "value": trainer.state.best_metric},
        }})
        results = evaluate_run(workdir, cfg, Classifier(trainer.model, tokenizer, max_length), splits)
        publish_dir(workdir, out)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    print_evaluation(results, "test", splits.labels)
    log.info("run written to %s (%.0f s)", out, time.time() - started)
    return out
