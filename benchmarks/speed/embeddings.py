"""Embeddings and search, side by side in one run:

1. throughput: `encoderfit embed`'s Predictor (token-budget batches) against `SentenceTransformer.encode` with its
   defaults (batch_size 32, sorted by length), both PyTorch fp32, and the exported ONNX fp32 and int8 models, on the
   same debian-search test texts (queries and descriptions); with each path's recall@10 and MRR@10 on the test queries;
2. search: exact (numpy) against HNSW (usearch) on corpora of random unit vectors of the model's width (the hardest
   case for an approximate index): time per query, one at a time and batched, HNSW's recall@10 against exact and
   how often each finds the planted vector, to place ANN_MIN_BYTES;
3. corpus: the same on real embeddings: every debian-search description (training ones too, ~57k) embedded by the fine-tuned model, the test queries searched exactly and through HNSW at several
   expansion_search values: HNSW's recall@10 against exact and the task's recall@10 / MRR@10 through each;
4. lee: Spearman of cosine against the Lee corpus' human similarity ratings.

    python benchmarks/speed/embeddings.py                 # needs runs/debian-search exported: encoderfit export RUN --quantize int8
    python benchmarks/speed/embeddings.py --texts 500 --sizes 10000   # a smoke run
    python benchmarks/speed/embeddings.py --parts search               # one part (each writes its own docs section)
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import write_section  # noqa: E402
from speed.run import cpu_description, interleaved  # noqa: E402

from encoderfit.runs.predictor import Predictor  # noqa: E402
from encoderfit.runs.rundir import RunDir  # noqa: E402
from encoderfit.runs.search_index import embed_texts  # noqa: E402
from encoderfit.tasks.embedding.retrieval import embedding_ranks, metrics_of  # noqa: E402

RUN = ROOT / "runs" / "debian-search"


def throughput(texts_n: int, rounds: int) -> tuple:
    from sentence_transformers import SentenceTransformer

    from encoderfit.tasks import get_task

    preds = RunDir(RUN).require_predictions("test", get_task("embedding"), ["relevant"])
    queries, docs = preds.texts, preds.pairs
    texts = list(dict.fromkeys(queries + docs))[:texts_n]
    paths = {"encoderfit": Predictor.from_pretrained(RUN), "onnx": Predictor.from_pretrained(RUN, backend="onnx"),
             "onnx-int8": Predictor.from_pretrained(RUN, backend="onnx-int8")}
    st = SentenceTransformer(str(RUN / "model"), device="cpu")
    tokens = sum(len(ids) for ids in st.tokenizer(texts, truncation=True, max_length=st.max_seq_length)["input_ids"])
    out = {}
    passes = {key: (lambda key=key, p=p: out.__setitem__(key, embed_texts(p, texts))) for key, p in paths.items()}
    passes["sentence-transformers"] = lambda: out.__setitem__("sentence-transformers", st.encode(texts, normalize_embeddings=True))
    best = interleaved(passes, rounds)
    quality = {}
    distinct = list(dict.fromkeys(queries + docs))
    for key, p in paths.items():  # retrieval quality of each backend on the whole test split (timed apart)
        vectors = dict(zip(distinct, embed_texts(p, distinct)))
        ranks = embedding_ranks(np.stack([vectors[q] for q in queries]), np.stack([vectors[d] for d in docs]), queries, docs)
        quality[key] = metrics_of(ranks, len(set(docs)))
    rows = []
    for key, seconds in best.items():
        diff = float(np.abs(out[key] - out["encoderfit"]).max())
        q = quality.get(key, quality["encoderfit"] if key == "sentence-transformers" else None)
        rows.append(f"| {TITLES[key]} | {len(texts) / seconds:,.0f} | {tokens / seconds:,.0f} | {seconds / best['encoderfit']:.2f}x | "
                    f"{diff:.1e} | {q['recall@10']:.4f} | {q['mrr@10']:.4f} |")
        print(rows[-1])
    return rows, len(texts), tokens, len(queries), len(set(docs))


def search_speed(sizes, dim: int, queries_n: int, rounds: int) -> list:
    """Exact (numpy) against HNSW (usearch, expansion_search as SearchIndex sets it) on random unit vectors, each query
    a corpus vector plus noise: per-query time for a batch and for one query at a time, HNSW's recall@10 against
    the exact top 10, and how often each finds the planted vector in its top 10."""
    from usearch.index import Index

    from encoderfit.runs.search_index import HNSW_EXPANSION_SEARCH

    rng = np.random.default_rng(0)
    rows = []
    for size in sizes:
        corpus = rng.standard_normal((size, dim), dtype=np.float32)
        corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
        planted = rng.integers(0, size, queries_n)
        noise = rng.standard_normal((queries_n, dim), dtype=np.float32) * np.float32(0.5 / np.sqrt(dim))
        queries = corpus[planted] + noise  # float32 like a model's vectors (a float64 query made numpy upcast the corpus each time)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        started = time.perf_counter()
        graph = Index(ndim=dim, metric="ip")
        graph.add(np.arange(size), corpus)
        graph.expansion_search = HNSW_EXPANSION_SEARCH
        build = time.perf_counter() - started
        found = {}
        single = queries[: max(1, queries_n // 4)]

        def exact():
            sims = queries @ corpus.T
            found["exact"] = np.argpartition(-sims, 9, axis=1)[:, :10]

        def exact_one():
            for q in single:
                np.argpartition(-(corpus @ q), 9)[:10]

        def hnsw_one():
            for q in single:
                graph.search(q, 10)

        best = interleaved({"exact": exact, "hnsw": lambda: found.__setitem__("hnsw", graph.search(queries, 10).keys),
                            "exact one": exact_one, "hnsw one": hnsw_one}, rounds)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found["exact"], found["hnsw"])])
        hit = {key: np.mean([p in row for p, row in zip(planted, found[key])]) for key in ("exact", "hnsw")}
        ms = {key: 1000 * best[key] / (queries_n if key in ("exact", "hnsw") else len(single)) for key in best}
        rows.append(f"| {size:,} | {ms['exact one']:.2f} | {ms['hnsw one']:.2f} | {ms['exact']:.2f} | {ms['hnsw']:.2f} | "
                    f"{build:.1f} | {recall:.3f} | {hit['exact']:.3f} / {hit['hnsw']:.3f} |")
        print(rows[-1], flush=True)
    return rows


def lee(max_length: int) -> list:
    """Spearman of cosine against the Lee corpus' human ratings (1,225 document pairs), CI by bootstrap over pairs."""
    from sentence_transformers import SentenceTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer

    from encoderfit.data.recipes import PACKAGED_MODELS, RECIPES
    from encoderfit.core.stats import bootstrap_ci
    from encoderfit.tasks.similarity.task import correlations

    data = RECIPES["lee-similarity"]()["train"]
    a, b, scores = list(data["text_a"]), list(data["text_b"]), np.asarray(data["score"])
    docs = list(dict.fromkeys(a + b))
    systems = {"TF-IDF cosine (fitted on the 50 documents)": None,
               "all-MiniLM-L6-v2 (base)": PACKAGED_MODELS["all-MiniLM-L6-v2"](),
               "all-MiniLM-L6-v2 fine-tuned on debian-search": str(RUN / "model"),
               "all-mpnet-base-v2 (base)": PACKAGED_MODELS["all-mpnet-base-v2"]()}
    rows = []
    for name, path in systems.items():
        if path is None:
            vectors = TfidfVectorizer(sublinear_tf=True).fit_transform(docs).toarray()
        else:
            model = SentenceTransformer(path, device="cpu")
            model.max_seq_length = max_length
            vectors = model.encode(docs, normalize_embeddings=True)
        at = {d: v for d, v in zip(docs, vectors)}
        cos = np.array([float(at[x] @ at[y]) for x, y in zip(a, b)])
        rho = correlations(cos, scores)["spearman"]
        ci = bootstrap_ci(lambda idx: correlations(cos[idx], scores[idx])["spearman"], len(cos))
        rows.append(f"| {name} | {rho:.3f} [{ci['low']:.3f}–{ci['high']:.3f}] |")
        print(rows[-1])
    return rows


