"""Run configuration: three small groups of settings, validated on creation, saved beside every model.

The CLI (`encoderfit train --help`) is generated from these dataclasses, so each field's
docstring is its help text and each default is written once, here.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Literal, Optional

import yaml

from .errors import UserError, closest

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
LEGACY_TASK = "classification"  # the only task before encoderfit 0.2: what a run or model directory without one holds
LOGGERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}  # logger -> the package it needs
GROUPS = ("data", "model", "train", "report")
# Settings renamed since a run directory could have been written: old dotted key -> new one. An old run directory
# then still loads, with a warning.
RENAMED: Dict[str, str] = {}


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


@dataclass
class DataArgs:
    """Where the labelled text comes from and how it is split."""

    source: Optional[str] = None
    """A local CSV/TSV/JSON/JSONL/Parquet file, a directory of per-split files (train.csv, validation.csv, ...),
    a datasets.save_to_disk directory, a Hugging Face hub dataset name, or a built-in recipe (bbc-news)."""
    config_name: Optional[str] = None
    """Configuration name of a hub dataset (the second argument of datasets.load_dataset)."""
    text_column: str = "text"
    """Column holding the text to classify."""
    text_pair_column: Optional[str] = None
    """Optional second text column, for sentence-pair tasks (NLI, paraphrase)."""
    join_columns: Optional[List[str]] = None
    """Build the text from these columns, joined by a blank line, empty ones skipped (e.g. [title, text]: a headline
    and its body); predict joins the same columns of a table input."""
    label_column: str = "label"
    """Column holding the target: a class (strings or integers), a list of labels (multilabel), or a number
    (regression)."""
    label_separator: Optional[str] = None
    """Multilabel: the character joining several labels in one string ("news|sport"); implies --task multilabel."""
    target_range: Optional[List[float]] = None
    """Regression: [low, high] of valid targets; a target outside is an error, predictions and intervals are clipped
    to it."""
    tag_scheme: Optional[Literal["io", "iob1", "iob2", "bioes"]] = None
    """Token classification: the scheme the tags are written in (BILOU reads as bioes). Default: detected from the
    tags; io also accepts bare type names (PER, LOC) as tags."""
    documents: bool = False
    """Token classification: read the sentences of each document (CoNLL's -DOCSTART- lines, or the hub's one-token
    -DOCSTART- rows) as one text, so every word is read with its neighbouring sentences (in windows of max_length):
    the document context of BERT's CoNLL-2003 result (Devlin et al. 2019). Predict then takes whole documents too."""
    invalid_tags: Literal["repair", "error"] = "repair"
    """Token classification: a tag its scheme does not allow there (an I- with no entity of its type before it):
    repair (read it as starting an entity, and log how many rows had one) or error (name the first such row)."""
    train_split: str = "train"
    """Name of the training split."""
    validation_split: str = "validation"
    """Name of the validation split; made from train (stratified, seeded) when the source has none."""
    test_split: str = "test"
    """Name of the test split; made from train (stratified, seeded) when the source has none."""
    validation_size: float = 0.1
    """Share of all examples held out for validation when the split has to be made."""
    test_size: float = 0.1
    """Share of all examples held out for test when the split has to be made."""
    split_seed: int = 42
    """Seed for making splits (independent of the training seed)."""
    dedupe: bool = True
    """Drop exact duplicate texts before making splits, so no text sits in two splits."""
    max_train_samples: Optional[int] = None
    """Use at most this many training examples (a seeded random subset); for quick runs."""

    def __post_init__(self) -> None:
        for name in ("validation_size", "test_size"):
            value = getattr(self, name)
            _require(0 < value < 1, f"data.{name} must be between 0 and 1 (got {value})")
        total = self.validation_size + self.test_size
        _require(total < 0.9, f"data.validation_size + data.test_size must leave data to train on (got {total:g})")
        _require(
            self.max_train_samples is None or self.max_train_samples > 0,
            f"data.max_train_samples must be a positive integer (got {self.max_train_samples})",
        )
        _require(self.label_column != self.text_column,
                 f"data.label_column and data.text_column are both '{self.text_column}'; name the label column with --data.label_column")
        _require(self.text_pair_column not in (self.text_column, self.label_column),
                 f"data.text_pair_column '{self.text_pair_column}' is also the text or label column; name the second text's column")
        _require(self.join_columns is None or (len(self.join_columns) >= 2 and len(set(self.join_columns)) == len(self.join_columns)),
                 f"data.join_columns must name at least two different columns (got {self.join_columns})")
        _require(self.label_separator is None or len(self.label_separator) > 0, "data.label_separator must not be empty")
        _require(self.target_range is None or (len(self.target_range) == 2 and self.target_range[0] < self.target_range[1]),
                 f"data.target_range must be [low, high] with low < high (got {self.target_range})")


