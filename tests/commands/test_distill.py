"""`encoderfit distill` on tiny models: the student run is a normal run tested against its teacher, its loss falls
toward the teacher's outputs, it matches the teacher better than a student trained on the labels, the transfer set is
seeded and never holds a validation or test text, and bad input is a one-line error."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from scipy.stats import spearmanr

from conftest import make_rows, make_search_rows
from running import run_cli

DISTILL = ["--train.epochs", "6", "--train.batch_size", "16", "--train.learning_rate", "3e-3", "--train.warmup_ratio", "0.05",
           "--train.logging_steps", "5"]


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_augment_is_seeded_and_keeps_out_excluded_texts():
    from encoderfit.data.augment import augment

    texts = [r["text"] for r in make_rows(10, seed=3)]
    first, again, other = augment(texts, 3, 7), augment(texts, 3, 7), augment(texts, 3, 8)
    assert first == again and first != other
    assert 0.8 * 3 * len(texts) <= len(first) <= 3 * len(texts)  # a repeat or a copy of a text is dropped
    assert not {v for _, v in first} & set(texts)
    banned = {v for _, v in first[:5]}
    assert not {v for _, v in augment(texts, 3, 7, exclude=sorted(banned))} & banned
    masked = augment(texts, 2, 1, ["mask"], mask_token="[MASK]")
    assert all("[MASK]" in v for _, v in masked)
    mixed = augment(["alpha beta gamma delta", "one two three four"], 1, 0, ["mix"])
    assert {v for _, v in mixed} <= {"alpha beta three four", "one two gamma delta"}


def test_transfer_set_never_holds_validation_or_test_text(toy_csv, tmp_path):
    from encoderfit.core.args import DataArgs, DistillArgs
    from encoderfit.runs.distillation import transfer_set
    from encoderfit.runs.splits import prepare

    splits = prepare(DataArgs(source=str(toy_csv)))
    held = set(splits.validation["text"]) | set(splits.test["text"])
    extra = tmp_path / "more.txt"
    extra.write_text("\n".join(sorted(held)[:20] + ["goal team today new", "garlic soup the oven"]), encoding="utf-8")
    from encoderfit.tasks import get_task

    task = get_task("classification")
    texts, pairs, gold, counts, _ = transfer_set(task, splits, DistillArgs(augment=4, unlabelled=str(extra)), "[MASK]")
    assert not set(texts) & held and pairs is None
    assert counts == {"train": len(splits.train), "unlabelled": 2, "augmented": counts["augmented"], "total": len(texts)}
    assert counts["augmented"] > 3 * len(splits.train) and gold == [True] * len(splits.train) + [False] * (len(texts) - len(splits.train))
    assert transfer_set(task, splits, DistillArgs(augment=4, seed=5), None)[0] == transfer_set(task, splits, DistillArgs(augment=4, seed=5), None)[0]


@pytest.fixture(scope="module")
def direct_student(tmp_path_factory, tiny_model, toy_csv):
    """The student model trained on the labels alone, another seed than the teacher's."""
    out = tmp_path_factory.mktemp("direct") / "run"
    run_cli("train", "--data.source", str(toy_csv), "--model.name_or_path", str(tiny_model), "--output_dir", str(out),
            *DISTILL, "--train.seed", "1")
    return out


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, trained_run, tiny_model, direct_student):
    out = tmp_path_factory.mktemp("distilled") / "run"
    run_cli("distill", "--teacher", str(trained_run), "--student", str(tiny_model), "--output_dir", str(out), *DISTILL,
            "--train.seed", "1", "--distill.augment", "2", "--distill.alpha", "1", "--distill.compare", str(direct_student))
    return out


