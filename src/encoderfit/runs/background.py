"""Work around training that needs no GPU, done while the GPU trains: the run's baseline (TF-IDF and a linear model,
a CRF, BM25: the task's `scoring.baseline`) is fitted in a thread started before training and collected by the
evaluation after it. On a CPU the training already uses every core, so there it is fitted when the evaluation asks,
as before. Either way the evaluation gets the same result (each baseline is deterministic)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Optional

log = logging.getLogger(__name__)


class Background:
    """`work()` run in a daemon thread now (`parallel`) or on the first `result()` call; `result()` gives its value
    or raises what it raised."""

    def __init__(self, work: Callable[[], Any], parallel: bool, name: str = "baseline"):
        self.work, self.name = work, name
        self.value: Any = None
        self.error: Optional[BaseException] = None
        self.done = False
        self.thread: Optional[threading.Thread] = None
        if parallel:
            self.thread = threading.Thread(target=self._run, name=f"encoderfit-{name}", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            self.value = self.work()
        except BaseException as err:  # handed to the caller of result()
            self.error = err
        self.done = True
        self.seconds = time.perf_counter() - started

    def result(self) -> Any:
        if self.thread is None and not self.done:
            self._run()
        elif self.thread is not None:
            waited = time.perf_counter()
            self.thread.join()
            log.info("%s: fitted beside training in %.1f s (%.1f s waited for it after training)", self.name,
                     self.seconds, time.perf_counter() - waited)
        if self.error is not None:
            raise self.error
        return self.value


def baseline_beside_training(task, splits, cfg, max_length: int) -> Optional[Background]:
    """The run's baseline, started now in a thread when training runs on a GPU; None when the run has none. It sees
    the config as the evaluation after training would (`max_length` resolved: a base-model baseline reads it)."""
    from dataclasses import replace

    from ..core.device import has_cuda

    if not cfg.report.baseline:
        return None
    seen = replace(cfg, resolved={**cfg.resolved, "max_length": max_length})
    sample = splits.baseline_sample(cfg.report.baseline_max_rows, cfg.data.split_seed)  # report.baseline_max_rows
    return Background(lambda: task.scoring.baseline(sample, seen.labels, seen), parallel=has_cuda())
