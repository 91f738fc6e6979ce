"""What a hostile probe found in reading data, checking options and naming mistakes: each case is one line naming the
file, line, row or column and the fix (exit 2, nothing written), or, where results were silently wrong, the right
result. Search and embedding (index building, read-only runs, --query) are in test_probe_search.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import make_ner_rows, run_cli, write_jsonl
from failing import cli_fails

from encoderfit.core.args import DataArgs
from encoderfit.runs.splits import prepare
from encoderfit.core.errors import UserError
from shared import TEN


def fails(source: Path, task: str, **options) -> str:
    """The one-line error of reading `source` as `task`'s data, with the task's own settings `options`."""
    with pytest.raises(UserError) as caught:
        prepare(DataArgs(source=str(source)), task, {task: options})
    return str(caught.value)


# ---------------------------------------------------------------- a. lines are split at \n only


def test_text_files_split_into_lines_at_newlines_only(tmp_path):
    from encoderfit.pretraining.corpus import split_documents
    from encoderfit.core.files import split_lines
    from encoderfit.runs.inputs import read_inputs
    from encoderfit.data.conll import read_conll

    assert split_lines("a\r\nb\x0cc\u2028d\n\ne") == ["a", "b\x0cc\u2028d", "", "e"] and split_lines("") == []
    path = tmp_path / "ten.txt"
    path.write_text("\n".join(TEN) + "\n", encoding="utf-8", newline="")
    assert read_inputs(str(path), "text")[0] == TEN
    assert split_documents(path.read_text(encoding="utf-8"), "lines") == TEN
    conll = tmp_path / "t.conll"
    conll.write_text("alice B-PER\nsaw O \x0c\nbob B-PER\n\nzed O\n", encoding="utf-8")  # a page break is no sentence break
    rows = read_conll(conll)
    assert rows["tokens"] == [["alice", "saw", "bob"], ["zed"]] and rows["conll_lines"] == [[1, 2, 3], [5]]


# ---------------------------------------------------------------- c, l, m. NER tags and spans


def span_rows(n: int) -> list[dict]:
    return [{"text": f"alice went to paris on day {i}", "spans": [{"start": 0, "end": 5, "label": "PER"},
                                                                  {"start": 14, "end": 19, "label": "LOC"}]} for i in range(n)]


def test_span_labels_are_validated_and_stripped(tmp_path):
    rows = span_rows(30)
    rows[4]["spans"][1]["label"] = "LOC "  # the same type as LOC, not a type of its own
    rows[7]["spans"][0]["label"] = " PER"
    assert prepare(DataArgs(source=str(write_jsonl(tmp_path / "s.jsonl", rows))), "ner").labels == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    rows[9]["spans"][1]["label"] = None
    msg = fails(write_jsonl(tmp_path / "null.jsonl", rows), "ner")
    assert "row 10: span 2 [14, 19) in column 'spans' has an empty label" in msg
    rows[9]["spans"][1]["label"] = "  "
    assert "row 10: span 2" in fails(write_jsonl(tmp_path / "blank.jsonl", rows), "ner")


def test_conll_errors_name_the_file_line(tmp_path):
    lines = []
    for i in range(250):
        lines += ["alice B-PER", "saw O", "paris B-LOC", ""]
    assert lines[999] == ""
    lines[998] = "paris LOCATION"  # line 999, in sentence 250
    path = tmp_path / "train.conll"
    path.write_text("\n".join(lines) + "\n")
    assert "train.conll [train]: line 999: tag 'LOCATION' is not O" in fails(path, "ner")
    lines[998], lines[997] = "paris I-LOC", "saw O"  # an I- after O: invalid IOB2
    path.write_text("\n".join(lines) + "\n")
    msg = fails(path, "ner", tag_scheme="iob2", invalid_tags="error")
    assert "line 999: tag 'I-LOC' is not valid IOB2 here" in msg and "sentence starting at line 997" in msg
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "train.conll").write_text("\n".join(f"person{i} B-PER\nparis B-LOC\n" for i in range(20)))
    (splits / "validation.conll").write_text("\n".join(["alice B-PER", "acme B-ORG", ""] * 3))
    (splits / "test.conll").write_text("alice B-PER\n")
    assert "[validation]: line 2: entity type 'ORG' does not occur in the training split" in fails(splits, "ner")
    trained = prepare(DataArgs(source=str(splits / "train.conll")), "ner")
    assert "conll_lines" not in trained.train.column_names


def test_null_tags_and_untagged_data_name_the_column_and_problem(tmp_path):
    rows = [{"tokens": r["tokens"], "ner_tags": r["tags"]} for r in make_ner_rows(30, seed=3)]
    rows[5]["ner_tags"] = [None] + rows[5]["ner_tags"][1:]
    assert "row 6: tag 1 in column 'ner_tags' is empty (null)" in fails(write_jsonl(tmp_path / "null.jsonl", rows), "ner")
    rows = [{"tokens": r["tokens"], "ner_tags": ["O"] * len(r["tokens"])} for r in rows]
    msg = fails(write_jsonl(tmp_path / "o.jsonl", rows), "ner")
    assert "no entities in column 'ner_tags' (every tag is O)" in msg
    rows[2]["ner_tags"][0] = "B-PER "  # stripped, as class labels are
    assert prepare(DataArgs(source=str(write_jsonl(tmp_path / "ws.jsonl", rows))), "ner").labels == ["O", "B-PER", "I-PER"]


# ---------------------------------------------------------------- n, o. judgements and duplicates


def test_nan_relevance_is_refused_with_its_row(tmp_path):
    rows = [{"query": f"q{i}", "document": f"d{i}", "relevant": 1} for i in range(30)]
    rows[7]["relevant"] = math.nan  # json writes NaN; read as 0 it would silently drop the pair
    msg = fails(write_jsonl(tmp_path / "j.jsonl", rows), "embedding")
    assert "row 8: judgement nan in column 'relevant' is not a finite number" in msg
    scored = [{"text_a": f"a{i}", "text_b": f"b{i}", "score": math.nan if i == 4 else i / 40} for i in range(30)]
    assert "row 5: target nan in column 'score' is not finite" in fails(write_jsonl(tmp_path / "s.jsonl", scored), "similarity")


def test_identical_pairs_are_named_as_the_problem(tmp_path):
    msg = fails(write_jsonl(tmp_path / "same.jsonl", [{"query": "q", "document": "d"}] * 300), "embedding")
    assert "the 300 training examples are all identical" in msg and "add different examples" in msg
    assert "validation_size" not in msg
    rows = [{"query": "q", "document": "d"}] * 150 + [{"query": "q2", "document": "d2"}] * 150
    assert "only 2 of the 300 training examples are distinct" in fails(write_jsonl(tmp_path / "two.jsonl", rows), "embedding")


# ---------------------------------------------------------------- d. 0-byte table files


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_empty_table_file_is_one_line(tmp_path, tiny_model, trained_run, suffix):
    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b"")
    msg = cli_fails("train", "--data.source", str(empty), "--model.name_or_path", str(tiny_model), "--output_dir", str(tmp_path / "run"))
    assert f"empty{suffix}: an empty file (0 bytes), no rows" in msg and not (tmp_path / "run").exists()
    assert "an empty file (0 bytes)" in cli_fails("predict", str(trained_run), "--input", str(empty), "--output", str(tmp_path / "p.jsonl"))
    assert not (tmp_path / "p.jsonl").exists()


# ---------------------------------------------------------------- h. export's opset


def test_export_opset_out_of_range_is_refused_up_front(trained_run, tmp_path):
    from encoderfit.runs.export import MIN_OPSET, max_opset

    for opset in ("3", "99"):
        msg = cli_fails("export", str(trained_run), "--opset", opset, "--output", str(tmp_path / "onnx"))
        assert f"--opset: {opset} is outside" in msg and f"{MIN_OPSET}-{max_opset()}" in msg
    assert not (tmp_path / "onnx").exists()


# ---------------------------------------------------------------- i, j. tune-pretrain


def tune_pretrain_args(corpus: Path, out: Path, space: dict) -> list[str]:
    return ["tune-pretrain", "--corpus.sources", f"[{corpus}]", "--tokenizer.vocab_size", "384", "--mlm.block_size", "32",
            "--train.max_steps", "4", "--trials", "1", "--space", json.dumps(space), "--output_dir", str(out)]


@pytest.mark.parametrize("space,expected", [
    ({"mlm.masking_rate": {"low": 0.1, "high": 1.5}},
     "space.mlm.masking_rate: 1.5 is not a valid value (mlm.masking_rate must be in (0, 1)"),
    ({"train.learning_rate": {"low": 0.0, "high": 1e-3}},
     "space.train.learning_rate: 0.0 is not a valid value (train.learning_rate must be > 0"),
    ({"train.learning_rate": {"low": 0.0, "high": 1e-3, "log": True}}, "space.train.learning_rate: a log range needs low > 0"),
    ({"train.batch_size": {"choices": [16, 0]}}, "space.train.batch_size: 0 is not a valid value"),
])
def test_tune_pretrain_checks_the_whole_space_before_the_study(tmp_path, space, expected):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"document number {i} about a match and a league" for i in range(50)))
    proc = run_cli(*tune_pretrain_args(corpus, tmp_path / "tuned", space), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and expected in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "tuned-tune").exists() and not (tmp_path / "tuned").exists()


def test_a_study_where_no_trial_finished_does_not_block_a_corrected_space(tmp_path):
    import optuna

    from encoderfit.pretraining.corpus import CorpusArgs
    from encoderfit.pretraining.settings import MlmArgs, PretrainConfig, PretrainModelArgs, pretrain_defaults
    from encoderfit.pretraining.tokenizer import TokenizerArgs
    from encoderfit.runs.tuning import _open_study

    cfg = PretrainConfig(corpus=CorpusArgs(sources=["c.txt"]), tokenizer=TokenizerArgs(), model=PretrainModelArgs(),
                         mlm=MlmArgs(), train=pretrain_defaults())
    path = tmp_path / "study.db"
    bad, good = {"mlm.masking_rate": {"low": 0.1, "high": 1.5}}, {"mlm.masking_rate": {"low": 0.1, "high": 0.5}}
    study = _open_study(path, cfg, bad, "none", 1, False)
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)  # what a trial that drew 1.5 left
    assert _open_study(path, cfg, good, "none", 1, False).user_attrs["space"] == good
    finished = _open_study(path, cfg, good, "none", 1, False)
    finished.tell(finished.ask(), 1.0)
    with pytest.raises(UserError, match="the search space changed"):  # a study with results is kept, never dropped
        _open_study(path, cfg, bad, "none", 1, False)


def test_tune_pretrain_on_an_empty_corpus_leaves_nothing(tmp_path):
    corpus = tmp_path / "empty.txt"
    corpus.write_text("")
    proc = run_cli(*tune_pretrain_args(corpus, tmp_path / "tuned", {"train.learning_rate": {"low": 1e-4, "high": 1e-3}}), check=False)
    assert proc.returncode == 2 and "0 usable document" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "tuned-tune").exists() and not (tmp_path / "tuned").exists()
