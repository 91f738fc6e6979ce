"""Embeddings in use: `encoderfit embed` (texts -> normalised vectors) and `encoderfit search` (queries -> the
nearest documents of a corpus), with `SearchIndex` as the Python API.

An index is a directory: vectors.npy (float32, normalised), documents.jsonl (id and text), meta.json (the model's
and the corpus's sha256, so a stale index is rebuilt, never silently reused) and, once the vectors take
ANN_MIN_BYTES, hnsw.usearch (an HNSW graph, usearch). Below that, exact search (one matrix product) is fast enough
and exact (docs/benchmarks.md)."""

from __future__ import annotations

import errno
import glob
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Dict, List, Literal, Optional, Sequence
from ..core.files import split_lines
from ..core.errors import UserError
from ..core.files import atomic_file, sha256, write_json
from .predictor import Predictor
from .inputs import read_inputs
from .rundir import locate

log = logging.getLogger(__name__)


# Exact search until the vectors take this much memory, HNSW from there. Exact search reads every vector once a query
# (memory-bound: measured on a 2-core CPU, benchmarks/speed/embeddings.py, docs/benchmarks.md, 384 dimensions: 0.3 ms at
# 10,000 documents, 3.3 ms at 50,000, 7 ms at 100,000, 22 ms at 300,000), HNSW ~1-3 ms but it costs a graph build
# (9 s for 57k real embeddings, 5 min for 300k random ones) and recall (99% of the exact top 10 on the real ones, 24%
# on random 300k). 256 MiB (~175,000 documents of 384 dimensions, ~87,000 of 768) keeps an exact query near 12 ms.
ANN_MIN_BYTES = 256 * 2**20


# usearch's default 64 lost planted neighbours on hard (random) vectors, where 256 found 99.5%; on real embeddings
# (57k Debian descriptions) 64 kept 97.3% of the exact top 10, 256 98.9%.
HNSW_EXPANSION_SEARCH = 256


MAX_TOP_K = 1000


def _unit(vectors):
    import numpy as np

    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def embed_texts(predictor: Predictor, texts: Sequence[str]):
    """Normalised embeddings, shape (n, dimension), batched by length."""
    if not predictor.task.supports("embed"):
        raise UserError(f"this run's task is {predictor.task.name}, which makes no embeddings: `encoderfit embed` and `search` "
                        "need a model trained with --task embedding or similarity (or use `encoderfit predict`)")
    return _unit(predictor.logits(list(texts)))


def check_corpus(path: Path) -> None:
    """Before the model is loaded: the corpus is a file."""
    if path.is_dir():
        raise UserError(f"--corpus: {path} is a directory; pass a file (.txt, one document per line, or a CSV/JSONL/Parquet table)")
    if not path.is_file():
        raise UserError(f"--corpus: file '{path}' does not exist; check the path")


def read_corpus(path: Path, text_column: str, id_column: str):
    """(ids, texts) of a corpus file: .txt (one document per line, ids are line numbers) or a table."""
    path = Path(path)
    check_corpus(path)
    texts, _ = read_inputs(str(path), text_column)
    if path.suffix.lower() == ".txt":
        ids = [str(i + 1) for i in range(len(texts))]
    else:
        from ..data.sources import read_table

        table = read_table(path)
        ids = [str(v) for v in table[id_column]] if id_column in table.column_names else [str(i + 1) for i in range(len(texts))]
    keep = [i for i, t in enumerate(texts) if t.strip()]
    if not keep:
        raise UserError(f"{path}: no documents (every row's '{text_column}' is empty)")
    if len(keep) < len(texts):
        log.warning("warning: %s: skipped %d empty documents", path, len(texts) - len(keep))
    return [ids[i] for i in keep], [texts[i] for i in keep]


