"""How the pytest-xdist workers of `make test` (`-n auto`: one per core) share work. A toy run of another task
(multi-label, regression, pairs, NER, embeddings, QA, the steady run) trains a model for 5-40 s, and without this
every worker that reaches a test reading it trains its own copy. `built_once` builds such a fixture once per test
session: the first worker to ask builds it under a lock in the directory all workers of the session share, and the
others reuse it (waiting, if it is being built).

Grouping the tests by the run they read (`--dist loadgroup` with xdist_group marks) was tried first: on pytest 9.2
xdist 3.8 silently ignores the groups (pytest-xdist#1386: it writes `item._nodeid`, which structured node ids no
longer read), and with the ids set by hand the suite took 11 min 44 s against 9 min 42 s, the large groups running
alone at the end. The toy classification run (`trained_run`) stays one per worker: a hundred tests in thirty files
read it, some writing beside it (an export, a monitor report), and on one worker they never run at the same time."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from collections.abc import Callable


def shared_root(tmp_path_factory) -> Path:
    """The session's temporary directory that every worker sees (pytest-of-USER/pytest-N); without xdist, the
    session's own."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def built_once(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:
    """`shared_root()/shared/NAME`, made by `build(folder)` the first time any worker asks; a build that failed (no
    NAME.built marker beside it) is started afresh by the next worker that asks. The lock is a file lock (filelock,
    as datasets and huggingface_hub use), so a killed worker never leaves it held."""
    from filelock import FileLock

    root = shared_root(tmp_path_factory) / "shared"
    root.mkdir(parents=True, exist_ok=True)
    home = root / name
    with FileLock(str(root / f"{name}.lock")):
        if not (root / f"{name}.built").exists():
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir()
            build(home)
            (root / f"{name}.built").touch()
    return home