@dataclass
class ModelArgs:
    """Which encoder to fine-tune and how it is built."""

    name_or_path: str = "answerdotai/ModernBERT-base"
    """Hugging Face model id or local directory of any encoder (ModernBERT, BERT, RoBERTa, DeBERTa, ...)."""
    max_length: Optional[int] = None
    """Tokens per input (never padded to it). Default: min(512, the model's limit)."""
    long_texts: Literal["truncate", "windows"] = "truncate"
    """Texts longer than max_length: truncate (keep the first max_length tokens), or windows: cut them into
    overlapping windows of max_length tokens, predict each, and aggregate the logits per text (in evaluation,
    predict, serve and export; training uses the windows as train.window_training says)."""
    window_overlap: int = 64
    """With windows: tokens that consecutive windows share (context on both sides of every cut)."""
    window_aggregation: Literal["mean", "max"] = "mean"
    """With windows: how a text's window logits become its logits: their mean, or their element-wise maximum."""
    attn_implementation: Optional[Literal["eager", "sdpa", "flash_attention_2"]] = None
    """Attention kernel. Default: flash_attention_2 on a CUDA GPU when flash-attn is installed, else sdpa."""
    classifier_pooling: Optional[Literal["cls", "mean"]] = None
    """What a sequence-level head reads: the [CLS] token or the mean of all tokens. Default: ModernBERT's own config;
    for a sentence-transformers checkpoint, the pooling it was trained with (its 1_Pooling); other encoders, their
    architecture's head. Non-ModernBERT models given a pooling are saved as sentence-transformers directories."""
    attention_dropout: Optional[float] = 0.0
    """Dropout on attention probabilities while fine-tuning. 0 (ModernBERT's own value) keeps PyTorch's fused
    attention kernel, about 2x faster on CPU than BERT's 0.1; null keeps the model's value."""
    head: Literal["linear", "embedding"] = "linear"
    """Classification: linear (fine-tune the whole model with an output layer) or embedding (SetFit: tune the model
    as a sentence encoder on pairs made from the labels, then fit a logistic regression on its embeddings; better with
    a few labelled examples per class)."""
    revision: Optional[str] = None
    """Model revision (branch, tag or commit) on the hub."""
    trust_remote_code: bool = False
    """Run code shipped with the model. Off by default: only enable for models you trust."""

    def __post_init__(self) -> None:
        _require(
            self.max_length is None or self.max_length >= 8,
            f"model.max_length must be at least 8 tokens (got {self.max_length})",
        )
        _require(
            self.attention_dropout is None or 0 <= self.attention_dropout < 1,
            f"model.attention_dropout must be in [0, 1) (got {self.attention_dropout})",
        )
        _require(self.window_overlap >= 0, f"model.window_overlap must be >= 0 (got {self.window_overlap})")
        _require(self.long_texts != "windows" or self.max_length is None or self.window_overlap < self.max_length // 2,
                 f"model.window_overlap {self.window_overlap} must be under half of model.max_length {self.max_length}")


