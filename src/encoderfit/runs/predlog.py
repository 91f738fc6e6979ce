"""The prediction log: one SQLite file (WAL mode) that `serve --log` and `predict --log` append predictions to,
that feedback labels join, and that `monitor` and `retrain` read (docs/monitoring.md).

Why SQLite: every commit is atomic and survives a SIGKILL of the writer (WAL, synchronous=NORMAL: only a power loss
can take back the last commits); several processes may write with a busy timeout; rows are looked up by id when
feedback arrives; pandas (`read_sql`) and DuckDB (`sqlite_scan`) read it as it is, while it is written.

    predictions(id PRIMARY KEY, time, model, source, tokens, unknown, label, score, confidence, detail, text, text_pair)
    feedback(id PRIMARY KEY, time, label, text, text_pair, source)      label: the JSON of the corrected target

Bounded (the bounds are kept in the log's `meta` table, runs/predlog_file.py): rows older than `max_days` are
deleted, and when the data passes 65% of `max_mb` the oldest predictions are deleted down to 45% of it, 5% of
`max_mb` at a time, each step checkpointed out of the write-ahead file and the file shrunk (incremental vacuum); the
write-ahead file is also checkpointed at a twentieth of `max_mb` and truncated to a tenth. What one commit writes
passes through the write-ahead file first, so rows are committed at most a twentieth of `max_mb` at a time, room is
made before rows that would pass the 65% go in, and a stored text is cut to a hundredth of `max_mb`: the database and
its write-ahead file stay under `max_mb` together (a reader holding an old snapshot open can hold a checkpoint back
meanwhile). A log file removed (or replaced) while it is written is noticed after each commit: a new log is created
at the path and the commit written again, before any answer leaves. The writer thread of a server
(runs/predlog_writer.py) commits whatever has queued up as one transaction (group commit).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..core.errors import UserError
from .predlog_file import (
    COLUMNS,
    bad_row,
    fit_wal,
    is_locked,
    locked,
    open_reader,
    open_writer,
    settle_bounds,
    stored_bounds,
)
from .predlog_file import DEFAULT_DAYS, DEFAULT_MB

log = logging.getLogger(__name__)

TRIM_AT, TRIM_TO = 0.65, 0.45  # shares of max_mb: trimming starts above the first and stops under the second (the
# margin is for the write-ahead file: deleting rows touches most pages of the random-id index, written there first)
TRIM_STEP = 0.05  # share of max_mb deleted at a time (the write-ahead file holds one step's pages, then is truncated)
AGE_CHECK_S = 60.0  # how often rows are aged out, and the bounds read again from the log (another writer may set them)
COMMIT_SHARE = 0.05  # most of max_mb one commit writes (a larger one is split): it passes through the write-ahead file
TEXT_SHARE = 0.01  # most of max_mb one stored text takes (a longer one is cut, and the log says so)
ROW_BYTES = 240  # a row's size in the file besides its texts (id twice, with the primary-key index; the figures)


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
    """One prediction log file: opened (checked first, created only where it may be, read-only for readers), written
    in transactions, kept within its bounds (stored in the log), read back. `max_mb`, `max_days`: the bounds a
    writer names (stored in the log); None: the log's own (the defaults for a new log)."""

    def __init__(self, path: Path, max_mb: Optional[float] = None, max_days: Optional[float] = None, flag: str = "--log",
                 create: bool = True, readonly: bool = False):
        self.path, self.flag, self.create, self.readonly = Path(path), flag, create and not readonly, readonly
        if (max_mb is not None and max_mb <= 0) or (max_days is not None and max_days <= 0):
            raise UserError(f"{flag}_max_mb and {flag}_max_days must be positive (got {max_mb}, {max_days})")
        self.aged = 0.0
        self.conn: Optional[sqlite3.Connection] = None
        self._open(max_mb, max_days)

    def _open(self, max_mb: Optional[float], max_days: Optional[float]) -> None:
        if self.readonly:
            self.conn, meta = open_reader(self.path, self.flag)
            mb, days = stored_bounds(meta, self.path, self.flag)
            mb, days = mb or DEFAULT_MB, days or DEFAULT_DAYS
        else:
            conn, meta = open_writer(self.path, self.flag, self.create)
            try:
                mb, days = settle_bounds(conn, meta, self.path, self.flag, max_mb, max_days)
            except BaseException:
                conn.close()
                raise
            self.conn = conn
        self.identity = self._identity()
        self._bounds(mb, days)

    def _bounds(self, max_mb: float, max_days: float) -> None:
        self.max_bytes, self.max_age = int(max_mb * 2 ** 20), max_days * 86400.0
        if not self.readonly:
            fit_wal(self.conn, self.max_bytes)

    def _identity(self) -> Optional[Tuple[int, int]]:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    # ---- writing (one thread at a time per object: the LogWriter's, or the caller's)

    def _reconnect(self) -> None:
        """After a re-creation that failed (its directory was gone too): try again, with the same bounds."""
        if self.conn is None:
            self._open(self.max_bytes / 2 ** 20, self.max_age / 86400.0)

    def _commit(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            out = work(self.conn)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return out

    def transaction(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        """`work(conn)` in one transaction, committed; then the file is checked to be still the one at the path: a log
        removed or replaced meanwhile (its commits would go to a file nobody can read) is created anew and the work
        done again there, before the caller acknowledges anything."""
        self._reconnect()
        out = self._commit(work)
        if self.identity is not None and self._identity() == self.identity:
            return out
        log.warning("prediction log %s was removed or replaced while written: a new log is created there (with the "
                    "same bounds) and the last commit written to it", self.path)
        self.close()
        self._open(self.max_bytes / 2 ** 20, self.max_age / 86400.0)  # a missing directory: UserError, the caller fails
        out = self._commit(work)
        if self._identity() != self.identity:
            raise OSError(f"the prediction log {self.path} was removed again while it was written")
        return out

    def append(self, rows: List[Dict]) -> None:
        """Insert prediction rows, committed before returning (a twentieth of max_mb a commit, room made first);
        then keep the bounds. A failure takes back the rows committed so far."""
        self.fit_texts(rows)
        done: List[str] = []
        try:
            for part in split_rows(rows, self.commit_bytes()):
                self.make_room(rows_bytes(part))
                self.transaction(lambda c: insert_predictions(c, part))
                done.extend(r["id"] for r in part)
        except BaseException:
            self.forget(done)
            raise
        self.keep_bounds()

    def add_feedback(self, rows: List[Dict]) -> List[bool]:
        """Feedback rows ({id or text, label (JSON-able), ...}); each one's result: stored (True) or its id is not in
        the log (False). A row with a text and no id gets the text's own id (`text_id`)."""
        out = self.transaction(lambda c: insert_feedback(c, rows))
        self.keep_bounds()
        return out

    def forget(self, ids: List[str]) -> None:
        """Prediction rows of a request that failed after part of it was committed: deleted (best effort)."""
        try:
            for start in range(0, len(ids), 500):
                part = ids[start:start + 500]
                self.transaction(lambda c: c.execute(f"DELETE FROM predictions WHERE id IN ({', '.join('?' * len(part))})", part))
        except Exception:
            log.exception("taking back %d prediction rows of a failed write failed; they stay in %s", len(ids), self.path)

    def commit_bytes(self) -> int:
        """Most bytes of rows one commit writes."""
        return max(int(COMMIT_SHARE * self.max_bytes), 16 * 1024)

    def fit_texts(self, rows: List[Dict]) -> int:
        """Texts longer than a hundredth of max_mb cut to that many bytes (in place; said in the log); how many."""
        most, cut = max(int(TEXT_SHARE * self.max_bytes), 1024), 0
        for row in rows:
            for key in ("text", "text_pair"):
                value = row.get(key)
                if isinstance(value, str) and len(value) > most // 4:
                    raw = value.encode("utf-8", "replace")
                    if len(raw) > most:
                        row[key] = raw[:most].decode("utf-8", "ignore")
                        cut += 1
        if cut:
            log.warning("prediction log %s: %d text(s) longer than %d kB (a hundredth of %s_max_mb %g) stored cut to that "
                        "length", self.path, cut, most // 1024, self.flag, self.max_bytes / 2 ** 20)
        return cut

    def make_room(self, incoming: int) -> None:
        """Before rows of `incoming` bytes go in: the oldest deleted if they would take the data past 65% of max_mb."""
        self._reconnect()
        if self._used() + incoming > TRIM_AT * self.max_bytes:
            self._trim(TRIM_TO * self.max_bytes - incoming)

    def keep_bounds(self) -> None:
        self._reconnect()
        now = time.time()
        if now - self.aged > AGE_CHECK_S:
            self.aged = now
            self._reread_bounds()
            cutoff = now - self.max_age
            self.transaction(lambda c: (c.execute("DELETE FROM predictions WHERE time < ?", (cutoff,)),
                                        c.execute("DELETE FROM feedback WHERE time < ?", (cutoff,))))
        if self._used() > TRIM_AT * self.max_bytes:
            self._trim(TRIM_TO * self.max_bytes)

    def _reread_bounds(self) -> None:
        """The bounds the log holds now (a writer started since with other ones stored them)."""
        meta = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
        mb, days = stored_bounds(meta, self.path, self.flag)
        if mb is not None and days is not None and (int(mb * 2 ** 20), days * 86400.0) != (self.max_bytes, self.max_age):
            log.info("prediction log %s: its bounds are now %g MB and %g days (stored by another writer)", self.path, mb, days)
            self._bounds(mb, days)

    def _trim(self, target: float) -> None:
        used, dropped = self._used(), 0
        while used > max(target, 0):  # in steps of TRIM_STEP of the bound: each step's pages pass through the
            rows = self.conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]  # write-ahead file, truncated after it
            if not rows:
                break
            drop = max(1, int(rows * min(used - max(target, 0), TRIM_STEP * self.max_bytes) / used))
            self.transaction(lambda c: (
                c.execute("DELETE FROM predictions WHERE rowid IN (SELECT rowid FROM predictions ORDER BY time LIMIT ?)", (drop,)),
                c.execute("DELETE FROM feedback WHERE text IS NULL AND id NOT IN (SELECT id FROM predictions)")))
            self.conn.execute("PRAGMA incremental_vacuum").fetchall()  # one page per row read: read them all
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            dropped, used = dropped + drop, self._used()
        if dropped:
            log.info("prediction log %s: %d oldest predictions deleted to stay under %.1f MB", self.path, dropped, self.max_bytes / 2 ** 20)

    def _used(self) -> int:
        page, pages, free = (self.conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_size", "page_count", "freelist_count"))
        return (pages - free) * page

    # ---- reading

    def _query(self, sql: str, args=()):
        import pandas as pd

        try:
            return pd.read_sql_query(sql, self.conn, params=list(args))
        except Exception as err:  # pandas wraps sqlite3's errors in its own
            if is_locked(err):
                raise locked(self.path, self.flag) from None
            raise

    def check_rows(self, table: str, where: str = "", args: tuple = ()) -> None:
        """UserError naming the first row (id and column) that a hand edit left unreadable."""
        try:
            problem = bad_row(self.conn, table, where, args)
        except sqlite3.OperationalError as err:
            if is_locked(err):
                raise locked(self.path, self.flag) from None
            raise
        if problem is not None:
            raise UserError(f"{self.flag}: {self.path}: {problem[1]} (edited by hand?); correct that value, or delete the "
                            f"row: sqlite3 {self.path} \"DELETE FROM {table} WHERE id = '{problem[0]}'\"")

    def frame(self, table: str = "predictions", since: Optional[float] = None, until: Optional[float] = None):
        """A table as a pandas DataFrame, rows by time (those from `since` to `until`, epoch seconds)."""
        where, args = [], []
        if since is not None:
            where.append("time >= ?")
            args.append(since)
        if until is not None:
            where.append("time < ?")
            args.append(until)
        self.check_rows(table, " AND ".join(where), tuple(args))
        sql = f"SELECT * FROM {table}" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY time"
        return self._query(sql, args)

    def labelled(self):
        """Every feedback label with its prediction where the log has one: DataFrame of id, label (JSON), text,
        text_pair (the feedback's own, else the logged one), predicted (the logged decision), score, model, time (of the
        feedback), predicted_time (of the prediction)."""
        self.check_rows("feedback")
        self.check_rows("predictions", "id IN (SELECT id FROM feedback)")
        return self._query(
            "SELECT f.id AS id, f.label AS label, COALESCE(f.text, p.text) AS text, COALESCE(f.text_pair, p.text_pair) "
            "AS text_pair, p.label AS predicted, p.score AS score, p.model AS model, f.time AS time, p.time AS predicted_time "
            "FROM feedback f "
            "LEFT JOIN predictions p ON p.id = f.id ORDER BY f.time")


def rows_bytes(rows: List[Dict]) -> int:
    """About how many bytes rows take in the file."""
    return sum(ROW_BYTES + sum(len(v) if v.isascii() else len(v.encode("utf-8", "replace")) for v in row.values()
                               if isinstance(v, str)) for row in rows)


def split_rows(rows: List[Dict], most: int) -> List[List[Dict]]:
    """Rows in consecutive parts of at most `most` bytes each (`rows_bytes`; a row larger alone is a part alone)."""
    parts: List[List[Dict]] = [[]]
    size = 0
    for row in rows:
        n = rows_bytes([row])
        if parts[-1] and size + n > most:
            parts.append([])
            size = 0
        parts[-1].append(row)
        size += n
    return parts if parts[0] else []


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


def log_batch(store: PredictionLog, predictor, model_dir, texts: Sequence[str], pairs: Optional[Sequence[str]],
              results: List[Dict], keep_texts: bool) -> List[Dict]:
    """`predict --log`: a batch job's results appended to the log (committed), each returned with its "id"."""
    ids = [new_id() for _ in results]
    store.append(prediction_rows(predictor.task, results, texts, pairs, TokenStats(predictor.tokenizer),
                                 model_dir.fingerprint(), "predict", keep_texts, ids))
    log.info("logged %d predictions to %s", len(results), store.path)
    return [{"id": i, **r} for i, r in zip(ids, results)]
