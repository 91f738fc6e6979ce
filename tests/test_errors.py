"""Every user mistake: one line naming what is wrong and how to fix it, exit code 2, no traceback, no run dir."""

from pathlib import Path

import pytest

from conftest import make_rows, run_cli, write_csv
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


@pytest.fixture
def rows():
    return make_rows(10, seed=1)


def test_missing_file(capsys, tmp_path, tiny_model):
    msg = fails(capsys, tmp_path, "--data.source", str(tmp_path / "nope.csv"), model=tiny_model)
    assert "nope.csv" in msg and "does not exist" in msg


def test_unsupported_extension(capsys, tmp_path, tiny_model):
    (tmp_path / "data.xlsx").write_bytes(b"PK\x03\x04")
    msg = fails(capsys, tmp_path, "--data.source", str(tmp_path / "data.xlsx"), model=tiny_model)
    assert "unsupported file type '.xlsx'" in msg and ".csv" in msg


def test_missing_text_column_lists_columns(capsys, tmp_path, tiny_model, rows):
    path = write_csv(tmp_path / "d.csv", rows)
    msg = fails(capsys, tmp_path, "--data.source", str(path), "--data.text_column", "body", model=tiny_model)
    assert "no column 'body'" in msg and "['text', 'label']" in msg and "--data.text_column" in msg


def test_missing_label_column(capsys, tmp_path, tiny_model, rows):
    path = write_csv(tmp_path / "d.csv", rows)
    msg = fails(capsys, tmp_path, "--data.source", str(path), "--data.label_column", "labl", model=tiny_model)
    assert "no column 'labl'" in msg and "did you mean 'label'" in msg


def test_empty_dataset(capsys, tmp_path, tiny_model):
    path = write_csv(tmp_path / "empty.csv", [])
    msg = fails(capsys, tmp_path, "--data.source", str(path), model=tiny_model)
    assert "empty.csv" in msg and "no rows" in msg


def test_empty_split_file(capsys, tmp_path, tiny_model, rows):
    write_csv(tmp_path / "train.csv", rows)
    write_csv(tmp_path / "test.csv", [])
    msg = fails(capsys, tmp_path, "--data.source", str(tmp_path), model=tiny_model)
    assert "test.csv" in msg and "no rows" in msg


def test_empty_label_names_row(capsys, tmp_path, tiny_model, rows):
    rows[2]["label"] = ""
    path = write_csv(tmp_path / "d.csv", rows)
    msg = fails(capsys, tmp_path, "--data.source", str(path), model=tiny_model)
    assert "row 3" in msg and "empty label" in msg and "'label'" in msg


def test_label_unseen_in_train(capsys, tmp_path, tiny_model, rows):
    data = tmp_path / "splits"
    data.mkdir()
    write_csv(data / "train.csv", rows)
    write_csv(data / "validation.csv", [{"text": "odd one", "label": "weather"}, *rows[:3]])
    write_csv(data / "test.csv", rows[:3])
    msg = fails(capsys, tmp_path, "--data.source", str(data), model=tiny_model)
    assert "[validation]" in msg and "row 1" in msg and "'weather'" in msg and "training labels" in msg


def test_undecodable_bytes_name_the_line(capsys, tmp_path, tiny_model, rows):
    path = write_csv(tmp_path / "d.csv", rows)
    lines = path.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b",", b" \xa3,", 1)  # a Latin-1 pound sign
    path.write_bytes(b"\n".join(lines))
    msg = fails(capsys, tmp_path, "--data.source", str(path), model=tiny_model)
    assert "line 4" in msg and "0xa3" in msg and "UTF-8" in msg


def test_unknown_config_key_suggests_closest(capsys, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  learning_rat: 0.001\n")
    msg = fails(capsys, tmp_path, "--config", str(config))
    assert "'train.learning_rat'" in msg and "did you mean 'train.learning_rate'" in msg


def test_unknown_flag_suggests_closest(capsys, tmp_path):
    msg = fails(capsys, tmp_path, "--train.batchsize", "8")
    assert "train.batchsize" in msg and "did you mean 'train.batch_size'" in msg


@pytest.mark.parametrize("flag,value,expected", [
    ("--train.learning_rate", "0", "train.learning_rate must be > 0"),
    ("--train.learning_rate=-1e-5", None, "train.learning_rate must be > 0"),
    ("--train.batch_size", "0", "train.batch_size must be at least 1"),
    ("--train.batch_size", "abc", "train.batch_size"),
    ("--data.test_size", "1.5", "data.test_size must be between 0 and 1"),
    ("--train.precision", "fp8", "train.precision"),
])
def test_invalid_values(capsys, tmp_path, flag, value, expected):
    assert expected in fails(capsys, tmp_path, flag, *([value] if value is not None else []))


def test_max_length_above_model_limit(capsys, tmp_path, tiny_model, rows):
    path = write_csv(tmp_path / "d.csv", rows)
    msg = fails(capsys, tmp_path, "--data.source", str(path), "--model.max_length", "100000", model=tiny_model)
    assert "model.max_length" in msg and "limit of 512" in msg


def test_model_not_loadable_offline(capsys, tmp_path, rows):
    path = write_csv(tmp_path / "d.csv", rows)
    msg = fails(capsys, tmp_path, "--data.source", str(path), "--model.name_or_path", "answerdotai/ModernBERT-base")
    assert "cannot load 'answerdotai/ModernBERT-base'" in msg and "HF_HUB_OFFLINE" in msg and "--model.name_or_path DIR" in msg


def test_missing_source(capsys, tmp_path, tiny_model):
    assert "data.source is required" in fails(capsys, tmp_path, model=tiny_model)


def test_existing_output_dir_is_not_overwritten(capsys, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert cli.main(["train", "--output_dir", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"


def test_real_process_exit_code_and_single_line(tmp_path):
    proc = run_cli("train", "--data.source", str(tmp_path / "missing.csv"), "--output_dir", str(tmp_path / "r"), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: data.source: file")
    assert "Traceback" not in proc.stderr


def test_eval_on_non_run_directory(capsys, tmp_path):
    assert cli.main(["eval", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
