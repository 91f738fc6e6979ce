"""Cross-validation, data sets in the shapes public benchmarks ship, and calibrated entity scores (issue 26)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import make_ner_rows, make_rows, run_cli, write_csv, write_jsonl

FAST = ["--train.epochs", "2", "--train.batch_size", "16", "--train.learning_rate", "3e-3", "--train.warmup_ratio", "0.05",
        "--train.logging_steps", "5"]


def test_cross_validation_scores_every_example_exactly_once(tmp_path, tiny_model):
    rows = make_rows(14, seed=5)  # 42 texts, 3 classes
    data = write_csv(tmp_path / "small.csv", rows)
    out = tmp_path / "cv"
    run_cli("cv", "--data.source", str(data), "--model.name_or_path", str(tiny_model), "--folds", "3",
            "--output_dir", str(out), *FAST)
    metrics = json.loads((out / "metrics.json").read_text())
    texts = sorted({r["text"] for r in rows})
    scored = pq.read_table(out / "predictions" / "test.parquet").to_pydict()["text"]
    assert sorted(scored) == texts  # each distinct text once, by a model that did not train on it
    assert metrics["cv"]["scored_once"] and metrics["cv"]["examples"] == len(texts)
    assert [f["examples"] for f in metrics["cv"]["per_fold"]] and sum(f["examples"] for f in metrics["cv"]["per_fold"]) == len(texts)
    for fold in range(1, 4):  # every fold a whole run; its test texts never in its training split
        fold_dir = out / "folds" / f"fold-{fold:02d}"
        trained_on = set(pq.read_table(fold_dir / "predictions" / "validation.parquet").to_pydict()["text"])
        held = set(pq.read_table(fold_dir / "predictions" / "test.parquet").to_pydict()["text"])
        assert held and not held & trained_on
        assert (fold_dir / "model" / "config.json").is_file()
    assert metrics["test"]["ci"]["accuracy"]["low"] <= metrics["test"]["accuracy"] <= metrics["test"]["ci"]["accuracy"]["high"]
    verdict = metrics["comparison"]["verdict"]  # the paired test against the baseline's out-of-fold predictions
    assert verdict["outcome"] in ("better", "worse", "not distinguishable") and "out of fold" in verdict["sentence"]
    assert len(pq.read_table(out / "predictions" / "baseline-test.parquet")) == len(texts)


def test_cross_validation_refuses_what_it_cannot_do(tmp_path, tiny_model, toy_csv):
    proc = run_cli("cv", "--data.source", str(toy_csv), "--model.name_or_path", str(tiny_model), "--folds", "1",
                   "--output_dir", str(tmp_path / "cv"), check=False)
    assert proc.returncode == 2 and "--folds must be at least 2" in proc.stderr
    assert not (tmp_path / "cv").exists()


def test_a_conll_folder_with_valid_txt_and_a_readme_is_read_as_shipped(tmp_path):
    """CoNLL-2003 ships train.txt, valid.txt and test.txt (4 columns, -DOCSTART- lines) beside documentation files."""
    from encoderfit.core.args import DataArgs
    from encoderfit.runs.splits import prepare

    folder = tmp_path / "conll"
    folder.mkdir()
    for split, seed in (("train", 0), ("valid", 1), ("test", 2)):
        lines = ["-DOCSTART- -X- -X- O", ""]
        for row in make_ner_rows(30, seed):
            lines += [f"{t} NN B-NP {g}" for t, g in zip(row["tokens"], row["tags"])] + [""]
        (folder / f"{split}.txt").write_text("\n".join(lines), encoding="utf-8")
    (folder / "README.txt").write_text("Not a split: the data set's notes.\n", encoding="utf-8")
    (folder / "LICENSE.txt").write_text("Research use only.\n", encoding="utf-8")
    splits = prepare(DataArgs(source=str(folder)), "ner")
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (30, 30, 30)  # valid.txt is validation
    assert splits.labels[0] == "O" and "B-PER" in splits.labels
    assert not any("DOCSTART" in t for t in splits.train["text"])


def test_data_documents_reads_each_conll_document_as_one_text(tmp_path):
    """With ner.documents, the sentences between -DOCSTART- lines become one text (the model then reads each word
    with its neighbouring sentences), their words and tags in order; the entities are the same."""
    from encoderfit.core.args import DataArgs
    from encoderfit.runs.splits import prepare
    from encoderfit.tasks.ner.metrics import gold

    folder = tmp_path / "docs"
    folder.mkdir()
    rows = make_ner_rows(12, 3)
    for split in ("train", "valid", "test"):
        lines = []
        for d in range(3):  # 3 documents of 4 sentences
            lines += ["-DOCSTART- -X- -X- O", ""]
            for row in rows[4 * d: 4 * d + 4]:
                lines += [f"{t} NN B-NP {g}" for t, g in zip(row["tokens"], row["tags"])] + [""]
        (folder / f"{split}.txt").write_text("\n".join(lines), encoding="utf-8")
    sentences = prepare(DataArgs(source=str(folder)), "ner")
    docs = prepare(DataArgs(source=str(folder)), "ner", {"ner": {"documents": True}})
    assert len(sentences.test) == 12 and len(docs.test) == 3
    assert docs.test["text"][0] == " ".join(sentences.test["text"][:4])
    entities = lambda split: sum(len(gold(row, split.labels)) for row in split.test["labels"])  # noqa: E731
    assert entities(docs) == entities(sentences) > 0


def test_join_columns_builds_the_text_from_a_title_and_a_body(tmp_path):
    from encoderfit.core.args import DataArgs
    from encoderfit.runs.splits import prepare
    from encoderfit.core.errors import UserError

    rows = [{"title": f"HEADLINE {i}", "text": "" if i % 5 == 0 else f"body of story {i}", "labels": ["a"] if i % 2 else ["b"]}
            for i in range(40)]
    data = write_jsonl(tmp_path / "news.jsonl", rows)
    splits = prepare(DataArgs(source=str(data), join_columns=["title", "text"], label_column="labels"))
    texts = set(splits.train["text"]) | set(splits.validation["text"]) | set(splits.test["text"])
    assert "HEADLINE 1\n\nbody of story 1" in texts and "HEADLINE 5" in texts  # an empty body leaves the title alone
    with pytest.raises(UserError, match="no column 'titel'.*join_columns"):
        prepare(DataArgs(source=str(data), join_columns=["titel", "text"], label_column="labels"))
    with pytest.raises(UserError, match="at least two different columns"):
        DataArgs(join_columns=["title"])


def test_entity_scores_are_calibrated_on_validation(ner_run):
    """The NER head is a temperature fitted on validation against whether each entity is exactly right; predict
    reports entity scores at it (never other entities), and the report gives ECE before and after."""
    from encoderfit import Predictor
    from encoderfit.tasks.ner.metrics import fit_entity_temperature, scored_entities

    info = json.loads((ner_run / "model" / "encoderfit.json").read_text())
    head = info["head"]
    assert head["fitted_on"] == "validation" and head["temperature"] > 0 and "cv_nll_scaled" in head
    metrics = json.loads((ner_run / "metrics.json").read_text())
    calib = metrics["test"]["calibration"]
    assert calib["temperature"] == head["temperature"] and 0 <= calib["ece_before"] <= 1
    text = "alice flew to new york with bob"
    raw = Predictor.from_pretrained(ner_run, calibrated=False).predict([text])[0]["entities"]
    cal = Predictor.from_pretrained(ner_run).predict([text])[0]["entities"]
    assert [(e["start"], e["end"], e["label"]) for e in raw] == [(e["start"], e["end"], e["label"]) for e in cal]
    if head["temperature"] != 1.0 and raw:
        assert any(abs(a["score"] - b["score"]) > 1e-6 for a, b in zip(raw, cal))

    # the fit itself: overconfident scores (logits x 4) get a temperature near 4 back
    from encoderfit.tasks.base.words import WordScores

    rng = np.random.default_rng(0)
    labels = ["O", "B-PER", "I-PER"]
    true, scores = [], []
    for _ in range(300):
        tags = rng.integers(0, 2, size=6)
        logits = rng.normal(0, 1.0, size=(6, 3)) + 1.2 * np.eye(3)[tags]
        true.append(tags)
        scores.append(WordScores("x " * 6, [(2 * i, 2 * i + 1) for i in range(6)], (4 * logits).astype(np.float32)))
    fitted = fit_entity_temperature(true, scores, labels)
    assert fitted["temperature"] > 2 and fitted["cv_nll_scaled"] < fitted["cv_nll_unscaled"]
    p_raw, y = scored_entities(true, scores, labels)
    p_cal, _ = scored_entities(true, scores, labels, fitted["temperature"])
    assert abs(p_cal.mean() - y.mean()) < abs(p_raw.mean() - y.mean())


def test_the_hubs_shapes_of_conll2003_and_reuters_are_read(tmp_path):
    """Real users load the public sets from the hub; these are local copies of the hub's shapes (save_to_disk):
    `conll2003` (tokens, ner_tags as ClassLabel ids) and `ucirvine/reuters21578` ModApte (title, text, topics)."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value

    from encoderfit.core.args import DataArgs
    from encoderfit.runs.splits import prepare

    names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]  # the hub's order
    features = Features({"id": Value("string"), "tokens": Sequence(Value("string")), "ner_tags": Sequence(ClassLabel(names=names))})

    def conll(seed):
        rows = make_ner_rows(20, seed)
        ids = [[names.index(t) for t in r["tags"]] for r in rows]
        return Dataset.from_dict({"id": [str(i) for i in range(len(rows))], "tokens": [r["tokens"] for r in rows], "ner_tags": ids},
                                 features=features)

    DatasetDict({"train": conll(0), "validation": conll(1), "test": conll(2)}).save_to_disk(str(tmp_path / "conll2003"))
    splits = prepare(DataArgs(source=str(tmp_path / "conll2003"), label_column="ner_tags"), "ner")
    assert len(splits.test) == 20 and {"B-PER", "B-LOC", "I-LOC"} <= set(splits.labels)

    def reuters(n, seed):
        rng = np.random.default_rng(seed)
        topics = [["earn"], ["acq"], ["grain", "wheat"], ["crude"]]
        picked = [topics[i] for i in rng.integers(0, 4, n)]
        return Dataset.from_dict({"title": [f"{t[0].upper()} NEWS {i}" for i, t in enumerate(picked)],
                                  "text": [f"story {i} about {' and '.join(t)}" for i, t in enumerate(picked)], "topics": picked})

    DatasetDict({"train": reuters(60, 0), "test": reuters(20, 1)}).save_to_disk(str(tmp_path / "reuters"))
    splits = prepare(DataArgs(source=str(tmp_path / "reuters"), join_columns=["title", "text"], label_column="topics"))
    assert splits.task == "multilabel" and "wheat" in splits.labels and len(splits.test) == 20
    assert splits.test["text"][0].startswith(splits.test["text"][0].split("\n\n")[0]) and "\n\nstory" in splits.test["text"][0]


