"""The server's dynamic batching and its Prometheus series: concurrent requests wait in a queue for at most
`max_wait_ms`, whatever has arrived by then (up to a text budget) runs as one model pass on one worker thread, and
each request gets its own answer back; a failed pass is retried request by request so only the culprit fails."""

from __future__ import annotations

import asyncio
import ctypes
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional

from prometheus_client import CollectorRegistry, Counter, Histogram, Summary

from .predict import Predictor

log = logging.getLogger(__name__)


class Metrics:
    """Prometheus series that show load, latency, batching and drift (labels, confidence, scores, abstention)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("encoderfit_requests", "HTTP requests by path and status", ["path", "status"], registry=self.registry)
        self.latency = Histogram("encoderfit_request_seconds", "Request latency", ["path"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.batch = Histogram("encoderfit_batch_texts", "Texts per model pass", registry=self.registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.labels = Counter("encoderfit_predicted_label", "Predicted labels", ["label"], registry=self.registry)
        self.confidence = Histogram("encoderfit_confidence", "Top-class probability of each prediction", registry=self.registry,
                                    buckets=tuple(i / 20 for i in range(1, 21)))
        self.abstained = Counter("encoderfit_abstained", "Predictions answered UNKNOWN", registry=self.registry)
        self.scores = Summary("encoderfit_score", "Predicted scores (regression)", registry=self.registry)

    def observe(self, signals: Dict) -> None:
        """Record what the task says about one result (tasks.Task.signals)."""
        for label in signals.get("labels", ()):
            self.labels.labels(label).inc()
        if signals.get("confidence") is not None:
            self.confidence.observe(signals["confidence"])
        if signals.get("score") is not None:
            self.scores.observe(signals["score"])
        if signals.get("abstained"):
            self.abstained.inc()


def _release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc): variable batch shapes otherwise fragment it and RSS creeps up."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class Batcher:
    """Gathers texts from concurrent requests into one model pass (dynamic batching)."""

    TRIM_EVERY = 50  # model passes

    def __init__(self, predictor: Predictor, metrics: Metrics, max_wait_ms: float, max_batch_texts: int, enabled: bool):
        self.predictor, self.metrics = predictor, metrics
        self.max_wait, self.max_batch_texts, self.enabled = max_wait_ms / 1000, max_batch_texts, enabled
        self.queue: asyncio.Queue = asyncio.Queue()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoderfit-model")
        self.task: Optional[asyncio.Task] = None
        self.passes = 0

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def predict(self, texts: List[str], pairs: Optional[List[str]] = None) -> List[Dict]:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(((texts, pairs), future))
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            if self.enabled:
                deadline, size = loop.time() + self.max_wait, len(jobs[0][0][0])
                while size < self.max_batch_texts:
                    try:
                        job = await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time()))
                    except asyncio.TimeoutError:
                        break
                    jobs.append(job)
                    size += len(job[0][0])
            await self._run(jobs)
            self.passes += 1
            if self.passes % self.TRIM_EVERY == 0:
                await loop.run_in_executor(self.worker, _release_freed_memory)

    async def _run(self, jobs: list) -> None:
        """One model pass for all jobs. If it fails, each job runs again alone, so only the culprit fails (500)."""
        loop = asyncio.get_running_loop()
        texts = [t for (batch, _), _ in jobs for t in batch]
        pairs = [p for (_, more), _ in jobs for p in more] if jobs[0][0][1] is not None else None
        try:
            results = await loop.run_in_executor(self.worker, self.predictor.predict, texts, pairs)
        except Exception as err:  # never the loop: these requests, or the one that caused it, get a 500
            if len(jobs) > 1:
                log.warning("a model pass over %d requests failed (%s); running them one by one", len(jobs), err)
                for job in jobs:
                    await self._run([job])
            elif not jobs[0][1].done():
                jobs[0][1].set_exception(err)
            return
        self.metrics.batch.observe(len(texts))
        start = 0
        for (batch, _), future in jobs:
            if not future.done():  # a client that went away cancelled its future
                future.set_result(results[start : start + len(batch)])
            start += len(batch)