@dataclass
class TrainArgs:
    """Optimisation and evaluation during training. Defaults follow the ModernBERT fine-tuning recipe."""

    epochs: float = 3.0
    """Passes over the training data (ignored when max_steps is set)."""
    max_steps: Optional[int] = None
    """Stop after this many optimizer steps instead of counting epochs."""
    batch_size: int = 16
    """Training examples per optimizer step, over all processes: with N processes (torchrun) each takes
    batch_size / N, so the same config gives the same optimisation on 1 or N devices."""
    eval_batch_size: int = 64
    """Examples per batch when evaluating during training."""
    gradient_accumulation_steps: int = 1
    """Steps whose gradients are summed before each optimizer update."""
    learning_rate: float = 5e-5
    """Peak learning rate (ModernBERT paper: 3e-5 to 8e-5)."""
    head_learning_rate: Optional[float] = None
    """Peak learning rate of a newly initialised task head (the layers outside the encoder), as setfit separates body
    and head. Default: learning_rate. A head starts from scratch while the encoder is pretrained."""
    weight_decay: float = 1e-5
    """Decoupled AdamW weight decay (the paper uses a tiny value)."""
    warmup_ratio: float = 0.1
    """Share of the training steps spent warming the learning rate up from 0."""
    lr_scheduler: Literal["linear", "cosine", "constant_with_warmup", "warmup_stable_decay"] = "linear"
    """Learning-rate schedule after warmup. warmup_stable_decay: held at the peak, then decayed to 0 over the last
    decay_ratio of the steps with ModernBERT's 1-sqrt shape (its trapezoid; the default of `encoderfit pretrain`)."""
    decay_ratio: float = 0.1
    """warmup_stable_decay: share of the training steps spent decaying the learning rate to 0 at the end."""
    adam_beta1: float = 0.9
    """AdamW beta1."""
    adam_beta2: float = 0.98
    """AdamW beta2 (ModernBERT recipe: 0.98)."""
    adam_epsilon: float = 1e-6
    """AdamW epsilon (ModernBERT recipe: 1e-6)."""
    max_grad_norm: float = 1.0
    """Clip the gradient norm to this value (0 disables clipping)."""
    seed: int = 42
    """Seed for initialisation, shuffling and dropout."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Numeric precision. auto: bf16 on GPUs that support it, else fp32 (never autocast on CPU)."""
    eval_steps: Optional[int] = None
    """Evaluate (and checkpoint) every N steps. Default: at the end of each epoch."""
    save_steps: Optional[int] = None
    """Also checkpoint every N optimizer steps (a checkpoint is always written at each evaluation), so a crash
    loses at most N steps. Re-running the same command resumes from the newest complete checkpoint."""
    keep_checkpoints: int = 2
    """Keep the newest K checkpoints while training (the best one is kept as well); all are deleted once the run
    is complete."""
    metric_for_best: str = "loss"
    """Validation metric that chooses the checkpoint kept as the final model: loss (every task), or one of the run's
    task's metrics (accuracy, f1_macro, f1_micro, f1, spearman, ...: a name the task lacks is refused with its list).
    loss is continuous, so less noisy than accuracy or F1 on small validation sets (where one example can flip the
    choice)."""
    early_stopping_patience: Optional[int] = None
    """Stop when the validation metric has not improved for this many evaluations."""
    class_weights: Literal["none", "balanced"] = "none"
    """balanced: weight the loss by inverse class frequency (classification), or each label's positives by its
    negatives/positives ratio, capped at 100 (multilabel), for imbalanced labels."""
    window_training: Literal["all", "first"] = "all"
    """With model.long_texts windows: train on every window of a long text (each with the text's target) or on its
    first window only."""
    subword_labels: Literal["all", "first"] = "all"
    """Token classification: train each word's tag on all its sub-words (later pieces get the I- tag, so the plain
    pipeline's "simple" aggregation, which groups sub-words, finds the same entities as encoderfit), or on the first
    only (the rest ignored in the loss, as transformers' run_ner.py). Prediction reads each word's first sub-word."""
    seeds: int = 1
    """Train this many models on the same split, with seeds seed, seed+1, ...: the report gives each validation and
    test metric's mean ± sd over them, and the run keeps the best on validation (or, with ensemble, all of them)."""
    ensemble: bool = False
    """With seeds > 1, ship every member as one model: their weights averaged (a model soup: one forward pass, a plain
    transformers model) when that scores at least as well on validation as averaging their logits, else the logit
    average (one forward pass per member)."""
    regression_loss: Literal["mse", "huber"] = "mse"
    """Regression: squared error, or Huber (less pulled by outliers), on standardized targets."""
    embedding_loss: Literal["auto", "mnrl", "cosent", "angle"] = "auto"
    """Embeddings: mnrl (multiple-negatives ranking: the batch's other documents are the negatives) for pairs and
    triplets, cosent or angle for scored pairs; auto picks by the data's shape."""
    contrastive_mini_batch: Optional[int] = None
    """Embeddings with mnrl: embed each batch in chunks of this many (GradCache), so batch_size (the number of
    in-batch negatives) can be larger than memory allows; the result is the same as one big batch."""
    contrastive_pairs: int = 10
    """Classification with model.head embedding: pairs made per training text (half with a text of its class,
    half with another class's), for the contrastive phase."""
    matryoshka_dims: Optional[List[int]] = None
    """Embeddings: also train truncations of the vector to these sizes (Matryoshka), e.g. [384, 256, 128, 64]."""
    logging_steps: int = 10
    """Log loss and learning rate every N steps."""
    report_to: List[str] = field(default_factory=lambda: ["tensorboard"])
    """Loggers: any of tensorboard, wandb, mlflow (the latter two need their packages); [] for none."""
    num_workers: int = 0
    """Data-loader worker processes."""
    torch_compile: bool = False
    """Compile the model with torch.compile (GPU with triton; slower to start, faster per step)."""
    fsdp: bool = False
    """Shard model, gradients and optimizer state over the GPUs with FSDP2 (launch with torchrun or accelerate)."""
    fsdp_config: Optional[dict] = None
    """FSDP settings (the Trainer's `fsdp_config`), e.g. {transformer_layer_cls_to_wrap: [ModernBertEncoderLayer],
    reshard_after_forward: true}."""
    deepspeed: Optional[str] = None
    """Path to a DeepSpeed JSON config (ZeRO stage, offload); needs the deepspeed package and GPUs."""

    def __post_init__(self) -> None:
        positive = ("batch_size", "eval_batch_size", "gradient_accumulation_steps", "logging_steps")
        for name in positive:
            value = getattr(self, name)
            _require(value >= 1, f"train.{name} must be at least 1 (got {value})")
        _require(self.learning_rate > 0, f"train.learning_rate must be > 0 (got {self.learning_rate:g})")
        _require(self.head_learning_rate is None or self.head_learning_rate > 0,
                 f"train.head_learning_rate must be > 0 (got {self.head_learning_rate})")
        _require(self.epochs > 0, f"train.epochs must be > 0 (got {self.epochs:g})")
        _require(self.max_steps is None or self.max_steps > 0, f"train.max_steps must be > 0 (got {self.max_steps})")
        _require(self.eval_steps is None or self.eval_steps > 0, f"train.eval_steps must be > 0 (got {self.eval_steps})")
        _require(0 <= self.warmup_ratio < 1, f"train.warmup_ratio must be in [0, 1) (got {self.warmup_ratio:g})")
        _require(0 < self.decay_ratio <= 1 - self.warmup_ratio,
                 f"train.decay_ratio must be in (0, 1 - warmup_ratio] (got {self.decay_ratio:g})")
        _require(self.weight_decay >= 0, f"train.weight_decay must be >= 0 (got {self.weight_decay:g})")
        _require(self.max_grad_norm >= 0, f"train.max_grad_norm must be >= 0 (got {self.max_grad_norm:g})")
        _require(self.save_steps is None or self.save_steps > 0, f"train.save_steps must be > 0 (got {self.save_steps})")
        _require(self.keep_checkpoints >= 1, f"train.keep_checkpoints must be at least 1 (got {self.keep_checkpoints})")
        _require(self.contrastive_mini_batch is None or self.contrastive_mini_batch >= 1,
                 f"train.contrastive_mini_batch must be at least 1 (got {self.contrastive_mini_batch})")
        _require(not self.matryoshka_dims or min(self.matryoshka_dims) >= 1, f"train.matryoshka_dims must be positive (got {self.matryoshka_dims})")
        _require(self.seeds >= 1, f"train.seeds must be at least 1 (got {self.seeds})")
        _require(not self.ensemble or self.seeds > 1, "train.ensemble needs train.seeds > 1 (the members to ensemble)")
        _require(self.num_workers >= 0, f"train.num_workers must be >= 0 (got {self.num_workers})")
        _require(
            self.early_stopping_patience is None or self.early_stopping_patience >= 1,
            f"train.early_stopping_patience must be at least 1 (got {self.early_stopping_patience})",
        )
        for name in self.report_to:
            _require(name in LOGGERS, f"train.report_to: unknown logger '{name}'; choose from {sorted(LOGGERS)}")

    def check_runnable(self) -> None:
        """What training needs from this machine (not checked when a saved run is read back elsewhere)."""
        _require(self.deepspeed is None or Path(self.deepspeed).is_file(),
                 f"train.deepspeed: {self.deepspeed} is not a file; pass the path of a DeepSpeed JSON config")
        for name in self.report_to:
            package = LOGGERS[name]
            _require(importlib.util.find_spec(package) is not None,
                     f"train.report_to: {name} needs the package '{package}', which is not installed; "
                     f"`pip install {package}`, or drop {name} from --train.report_to")


