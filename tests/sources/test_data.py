"""Loading every supported source, label detection, deduplication and stratified splitting."""

import json
from collections import Counter

import pandas as pd
import pytest
from datasets import Dataset, DatasetDict

from conftest import make_rows, write_csv
from encoderfit.core.args import DataArgs
from encoderfit.data.sources import tokenize
from encoderfit.runs.splits import prepare


@pytest.fixture(scope="module")
def frame():
    return pd.DataFrame(make_rows(30, seed=3))


def _write(frame: pd.DataFrame, path):
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif suffix == ".json":
        path.write_text(json.dumps(frame.to_dict(orient="records")))
    elif suffix == ".parquet":
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".jsonl", ".parquet"])
def test_every_file_format_gives_the_same_splits(tmp_path, frame, suffix):
    reference = prepare(DataArgs(source=str(_write(frame, tmp_path / "ref.csv"))))
    splits = prepare(DataArgs(source=str(_write(frame, tmp_path / f"d{suffix}"))))
    assert splits.labels == ["food", "sport", "tech"]
    for role in ("train", "validation", "test"):
        assert splits.as_dict()[role]["text"] == reference.as_dict()[role]["text"]


def test_directory_of_split_files_and_column_mapping(tmp_path, frame):
    renamed = frame.rename(columns={"text": "body", "label": "topic"})
    for split, part in (("train", renamed[:60]), ("dev", renamed[60:75]), ("test", renamed[75:])):
        _write(part, tmp_path / f"{split}.jsonl")
    splits = prepare(DataArgs(source=str(tmp_path), text_column="body", label_column="topic", validation_split="dev"))
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (60, 15, 15)
    assert splits.validation["text"] == list(renamed[60:75]["body"])


def test_save_to_disk_directory_with_classlabel(tmp_path, frame):
    ds = Dataset.from_pandas(frame).class_encode_column("label")
    DatasetDict({"train": ds, "test": ds.select(range(10))}).save_to_disk(str(tmp_path / "saved"))
    splits = prepare(DataArgs(source=str(tmp_path / "saved")))
    assert splits.labels == ds.features["label"].names
    assert len(splits.test) == 10 and len(splits.validation) > 0


def test_integer_labels_sort_numerically(tmp_path):
    rows = [{"text": f"text {i}", "label": [10, 2, 1][i % 3]} for i in range(60)]
    splits = prepare(DataArgs(source=str(write_csv(tmp_path / "ints.csv", rows))))
    assert splits.labels == ["1", "2", "10"]
    assert splits.train.features["labels"].names == ["1", "2", "10"]


def test_dedupe_and_stratified_split_are_disjoint_balanced_and_seeded(tmp_path):
    rows = make_rows(50, seed=4)
    rows += rows[:20]  # exact duplicates
    path = write_csv(tmp_path / "dup.csv", rows)
    splits = prepare(DataArgs(source=str(path)))
    texts = [set(s["text"]) for s in (splits.train, splits.validation, splits.test)]
    assert sum(map(len, texts)) == len(set().union(*texts)) == len({r["text"] for r in rows}), "a text sits in two splits"
    counts = Counter(splits.test["labels"])
    assert max(counts.values()) - min(counts.values()) <= 1, "test split is not stratified"
    again = prepare(DataArgs(source=str(path)))
    assert again.test["text"] == splits.test["text"]
    other = prepare(DataArgs(source=str(path), split_seed=7))
    assert other.test["text"] != splits.test["text"]


def test_pairs_and_max_train_samples(tmp_path):
    rows = [{"premise": f"a {i}", "hypothesis": f"b {i}", "label": ["yes", "no"][i % 2]} for i in range(100)]
    path = write_csv(tmp_path / "pairs.csv", rows, fieldnames=("premise", "hypothesis", "label"))
    splits = prepare(DataArgs(source=str(path), text_column="premise", text_pair_column="hypothesis", max_train_samples=30))
    assert len(splits.train) == 30 and splits.train.column_names == ["text", "text_pair", "labels"]


