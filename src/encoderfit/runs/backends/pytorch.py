"""The torch backend: the run's own weights, run by PyTorch on the chosen device (nothing to export)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..rundir import locate
from .base import InferenceBackend, Loaded


class TorchBackend(InferenceBackend):
    name = "torch"

    def load(self, path: Path, device: Optional[str], packing, recheck: bool) -> Loaded:
        """The model directory's weights (an ensemble's members too) in eval mode on `device` (default: cuda when
        available); padding-free batches per `packing`, else the run's train.packing, else auto."""
        from ...models.loading import load_for_inference
        from ...models.packing import enable_packing
        from ...tasks import get_task

        run, directory = locate(path)
        info = directory.info()
        model, tokenizer, device = load_for_inference(str(directory.path), get_task(info.task, "predict"), info.members, device)
        enable_packing(model, packing if packing is not None else run.config().train.packing if run is not None else "auto")
        return Loaded(model, tokenizer, directory, device)
