"""What a task is: everything about one kind of target that the stages (train, tune, eval, predict, export, serve,
report) need to know. A `Task` declares what it is (its name, metrics, stages...) and holds five parts, one per
concern, each a small class a task module subclasses where it differs:

    task.targets    reading, encoding and splitting the targets          (base/targets.py)
    task.modeling   the model, its loss, collator and Trainer            (base/modeling.py)
    task.scoring    metrics, the head fitted on validation, the baseline (base/scoring.py)
    task.decoding   logits -> results, margins, parity, CSV              (base/decoding.py)
    task.pages      the report's sections, the model card, eval details  (base/pages.py)

Stages call these parts and contain no task branches; a new task is one module (its parts and its `Task`) plus an
entry in `tasks.TASKS`.

Numbers flow as numpy arrays: `targets` are what `encode` stored in the `labels` column (class ids, multi-hot
rows, floats) and `logits` are the model's raw outputs, shape (n, num_outputs). The `head` is the JSON-able state
fitted on validation after training (temperature and threshold, per-label thresholds, a conformal interval),
saved in the model directory and applied by predict, serve and export.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Dict, Optional, Tuple

from ...core.errors import UserError, closest
from .decoding import Decoding
from .modeling import Modeling
from .pages import Pages
from .scoring import Scoring
from .targets import Targets


class Task:
    name: ClassVar[str]
    """The --task value, and the name saved in config.yaml and encoderfit.json."""
    problem_type: ClassVar[str]
    """transformers' config.problem_type: what plain pipelines and the model's own loss go by."""
    pipeline_tag: ClassVar[str] = "text-classification"
    """The hub pipeline tag of the model card (and the transformers pipeline that loads the model)."""
    inputs: ClassVar[Tuple[str, str]] = ("text", "text_pair")
    """What the task's two texts are called where a person gives them (predict's JSONL fields and CSV columns, the
    server's request fields, Predictor.predict's keywords): ("question", "context") for QA."""
    output_noun: ClassVar[str] = "labels"
    """What the outputs are called in messages and on the report ("labels", "target")."""
    auto_model: ClassVar[str] = "AutoModelForSequenceClassification"
    """The transformers Auto class that builds the model with this task's output layer."""
    inference_options: ClassVar[frozenset] = frozenset()
    """Inference options the task honours: "calibrated" (apply the fitted temperature), "abstain" (UNKNOWN under
    the fitted threshold)."""
    metrics_for_best: ClassVar[Dict[str, bool]] = {"loss": False}
    """Validation metrics that can choose the checkpoint kept -> whether greater is better."""
    summary: ClassVar[Tuple[Tuple[str, str], ...]] = ()
    """(metric key, column title) of the summary tables, in the terminal, the report and the card. The first is the
    task's primary metric: the verdict against the baseline is about it."""
    lower_is_better: ClassVar[frozenset] = frozenset()
    """Metrics where less is better (errors, losses); every other is better greater."""
    stages: ClassVar[frozenset] = frozenset({"train", "tune", "cv", "eval", "predict", "export", "serve", "report"})
    """What the task supports, as data: the commands (and server routes) that run on its runs and models. Besides the
    command names: "distill" (a student can learn from its runs; its Modeling has `distill_loss`) and "embed" (its
    outputs are text embeddings, one normalised vector per text: `embed`, `search`, the server's /v1/embed and
    /v1/search, and monitor's embedding test apply). A new command asks `task.supports(name)`; no task changes."""
    unsupported: ClassVar[Dict[str, str]] = {
        "distill": "`encoderfit distill` is built for classification, multilabel, regression, ner, embedding and similarity "
                   "runs so far"}
    """Why not, and what to do instead, for a stage the task lacks (key "*": any stage without its own line)."""
    baseline_name: ClassVar[str] = "TF-IDF baseline"
    """What the baseline is called in the verdict (and `baseline_plain`, in plain words with its article)."""
    baseline_plain: ClassVar[str] = "a bag of words"
    always_windows: ClassVar[bool] = False
    """Texts longer than max_length are always cut into windows (never truncated), whatever model.long_texts says."""
    output_axes: ClassVar[Dict[int, str]] = {0: "batch"}
    """The dynamic axes of the exported ONNX graph's logits."""
    int8_recheck: ClassVar[bool] = True
    """The task makes decisions that an int8 export can flip, so export fits a margin to re-check near-ties in fp32."""
    distill_validation: ClassVar[bool] = False
    """A student's checkpoints are chosen by its distillation loss on validation (the teacher's outputs on the
    validation texts, never trained on), where the student's rows lack what the task's own validation loss needs."""
    exact_test: ClassVar[Optional[str]] = None
    """The key of `paired_test`'s result whose p-value the verdict uses (else the paired bootstrap's)."""

    Options: ClassVar[Optional[type]] = None
    """The dataclass of the task's own settings, the config group named after the task (`--ner.documents true`,
    `ner: {documents: true}` in a YAML config), or None when it has none. Its fields' docstrings are their help."""

    Targets: ClassVar[type] = Targets
    Modeling: ClassVar[type] = Modeling
    Scoring: ClassVar[type] = Scoring
    Decoding: ClassVar[type] = Decoding
    Pages: ClassVar[type] = Pages

    def __init__(self, options: Optional[Dict[str, Any]] = None):
        self.options = self._read_options(dict(options or {}))
        self.targets: Targets = self.Targets(self)
        self.modeling: Modeling = self.Modeling(self)
        self.scoring: Scoring = self.Scoring(self)
        self.decoding: Decoding = self.Decoding(self)
        self.pages: Pages = self.Pages(self)

    @classmethod
    def supports(cls, stage: str) -> bool:
        """Whether `stage` (a command, "distill" or "embed"; see `stages`) runs on this task's runs."""
        return stage in cls.stages

    @classmethod
    def why_not(cls, stage: str) -> str:
        """Why `stage` does not run on this task's runs, and what to do instead."""
        return cls.unsupported.get(stage) or cls.unsupported.get("*") or f"the {cls.name} task does not support {stage} yet"

    def _read_options(self, values: Dict[str, Any]):
        if self.Options is None:
            if values:
                raise UserError(f"{self.name}.{sorted(values)[0]}: the {self.name} task has no settings of its own; drop it")
            return None
        known = {f.name for f in dataclasses.fields(self.Options)}
        for key in sorted(set(values) - known):
            raise UserError(f"{self.name}.{key}: not a setting of the {self.name} task{closest(key, sorted(known))}; "
                            f"its settings are {sorted(known)}")
        return self.Options(**values)

    def configured(self, options: Optional[Dict[str, Dict[str, Any]]]) -> "Task":
        """This task holding a run's settings of its group (`options`: {group: {setting: value}}, as config.yaml keeps
        them). Settings given for another task's group are refused: they would do nothing."""
        options = {group: values for group, values in (options or {}).items() if values}
        for group in sorted(set(options) - {self.name}):
            raise UserError(f"{group}.{sorted(options[group])[0]}: a setting of the {group} task, but this run's task is "
                            f"{self.name}; drop it{f' or use --{self.name}.*' if self.Options else ''}")
        return type(self)(options.get(self.name))

    def options_dict(self) -> Dict[str, Dict[str, Any]]:
        """The settings of the task's group as config.yaml keeps them ({} when the task has none)."""
        return {self.name: dataclasses.asdict(self.options)} if self.options is not None else {}


def check_options(task: Task, calibrated: bool, abstain: bool) -> None:
    """Inference options only make sense for tasks that have them."""
    if abstain and "abstain" not in task.inference_options:
        raise UserError(f"--abstain: the {task.name} task has no abstention threshold; drop --abstain")