def test_student_run_is_tested_against_its_teacher_and_the_direct_student(distilled, trained_run, direct_student):
    metrics = json.loads((distilled / "metrics.json").read_text())
    section = metrics["distillation"]
    assert section["transfer"]["train"] + section["transfer"]["augmented"] == section["transfer"]["total"]
    assert section["transfer"]["augmented"] > section["transfer"]["train"]
    for key, run in (("teacher", trained_run), ("direct", direct_student)):
        assert section[key]["run"] == str(run) and "mcnemar" in section[key]["comparison"]
        assert section[key]["comparison"]["verdict"]["outcome"] in ("better", "worse", "not distinguishable")
        assert section[key]["test"]["accuracy"] == json.loads((run / "metrics.json").read_text())["test"]["accuracy"]
    assert metrics["test"]["n"] == json.loads((trained_run / "metrics.json").read_text())["test"]["n"]  # the teacher's test split
    saved = yaml.safe_load((distilled / "config.yaml").read_text())
    assert saved["distill"]["teacher"] == str(trained_run) and saved["distill"]["transfer"] == section["transfer"]
    assert "distilled from" in (distilled / "model" / "README.md").read_text()
    assert "Distillation" in (distilled / "report.html").read_text()
    from transformers import pipeline

    assert pipeline("text-classification", model=str(distilled / "model"))("goal team match")[0]["label"] in ("food", "sport", "tech")


def test_student_loss_falls_and_it_matches_the_teacher_better_than_a_label_trained_student(distilled, trained_run, direct_student):
    history = json.loads((distilled / "logs" / "history.json").read_text())
    losses = [h["loss"] for h in history if "loss" in h]
    assert losses[-1] < 0.5 * losses[0]

    def probs(run):
        import pyarrow.parquet as pq

        table = pq.read_table(run / "predictions" / "test.parquet").to_pydict()
        return table["text"], softmax(np.asarray(table["logits"], dtype=np.float64))

    texts, teacher = probs(trained_run)
    gaps = {}
    for name, run in (("distilled", distilled), ("direct", direct_student)):
        same, p = probs(run)
        assert same == texts
        gaps[name] = float(np.mean(np.sum(teacher * (np.log(teacher) - np.log(p)), -1)))  # KL(teacher || student)
    assert 0 < gaps["distilled"] < gaps["direct"], gaps


def test_bad_distillation_input_is_a_one_line_error(trained_run, tiny_model, tmp_path):
    held = tmp_path / "held.txt"
    import pyarrow.parquet as pq

    held.write_text("\n".join(pq.read_table(trained_run / "predictions" / "test.parquet").to_pydict()["text"]), encoding="utf-8")
    unreadable = tmp_path / "student"
    shutil.copytree(tiny_model, unreadable)
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4, "the": 5}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=words, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]").save_pretrained(unreadable)
    base = ["distill", "--teacher", str(trained_run), "--student", str(tiny_model), "--output_dir", str(tmp_path / "out")]
    cases = [
        (["--task", "regression"], "is a classification run, not regression"),
        (["--distill.temperature", "0"], "distill.temperature must be > 0"),
        (["--distill.unlabelled", str(held)], "holds no text outside the run's validation and test splits"),
        (["--student", str(unreadable)], "tokenizer reads"),
        (["--teacher", str(tmp_path)], "not a run directory"),
        (["--data.source", "elsewhere.csv"], "a student learns on its teacher's data"),
        (["--ner.documents", "true"], "the teacher is a classification run"),
    ]
    for extra, said in cases:
        failed = run_cli(*base, *extra, check=False)
        last = failed.stderr.strip().splitlines()[-1]
        assert failed.returncode == 2 and said in last and last.startswith("error:"), (extra, failed.stderr[-500:])
        assert "Traceback" not in failed.stderr
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("teacher", ["multilabel_run", "regression_run", "ner_run"])
def test_multilabel_regression_and_ner_students_learn_from_their_teachers(teacher, request, tiny_model, tmp_path):
    run = request.getfixturevalue(teacher)
    out = tmp_path / "student"
    recipe = []
    if teacher == "ner_run":  # a recipe's task group (examples/conll2003.yaml has `ner:`) is read, and must be the teacher's
        (tmp_path / "recipe.yaml").write_text("ner:\n  documents: false\n  subword_labels: all\n")
        recipe = ["--config", str(tmp_path / "recipe.yaml")]
        refused = run_cli("distill", "--teacher", str(run), "--student", str(tiny_model), "--output_dir", str(out), *recipe,
                          "--ner.documents", "true", check=False)
        assert refused.returncode == 2 and "the teacher's is False" in refused.stderr and not out.exists(), refused.stderr[-300:]
    run_cli("distill", "--teacher", str(run), "--student", str(tiny_model), "--output_dir", str(out), *DISTILL, *recipe,
            "--train.epochs", "3", "--distill.augment", "1")
    metrics = json.loads((out / "metrics.json").read_text())
    teacher_metrics = json.loads((run / "metrics.json").read_text())["test"]
    key = {"multilabel_run": "f1_micro", "regression_run": "pearson", "ner_run": "f1"}[teacher]
    assert metrics["distillation"]["teacher"]["test"][key] == teacher_metrics[key]
    assert metrics["test"][key] > 0.5 * teacher_metrics[key]  # it learned the task from the teacher's outputs
    history = json.loads((out / "logs" / "history.json").read_text())
    losses = [h["loss"] for h in history if "loss" in h]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("student", ["tiny", "all-MiniLM-L6-v2"])
