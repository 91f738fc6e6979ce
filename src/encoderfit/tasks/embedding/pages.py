"""How embedding (retrieval) results are shown: the fine-tuned model beside BM25 and the base model, the recall@k
curve, and the queries fine-tuning made worse."""

from __future__ import annotations

from typing import Dict, List

from ..base import Pages

RETRIEVAL = (("mrr@10", "MRR@10"), ("recall@1", "recall@1"), ("recall@10", "recall@10"), ("recall@100", "recall@100"),
             ("ndcg@10", "nDCG@10"), ("median_rank", "median rank"))
SIMILARITY = (("spearman", "Spearman ρ"), ("pearson", "Pearson r"))


def _columns(metrics: Dict):
    return SIMILARITY if "spearman" in metrics["test"] else RETRIEVAL


def _rows(metrics: Dict) -> List[tuple]:
    """(name, metrics, metrics.json path) of the three systems scored on test."""
    baseline = metrics.get("baseline") or {}
    rows = [("fine-tuned model", metrics["test"], "test")]
    if baseline.get("base_model"):
        rows.append((f"base model ({baseline['base_model'].get('model', '')})", baseline["base_model"], "baseline.base_model"))
    if baseline:
        rows.append((baseline.get("model", "baseline").split(" (")[0], baseline, "baseline"))
    return rows


def recall_curve(rows: List[tuple]) -> str:
    from ...core import figures as f

    fig, ax = f.plt.subplots(figsize=(6, 3.6))
    for name, m, _ in rows:
        ks = [int(k) for k in m["recall_curve"]]
        ax.plot(ks, [m["recall_curve"][str(k)] for k in ks], marker="o", label=name)
    ax.set(xscale="log", xlabel="k (documents returned)", ylabel="recall@k", ylim=(0, 1.02),
           title=f"recall@k on {rows[0][1]['n']} held-out queries, corpus of {rows[0][1]['corpus']}")
    ax.legend(fontsize=8)
    return f.png(fig)


def _moved(rows: List[Dict]) -> List[List[str]]:
    from ...core import figures as f

    return [[f.esc(r["query"]), str(r["rank_before"]), str(r["rank_after"]), f.esc(r["document"])] for r in rows]


class EmbeddingPages(Pages):
    def plain_usage(self, cfg):
        return ["# or sentence-transformers (the same normalised vectors):", "from sentence_transformers import SentenceTransformer",
                'model = SentenceTransformer("path/to/model")', 'vectors = model.encode(["a query", "a document"])']

    def intended_use(self, labels):
        return ("Embedding queries and documents for semantic search and similarity (cosine), for text like the "
                "training pairs; compare with BM25 on your own queries before replacing keyword search.")

    def headline(self, metrics):
        return [("test MRR@10", "test.mrr@10", ".4f"), ("test recall@10", "test.recall@10", ".4f")]

    def report_sections(self, metrics: Dict, cfg, noise: List[Dict]) -> List[str]:
        from ...core import figures as f

        rows, columns = _rows(metrics), _columns(metrics)
        table = [[name, *(f.num(m.get(key), f"{path}.{key}", ".1f" if key == "median_rank" else ".4f") for key, _ in columns)]
                 for name, m, path in rows]
        if columns is SIMILARITY:
            return ["<h2>Similarity against the baselines (test)</h2><p>Correlation of each system's cosine similarity with "
                    "the rated score of each held-out pair.</p>" + f.table(["system", *(t for _, t in columns)], table, (0,))]
        sections = [
            "<h2>Retrieval against BM25 and the base model (test)</h2><p>Each held-out query ranks every held-out document; "
            "a row's rank leaves out the query's other relevant documents.</p>"
            + f.table(["system", *(title for _, title in columns)], table, (0,))
            + f.image("recall at k", recall_curve(rows)),
        ]
        base = ((metrics.get("comparison") or {}).get("base_model")) or {}
        if base:
            diff = base["differences"]["mrr@10"]
            sections.append(
                f"<h2>What fine-tuning changed</h2><p>MRR@10 {diff['difference']:+.4f} against the base model (95% CI "
                f"{diff['low']:+.4f} to {diff['high']:+.4f}, paired bootstrap p = {diff['p_value']:.3g}); "
                f"{base['better']} queries ranked their document higher, {base['worse']} lower.</p>"
                "<h3>Queries that got worse</h3>"
                + f.table(["query", "rank before", "rank after", "relevant document"], _moved(base["got_worse"]), (0, 3)))
        return sections

    def card_sections(self, metrics: Dict, cfg) -> List[str]:
        rows, columns = _rows(metrics), [c for c in _columns(metrics) if c[0] != "median_rank"]
        lines = ["## Results (test)", "", "| system | " + " | ".join(t for _, t in columns) + " |", "|---" * (len(columns) + 1) + "|"]
        lines += [f"| {name} | " + " | ".join(f"{m[k]:.4f}" for k, _ in columns) + " |" for name, m, _ in rows]
        lines += ["", "Load it with `SentenceTransformer(DIR)` (normalised embeddings; cosine similarity); "
                  "`encoderfit embed` and `encoderfit search` use the same vectors."]
        return ["\n".join(lines)]

    def print_details(self, results: Dict, split: str, labels: List[str], console) -> None:
        base = (results.get("baseline") or {}).get("base_model")
        if base:
            key, title = SIMILARITY[0] if "spearman" in base else RETRIEVAL[0]
            console.print(f"base model before fine-tuning ({base.get('model')}): {title} {base[key]:.4f}")
        moved = (results.get("comparison") or {}).get("base_model")
        if moved and "better" in moved:
            console.print(f"fine-tuning moved {moved['better']} queries' documents up and {moved['worse']} down")