class SearchIndex:
    """Nearest documents by cosine similarity.

    >>> model = Predictor.from_pretrained("runs/debian-search")
    >>> index = SearchIndex.build(model, texts, ids, "runs/debian-search/indexes/docs")
    >>> index.search(model, ["convert pdf to text"], k=5)
    [[{'id': 'poppler-utils', 'score': 0.71, 'text': '...'}, ...]]
    """

    def __init__(self, directory: Path):
        import numpy as np

        self.directory = Path(directory)
        self.meta = json.loads((self.directory / "meta.json").read_text())
        self.vectors = np.load(self.directory / "vectors.npy")
        rows = [json.loads(line) for line in split_lines((self.directory / "documents.jsonl").read_text(encoding="utf-8"))]
        self.ids, self.texts = [r["id"] for r in rows], [r["text"] for r in rows]
        self.ann = None
        if self.meta["kind"] == "hnsw":
            from usearch.index import Index

            self.ann = Index.restore(str(self.directory / "hnsw.usearch"))

    @classmethod
    def build(cls, predictor: Predictor, texts: Sequence[str], ids: Sequence[str], directory: Path, corpus_sha256: str = "",
              kind: Literal["auto", "exact", "hnsw"] = "auto", hint: str = "choose a writable directory for it") -> "SearchIndex":
        """Embed `texts` into a new index in `directory`. It is built in a directory of its own beside it (so builders
        of one index never share one) and renamed into place whole; if an index of the same corpus and model appeared
        there meanwhile (another builder), that one is kept. Nothing is left behind by a failure or an interrupt, and
        what a killed builder left is removed by the next one. `hint`: what to do when `directory` cannot be written."""
        import numpy as np

        directory = Path(directory)
        fingerprint = predictor_fingerprint(predictor)
        try:
            directory.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale(directory)
            before = _identity(directory)
            work = Path(tempfile.mkdtemp(prefix=f".{directory.name}.partial-{os.getpid()}@{socket.gethostname()}-",
                                         dir=directory.parent))
        except OSError as err:
            raise UserError(f"cannot write the search index {directory}: {err.strerror or err} in {directory.parent}; {hint}") from None
        try:
            vectors = embed_texts(predictor, texts)
            np.save(work / "vectors.npy", vectors)
            with atomic_file(work / "documents.jsonl") as handle:
                for i, t in zip(ids, texts):
                    handle.write(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n")
            chosen = kind if kind != "auto" else ("hnsw" if vectors.nbytes >= ANN_MIN_BYTES else "exact")
            if chosen == "hnsw":
                from usearch.index import Index

                graph = Index(ndim=vectors.shape[1], metric="ip")
                graph.add(np.arange(len(vectors)), vectors)
                graph.save(str(work / "hnsw.usearch"))
            write_json(work / "meta.json", {"model_sha256": fingerprint, "corpus_sha256": corpus_sha256,
                                            "documents": len(texts), "dimension": int(vectors.shape[1]), "kind": chosen})

            def theirs() -> bool:  # a complete index of the same corpus and model, published by another builder meanwhile
                return _identity(directory) != before and _current(directory, corpus_sha256, fingerprint, chosen) is not None

            if _publish(work, directory, theirs):
                log.info("index of %d documents (%s search) written to %s", len(texts), chosen, directory)
            else:
                log.info("another process wrote the same index to %s meanwhile: using that one", directory)
        except OSError as err:
            raise UserError(f"cannot write the search index {directory}: {err.strerror or err}; {hint}") from None
        finally:
            shutil.rmtree(work, ignore_errors=True)  # gone once published
        return cls(directory)

    def search(self, predictor: Predictor, queries: Sequence[str], k: int = 10) -> List[List[Dict]]:
        """The k nearest documents of each query: [{id, score (cosine), text}], best first."""
        return self.nearest(embed_texts(predictor, queries), k)

    def nearest(self, q, k: int = 10) -> List[List[Dict]]:
        """The k nearest documents of each (normalised) query vector."""
        import numpy as np

        k = min(k, len(self.ids))
        q = _unit(q)
        if self.ann is not None:
            self.ann.expansion_search = max(HNSW_EXPANSION_SEARCH, k)
            found = self.ann.search(q, k)
            keys, scores = np.atleast_2d(found.keys), 1.0 - np.atleast_2d(found.distances)
        else:
            sims = q @ self.vectors.T
            keys = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < sims.shape[1] else np.tile(np.arange(sims.shape[1]), (len(q), 1))
            order = np.argsort(-np.take_along_axis(sims, keys, 1), axis=1, kind="stable")
            keys = np.take_along_axis(keys, order, 1)
            scores = np.take_along_axis(sims, keys, 1)
        return [[{"id": self.ids[int(j)], "score": round(float(s), 6), "text": self.texts[int(j)]} for j, s in zip(row, srow)]
                for row, srow in zip(keys, scores)]


def _identity(directory: Path) -> Optional[tuple]:
    """What is at `directory` now (None: nothing), to tell whether another process replaced it."""
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns


def _current(directory: Path, corpus_sha256: str, fingerprint: str, kind: str = "auto") -> Optional[dict]:
    """The meta of the complete index in `directory` if this model made it from this corpus (else None)."""
    try:
        saved = json.loads((Path(directory) / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    files = ["vectors.npy", "documents.jsonl"] + (["hnsw.usearch"] if saved.get("kind") == "hnsw" else [])
    if saved.get("corpus_sha256") == corpus_sha256 and saved.get("model_sha256") == fingerprint \
            and kind in ("auto", saved.get("kind")) and all((Path(directory) / f).is_file() for f in files):
        return saved
    return None


def _publish(work: Path, directory: Path, keep_theirs) -> bool:
    """Rename the finished index `work` to `directory`, atomically; an index already there is replaced, unless
    `keep_theirs()` (then `work` is dropped: False)."""
    for _ in range(10):  # another builder may publish between our moves
        try:
            os.rename(work, directory)  # fails when a (non-empty) directory is there
            return True
        except OSError as err:
            if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
        if keep_theirs():
            return False
        trash = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
        try:
            os.rename(directory, trash / "index")
        except FileNotFoundError:
            pass
        shutil.rmtree(trash, ignore_errors=True)
    raise OSError(errno.EBUSY, f"other processes keep replacing {directory}")


def _remove_stale(directory: Path) -> None:
    """Remove what builders of `directory` that no longer run left beside it: their partial directories (named by
    process id and host), old indexes they were replacing, and the one partial directory of earlier versions."""
    host = socket.gethostname()
    for path in directory.parent.glob(f".{glob.escape(directory.name)}.*"):
        rest = path.name[len(directory.name) + 2:]
        owner = re.fullmatch(r"partial-(\d+)@(.*)-[^-]+", rest)
        if rest == "partial" or rest.startswith("old-") or (owner and owner.group(2) == host and not _alive(int(owner.group(1)))):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would send Ctrl-C there: assume it runs
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def predictor_fingerprint(predictor: Predictor) -> str:
    return getattr(predictor, "fingerprint", "") or ""


def open_index(predictor: Predictor, corpus: Path, directory: Path, text_column: str, id_column: str,
               kind: str = "auto", rebuild: bool = False, hint: str = "choose a writable directory for it") -> SearchIndex:
    """The index of `corpus` in `directory`: reused when the same model indexed the same file, else (re)built."""
    digest = sha256(corpus)
    saved = None if rebuild else _current(Path(directory), digest, predictor_fingerprint(predictor), kind)
    if saved:
        log.info("reusing the index in %s (%d documents)", directory, saved["documents"])
        return SearchIndex(directory)
    if (Path(directory) / "meta.json").is_file() and not rebuild:
        log.info("the index in %s was made from another model or corpus: rebuilding it", directory)
    ids, texts = read_corpus(corpus, text_column, id_column)
    return SearchIndex.build(predictor, texts, ids, directory, digest, kind, hint)


def load_predictor(run: Path, device: Optional[str], backend: str, max_tokens: Optional[int]) -> Predictor:
    if max_tokens is not None and max_tokens < 1:
        raise UserError(f"--max_tokens must be at least 1 (got {max_tokens})")
    return Predictor.from_pretrained(run, device=device, backend=backend, max_tokens=max_tokens)


def index_for(predictor: Predictor, run: Path, corpus: Path, backend: str, index: Optional[Path] = None,
              text_column: str = "text", id_column: str = "id", kind: str = "auto", rebuild: bool = False,
              index_flag: Optional[str] = None) -> SearchIndex:
    """The index of `corpus` for the model of `run` (default directory: RUN/indexes/<corpus file name>). `index_flag`:
    the caller's option that chooses another directory, suggested when this one cannot be written."""
    check_corpus(Path(corpus))
    rundir, directory = locate(Path(run))
    predictor.fingerprint = f"{directory.fingerprint()}:{backend}"
    where = Path(index) if index else (rundir.path if rundir else directory.path) / "indexes" / Path(corpus).name
    hint = f"pass {index_flag} DIR to keep the index in a writable directory" if index_flag else "make that directory writable"
    return open_index(predictor, Path(corpus), where, text_column, id_column, kind, rebuild, hint)