@dataclass
class ReportArgs:
    """What evaluation decides and reports: abstention threshold, baseline, error analysis."""

    target_accuracy: Optional[float] = 0.99
    """Pick the lowest confidence threshold whose accuracy on answered validation texts reaches this; predict and
    serve can then answer UNKNOWN below it. null: no threshold."""
    baseline: bool = True
    """Train a TF-IDF + logistic-regression baseline on the same split and report it beside the model."""
    coverage: float = 0.9
    """Regression: the share of true values the prediction intervals should cover (split-conformal, on validation)."""
    noise_confidence: float = 0.9
    """Flag a training example as suspected label noise when the model gives another label at least this probability."""
    max_examples: int = 20
    """Rows in the report's error tables (most confident mistakes, suspected label noise)."""

    def __post_init__(self) -> None:
        _require(
            self.target_accuracy is None or 0 < self.target_accuracy <= 1,
            f"report.target_accuracy must be in (0, 1] (got {self.target_accuracy})",
        )
        _require(0.5 <= self.noise_confidence < 1, f"report.noise_confidence must be in [0.5, 1) (got {self.noise_confidence})")
        _require(0 < self.coverage < 1, f"report.coverage must be in (0, 1) (got {self.coverage})")
        _require(self.max_examples >= 1, f"report.max_examples must be at least 1 (got {self.max_examples})")


