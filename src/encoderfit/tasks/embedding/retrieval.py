"""Retrieval metrics from ranks, the ranks of embeddings and of BM25, for the embedding task.

The unit is a (query, relevant document) row of a held-out split. Every distinct document of the split is the
corpus (so each query is ranked against all held-out documents, the others being distractors). A row's rank is
1 + the number of corpus documents scored above its relevant document, leaving out the query's other relevant
documents (the "filtered" rank: another right answer above it is not a miss); documents scored exactly the same
(BM25 gives 0 to every document sharing no word with the query) are placed above it at random, seeded, so a tie
counts as it would under an arbitrary order, never as a win. With one relevant document per
query, which the debian-search recipe has, these are exactly the usual MRR@10, recall@k and nDCG@10.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np

from ...core.device import keep_jax_on_cpu

keep_jax_on_cpu()  # bm25s (imported below, when BM25 runs) imports JAX where it is installed

CURVE_KS = (1, 2, 3, 5, 10, 20, 50, 100)
CHUNK = 1024  # queries scored at once (a chunk x corpus matrix of floats)


def corpus_of(queries: Sequence[str], documents: Sequence[str]) -> Tuple[List[str], np.ndarray, Dict[str, List[int]]]:
    """(distinct documents, each row's document index, query text -> indices of its relevant documents)."""
    index: Dict[str, int] = {}
    for doc in documents:
        index.setdefault(doc, len(index))
    doc_of = np.asarray([index[d] for d in documents], dtype=np.int64)
    relevant: Dict[str, List[int]] = {}
    for query, d in zip(queries, doc_of):
        relevant.setdefault(query, []).append(int(d))
    return list(index), doc_of, relevant


def filtered_ranks(scores_of, queries: Sequence[str], documents: Sequence[str]) -> np.ndarray:
    """Each row's filtered rank; `scores_of(rows)` gives those rows' scores against the corpus (rows x corpus)."""
    _, doc_of, relevant = corpus_of(queries, documents)
    ranks = np.empty(len(queries), dtype=np.int64)
    rng = np.random.default_rng(0)
    for start in range(0, len(queries), CHUNK):
        rows = np.arange(start, min(start + CHUNK, len(queries)))
        scores = np.asarray(scores_of(rows), dtype=np.float64)
        for j, i in enumerate(rows):
            own = scores[j, doc_of[i]]
            row = scores[j].copy()
            row[[d for d in relevant[queries[i]] if d != doc_of[i]]] = -np.inf  # the query's other right answers
            ties = int((row == own).sum()) - 1
            ranks[i] = 1 + int((row > own).sum()) + (int(rng.integers(0, ties + 1)) if ties else 0)
    return ranks


def embedding_ranks(query_vectors: np.ndarray, doc_vectors_by_row: np.ndarray, queries: Sequence[str],
                    documents: Sequence[str]) -> np.ndarray:
    """Filtered ranks by cosine similarity (the vectors are normalised here, whatever the model did)."""
    unit = lambda v: v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)  # noqa: E731
    _, doc_of, _ = corpus_of(queries, documents)
    corpus = np.zeros((int(doc_of.max()) + 1 if len(doc_of) else 0, doc_vectors_by_row.shape[1]), dtype=np.float32)
    corpus[doc_of] = doc_vectors_by_row
    q, corpus = unit(query_vectors.astype(np.float32)), unit(corpus)
    return filtered_ranks(lambda rows: q[rows] @ corpus.T, queries, documents)


def bm25_ranks(queries: Sequence[str], documents: Sequence[str]) -> np.ndarray:
    """Filtered ranks by BM25 (bm25s: Lucene's variant, k1 1.5, b 0.75, English stop words, lower-cased words)."""
    import bm25s

    docs, _, _ = corpus_of(queries, documents)
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(docs, stopwords="en", show_progress=False), show_progress=False)
    tokens = bm25s.tokenize(list(queries), stopwords="en", return_ids=False, show_progress=False)
    empty = np.zeros(len(docs), dtype=np.float32)  # a query of stop words only matches nothing
    return filtered_ranks(lambda rows: np.stack([retriever.get_scores(tokens[i]) if tokens[i] else empty for i in rows]),
                          queries, documents)


def per_row(ranks: np.ndarray) -> Dict[str, np.ndarray]:
    """Each row's contribution to every metric (the metric is their mean)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    top10 = ranks <= 10
    return {"mrr@10": np.where(top10, 1.0 / ranks, 0.0), "recall@1": (ranks <= 1).astype(float),
            "recall@10": top10.astype(float), "recall@100": (ranks <= 100).astype(float),
            "ndcg@10": np.where(top10, 1.0 / np.log2(ranks + 1.0), 0.0)}


def metrics_of(ranks: np.ndarray, corpus_size: int) -> Dict[str, float]:
    rows = per_row(ranks)
    out = {key: float(values.mean()) if len(values) else 0.0 for key, values in rows.items()}
    out.update({"n": int(len(ranks)), "corpus": int(corpus_size), "median_rank": float(np.median(ranks)) if len(ranks) else 0.0,
                "recall_curve": {str(k): float((np.asarray(ranks) <= k).mean()) if len(ranks) else 0.0 for k in CURVE_KS}})
    return out


def changed_queries(queries: Sequence[str], documents: Sequence[str], before: np.ndarray, after: np.ndarray,
                    worse: bool = True, limit: int = 20) -> List[Dict]:
    """The rows whose rank moved most (worse, or better) between two models, worst first."""
    delta = np.asarray(after, dtype=np.int64) - np.asarray(before, dtype=np.int64)
    order = np.argsort(-delta if worse else delta, kind="stable")
    keep = [i for i in order[:limit] if (delta[i] > 0 if worse else delta[i] < 0)]
    return [{"query": queries[i], "document": documents[i][:300], "rank_before": int(before[i]), "rank_after": int(after[i])}
            for i in keep]

