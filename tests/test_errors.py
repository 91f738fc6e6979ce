"""Every user mistake: one line naming what is wrong and how to fix it, exit code 2, no traceback, no run dir."""

from pathlib import Path

import sys

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


def test_eval_on_non_run_directory(capsys, tmp_path):
    assert cli.main(["eval", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


# ---------------------------------------------------------------- through the CLI's entry point (conftest.run_cli)


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


def test_input_directory_is_named_as_a_directory(trained_run, tmp_path):
    assert "is a directory; pass a file" in cli_fails("predict", str(trained_run), "--input", str(tmp_path))


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


# ---------------------------------------------------------------- bad input, per task


def test_multilabel_separator_that_yields_no_labels(tmp_path, tiny_model):
    rows = [{"text": f"text {i}", "label": "|" if i % 2 else " | "} for i in range(40)]
    msg = cli_fails(*train_args(tmp_path, write_csv(tmp_path / "ml.csv", rows), tiny_model, "--data.label_separator", "|"))
    assert "no row has any label in column 'label'" in msg and "data.label_separator '|' splits every row into nothing" in msg
    assert nothing_left(tmp_path)


def test_multilabel_label_set_that_differs_between_splits(tmp_path, tiny_model):
    from conftest import make_multilabel_rows

    data = tmp_path / "splits"
    data.mkdir()
    rows = make_multilabel_rows(60, seed=3)
    write_csv(data / "train.csv", rows)
    write_csv(data / "validation.csv", rows[:5] + [{"text": "rain and sun", "label": "food|weather"}])
    write_csv(data / "test.csv", rows[:5])
    msg = cli_fails(*train_args(tmp_path, data, tiny_model, "--data.label_separator", "|"))
    assert "[validation]: row 6: label 'weather' does not occur in the training labels" in msg
    assert nothing_left(tmp_path)


@pytest.mark.parametrize("bad,expected", [
    ("abc", "row 4: 'abc' in column 'label' is not a number"),
    ("", "row 4: empty target in column 'label'"),  # only an empty CSV cell is missing
    ("nan", "row 4: target nan in column 'label' is not finite"),  # a cell 'nan' is text (not pandas' missing value)
    ("inf", "row 4: target inf in column 'label' is not finite"),
    ("99", "row 4: target 99 is outside regression.target_range [-6, 6]"),
])
def test_regression_targets_that_are_not_numbers(tmp_path, tiny_model, bad, expected):
    from conftest import make_regression_rows

    rows = make_regression_rows(40, seed=4)
    rows[3]["label"] = bad
    msg = cli_fails(*train_args(tmp_path, write_csv(tmp_path / "r.csv", rows), tiny_model, "--task", "regression",
                                "--regression.target_range", "[-6, 6]"))
    assert expected in msg and "r.csv [train]" in msg
    assert nothing_left(tmp_path)


def test_a_metric_the_task_does_not_have(tmp_path, tiny_model):
    from conftest import make_regression_rows

    path = write_csv(tmp_path / "r.csv", make_regression_rows(40, seed=4))
    msg = cli_fails(*train_args(tmp_path, path, tiny_model, "--train.metric_for_best", "accuracy"))
    assert "'accuracy' is not a metric of the regression task" in msg and "pearson" in msg
    assert nothing_left(tmp_path)


def test_options_a_task_does_not_have(regression_run, tmp_path):
    (tmp_path / "in.txt").write_text("goal\n")
    msg = cli_fails("predict", str(regression_run), "--input", str(tmp_path / "in.txt"), "--abstain", "true")
    assert "the regression task has no abstention threshold" in msg


@pytest.mark.parametrize("labels,shown", [
    ([0, "food", 1], ["numbers (0, row 1)", 'strings ("food", row 2)']),
    ([1, True, 0], ["numbers (1, row 1)", "booleans (true, row 2)"]),
    (["yes", False, "no"], ['strings ("yes", row 1)', "booleans (false, row 2)"]),
    (["a", ["a", "b"], "b"], ['strings ("a", row 1)', 'lists (["a", "b"], row 2)']),
])
def test_jsonl_labels_of_mixed_kinds_are_refused(tmp_path, tiny_model, labels, shown):
    import json

    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps({"text": f"text number {i}", "label": labels[i % 3]}) + "\n" for i in range(30)))
    msg = cli_fails(*train_args(tmp_path, path, tiny_model))
    assert "mixed.jsonl [train]: column 'label' mixes" in msg and all(s in msg for s in shown), msg
    assert "write every label the same way" in msg and nothing_left(tmp_path)


