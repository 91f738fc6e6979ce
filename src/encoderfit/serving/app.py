"""The HTTP app behind `encoderfit serve` (commands/serve.py): a FastAPI app that predicts over HTTP for any task,
batching concurrent requests dynamically.

Concurrent requests wait in a queue for at most `max_wait_ms`; whatever has arrived by then (up to a text
budget) runs as one length-sorted pass of the model, and each request gets its own answer back (serving/batcher.py).
The model runs on one worker thread, so the event loop keeps accepting requests while it computes. A request bigger
than one pass takes turns with the others; at most `max_queue` requests are held, more get 503 with Retry-After."""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from ..core.errors import UserError
from ..runs.predictor import Predictor
from .batcher import Batcher, ClientGone, Metrics, Overloaded
from .http import HostCheck, Limits, error_response, check_texts, client_gone, host_patterns
from .logged import Busy, add_log_routes

log = logging.getLogger(__name__)
PAGE = Path(__file__).with_name("page.html")
API_KEY_ENV = "ENCODERFIT_API_KEY"
RETRY_AFTER_S = 1  # what a 503 (queue full) asks the client to wait


class PredictRequest(BaseModel):
    """{"texts": [...]}, {"text": "..."}, or {"pairs": [[a, b], ...]} for a model trained on text pairs; or the texts
    by the task's names for them, one ({"question": "...", "context": "..."} for QA) or a list under "inputs"."""

    model_config = ConfigDict(extra="allow", strict=True)  # other fields: the task's names, checked by `items`
    texts: Optional[List[str]] = None
    text: Optional[str] = None
    pairs: Optional[List[List[str]]] = None
    inputs: Optional[List[Dict[str, str]]] = None

    @model_validator(mode="after")
    def one_of(self):
        plain = sum(v is not None for v in (self.texts, self.text, self.pairs, self.inputs))
        if plain and self.model_extra:
            raise ValueError(f"unknown field(s) {sorted(self.model_extra)} beside the texts; send only one of \"texts\", "
                             "\"text\", \"pairs\" or \"inputs\"")
        given = plain + bool(self.model_extra)
        if given != 1:
            raise ValueError('send exactly one of "texts" (a list of strings), "text" (a string), "pairs" (a list of [a, b]), '
                             'or the texts by name (one object, or a list of them as "inputs")')
        for i, pair in enumerate(self.pairs or []):
            if len(pair) != 2:
                raise ValueError(f"pairs.{i}: a pair is [first text, second text], got {len(pair)} texts")
        return self

    def items(self, names: Tuple[str, str], paired: bool) -> Tuple[List[str], Optional[List[str]]]:
        """(texts, pairs); a ValueError names what is wrong with texts given by name."""
        if self.pairs is not None:
            return [a for a, _ in self.pairs], [b for _, b in self.pairs]
        if self.texts is not None or self.text is not None:
            return (self.texts if self.texts is not None else [self.text]), None
        rows = self.inputs if self.inputs is not None else [self.model_extra]
        wanted = set(names) if paired else {names[0]}
        for i, row in enumerate(rows):
            where = f"inputs.{i}" if self.inputs is not None else "body"
            if set(row) != wanted:
                raise ValueError(f"{where}: send the fields {sorted(wanted)} (got {sorted(row)})")
            bad = next((k for k, v in row.items() if not isinstance(v, str)), None)
            if bad is not None:
                raise ValueError(f"{where}.{bad}: a string is expected")
        return [r[names[0]] for r in rows], ([r[names[1]] for r in rows] if paired else None)

    def where(self, names: Tuple[str, str]):
        """The request's own name for its text i (k 0) or the pair of it (k 1): "pairs.0.1", "inputs.2.context"."""
        if self.pairs is not None:
            return lambda i, k: f"pairs.{i}.{k}"
        if self.texts is not None or self.text is not None:
            return lambda i, k: f"texts.{i}" if self.texts is not None else "text"
        return lambda i, k: f"inputs.{i}.{names[k]}" if self.inputs is not None else names[k]


def route_template(app: FastAPI, scope) -> str:
    """The route a request matched ("/v1/classify"), or "other": metrics are labelled by this, never by the raw
    path, so clients cannot grow the number of series."""
    for route in app.router.routes:
        match, _ = route.matches(scope)
        if match != Match.NONE:
            return getattr(route, "path", "other")
    return "other"


