"""The VADER lexicon as an anchor for the regression recipes: its compound score against the human ratings.

    python benchmarks/quality/vader_lexicon.py [--run runs/vader-movies-scores]

1. On each full corpus (every snippet): Pearson and Spearman of VADER's compound score with the mean human rating.
2. On the test split of `vader-movies-scores` exactly as encoderfit makes it: the lexicon beside the run's TF-IDF +
   ridge baseline and the fine-tuned model (read from the run's metrics.json), with a bootstrap 95% CI of Pearson r.
Needs the vaderSentiment package (the `demo` extra). Writes its section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np  # noqa: E402
from scipy.stats import pearsonr, spearmanr  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import write_section  # noqa: E402
from encoderfit.core.args import DataArgs  # noqa: E402
from encoderfit.runs.splits import prepare  # noqa: E402
from encoderfit.data.recipes import VADER_CORPORA, vader_snippets  # noqa: E402

RESAMPLES = 2000


def lexicon_scores(texts):
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return np.array([analyzer.polarity_scores(t)["compound"] for t in texts])


def pearson_ci(y, x, seed: int = 0) -> tuple:
    rng = np.random.default_rng(seed)
    draws = [pearsonr(y[i], x[i])[0] for i in (rng.integers(0, len(y), len(y)) for _ in range(RESAMPLES))]
    return tuple(np.quantile(draws, [0.025, 0.975]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(ROOT / "runs" / "vader-movies-scores"))
    args = parser.parse_args()
    corpora = []
    for name in VADER_CORPORA:
        rows = vader_snippets(name)
        human = np.array([s for _, s in rows])
        compound = lexicon_scores([t for t, _ in rows])
        corpora.append((name, len(rows), pearsonr(human, compound)[0], spearmanr(human, compound)[0]))
        print(f"[vader] {name}: n={len(rows)} pearson={corpora[-1][2]:.3f}", flush=True)

    test = prepare(DataArgs(source="vader-movies-scores"), "regression", {"regression": {"target_range": [-4, 4]}}).test
    y = np.asarray(test["labels"], dtype=np.float64)
    compound = lexicon_scores(test["text"])
    lo, hi = pearson_ci(y, compound)
    lines = [
        "## The VADER lexicon against human ratings: `python benchmarks/quality/vader_lexicon.py`", "",
        "VADER's compound score (vaderSentiment 3.3.2) against the mean human rating of every snippet of each corpus "
        "(Hutto & Gilbert 2014's ground truth, -4..+4):", "",
        "| corpus | snippets | Pearson r | Spearman ρ |", "| --- | ---: | ---: | ---: |",
        *[f"| {name} | {n} | {p:.3f} | {s:.3f} |" for name, n, p, s in corpora], "",
        f"On the test split of `vader-movies-scores` as encoderfit makes it ({len(y)} snippets, split seed 42): the lexicon's "
        f"Pearson r is **{pearsonr(y, compound)[0]:.3f}** (95% bootstrap CI {lo:.3f}-{hi:.3f}, {RESAMPLES} resamples), "
        f"Spearman {spearmanr(y, compound)[0]:.3f}.",
    ]
    metrics_file = Path(args.run) / "metrics.json"
    if metrics_file.is_file():
        m = json.loads(metrics_file.read_text())
        lines += ["", f"Same split, from {metrics_file}: fine-tuned model Pearson {m['test']['pearson']:.3f}, "
                      f"TF-IDF + ridge {m['baseline']['pearson']:.3f}."]
    write_section("vader_lexicon", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
