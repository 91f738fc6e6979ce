"""The server's dynamic batching and its Prometheus series: concurrent requests wait for at most `max_wait_ms`,
whatever has arrived by then (up to a text and a token budget) runs as one model pass on one worker thread, and each
request gets its own answer back. A request bigger than a pass takes turns with the others, the number of requests
held is bounded, a failed pass is retried request by request so only the culprit fails, and the loop survives bugs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Dict, List, Optional, Tuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary

from ..core.device import release_freed_memory
from ..runs.predictor import Predictor

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
        self.batch_tokens = Histogram("encoderfit_batch_tokens", "Tokens per model pass (--max_batch_tokens)", registry=self.registry,
                                      buckets=tuple(2 ** i for i in range(5, 17)))
        self.queued = Gauge("encoderfit_queued_requests", "Requests waiting or being computed (at most --max_queue)",
                            registry=self.registry)
        self.shed = Counter("encoderfit_shed_requests", "Requests refused with 503 because --max_queue were waiting",
                            registry=self.registry)
        self.abandoned = Counter("encoderfit_abandoned_requests", "Requests whose client left before the answer; "
                                 "their texts not yet computed were skipped", registry=self.registry)
        self.restarts = Counter("encoderfit_batcher_restarts", "Errors that escaped the batching loop (logged; it restarted)",
                                registry=self.registry)

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


class Overloaded(Exception):
    """The batcher already holds `max_queue` requests: this one is refused (503 with Retry-After) before any work."""


class ClientGone(Exception):
    """The client disconnected before its answer: its texts not yet computed are skipped."""


@dataclass(eq=False)
class Job:
    """One request in the batcher: its texts, their cost in tokens, and how far its passes have got."""

    texts: List[str]
    pairs: Optional[List[str]]
    costs: List[int]
    future: asyncio.Future
    arrived: float  # loop time
    turn: float  # its place in line: the pass count at arrival, then (last pass that served it) + 0.5
    done: int = 0  # texts answered so far
    results: list = field(default_factory=list)


class Batcher:
    """Gathers texts from concurrent requests into shared model passes (dynamic batching), fairly and boundedly.

    A pass holds at most `max_batch_texts` texts and `max_batch_tokens` tokens (a text longer than that goes alone).
    A request bigger than one pass is answered over several, and the requests take turns: one that has waited since
    the last pass goes before one that was just served, so a small request waits for at most about one pass of a big
    one. At most `max_queue` requests are held (waiting or being computed); more raise Overloaded. Requests whose
    client went away are dropped from the line, and an error that escapes the loop (a bug) fails the requests of the
    pass it hit and restarts the loop, so no request ever waits forever."""

    TRIM_EVERY = 50  # model passes
    INLINE_CHARS = 4000  # requests up to this many characters are measured on the event loop; longer ones in a thread

    def __init__(self, predictor: Predictor, metrics: Metrics, max_wait_ms: float, max_batch_texts: int, enabled: bool,
                 max_queue: int = 128, max_batch_tokens: Optional[int] = None):
        self.predictor, self.metrics = predictor, metrics
        self.max_wait, self.max_batch_texts, self.enabled = max_wait_ms / 1000, max_batch_texts, enabled
        self.max_queue, self.max_batch_tokens = max_queue, max_batch_tokens or predictor.max_tokens
        self.waiting: List[Job] = []  # requests with texts left to compute
        self.held = 0  # requests admitted and not yet answered
        self.current: List[Tuple[Job, int, int]] = []  # the pass being formed or computed: (job, first, end) texts
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoderfit-model")
        self.measurer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoderfit-tokens")
        self.tokens = _token_counter(predictor)
        self.task: Optional[asyncio.Task] = None
        self.wakeup: Optional[asyncio.Event] = None
        self.passes = 0
        metrics.queued.set_function(lambda: self.held)

    def start(self) -> None:
        self.wakeup = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._supervise())

    async def stop(self) -> None:
        """Cancel the loop (waiting requests fail) and shut the threads down; a pass already running finishes alone."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.worker.shutdown(wait=False, cancel_futures=True)
        self.measurer.shutdown(wait=False, cancel_futures=True)

    def full(self) -> bool:
        return self.held >= self.max_queue

    def shed(self) -> str:
        """Count a request refused because the batcher is full; what to tell its client."""
        self.metrics.shed.inc()
        return f"the server is busy: {self.held} requests are already waiting (--max_queue {self.max_queue})"

    async def predict(self, texts: List[str], pairs: Optional[List[str]] = None,
                      gone: Optional[Callable[[], Awaitable]] = None) -> List[Dict]:
        """The results of `texts` (and `pairs`), computed in shared passes. `gone()`: returns when the client has
        disconnected; then ClientGone is raised and the texts not yet computed are skipped."""
        if self.full():
            raise Overloaded(self.shed())
        if self.task is None or self.task.done():
            raise RuntimeError("the batcher is not running (the server is shutting down)")
        self.held += 1
        loop = asyncio.get_running_loop()
        watch = asyncio.ensure_future(gone()) if gone is not None else None
        job = None
        try:
            if sum(map(len, texts)) + sum(map(len, pairs or ())) <= self.INLINE_CHARS:
                costs = self.tokens(texts, pairs)
            else:
                costs = await loop.run_in_executor(self.measurer, self.tokens, texts, pairs)
            job = Job(texts, pairs, costs, loop.create_future(), loop.time(), self.passes)
            self.waiting.append(job)
            self.wakeup.set()
            await asyncio.wait({job.future, self.task} | ({watch} if watch else set()), return_when=asyncio.FIRST_COMPLETED)
            if job.future.done():
                return job.future.result()
            if watch is not None and watch.done():
                self.metrics.abandoned.inc()
                raise ClientGone("the client closed the connection before its answer")
            raise RuntimeError("the batcher stopped before answering (the server is shutting down)")
        finally:
            self.held -= 1
            if job is not None and not job.future.done():
                job.future.cancel()  # the loop drops it from the line
            if watch is not None:
                watch.cancel()

    async def _supervise(self) -> None:
        """Run the loop; an exception escaping it fails the requests of the pass it hit, is logged, and the loop
        starts again. Cancelled (shutdown): every waiting request fails."""
        try:
            while True:
                try:
                    await self._loop()
                except Exception as err:  # a bug in the loop: never leave later requests waiting on a dead task
                    log.exception("the batcher's loop failed; failing the %d requests of its pass and restarting it",
                                  len(self.current))
                    self.metrics.restarts.inc()
                    for job, _, _ in self.current:
                        _fail(job, err)
                    self.current = []
                    await asyncio.sleep(0.01)  # a failure that repeats cannot spin the event loop
        finally:
            for job in self.waiting:
                _fail(job, RuntimeError("the server is shutting down"))

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._gather(loop)
            self.current = self._take()
            if self.current:
                await self._run(self.current)
            self.current = []
            self.passes += 1
            if self.passes % self.TRIM_EVERY == 0:
                await loop.run_in_executor(self.worker, release_freed_memory)

    async def _gather(self, loop) -> None:
        """Wait until some request is waiting, then (batching) until the pass is full or `max_wait_ms` has passed
        since the oldest waiting request arrived."""
        while True:
            self.waiting = [job for job in self.waiting if not job.future.done()]  # cancelled (client gone) or failed
            if self.waiting:
                break
            self.wakeup.clear()
            await self.wakeup.wait()
        while self.enabled and not self._enough():
            wait = min(job.arrived for job in self.waiting) + self.max_wait - loop.time()
            if wait <= 0:
                return
            self.wakeup.clear()
            try:
                await asyncio.wait_for(self.wakeup.wait(), wait)
            except asyncio.TimeoutError:
                return

    def _enough(self) -> bool:
        """Whether the waiting texts fill a pass already."""
        texts = tokens = 0
        for job in self.waiting:
            texts += len(job.texts) - job.done
            tokens += sum(job.costs[job.done:])
            if texts >= self.max_batch_texts or tokens >= self.max_batch_tokens:
                return True
        return False

    def _take(self) -> List[Tuple[Job, int, int]]:
        """The next pass: requests in turn order, each giving its next texts while the pass has room."""
        taken, tokens, count = [], 0, 0
        for job in sorted(self.waiting, key=lambda j: j.turn):
            if job.future.done():
                continue
            end = job.done
            while end < len(job.texts) and count < self.max_batch_texts and (
                    tokens + job.costs[end] <= self.max_batch_tokens or not taken and end == job.done):
                tokens, count, end = tokens + job.costs[end], count + 1, end + 1
            if end > job.done:
                taken.append((job, job.done, end))
                job.turn = self.passes + 0.5
            if not self.enabled and taken:  # one request per pass
                break
        if taken:
            self.metrics.batch_tokens.observe(tokens)
        return taken

    async def _run(self, taken: List[Tuple[Job, int, int]]) -> None:
        """One model pass over the taken texts. If it fails, each request's share runs again alone, so only the
        culprit fails (500)."""
        loop = asyncio.get_running_loop()
        texts = [t for job, a, b in taken for t in job.texts[a:b]]
        pairs = [p for job, a, b in taken for p in job.pairs[a:b]] if taken[0][0].pairs is not None else None
        try:
            results = await loop.run_in_executor(self.worker, self.predictor.predict, texts, pairs)
        except Exception as err:  # never the loop: these requests, or the one that caused it, get a 500
            if len(taken) > 1:
                log.warning("a model pass over %d requests failed (%s); running them one by one", len(taken), err)
                for share in taken:
                    await self._run([share])
            else:
                _fail(taken[0][0], err)
            return
        self.metrics.batch.observe(len(texts))
        self._deliver(taken, results)

    def _deliver(self, taken: List[Tuple[Job, int, int]], results: List[Dict]) -> None:
        start = 0
        for job, a, b in taken:
            job.results.extend(results[start : start + b - a])
            job.done, start = b, start + b - a
            if job.done == len(job.texts) and not job.future.done():  # a client that went away cancelled its future
                job.future.set_result(job.results)


def _fail(job: Job, err: BaseException) -> None:
    if not job.future.done():
        job.future.set_exception(err)


def _token_counter(predictor: Predictor) -> Callable[[List[str], Optional[List[str]]], List[int]]:
    """Each text's cost in tokens as the model will see it: all of it when the model reads long texts in windows,
    at most max_length when it truncates them. Measured by a copy of the tokenizer, so it never shares state with
    the model's thread; without a fast tokenizer (or for text it refuses), about 4 characters a token."""
    cap = None if predictor.info.windows else predictor.max_length
    backend = getattr(predictor.tokenizer, "backend_tokenizer", None)
    if backend is not None:
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(backend.to_str())
        backend.no_truncation()
        backend.no_padding()

    def count(texts: List[str], pairs: Optional[List[str]]) -> List[int]:
        lengths = [(len(t) + len(p)) // 4 + 3 for t, p in zip(texts, pairs or [""] * len(texts))]
        if backend is not None:
            try:
                lengths = [len(e.ids) for e in backend.encode_batch(list(zip(texts, pairs)) if pairs is not None else texts)]
            except (TypeError, ValueError):  # text it cannot take (a lone surrogate): the model pass fails for it alone
                pass
        return [min(n, cap) if cap else n for n in lengths]

    return count