def overloaded(message: str) -> JSONResponse:
    """503 when --max_queue requests are already held: the client should retry after Retry-After seconds."""
    return JSONResponse({"error": f"{message}; retry after {RETRY_AFTER_S} s"}, status_code=503,
                        headers={"Retry-After": str(RETRY_AFTER_S)})


@dataclass(frozen=True)
class Batching:
    """How concurrent requests share model passes (serve's --max_wait_ms, --max_batch_texts, --max_batch_tokens,
    --max_queue, --batching)."""

    max_wait_ms: float = 5.0
    max_batch_texts: int = 256
    max_batch_tokens: Optional[int] = None
    max_queue: int = 128
    enabled: bool = True


@dataclass(frozen=True)
class Access:
    """Who may call the server and what it shows (serve's --api_key, --allowed_hosts, --docs). `allowed_hosts`:
    Host header names accepted (None: any)."""

    api_key: Optional[str] = None
    allowed_hosts: Optional[List[str]] = None
    docs: bool = True


def create_app(predictor: Predictor, info: Dict, limits: Limits = Limits(), batching: Batching = Batching(),
               access: Access = Access(), index=None, prediction_log=None) -> FastAPI:
    """The HTTP app around a loaded Predictor; `info` is what GET /v1/model reports. `limits`, `batching`, `access`:
    serve's options, grouped. `index`: a search.SearchIndex that POST /v1/search answers from (embedding models).
    `prediction_log`: a logged.ServedLog that every answered prediction is committed to before its answer (serve
    --log).

    Built by concern: the batcher and its lifespan here; the guard every request passes (`add_guard`: hosts, API
    key, queue, body limits, metrics); the error shapes (`add_error_handlers`); the prediction routes
    (`add_predict_route`, the log's, the embedding routes); the plain pages (`add_pages`)."""
    metrics = Metrics()
    batcher = Batcher(predictor, metrics, batching.max_wait_ms, batching.max_batch_texts, batching.enabled,
                      batching.max_queue, batching.max_batch_tokens)

    async def lifespan(app):
        batcher.start()
        if prediction_log is not None:
            prediction_log.start(metrics.registry)
        yield
        await batcher.stop()
        if prediction_log is not None:
            prediction_log.stop()

    app = FastAPI(title="encoderfit", version=str(info.get("encoderfit_version", "")), lifespan=lifespan,
                  docs_url="/docs" if access.docs else None, redoc_url=None,
                  openapi_url="/openapi.json" if access.docs else None)
    app.state.batcher, app.state.metrics = batcher, metrics
    hosts = HostCheck(host_patterns(access.allowed_hosts)) if access.allowed_hosts is not None else None
    add_guard(app, hosts, access.api_key, limits)
    add_error_handlers(app)
    add_pages(app, info)
    add_predict_route(app, predictor, limits, prediction_log)
    add_log_routes(app, prediction_log, predictor, overloaded)
    if predictor.task.supports("embed"):
        from .search_routes import add_embedding_routes

        add_embedding_routes(app, predictor, batcher, limits, index)
    return app


