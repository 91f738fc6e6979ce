"""Bad input per task (multi-label, regression, pairs, cv, predict, serve): one line naming what is wrong and how to
fix it, exit code 2, no traceback, nothing left behind. The general cases: test_errors.py."""


import pytest

from conftest import make_rows, run_cli, write_csv
from failing import cli_fails, fails, nothing_left, train_args
from shared import quick_qa_run


@pytest.fixture
def rows():
    return make_rows(10, seed=1)


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
