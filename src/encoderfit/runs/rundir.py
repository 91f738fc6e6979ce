"""The run directory as one type: every file name, and reading and writing each file, live here.

    RUN/
      config.yaml          the resolved run configuration: every later stage reads it back
      metrics.json         validation/test metrics, head decisions, baseline, training time
      predictions/         SPLIT.parquet: text (and text_pair), target, logits, with the model's fingerprint
      label_noise.csv      training examples whose label the model contradicts (classification)
      report.html          the self-contained visual report
      logs/                TensorBoard events and history.json
      eval/                metrics of `encoderfit eval --data OTHER`
      onnx/                the exported model (a model directory, see ModelDir)
      model/               a model directory (see ModelDir)

A model directory (RUN/model, RUN/onnx, or any copy of one) is self-contained: weights (or ONNX files), config.json,
tokenizer (a classifier on a pooled vector keeps these three in 0_Transformer/, as a sentence-transformers module: its
card says how each kind loads), README.md (the model card) and encoderfit.json, the part of the resolved run that inference needs:
the task, max_length, whether inputs are text pairs, and the head state fitted on validation (temperature and
threshold, per-label thresholds, conformal interval).
"""

from __future__ import annotations

import hashlib

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..core.runconfig import CONFIG_FILE, LEGACY_TASK, RunConfig
from ..core.errors import UserError
from ..core.files import atomic_file, sha256, write_json

log = logging.getLogger(__name__)


@dataclass
class Predictions:
    """A split's texts (and pairs), targets as the task encodes them, and the model's raw logits."""

    texts: List[str]
    pairs: Optional[List[str]]
    targets: Any  # np.ndarray: class ids, multi-hot rows or floats
    logits: Any  # np.ndarray (n, num_labels)

    def shown(self) -> List[str]:
        """Texts as a person reads them: a pair as 'a ‖ b'."""
        return list(self.texts) if self.pairs is None else [f"{a} ‖ {b}" for a, b in zip(self.texts, self.pairs)]


@dataclass
class ModelInfo:
    """What inference needs besides the weights (model/encoderfit.json)."""

    task: str
    max_length: int
    labels: List[str]
    text_pair: bool = False
    head: Dict[str, Any] = field(default_factory=dict)
    windows: Optional[Dict[str, Any]] = None
    """{overlap, aggregation} when long texts are cut into windows; None: truncated."""
    members: List[str] = field(default_factory=list)
    """Directories (relative to the model directory) of an ensemble's members, whose logits are averaged."""
    options: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    """The task's own settings the model was trained with ({task: {setting: value}}), which inference applies too
    (QA's n-best and longest answer)."""

    def to_dict(self) -> dict:
        return {"task": self.task, "max_length": self.max_length, "labels": self.labels, "text_pair": self.text_pair,
                "head": self.head, "windows": self.windows, "members": self.members, "options": self.options}


def _digest(root: Path, files: List[Path]) -> str:
    return hashlib.sha256(" ".join(f"{p.relative_to(root)}:{sha256(p)}" for p in sorted(files)).encode()).hexdigest()


