"""The options train, tune, cv, distill, pretrain and tune-pretrain share are defined once (commands/options.py): each
command's signature, defaults and help for them come from that one table, and the CLI's flat flags are built from it."""

import inspect
import typing

import pytest

from encoderfit.cli import build_parser
from encoderfit.commands import COMMANDS
from encoderfit.commands.options import FINE_TUNING, PRETRAINING, RUN_DIR, SEARCH, shared

TABLES = {
    "train": (FINE_TUNING, RUN_DIR),
    "tune": (FINE_TUNING, SEARCH, RUN_DIR),
    "cv": (FINE_TUNING, RUN_DIR),
    "distill": (FINE_TUNING, RUN_DIR),
    "pretrain": (PRETRAINING, RUN_DIR),
    "tune-pretrain": (PRETRAINING, SEARCH, RUN_DIR),
}
OWN = {"distill": {"task"}}  # distill's task is any string (the teacher's), checked against the teacher


@pytest.mark.parametrize("name", list(TABLES))
def test_shared_parameters_come_from_the_table(name):
    fn = COMMANDS[name].load()
    params = inspect.signature(fn).parameters
    hints = typing.get_type_hints(fn)
    shared_names = set().union(*TABLES[name]) & set(params) - OWN.get(name, set())
    assert shared_names >= {"overwrite", "train", "model"}
    for option_name in shared_names:
        option = next(t[option_name] for t in TABLES[name] if option_name in t)
        assert hints[option_name] == option.annotation, option_name
        assert params[option_name].default == option.default(), option_name
    # every parameter is documented once, in signature order
    args = fn.__doc__.split("\n    Args:\n", 1)[1]
    documented = [line.strip().split(":")[0] for line in args.splitlines() if not line.startswith(" " * 12) and line.strip()]
    assert documented == [p for p in params], documented


@pytest.mark.parametrize("name", list(TABLES))
def test_print_config_keys_hold_the_shared_options(name):
    fn = COMMANDS[name].load()
    parser = build_parser({name: fn})
    keys = set(parser._subcommands_action._name_parser_map[name].get_defaults().keys())
    groups = {k.split(".")[0] for k in keys}
    for table in TABLES[name]:
        taken = set(table) & set(inspect.signature(fn).parameters) - {"options"}  # options: the task groups
        assert taken and taken <= groups, taken - groups


def test_a_new_command_gets_the_shared_flags():
    @shared(FINE_TUNING, RUN_DIR)
    def mine(data=..., model=..., train=..., output_dir: str = "runs/mine", overwrite=...):
        """Mine.

        Args:
            output_dir: Where.
        """
        return data, model, train, output_dir, overwrite

    data, model, train, out, overwrite = mine()  # the Python API sees the real defaults
    assert (data, model, train) == (FINE_TUNING["data"].default(), FINE_TUNING["model"].default(),
                                    FINE_TUNING["train"].default())
    assert (out, overwrite) == ("runs/mine", False)
    parser = build_parser({"mine": mine})
    cfg = parser.parse_args(["mine", "--data.source", "x.csv", "--train.learning_rate", "3e-5", "--overwrite", "true"])
    assert cfg.mine.data.source == "x.csv" and cfg.mine.train.learning_rate == 3e-5 and cfg.mine.overwrite is True
    assert "Where the labelled text comes from" in mine.__doc__ and "Replace OUTPUT_DIR" in mine.__doc__


def test_an_unknown_shared_name_is_refused():
    with pytest.raises(TypeError, match="'nothing'"):
        @shared(FINE_TUNING)
        def broken(nothing=...):
            return nothing
