"""The subcommand table, every subcommand's --help, and the console entry point."""

import inspect

import pytest

from conftest import run_cli
from encoderfit import cli


SUBCOMMANDS = ["train", "cv", "tune", "eval", "predict", "report", "export", "serve", "pretrain", "tune-pretrain", "embed", "search", "distill", "monitor",
               "feedback", "retrain", "compress"]  # the CLI's contract, in help order


def test_every_subcommand_documents_every_parameter():
    commands = cli.commands()
    for name, fn in commands.items():
        doc = inspect.getdoc(fn)
        for param in inspect.signature(fn).parameters:
            assert f"{param}:" in doc, f"{name}: parameter '{param}' is not documented in the docstring's Args"


@pytest.mark.parametrize("command,expected", [
    ("train", ["--data.source", "--train.learning_rate", "default: 5e-05", "--model.max_length", "--config", "Peak learning rate",
               "--resume", "--train.save_steps", "--train.keep_checkpoints", "--train.fsdp", "--train.deepspeed"]),
    ("tune", ["--trials", "--space", "--pruner", "{median,none}", "--startup_trials", "--train.learning_rate"]),
    ("eval", ["--data", "--split", "default: test", "--report.target_accuracy", "--report.target_accuracy 0.995", "run"]),
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


def test_console_entry_point_lists_exactly_the_subcommands():
    import re

    proc = run_cli("--help", own_process=True)
    listed = re.search(r"\{([a-z,-]+)\}", proc.stdout).group(1).split(",")  # argparse's choice list: {train,tune,...}
    assert listed == SUBCOMMANDS


def test_report_overrides_mirror_report_settings():
    """`eval --report.X` can replace every report setting, and only the ones given."""
    import dataclasses

    from encoderfit.core.args import ReportArgs, ReportOverrides

    assert [f.name for f in dataclasses.fields(ReportOverrides)] == [f.name for f in dataclasses.fields(ReportArgs)]
    base = ReportArgs(target_accuracy=0.95, noise_confidence=0.8)
    assert ReportOverrides(target_accuracy=0.99).apply(base) == dataclasses.replace(base, target_accuracy=0.99)
    assert ReportOverrides(target_accuracy=0).apply(base).target_accuracy is None


def test_cli_starts_without_the_heavy_libraries():
    """Parsing (and failing on a bad option) needs no torch, transformers or datasets, so it answers at once."""
    import subprocess
    import sys

    code = ("import sys, encoderfit.cli as c; c.build_parser(c.commands()); "
            "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'sklearn', 'matplotlib') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
