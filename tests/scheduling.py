"""Where pytest-xdist runs each test (`make test`: `-n auto --dist loadgroup`). A fixture is built once per worker
that asks for it: a toy run of another task (multi-label, regression, pairs, NER, embeddings, QA, the steady run)
trains a model for 5-40 s, and a test module's own runs (module-scoped fixtures: compress, distill, monitor, QA v2)
as much. So each test is sent, as part of one work unit, with the others that read the same thing: the tests that
read one of those shared runs go to one worker, which trains it once, and the other tests of a module go together.
The toy classification run (`trained_run`) is read by a hundred tests in thirty files: each worker trains its own."""

from __future__ import annotations

import pytest

# the shared runs that only a handful of tests read, in the order a test reading several is grouped by
ONE_WORKER_RUNS = ("qa_run", "ner_run", "embedding_run", "steady_run", "multilabel_run", "regression_run", "pair_run")


def pytest_collection_modifyitems(config, items):
    """Give each test an xdist group: the first of ONE_WORKER_RUNS it reads (as a fixture, or by name through a
    parameter), else its module. xdist's own hook, run after this one, makes each group one work unit under
    `--dist loadgroup` (the units with the most tests first); without xdist, a no-op."""
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        params = getattr(getattr(item, "callspec", None), "params", {})  # a test parametrized by a run's name
        asked = {*getattr(item, "fixturenames", ()), *(v for v in params.values() if isinstance(v, str))}
        run = next((name for name in ONE_WORKER_RUNS if name in asked), None)
        item.add_marker(pytest.mark.xdist_group(run or item.nodeid.split("::")[0]))
