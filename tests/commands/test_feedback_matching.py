"""`encoderfit feedback` attaches a label only to the named model's own predictions: a pair run's texts are read
with their pairs (the run's own pair column), a text two models predicted joins the named model's prediction, and a
text only another model predicted is stored as a labelled text, said so. Labels are read as training reads them
(" food " is food; a multi-label row says "none" with an empty cell or []); a directory given as the file, or a
model directory encoderfit did not write, is one line (exit 2)."""

import json
import shutil
import sqlite3

import pytest

from conftest import make_pair_rows, run_cli, write_csv


def predict_logged(run, tmp_path, name, rows, fields=("text",)):
    """The rows' texts (and pairs) through `predict --log --log_texts`; the log's path."""
    inputs = write_csv(tmp_path / f"{name}-in.csv", [{f: r[f] for f in fields} for r in rows], fieldnames=fields)
    log = tmp_path / "log.db"
    run_cli("predict", str(run), "--input", str(inputs), "--output", str(tmp_path / f"{name}.jsonl"), "--log", str(log),
            "--log_texts", "true")
    return log


def joined(log):
    """Each feedback row's id, label and the model of the prediction it joined (None: a labelled text on its own)."""
    with sqlite3.connect(log) as conn:
        return conn.execute("SELECT f.id, f.label, p.model FROM feedback f LEFT JOIN predictions p ON p.id = f.id "
                            "ORDER BY f.time").fetchall()


def test_feedback_by_text_on_a_pair_run_reads_the_runs_pair_column(pair_run, tmp_path):
    rows = make_pair_rows(12, seed=11)
    log = predict_logged(pair_run, tmp_path, "pairs", rows, ("text", "text_pair"))
    labels = write_csv(tmp_path / "fb.csv", rows, fieldnames=("text", "text_pair", "label"))
    proc = run_cli("feedback", str(pair_run), str(labels), "--log", str(log))  # no --text_pair_column
    assert "12 by text: 12 matched this model's predictions" in proc.stderr
    stored = joined(log)
    assert len(stored) == 12 and all(model is not None and not id_.startswith("text-") for id_, _, model in stored)

    single = write_csv(tmp_path / "single.csv", [{"text": r["text"], "label": r["label"]} for r in rows])
    proc = run_cli("feedback", str(pair_run), str(single), "--log", str(log), check=False)
    assert proc.returncode == 2 and "no column 'text_pair' (the second texts" in proc.stderr, proc.stderr[-2000:]


def test_retrain_names_feedback_that_lacks_its_second_text(tmp_path, caplog):
    from encoderfit.core.errors import UserError
    from encoderfit.runs.predlog import PredictionLog
    from encoderfit.commands.retrain import read_feedback
    from encoderfit.tasks import get_task

    path = tmp_path / "log.db"
    store = PredictionLog(path)
    store.add_feedback([{"text": f"team goal {i}", "label": "sport", "source": "test"} for i in range(12)])
    store.close()
    with pytest.raises(UserError, match="holds 0 usable feedback labels"):
        read_feedback(path, get_task("classification"), ["food", "sport", "tech"], text_pair=True)
    assert "12 feedback labels have a text but not its second text" in caplog.text
    assert "without --log_texts" not in caplog.text


def other_model(run, home):
    """A copy of the run with slightly other weights: another fingerprint, the same labels."""
    from safetensors.numpy import load_file, save_file

    copy = home / "other"
    shutil.copytree(run, copy)
    file = copy / "model" / "model.safetensors"
    tensors = load_file(file)
    key = sorted(tensors)[0]
    tensors[key] = tensors[key] + 1e-3
    save_file(tensors, file, metadata={"format": "pt"})
    return copy


def test_feedback_by_text_joins_the_named_models_own_prediction_only(trained_run, tmp_path):
    from encoderfit.runs.rundir import RunDir

    other = other_model(trained_run, tmp_path)
    mine, theirs = RunDir(trained_run).model.fingerprint(), RunDir(other).model.fingerprint()
    assert mine != theirs
    both = [{"text": f"chef soup dinner {i}", "label": "food"} for i in range(5)]
    only_other = [{"text": f"goal team match {i}", "label": "sport"} for i in range(3)]
    predict_logged(trained_run, tmp_path, "mine", both)
    log = predict_logged(other, tmp_path, "theirs", both + only_other)  # the other model's predictions are newer
    labels = write_csv(tmp_path / "fb.csv", both + only_other)
    proc = run_cli("feedback", str(trained_run), str(labels), "--log", str(log))
    stored = joined(log)
    assert [model for _, _, model in stored] == [mine] * 5 + [None] * 3, stored
    assert all(id_.startswith("text-") for id_, _, model in stored if model is None)
    assert "3 texts were predicted by another model only" in proc.stderr


def test_feedback_labels_are_read_as_training_reads_them(trained_run, multilabel_run, tmp_path):
    log = predict_logged(trained_run, tmp_path, "toy", [{"text": "chef soup"}])
    labels = write_csv(tmp_path / "fb.csv", [{"text": "chef soup", "label": " food "}])
    run_cli("feedback", str(trained_run), str(labels), "--log", str(log))
    assert [json.loads(label) for _, label, _ in joined(log)] == ["food"]

    rows = [{"text": "the very big day"}, {"text": "a new one of those"}, {"text": "chef team soup"}]
    mlog = tmp_path / "multi"
    mlog.mkdir()
    log = predict_logged(multilabel_run, mlog, "multi", rows)
    labels = write_csv(mlog / "fb.csv", [{"text": rows[0]["text"], "label": ""}, {"text": rows[1]["text"], "label": "[]"},
                                         {"text": rows[2]["text"], "label": " food | sport "}])
    run_cli("feedback", str(multilabel_run), str(labels), "--log", str(log))
    assert [json.loads(label) for _, label, _ in joined(log)] == [[], [], ["food", "sport"]]


def test_feedback_refuses_a_directory_as_the_file_and_a_model_encoderfit_did_not_write(trained_run, tiny_model, tmp_path):
    from encoderfit.runs.predlog import PredictionLog

    log = tmp_path / "log.db"
    PredictionLog(log).close()
    proc = run_cli("feedback", str(trained_run), str(tmp_path), "--log", str(log), check=False)
    assert proc.returncode == 2 and f"file: {tmp_path} is a directory" in proc.stderr, proc.stderr[-2000:]
    labels = write_csv(tmp_path / "fb.csv", [{"text": "chef soup", "label": "food"}])
    proc = run_cli("feedback", str(tiny_model), str(labels), "--log", str(log), check=False)
    assert proc.returncode == 2 and "not a model that encoderfit trained" in proc.stderr, proc.stderr[-2000:]
    assert "LABEL_0" not in proc.stderr
