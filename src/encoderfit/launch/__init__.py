"""Run an encoderfit command where the GPUs are: `encoderfit launch modal|skypilot [...] -- COMMAND ...`.

job.py resolves the command (its config, the local files it reads, where it writes, the secrets it needs);
on_modal.py turns it into a Modal app, on_skypilot.py into a SkyPilot task. Both run the same CLI remotely, with the
run directory in a volume/bucket so an interrupted run resumes when the job is restarted.
"""

from .on_modal import launch_modal, pull
from .on_skypilot import launch_skypilot

ENGINES = {"modal": launch_modal, "skypilot": launch_skypilot, "pull": pull}

__all__ = ["launch_modal", "launch_skypilot", "pull", "ENGINES"]
