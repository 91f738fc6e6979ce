"""Writing outputs so that nothing is ever half-written: temp file or directory first, then rename."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

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


def sha256(path: Path) -> str:
    """A file's SHA-256, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
