"""The server's embedding routes: POST /v1/embed (texts -> normalised vectors) and, when started with a corpus,
POST /v1/search (queries -> the nearest documents). Both share the batcher, so concurrent requests share model
passes, and the same limits as /v1/predict."""

from __future__ import annotations

from typing import List, Optional

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_TOP_K = 100


class EmbedRequest(BaseModel):
    """{"texts": [...]} or {"text": "..."}."""

    model_config = ConfigDict(extra="forbid", strict=True)
    texts: Optional[List[str]] = None
    text: Optional[str] = None

    @model_validator(mode="after")
    def one_of(self):
        if (self.texts is None) == (self.text is None):
            raise ValueError('send exactly one of "texts" (a list of strings) or "text" (a string)')
        return self


class SearchRequest(BaseModel):
    """{"query": "...", "top_k": 10} or {"queries": [...], "top_k": 10}."""

    model_config = ConfigDict(extra="forbid", strict=True)
    queries: Optional[List[str]] = None
    query: Optional[str] = None
    top_k: int = Field(10, ge=1, le=MAX_TOP_K)

    @model_validator(mode="after")
    def one_of(self):
        if (self.queries is None) == (self.query is None):
            raise ValueError('send exactly one of "queries" (a list of strings) or "query" (a string)')
        return self


def add_embedding_routes(app, predictor, batcher, limits, index) -> None:
    import numpy as np

    from .http import error_response, check_texts, client_gone

    async def vectors(texts: List[str], request):
        results = await batcher.predict(texts, None, lambda: client_gone(request))
        return np.asarray([r["embedding"] for r in results], dtype=np.float32)

    @app.post("/v1/embed")
    async def embed(body: EmbedRequest, request: Request):
        texts = body.texts if body.texts is not None else [body.text]
        refused = check_texts(texts, None, limits)
        if refused is not None:
            return refused
        found = await vectors(texts, request)
        found /= np.maximum(np.linalg.norm(found, axis=1, keepdims=True), 1e-12)
        return {"embeddings": [[round(float(v), 6) for v in row] for row in found], "dimension": int(found.shape[1])}

    @app.post("/v1/search")
    async def search(body: SearchRequest, request: Request):
        if index is None:
            return error_response(404, "this server has no corpus to search: start it with `encoderfit serve RUN --corpus FILE`")
        queries = body.queries if body.queries is not None else [body.query]
        refused = check_texts(queries, None, limits, "queries")
        if refused is not None:
            return refused
        return {"results": index.nearest(await vectors(queries, request), body.top_k)}
