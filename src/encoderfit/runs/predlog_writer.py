"""The thread that writes a server's prediction log (runs/predlog.py): requests queue up, each round commits what
waits as few transactions as the log's size bound allows (group commit), and one bad item fails only itself.

A round's rows go in commits of at most a twentieth of the log's `max_mb` (a larger request is split over several,
its answer waiting for all of them), room made before each. When a commit fails for something in its rows (a value
SQLite cannot store, an id already there), it is rolled back and its items are written one at a time, so only the
bad one fails; when it fails for the file (disk full, locked, gone for good), every item in it fails (a 500) and the
next round tries again.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import sqlite3
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..core.errors import UserError
from .predlog import PredictionLog, insert_feedback, insert_predictions, rows_bytes, split_rows

log = logging.getLogger(__name__)
FILE_ERRORS = (sqlite3.OperationalError, UserError, OSError)  # the file's fault, not one item's: retrying alone won't help


class Busy(Exception):
    """The log writer's queue is full: the request is refused (503) rather than answered unlogged."""


class Item:
    """One queued request: its rows, its future, what its commits gave and whether one failed."""

    def __init__(self, kind: str, rows: List[Dict], future: concurrent.futures.Future):
        self.kind, self.rows, self.future = kind, rows, future
        self.result: List[Any] = []
        self.committed: List[str] = []
        self.error: Optional[BaseException] = None

    def done(self, part: List[Dict], result) -> None:
        if self.kind == "predictions":
            self.committed.extend(r["id"] for r in part)
        else:
            self.result.extend(result)


class LogWriter:
    """The thread that owns a PredictionLog while a server runs: work items queue up (at most `max_pending`), and
    each round takes all that are waiting, writes them and commits before resolving their futures, so an answer that
    waited for its future is in the file."""

    MAX_ROUND = 512

    def __init__(self, store: PredictionLog, max_pending: int = 1024, after: Optional[Callable[[List[Dict]], None]] = None):
        self.store, self.after = store, after
        self.queue: "queue.Queue" = queue.Queue(maxsize=max_pending)
        self.thread = threading.Thread(target=self._loop, name="encoderfit-log", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=30)
        self.store.close()

    def submit(self, kind: str, work: Callable[[], List[Dict]]) -> concurrent.futures.Future:
        """`kind`: "predictions" (work() gives the rows) or "feedback" (work() gives feedback rows; the future's
        result: each row stored or not). Raises Busy when the queue is full."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            self.queue.put_nowait((kind, work, future))
        except queue.Full:
            raise Busy(f"the prediction log is behind ({self.queue.maxsize} writes waiting)") from None
        return future

    def _loop(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.MAX_ROUND:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self.queue.put(None)
                    break
                batch.append(item)
            try:
                self._round(batch)
            except Exception as err:  # a bug here must not leave requests waiting for ever
                log.exception("the prediction log's writer failed a round")
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(err)

    def _round(self, batch) -> None:
        items = []
        for kind, work, future in batch:
            try:
                items.append(Item(kind, work(), future))
            except Exception as err:  # building one request's rows failed: that request alone fails
                future.set_exception(err)
        self.store.fit_texts([r for item in items if item.kind == "predictions" for r in item.rows])
        for chunk in self._chunks(items):
            self._write(chunk)
        written = []
        for item in items:
            if item.error is not None:
                self.store.forget(item.committed)  # the parts of a split request that did go in
                item.future.set_exception(item.error)
            else:
                item.future.set_result(item.result if item.kind == "feedback" else None)
                written.extend(item.rows if item.kind == "predictions" else [])
        try:
            if self.after is not None and written:
                self.after(written)
            self.store.keep_bounds()
        except Exception:  # committed already; a failed trim is retried after the next round
            log.exception("keeping the prediction log within its bounds failed")

    def _chunks(self, items: List[Item]) -> List[List[Tuple[Item, List[Dict]]]]:
        """The round's rows in commits of at most the log's commit size (a request's rows split where they pass it)."""
        most = self.store.commit_bytes()
        chunks: List[List[Tuple[Item, List[Dict]]]] = [[]]
        size = 0
        for item in items:
            for part in split_rows(item.rows, most) if item.kind == "predictions" else [item.rows]:
                n = rows_bytes(part)
                if chunks[-1] and size + n > most:
                    chunks.append([])
                    size = 0
                chunks[-1].append((item, part))
                size += n
        return [c for c in chunks if c]

    def _write(self, chunk: List[Tuple[Item, List[Dict]]]) -> None:
        live = [(item, part) for item, part in chunk if item.error is None]
        if not live:
            return
        try:
            self.store.make_room(sum(rows_bytes(part) for _, part in live))
        except Exception:  # the rows still go in: a trim that failed is tried again after the round
            log.exception("making room in the prediction log failed")

        def run(conn):
            return [insert_predictions(conn, part) if item.kind == "predictions" else insert_feedback(conn, part)
                    for item, part in live]

        try:
            results = self.store.transaction(run)
        except FILE_ERRORS as err:  # the disk is full, the file locked or gone for good: these fail (500), later ones retry
            log.exception("writing %d requests to the prediction log failed", len(live))
            for item, _ in live:
                item.error = err
            return
        except Exception as err:  # something in the rows: rolled back; each written alone, so only the bad one fails
            if len(live) == 1:
                log.warning("a request's rows could not be written to the prediction log (%s: %s); that request fails",
                            type(err).__name__, err)
                live[0][0].error = err
                return
            log.warning("writing %d requests to the prediction log failed (%s: %s): they are written one at a time, so "
                        "only the bad one fails", len(live), type(err).__name__, err)
            for one in live:
                self._write([one])
            return
        for (item, part), result in zip(live, results):
            item.done(part, result)
