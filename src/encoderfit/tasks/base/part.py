"""The common shape of a task's parts: each holds the task it belongs to, for its name and declared attributes."""

from __future__ import annotations

from typing import Any, Dict

Result = Dict[str, Any]


class Part:
    def __init__(self, task):
        self.task = task
