"""The options several commands take, defined once: type, default and help.

A command names a shared option in its signature with the default `...`; `@shared(TABLE, ...)` fills in the type and
default from the table (in place: the function then has exactly the signature it would have had written out, which
both the Python API and jsonargparse, building the CLI's flat flags from `inspect.signature`, see) and adds the
option's help to the docstring's Args, in signature order. A command that means something more particular by an
option writes its own Args entry, which is kept. So the train/tune/cv/distill and pretrain/tune-pretrain blocks are
one definition each, and a new fine-tuning command is `def mine(data=..., model=..., ...)` plus its own options.
"""

from __future__ import annotations

import inspect
import re
import textwrap
from dataclasses import dataclass
from typing import Any, Callable, Dict, Literal, Optional

from ..core.args import DataArgs, ModelArgs, ReportArgs, TrainArgs
from ..pretraining.corpus import CorpusArgs
from ..pretraining.settings import MlmArgs, PretrainModelArgs, pretrain_defaults
from ..pretraining.tokenizer import TokenizerArgs
from ..runs.lifecycle import TaskName


@dataclass(frozen=True)
class Option:
    annotation: Any
    default: Callable[[], Any]
    """Called once per command (each command gets its own instance of a settings object, as a written-out default)."""
    doc: str


def _value(value):
    return lambda: value


RESUME_DOC = ("Continue an interrupted run from its newest complete checkpoint. Default (null): resume when the same "
              "config was interrupted before; true: insist on resuming; false: discard it and start over.")

RUN_DIR: Dict[str, Option] = {
    "overwrite": Option(bool, _value(False), "Replace OUTPUT_DIR if it already exists."),
    "resume": Option(Optional[bool], _value(None), RESUME_DOC),
}
"""Every command that writes a run directory."""

FINE_TUNING: Dict[str, Option] = {
    "data": Option(DataArgs, DataArgs, "Where the labelled text comes from and how it is split."),
    "model": Option(ModelArgs, ModelArgs, "Which encoder to fine-tune."),
    "train": Option(TrainArgs, TrainArgs, "Optimisation and evaluation settings."),
    "report": Option(ReportArgs, ReportArgs, "Abstention threshold, prediction-interval coverage, baseline and "
                     "error-analysis settings of the final evaluation."),
    "task": Option(Optional[TaskName], _value(None), (
        "classification (one class per text), multilabel (a set of labels per text), regression (a number), ner (a "
        "tag per word: token lists with tags, CoNLL files, or text with character spans), qa (an answer span of a "
        "context: SQuAD files or question/context/answers rows), embedding or similarity (never inferred but the "
        "first three). Default: inferred from the label column (lists or --data.label_separator: multilabel; numbers "
        "that are not whole: regression; else classification), and stated in the log.")),
    "options": Option(Optional[Dict[str, dict]], _value(None), (
        "The task's own settings, {task: {setting: value}} (the CLI's --ner.documents true is {\"ner\": "
        "{\"documents\": True}}); a task's settings are listed in `encoderfit train --help` under its name.")),
}
"""train, tune, cv and distill: labelled data, the encoder to fine-tune and how."""

PRETRAINING: Dict[str, Option] = dict(  # keywords: the group names are not string constants (tasks/ own task names)
    corpus=Option(CorpusArgs, CorpusArgs, "Where the unlabelled text comes from and how much is held out."),
    tokenizer=Option(TokenizerArgs, TokenizerArgs, "The tokenizer to train (bpe, wordpiece) or reuse."),
    model=Option(PretrainModelArgs, PretrainModelArgs, "The encoder: a ModernBERT size or any config from scratch, or an "
                 "existing encoder to continue."),
    mlm=Option(MlmArgs, MlmArgs, "Block size and masking rate of the masked-language-model objective."),
    train=Option(TrainArgs, pretrain_defaults, "Optimisation and evaluation settings (defaults: one pass, peak learning "
                 "rate 5e-4, warmup-stable-decay)."),
)
"""pretrain and tune-pretrain: the corpus, tokenizer, encoder and objective."""

SEARCH: Dict[str, Option] = {
    "pruner": Option(Literal["median", "none"], _value("median"), (
        "median: stop a trial whose validation score is worse than the median of earlier trials at the same point; "
        "none: run every trial to the end.")),
    "startup_trials": Option(int, _value(3), "Trials that run to the end before the pruner starts judging."),
    "timeout": Option(Optional[float], _value(None), "Stop starting new trials after this many seconds."),
    "space": Option(Optional[Dict[str, Dict[str, Any]]], _value(None), (
        "Settings to search, each {choices: [...]} or {low: ..., high: ..., log: true}.")),
}
"""tune and tune-pretrain: the Optuna search (`trials` is each command's own: its default differs)."""

_ENTRY = re.compile(r"^ {8}(\w+): ", re.MULTILINE)


def shared(*tables: Dict[str, Option]) -> Callable[[Callable], Callable]:
    """Fill in each `...`-defaulted parameter of the decorated command from the first of `tables` that has it (its
    annotation, its default, and its Args entry unless the docstring has one); a `...` no table has is an error."""
    merged: Dict[str, Option] = {}
    for table in reversed(tables):
        merged.update(table)

    def decorate(fn: Callable) -> Callable:
        params = inspect.signature(fn).parameters
        docs: Dict[str, str] = {}
        defaults = list(fn.__defaults__ or ())
        first_default = len(params) - len(defaults)
        for i, (name, param) in enumerate(params.items()):
            if param.default is not Ellipsis:
                continue
            if name not in merged:
                raise TypeError(f"{fn.__qualname__}: parameter {name!r} has the default ... but no shared option "
                                f"of that name")
            option = merged[name]
            fn.__annotations__[name] = option.annotation
            defaults[i - first_default] = option.default()
            docs[name] = option.doc
        fn.__defaults__ = tuple(defaults)
        fn.__doc__ = _with_args(fn.__doc__ or "", list(params), docs)
        return fn

    return decorate


def _with_args(doc: str, order, shared_docs: Dict[str, str]) -> str:
    """The docstring with an Args section holding every parameter in `order`: the docstring's own entry where it has
    one, else the shared option's help."""
    head, sep, args = doc.partition("\n    Args:\n")
    own: Dict[str, str] = {}
    marks = list(_ENTRY.finditer(args))
    for mark, after in zip(marks, marks[1:] + [None]):
        own[mark.group(1)] = args[mark.start():after.start() if after else len(args)].rstrip() + "\n"
    entries = []
    for name in order:
        if name in own:
            entries.append(own[name])
        elif name in shared_docs:
            entries.append(textwrap.fill(f"{name}: {shared_docs[name]}", width=120, initial_indent=" " * 8,
                                         subsequent_indent=" " * 12) + "\n")
    return head.rstrip() + "\n\n    Args:\n" + "".join(entries) + "    "
