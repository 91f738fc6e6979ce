"""Embeddings, similarity and search (--task embedding / similarity) on the tiny ModernBERT: every data shape
trains and its loss falls, batches hold no duplicate, metrics on hand-made cases, SentenceTransformer(DIR) agrees,
embed/search/serve answer, ONNX parity, bad input."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from conftest import EMBED_TRAIN, TOPICS, make_search_rows, make_text, read_jsonl, run_cli, serving_in_thread, write_jsonl

from encoderfit.tasks.embedding.retrieval import embedding_ranks, filtered_ranks, metrics_of


def losses(run) -> list[float]:
    return [h["loss"] for h in json.loads((run / "logs" / "history.json").read_text()) if "loss" in h]


# ---------------------------------------------------------------- metrics on hand-made cases


def test_filtered_ranks_and_metrics_known_exactly():
    # 3 queries, 4 documents; q0's document 0 is top (rank 1); q1's document 1 has two documents above it (rank 3);
    # q2 has two relevant documents (2 and 3): the other one above it does not count against it.
    scores = np.array([[0.9, 0.1, 0.2, 0.3],
                       [0.8, 0.5, 0.7, 0.1],
                       [0.1, 0.2, 0.4, 0.9],
                       [0.1, 0.2, 0.4, 0.9]])
    queries = ["q0", "q1", "q2", "q2"]
    docs = ["d0", "d1", "d2", "d3"]
    ranks = filtered_ranks(lambda rows: scores[rows], queries, docs)
    assert ranks.tolist() == [1, 3, 1, 1]
    m = metrics_of(ranks, 4)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3 + 1 + 1) / 4)
    assert m["recall@1"] == pytest.approx(3 / 4)
    assert m["recall@10"] == 1.0
    assert m["ndcg@10"] == pytest.approx((1 + 1 / np.log2(4) + 1 + 1) / 4)
    far = metrics_of(np.array([11, 101]), 200)
    assert far["mrr@10"] == 0 and far["recall@10"] == 0 and far["recall@100"] == 0.5


def test_ties_are_never_wins():
    # every document scores the same (a query sharing no word with any): the rank is drawn over the tie, never 1 always
    queries, docs = [f"q{i}" for i in range(200)], [f"d{i}" for i in range(200)]
    ranks = filtered_ranks(lambda rows: np.zeros((len(rows), 200)), queries, docs)
    assert 1 <= ranks.min() and ranks.max() <= 200
    assert 80 < ranks.mean() < 120  # uniform over 1..200: mean 100.5


def test_embedding_ranks_use_cosine_whatever_the_norms():
    q = np.array([[1.0, 0.0], [0.0, 3.0]])
    d = np.array([[5.0, 0.1], [0.1, 0.2]])  # scaled: the dot product would rank differently than the cosine
    assert embedding_ranks(q, d, ["a", "b"], ["x", "y"]).tolist() == [1, 1]


# ---------------------------------------------------------------- training


def test_pairs_train_evaluate_and_load_in_sentence_transformers(embedding_run):
    from sentence_transformers import SentenceTransformer

    from encoderfit.runs.predictor import Predictor

    history = losses(embedding_run)
    assert history[-1] < 0.7 * history[0]
    metrics = json.loads((embedding_run / "metrics.json").read_text())
    test = metrics["test"]
    assert test["n"] == 40 and test["corpus"] == 40
    assert metrics["inputs"]["test"]["texts"] == 80  # queries and documents, each read as one text
    assert 0 <= test["ci"]["mrr@10"]["low"] <= test["mrr@10"] <= test["ci"]["mrr@10"]["high"] <= 1
    assert metrics["baseline"]["base_model"]["mrr@10"] < test["mrr@10"]  # fine-tuning beat the random-init start
    assert {"mrr@10", "recall@10"} <= set(metrics["comparison"]["differences"])
    assert metrics["comparison"]["base_model"]["better"] > metrics["comparison"]["base_model"]["worse"]
    page = (embedding_run / "report.html").read_text()
    assert "Retrieval against BM25" in page and "Queries that got worse" in page
    texts = ["match league stadium", "garlic soup dinner", "kernel compiler code"]
    plain = SentenceTransformer(str(embedding_run / "model"), device="cpu").encode(texts)
    ours = Predictor.from_pretrained(embedding_run).logits(texts)
    assert np.abs(plain - ours).max() < 1e-5
    assert np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)


def test_triplets_and_judgements_train(tmp_path, tiny_model):
    rows = make_search_rows(120, 1)
    rng = random.Random(3)
    triplets = [{**r, "negative": rng.choice(rows)["document"]} for r in rows]
    out = tmp_path / "triplets"
    run_cli("train", "--task", "embedding", "--data.source", str(write_jsonl(tmp_path / "t.jsonl", triplets)),
            "--model.name_or_path", str(tiny_model), "--output_dir", str(out), "--train.epochs", "3",
            "--report.baseline", "false", *EMBED_TRAIN)
    assert losses(out)[-1] < losses(out)[0]
    judged = [{"query": r["query"], "document": r["document"], "relevant": 1} for r in rows]
    judged += [{"query": r["query"], "document": rows[(i + 1) % len(rows)]["document"], "relevant": 0} for i, r in enumerate(rows)]
    out = tmp_path / "judged"
    proc = run_cli("train", "--task", "embedding", "--data.source", str(write_jsonl(tmp_path / "j.jsonl", judged)),
                   "--model.name_or_path", str(tiny_model), "--output_dir", str(out), "--train.max_steps", "4",
                   "--report.baseline", "false", *EMBED_TRAIN)
    assert "120 judged-relevant pairs kept of 240" in proc.stderr


def test_similarity_scored_pairs_train(tmp_path, tiny_model):
    rng = random.Random(4)
    scored = []
    for _ in range(400):  # the score: the share of the second text's words from the first text's topic
        a, other = rng.sample(sorted(TOPICS), 2)
        share = rng.choice([0, 0.25, 0.5, 0.75, 1])
        words = rng.sample(TOPICS[a], round(8 * share)) + rng.sample(TOPICS[other], 8 - round(8 * share))
        rng.shuffle(words)
        scored.append({"text_a": make_text(rng, a), "text_b": " ".join(words), "score": share})
    out = tmp_path / "similarity"
    run_cli("train", "--task", "similarity", "--data.source", str(write_jsonl(tmp_path / "s.jsonl", scored)),
            "--model.name_or_path", str(tiny_model), "--output_dir", str(out), "--train.epochs", "4", *EMBED_TRAIN)
    assert losses(out)[-1] < losses(out)[0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["spearman"] > 0.5 > metrics["baseline"]["base_model"]["spearman"]
    assert "TF-IDF" in metrics["baseline"]["model"]


def test_batches_hold_no_duplicate_text(tmp_path, tiny_model):
    from datasets import Dataset

    from encoderfit.core.args import ModelArgs, TrainArgs
    from encoderfit.tasks import get_task

    task = get_task("embedding")
    rows = [{"text": f"query {i % 5}", "text_pair": f"document {i}"} for i in range(40)]  # each query 8 times
    ds = Dataset.from_list(rows)
    train = TrainArgs(batch_size=4, epochs=1, report_to=[])
    net = task.modeling.load_model(ModelArgs(name_or_path=str(tiny_model)), ["relevant"], 32)
    trainer = task.modeling.build_trainer(net, None, ["relevant"], {}, {"train": ds, "validation": ds}, train, "fp32", tmp_path)
    batches = list(trainer.get_train_dataloader().batch_sampler)
    assert batches and all(len({rows[i]["text"] for i in b}) == len(b) for b in batches)


# ---------------------------------------------------------------- use


def test_embed_search_and_index_reuse(embedding_run, search_data, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("match league stadium\n\ngarlic soup dinner\n")
    run_cli("embed", str(embedding_run), "--input", str(texts), "--output", str(tmp_path / "v.npy"))
    vectors = np.load(tmp_path / "v.npy")
    assert vectors.shape[0] == 2 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    corpus = write_jsonl(tmp_path / "docs.jsonl", [{"id": f"d{i}", "text": r["document"]} for i, r in enumerate(read_jsonl(search_data.read_text()))])
    query = read_jsonl(search_data.read_text())[7]["query"]
    first = run_cli("search", str(embedding_run), "--corpus", str(corpus), "--query", query, "--top_k", "5")
    hits = read_jsonl(first.stdout)[0]["results"]
    assert len(hits) == 5 and [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    again = run_cli("search", str(embedding_run), "--corpus", str(corpus), "--query", query, "--top_k", "5")
    assert "reusing the index" in again.stderr and read_jsonl(again.stdout)[0]["results"] == hits
    with open(corpus, "a") as handle:
        handle.write(json.dumps({"id": "new", "text": "a document added later"}) + "\n")
    changed = run_cli("search", str(embedding_run), "--corpus", str(corpus), "--query", query, "--kind", "hnsw")
    assert "rebuilding" in changed.stderr
    assert read_jsonl(changed.stdout)[0]["results"][0]["id"] == hits[0]["id"]  # HNSW finds the exact top on 401 documents


def test_serve_embed_and_search(embedding_run, search_data, tmp_path):
    import httpx

    from encoderfit.runs.predictor import Predictor
    from encoderfit.runs.search_index import index_for

    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n".join(r["document"] for r in read_jsonl(search_data.read_text())) + "\n")
    index = index_for(Predictor.from_pretrained(embedding_run), embedding_run, corpus, "torch", tmp_path / "index")
    with serving_in_thread(embedding_run, index=index) as url:
        got = httpx.post(url + "/v1/embed", json={"texts": ["match league", "garlic soup"]}).json()
        assert got["dimension"] == 64 and len(got["embeddings"]) == 2
        found = httpx.post(url + "/v1/search", json={"query": "match league", "top_k": 3}).json()["results"][0]
        assert len(found) == 3 and found[0]["score"] >= found[-1]["score"]
        refused = httpx.post(url + "/v1/search", json={"query": "x", "top_k": 100000})
        assert refused.status_code == 422 and "top_k" in refused.json()["error"]
        assert httpx.post(url + "/v1/embed", json={"texts": [" "]}).status_code == 422


def test_export_parity_on_cosine(embedding_run, tmp_path):
    out = tmp_path / "onnx"
    run_cli("export", str(embedding_run), "--quantize", "int8", "--output", str(out))
    parity = json.loads((out / "parity.json").read_text())
    assert parity["fp32"]["min_cosine"] > 0.99999 and parity["int8"]["min_cosine"] > 0.99


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("rows,task,message", [
    ([{"query": "a", "document": "b"}, {"query": "", "document": "c"}], "embedding", "row 2: empty text in column 'query'"),
    ([{"query": "a", "document": "b", "relevant": 0}, {"query": "c", "document": "d", "relevant": 1}], "embedding",
     "row 1: query 'a' has no relevant document"),
    ([{"text_a": "a", "text_b": "b", "score": 0.5}, {"text_a": "c", "text_b": "d", "score": 3}], "similarity",
     "row 2: score 3 in column 'score' is outside [0, 1]"),
    ([{"text_a": "a", "text_b": "b", "score": "high"}], "similarity", "row 1: 'high' in column 'score' is not a number"),
])
def test_bad_pairs_are_one_line_errors(tmp_path, tiny_model, rows, task, message):
    data = write_jsonl(tmp_path / "bad.jsonl", rows * 1)
    proc = run_cli("train", "--task", task, "--data.source", str(data), "--model.name_or_path", str(tiny_model),
                   "--output_dir", str(tmp_path / "out"), check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_search_without_corpus_file(embedding_run, tmp_path):
    proc = run_cli("search", str(embedding_run), "--corpus", str(tmp_path / "missing.jsonl"), "--query", "x", check=False)
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- classification on embeddings (SetFit)


def test_contrastive_pairs_are_balanced_and_logistic_head_matches_sklearn():
    from sklearn.linear_model import LogisticRegression

    from encoderfit.core.calibration import softmax
    from encoderfit.tasks.classification.setfit import contrastive_pairs, fit_logistic

    texts, labels = [f"t{i}" for i in range(12)], [i % 3 for i in range(12)]
    pairs = contrastive_pairs(texts, labels, 4, seed=0)
    assert len(pairs) == 48 and sum(pairs["labels"]) == 24
    cls = {t: y for t, y in zip(texts, labels)}
    assert all((cls[a] == cls[b]) == bool(t) for a, b, t in zip(pairs["text"], pairs["text_pair"], pairs["labels"]))
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 5)), np.arange(40) % 2  # binary: sklearn keeps one row of weights
    weight, bias, c = fit_logistic(x, y, x, y, 2)
    reference = LogisticRegression(C=c, max_iter=2000).fit(x, y).predict_proba(x)
    assert np.allclose(softmax(x @ weight.T + bias, 1.0), reference, atol=1e-5)


def test_embedding_head_classification_trains_predicts_and_exports(tmp_path, tiny_model, toy_csv):
    from encoderfit.runs.predictor import Predictor

    out = tmp_path / "setfit"
    run_cli("train", "--data.source", str(toy_csv), "--model.name_or_path", str(tiny_model), "--model.head", "embedding",
            "--output_dir", str(out), "--train.epochs", "1", "--train.contrastive_pairs", "4", "--report.baseline", "false", *EMBED_TRAIN)
    modules = json.loads((out / "model" / "modules.json").read_text())  # the head: a Dense module (tests/runs/test_artifacts.py)
    assert modules[-1]["type"].endswith("Dense") and (out / "model" / modules[-1]["path"] / "model.safetensors").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.9
    model = Predictor.from_pretrained(out)
    assert model.predict("goal team coach league player")["label"] == "sport"
    run_cli("export", str(out), "--output", str(tmp_path / "onnx"))
    assert json.loads((tmp_path / "onnx" / "parity.json").read_text())["fp32"]["max_abs_logit_diff"] < 1e-4