class ModelDir:
    """A model directory: weights or ONNX files, config.json, tokenizer, encoderfit.json, README.md."""

    INFO = "encoderfit.json"
    LEGACY_CALIBRATION = "calibration.json"  # written by encoderfit 0.1 before the task abstraction
    CARD = "README.md"
    WEIGHTS = "model.safetensors"
    FP32, INT8 = "model.onnx", "model.int8.onnx"
    RECHECK = "int8_recheck.json"
    PARITY = "parity.json"
    EXPORTED_FROM = "exported_from.json"  # an ONNX export: the fingerprint of the model it was exported from

    def __init__(self, path: Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @classmethod
    def holds_model(cls, path: Path) -> bool:
        """Whether `path` is a model directory: encoderfit.json, or (from before it) config.json. A classifier kept as
        sentence-transformers modules has no top-level config.json (models/pooling.py)."""
        return (Path(path) / cls.INFO).is_file() or (Path(path) / "config.json").is_file()

    def info(self) -> ModelInfo:
        """encoderfit.json; for a directory written before it existed, what config.json and calibration.json say."""
        file = self.path / self.INFO
        if file.is_file():
            raw = _read_json(file)
            return ModelInfo(raw["task"], int(raw["max_length"]), list(raw.get("labels", [])), bool(raw.get("text_pair")),
                             dict(raw.get("head") or {}), raw.get("windows"), list(raw.get("members") or []),
                             dict(raw.get("options") or {}))
        config = self.path / "config.json"
        if not config.is_file():
            raise UserError(f"{self.path}: no model here (config.json is missing); pass a run directory or its model/ directory")
        raw = _read_json(config)
        labels = [raw.get("id2label", {}).get(str(i), f"LABEL_{i}") for i in range(int(raw.get("num_labels", len(raw.get("id2label", {})) or 2)))]
        from ..tasks import TASKS

        task = next((t.name for t in TASKS.values() if t.problem_type == raw.get("problem_type")), LEGACY_TASK)
        legacy = self.path / self.LEGACY_CALIBRATION
        head = _read_json(legacy) if legacy.is_file() else {}
        return ModelInfo(task, _tokenizer_max_length(self.path, raw), labels, False, head)

    def write_info(self, info: ModelInfo) -> None:
        write_json(self.path / self.INFO, info.to_dict())

    def fingerprint(self) -> str:
        """SHA-256 of the weights the model predicts with (an ensemble's: every member's, in order): saved
        predictions are reused only by the model that made them."""
        members = self.info().members if (self.path / self.INFO).is_file() else []
        if not members:
            files = [p for p in self.path.rglob("*.safetensors") if "members" not in p.relative_to(self.path).parts]
            if not files and (self.path / self.EXPORTED_FROM).is_file():  # an ONNX export: the model it came from
                recorded = _read_json(self.path / self.EXPORTED_FROM)
                if isinstance(recorded, dict) and isinstance(recorded.get("model_sha256"), str):
                    return recorded["model_sha256"]
            if not files:  # an export from before the record: in a run (RUN/onnx, export's default), the run's model;
                inside = self.path.parent / RunDir.MODEL  # elsewhere its own ONNX files, so no two exports share one
                if self.path.name == RunDir.ONNX and (inside / self.INFO).is_file():
                    return ModelDir(inside).fingerprint()
                files = [f for f in (self.onnx_file(False), self.onnx_file(True)) if f.is_file()]
            if len(files) == 1 and files[0].name == self.WEIGHTS:
                return sha256(files[0])
            return _digest(self.path, files)  # a sentence-transformers directory: its modules' weights too
        return _digest(self.path, [p for m in members for p in (self.path / m).rglob("*.safetensors")])

    def onnx_file(self, int8: bool) -> Path:
        return self.path / (self.INT8 if int8 else self.FP32)


class RunDir:
    """A run directory written by `encoderfit train` (or `tune`)."""

    METRICS = "metrics.json"
    REPORT = "report.html"
    NOISE = "label_noise.csv"
    PREDICTIONS = "predictions"
    LOGS = "logs"
    EVAL = "eval"
    ONNX = "onnx"
    CHECKPOINTS = "checkpoints"
    MODEL = "model"  # the model directory (ModelDir) inside a run
    TRIALS = "trials.csv"
    MEMBERS = "members"  # a several-seed run trains each seed in RUN/members/seed-S/ (seeds.py); an ensemble model too

    def __init__(self, path: Path):
        self.path = Path(path)
        self._task = None  # the run's Task, once asked for (task())

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @staticmethod
    def is_run(path: Path) -> bool:
        return (Path(path) / CONFIG_FILE).is_file()

    @property
    def model(self) -> ModelDir:
        return ModelDir(self.path / self.MODEL)

    @property
    def onnx(self) -> ModelDir:
        return ModelDir(self.path / self.ONNX)

    @property
    def history_file(self) -> Path:
        return self.path / self.LOGS / "history.json"

    # ---- config and metrics

    def config(self) -> RunConfig:
        return RunConfig.load(self.path, check=_fine_tuning_run)

    def task(self, stage: Optional[str] = None):
        """The run's Task holding its own settings (config.yaml's task and task options), resolved once when the run is
        opened and handed on from here; with `stage`, refused with the task's own line where it lacks that stage."""
        if self._task is None:
            from ..tasks import get_task

            cfg = self.config()
            self._task = get_task(cfg.task, options=cfg.options)
        if stage is not None and not self._task.supports(stage):
            raise UserError(f"{stage}: {self._task.why_not(stage)}")
        return self._task

    def save_config(self, cfg: RunConfig) -> None:
        cfg.save(self.path)

    def metrics(self) -> Dict:
        file = self.path / self.METRICS
        if not file.is_file():
            raise UserError(f"{file} is missing; run `encoderfit eval {self.path}` first")
        return _read_json(file)

    def write_metrics(self, metrics: Dict) -> None:
        write_json(self.path / self.METRICS, metrics)

    def missing(self) -> List[str]:
        """What this directory lacks of a finished run: its config, model, metrics with the test section, validation
        and test predictions, report and model card (evaluate_run writes the report and then the card last); [] when
        it is complete. A run interrupted between two of these writes is not complete."""
        files = [CONFIG_FILE, f"{self.MODEL}/{ModelDir.INFO}", self.METRICS, *(f"{self.PREDICTIONS}/{s}.parquet" for s in
                 ("validation", "test")), self.REPORT, f"{self.MODEL}/{ModelDir.CARD}"]
        missing = [name for name in files if not (self.path / name).is_file()]
        if self.METRICS not in missing and "test" not in self.metrics():
            missing.append("metrics.json's test section")
        return missing

    def complete(self) -> bool:
        return not self.missing()

    def history(self) -> List[Dict]:
        return _read_json(self.history_file) if self.history_file.is_file() else []

    # ---- predictions

    def predictions_file(self, split: str) -> Path:
        return self.path / self.PREDICTIONS / f"{split}.parquet"

    def write_predictions(self, split: str, preds: Predictions, task, labels: List[str], fingerprint: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {"text": preds.texts, "label": task.targets.targets_to_json(preds.targets, labels), **task.decoding.logits_to_columns(preds.logits)}
        if preds.pairs is not None:
            columns["text_pair"] = preds.pairs
        table = pa.table(columns).replace_schema_metadata({"model_sha256": fingerprint})
        with atomic_file(self.predictions_file(split), "wb") as handle:
            pq.write_table(table, handle)

    def predictions(self, split: str, task, labels: List[str], fingerprint: Optional[str] = None) -> Optional[Predictions]:
        """A split's saved predictions; None when absent, or when `fingerprint` is given and another model made them."""
        import pyarrow.parquet as pq

        file = self.predictions_file(split)
        legacy = self.path / self.PREDICTIONS / f"{split}.jsonl"
        if file.is_file():
            table = pq.read_table(file)
            made_by = (table.schema.metadata or {}).get(b"model_sha256", b"").decode()
            if fingerprint is not None and made_by != fingerprint:
                return None
            rows = table.to_pydict()
        elif legacy.is_file() and fingerprint is None:  # written by encoderfit 0.1
            from ..core.files import split_lines

            lines = [json.loads(line) for line in split_lines(legacy.read_text(encoding="utf-8")) if line.strip()]
            rows = {key: [r.get(key) for r in lines] for key in ("text", "label", "logits", "text_pair")}
            rows = {k: v for k, v in rows.items() if any(x is not None for x in v)}
        else:
            return None
        logits = task.decoding.logits_from_columns(rows, labels, str(file))
        targets = task.targets.targets_from_json(rows["label"], labels, str(file))
        return Predictions(list(rows["text"]), rows.get("text_pair"), targets, logits)

    def require_predictions(self, split: str, task, labels: List[str]) -> Predictions:
        preds = self.predictions(split, task, labels)
        if preds is None:
            raise UserError(f"{self.predictions_file(split)} is missing: the run has no saved predictions; "
                            f"run `encoderfit eval {self.path}` to make them")
        return preds


def locate(path: Path) -> tuple:
    """A run directory or a model directory -> (RunDir or None, ModelDir)."""
    path = Path(path)
    if ModelDir.holds_model(path / RunDir.MODEL):
        return (RunDir(path) if RunDir.is_run(path) else None), ModelDir(path / RunDir.MODEL)
    if not ModelDir.holds_model(path):
        raise UserError(f"{path}: no model here (config.json is missing); pass a run directory or its model/ directory")
    return None, ModelDir(path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err}); restore the file or re-train the run") from None


def _tokenizer_max_length(model_dir: Path, config: dict) -> int:
    """For directories from before encoderfit.json: the run saved its max_length as the tokenizer's model_max_length."""
    tok = model_dir / "tokenizer_config.json"
    limit = int(config.get("max_position_embeddings") or 512)
    if tok.is_file():
        saved = _read_json(tok).get("model_max_length")
        if isinstance(saved, (int, float)) and saved < 1_000_000:
            limit = min(limit, int(saved))
    return limit


def _fine_tuning_run(raw: dict, where: str) -> None:
    """A run directory the fine-tuning stages read: refuse others (a pre-training run) with what to do instead."""
    from ..tasks import TASKS

    task = TASKS.get(str(raw.get("task") or LEGACY_TASK))
    if task is not None and "train" not in task.stages:
        raise UserError(f"{where}: {task.why_not('train')}")