def test_bbc_recipe_drops_duplicates_before_an_80_10_10_split():
    splits = prepare(DataArgs(source="bbc-news"))
    assert splits.labels == ["business", "entertainment", "politics", "sports", "tech"]
    sizes = [len(s) for s in (splits.train, splits.validation, splits.test)]
    total = sum(sizes)
    assert 2100 <= total < 2225  # ~100 exact duplicates removed from 2,225 articles
    assert abs(sizes[1] / total - 0.1) < 0.01 and abs(sizes[2] / total - 0.1) < 0.01
    assert not set(splits.train["text"]) & set(splits.test["text"])


def test_tokenize_never_pads(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rows = [{"text": "goal " * n, "label": "a" if n % 2 else "b"} for n in range(1, 40)]
    splits = prepare(DataArgs(source=str(write_csv(tmp_path / "l.csv", rows))))
    encoded = tokenize(splits.train, tokenizer, max_length=16)
    lengths = encoded["length"]
    assert max(lengths) == 16 and min(lengths) < 16
    assert all(len(ids) == n for ids, n in zip(encoded["input_ids"], lengths))
    assert tokenizer.pad_token_id not in sum(encoded["input_ids"], [])


def test_label_whitespace_is_stripped_and_case_twins_are_reported(tmp_path, caplog):
    rows = [{"text": f"text {i}", "label": ["pos", "neg ", " neutral"][i % 3] + (" " if i % 2 else "")} for i in range(60)]
    rows.append({"text": "shouting", "label": "POS"})
    with caplog.at_level("INFO"):
        splits = prepare(DataArgs(source=str(write_csv(tmp_path / "ws.csv", rows))))
    assert splits.labels == ["POS", "neg", "neutral", "pos"]  # "pos" and "pos " are one class; "POS" is kept, flagged
    assert "stripped surrounding whitespace from 50 label(s)" in caplog.text
    assert "labels 'POS' and 'pos' differ only by case" in caplog.text


def test_a_single_example_class_stays_in_train_and_stratification_stays_on(tmp_path, caplog):
    rows = make_rows(40, seed=5) + [{"text": "one of a kind", "label": "weather"}]
    with caplog.at_level("WARNING"):
        splits = prepare(DataArgs(source=str(write_csv(tmp_path / "rare.csv", rows))))
    assert "one of a kind" in splits.train["text"]
    assert "label 'weather' has a single example: it stays in train" in caplog.text
    assert "splitting at random" not in caplog.text
    counts = Counter(splits.test["labels"])
    assert sorted(counts.values()) == [4, 4, 4], "the other classes are still stratified"


def test_predict_skips_empty_lines_and_says_so(trained_run, tmp_path):
    from conftest import read_jsonl, run_cli

    (tmp_path / "in.txt").write_text("the chef baked bread\n\n   \nthe team won\n")
    proc = run_cli("predict", str(trained_run), "--input", str(tmp_path / "in.txt"))
    assert [r["text"] for r in read_jsonl(proc.stdout)] == ["the chef baked bread", "the team won"]
    assert "skipped 2 empty input line(s)/row(s) (2, 3)" in proc.stderr


def test_vader_scores_recipe_is_a_regression_on_every_snippet():
    from encoderfit.data.recipes import RECIPES

    data = RECIPES["vader-movies-scores"]()["train"]
    scores = data["label"]
    assert len(data) == 10605 and -4 <= min(scores) < -3 and 3 < max(scores) <= 4
    assert any(abs(s) < 0.5 for s in scores)  # the near-neutral snippets the binary recipe drops are here
    splits = prepare(DataArgs(source="vader-movies-scores"))
    assert splits.task == "regression" and splits.labels == ["label"]


def test_debtags_recipe_names_the_command_when_the_index_has_no_descriptions(tmp_path, monkeypatch):
    import shutil

    from encoderfit.data import debian
    from encoderfit.core.errors import UserError

    if shutil.which("apt-cache") is None:
        pytest.skip("not a Debian machine")
    monkeypatch.setattr(debian, "LISTS", tmp_path)  # an apt index without Translation-en files
    with pytest.raises(UserError, match=r"run `apt-get update -o Acquire::Languages=en` \(as root\) first"):
        prepare(DataArgs(source="debtags"))


@pytest.mark.slow
def test_debtags_recipe_builds_multilabel_splits_from_the_apt_index():
    from encoderfit.data import debian

    if not list(debian.LISTS.glob("*_i18n_Translation-en*")):
        pytest.skip("the apt index has no English descriptions (apt-get update -o Acquire::Languages=en)")
    splits = prepare(DataArgs(source="debtags"))
    assert splits.task == "multilabel" and len(splits.labels) > 100
    assert all(label.split("::")[0] in ("use", "works-with", "works-with-format", "field", "interface", "devel", "admin",
                                        "protocol", "network", "game", "hardware", "security", "sound", "mail", "web", "office",
                                        "accessibility", "science", "biology", "system", "junior", "culture") for label in splits.labels)
    total = sum(len(s) for s in splits.as_dict().values())
    assert 25000 < total < 30000 and abs(len(splits.test) / total - 0.1) < 0.01


@pytest.mark.slow
def test_debian_search_recipe_pairs_unique_queries_with_held_out_groups():
    from encoderfit.data import debian

    if not list(debian.LISTS.glob("*_i18n_Translation-en*")):
        pytest.skip("the apt index has no English descriptions (apt-get update -o Acquire::Languages=en)")
    splits = prepare(DataArgs(source="debian-search", text_column="query", text_pair_column="document",
                              validation_size=0.05, test_size=0.1), "embedding")
    total = sum(len(s) for s in splits.as_dict().values())
    assert 50000 < total < 65000 and abs(len(splits.test) / total - 0.1) < 0.01
    train_texts = set(splits.train["text"]) | set(splits.train["text_pair"])
    assert not train_texts & (set(splits.test["text"]) | set(splits.test["text_pair"]))  # never seen in training
    assert len(set(splits.test["text"])) == len(splits.test) and min(len(d.split()) for d in splits.test["text_pair"]) >= 15


@pytest.mark.slow
def test_lee_similarity_recipe_has_every_rated_pair():
    import importlib.util

    if importlib.util.find_spec("gensim") is None:
        pytest.skip("gensim is not installed (pip install --no-deps gensim)")
    splits = prepare(DataArgs(source="lee-similarity", label_column="score"), "similarity")
    assert sum(len(s) for s in splits.as_dict().values()) == 1225
    assert all(0 <= s <= 1 for s in splits.test["labels"])


def make_relation_rows(n: int, seed: int) -> list[dict]:
    """Two texts; the label is whether they are on the same topic: neither text alone says anything about it."""
    import random

    from conftest import TOPICS, make_text

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a = rng.choice(sorted(TOPICS))
        b = a if i % 2 else rng.choice([t for t in sorted(TOPICS) if t != a])
        rows.append({"text": make_text(rng, a), "text_pair": make_text(rng, b), "label": "same" if a == b else "different",
                     "note": f"entered by annotator {rng.randint(1, 9)} on day {i}"})
    return rows


def test_a_text_pair_column_trains_as_pairs_without_a_flag(tmp_path, tiny_model, caplog):
    from transformers import AutoTokenizer

    from conftest import read_jsonl, run_cli
    from encoderfit.runs.rundir import RunDir

    path = write_csv(tmp_path / "pairs.csv", make_relation_rows(60, seed=1), fieldnames=("text", "text_pair", "note", "label"))
    with caplog.at_level("INFO"):
        splits = prepare(DataArgs(source=str(path)))
    assert "pairs: text + text_pair (inferred from the column names; --data.text_pair_column to change)" in caplog.text
    assert "column 'note' holds text that no setting reads; --data.join_columns '[text, note]'" in caplog.text
    assert splits.columns == {"text_pair_column": "text_pair"} and "text_pair" in splits.train.column_names
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    encoded = tokenize(splits.train, tokenizer, max_length=64)
    assert all(ids.count(tokenizer.sep_token_id) == 2 for ids in encoded["input_ids"]), "a row without its second segment"

    out = tmp_path / "run"
    run_cli("train", "--data.source", str(path), "--model.name_or_path", str(tiny_model), "--output_dir", str(out),
            "--train.epochs", "1", "--train.batch_size", "16", "--report.baseline", "false")
    assert RunDir(out).config().data.text_pair_column == "text_pair"  # eval, predict and serve read the pair
    assert RunDir(out).model.info().text_pair
    rows = read_jsonl(run_cli("predict", str(out), "--input", str(path)).stdout)
    assert len(rows) == 60 and rows[0]["text_pair"] == make_relation_rows(60, seed=1)[0]["text_pair"]
    run_cli("eval", str(out))  # the run's own splits, read again from config.yaml: the same pairs (else it refuses)


@pytest.mark.parametrize("first,second", [("sentence1", "sentence2"), ("premise", "hypothesis"), ("question1", "question2"),
                                          ("question", "sentence"), ("sentence_A", "sentence_B")])
def test_the_hubs_pair_column_names_are_read_as_pairs(tmp_path, caplog, first, second):
    rows = [{first: r["text"], second: r["text_pair"], "label": r["label"]} for r in make_relation_rows(40, seed=2)]
    with caplog.at_level("INFO"):
        splits = prepare(DataArgs(source=str(write_csv(tmp_path / "d.csv", rows, fieldnames=(first, second, "label")))))
    assert splits.columns == {"text_column": first, "text_pair_column": second}
    assert splits.train.column_names == ["text", "text_pair", "labels"]
    assert f"pairs: {first} + {second} (inferred from the column names" in caplog.text


def test_an_unread_text_column_is_named_with_the_flag_that_reads_it(tmp_path, caplog):
    rows = [{"text": r["text"], "summary": r["text_pair"], "id": f"r{i}", "label": r["label"]}
            for i, r in enumerate(make_relation_rows(40, seed=3))]
    with caplog.at_level("INFO"):
        splits = prepare(DataArgs(source=str(write_csv(tmp_path / "d.csv", rows, fieldnames=("id", "text", "summary", "label")))))
    assert splits.columns == {} and "text_pair" not in splits.train.column_names
    assert ("column 'summary' holds text that no setting reads; --data.text_pair_column summary reads it as the second "
            "text of a pair; --data.join_columns '[text, summary]' joins it into the text") in caplog.text
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "'summary'" in warned[0], warned  # not the id nor the label column


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_csv_cells_none_na_null_are_text_and_only_an_empty_cell_is_missing(tmp_path, suffix):
    words = ["None", "NA", "null", "nan", "N/A", "NULL", "n/a", "#N/A", "NaN"]
    rows = [{"text": words[i % len(words)] if i < 18 else f"some text {i}", "label": ["None", "NA", "ok"][i % 3]}
            for i in range(60)]
    frame = pd.DataFrame(rows)
    splits = prepare(DataArgs(source=str(_write(frame, tmp_path / f"d{suffix}"))))
    assert splits.labels == ["NA", "None", "ok"]
    every = [*splits.train["text"], *splits.validation["text"], *splits.test["text"]]
    assert set(words) <= set(every)
    (tmp_path / "gap.csv").write_text("text,label\nhello there,a\n,b\n")
    from encoderfit.core.errors import UserError

    with pytest.raises(UserError, match="row 2: empty text in column 'text'"):
        prepare(DataArgs(source=str(tmp_path / "gap.csv")))


def test_predict_keeps_csv_texts_that_pandas_would_read_as_missing(trained_run, tmp_path):
    from conftest import read_jsonl, run_cli

    (tmp_path / "in.csv").write_text("text\nNone\nNA\nthe chef baked bread\nnull\n")
    proc = run_cli("predict", str(trained_run), "--input", str(tmp_path / "in.csv"))
    assert [r["text"] for r in read_jsonl(proc.stdout)] == ["None", "NA", "the chef baked bread", "null"]
    assert "skipped" not in proc.stderr


@pytest.mark.parametrize("ending", ["\r", "\r\n", "\n"])
def test_a_txt_file_is_split_into_lines_whatever_its_line_endings(trained_run, tmp_path, ending):
    from conftest import read_jsonl, run_cli

    texts = ["the chef baked bread", "the team won the match", "the server runs code"]
    (tmp_path / "in.txt").write_bytes(ending.join(texts).encode() + ending.encode())
    proc = run_cli("predict", str(trained_run), "--input", str(tmp_path / "in.txt"))
    assert [r["text"] for r in read_jsonl(proc.stdout)] == texts


@pytest.mark.parametrize("labels", [[0, 1, 2], ["0", "1", "food"], [True, False, True]])
def test_jsonl_labels_of_one_kind_are_read_as_today(tmp_path, labels):
    rows = [{"text": f"text number {i}", "label": labels[i % 3]} for i in range(60)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    splits = prepare(DataArgs(source=str(path)))
    assert splits.labels == sorted({str(v) for v in labels}, key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else s))
