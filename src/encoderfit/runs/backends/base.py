"""What an inference backend is: the record `Predictor.from_pretrained` loads a model through and `encoderfit export`
writes one with, and what they hand each other (a loaded model, an export under way)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Tuple

from ..rundir import ModelDir

Recheck = Tuple[Any, float]
"""(exact model, margin): rows whose decision margin is under the margin are run again through the exact model."""


@dataclass
class Loaded:
    """A model loaded by a backend, as the Predictor takes it."""

    model: Any
    """A torch.nn.Module (the Predictor runs it with tensors on `device`), or any callable from a dict of numpy int64
    inputs (input_ids, attention_mask, token_type_ids) to numpy logits (an exported graph: OnnxModel)."""
    tokenizer: Any
    directory: ModelDir
    """Where it was loaded from: its encoderfit.json is the model's task, labels and head; its fingerprint stamps the
    rows predict/serve --log write."""
    device: Any = "cpu"
    recheck: Optional[Recheck] = None
    """The backend's re-check of near-ties, when it has one and it was asked for (onnx-int8: the fp32 graph)."""


@dataclass
class ExportJob:
    """One `encoderfit export` under way: the PyTorch model, and the directory the backends write into (published
    whole only after the parity check passes)."""

    model: Any
    """The run's PyTorch model in eval mode, eager attention, nothing compiled."""
    tokenizer: Any
    names: List[str]
    """The model's input names, in the order the exported graph takes them."""
    source: ModelDir
    """The model directory exported."""
    target: ModelDir
    task: Any
    opset: int
    models: Dict[str, Any] = field(default_factory=dict)
    """Backend name -> the model it exported, loaded (filled in as each backend exports: a later one may build on an
    earlier one's file, as onnx-int8 quantizes onnx's)."""


class InferenceBackend:
    """One way to run a trained model in predict, serve, embed, search and the Python API (`--backend NAME`).

    A backend loads a model from a run (`load`); where it runs an exported file, `encoderfit export --format FORMAT
    [--quantize QUANTIZATION]` writes that file (`export`), checked against PyTorch before anything is kept; a lossy one
    may re-check its near-ties against an exact one (`recheck_against`, `recheck`). Register an instance in
    runs/backends/__init__.py's BACKENDS under its `name`.
    """

    name: ClassVar[str] = ""
    format: ClassVar[Optional[str]] = None
    """What `encoderfit export --format` writes this backend's files with (onnx), or None: it runs the run's own
    model and needs no export (torch)."""
    quantization: ClassVar[Optional[str]] = None
    """`export --quantize` value that writes this backend's file (int8), beside the format's unquantized one."""
    parity_key: ClassVar[str] = ""
    """Its entry in the export's parity.json (fp32, int8)."""
    parity_atol: ClassVar[Optional[float]] = None
    """The export fails unless every logit is within this of PyTorch's (None: its parity is recorded, not required)."""
    parity_hint: ClassVar[str] = ""
    """What to try when it does not (onnx: another --opset)."""
    recheck_against: ClassVar[Optional[str]] = None
    """The exact backend whose model re-checks this one's near-ties (onnx-int8: onnx), or None."""
    recheck_file: ClassVar[str] = ModelDir.RECHECK
    """Where the export writes the re-check margin it fitted on validation."""

    def load(self, path: Path, device: Optional[str], packing, recheck: bool) -> Loaded:
        """The model at `path` (a run directory, its model/ directory, or an export's directory), ready to predict.
        `recheck`: load the backend's re-check too, where it has one (`Loaded.recheck`)."""
        raise NotImplementedError

    def export(self, job: ExportJob) -> Any:
        """Write this backend's files into job.target, and return the exported model loaded (the parity check runs it)."""
        raise NotImplementedError(f"the {self.name} backend runs the run's own model: nothing to export")

    def fits_recheck(self, task) -> bool:
        """Whether export fits a re-check margin for this task's models: only where `recheck_against` is set and the
        task makes decisions that this backend's loss of precision can flip (its `int8_recheck`)."""
        return self.recheck_against is not None and task.int8_recheck

    def recheck(self, directory: ModelDir) -> Optional[Recheck]:
        """(exact model, margin) when the export fitted a re-check margin for this backend (see `recheck_file`)."""
        return None


def is_torch_model(model) -> bool:
    """Whether a Predictor runs `model` with PyTorch (tensors on its device), not as an exported graph (numpy)."""
    import torch

    return isinstance(model, torch.nn.Module)