def add_guard(app: FastAPI, hosts: Optional[HostCheck], api_key: Optional[str], limits: Limits) -> None:
    """What every request passes before its route: the Host check, the API key (/v1/ and /metrics), the queue (a
    full one sheds a POST before its body is read), the body's size and type; then its count and latency, and a
    JSON 500 for a bug while answering it."""
    batcher, metrics = app.state.batcher, app.state.metrics

    @app.middleware("http")
    async def guard(request: Request, call_next):
        start = time.perf_counter()
        try:
            response = await guarded(request, call_next)
        except Exception:  # a bug, not the client's fault: a JSON 500 for this request alone, logged and counted
            log.exception("error while answering %s %s", request.method, route_template(app, request.scope))
            response = error_response(500, "internal error while answering this request; the server log has the details")
        path = route_template(app, request.scope)
        metrics.requests.labels(path, str(response.status_code)).inc()
        metrics.latency.labels(path).observe(time.perf_counter() - start)
        return response

    async def guarded(request: Request, call_next):
        if hosts is not None and not await hosts.passes(request.scope):
            return hosts.refusal(request.headers.get("host", ""))
        protected = request.url.path.startswith("/v1/") or request.url.path == "/metrics"
        if api_key and protected:
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return error_response(401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'")
        if request.method == "POST" and request.url.path.startswith("/v1/") and batcher.full():  # before reading the body
            return overloaded(batcher.shed())
        if request.method == "POST":
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
                return error_response(413, f"request body over {limits.max_body_bytes} bytes")
            if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
                return error_response(415, "send the body as JSON with 'Content-Type: application/json'")
            body, size = [], 0
            async for chunk in request.stream():  # counted as it arrives: an oversized body is never read whole
                size += len(chunk)
                if size > limits.max_body_bytes:
                    return error_response(413, f"request body over {limits.max_body_bytes} bytes")
                body.append(chunk)
            request._body = b"".join(body)
        return await call_next(request)


def add_error_handlers(app: FastAPI) -> None:
    """Every refusal in one JSON shape, {"error": "..."}: invalid bodies (422), a full queue (503), a client gone
    (499, in the metrics only), and starlette's own (404, 405, 400)."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return error_response(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(Overloaded)
    async def busy(request: Request, err: Overloaded):
        return overloaded(str(err))

    @app.exception_handler(ClientGone)
    async def gone(request: Request, err: ClientGone):  # nobody reads it; 499 (client closed request) in the metrics
        return error_response(499, str(err))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):  # 404, 405, 400: the same shape as ours
        return error_response(err.status_code, str(err.detail))


def add_pages(app: FastAPI, info: Dict) -> None:
    """GET /health, /v1/model (`info`), /metrics (Prometheus) and / (the try-it page)."""
    metrics = app.state.metrics

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health():
        return {"status": "ok"}

    @app.get("/v1/model")
    async def model():
        return info

    @app.get("/metrics")
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
    async def page():
        return PAGE.read_text(encoding="utf-8")


def add_predict_route(app: FastAPI, predictor: Predictor, limits: Limits, prediction_log=None) -> None:
    """POST /v1/predict (and its first name, /v1/classify): the texts checked against `limits`, batched with the
    other requests, their signals counted, committed to `prediction_log` (when given) before the answer."""
    batcher, metrics = app.state.batcher, app.state.metrics

    @app.post("/v1/predict")
    @app.post("/v1/classify")  # the first name, kept
    async def predict(body: PredictRequest, request: Request):
        try:
            texts, pairs = body.items(predictor.task.inputs, predictor.info.text_pair)
        except ValueError as err:
            return error_response(422, str(err))
        if (pairs is not None) != predictor.info.text_pair:
            wanted = '"pairs": [[a, b], ...]' if predictor.info.text_pair else '"texts" or "text"'
            return error_response(422, f"this model takes {'text pairs' if predictor.info.text_pair else 'single texts'}: send {wanted}")
        refused = check_texts(texts, pairs, limits, where=body.where(predictor.task.inputs))
        if refused is not None:
            return refused
        try:
            results = await batcher.predict(texts, pairs, lambda: client_gone(request))
        except UserError as err:  # input this model cannot read (a QA question over half its max_length): the client's to fix
            return error_response(422, str(err))
        for r in results:
            metrics.observe(predictor.task.decoding.signals(r))
        if prediction_log is not None:  # committed before the answer: an answered request is in the log
            try:
                results = await prediction_log.record(texts, pairs, results)
            except Busy as err:
                return overloaded(str(err))
        return {"results": results}


def model_info(run: Path, predictor: Predictor, backend: str) -> Dict:
    """What GET /v1/model reports: the task, labels, head, limits of the model, and the run's headline metrics."""
    from .. import __version__
    from ..runs.rundir import RunDir, locate

    info = {"task": predictor.task.name, "labels": predictor.labels, "text_pair": predictor.info.text_pair,
            "max_length": predictor.max_length, "backend": backend, "head": predictor.head, "abstain": predictor.abstain,
            "encoderfit_version": __version__}
    if predictor.recheck is not None:
        info["int8_recheck_margin"] = predictor.recheck[1]
    rundir = locate(run)[0] if (Path(run) / RunDir.MODEL).is_dir() else None
    if rundir is not None:
        cfg = rundir.config()
        info["base_model"] = cfg.model.name_or_path
        info["data"] = cfg.data.source
        if (rundir / RunDir.METRICS).is_file():
            saved = rundir.metrics()
            info["metrics"] = {split: {k: saved[split][k] for k, _ in predictor.task.summary if k in saved.get(split, {})}
                               for split in ("validation", "test") if split in saved}
    return info


