"""Run configuration: the groups of settings (data, model, train, report), validated on creation; a task's own
settings live with the task (tasks/*: `Options`), and runconfig.py saves and reads them all as config.yaml.

The CLI (`encoderfit train --help`) is generated from these dataclasses, so each field's
docstring is its help text and each default is written once, here.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Literal, Optional, Union

from .errors import UserError

LOGGERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}  # logger -> the package it needs


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
    """Optional second text column, for sentence-pair tasks (NLI, paraphrase). Default: inferred from well-known
    names (text_pair beside text; sentence1/sentence2, premise/hypothesis ... when there is no text column), logged."""
    join_columns: Optional[List[str]] = None
    """Build the text from these columns, joined by a blank line, empty ones skipped (e.g. [title, text]: a headline
    and its body); predict joins the same columns of a table input."""
    label_column: str = "label"
    """Column holding the target: a class (strings or integers), a list of labels (multilabel), or a number
    (regression)."""
    label_separator: Optional[str] = None
    """Multilabel: the character joining several labels in one string ("news|sport"); implies --task multilabel."""
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
    max_batch_tokens: Optional[int] = None
    """Form training batches by tokens instead of texts: each batch holds as many texts of similar length as fit in
    this many tokens per process (padded tokens; with train.packing, real tokens), so short texts come many to a batch
    and long ones few; batch_size is then unused. The loss stays the mean over the step's examples. null: batches of
    batch_size texts."""
    eval_batch_size: int = 64
    """Examples per batch when evaluating during training."""
    gradient_accumulation_steps: int = 1
    """Steps whose gradients are summed before each optimizer update."""
    learning_rate: float = 5e-5
    """Peak learning rate (ModernBERT paper: 3e-5 to 8e-5)."""
    head_learning_rate: Optional[float] = None
    """Peak learning rate of a newly initialised task head (the layers outside the encoder), as setfit separates body
    and head. Default: learning_rate. A head starts from scratch while the encoder is pretrained."""
    linear_probe: Optional[bool] = None
    """Before fine-tuning, fit the new output layer to convergence on the frozen encoder's features of the training
    split (LP-FT, Kumar et al. 2022: the task's loss plus an L2 penalty chosen on validation), then fine-tune all of
    it from there. Classification, multi-label and regression; one forward pass over the training and validation
    splits. It replaces a new output layer's weights; a head already trained for the same labels (a run's model
    fine-tuned again) is kept and not probed. Default (null): on for multi-label, whose rare labels a fresh head
    barely learns (Reuters, debtags, rare trigger words), off for classification and regression, where it hurt the
    VADER sentiment and regression examples (docs/training.md); the run's config.yaml records the choice."""
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
    """Numeric precision. auto: bf16 on GPUs that support it, else fp32. bf16 on a CPU: autocast (weights stay fp32),
    2-3x faster steps on CPUs with bf16 hardware (Intel AMX/AVX512-BF16); fp16 needs a GPU."""
    keep_cpu_memory: bool = True
    """Training on a CPU (Linux, glibc): keep freed memory for reuse instead of returning large blocks to the system
    each step, which costs a page fault per 4 KiB of fresh activations (1.46x faster steps for a 110M encoder at 256
    tokens here, +5% peak memory). The process then holds its peak memory until it ends."""
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
    seeds: int = 1
    """Train this many models on the same split, with seeds seed, seed+1, ...: the report gives each validation and
    test metric's mean ± sd over them, and the run keeps the best on validation (or, with ensemble, all of them)."""
    ensemble: bool = False
    """With seeds > 1, ship every member as one model: their weights averaged (a model soup: one forward pass, a plain
    transformers model) when that scores at least as well on validation as averaging their logits, else the logit
    average (one forward pass per member)."""
    contrastive_pairs: int = 10
    """Classification with model.head embedding: pairs made per training text (half with a text of its class,
    half with another class's), for the contrastive phase."""
    logging_steps: int = 10
    """Log loss and learning rate every N steps."""
    report_to: List[str] = field(default_factory=lambda: ["tensorboard"])
    """Loggers: any of tensorboard, wandb, mlflow (the latter two need their packages); [] for none."""
    num_workers: Optional[int] = None
    """Data-loader worker processes that collate batches while the model computes. Default: min(4, CPU cores - 1) on
    a CUDA GPU (kept alive between epochs), 0 on a CPU."""
    torch_compile: Union[Literal["auto"], bool] = "auto"
    """Compile the model with torch.compile (inductor, mode "default"; slower to start, faster per step). auto: on a
    CUDA GPU with triton, off on a CPU."""
    packing: Union[Literal["auto"], bool] = "auto"
    """Padding-free: each batch's real tokens packed back to back, attention kept to each sequence (docs/speed.md),
    in training and in predict. auto: on for ModernBERT and BERT-family encoders, padded batches for the others."""
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
        _require(self.seeds >= 1, f"train.seeds must be at least 1 (got {self.seeds})")
        _require(not self.ensemble or self.seeds > 1, "train.ensemble needs train.seeds > 1 (the members to ensemble)")
        _require(self.num_workers is None or self.num_workers >= 0, f"train.num_workers must be >= 0 (got {self.num_workers})")
        _require(self.max_batch_tokens is None or self.max_batch_tokens >= 64,
                 f"train.max_batch_tokens must be at least 64 tokens (got {self.max_batch_tokens}); null turns it off")
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
    baseline_max_rows: Optional[int] = 200_000
    """Fit the baseline on a seeded sample of at most this many training examples (the report and metrics.json say
    how many it saw); it is scored on the whole validation/test splits. null: on every training example."""
    review_max_rows: Optional[int] = 200_000
    """The label-noise pass (label_noise.csv) reads at most the first this many training examples (a random sample
    where the splits were made by shuffling; metrics.json says how many). null: every training example."""
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
        _require(self.review_max_rows is None or self.review_max_rows >= 1,
                 f"report.review_max_rows must be at least 1, or null for every training example (got {self.review_max_rows})")
        _require(self.baseline_max_rows is None or self.baseline_max_rows >= 2,
                 f"report.baseline_max_rows must be at least 2, or null for every training example (got {self.baseline_max_rows})")
        _require(self.max_examples >= 1, f"report.max_examples must be at least 1 (got {self.max_examples})")


