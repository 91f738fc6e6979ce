"""What every route of the server shares: the request limits, the one shape of an error response, the checks on
texts a route receives, noticing a client that went away, and the Host header check (--allowed_hosts). app.py's
routes and search.py's use them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Callable, List, Optional

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ..core.errors import UserError


@dataclass
class Limits:
    max_texts: int = 64
    max_chars: int = 20000
    max_body_bytes: int = 2_000_000


def error_response(status: int, message: str) -> JSONResponse:
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
        return error_response(422, f"{field}: send between 1 and {limits.max_texts} texts")
    for k, (name, items) in enumerate(((field, texts), ("pairs", pairs or []))):
        for i, text in enumerate(items):
            at = where(i, k) if where is not None else f"{name}.{i}"
            if not text.strip():
                return error_response(422, f"{at}: empty text")
            if len(text) > limits.max_chars:
                return error_response(413, f"{at}: {len(text)} characters, over the limit of {limits.max_chars}")
            bad = unencodable(text)
            if bad is not None:
                return error_response(422, f"{at}: character {bad} is a lone surrogate, not valid Unicode; send UTF-8 text")
    return None


def unencodable(text: str) -> Optional[int]:
    """Index of the first character that UTF-8 cannot encode (a lone surrogate such as \\ud800), or None."""
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError as err:
        return err.start


def host_patterns(names: List[str]) -> List[str]:
    """--allowed_hosts as TrustedHostMiddleware takes them: lower case, IPv6 literals in brackets ("[::1]"), "*" for
    any name, "*.example.com" for its subdomains."""
    patterns = []
    for name in names:
        bare = name.strip().lower().strip("[]")
        if "*" in bare[1:] or (bare.startswith("*") and bare != "*" and not bare.startswith("*.")):
            raise UserError(f"--allowed_hosts: '{name}' is not a host name; a wildcard must be like '*.example.com' (or '*': any)")
        patterns.append(f"[{bare}]" if ":" in bare else bare)
    return patterns


class HostCheck:
    """Whether a request's Host header names this server (against DNS rebinding), as Starlette's
    TrustedHostMiddleware decides it: a malformed header such as '127.0.0.1:1@evil.com' fails too. The server answers
    a refusal itself, in its JSON error shape, before reading the body or the API key."""

    PASSED = "encoderfit.host_passed"

    def __init__(self, allowed_hosts: List[str]):
        self.allowed = allowed_hosts
        self.middleware = TrustedHostMiddleware(self._passed, allowed_hosts=allowed_hosts, www_redirect=False)

    @classmethod
    async def _passed(cls, scope, receive, send):
        scope[cls.PASSED] = True

    async def passes(self, scope) -> bool:
        async def discard(message):  # the middleware's own plain-text refusal
            pass

        await self.middleware(scope, None, discard)
        return scope.pop(self.PASSED, False)

    def refusal(self, host: str) -> JSONResponse:
        return error_response(400, f"Host header '{host}' is not served here; allowed: {', '.join(self.allowed)} "
                           "(start the server with --allowed_hosts to add names)")
