"""Extractive question answering on the tiny ModernBERT: SQuAD data shapes and checks, windows that map back to exact
characters, an answer across a window boundary, SQuAD EM/F1 on hand-computed cases, the null threshold fitted on
validation, the plain transformers pipeline, and bad input (SQuAD 2.0 and the probe's data: test_qa_v2.py, test_qa_data.py)."""

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import make_qa_rows, read_jsonl, run_cli, write_jsonl
from encoderfit.core.args import DataArgs
from encoderfit.core.errors import UserError
from encoderfit.runs.predictor import Predictor
from encoderfit.runs.rundir import ModelInfo
from encoderfit.runs.splits import prepare
from encoderfit.tasks import get_task
from encoderfit.tasks.qa import metrics as qm
from failing import cli_fails


def squad_json(path: Path, qas_extra=None) -> Path:
    article = {"title": "Broncos", "paragraphs": [
        {"context": "The Denver Broncos defeated the Carolina Panthers 24–10.",
         "qas": [{"id": "q1", "question": "Who won?", "answers": [{"text": "Denver Broncos", "answer_start": 4}], **(qas_extra or {})},
                 {"id": "q2", "question": "Who lost?", "answers": [{"text": "Carolina Panthers", "answer_start": 33}]}]}]}
    path.write_text(json.dumps({"version": "1.1", "data": [article]}))
    return path


# ---------------------------------------------------------------- data


def test_squad_json_reads_in_the_hubs_shape_and_mixed_versions_are_refused(tmp_path):
    from encoderfit.data.sources import load_source

    ds = load_source(str(squad_json(tmp_path / "dev-v1.1.json")))["train"]
    assert ds.column_names == ["id", "title", "context", "question", "answers"]
    assert ds[1]["answers"] == {"text": ["Carolina Panthers"], "answer_start": [33]} and ds[0]["title"] == "Broncos"
    mixed = squad_json(tmp_path / "mixed.json", {"is_impossible": False})
    with pytest.raises(UserError, match=r"question q2 is SQuAD v1 \(without is_impossible\) but question q1 is v2"):
        load_source(str(mixed))


def test_answers_are_checked_repaired_and_split_by_article(tmp_path):
    rows = make_qa_rows(30, seed=1)
    rows[3]["answers"]["answer_start"] = [rows[3]["answers"]["answer_start"][0] + 2]  # off by two: moved back
    splits = prepare(DataArgs(source=str(write_jsonl(tmp_path / "ok.jsonl", rows))), "qa")
    assert splits.task == "qa" and splits.labels == ["answer"]
    titles = {role: set(ds["group"]) for role, ds in splits.as_dict().items()}
    assert not (titles["train"] & titles["test"]) and not (titles["train"] & titles["validation"])  # whole articles
    everything = [r for ds in splits.as_dict().values() for r in ds]
    fixed = next(r for r in everything if r["text"] == rows[3]["question"] and r["text_pair"] == rows[3]["context"])
    assert fixed["text_pair"][fixed["labels"]["start"][0]:][: len(rows[3]["answers"]["text"][0])] == rows[3]["answers"]["text"][0]

    def fails(change) -> str:
        bad = [dict(r, answers=dict(r["answers"])) for r in rows]
        change(bad[5])
        with pytest.raises(UserError) as caught:
            prepare(DataArgs(source=str(write_jsonl(tmp_path / "bad.jsonl", bad))), "qa")
        return str(caught.value)

    assert "row 6: the answer 'nowhere' is not at answer_start" in fails(lambda r: r.update(answers={"text": ["nowhere"], "answer_start": [3]}))
    assert "row 6: answer_start 9999 is outside the context" in fails(lambda r: r.update(answers={"text": ["zz"], "answer_start": [9999]}))
    assert "row 6: the question (column 'question') is empty" in fails(lambda r: r.update(question="  "))
    assert "row 6: a context of 100,001 characters" in fails(lambda r: r.update(context="x" * 100_001))
    assert "row 6: 1 answer texts but 2 answer_start values" in fails(lambda r: r.update(answers={"text": ["a"], "answer_start": [1, 2]}))


# ---------------------------------------------------------------- windows and offsets


