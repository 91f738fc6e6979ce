"""Writing outputs so that nothing is ever half-written: temp file or directory first, then rename."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, List

from .errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[Any]:
    """Open a temp file beside `path`; it replaces `path` only if the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8", newline=None if "b" in mode else "") as handle:
            yield handle
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, obj: Any) -> None:
    with atomic_file(path) as handle:
        json.dump(obj, handle, indent=2)
        handle.write("\n")


@contextmanager
def exclusive(final: Path, flag: str = "output_dir", enabled: bool = True, overwrite: bool = True) -> Iterator[None]:
    """Hold `final`'s lock (`.NAME.lock` beside it) while building it: a second process writing the same directory
    fails at once with one line instead of training into the same partial directory. The lock is released and its
    file removed when the block ends; a killed process's lock dies with it (an flock belongs to the open file).
    `overwrite` false: `final` must still not exist once the lock is held."""
    if not enabled:  # the other processes of a multi-process launch: the main process holds it for them
        yield
        return
    import fcntl

    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    lock = final.parent / f".{final.name}.lock"
    while True:
        handle = open(lock, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise UserError(f"{flag}: another encoderfit process (pid {holder}) is writing {final}; wait for it to "
                            f"finish, or choose another --{flag}") from None
        try:
            if os.stat(lock).st_ino == os.fstat(handle.fileno()).st_ino:
                break  # locked the file that is there (not one its holder removed as it finished)
        except FileNotFoundError:
            pass
        handle.close()
    try:
        if final.exists() and not overwrite:  # another process finished it while this one started
            raise UserError(f"{flag}: {final} already exists; pass --overwrite true to replace it, or choose another --{flag}")
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        os.unlink(lock)  # while still held: a process waiting on the old file sees it gone and starts over
        handle.close()


def partial_dir(final: Path) -> Path:
    """Where a run directory is built before it is renamed into place."""
    return final.parent / f".{final.name}.partial"


def publish_dir(tmp: Path, final: Path) -> None:
    """Move a finished directory into place, replacing `final` (the caller checked --overwrite)."""
    if final.exists():
        trash = final.parent / f".{final.name}.old"
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)


def check_writable(path: Path, flag: str) -> None:
    """Fail at once, naming `flag`, when `path` (a file or directory still to be made) could not be written:
    under a regular file, or in a directory that is read-only or not ours. Probes with a temporary file that
    vanishes; creates nothing."""
    path = Path(path).expanduser().absolute()
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{flag}: cannot write {path}: {ancestor} is a file, not a directory; choose another path")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as err:
        raise UserError(f"{flag}: cannot write {path}: {err.strerror or err} in {ancestor}; choose a writable location") from None


def check_output_file(path: Path, flag: str, example: str) -> None:
    """check_writable for a file to be written: a directory at `path` is refused at once too (not after the work,
    when the file would replace it). `example`: a file name to suggest inside that directory."""
    if Path(path).is_dir():
        raise UserError(f"{flag}: {path} is a directory; give a file path, e.g. {Path(path) / example}")
    check_writable(path, flag)


def sha256(path: Path) -> str:
    """A file's SHA-256, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def decode_utf8(raw: bytes, where: str) -> str:
    """Bytes -> text, failing with the line number of the first byte that is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise UserError(f"{where}: line {line}: byte 0x{raw[err.start]:02x} is not valid UTF-8; re-save it as UTF-8 "
                        "(e.g. `iconv -f cp1252 -t utf-8`)") from None


def split_lines(text: str) -> List[str]:
    """The lines of a text file: split at the newlines of any platform (\\n, \\r\\n, and \\r alone, as old Macs wrote
    them: Python's universal newlines) only, never at the form feeds, U+2028 and other separators that str.splitlines
    also breaks at (they can sit inside one line, and would shift every line after them)."""
    lines = re.split("\r\n|\r|\n", text)
    if lines[-1] == "":
        lines.pop()
    return lines
