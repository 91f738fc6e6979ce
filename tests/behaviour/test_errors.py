"""Every user mistake: one line naming what is wrong and how to fix it, exit code 2, no traceback, no run dir."""

from pathlib import Path

import sys

import pytest

from conftest import make_rows, run_cli, write_csv
from encoderfit import cli
from failing import cli_fails, fails, nothing_left, train_args


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


def test_eval_on_non_run_directory(capsys, tmp_path):
    assert cli.main(["eval", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


# ---------------------------------------------------------------- through the CLI's entry point (conftest.run_cli)


def test_three_rows_are_too_few_to_split(tmp_path, tiny_model):
    path = write_csv(tmp_path / "tiny.csv", make_rows(1, seed=2))
    msg = cli_fails(*train_args(tmp_path, path, tiny_model))
    assert "3 training examples are too few" in msg and "validation/test" in msg and "at least 10" in msg
    assert nothing_left(tmp_path)


def test_label_column_equal_to_text_column(tmp_path, tiny_model, rows):
    path = write_csv(tmp_path / "d.csv", rows)
    msg = cli_fails(*train_args(tmp_path, path, tiny_model, "--data.label_column", "text"))
    assert "data.label_column and data.text_column are both 'text'" in msg


def test_duplicate_column_names_are_refused(tmp_path, tiny_model):
    path = tmp_path / "dup.csv"
    path.write_text("text,label,label\n" + "".join(f"t{i},a,b\n" for i in range(30)))
    msg = cli_fails(*train_args(tmp_path, path, tiny_model))
    assert "column 'label' appears twice in the header (columns 2 and 3)" in msg and "dup.csv" in msg


def test_broken_jsonl_line_is_named_by_its_line_number(tmp_path, tiny_model, rows):
    import json

    lines = [json.dumps(r) for r in rows]
    lines[7] = '{"text": "broken, "label": "food"}'
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    msg = cli_fails(*train_args(tmp_path, tmp_path / "d.jsonl", tiny_model))
    assert "d.jsonl: line 8: not valid JSON" in msg


@pytest.fixture
def broken_model(tiny_model, tmp_path) -> Path:
    """The tiny model with its weights cut in half, as a failed download leaves them."""
    import shutil

    copy = tmp_path / "broken-model"
    shutil.copytree(tiny_model, copy)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return copy


def test_truncated_safetensors_in_train_predict_and_serve(tmp_path, broken_model, rows):
    path = write_csv(tmp_path / "d.csv", rows * 3)
    msg = cli_fails(*train_args(tmp_path, path, broken_model))
    assert "broken-model: the .safetensors weights are unreadable" in msg and "truncated" in msg
    assert nothing_left(tmp_path)
    (tmp_path / "in.txt").write_text("hello\n")
    assert "weights are unreadable" in cli_fails("predict", str(broken_model), "--input", str(tmp_path / "in.txt"))
    assert "weights are unreadable" in cli_fails("serve", str(broken_model), "--port", "8123")


def test_invalid_config_json_is_not_called_a_hub_problem(tmp_path, tiny_model, rows):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    (model / "config.json").write_text("{not json")
    msg = cli_fails(*train_args(tmp_path, write_csv(tmp_path / "d.csv", rows * 3), model))
    assert "cannot be loaded" in msg and "not a valid JSON" in msg and "hub" not in msg


@pytest.mark.parametrize("where", ["under_a_file", "not_writable"])
def test_unwritable_outputs_are_refused_before_any_work(tmp_path, tiny_model, trained_run, rows, where):
    (tmp_path / "afile").write_text("x")
    target = tmp_path / "afile" / "sub" if where == "under_a_file" else Path("/sys/encoderfit-test/out")
    path = write_csv(tmp_path / "d.csv", rows)
    msg = cli_fails("train", "--data.source", str(path), "--model.name_or_path", str(tiny_model), "--output_dir", str(target))
    assert msg.startswith(f"error: output_dir: cannot write {target}")
    (tmp_path / "in.txt").write_text("hello\n")
    msg = cli_fails("predict", str(trained_run), "--input", str(tmp_path / "in.txt"), "--output", str(target / "p.jsonl"))
    assert msg.startswith(f"error: --output: cannot write {target / 'p.jsonl'}")
    msg = cli_fails("export", str(trained_run), "--output", str(target / "onnx"))
    assert msg.startswith(f"error: --output: cannot write {target / 'onnx'}")


@pytest.mark.parametrize("logger,package", [("wandb", "wandb"), ("mlflow", "mlflow")])
def test_logger_without_its_package(tmp_path, tiny_model, rows, logger, package, monkeypatch):
    monkeypatch.setitem(sys.modules, package, None)  # as if not installed: importlib.util.find_spec now finds nothing
    msg = cli_fails(*train_args(tmp_path, write_csv(tmp_path / "d.csv", rows), tiny_model, "--train.report_to", f"[{logger}]"))
    assert f"needs the package '{package}'" in msg and f"pip install {package}" in msg


@pytest.mark.parametrize("device,expected", [("tpu9", "'tpu9' is not a device"), ("cuda", "needs a CUDA GPU")])
def test_predict_on_a_device_this_machine_lacks(trained_run, tmp_path, device, expected):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    (tmp_path / "in.txt").write_text("hello\n")
    assert expected in cli_fails("predict", str(trained_run), "--input", str(tmp_path / "in.txt"), "--device", device)


def test_input_directory_without_readable_files_is_named(trained_run, tmp_path):
    """A folder is read as the parts of one input; one that holds nothing readable is named, with what it lacks."""
    (tmp_path / "notes.md").write_text("hello\n")
    message = cli_fails("predict", str(trained_run), "--input", str(tmp_path))
    assert str(tmp_path) in message and "holds no .csv/.tsv/.json/.jsonl/.parquet/.txt file" in message


def test_run_directory_with_a_broken_or_unknown_config(trained_run, tmp_path):
    import shutil

    import yaml

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    config = run / "config.yaml"
    original = config.read_text()
    config.write_text(original + "train: [unclosed\n")
    msg = cli_fails("eval", str(run))
    assert "config.yaml: not valid YAML" in msg and "line" in msg

    raw = yaml.safe_load(original)
    raw["train"]["learning_rat"] = raw["train"].pop("learning_rate")  # a misspelt key: its meaning is unclear
    config.write_text(yaml.safe_dump(raw))
    assert "unknown key train.learning_rat (did you mean 'learning_rate'?)" in cli_fails("report", str(run))

    raw = yaml.safe_load(original)
    raw["train"]["gradient_checkpointing"] = True  # a setting from another version: ignored, with a warning
    raw["future_section"] = {"x": 1}
    config.write_text(yaml.safe_dump(raw))
    proc = run_cli("report", str(run))
    assert "ignoring unknown key train.gradient_checkpointing" in proc.stderr and "future_section" in proc.stderr


def test_negative_number_values_and_union_options_read_well(tmp_path, trained_run):
    assert "train.learning_rate must be > 0 (got -0.0001)" in cli_fails("train", "--train.learning_rate", "-1e-4")
    assert cli_fails("export", str(trained_run), "--quantize", "int4") == "error: --quantize: 'int4' is not valid; expected one of: int8, null"
    assert cli_fails("predict", str(trained_run), "--backend", "tf") == "error: --backend: 'tf' is not valid; expected one of: torch, onnx, onnx-int8"
    assert "--space: 'notjson' is not valid; expected a mapping" in cli_fails("tune", "--space", "notjson")
