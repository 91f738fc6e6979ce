"""Helpers of the error tests (test_errors.py, test_errors_tasks.py): a command that must fail the way every user
mistake fails: exit code 2, one `error:` line, no traceback, nothing left behind."""

from pathlib import Path

from conftest import run_cli
from encoderfit import cli


def fails(capsys, tmp_path: Path, *args: str, model: Path | None = None) -> str:
    out = tmp_path / "run"
    argv = ["train", "--output_dir", str(out), *args]
    if model is not None:
        argv += ["--model.name_or_path", str(model)]
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith("error: "), err
    assert not out.exists() and not (tmp_path / ".run.partial").exists(), "a failed run left files behind"
    return last


def cli_fails(*args: str, cwd=None, **kwargs) -> str:
    """`encoderfit ARGS`: exit code 2, no traceback, one `error:` line (returned)."""
    proc = run_cli(*args, check=False, cwd=cwd, **kwargs)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and proc.stderr.strip().splitlines()[-1] == errors[0], proc.stderr[-2000:]
    return errors[0]


def train_args(tmp_path: Path, source: Path, model: Path, *extra: str) -> list:
    return ["train", "--data.source", str(source), "--model.name_or_path", str(model), "--output_dir", str(tmp_path / "run"), *extra]


def nothing_left(tmp_path: Path) -> bool:
    return not (tmp_path / "run").exists() and not (tmp_path / ".run.partial").exists()
