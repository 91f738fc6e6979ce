"""The prediction log's file (runs/predlog.py): what counts as one, how it is opened, created and bounded.

A prediction log is an SQLite file whose `meta` table carries `version` and whose `predictions` and `feedback`
tables have encoderfit's columns; anything else (another application's database, a text file, a directory) is
refused with one line and left exactly as it was: it is first read through a read-only connection (`immutable`
while no write-ahead file exists, so not even a `-wal`/`-shm` file is created beside it). Only a missing path or,
for writers that may create a log (serve, predict), an empty file becomes a new log. Readers (monitor, retrain)
keep the read-only connection: in WAL mode they need no lock, so a writer mid-transaction does not hold them up;
a process that keeps the file locked to itself is named at once. The log's bounds (`max_mb`, `max_days`) live in
`meta`: a writer that does not name them keeps the stored ones, one that names them stores them.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from pathlib import Path
from typing import Dict, Optional, Tuple

from ..core.errors import UserError

log = logging.getLogger(__name__)

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS predictions (id TEXT PRIMARY KEY, time REAL NOT NULL, model TEXT, source TEXT, "
    "tokens INTEGER, unknown REAL, label TEXT, score REAL, confidence REAL, detail TEXT, text TEXT, text_pair TEXT)",
    "CREATE INDEX IF NOT EXISTS predictions_time ON predictions(time)",
    "CREATE TABLE IF NOT EXISTS feedback (id TEXT PRIMARY KEY, time REAL NOT NULL, label TEXT NOT NULL, text TEXT, "
    "text_pair TEXT, source TEXT)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
)
COLUMNS = ("id", "time", "model", "source", "tokens", "unknown", "label", "score", "confidence", "detail", "text", "text_pair")
FEEDBACK_COLUMNS = ("id", "time", "label", "text", "text_pair", "source")
VERSION = "1"
MAGIC = b"SQLite format 3\x00"
APPLICATION_ID = 0x45464C47  # "EFLG" in the file header (`PRAGMA application_id`): logs created from now on carry it
DEFAULT_MB, DEFAULT_DAYS = 1024.0, 30.0
READ_WAIT_S, WRITE_WAIT_S = 2.0, 30.0  # a reader waits only for a lock no WAL reader should meet; writers queue up
NUMBERS = {"predictions": ("time", "tokens", "unknown", "score", "confidence"), "feedback": ("time",)}
TEXTS = {"predictions": ("model", "source", "label", "text", "text_pair"), "feedback": ("text", "text_pair", "source")}
JSONS = {"predictions": ("detail",), "feedback": ("label",)}


def is_locked(err: Exception) -> bool:
    text = str(err)
    return "database is locked" in text or "database table is locked" in text or "database is busy" in text


def locked(path: Path, flag: str) -> UserError:
    return UserError(f"{flag}: {path} is locked by another process that keeps it to itself (a program holding an "
                     "exclusive lock or transaction on it, e.g. the sqlite3 shell; an encoderfit server or feedback "
                     "command holds it only for a moment); wait until that process ends its transaction, then retry")


def check_path(path: Path, flag: str, create: bool) -> bool:
    """Whether `path` is to become a new log (missing, or an empty file where `create`); UserError for a path that
    cannot be a log, before anything is opened."""
    if path.is_dir():
        raise UserError(f"{flag}: {path} is a directory; give a file name such as {path / 'predictions.db'}")
    if not path.exists():
        if not create:
            raise UserError(f"{flag}: {path} does not exist; start the server with --log {path} (or predict --log) first")
        if not path.parent.is_dir():
            raise UserError(f"{flag}: directory {path.parent} does not exist; create it or choose another path")
        return True
    if not path.is_file():
        raise UserError(f"{flag}: {path} is not a regular file; give the file name of a prediction log")
    if path.stat().st_size == 0:
        if not create:
            raise UserError(f"{flag}: {path} is empty (0 bytes), not a prediction log yet; `serve --log {path}` or "
                            f"`predict --log {path}` makes it one")
        return True
    with open(path, "rb") as handle:
        if handle.read(len(MAGIC)) != MAGIC:
            raise UserError(f"{flag}: {path} is not a prediction log (not an SQLite database); it was left as it is; "
                            "give a new file name (serve/predict --log create it)")
    return False


def read_only(path: Path, untouched: bool = False) -> sqlite3.Connection:
    """A read-only connection. `untouched`: while no write-ahead file exists, `immutable`, so that SQLite creates no
    `-wal`/`-shm` file beside a database that may not be ours."""
    quiet = untouched and not Path(str(path) + "-wal").exists()
    uri = path.resolve().as_uri() + "?mode=ro" + ("&immutable=1" if quiet else "")
    return sqlite3.connect(uri, uri=True, timeout=READ_WAIT_S, isolation_level=None, check_same_thread=False)


def check_log(conn: sqlite3.Connection, path: Path, flag: str) -> Dict[str, str]:
    """The log's `meta` (key -> value); UserError when the database is not a prediction log of this version."""
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall()) if "meta" in tables else {}
    app = conn.execute("PRAGMA application_id").fetchone()[0]
    if "version" not in meta or not {"predictions", "feedback"} <= tables or app not in (0, APPLICATION_ID):
        raise UserError(f"{flag}: {path} is not a prediction log: an SQLite database with table(s) "
                        f"{', '.join(sorted(tables)) or '(none)'} and no encoderfit mark (meta version); it was left as "
                        "it is; give a new file name for the log (serve/predict --log create it)")
    if meta["version"] != VERSION:
        raise UserError(f"{flag}: {path} is a prediction log of version {meta['version']}; this encoderfit reads version "
                        f"{VERSION}: use the encoderfit that wrote it, or give a new file name")
    for table, wanted in (("predictions", COLUMNS), ("feedback", FEEDBACK_COLUMNS)):
        have = tuple(r[1] for r in conn.execute(f"PRAGMA table_info({table})"))
        if have != wanted:
            raise UserError(f"{flag}: {path} is not a prediction log written by encoderfit (its {table} table has "
                            f"columns {list(have)}); give a new file name")
    return meta


