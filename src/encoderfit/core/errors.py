"""The one exception type for mistakes a user can fix."""

from __future__ import annotations

import difflib
from typing import Iterable


class UserError(Exception):
    """Bad input or configuration. The CLI prints it as one line and exits with code 2."""


def closest(word: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' for the nearest of `choices`, or '' when none is close."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""
