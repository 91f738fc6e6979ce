"""The prediction log: one SQLite file (WAL mode) that `serve --log` and `predict --log` append predictions to,
that feedback labels join, and that `monitor` and `retrain` read (docs/monitoring.md).

Why SQLite: every commit is atomic and survives a SIGKILL of the writer (WAL, synchronous=NORMAL: only a power loss
can take back the last commits); several processes may write with a busy timeout; rows are looked up by id when
feedback arrives; pandas (`read_sql`) and DuckDB (`sqlite_scan`) read it as it is, while it is written.

    predictions(id PRIMARY KEY, time, model, source, tokens, unknown, label, score, confidence, detail, text, text_pair)
    feedback(id PRIMARY KEY, time, label, text, text_pair, source)      label: the JSON of the corrected target

Bounded: rows older than `max_days` are deleted, and when the data passes 65% of `max_mb` the oldest predictions
are deleted down to 45% of it, 5% of `max_mb` at a time, each step checkpointed out of the write-ahead file and the
file shrunk (incremental vacuum); the write-ahead file is also checkpointed at a twentieth of `max_mb` and truncated
to a tenth, so the database and its write-ahead file stay under `max_mb` together (a reader holding an old snapshot
open can hold a checkpoint back meanwhile). The writer thread (`LogWriter`) commits whatever has queued up as one
transaction (group commit), so a commit per request costs little under load.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import queue
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..core.errors import UserError

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (id TEXT PRIMARY KEY, time REAL NOT NULL, model TEXT, source TEXT,
    tokens INTEGER, unknown REAL, label TEXT, score REAL, confidence REAL, detail TEXT, text TEXT, text_pair TEXT);
CREATE INDEX IF NOT EXISTS predictions_time ON predictions(time);
CREATE TABLE IF NOT EXISTS feedback (id TEXT PRIMARY KEY, time REAL NOT NULL, label TEXT NOT NULL, text TEXT,
    text_pair TEXT, source TEXT);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""
COLUMNS = ("id", "time", "model", "source", "tokens", "unknown", "label", "score", "confidence", "detail", "text", "text_pair")
VERSION = "1"
TRIM_AT, TRIM_TO = 0.65, 0.45  # shares of max_mb: trimming starts above the first and stops under the second (the
# margin is for the write-ahead file: deleting rows touches most pages of the random-id index, written there first)
TRIM_STEP = 0.05  # share of max_mb deleted at a time (the write-ahead file holds one step's pages, then is truncated)
AGE_CHECK_S = 60.0


def new_id() -> str:
    return uuid.uuid4().hex


def text_id(text: str, pair: Optional[str] = None) -> str:
    """The feedback id of a text given without a prediction id: the same text always gets the same id."""
    return "text-" + hashlib.sha256(json.dumps([text, pair], ensure_ascii=False).encode()).hexdigest()[:32]


class TokenStats:
    """Each text's length in sub-word tokens (not truncated) and the share of them that are the unknown token, as the
    model's tokenizer reads it; a copy of the fast tokenizer, so it shares no state with the model's thread."""

    def __init__(self, tokenizer):
        self.unk = getattr(tokenizer, "unk_token_id", None)
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self.slow = tokenizer if backend is None else None
        if backend is not None:
            from tokenizers import Tokenizer

            self.backend = Tokenizer.from_str(backend.to_str())
            self.backend.no_truncation()
            self.backend.no_padding()

    def __call__(self, texts: Sequence[str], pairs: Optional[Sequence[str]] = None) -> Tuple[List[int], List[float]]:
        if self.slow is not None:
            ids = self.slow(list(texts), list(pairs) if pairs is not None else None, truncation=False)["input_ids"]
            words = [list(i) for i in ids]
        else:
            encoded = self.backend.encode_batch(list(zip(texts, pairs)) if pairs is not None else list(texts))
            words = [[t for t, special in zip(e.ids, e.special_tokens_mask) if not special] for e in encoded]
        lengths = [len(w) for w in words]
        unknown = [(sum(t == self.unk for t in w) / len(w)) if w and self.unk is not None else 0.0 for w in words]
        return lengths, unknown


def prediction_rows(task, results: List[Dict], texts: Sequence[str], pairs: Optional[Sequence[str]], stats: TokenStats,
                    model: str, source: str, keep_texts: bool, ids: Sequence[str]) -> List[Dict]:
    """One log row per result: what the task says of it (`Decoding.monitored`), the text's token figures, and the
    text itself only with `keep_texts`."""
    lengths, unknown = stats(texts, pairs)
    now = time.time()
    rows = []
    for i, result in enumerate(results):
        seen = task.decoding.monitored(result)
        rows.append({"id": ids[i], "time": now, "model": model, "source": source, "tokens": lengths[i], "unknown": unknown[i],
                     "label": seen["label"], "score": seen["score"], "confidence": seen["confidence"],
                     "detail": json.dumps(seen["detail"]) if seen["detail"] is not None else None,
                     "text": texts[i] if keep_texts else None,
                     "text_pair": pairs[i] if keep_texts and pairs is not None else None})
    return rows


class PredictionLog:
    """One prediction log file: opened (created with its schema, or checked), written in transactions, kept within
    its bounds, read back."""

    def __init__(self, path: Path, max_mb: float = 1024.0, max_days: float = 30.0, flag: str = "--log", create: bool = True):
        self.path, self.flag = Path(path), flag
        if max_mb <= 0 or max_days <= 0:
            raise UserError(f"{flag}_max_mb and {flag}_max_days must be positive (got {max_mb:g}, {max_days:g})")
        self.max_bytes, self.max_age = int(max_mb * 2 ** 20), max_days * 86400.0
        if self.path.is_dir():
            raise UserError(f"{flag}: {self.path} is a directory; give a file name such as {self.path / 'predictions.db'}")
        if not self.path.exists() and not create:
            raise UserError(f"{flag}: {self.path} does not exist; start the server with --log {self.path} (or predict --log) first")
        if not self.path.parent.is_dir():
            raise UserError(f"{flag}: directory {self.path.parent} does not exist; create it or choose another path")
        self.conn = self._open()
        self.aged = 0.0

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect on a new file only: before the tables
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            page = conn.execute("PRAGMA page_size").fetchone()[0]
            limit = max(self.max_bytes // 10, 64 * 1024)
            conn.execute(f"PRAGMA journal_size_limit={limit}")
            conn.execute(f"PRAGMA wal_autocheckpoint={max(8, limit // page // 2)}")
            conn.executescript(SCHEMA)
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('version', ?)", (VERSION,))
            have = [r[1] for r in conn.execute("PRAGMA table_info(predictions)")]
        except sqlite3.DatabaseError as err:
            raise UserError(f"{self.flag}: {self.path} is not a prediction log ({err}); give a new file name") from None
        if mode.lower() != "wal" or tuple(have) != COLUMNS:
            raise UserError(f"{self.flag}: {self.path} is not a prediction log written by encoderfit (its predictions "
                            f"table has columns {have}); give a new file name")
        return conn

    def close(self) -> None:
        self.conn.close()

    # ---- writing (one thread at a time per object: the LogWriter's, or the caller's)

    def transaction(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            out = work(self.conn)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return out

    def append(self, rows: List[Dict]) -> None:
        """Insert prediction rows, committed before returning; then keep the bounds."""
        self.transaction(lambda c: insert_predictions(c, rows))
        self.keep_bounds()

    def add_feedback(self, rows: List[Dict]) -> List[bool]:
        """Feedback rows ({id or text, label (JSON-able), ...}); each one's result: stored (True) or its id is not in
        the log (False). A row with a text and no id gets the text's own id (`text_id`)."""
        out = self.transaction(lambda c: insert_feedback(c, rows))
        self.keep_bounds()
        return out

    def keep_bounds(self) -> None:
        now = time.time()
        if now - self.aged > AGE_CHECK_S:
            self.aged = now
            cutoff = now - self.max_age
            self.transaction(lambda c: (c.execute("DELETE FROM predictions WHERE time < ?", (cutoff,)),
                                        c.execute("DELETE FROM feedback WHERE time < ?", (cutoff,))))
        used = self._used()
        if used <= TRIM_AT * self.max_bytes:
            return
        dropped = 0
        while used > TRIM_TO * self.max_bytes:  # in steps of TRIM_STEP of the bound: each step's pages pass through the
            rows = self.conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]  # write-ahead file, truncated after it
            if not rows:
                break
            drop = max(1, int(rows * min(used - TRIM_TO * self.max_bytes, TRIM_STEP * self.max_bytes) / used))
            self.transaction(lambda c: (
                c.execute("DELETE FROM predictions WHERE rowid IN (SELECT rowid FROM predictions ORDER BY time LIMIT ?)", (drop,)),
                c.execute("DELETE FROM feedback WHERE text IS NULL AND id NOT IN (SELECT id FROM predictions)")))
            self.conn.execute("PRAGMA incremental_vacuum").fetchall()  # one page per row read: read them all
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            dropped, used = dropped + drop, self._used()
        log.info("prediction log %s: %d oldest predictions deleted to stay under %.1f MB", self.path, dropped, self.max_bytes / 2 ** 20)

    def _used(self) -> int:
        page, pages, free = (self.conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_size", "page_count", "freelist_count"))
        return (pages - free) * page

    # ---- reading

    def frame(self, table: str = "predictions", since: Optional[float] = None, until: Optional[float] = None):
        """A table as a pandas DataFrame, rows by time (those from `since` to `until`, epoch seconds)."""
        import pandas as pd

        where, args = [], []
        if since is not None:
            where.append("time >= ?")
            args.append(since)
        if until is not None:
            where.append("time < ?")
            args.append(until)
        sql = f"SELECT * FROM {table}" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY time"
        return pd.read_sql_query(sql, self.conn, params=args)

    def labelled(self):
        """Every feedback label with its prediction where the log has one: DataFrame of id, label (JSON), text,
        text_pair (the feedback's own, else the logged one), predicted (the logged decision), score, model, time (of the
        feedback), predicted_time (of the prediction)."""
        import pandas as pd

        return pd.read_sql_query(
            "SELECT f.id AS id, f.label AS label, COALESCE(f.text, p.text) AS text, COALESCE(f.text_pair, p.text_pair) "
            "AS text_pair, p.label AS predicted, p.score AS score, p.model AS model, f.time AS time, p.time AS predicted_time "
            "FROM feedback f "
            "LEFT JOIN predictions p ON p.id = f.id ORDER BY f.time", self.conn)


def insert_predictions(conn: sqlite3.Connection, rows: List[Dict]) -> None:
    conn.executemany(f"INSERT INTO predictions VALUES ({', '.join('?' * len(COLUMNS))})", [tuple(r[c] for c in COLUMNS) for r in rows])


def insert_feedback(conn: sqlite3.Connection, rows: List[Dict], model: Optional[str] = None) -> List[bool]:
    """`model` (a fingerprint): a text joins that model's own newest prediction of it only."""
    out = []
    for row in rows:
        given = row.get("id")
        if given is None and row.get("text") is not None:  # a text given without an id: its logged prediction, if any
            own, args = (" AND model = ?", (model,)) if model is not None else ("", ())
            found = conn.execute(f"SELECT id FROM predictions WHERE text = ? AND text_pair IS ?{own} ORDER BY time DESC LIMIT 1",
                                 (row["text"], row.get("text_pair"), *args)).fetchone()
            given = found[0] if found else None
        if given is not None and conn.execute("SELECT 1 FROM predictions WHERE id = ?", (given,)).fetchone() is None:
            out.append(False)
            continue
        key = given if given is not None else text_id(row["text"], row.get("text_pair"))
        conn.execute("INSERT OR REPLACE INTO feedback VALUES (?, ?, ?, ?, ?, ?)",
                     (key, row.get("time", time.time()), json.dumps(row["label"], ensure_ascii=False), row.get("text"),
                      row.get("text_pair"), row.get("source", "api")))
        out.append(True)
    return out


class Busy(Exception):
    """The log writer's queue is full: the request is refused (503) rather than answered unlogged."""


class LogWriter:
    """The thread that owns a PredictionLog while a server runs: work items queue up (at most `max_pending`), and
    each round takes all that are waiting, does them in one transaction and commits before resolving their futures,
    so an answer that waited for its future is in the file."""

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
            self._round(batch)

    def _round(self, batch) -> None:
        prepared, written = [], []
        for kind, work, future in batch:
            try:
                prepared.append((kind, work(), future))
            except Exception as err:  # building one request's rows failed: that request alone fails
                future.set_exception(err)

        def run(conn):
            out = []
            for kind, rows, _ in prepared:
                if kind == "predictions":
                    insert_predictions(conn, rows)
                    written.extend(rows)
                    out.append(None)
                else:
                    out.append(insert_feedback(conn, rows))
            return out

        try:
            results = self.store.transaction(run) if prepared else []
        except Exception as err:  # the disk is full, the file was removed: these requests fail (500), later ones retry
            log.exception("writing %d items to the prediction log failed", len(prepared))
            for _, _, future in prepared:
                future.set_exception(err)
            return
        for (_, _, future), result in zip(prepared, results):
            future.set_result(result)
        try:
            if self.after is not None and written:
                self.after(written)
            self.store.keep_bounds()
        except Exception:  # committed already; a failed trim is retried after the next round
            log.exception("keeping the prediction log within its bounds failed")


def log_batch(store: PredictionLog, predictor, model_dir, texts: Sequence[str], pairs: Optional[Sequence[str]],
              results: List[Dict], keep_texts: bool) -> List[Dict]:
    """`predict --log`: a batch job's results appended to the log (committed), each returned with its "id"."""
    ids = [new_id() for _ in results]
    store.append(prediction_rows(predictor.task, results, texts, pairs, TokenStats(predictor.tokenizer),
                                 model_dir.fingerprint(), "predict", keep_texts, ids))
    log.info("logged %d predictions to %s", len(results), store.path)
    return [{"id": i, **r} for i, r in zip(ids, results)]