@dataclass
class ReportOverrides:
    """Report settings to change when re-evaluating a run: each one given replaces the run's own, the others stay."""

    target_accuracy: Optional[float] = None
    """Replace report.target_accuracy; 0 turns the abstention threshold off."""
    baseline: Optional[bool] = None
    """Replace report.baseline."""
    baseline_max_rows: Optional[int] = None
    """Replace report.baseline_max_rows; 0: every training example."""
    review_max_rows: Optional[int] = None
    """Replace report.review_max_rows; 0: every training example."""
    coverage: Optional[float] = None
    """Replace report.coverage (regression prediction intervals)."""
    noise_confidence: Optional[float] = None
    """Replace report.noise_confidence."""
    max_examples: Optional[int] = None
    """Replace report.max_examples."""

    def apply(self, report: ReportArgs) -> ReportArgs:
        """`report` with the settings given here (validated as any ReportArgs)."""
        changes = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        for unset_by_zero in ("target_accuracy", "baseline_max_rows", "review_max_rows"):
            if changes.get(unset_by_zero) == 0:
                changes[unset_by_zero] = None
        return dataclasses.replace(report, **changes)


AUGMENTATIONS = ("delete", "swap", "insert", "mask", "mix")


@dataclass
class DistillArgs:
    """How a student learns from a teacher run (`encoderfit distill`): the loss, and the texts the teacher labels."""

    temperature: float = 2.0
    """Softens the teacher's and the student's outputs before they are compared (Hinton et al. 2015; 2-4 is usual).
    The distillation term is scaled by temperature**2 so its gradients keep their size."""
    alpha: float = 0.5
    """Weight of the teacher's term where a text has a gold label (1 - alpha: the gold label's loss); texts without
    one (unlabelled, augmented) learn from the teacher alone."""
    unlabelled: Optional[str] = None
    """More text for the teacher to label: any text source the tool reads (a .txt file of one text per line, a
    CSV/JSONL/Parquet file or folder, a hub dataset, a recipe); its validation/test texts are never used."""
    unlabelled_column: str = "text"
    """Column of `unlabelled` holding the text."""
    augment: int = 0
    """Label-free variants made of each training text for the teacher to label (0: none)."""
    augmentations: List[str] = field(default_factory=lambda: list(AUGMENTATIONS))
    """Which variants: delete, swap, insert (EDA: Wei & Zou 2019; insert takes a word of another training text),
    mask (a span of words replaced by the teacher's mask token) and mix (the first half of one text joined to the
    second half of another). Each variant applies one, drawn at random."""
    seed: int = 42
    """Seeds the augmentations (the same seed gives the same transfer set)."""
    compare: Optional[Path] = None
    """A run of the student model trained directly on the labels (same data): tested against the distilled student."""

    def __post_init__(self) -> None:
        _require(self.temperature > 0, f"distill.temperature must be > 0 (got {self.temperature})")
        _require(0 <= self.alpha <= 1, f"distill.alpha must be in [0, 1] (got {self.alpha})")
        _require(0 <= self.augment <= 64, f"distill.augment must be 0-64 variants per text (got {self.augment})")
        unknown = [a for a in self.augmentations if a not in AUGMENTATIONS]
        _require(not unknown and bool(self.augmentations),
                 f"distill.augmentations: {unknown or 'none given'}; choose from {list(AUGMENTATIONS)}")


@dataclass
class CompressArgs:
    """How `encoderfit compress` prunes a run's encoder: a speed target, or the sizes to keep."""

    target_speedup: Optional[float] = None
    """The speed-up to reach, by the cost model (attention + FFN multiply-adds per layer at the data's mean length):
    turned into a number of layers and an FFN width, said in the log. Or give layers/ffn."""
    layers: Optional[int] = None
    """Layers to keep (those whose removal moves the validation outputs least go first). Default: all."""
    ffn: Optional[int] = None
    """FFN neurons to keep in every layer (the new intermediate_size; the most important on the training split).
    Default: all."""
    heads: Optional[int] = None
    """Attention heads to keep: refused for BERT, MPNet and ModernBERT, whose configs cannot express it."""
    sample: int = 512
    """Texts measured: validation texts for the layer choice, training texts for the FFN neuron importance."""

    def __post_init__(self) -> None:
        _require(self.target_speedup is None or self.target_speedup > 1,
                 f"compress.target_speedup must be above 1 (got {self.target_speedup})")
        _require(self.target_speedup is None or (self.layers is None and self.ffn is None),
                 "compress.target_speedup plans the layers and the FFN width itself: drop --compress.layers/--compress.ffn, "
                 "or drop the target")
        _require(self.layers is None or self.layers >= 1, f"compress.layers must be at least 1 (got {self.layers})")
        _require(self.ffn is None or self.ffn >= 1, f"compress.ffn must be at least 1 (got {self.ffn})")
        _require(self.sample >= 8, f"compress.sample must be at least 8 texts (got {self.sample})")