def test_windows_cover_the_context_and_answers_map_back_to_exact_characters(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    contexts = ["Zoë  lives   in Málaga 🌍 and   works at café Ñandú .",
                " ".join(["the a we saw"] * 12) + " carol works at globex now",
                "née  Ørsted  visited   Tōkyō  🎉🎉 yesterday ."]
    answers = ["Málaga", "globex", "Tōkyō"]
    from datasets import Dataset

    ds = Dataset.from_dict({"text": ["where ?"] * 3, "text_pair": contexts,
                            "labels": [{"text": [a], "start": [c.index(a)]} for a, c in zip(answers, contexts)], "group": ["g"] * 3})
    task = get_task("qa")
    rows = task.targets.tokenize(ds, tokenizer, 24, {"overlap": 8}, None, "train")
    enc = tokenizer(["where ?"] * 3, contexts, truncation="only_second", max_length=24, stride=8,
                    return_overflowing_tokens=True, return_offsets_mapping=True)
    source = enc["overflow_to_sample_mapping"]
    assert len(rows) == len(source) and max(rows["length"]) <= 24
    covered = [set() for _ in contexts]
    found = [False] * 3
    for w, (start, end) in enumerate(rows["labels"]):
        i, ids, offsets = source[w], enc.sequence_ids(w), enc["offset_mapping"][w]
        for k, s in enumerate(ids):
            if s == 1:
                covered[i].update(range(*offsets[k]))
        if (start, end) != (0, 0):
            assert ids[start] == 1 and ids[end] == 1
            # exact characters, accents and all (byte-level BPE tokens carry the space before a word: decoding trims it)
            assert contexts[i][offsets[start][0]:offsets[end][1]].strip() == answers[i]
            found[i] = True
    assert all(found)  # the second context's answer sits past the first window: a later window holds it whole
    for i, context in enumerate(contexts):
        assert {k for k, ch in enumerate(context) if not ch.isspace()} <= covered[i]


class Pointer:
    """A real (untrained, hand-set) QA model: its start logits peak on the first token of `target`, its end logits on
    the last, so the decoding path (windows, n-best, offsets, the best over windows) is what is tested."""

    @staticmethod
    def build(tokenizer, target: str):
        import torch

        pieces = tokenizer(target, add_special_tokens=False)["input_ids"]

        class Model(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.bias = torch.nn.Parameter(torch.zeros(1))
                self.config = type("Config", (), {})()

            def forward(self, input_ids, attention_mask=None, **_):
                start = (input_ids == pieces[0]).float() * 10 + self.bias
                end = (input_ids == pieces[-1]).float() * 10 + self.bias
                return type("Out", (), {"start_logits": start, "end_logits": end})()

        return Model()


def test_an_answer_across_window_boundaries_is_found_at_its_characters(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    context = " ".join(["the a we saw"] * 40) + " carol works at globex ."
    info = ModelInfo("qa", 48, ["answer"], True, {"null_threshold": None}, {"overlap": 8, "aggregation": "mean"})
    predictor = Predictor(Pointer.build(tokenizer, " globex"), tokenizer, info)
    result = predictor.predict(question="where does carol work ?", context=context)
    assert result["answer"] == "globex" and context[result["start"]:result["end"]] == "globex"
    assert predictor.input_report(["where ?"], [context])["windows_per_text"] > 3


# ---------------------------------------------------------------- metrics


def test_squad_normalisation_em_f1_and_the_null_threshold_on_hand_computed_cases():
    assert qm.normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert qm.score("the Denver Broncos", ["Denver Broncos", "Broncos"]) == (1.0, 1.0)
    em, f1 = qm.score("Denver Broncos defeated", ["Broncos"])  # precision 1/3, recall 1: F1 = 0.5
    assert em == 0.0 and f1 == pytest.approx(0.5)
    assert qm.score("", []) == (1.0, 1.0) and qm.score("x", []) == (0.0, 0.0) and qm.score("", ["paris"]) == (0.0, 0.0)
    assert qm.question_word("In which year, and how many?") == "which" and qm.question_word("Name it.") == "other"
    assert qm.question_word("How many points?") == "how many" and qm.question_word("How did it end?") == "how"
    rows = {"em": np.zeros(4), "f1": np.zeros(4), "has_answer": np.array([True, True, False, False])}
    # margins 3, 2, 1, 0; answering the two answerable ones (F1 1 each) and not the rest: every question right
    threshold, best = qm.best_null_threshold(np.array([3.0, 2.0, 1.0, 0.0]), rows, np.array([1.0, 1.0, 0.0, 0.0]))
    assert best == 1.0 and 1.0 < threshold < 2.0


# ---------------------------------------------------------------- a run through every stage


def plain_transformers_answers(model_dir: Path, questions, contexts, n_best: int = 20, max_answer_tokens: int = 30):
    """The answers of the model directory read by plain transformers, decoded as the Hugging Face course's
    question-answering chapter does (transformers 5 removed the pipeline): one window per question, the n_best highest
    start and end logits among the context's tokens, the best-scoring span with start <= end and at most
    max_answer_tokens, sliced by offsets. (A bare argmax of each often lands on the question with a tiny model.)"""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(model_dir), AutoModelForQuestionAnswering.from_pretrained(model_dir).eval()
    out = []
    for question, context in zip(questions, contexts):
        enc = tok(question, context, truncation="only_second", return_offsets_mapping=True, return_tensors="pt")
        with torch.inference_mode():
            logits = model(**{k: v for k, v in enc.items() if k != "offset_mapping"})
        start_logits, end_logits = logits.start_logits[0].tolist(), logits.end_logits[0].tolist()
        in_context = [i for i, s in enumerate(enc.sequence_ids(0)) if s == 1]
        starts = sorted(in_context, key=lambda i: -start_logits[i])[:n_best]
        ends = sorted(in_context, key=lambda i: -end_logits[i])[:n_best]
        spans = [(start_logits[a] + end_logits[b], a, b) for a in starts for b in ends if 0 <= b - a < max_answer_tokens]
        if not spans:
            out.append(None)
            continue
        _, a, b = max(spans)
        out.append(context[int(enc["offset_mapping"][0, a, 0]) : int(enc["offset_mapping"][0, b, 1])].strip())
    return out


def test_qa_trains_predicts_and_loads_as_a_plain_transformers_model(qa_run, tmp_path):
    metrics = json.loads((qa_run / "metrics.json").read_text())
    test = metrics["test"]
    assert test["f1"] > metrics["baseline"]["f1"] and "f1" in test["ci"] and metrics["comparison"]["verdict"]["outcome"] == "better"
    assert "what" not in test["by_question_word"] and "where" in test["by_question_word"]
    report = (qa_run / "report.html").read_text()
    assert "By question word" in report and "Model against baseline, question by question" in report
    assert test["ci"]["f1"]["clusters"] < test["n"]  # questions on one paragraph are resampled together
    counts = metrics["comparison"]["mcnemar_exact_match"]
    assert counts["model_only_right"] > counts["baseline_only_right"] and len(metrics["comparison"]["model_only"]) <= 10
    assert "AutoModelForQuestionAnswering" in (qa_run / "model" / "README.md").read_text()
    rows = make_qa_rows(6, seed=99)
    for r in rows[::2]:  # some contexts of one sentence: one window, as plain transformers reads them
        start = r["answers"]["answer_start"][0]
        sentence_start = r["context"].rfind(" . ", 0, start) + 3 if " . " in r["context"][:start] else 0
        r["context"] = r["context"][sentence_start:].split(" . ")[0] + " ."
    questions = write_jsonl(tmp_path / "q.jsonl", [{"question": r["question"], "context": r["context"]} for r in rows])
    out = read_jsonl(run_cli("predict", str(qa_run), "--input", str(questions)).stdout)
    assert [o["question"] for o in out] == [r["question"] for r in rows]
    assert all(o["answer"] is None or r["context"][o["start"]:o["end"]] == o["answer"] for o, r in zip(out, rows))
    model = Predictor.from_pretrained(qa_run)
    one = model.predict(question=rows[0]["question"], context=rows[0]["context"])
    assert one == {k: v for k, v in out[0].items() if k not in ("question", "context")}
    (tmp_path / "context.txt").write_text(rows[0]["context"], encoding="utf-8")
    flags = read_jsonl(run_cli("predict", str(qa_run), "--question", rows[0]["question"], "--context",
                               str(tmp_path / "context.txt")).stdout)
    assert flags == out[:1]
    for args, said in ((["--question", "Who?"], "--context is missing"),
                       (["--question", "Who?", "--context", str(tmp_path / "none.txt")], "--context: file"),
                       (["--question", " ", "--context", str(tmp_path / "context.txt")], "--question is empty"),
                       (["--question", "Who?", "--context", str(tmp_path / "context.txt"), "--input", str(questions)],
                        "--input and --question/--context both given")):
        failed = run_cli("predict", str(qa_run), *args, check=False)
        assert failed.returncode == 2 and said in failed.stderr and "Traceback" not in failed.stderr
    with pytest.raises(UserError, match="pass the texts as question=... and context=..."):
        model.predict(query="x", context="y")
    short = [i for i, r in enumerate(rows) if len(model.tokenizer(r["question"], r["context"])["input_ids"]) <= model.max_length]
    plain = plain_transformers_answers(qa_run / "model", [rows[i]["question"] for i in short], [rows[i]["context"] for i in short])
    compared = [(a, out[i]["answer"]) for a, i in zip(plain, short) if a is not None]
    assert short and compared and all(a == b for a, b in compared), (plain, [out[i]["answer"] for i in short])


def test_bad_qa_input_is_one_line_naming_the_row(tmp_path, tiny_model, qa_run):
    mixed = squad_json(tmp_path / "mixed.json", {"is_impossible": False})
    msg = cli_fails("train", "--task", "qa", "--data.source", str(mixed), "--model.name_or_path", str(tiny_model),
                    "--output_dir", str(tmp_path / "run"))
    assert "question q2 is SQuAD v1" in msg and not (tmp_path / "run").exists()
    empty = write_jsonl(tmp_path / "e.jsonl", [{"question": "where ?", "context": "alice lives in oslo"}, {"question": "x", "context": " "}])
    proc = run_cli("predict", str(qa_run), "--input", str(empty))
    assert len(read_jsonl(proc.stdout)) == 1 and "skipped 1 empty input line(s)/row(s) (2)" in proc.stderr
    long = write_jsonl(tmp_path / "l.jsonl", [{"question": "where " * 40, "context": "alice lives in oslo"}])
    assert "a question of" in cli_fails("predict", str(qa_run), "--input", str(long), "--output", str(tmp_path / "p.jsonl"))
    assert not (tmp_path / "p.jsonl").exists()


# ---------------------------------------------------------------- the public SQuAD files (../shared/data)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def test_the_public_squad_files_read_as_published():
    """SQuAD v1.1 dev and the v2.0 half dev (research licences: read from ../shared/data, never shipped)."""
    from encoderfit.data.sources import load_source

    v1, v2 = SHARED / "squad-v1.1" / "dev-v1.1.json", SHARED / "squad-v2-half-dev" / "dev-v2.0.json"
    if not v1.is_file() or not v2.is_file():
        pytest.skip(f"the SQuAD benchmark copies are absent ({SHARED}); see ../shared/data/README.md")
    one, two = load_source(str(v1))["train"], load_source(str(v2))["train"]
    assert len(one) == 10_570 and len(set(one["title"])) == 48
    assert len(two) == 6_078 and sum(not a["text"] for a in two["answers"]) == 3_168
    splits = prepare(DataArgs(source=str(v1)), "qa")
    titles = {role: set(ds["group"]) for role, ds in splits.as_dict().items()}
    assert not titles["train"] & titles["test"] and not titles["validation"] & titles["test"]
    assert 0.7 < len(splits.train) / len(one) < 0.9


@pytest.mark.slow
def test_minilm_learns_squad_answers_with_wordpiece_offsets(tmp_path):
    """The packaged MiniLM (uncased WordPiece, token type ids) on 400 SQuAD questions, one epoch: the whole run works
    on a real tokenizer and its answers are exact slices of their contexts (quality: benchmarks/quality/public.py)."""
    source = SHARED / "squad-v1.1" / "dev-v1.1.json"
    if not source.is_file():
        pytest.skip(f"the SQuAD v1.1 copy is absent ({source}); see ../shared/data/README.md")
    run = tmp_path / "run"
    run_cli("train", "--task", "qa", "--data.source", str(source), "--model.name_or_path", "all-MiniLM-L6-v2",
            "--model.max_length", "256", "--data.max_train_samples", "400", "--train.epochs", "1", "--train.batch_size", "16",
            "--train.learning_rate", "1e-4", "--output_dir", str(run))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["n"] > 500 and "f1" in metrics["test"]["ci"]
    preds = Predictor.from_pretrained(run)
    context = "The Denver Broncos defeated the Carolina Panthers 24–10 to earn their third Super Bowl title."
    answer = preds.predict(question="Who won the Super Bowl?", context=context)
    assert answer["answer"] is not None and context[answer["start"]:answer["end"]] == answer["answer"]


def test_qa_cross_validation_scores_every_question_once_with_paragraphs_kept_together(tiny_model, qa_data, tmp_path):
    out = tmp_path / "cv"
    run_cli("cv", "--task", "qa", "--data.source", str(qa_data), "--model.name_or_path", str(tiny_model), "--folds", "3",
            "--model.max_length", "48", "--model.window_overlap", "16", "--train.epochs", "1", "--train.batch_size", "16",
            "--train.learning_rate", "3e-3", "--output_dir", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    rows = [json.loads(line) for line in qa_data.read_text().splitlines()]
    assert metrics["cv"]["scored_once"] and metrics["cv"]["examples"] <= len(rows)
    assert "f1" in metrics["test"] and "f1" in metrics["test"]["ci"] and "verdict" in metrics["comparison"]
    import pyarrow.parquet as pq

    contexts = [set(pq.read_table(out / "folds" / f"fold-{i:02d}" / "predictions" / "test.parquet").to_pydict()["text_pair"])
                for i in (1, 2, 3)]
    assert not (contexts[0] & contexts[1] or contexts[0] & contexts[2] or contexts[1] & contexts[2])  # a paragraph in one fold


# ---------------------------------------------------------------- answers of every shape, and data that says what it is (issue 44)
