"""Embeddings in use: `encoderfit embed` (texts -> normalised vectors) and `encoderfit search` (queries -> the
nearest documents of a corpus), with `SearchIndex` as the Python API.

An index is a directory: vectors.npy (float32, normalised), documents.jsonl (id and text), meta.json (the model's
and the corpus's sha256, so a stale index is rebuilt, never silently reused) and, once the vectors take
ANN_MIN_BYTES, hnsw.usearch (an HNSW graph, usearch). Below that, exact search (one matrix product) is fast enough
and exact (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Dict, List, Literal, Optional, Union

from ..core.errors import UserError
from ..runs.backends import BackendName
from ..runs.inputs import drop_empty, read_inputs
from ..runs.search_index import (
    MAX_TOP_K,
    load_predictor,
    check_corpus,
    index_for,
)

log = logging.getLogger(__name__)


def search(run: Path, corpus: Optional[Path] = None, query: Union[str, List[str], None] = None, queries: Optional[str] = None,
           top_k: int = 10, text_column: str = "text", id_column: str = "id", index: Optional[Path] = None,
           kind: Literal["auto", "exact", "hnsw"] = "auto", rebuild: bool = False, device: Optional[str] = None,
           backend: BackendName = "torch") -> List[List[Dict]]:
    """Search a corpus with an embedding run: the top_k nearest documents of each query, as JSONL on stdout.

    Args:
        run: Run directory (or model directory) of an embedding model.
        corpus: The documents: a .txt file (one per line; ids are line numbers) or a CSV/TSV/JSONL/Parquet table.
        query: A query text; repeat --query for several (in Python: a text or a list of them).
        queries: A file of queries (.txt one per line, or a table with text_column), or '-' for stdin.
        top_k: Documents returned per query.
        text_column: Column of a table corpus (and queries file) holding the text.
        id_column: Column of a table corpus holding each document's id (default: row numbers when absent).
        index: Where the index is kept. Default: RUN/indexes/<corpus file name>. Reused while the model and the
            corpus file are unchanged.
        kind: exact (one matrix product), hnsw (approximate, usearch) or auto (exact until the vectors take
            256 MiB: ~175,000 documents of 384 dimensions).
        rebuild: Rebuild the index even if it is current.
        device: Device to run on (cpu, cuda, cuda:1). Default: cuda when available.
        backend: torch, onnx or onnx-int8 (after `encoderfit export RUN`).
    """
    if not 1 <= top_k <= MAX_TOP_K:
        raise UserError(f"--top_k must be between 1 and {MAX_TOP_K} (got {top_k})")
    given = [q for q in ([query] if isinstance(query, str) else query or []) if q]
    if not given and not queries:
        raise UserError("search: no query; pass --query TEXT (repeatable) or --queries FILE")
    texts = given + (drop_empty(*read_inputs(queries, text_column))[0] if queries else [])
    if corpus is None:
        raise UserError("search: no corpus; pass --corpus FILE (.txt, one document per line, or a CSV/JSONL/Parquet table)")
    check_corpus(Path(corpus))
    model = load_predictor(run, device, backend, None)
    found = index_for(model, run, Path(corpus), backend, index, text_column, id_column, kind, rebuild,
                      index_flag="--index").search(model, texts, top_k)
    for text, hits in zip(texts, found):
        sys.stdout.write(json.dumps({"query": text, "results": hits}, ensure_ascii=False) + "\n")
    return found
