"""The subcommand table, every subcommand's --help, and the console entry point."""

import inspect

import pytest

from conftest import run_cli
from encoderfit import cli


def test_command_table_matches_parser_and_docstrings():
    commands = cli._commands()
    parser = cli.build_parser(commands)
    assert set(parser._subcommands_action._name_parser_map) == set(commands) == {"train", "tune", "eval", "predict", "report", "export", "serve"}
    for name, fn in commands.items():
        doc = inspect.getdoc(fn)
        for param in inspect.signature(fn).parameters:
            assert f"{param}:" in doc, f"{name}: parameter '{param}' is not documented in the docstring's Args"


@pytest.mark.parametrize("command,expected", [
    ("train", ["--data.source", "--train.learning_rate", "default: 5e-05", "--model.max_length", "--config", "Peak learning rate",
               "--resume", "--train.save_steps", "--train.keep_checkpoints", "--train.fsdp", "--train.deepspeed"]),
    ("tune", ["--trials", "--space", "--pruner", "{median,none}", "--startup_trials", "--train.learning_rate"]),
    ("eval", ["--data", "--split", "default: test", "--report.help", "--report.target_accuracy 0.995", "run"]),
    ("predict", ["--input", "--output", "--max_tokens", "--abstain", "run"]),
    ("report", ["run", "saved predictions"]),
    ("export", ["--quantize", "int8", "--opset", "run"]),
    ("serve", ["--host", "127.0.0.1", "--api_key", "--max_wait_ms", "--batching", "--backend"]),
])
def test_subcommand_help_documents_fields(command, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for text in expected:
        assert text in out, f"{text!r} missing from `encoderfit {command} --help`"


def test_console_entry_point_help():
    proc = run_cli("--help")
    for command in ("train", "eval", "predict", "report", "export", "serve"):
        assert command in proc.stdout