def test_ner_teacher_words_reach_each_student_word_once_whatever_its_tokenizer(student, tiny_model):
    """The teacher's per-word logits land on the student's first sub-word of each word, once per window, with the
    student's own tokenizer (byte-level BPE, or MiniLM's lower-casing WordPiece) and windows."""
    from encoderfit.core.args import ModelArgs
    from encoderfit.tasks.base.words import IGNORE, aligned_windows, split_words
    from encoderfit.models.loading import load_tokenizer

    tokenizer = load_tokenizer(ModelArgs(name_or_path=str(tiny_model) if student == "tiny" else student))
    texts = ["Zoë  Müller flew to São Paulo 🙂 on Tuesday, didn't she?", "garlic soup", "The U.S. team won the match again today"]
    words = [split_words(t) for t in texts]
    rng = np.random.default_rng(0)
    soft = [rng.normal(size=(len(w), 5)).round(3).tolist() for w in words]
    tags = [[0] * len(w) for w in words]
    enc = aligned_windows(tokenizer, texts, words, tags, 12, 3, "all", {0: 0}, soft)
    seen = [set() for _ in texts]
    for window, text_index in enumerate(enc["source"]):
        rows = [r for r in enc["teacher"][window] if not np.isnan(r[0])]
        taught = [soft[text_index].index(list(r)) for r in rows]  # which word each taught sub-word carries
        assert len(taught) == len(set(taught)) and taught == sorted(taught)  # each word once, in order
        assert sum(label != IGNORE for label in enc["labels"][window]) >= len(taught)
        seen[text_index] |= set(taught)
    assert [len(s) for s in seen] == [len(w) for w in words]  # every word of every text reached the student


