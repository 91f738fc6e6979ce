"""What every route of the server shares: the request limits, the one shape of an error response, the checks on
texts a route receives, and noticing a client that went away. app.py's routes and search.py's use them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Callable, List, Optional

from fastapi import Request
from fastapi.responses import JSONResponse


@dataclass
class Limits:
    max_texts: int = 64
    max_chars: int = 20000
    max_body_bytes: int = 2_000_000


def _error(status: int, message: str) -> JSONResponse:
    """Every error the server sends has this one shape: {"error": "what is wrong and how to fix it"}."""
    return JSONResponse({"error": message}, status_code=status)


async def client_gone(request: Request) -> None:
    """Returns once the client has closed the connection (its body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.1)  # a server that repeats body messages must not spin


def check_texts(texts: List[str], pairs: Optional[List[str]], limits: Limits, field: str = "texts",
                where: Optional[Callable[[int, int], str]] = None) -> Optional[JSONResponse]:
    """The error response for texts the server refuses (none, too many, empty, too long, not Unicode), or None.
    `where(i, k)`: the request's name for text i (k 0) or its pair (k 1), e.g. "inputs.0.context"; default
    "texts.i" / "pairs.i"."""
    if not texts or len(texts) > limits.max_texts:
        return _error(422, f"{field}: send between 1 and {limits.max_texts} texts")
    for k, (name, items) in enumerate(((field, texts), ("pairs", pairs or []))):
        for i, text in enumerate(items):
            at = where(i, k) if where is not None else f"{name}.{i}"
            if not text.strip():
                return _error(422, f"{at}: empty text")
            if len(text) > limits.max_chars:
                return _error(413, f"{at}: {len(text)} characters, over the limit of {limits.max_chars}")
            bad = unencodable(text)
            if bad is not None:
                return _error(422, f"{at}: character {bad} is a lone surrogate, not valid Unicode; send UTF-8 text")
    return None


def unencodable(text: str) -> Optional[int]:
    """Index of the first character that UTF-8 cannot encode (a lone surrogate such as \\ud800), or None."""
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError as err:
        return err.start
