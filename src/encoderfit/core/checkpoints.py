"""Checkpoints that a crash cannot fool, and the choice of the one to resume from.

The Trainer writes `checkpoint-STEP/` in place (weights, optimizer, scheduler, RNG states, trainer state).
Once every process has finished writing it, the main process *seals* it: a manifest with each file's size and
SHA-256, written atomically as the last file. A checkpoint without a manifest, or whose files no longer match
it (truncated, overwritten, bit-rotted), is not complete; resuming skips it with a warning and takes the one
before it.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Optional

from .files import sha256, write_json

log = logging.getLogger(__name__)

MANIFEST = "encoderfit-complete.json"
_STEP = re.compile(r"^checkpoint-(\d+)$")


def _hashes(files: List[Path]) -> List[str]:
    """Each file's SHA-256, the files read at the same time (hashlib releases the GIL on large blocks): a checkpoint's
    weights and optimizer state (~0.6 and ~1.1 GB for a 150M encoder) take as long as the larger alone."""
    if len(files) < 2:
        return [sha256(p) for p in files]
    with ThreadPoolExecutor(max_workers=min(8, len(files))) as pool:
        return list(pool.map(sha256, files))


def seal(checkpoint: Path) -> None:
    """Record every file of a fully written checkpoint; the manifest is what marks it complete. Each file is hashed
    once, here, right after it was written; only a resume reads it again (`problem`)."""
    files = sorted(p for p in checkpoint.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest = {str(p.relative_to(checkpoint)): {"bytes": p.stat().st_size, "sha256": digest}
                for p, digest in zip(files, _hashes(files))}
    write_json(checkpoint / MANIFEST, {"files": manifest})


def problem(checkpoint: Path) -> Optional[str]:
    """Why `checkpoint` cannot be resumed from, or None when it is complete and intact."""
    manifest = checkpoint / MANIFEST
    if not manifest.is_file():
        return "no completion manifest (the save was interrupted)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError):
        return f"{MANIFEST} is unreadable"
    for name, expected in files.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["bytes"]:
            return f"{name} has {path.stat().st_size} bytes, {expected['bytes']} were written"
    names = list(files)
    for name, digest in zip(names, _hashes([checkpoint / n for n in names])):
        if digest != files[name]["sha256"]:
            return f"{name} does not match its checksum"
    return None


def _step_of(checkpoint: Path) -> int:
    match = _STEP.match(checkpoint.name)
    return int(match.group(1)) if match else -1


def checkpoints_in(directory: Path) -> List[Path]:
    """checkpoint-STEP directories, oldest first."""
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.iterdir() if p.is_dir() and _step_of(p) >= 0), key=_step_of)


def newest_complete(directory: Path) -> Optional[Path]:
    """The newest intact checkpoint; newer broken ones are reported and deleted, so later saves never mix with them."""
    for checkpoint in reversed(checkpoints_in(directory)):
        why = problem(checkpoint)
        if why is None:
            return checkpoint
        log.warning("warning: skipping %s: %s; falling back to the checkpoint before it", checkpoint.name, why)
        shutil.rmtree(checkpoint, ignore_errors=True)
    return None
