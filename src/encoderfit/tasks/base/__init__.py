"""The task abstraction: `Task` and its five parts (see task.py)."""

from .decoding import Decoding
from .modeling import BucketedPadding, Modeling
from .pages import Pages
from .part import Part, Result
from .scoring import Scoring, fit_each, tfidf_features
from .targets import Targets
from .task import Task, check_options

__all__ = ["BucketedPadding", "Decoding", "Modeling", "Pages", "Part", "Result", "Scoring", "Targets", "Task", "check_options", "fit_each", "tfidf_features"]