def test_an_embedding_student_of_another_width_learns_its_teachers_vectors(embedding_run, tiny_model, tmp_path):
    """The cosine distance to the teacher's centred vectors: a narrower student (hidden 48) gets a projection to the teacher's 64
    dimensions, its checkpoints are chosen by closeness to the teacher on validation texts, and its directory loads
    with SentenceTransformer and gives the vectors encoderfit's own inference gives."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoConfig, ModernBertModel

    from encoderfit import Predictor

    student = tmp_path / "narrow"
    shutil.copytree(tiny_model, student)
    config = AutoConfig.from_pretrained(tiny_model)
    config.hidden_size, config.intermediate_size = 48, 96
    ModernBertModel(config).save_pretrained(student)
    out = tmp_path / "distilled"
    run_cli("distill", "--teacher", str(embedding_run), "--student", str(student), "--output_dir", str(out),
            "--train.epochs", "8", "--train.batch_size", "16", "--train.learning_rate", "3e-3", "--train.logging_steps", "5",
            "--train.report_to", "[]", "--distill.augment", "2")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["distillation"]["transfer"]["augmented"] > 0
    assert "mrr@10" in metrics["test"] and "comparison" in metrics["distillation"]["teacher"]
    history = json.loads((out / "logs" / "history.json").read_text())
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    assert evals[-1] < 0.5 * evals[0], evals  # closer to the teacher on validation texts it never trained on
    texts = [row[column] for row in make_search_rows(15, 99) for column in ("query", "document")]  # texts it never saw
    loaded = SentenceTransformer(str(out / "model"), device="cpu")
    assert loaded.get_embedding_dimension() == 64 and any(type(m).__name__ == "Dense" for m in loaded)
    mine = np.asarray(Predictor.from_pretrained(out).logits(texts))
    assert np.allclose(mine, loaded.encode(texts, normalize_embeddings=True), atol=1e-4)
    teacher = np.asarray(Predictor.from_pretrained(embedding_run).logits(texts))
    untrained = np.asarray(Predictor.from_pretrained(embedding_run).logits(texts[::-1]))  # another text's vector
    assert np.mean(np.sum(mine * teacher, 1)) > np.mean(np.sum(untrained * teacher, 1))
    # the teacher's similarities, not just its vectors' common direction: texts the teacher finds alike, the student too
    upper = np.triu_indices(len(texts), 1)
    assert spearmanr((mine @ mine.T)[upper], (teacher @ teacher.T)[upper]).statistic > 0.5


def test_distill_refusals_name_the_fix_distill_accepts(trained_run, regression_run, tiny_model, toy_csv, tmp_path):
    """Each one line, exit 2, no traceback, nothing left in the runs folder: non-UTF-8 unlabelled text (a .txt and a
    table), a student head that cannot be distilled, a --distill.compare run of another task (not "changed splits"),
    and a teacher whose data changed (re-train it: not --data, which distill refuses)."""
    bad_txt, bad_csv = tmp_path / "more.txt", tmp_path / "more.csv"
    bad_txt.write_bytes(b"a fine first line\ncaf\xe9 in latin-1\n")
    bad_csv.write_bytes(b"text\nfine\ncaf\xe9\n")
    copy = tmp_path / "data.csv"
    shutil.copy(toy_csv, copy)
    teacher = tmp_path / "teacher"
    run_cli("train", "--data.source", str(copy), "--model.name_or_path", str(tiny_model), "--output_dir", str(teacher),
            "--train.epochs", "1", "--report.baseline", "false")
    copy.write_text(copy.read_text() + "a new row about the goal and the match,sport\n")
    runs = tmp_path / "runs"
    base = ["distill", "--teacher", str(trained_run), "--student", str(tiny_model), "--output_dir", str(runs / "out")]
    cases = [
        (["--distill.unlabelled", str(bad_txt)], f"distill.unlabelled: {bad_txt}: line 2: byte 0xe9 is not valid UTF-8"),
        (["--distill.unlabelled", str(bad_csv)], "line 3: byte 0xe9 is not valid UTF-8"),
        (["--model.head", "embedding"], "--model.head embedding: a student is distilled with a linear head"),
        (["--distill.compare", str(regression_run)], f"distill.compare: {regression_run} is a regression run, the teacher"),
        (["--teacher", str(teacher)], "Re-train the teacher on the source as it is now"),
    ]
    for extra, said in cases:
        failed = run_cli(*base, *extra, check=False)
        last = failed.stderr.strip().splitlines()[-1]
        assert failed.returncode == 2 and said in last and "Traceback" not in failed.stderr, (extra, failed.stderr[-800:])
        assert "--data FILE" not in last and "changed" not in last.split(":")[0]
        assert not runs.exists() or not list(runs.iterdir()), list(runs.iterdir())  # no run, no .out.partial
