"""`encoderfit serve`: a FastAPI app that predicts over HTTP for any task, batching concurrent requests dynamically.

Concurrent requests wait in a queue for at most `max_wait_ms`; whatever has arrived by then (up to a text
budget) runs as one length-sorted pass of the model, and each request gets its own answer back (serving/batcher.py).
The model runs on one worker thread, so the event loop keeps accepting requests while it computes. A request bigger
than one pass takes turns with the others; at most `max_queue` requests are held, more get 503 with Retry-After."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List, Optional
from ..core.errors import UserError
from ..runs.backends import BackendName
from ..runs.predictor import Predictor
from ..serving.app import API_KEY_ENV, Access, Batching, create_app, model_info
from ..serving.http import Limits, host_patterns
from ..serving.logged import check_log, served_log

log = logging.getLogger(__name__)


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve(
    run: Path,
    backend: BackendName = "torch",
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: Optional[str] = None,
    abstain: bool = False,
    max_texts: int = 64,
    max_chars: int = 20000,
    max_body_bytes: int = 2_000_000,
    max_wait_ms: float = 5.0,
    max_batch_texts: int = 256,
    max_batch_tokens: Optional[int] = None,
    max_queue: int = 128,
    batching: bool = True,
    int8_recheck: bool = True,
    docs: Optional[bool] = None,
    allowed_hosts: Optional[List[str]] = None,
    corpus: Optional[Path] = None,
    index: Optional[Path] = None,
    log: Optional[Path] = None,
    log_texts: bool = False,
    log_max_mb: Optional[float] = None,
    log_max_days: Optional[float] = None,
) -> None:
    """Serve a trained run over HTTP: POST /v1/predict, GET /health, /v1/model, /metrics, /docs, and a try-it page at /.

    Args:
        run: Run directory written by `encoderfit train` (or a model directory).
        backend: torch, onnx or onnx-int8 (after `encoderfit export RUN --quantize int8`).
        host: Interface to bind. 127.0.0.1 (default) is reachable from this machine only.
        port: TCP port (1-65535).
        api_key: Require 'Authorization: Bearer KEY' on /v1/* and /metrics. Default: $ENCODERFIT_API_KEY if set.
        abstain: Answer UNKNOWN below the run's abstention threshold (classification).
        max_texts: Most texts in one request.
        max_chars: Most characters in one text.
        max_body_bytes: Largest request body; larger ones are refused (413) before being read whole.
        max_wait_ms: Longest a request waits for others to share its model pass.
        max_batch_texts: Most texts in one model pass.
        max_batch_tokens: Most tokens in one model pass (a longer text goes alone). A bigger request is answered over
            several passes that take turns with other requests, so it cannot hold up small ones for long. Default:
            the model's own batch budget (4096 on CPU, 16384 on GPU).
        max_queue: Most requests held at once (waiting for or in a model pass); more are refused at once with 503
            and a Retry-After header, so a flood cannot grow the server's memory or every client's wait.
        batching: Gather concurrent requests into shared model passes (false: one request per pass).
        int8_recheck: With onnx-int8, run near-ties (int8 top-2 margin under the one fitted at export) again in fp32.
        docs: Serve the OpenAPI docs (/docs, /openapi.json), which describe the API to anyone who can reach the
            server. Default: on without an API key, off with one (they cannot send the key themselves).
        allowed_hosts: Host header names the server answers (others get 400), against DNS rebinding: a web page
            elsewhere whose name resolves to 127.0.0.1 could otherwise call this server from a browser. Default: the
            loopback names when bound to a loopback address, any name otherwise (then use --api_key). '*.example.com'
            allows its subdomains, '*' any name.
        corpus: Embedding models: documents to search (as `encoderfit search --corpus`; its index is built or reused
            at start), answered at POST /v1/search.
        index: With corpus: the index directory. Default: RUN/indexes/<corpus file name>.
        log: Prediction log (SQLite) to append every answered prediction to, committed before the answer, with an
            "id" in each result that POST /v1/feedback takes; `encoderfit monitor` reads it (docs/monitoring.md).
        log_texts: Keep the texts in the log too (needed for the embedding drift test, the texts least like
            training, and retraining on feedback given by id).
        log_max_mb: Most megabytes the log keeps (database and write-ahead file together); the oldest predictions
            are deleted beyond it, and a stored text is cut to a hundredth of it. Default: the bound stored in the log
            (1024 for a new log); given, it is stored there, and every writer keeps it from then on.
        log_max_days: Most days a logged row is kept. Default: the bound stored in the log (30 for a new log); given,
            it is stored there, as log_max_mb.
    """
    import uvicorn

    budget = 1 if max_batch_tokens is None else max_batch_tokens  # 0 is refused as -3 is, not read as "the default"
    if min(max_texts, max_chars, max_body_bytes, max_batch_texts, max_queue, budget) < 1 or max_wait_ms < 0:
        raise UserError("serve: max_texts, max_chars, max_body_bytes, max_batch_texts, max_batch_tokens and max_queue "
                        "must be >= 1, max_wait_ms >= 0")
    if not 1 <= port <= 65535:
        raise UserError(f"--port: {port} is not a TCP port; use 1-65535")
    from ..serving.ports import check_port

    check_port(host, port)  # a busy port fails now, not after loading the model (and again below, before "serving on")
    api_key = api_key or os.environ.get(API_KEY_ENV) or None
    if allowed_hosts is None and host in LOOPBACK:
        allowed_hosts = list(LOOPBACK)
    if allowed_hosts is not None:
        host_patterns(allowed_hosts)  # a bad pattern fails now, not after loading the model
    if index is not None and corpus is None:
        raise UserError("--index: it names where the --corpus index lives; pass --corpus FILE as well")
    if corpus is not None:
        from ..runs.search_index import check_corpus

        check_corpus(Path(corpus))  # a missing corpus fails now, not after loading the model
    if log is not None:
        check_log(Path(log), log_max_mb, log_max_days)  # a bad path fails now, not after loading the model
    predictor = Predictor.from_pretrained(run, backend=backend, abstain=abstain, int8_recheck=int8_recheck)
    logged = served_log(Path(log), Path(run), predictor, log_texts, log_max_mb, log_max_days) if log is not None else None
    searched = None
    if corpus is not None:
        from ..runs.search_index import index_for

        searched = index_for(predictor, Path(run), Path(corpus), backend, index=index, index_flag="--index")
    app = create_app(predictor, model_info(Path(run), predictor, backend), Limits(max_texts, max_chars, max_body_bytes),
                     Batching(max_wait_ms, max_batch_texts, max_batch_tokens, max_queue, batching),
                     Access(api_key, allowed_hosts, docs=not api_key if docs is None else docs),
                     index=searched, prediction_log=logged)
    check_port(host, port)
    logging.getLogger(__name__).info("serving %s on http://%s:%d%s%s", run, host, port, " (docs at /docs)" if app.docs_url else "",
             "; API key required" if api_key else "")
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        logging.getLogger(__name__).info("server stopped; it keeps no state, so nothing was lost")
