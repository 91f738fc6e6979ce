"""`encoderfit SUBCOMMAND`: one table maps each subcommand to the plain function that implements it.

A function's signature and docstring are its `--help`; dataclass arguments become dotted groups
(`--train.learning_rate`), and `--config FILE.yaml` fills any of them. User mistakes print one line
and exit with code 2.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Callable, Dict, List, Optional

from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

from .distributed import leave
from .errors import UserError, closest

EXIT_USER_ERROR = 2


def _commands() -> Dict[str, Callable]:
    from .evaluate import evaluate
    from .export import export
    from .predict import predict
    from .report import report
    from .serve import serve
    from .train import fit
    from .tune import tune

    return {"train": fit, "tune": tune, "eval": evaluate, "predict": predict, "report": report, "export": export, "serve": serve}


def build_parser(commands: Dict[str, Callable]) -> ArgumentParser:
    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = ArgumentParser(prog="encoderfit", description="Fine-tune, evaluate and use transformer encoders for text classification.", exit_on_error=False, allow_abbrev=False)
    subcommands = parser.add_subcommands(dest="command")
    for name, fn in commands.items():
        summary = (fn.__doc__ or "").strip().splitlines()[0]
        sub = ArgumentParser(prog=f"encoderfit {name}", description=summary, exit_on_error=False, allow_abbrev=False)
        sub.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the options below (command-line flags win).")
        sub.add_function_arguments(fn, as_positional=True, skip={"return"})
        subcommands.add_subcommand(name, sub, help=summary)
    return parser


def _known_keys(parser: ArgumentParser, command: Optional[str]) -> List[str]:
    if not command:
        return []
    sub = parser._subcommands_action._name_parser_map[command]  # jsonargparse keeps subparsers here
    return list(sub.get_defaults().keys())


def _one_line(parser: ArgumentParser, argv: List[str], message: str) -> str:
    """jsonargparse's multi-line messages -> one line, with the closest key for an unknown one."""
    command = next((a for a in argv if not a.startswith("-")), None)
    unknown = re.search(r"does not accept option '([^']+)'|unrecognized arguments: --?(\S+)", message)
    if unknown:
        key = unknown.group(1) or unknown.group(2)
        key = key.split("=")[0]
        hint = closest(key, _known_keys(parser, command))
        return f"unknown option or config key '{key}'{hint}; see `encoderfit {command or ''} --help`".replace("  ", " ")
    return re.sub(r"\s+", " ", message.replace("Parser key", "option")).strip()


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    commands = _commands()
    parser = build_parser(commands)
    try:
        cfg = parser.parse_args(argv)
        command = cfg.command
        init = parser.instantiate(cfg)
        kwargs = {k: v for k, v in vars(init[command]).items() if k != "config"}
        commands[command](**kwargs)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as err:  # argument errors: re-raise anything that is not one
        if type(err).__name__ != "ArgumentError":
            raise
        print(f"error: {_one_line(parser, argv, str(err))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        leave()
    return 0


if __name__ == "__main__":
    sys.exit(main())
