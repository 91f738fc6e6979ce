"""`encoderfit SUBCOMMAND`: the commands registry (`encoderfit.commands.COMMANDS`) maps each subcommand to the plain
function that implements it.

A function's signature and docstring are its `--help`; dataclass arguments become dotted groups
(`--train.learning_rate`), and `--config FILE.yaml` fills any of them. A function that takes `options` (train, cv,
tune, distill) also gets each task's own group (`--ner.documents`, from the registry's `OPTIONS`), passed to it as
`options={"ner": {"documents": True}}` (only the settings given). User mistakes print one line
and exit with code 2; Ctrl-C (or SIGTERM) says what was kept and exits with 130 (143).

Only the standard library is imported at module level, so an interrupt during start-up (the heavy imports
happen inside `main`) is handled like any other.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import re
import sys
import typing
from pathlib import Path
from typing import Callable, Dict, List, Optional

from .core.distributed import leave
from .core.errors import Terminated, UserError, catch_signals, closest, release_signals

EXIT_USER_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED = 2, 130, 143
# a negative number as a flag's value: argparse reads "-1e-4" as an option unless it is joined with "="
NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def commands() -> Dict[str, Callable]:
    """Each subcommand's function, from the commands registry (`encoderfit.commands.COMMANDS`, which launch reads too)."""
    from .commands import functions

    return functions()


def build_parser(commands: Dict[str, Callable], prog: str = "encoderfit", skip: frozenset = frozenset()):
    from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = ArgumentParser(prog=prog, exit_on_error=False, allow_abbrev=False,
                            description="Pre-train, fine-tune, evaluate and use transformer encoders: classification, multi-label, regression, NER, question answering, embeddings and search, masked-LM."
                            " `encoderfit launch modal|skypilot [...] -- COMMAND` runs a command on cloud GPUs.")
    subcommands = parser.add_subcommands(dest="command")
    for name, fn in commands.items():
        summary = (fn.__doc__ or "").strip().splitlines()[0]
        sub = ArgumentParser(prog=f"{prog} {name}", description=summary, exit_on_error=False, allow_abbrev=False)
        sub.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the options below (command-line flags win).")
        sub.add_function_arguments(fn, as_positional=True, skip={"return", "options", *skip})
        for group, kind in task_groups(fn).items():
            sub.add_class_arguments(kind, group, help=f"The {group} task's own settings.")
        subcommands.add_subcommand(name, sub, help=summary)
    return parser


def task_groups(fn: Callable) -> Dict[str, type]:
    """The tasks' own config groups (task name -> its Options dataclass) for a command whose function takes them."""
    if "options" not in inspect.signature(fn).parameters:
        return {}
    from .tasks import OPTIONS

    return OPTIONS


def _task_options(kwargs: dict, groups: Dict[str, type]) -> Dict[str, dict]:
    """The task groups' parsed dataclasses (popped from `kwargs`) -> {task: {setting: value}}, settings given only."""
    options = {}
    for group, kind in groups.items():
        value, default = kwargs.pop(group), kind()
        given = {f.name: getattr(value, f.name) for f in dataclasses.fields(kind) if getattr(value, f.name) != getattr(default, f.name)}
        if given:
            options[group] = given
    return options


def _known_keys(parser, command: Optional[str]) -> List[str]:
    if not command:
        return []
    sub = parser._subcommands_action._name_parser_map[command]  # jsonargparse keeps subparsers here
    return list(sub.get_defaults().keys())


def join_negative_values(argv: List[str]) -> List[str]:
    """`--flag -1e-4` -> `--flag=-1e-4`, so a negative number is taken as the flag's value."""
    out: List[str] = []
    for arg in argv:
        if out and NEGATIVE_NUMBER.match(arg) and out[-1].startswith("--") and "=" not in out[-1]:
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def _takes_texts(tp) -> bool:
    """The annotation is a list of texts, or a Union that includes one (`Union[str, List[str], None]`)."""
    options = typing.get_args(tp) if typing.get_origin(tp) is typing.Union else (tp,)
    return any(typing.get_origin(a) in (list, typing.List) and typing.get_args(a) == (str,) for a in options)


def gather_repeated(argv: List[str], fn: Optional[Callable]) -> List[str]:
    """`--query a --query b` -> `--query=["a", "b"]` for an option that takes a list of texts: each plain value is one
    item, and repeating the flag adds items (argparse would keep the last). A value written as a list, `[a, b]`, is
    left as it is."""
    if fn is None:
        return argv
    out: List[str] = []
    items: Dict[str, List[str]] = {}
    where: Dict[str, int] = {}  # flag -> its place in `out`
    i = 0
    while i < len(argv):
        flag, eq, value = argv[i].partition("=")
        step = 1 if eq else 2
        if not eq and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            value = argv[i + 1]
        elif not eq:
            step = 0  # no value: argparse says so
        if not (step and flag.startswith("--") and not value.lstrip().startswith("[") and _takes_texts(_annotation(fn, flag[2:]))):
            out.append(argv[i])
            i += 1
            continue
        if flag not in where:
            where[flag] = len(out)
            out.append(flag)
        items.setdefault(flag, []).append(value)
        i += step
    for flag, place in where.items():
        out[place] = f"{flag}={json.dumps(items[flag], ensure_ascii=False)}"
    return out


