"""`serve --log PATH`: every answered prediction in the prediction log (runs/predlog.py) before its answer leaves,
`POST /v1/feedback` for corrected labels, and Prometheus gauges of the latest predictions (label shares, confidence,
length, unknown tokens) for dashboards and alerts between `encoderfit monitor` runs.

The guarantee: a 200 from /v1/predict means its rows are committed to the file at the --log path (the writer thread
commits whatever requests are waiting together, runs/predlog_writer.py; a log removed meanwhile is created anew
first); a request whose rows cannot be written gets a 503 (the log is behind) or a 500, never an unlogged answer,
and one request's bad rows fail only that request. What SQLite cannot store (an id or label that is not valid
Unicode) is refused with a 422 before it is queued. Each result carries its "id", which feedback names.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict

from ..runs.predlog import PredictionLog, TokenStats, new_id, prediction_rows
from ..runs.predlog_writer import Busy, LogWriter
from .http import error_response, unencodable

log = logging.getLogger(__name__)
WINDOW = 1000  # predictions the gauges summarise


class Window:
    """The latest `size` logged predictions, summarised when Prometheus scrapes (gauges computed on read)."""

    def __init__(self, registry, labels: List[str], size: int = WINDOW):
        from prometheus_client import Gauge

        self.rows: collections.deque = collections.deque(maxlen=size)
        self.lock = threading.Lock()
        share = Gauge("encoderfit_window_label_share", f"Share of the last {size} logged predictions with each label",
                      ["label"], registry=registry)
        for label in labels:
            share.labels(label).set_function(lambda label=label: self._share(label))
        for name, column, what in (("confidence", "confidence", "Mean confidence"), ("tokens", "tokens", "Mean length in tokens"),
                                   ("unknown_share", "unknown", "Mean share of unknown tokens")):
            gauge = Gauge(f"encoderfit_window_{name}", f"{what} of the last {size} logged predictions", registry=registry)
            gauge.set_function(lambda column=column: self._mean(column))
        Gauge("encoderfit_window_predictions", "Logged predictions the window gauges summarise", registry=registry
              ).set_function(lambda: len(self.rows))

    def add(self, rows: List[Dict]) -> None:
        with self.lock:
            self.rows.extend({"label": r["label"], "confidence": r["confidence"], "tokens": r["tokens"],
                              "unknown": r["unknown"]} for r in rows)

    def _values(self, column: str) -> list:
        with self.lock:
            return [r[column] for r in self.rows if r[column] is not None]

    def _mean(self, column: str) -> float:
        values = self._values(column)
        return sum(values) / len(values) if values else float("nan")

    def _share(self, label: str) -> float:
        values = self._values("label")
        return sum(label in v.split("|") for v in values) / len(values) if values else float("nan")


def check_log(path: Path, max_mb: Optional[float], max_days: Optional[float]) -> None:
    """A bad --log path or bound, as a one-line error before the model loads (a new log is created, with the bounds)."""
    PredictionLog(path, max_mb, max_days).close()


def served_log(path: Path, run: Path, predictor, keep_texts: bool, max_mb: Optional[float],
               max_days: Optional[float]) -> "ServedLog":
    """The log of `serve RUN --log PATH`, its rows stamped with the fingerprint of the model served (an ONNX export's:
    the model it was exported from, runs/rundir.py)."""
    from ..runs.rundir import locate

    source = getattr(predictor, "source", None) or locate(run)[1]
    return ServedLog(path, predictor, keep_texts, max_mb, max_days, source.fingerprint())


class ServedLog:
    """The server's prediction log: the store, its writer thread, the token figures, the model's fingerprint."""

    def __init__(self, path: Path, predictor, keep_texts: bool = False, max_mb: Optional[float] = None,
                 max_days: Optional[float] = None, fingerprint: str = "", max_pending: int = 1024):
        self.store = PredictionLog(path, max_mb, max_days)
        self.predictor, self.keep_texts, self.fingerprint = predictor, keep_texts, fingerprint
        self.stats = TokenStats(predictor.tokenizer)
        self.window: Optional[Window] = None
        self.writer = LogWriter(self.store, max_pending, after=self._after)

    def _after(self, rows: List[Dict]) -> None:
        if self.window is not None:
            self.window.add(rows)

    def start(self, registry) -> None:
        self.window = Window(registry, self.predictor.labels)
        self.writer.start()

    def stop(self) -> None:
        self.writer.stop()

    async def record(self, texts: List[str], pairs: Optional[List[str]], results: List[Dict]) -> List[Dict]:
        """The results with their ids, once their rows are committed. Busy: the writer's queue is full."""
        ids = [new_id() for _ in results]
        task = self.predictor.task

        def rows():
            return prediction_rows(task, results, texts, pairs, self.stats, self.fingerprint, "serve", self.keep_texts, ids)

        await asyncio.wrap_future(self.writer.submit("predictions", rows))
        return [{"id": i, **r} for i, r in zip(ids, results)]

    async def feedback(self, rows: List[Dict]) -> List[bool]:
        return await asyncio.wrap_future(self.writer.submit("feedback", lambda: rows))


class FeedbackRequest(BaseModel):
    """{"id": "<the id of a logged prediction>", "label": <the right answer: a label, a list of labels, a number>}."""

    model_config = ConfigDict(extra="forbid")
    id: str
    label: Any


def add_log_routes(app: FastAPI, served: Optional[ServedLog], predictor, busy) -> None:
    """POST /v1/feedback. `busy(message)`: the 503 response when the log's queue is full."""

    @app.post("/v1/feedback")
    async def feedback(body: FeedbackRequest, request: Request):
        if served is None:
            return error_response(404, "feedback needs the prediction log: start the server with --log PATH")
        refused = not_storable(body.id, "id") or not_storable(json.dumps(body.label, ensure_ascii=False), "label")
        if refused is not None:  # before the queue: SQLite cannot store it, and the message must not echo it
            return refused
        try:
            label = predictor.task.decoding.feedback_value(body.label, predictor.labels)
        except ValueError as err:
            return error_response(422, f"label: {err}")
        try:
            stored = await served.feedback([{"id": body.id, "label": label, "source": "api"}])
        except Busy as err:
            return busy(str(err))
        if not stored[0]:
            return error_response(404, f"id '{body.id[:80]}' is not in the prediction log; send the id a /v1/predict answer gave")
        return {"id": body.id, "label": label, "stored": True}


def not_storable(text: str, field: str):
    """The 422 for a field that UTF-8 cannot encode (a lone surrogate such as "\\ud800"), or None."""
    bad = unencodable(text)
    if bad is None:
        return None
    return error_response(422, f"{field}: holds a lone surrogate (such as \\ud800), not valid Unicode; send UTF-8 text")