def inspect(path: Path, flag: str) -> Dict[str, str]:
    """An existing file checked through a connection that changes nothing; its meta."""
    try:
        conn = read_only(path, untouched=True)
        try:
            return check_log(conn, path, flag)
        finally:
            conn.close()
    except sqlite3.DatabaseError as err:
        if is_locked(err):
            raise locked(path, flag) from None
        raise UserError(f"{flag}: {path} is not a prediction log ({err}); it was left as it is; give a new file name") from None


def open_reader(path: Path, flag: str) -> Tuple[sqlite3.Connection, Dict[str, str]]:
    """An existing log, read-only (monitor, retrain): its connection and meta."""
    check_path(path, flag, create=False)
    meta = inspect(path, flag)
    return read_only(path), meta


def open_writer(path: Path, flag: str, create: bool) -> Tuple[sqlite3.Connection, Dict[str, str]]:
    """A log to write (serve, predict, feedback): checked before it is opened for writing, created when it is a new
    one and `create`; its connection and meta."""
    new = check_path(path, flag, create)
    if not new:
        inspect(path, flag)
    try:
        conn = sqlite3.connect(str(path), timeout=WRITE_WAIT_S, isolation_level=None, check_same_thread=False)
        if new:
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect on a new file only: before the tables
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("BEGIN IMMEDIATE")  # a second process creating the same log at once waits, then finds it made
            for statement in SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('version', ?)", (VERSION,))
            conn.execute("COMMIT")
        meta = check_log(conn, path, flag)
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            conn.execute("PRAGMA journal_mode=WAL")  # our own log, switched back by hand: readers need WAL
        conn.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.DatabaseError as err:
        if is_locked(err):
            raise locked(path, flag) from None
        raise UserError(f"{flag}: {path} is not a prediction log ({err}); give a new file name") from None
    return conn, meta


