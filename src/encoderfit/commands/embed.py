"""`encoderfit embed`: texts in, one vector per text out."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional
from ..core.errors import UserError
from ..core.files import atomic_file, check_output_file
from ..runs.backends import BackendName
from ..runs.inputs import drop_empty, read_inputs
from ..runs.search_index import (
    load_predictor,
    embed_texts,
)

log = logging.getLogger(__name__)


def embed(run: Path, input: str = "-", output: Optional[Path] = None, text_column: str = "text", device: Optional[str] = None,
          max_tokens: Optional[int] = None, backend: BackendName = "torch") -> Optional[Path]:
    """Embed texts with a run trained with --task embedding: normalised vectors, batched by length.

    Args:
        run: Run directory (or model directory) of an embedding model.
        input: Texts: '-' for stdin (one per line), a .txt file (one per line), or a CSV/TSV/JSONL/Parquet file.
        output: .npy (a float32 matrix, one row per non-empty text, in order) or .parquet (text and embedding
            columns). Default: JSONL on stdout.
        text_column: Column of a table input holding the text.
        device: Device to run on (cpu, cuda, cuda:1). Default: cuda when available.
        max_tokens: Token budget of one batch (rows x longest row). Default: 4096 on CPU, 16384 on GPU.
        backend: torch, onnx or onnx-int8 (after `encoderfit export RUN`).
    """
    suffix = Path(output).suffix.lower() if output else ""
    if output and suffix not in (".npy", ".parquet"):
        raise UserError(f"--output: unsupported file type '{suffix}'; use .npy or .parquet")
    if output:
        check_output_file(Path(output), "--output", f"embeddings{suffix}")
    texts, _ = drop_empty(*read_inputs(input, text_column))
    model = load_predictor(run, device, backend, max_tokens)
    vectors = embed_texts(model, texts)
    if output is None:
        for text, vector in zip(texts, vectors):
            sys.stdout.write(json.dumps({"text": text, "embedding": [round(float(v), 6) for v in vector]}, ensure_ascii=False) + "\n")
        return None
    import numpy as np

    with atomic_file(Path(output), "wb") as handle:
        if suffix == ".npy":
            np.save(handle, vectors)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({"text": texts, "embedding": list(vectors)}), handle)
    log.info("wrote %d embeddings of %d dimensions to %s", len(texts), vectors.shape[1] if len(texts) else 0, output)
    return Path(output)
