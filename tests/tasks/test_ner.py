"""Token classification (NER): input formats, tag schemes, sub-word alignment, windows, offsets, metrics against
seqeval and people-made labels, the plain pipeline, export, serve and bad input, on the tiny model."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_ner_rows, run_cli, write_jsonl

from encoderfit.core.args import DataArgs
from encoderfit.runs.splits import prepare
from encoderfit.tasks.ner.tags import convert, detect, entities

GOLD = Path(__file__).parents[1] / "data" / "gold-entities.jsonl"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def write_conll(path: Path, rows: list[dict]) -> Path:
    lines = ["-DOCSTART- -X- -X- O", ""]
    for r in rows:
        lines += [f"{t} NN X {g}" for t, g in zip(r["tokens"], r["tags"])] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def to_spans(row: dict) -> dict:
    """The same sentence as raw text with character spans."""
    text = " ".join(row["tokens"])
    starts = np.cumsum([0] + [len(t) + 1 for t in row["tokens"]])
    spans = [{"start": int(starts[a]), "end": int(starts[b - 1] + len(row["tokens"][b - 1])), "label": kind}
             for kind, a, b in entities(row["tags"], "iob2")[0]]
    return {"text": text, "spans": spans}


# ---------------------------------------------------------------- formats and schemes


def test_every_input_format_reads_the_same(tmp_path):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value

    rows = make_ner_rows(40, seed=3)
    names = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    hub = Dataset.from_dict({"tokens": [r["tokens"] for r in rows], "ner_tags": [[names.index(t) for t in r["tags"]] for r in rows]},
                            features=Features({"tokens": Sequence(Value("string")), "ner_tags": Sequence(ClassLabel(names=names))}))
    DatasetDict({"train": hub}).save_to_disk(str(tmp_path / "hub"))
    sources = {"conll": write_conll(tmp_path / "train.conll", rows), "jsonl": write_jsonl(tmp_path / "tokens.jsonl", rows),
               "spans": write_jsonl(tmp_path / "spans.jsonl", [to_spans(r) for r in rows]), "hub": tmp_path / "hub"}
    read = {}
    for name, source in sources.items():
        splits = prepare(DataArgs(source=str(source), dedupe=False, split_seed=1), "ner")
        read[name] = sorted(zip(splits.train["text"], [tuple(r) for r in splits.train["labels"]]))
        assert splits.labels == names
    assert read["conll"] == read["jsonl"] == read["spans"] == read["hub"]
    assert len(read["conll"]) == 32


@pytest.mark.parametrize("scheme,tags", [
    ("iob2", "B-PER I-PER O B-LOC B-LOC I-LOC"),
    ("iob1", "I-PER I-PER O I-LOC B-LOC I-LOC"),
    ("bioes", "B-PER E-PER O S-LOC B-LOC E-LOC"),
    ("bioes", "B-PER L-PER O U-LOC B-LOC L-LOC"),  # BILOU
])
def test_schemes_detected_and_converted(scheme, tags):
    rows = [tags.split()]
    assert detect(rows, "x") == scheme
    assert convert(rows, None, "repair", "x")[0] == [[("PER", 0, 2), ("LOC", 3, 4), ("LOC", 4, 6)]]


def test_invalid_tags_repaired_or_refused():
    from encoderfit.core.errors import UserError

    rows = [["O", "B-PER"], ["O", "I-PER", "I-PER", "O"]]
    assert convert(rows, "iob2", "repair", "x")[0][1] == [("PER", 1, 3)]
    with pytest.raises(UserError, match="row 2"):
        convert(rows, "iob2", "error", "x")
    assert convert([["PER", "PER", "O", "LOC"]], "io", "repair", "x")[0] == [[("PER", 0, 2), ("LOC", 3, 4)]]


# ---------------------------------------------------------------- alignment and windows


def wordpiece_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    corpus = [" ".join(r["tokens"]) for r in make_ner_rows(200, seed=4)]
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=120, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]")


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_alignment_labels_each_word_once_at_its_first_subword(kind, tiny_model, tmp_path):
    from transformers import AutoTokenizer

    from encoderfit.tasks.base.words import IGNORE, aligned_windows, join_tokens, split_words

    tokenizer = wordpiece_tokenizer(tmp_path) if kind == "wordpiece" else AutoTokenizer.from_pretrained(tiny_model)
    texts = ["Zorgon-Prime visited  café Ünïcode 🙂 in new york", " ".join(["alice", "travelled", "far"])]
    words = [split_words(texts[0]), join_tokens(texts[1].split())[1]]
    tags = [list(range(1, len(w) + 1)) for w in words]  # a distinct tag per word
    continuation = {i: -i for i in range(1, 20)}
    for subwords in ("first", "all"):
        enc = aligned_windows(tokenizer, texts, words, tags, 512, 0, subwords, continuation)
        for row, expected in zip(enc["labels"], tags):
            firsts = [t for t in row if t > 0]
            assert firsts == expected  # every word once, in order, at a sub-word holding its first character
            rest = [t for t in row if t not in firsts]
            assert all(t == IGNORE for t in rest) if subwords == "first" else any(t < 0 for t in rest) or len(rest) == 2


def test_windows_tag_every_word_of_a_long_text(ner_run):
    from encoderfit.runs.predictor import Predictor
    from encoderfit.tasks.base.words import split_words

    model = Predictor.from_pretrained(ner_run)
    assert model.max_length == 24
    text = " ".join(["the alice saw rome and new york with bob"] * 12)  # 108 words, far over 24 sub-words
    scores = model.logits([text])[0]
    assert len(scores.words) == len(split_words(text)) == 108
    assert (np.abs(scores.logits).sum(1) > 0).all()  # no word left without a sub-word's logits
    report = model.input_report([text])
    assert report["treatment"] == "windows" and report["windows_per_text"] > 4
    found = model.predict(text)["entities"]
    assert sum(e["label"] == "PER" for e in found) >= 20  # the repeated names are found in every window


# ---------------------------------------------------------------- the trained toy model


def test_training_learns_entities_with_a_crf_baseline(ner_run):
    metrics = json.loads((ner_run / "metrics.json").read_text())
    test = metrics["test"]
    assert test["f1"] > 0.9 and set(test["per_type"]) == {"LOC", "PER"}
    assert test["ci"]["f1"]["low"] <= test["f1"] <= test["ci"]["f1"]["high"]
    assert "CRF" in metrics["baseline"]["model"] and metrics["baseline"]["f1"] > 0.5
    assert metrics["comparison"]["verdict"]
    assert sum(test["errors"].values()) >= test["entities"]["true"]
    report = (ner_run / "report.html").read_text()
    assert "Per entity type" in report and "Entity errors" in report


def test_seqeval_agrees_with_bootstrap_counts(ner_run):
    from encoderfit.runs.rundir import RunDir
    from encoderfit.tasks import get_task

    run, task = RunDir(ner_run), get_task("ner")
    cfg = run.config()
    preds = run.predictions("test", task, cfg.labels)
    fns, _ = task.scoring.interval_metrics(preds, cfg.labels, {})
    every = np.arange(len(preds.texts))
    test = json.loads((ner_run / "metrics.json").read_text())["test"]
    for key in ("f1", "precision", "recall", "token_accuracy"):
        assert fns[key](every) == pytest.approx(test[key])


def test_offsets_point_into_the_original_string(ner_run):
    from encoderfit.runs.predictor import Predictor

    model = Predictor.from_pretrained(ner_run)
    texts = ["Today  alice 🙂 went to   café in new   york , with bob", "ünïcode bob\tand carol in rome!"]
    for text, result in zip(texts, model.predict(texts)):
        assert result["entities"]
        for e in result["entities"]:
            assert text[e["start"]:e["end"]] == e["text"] and 0 < e["score"] <= 1
    labels = {(e["text"], e["label"]) for e in model.predict(texts[0])["entities"]}
    assert ("alice", "PER") in labels and ("bob", "PER") in labels


def test_plain_pipeline_agrees(ner_run):
    from transformers import pipeline

    from encoderfit.runs.predictor import Predictor

    texts = [" ".join(r["tokens"]) for r in make_ner_rows(40, seed=9)]
    ours = Predictor.from_pretrained(ner_run).predict(texts)
    pipe = pipeline("token-classification", model=str(ner_run / "model"), aggregation_strategy="simple")
    same = 0
    for text, mine, theirs in zip(texts, ours, pipe(texts)):
        strip = lambda s, e: (s + len(text[s:e]) - len(text[s:e].lstrip()), e)  # noqa: E731 (byte-level offsets keep the space)
        a = {(e["label"], e["start"], e["end"]) for e in mine["entities"]}
        b = {(e["entity_group"], *strip(e["start"], e["end"])) for e in theirs}
        same += a == b
    assert same / len(texts) >= 0.9


def test_export_parity_at_entity_level(ner_run):
    run_cli("export", str(ner_run), "--quantize", "int8")
    parity = json.loads((ner_run / "onnx" / "parity.json").read_text())
    assert parity["fp32"]["max_abs_logit_diff"] < 1e-4 and parity["fp32"]["entity_set_agreement"] == 1.0
    assert parity["int8"]["tag_agreement"] > 0.9
    out = run_cli("predict", str(ner_run), "--backend", "onnx", input="alice saw new york\n").stdout
    assert [e["label"] for e in json.loads(out)["entities"]] == ["PER", "LOC"]


def test_serve_returns_entities(ner_run):
    import httpx
    from conftest import serving_in_thread

    with serving_in_thread(ner_run) as url:
        reply = httpx.post(f"{url}/v1/predict", json={"texts": ["bob and carol saw oslo"]}, timeout=30)
        assert reply.status_code == 200
        entities = reply.json()["results"][0]["entities"]
        assert {e["text"] for e in entities} == {"bob", "carol", "oslo"}
        assert httpx.post(f"{url}/v1/predict", json={"texts": [""]}, timeout=30).status_code == 422
        if CHROMIUM is None and not os.environ.get("CI"):
            return  # Debian chromium not installed here (CI installs it)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            page.goto(url + "/")
            page.fill("#text", "bob and carol saw oslo")
            page.click("#go")
            page.wait_for_function("document.getElementById('label').textContent.length > 1 && "
                                   "document.getElementById('label').textContent !== '…'")
            shown, bars = page.inner_text("#label"), page.locator(".bar").count()
            browser.close()
        assert "bob (PER)" in shown and "oslo (LOC)" in shown and bars == 3


# ---------------------------------------------------------------- people-made labels


def test_gold_file_is_consistent():
    rows = [json.loads(line) for line in GOLD.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(rows) >= 30
    for row in rows:
        for span in row["spans"]:
            assert row["text"][span["start"]:span["end"]] == span["words"]


@pytest.mark.slow
def test_bbc_entities_model_against_people_made_labels():
    """The MiniLM model trained on spaCy's labels (examples/bbc-entities.yaml, run first) scored on sentences tagged
    by hand: it must find most of the entities people marked."""
    run = Path("runs/bbc-entities")
    if not run.is_dir():
        pytest.skip("train examples/bbc-entities.yaml first")
    result = run_cli("eval", str(run), "--data", str(GOLD), "--output", "/tmp/gold-eval.json")
    assert result.returncode == 0
    scored = json.loads(Path("/tmp/gold-eval.json").read_text())
    assert scored["f1"] > 0.6


# ---------------------------------------------------------------- bad input


BAD = {
    "lengths": ([{"tokens": ["a", "b"], "tags": ["O"]}], "2 tokens but 1 tags"),
    "scheme": ([{"tokens": ["a", "b"], "tags": ["O", "PERSON"]}], "scheme is unknown"),
    "overlap": ([{"text": "new york city", "spans": [{"start": 0, "end": 8, "label": "LOC"}, {"start": 4, "end": 13, "label": "LOC"}]}],
                "overlap"),
    "outside": ([{"text": "bob", "spans": [{"start": 0, "end": 9, "label": "PER"}]}], "falls outside the text"),
    "empty": ([{"tokens": [], "tags": []}], "empty sentence"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_clear_line(case, tmp_path, tiny_model):
    rows, message = BAD[case]
    good = make_ner_rows(30, seed=5)
    data = write_jsonl(tmp_path / "train.jsonl", (good if "tokens" in rows[0] else [to_spans(r) for r in good]) + rows)
    out = tmp_path / "run"
    result = run_cli("train", "--task", "ner", "--data.source", str(data), "--model.name_or_path", str(tiny_model),
                     "--output_dir", str(out), check=False)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert message in last and "Traceback" not in result.stderr and not out.exists()
    assert "row 31" in last or case == "scheme"


def test_type_seen_only_in_validation(tmp_path, tiny_model):
    write_jsonl(tmp_path / "train.jsonl", make_ner_rows(30, seed=6))
    write_jsonl(tmp_path / "validation.jsonl", [{"tokens": ["acme", "inc"], "tags": ["B-ORG", "I-ORG"]}])
    write_jsonl(tmp_path / "test.jsonl", make_ner_rows(5, seed=7))
    result = run_cli("train", "--task", "ner", "--data.source", str(tmp_path), "--model.name_or_path", str(tiny_model),
                     "--output_dir", str(tmp_path / "run"), check=False)
    assert result.returncode == 2 and "'ORG' does not occur in the training split" in result.stderr.strip().splitlines()[-1]