def fit_wal(conn: sqlite3.Connection, max_bytes: int) -> None:
    """The write-ahead file checkpointed at a twentieth of the bound and truncated to a tenth (per connection)."""
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    limit = max(max_bytes // 10, 64 * 1024)
    conn.execute(f"PRAGMA journal_size_limit={limit}")
    conn.execute(f"PRAGMA wal_autocheckpoint={max(8, limit // page // 2)}")


def stored_bounds(meta: Dict[str, str], path: Path, flag: str) -> Tuple[Optional[float], Optional[float]]:
    """(max_mb, max_days) as the log stores them (None: not stored, a log written before bounds were kept)."""
    out = []
    for key in ("max_mb", "max_days"):
        value = meta.get(key)
        try:
            number = None if value is None else float(value)
        except ValueError:
            number = -1.0
        if number is not None and not (math.isfinite(number) and number > 0):
            raise UserError(f"{flag}: {path}: the meta row '{key}' holds {value!r}, not a positive number (edited by "
                            f"hand?); start the writer with {flag}_{key} N to store a new one")
        out.append(number)
    return out[0], out[1]


def settle_bounds(conn: sqlite3.Connection, meta: Dict[str, str], path: Path, flag: str,
                  max_mb: Optional[float], max_days: Optional[float]) -> Tuple[float, float]:
    """The bounds this writer keeps: the given ones (stored in the log, and said when they change what it held),
    else the stored ones, else the defaults (then stored)."""
    stored = stored_bounds(meta, path, flag) if "max_mb" in meta or "max_days" in meta else (None, None)
    settled, changes = [], []
    for key, given, had, default in (("max_mb", max_mb, stored[0], DEFAULT_MB), ("max_days", max_days, stored[1], DEFAULT_DAYS)):
        value = given if given is not None else had if had is not None else default
        settled.append(value)
        if had is not None and value != had:
            changes.append(f"{flag}_{key} {had:g} -> {value:g}")
    if stored != tuple(settled):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [("max_mb", repr(settled[0])), ("max_days", repr(settled[1]))])
        conn.execute("COMMIT")
    if changes:
        log.info("prediction log %s: bounds changed: %s (stored in the log: every writer that does not name them keeps "
                 "these from now on)", path, ", ".join(changes))
    return settled[0], settled[1]


def bad_row(conn: sqlite3.Connection, table: str, where: str = "", args: tuple = ()) -> Optional[Tuple[str, str]]:
    """The first row a hand edit broke (a text where a number belongs, a label that is not JSON): its id, and what
    is wrong in words naming its id and column; None when every row reads."""
    if sqlite3.sqlite_version_info < (3, 38):  # json_valid is built in from 3.38 (before, only where JSON1 was compiled in)
        conn.create_function("json_valid", 1, _json, deterministic=True)
    checks = ([f"typeof({c}) NOT IN ('integer', 'real', 'null')" for c in NUMBERS[table]] +
              [f"typeof({c}) NOT IN ('text', 'null')" for c in TEXTS[table]] +
              [f"({c} IS NOT NULL AND NOT json_valid({c}))" for c in JSONS[table]])
    found = conn.execute(f"SELECT * FROM {table} WHERE ({' OR '.join(checks)})" + (f" AND {where}" if where else "") +
                         " LIMIT 1", args).fetchone()
    if found is None:
        return None
    names = COLUMNS if table == "predictions" else FEEDBACK_COLUMNS
    values = dict(zip(names, found))
    for column in names:
        value = values[column]
        if column in NUMBERS[table] and not (value is None or isinstance(value, (int, float))):
            problem = "is not a number"
        elif column in TEXTS[table] and not (value is None or isinstance(value, str)):
            problem = "is not text"
        elif column in JSONS[table] and value is not None and not _json(value):
            problem = "is not JSON"
        else:
            continue
        return values["id"], f"{table} row id '{values['id']}', column '{column}': {str(value)[:60]!r} {problem}"
    return values["id"], f"{table} row id '{values['id']}' does not read"


def _json(value) -> bool:
    import json

    try:
        json.loads(value)
        return True
    except (TypeError, ValueError):
        return False
