"""The commands registry (encoderfit.commands.COMMANDS) is the one table the CLI and `launch` read: a command
registered from a test module is a subcommand with its --help and its options, and what launch may run remotely,
with torchrun, uploading which paths, is each record's own."""

import subprocess
import sys

import pytest

from encoderfit import cli
from encoderfit.commands import COMMANDS, Command
from encoderfit.launch import job


def hello(name: str = "world", times: int = 1) -> None:
    """Say hello (a command registered by tests/commands/test_command_registry.py, not shipped).

    Args:
        name: Whom to greet.
        times: How many times.
    """
    for _ in range(times):
        print(f"hello {name}")


@pytest.fixture
def registered():
    COMMANDS["hello"] = Command(f"{__name__}:hello")
    yield
    del COMMANDS["hello"]


def test_a_command_registered_from_a_test_module_runs_through_the_cli(registered, capsys):
    assert cli.main(["hello", "--name", "registry", "--times", "2"]) == 0
    assert capsys.readouterr().out.splitlines() == ["hello registry", "hello registry"]
    with pytest.raises(SystemExit):
        cli.main(["hello", "--help"])
    assert "Whom to greet." in capsys.readouterr().out
    assert cli.main(["hello", "--nmae", "x"]) == 2  # its options are checked like any command's


def test_launch_reads_the_same_records():
    assert job.COMMANDS == tuple(n for n, c in COMMANDS.items() if c.remote)
    assert set(job.DISTRIBUTED) == {"train", "distill", "pretrain"}
    assert {"serve", "monitor", "report"}.isdisjoint(job.COMMANDS)  # local commands are refused by launch
    assert "space" in COMMANDS["tune"].path_options and "space" not in COMMANDS["train"].path_options


def test_every_record_loads_a_function_with_a_docstring():
    for name, command in COMMANDS.items():
        fn = command.load()
        assert callable(fn) and (fn.__doc__ or "").strip(), name


def test_the_cli_still_imports_no_heavy_library_with_the_registry():
    code = "import sys, encoderfit.cli as c; c.build_parser(c.commands()); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