def test_cv_rerun_keeps_only_complete_folds_and_refuses_changed_settings(tmp_path, tiny_model):
    """An interrupted cv (simulated: the published directory put back as its work directory, fold 2 cut off after
    its metrics.json, before its report and card) retrains that fold and keeps fold 1; a re-run with other settings
    is refused, naming them, and deletes nothing."""
    import shutil

    data = write_csv(tmp_path / "small.csv", make_rows(14, seed=5))
    out = tmp_path / "cv"
    args = ["cv", "--data.source", str(data), "--model.name_or_path", str(tiny_model), "--folds", "2", "--output_dir", str(out),
            "--report.baseline", "false", *FAST]
    run_cli(*args)
    work = tmp_path / ".cv.partial"
    out.rename(work)
    fold1, fold2 = work / "folds" / "fold-01", work / "folds" / "fold-02"
    (fold2 / "report.html").unlink()
    (fold2 / "model" / "README.md").unlink()
    assert json.loads((fold2 / "metrics.json").read_text())["test"]  # what the old check took for finished
    kept = (fold1 / "model" / "model.safetensors").stat().st_mtime_ns
    proc = run_cli(*args)
    assert "fold 1/2: finished before, kept" in proc.stderr and "fold 2/2: training" in proc.stderr
    assert (out / "folds" / "fold-02" / "report.html").is_file() and (out / "folds" / "fold-02" / "model" / "README.md").is_file()
    assert (out / "folds" / "fold-01" / "model" / "model.safetensors").stat().st_mtime_ns == kept
    assert not work.exists() and not list((out / "folds").glob(".*partial"))

    out.rename(work)
    changed = run_cli(*args[:-len(FAST)], *FAST[:4], "--train.learning_rate", "1e-3", *FAST[6:], check=False)
    assert changed.returncode == 2 and "Traceback" not in changed.stderr
    line = changed.stderr.strip().splitlines()[-1]
    assert "train.learning_rate was 0.003, now 0.001" in line and "--resume false" in line
    assert (fold1 / "model" / "model.safetensors").stat().st_mtime_ns == kept and fold2.is_dir()  # nothing deleted
    shutil.rmtree(work)


def test_cv_that_fails_in_its_first_fold_leaves_nothing_behind(tmp_path, tiny_model):
    data = write_csv(tmp_path / "small.csv", make_rows(14, seed=5))
    proc = run_cli("cv", "--data.source", str(data), "--model.name_or_path", str(tiny_model), "--folds", "2",
                   "--output_dir", str(tmp_path / "cv"), "--train.metric_for_best", "nope", *FAST, check=False)
    assert proc.returncode == 2 and "train.metric_for_best: 'nope'" in proc.stderr.strip().splitlines()[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.csv"]  # no .cv.partial, no lock