def test_eval_names_its_own_column_flags(pair_run, tmp_path):
    path = write_csv(tmp_path / "single.csv", make_rows(5, seed=3))
    msg = cli_fails("eval", str(pair_run), "--data", str(path))
    assert "no column 'text_pair'" in msg and "set --text_pair_column" in msg and "--data." not in msg


def test_cv_with_more_folds_than_the_data_allows_names_folds(tmp_path, tiny_model):
    path = write_csv(tmp_path / "d.csv", make_rows(5, seed=2))
    msg = cli_fails("cv", "--data.source", str(path), "--model.name_or_path", str(tiny_model), "--folds", "20",
                    "--output_dir", str(tmp_path / "cv"))
    assert "15 examples are too few for 20 folds" in msg and "lower --folds to 3 or fewer" in msg, msg
    assert "test_size" not in msg


def quick_qa_run(tmp_path: Path, tiny_model: Path) -> Path:
    """A QA run of one short epoch: what a check of its inputs needs (not a model that answers well)."""
    from conftest import make_qa_rows, write_jsonl

    out = tmp_path / "qa-run"
    run_cli("train", "--task", "qa", "--data.source", str(write_jsonl(tmp_path / "qa.jsonl", make_qa_rows(24, seed=0))),
            "--model.name_or_path", str(tiny_model), "--model.max_length", "48", "--model.window_overlap", "16",
            "--train.epochs", "1", "--report.baseline", "false", "--output_dir", str(out))
    return out


def one_line_error(proc) -> str:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    return last


def test_predict_with_every_row_empty_is_an_error_not_an_empty_file(trained_run, tmp_path):
    blank = write_csv(tmp_path / "blank.csv", [{"text": " ", "label": "x"}, {"text": "", "label": "y"}])
    out = tmp_path / "out.jsonl"
    line = one_line_error(run_cli("predict", str(trained_run), "--input", str(blank), "--output", str(out), check=False))
    assert "every one of its 2 row(s) is empty" in line and "--text_column" in line and not out.exists()
    assert "is empty" in one_line_error(run_cli("predict", str(trained_run), input="\n  \n", check=False))


def test_eval_output_that_is_a_directory_is_refused_before_evaluating(trained_run, toy_csv, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    proc = run_cli("eval", str(trained_run), "--data", str(toy_csv), "--output", str(folder), check=False)
    line = one_line_error(proc)
    assert f"--output: {folder} is a directory" in line and str(folder / "test.json") in line
    assert len(proc.stderr.strip().splitlines()) == 1 and not list(folder.iterdir())  # refused before any evaluation


def test_linear_probe_with_an_embedding_head_names_the_head(capsys, tmp_path, tiny_model, rows):
    path = write_csv(tmp_path / "d.csv", rows * 3)
    msg = fails(capsys, tmp_path, "--data.source", str(path), "--model.head", "embedding", "--train.linear_probe", "true",
                model=tiny_model)
    assert "model.head embedding fits its head" in msg and "task" not in msg


def test_serve_on_a_busy_port_names_the_port_and_never_says_serving(trained_run):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run_cli("serve", str(trained_run), "--port", str(port), check=False)
    line = one_line_error(proc)
    assert f"--port: port {port} on 127.0.0.1 is already in use" in line and "choose another --port" in line
    assert "serving" not in proc.stderr


def test_predict_context_that_is_a_directory_is_named_as_one(tmp_path, tiny_model):
    run = quick_qa_run(tmp_path, tiny_model)
    line = one_line_error(run_cli("predict", str(run), "--question", "where does alice live ?", "--context", str(tmp_path),
                                  check=False))
    assert f"--context: {tmp_path} is a directory" in line and "does not exist" not in line
