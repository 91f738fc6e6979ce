"""The one exception type for mistakes a user can fix; Ctrl-C and SIGTERM as exceptions that are never lost."""

from __future__ import annotations

import difflib
import signal
from typing import Dict, Iterable, List


class UserError(Exception):
    """Bad input or configuration. The CLI prints it as one line and exits with code 2."""


def closest(word: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' for the nearest of `choices`, or '' when none is close."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so the same clean-up runs as for Ctrl-C."""


_received: List[int] = []


def _on_signal(signum, frame):
    _received.append(signum)
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def catch_signals() -> Dict[int, object]:
    """Ctrl-C raises KeyboardInterrupt and SIGTERM Terminated in the main thread, and each is remembered; returns the
    handlers replaced (for `release_signals`)."""
    _received.clear()
    return {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}


def release_signals(previous: Dict[int, object]) -> None:
    """Put back the handlers `catch_signals` replaced and forget the signals received (a later run in this process
    starts clean)."""
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    _received.clear()


def raise_if_signalled() -> None:
    """Raise again a signal's exception that was swallowed on its way: Python drops an exception raised while a
    finalizer or a weakref callback runs (it prints "Exception ignored in ..."), so a Ctrl-C that lands there would
    vanish and training would run on. Training calls this at the end of every step."""
    if _received:
        raise Terminated() if _received[-1] == signal.SIGTERM else KeyboardInterrupt()