@dataclass
class ReportOverrides:
    """Report settings to change when re-evaluating a run: each one given replaces the run's own, the others stay."""

    target_accuracy: Optional[float] = None
    """Replace report.target_accuracy; 0 turns the abstention threshold off."""
    baseline: Optional[bool] = None
    """Replace report.baseline."""
    coverage: Optional[float] = None
    """Replace report.coverage (regression prediction intervals)."""
    noise_confidence: Optional[float] = None
    """Replace report.noise_confidence."""
    max_examples: Optional[int] = None
    """Replace report.max_examples."""

    def apply(self, report: ReportArgs) -> ReportArgs:
        """`report` with the settings given here (validated as any ReportArgs)."""
        changes = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        if changes.get("target_accuracy") == 0:
            changes["target_accuracy"] = None
        return dataclasses.replace(report, **changes)


class SavedConfig:
    """A run's settings as config.yaml: the one file later stages (and a resumed run) read back."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, directory: Path) -> Path:
        path = Path(directory) / CONFIG_FILE
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


@dataclass
class RunConfig(SavedConfig):
    """Everything a run was made with, plus what was resolved at run time (task, labels, max_length, precision)."""

    data: DataArgs
    model: ModelArgs
    train: TrainArgs
    report: ReportArgs = field(default_factory=ReportArgs)
    task: str = LEGACY_TASK
    labels: List[str] = field(default_factory=list)
    resolved: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict, where: str = "config") -> "RunConfig":
        """Build from a saved mapping. Keys this version does not know are dropped with a warning (renamed ones are
        mapped); one that looks like a misspelling of a missing key is an error, since its meaning is unclear."""
        if not isinstance(raw, dict):
            raise UserError(f"{where}: expected a mapping of settings, found {type(raw).__name__}; restore the file or re-train")
        groups = {}
        for group, kind in (("data", DataArgs), ("model", ModelArgs), ("train", TrainArgs), ("report", ReportArgs)):
            values = dict(raw.get(group) or {})
            groups[group] = _build(kind, group, _known(kind, group, values, where), where)
        extra = sorted(set(raw) - set(GROUPS) - {"task", "labels", "resolved"})
        if extra:
            log.warning("warning: %s: ignoring unknown top-level key(s) %s (written by another encoderfit version?)", where, extra)
        return cls(**groups, task=str(raw.get("task") or LEGACY_TASK), labels=list(raw.get("labels") or []),
                   resolved=dict(raw.get("resolved") or {}))

    @classmethod
    def load(cls, run_dir: Path, check: Optional[Callable[[dict, str], None]] = None) -> "RunConfig":
        """A run directory's config.yaml; `check(raw, where)` first sees the saved mapping (the run directory asks the
        task registry whether the run is a fine-tuning one: the config layer knows no tasks)."""
        path = Path(run_dir) / CONFIG_FILE
        if not path.is_file():
            raise UserError(f"{run_dir}: not a run directory ({CONFIG_FILE} is missing); pass the directory that `encoderfit train` wrote")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            reason = getattr(err, "problem", None) or type(err).__name__
            raise UserError(f"{path}: not valid YAML ({reason}{where}); restore the file or re-train the run") from None
        if check is not None and isinstance(raw, dict):
            check(raw, str(path))
        return cls.from_dict(raw or {}, str(path))


def _known(kind, group: str, values: dict, where: str) -> dict:
    """The settings of one group that this version knows, renamed ones mapped to their new names."""
    fields = {f.name for f in dataclasses.fields(kind)}
    for key in sorted(set(values) - fields):
        new = RENAMED.get(f"{group}.{key}", "")
        if new.startswith(f"{group}.") and new.split(".", 1)[1] in fields:
            log.warning("warning: %s: %s.%s is now %s", where, group, key, new)
            values.setdefault(new.split(".", 1)[1], values.pop(key))
            continue
        hint = closest(key, sorted(fields - set(values)))
        if hint:
            raise UserError(f"{where}: unknown key {group}.{key}{hint}; rename it in the file")
        log.warning("warning: %s: ignoring unknown key %s.%s (written by another encoderfit version?)", where, group, key)
        values.pop(key)
    return values


def _build(kind, group: str, values: dict, where: str):
    try:
        return kind(**values)
    except UserError as err:
        raise UserError(f"{where}: {err}") from None
    except TypeError as err:
        raise UserError(f"{where}: the {group} settings are malformed ({err}); restore the file or re-train") from None