def _annotation(fn: Callable, key: str):
    """The type of option `key` ("port", "train.learning_rate", "ner.tag_scheme") of a subcommand's function, or None."""
    try:
        hints = typing.get_type_hints(fn)
        if "." not in key:
            return hints.get(key)
        group, field = key.split(".", 1)
        return typing.get_type_hints(hints.get(group) or task_groups(fn)[group]).get(field)
    except (KeyError, NameError, TypeError):
        return None


def describe(tp) -> str:
    """A type annotation in words: the values an option accepts."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return "one of: " + ", ".join(str(a) for a in args)
    if origin is typing.Union:
        allowed = [a for a in args if a is not type(None)]
        literals = [v for a in allowed if typing.get_origin(a) is typing.Literal for v in typing.get_args(a)]
        if literals and all(typing.get_origin(a) is typing.Literal for a in allowed):
            return "one of: " + ", ".join(map(str, literals)) + (", null" if type(None) in args else "")
        return " or ".join(describe(a).removeprefix("one of: ") for a in allowed) + (" or null" if type(None) in args else "")
    if origin in (dict, typing.Dict) or tp is dict:
        return 'a mapping, as JSON or YAML (e.g. \'{"name": {"low": 1, "high": 2}}\')'
    if origin in (list, typing.List) or tp is list:
        return "a list, e.g. [a, b]"
    return {bool: "true or false", int: "an integer", float: "a number", str: "text", Path: "a path"}.get(tp, getattr(tp, "__name__", str(tp)))


def _one_line(parser, commands: Dict[str, Callable], argv: List[str], message: str) -> str:
    """jsonargparse's multi-line messages -> one line: the closest key for an unknown one, the allowed values for
    a value of the wrong type."""
    command = next((a for a in argv if not a.startswith("-")), None)
    unknown = re.search(r"does not accept option '([^']+)'|unrecognized arguments: --?(\S+)", message)
    if unknown:
        key = (unknown.group(1) or unknown.group(2)).split("=")[0]
        from .core.runconfig import moved_flag

        if moved_flag(key):
            return f"--{key} is now {moved_flag(key)} (each task keeps its own settings); see `encoderfit {command or ''} --help`"
        hint = closest(key, _known_keys(parser, command))
        return f"unknown option or config key '{key}'{hint}; see `encoderfit {command or ''} --help`".replace("  ", " ")
    invalid = re.search(r'(?:option|Parser key) "([^"]+)":.*(?:Given value|Got value): (.*)$', " ".join(message.split()))
    if invalid and command in commands:
        key, value = invalid.groups()
        tp = _annotation(commands[command], key)
        if tp is not None:
            return f"--{key}: '{value.strip()}' is not valid; expected {describe(tp)}"
    missing_value = re.search(r"argument (--\S+): expected one argument", message)
    if missing_value:
        return f"{missing_value.group(1)} needs a value, e.g. {missing_value.group(1)}=VALUE"
    return re.sub(r"\s+", " ", message.replace("Parser key", "option")).strip()


def _launch(argv: List[str]) -> int:
    """`encoderfit launch ENGINE [options] -- COMMAND ...`: the options before `--` are the engine's, the rest is the
    encoderfit command to run there."""
    from .launch import ENGINES

    split = argv.index("--") if "--" in argv else len(argv)
    own, command = argv[:split], argv[split + 1:]
    parser = build_parser(ENGINES, prog="encoderfit launch", skip={"command"})
    try:
        cfg = parser.parse_args(own)
    except Exception as err:
        if type(err).__name__ != "ArgumentError":
            raise
        message = _one_line(parser, ENGINES, own, str(err))
        raise UserError(message.replace("`encoderfit ", "`encoderfit launch ")) from None
    engine = cfg.command
    if engine == "pull" and "--" in argv:
        raise UserError("launch pull takes a run directory, not a command after `--`")
    kwargs = {k: v for k, v in vars(parser.instantiate(cfg)[engine]).items() if k != "config"}
    if engine != "pull":
        kwargs["command"] = command
    ENGINES[engine](**kwargs)
    return 0


def _run(argv: List[str]) -> int:
    if argv[:1] == ["launch"]:
        return _launch(argv[1:])
    table = commands()
    parser = build_parser(table)
    command = next((a for a in argv if not a.startswith("-")), None)
    argv = gather_repeated(argv, table.get(command))
    try:
        cfg = parser.parse_args(argv)
        command = cfg.command
        init = parser.instantiate(cfg)
    except UserError:
        raise
    except Exception as err:  # argument errors: re-raise anything that is not one
        if type(err).__name__ != "ArgumentError":
            raise
        raise UserError(_one_line(parser, table, argv, str(err))) from None
    kwargs = {k: v for k, v in vars(init[command]).items() if k != "config"}
    groups = task_groups(table[command])
    if groups:
        kwargs["options"] = _task_options(kwargs, groups)
    result = table[command](**kwargs)
    return int(getattr(result, "exit_code", 0))  # monitor (an alarm: 3) and retrain (kept the old model: 4) say so


def main(argv: Optional[List[str]] = None) -> int:
    argv = join_negative_values(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    previous = catch_signals()
    try:
        return _run(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("terminated (SIGTERM)", file=sys.stderr)
        return EXIT_TERMINATED
    finally:
        release_signals(previous)
        leave()


if __name__ == "__main__":
    sys.exit(main())