def real_corpus(rounds: int) -> tuple:
    """Exact against HNSW on the debian-search model's embeddings of every description, queried by the test
    summaries: HNSW's overlap with the exact top 10, and recall@10 / MRR@10 of each query's own description."""
    from usearch.index import Index

    from encoderfit.data.recipes import debian_search
    from encoderfit.runs.search_index import HNSW_EXPANSION_SEARCH
    from encoderfit.tasks import get_task

    data = debian_search()["train"]
    docs = list(data["document"])
    own = dict(zip(data["query"], range(len(docs))))
    queries = [q for q in RunDir(RUN).require_predictions("test", get_task("embedding"), ["relevant"]).texts if q in own]
    predictor = Predictor.from_pretrained(RUN)
    started = time.perf_counter()
    corpus = embed_texts(predictor, docs)
    embed_s = time.perf_counter() - started
    q = embed_texts(predictor, queries)
    target = np.array([own[t] for t in queries])
    started = time.perf_counter()
    graph = Index(ndim=corpus.shape[1], metric="ip")
    graph.add(np.arange(len(corpus)), corpus)
    build_s = time.perf_counter() - started
    exact = np.concatenate([np.argsort(-(chunk @ corpus.T), axis=1)[:, :10] for chunk in np.array_split(q, 20)])

    def quality(top: np.ndarray) -> tuple:
        hit = top == target[:, None]
        found = hit.any(1)
        return float(found.mean()), float(np.where(found, 1.0 / (hit.argmax(1) + 1), 0.0).mean())

    rows = [f"| exact | {quality(exact)[0]:.4f} | {quality(exact)[1]:.4f} | 1.000 |"]
    for ef in sorted({64, 128, HNSW_EXPANSION_SEARCH}):
        graph.expansion_search = ef
        top = graph.search(q, 10).keys
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, top)])
        rows.append(f"| HNSW, expansion_search {ef}{' (SearchIndex)' if ef == HNSW_EXPANSION_SEARCH else ''} | "
                    f"{quality(top)[0]:.4f} | {quality(top)[1]:.4f} | {overlap:.3f} |")
        print(rows[-1], flush=True)
    graph.expansion_search = HNSW_EXPANSION_SEARCH
    single = q[:200]
    best = interleaved({"exact": lambda: [np.argpartition(-(corpus @ v), 9)[:10] for v in single],
                        "hnsw": lambda: [graph.search(v, 10) for v in single]}, rounds)
    timing = {k: 1000 * v / len(single) for k, v in best.items()}
    return rows, len(docs), len(queries), embed_s, build_s, timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=2000, help="distinct test texts embedded per path and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 300_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--parts", nargs="+", choices=["throughput", "search", "corpus", "lee"],
                        default=["throughput", "search", "corpus", "lee"],
                        help="each writes its own section of docs/benchmarks.md")
    args = parser.parse_args()
    import sentence_transformers
    import transformers
    import usearch

    started = time.time()
    command = " ".join(["python benchmarks/speed/embeddings.py", *sys.argv[1:]])
    machine = (f"on {cpu_description()}, {torch.get_num_threads()} threads, torch {torch.__version__}, transformers "
               f"{transformers.__version__}, sentence-transformers {sentence_transformers.__version__}, usearch "
               f"{usearch.__version__}, Python {platform.python_version()}")
    if "throughput" in args.parts:
        rows, n, tokens, n_queries, n_docs = throughput(args.texts, args.rounds)
        write_section("embeddings", f"""## Embeddings: throughput and ONNX

`{command}` ({time.time() - started:.0f} s so far), {machine}.

The fine-tuned MiniLM of `examples/debian-search.yaml` on {n:,} distinct debian-search test texts (queries and
descriptions, {tokens:,} tokens, max_length 128); the fastest of {args.rounds} interleaved rounds per path; "time" is
each path's over encoderfit's. Recall@10 and MRR@10: each backend's embeddings of all {n_queries:,} test queries
against all {n_docs:,} test descriptions (sentence-transformers computes the same vectors as encoderfit's PyTorch
path: the max difference column).

| path | texts/s | tokens/s | time | max diff to encoderfit | recall@10 | MRR@10 |
|---|---|---|---|---|---|---|
""" + "\n".join(rows))
    if "search" in args.parts:
        from encoderfit.runs.search_index import ANN_MIN_BYTES, HNSW_EXPANSION_SEARCH

        dim = Predictor.from_pretrained(RUN).logits(["x"]).shape[1]
        search_rows = search_speed(args.sizes, dim, args.queries, args.rounds)
        write_section("search", f"""## Search: exact against HNSW

`{command}`, {machine}.

{args.queries} queries, each a corpus vector plus noise, against corpora of random unit vectors of {dim} dimensions
(the model's width): random vectors have no clusters, the hardest case for a graph index, and beyond the planted
vector their nearest neighbours are all about equally far, so "recall@10 against exact" is a harsh measure here and
"planted found" the one a search user feels. Milliseconds per query, one query at a time (as `encoderfit search
--query` and serve's /v1/search ask) and in a batch of {args.queries} (`--queries FILE`), fastest of {args.rounds}
interleaved rounds; HNSW is usearch's graph with the expansion_search SearchIndex sets ({HNSW_EXPANSION_SEARCH}).
`--kind auto` uses HNSW once the vectors take {ANN_MIN_BYTES // 2**20} MiB ({ANN_MIN_BYTES // (4 * dim):,} documents here).

| documents | exact ms, one query | HNSW ms, one query | exact ms/query, batch | HNSW ms/query, batch | HNSW build s | HNSW recall@10 against exact | planted found in top 10: exact / HNSW |
|---|---|---|---|---|---|---|---|
""" + "\n".join(search_rows))
    if "corpus" in args.parts:
        from encoderfit.runs.search_index import ANN_MIN_BYTES

        rows, n_docs, n_queries, embed_s, build_s, ms = real_corpus(args.rounds)
        write_section("search-real", f"""## Search on real embeddings: every Debian description

`{command}`, {machine}.

The fine-tuned MiniLM of `examples/debian-search.yaml` embeds all {n_docs:,} descriptions of the debian-search recipe
(the training ones too: a larger, harder corpus than the test figures' held-out descriptions; {embed_s:.0f} s) and
the {n_queries:,} test summaries; each summary's own description is the one relevant document. HNSW: usearch's graph
(built in {build_s:.0f} s), searched at several expansion_search values. One query at a time: exact {ms['exact']:.1f} ms,
HNSW {ms['hnsw']:.2f} ms (fastest of {args.rounds} interleaved rounds of 200 queries). `--kind auto` uses HNSW once the
vectors take {ANN_MIN_BYTES // 2**20} MiB.

| search | recall@10 (own description) | MRR@10 | overlap with the exact top 10 |
|---|---|---|---|
""" + "\n".join(rows))
    if "lee" in args.parts:
        lee_rows = lee(256)
        write_section("lee", f"""## Similarity against people: the Lee corpus

`{command}`, {machine}.

The `lee-similarity` recipe: 50 news documents, 1,225 pairs with mean human ratings; each model reads 256 tokens of a
document. Spearman of the cosine with the ratings, 95% bootstrap CI over pairs (pairs share documents, so the interval
is on the narrow side).

| system | Spearman ρ [95% CI] |
|---|---|
""" + "\n".join(lee_rows))
    print(f"{command}: {time.time() - started:.0f} s")


TITLES = {"encoderfit": "encoderfit embed (Predictor, PyTorch fp32, token-budget batches)",
          "sentence-transformers": "SentenceTransformer.encode (defaults: batch_size 32)",
          "onnx": "encoderfit embed --backend onnx (fp32)",
          "onnx-int8": "encoderfit embed --backend onnx-int8"}

if __name__ == "__main__":
    main()
