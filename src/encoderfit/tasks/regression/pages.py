"""How regression results are shown: report sections, model-card paragraphs."""

from __future__ import annotations

from typing import Dict, List

from ..base import Pages


class RegressionPages(Pages):
    def card_results(self, metrics):
        test = metrics["test"]
        return [("pearsonr", test["pearson"], "Test Pearson r", {}), ("spearmanr", test["spearman"], "Test Spearman rho", {}),
                ("mae", test["mae"], "Test MAE", {}), ("rmse", test["rmse"], "Test RMSE", {})]

    def intended_use(self, labels):
        return "Scoring text like the training data; the interval says how far off a score may be."

    def report_sections(self, metrics: Dict, cfg, noise: List[Dict]) -> List[str]:
        from ...core import figures as f

        test, interval = metrics["test"], metrics["interval"]
        points = test["points"]
        errors = [[str(e["row"]), f"{e['true']:.3f}", f"{e['predicted']:.3f}", f"{e['predicted'] - e['true']:+.3f}", f.esc(e["text"])]
                  for e in test["largest_errors"]]
        coverage_rows = [[role, f.num(interval[role]["coverage"], f"interval.{role}.coverage", ".1%"),
                          f.num(interval[role]["mean_width"], f"interval.{role}.mean_width", ".3f")]
                         for role in ("validation", "test") if interval.get(role)]
        return [
            "<h2>Predicted against true (test)</h2>"
            + f.image("predicted against true", f.scatter(points["true"], points["predicted"], "test: predicted vs true"))
            + f.image("residuals by true value", f.residuals(points["true"], points["predicted"])),
            f"<h2>Prediction intervals</h2><p>Split-conformal: the score ± {f.num(interval['halfwidth'], 'interval.halfwidth', '.3f')}, "
            f"the half-width that covers {f.num(interval['coverage'], 'interval.coverage', '.0%')} of validation residuals "
            "(finite-sample corrected); predict and serve return it as low and high. Measured coverage:</p>"
            + f.table(["split", "coverage", "mean width"], coverage_rows, (0,)),
            "<h2>Largest errors (test)</h2>"
            + f.table(["row", "true", "predicted", "error", "text"], errors, (4,)),
        ]

    def card_sections(self, metrics: Dict, cfg) -> List[str]:
        interval = metrics["interval"]
        test = interval.get("test") or {}
        return [
            "## Prediction intervals",
            f"`encoderfit predict`/`serve` return `low` and `high`: the score ± {interval['halfwidth']:.4g}, a split-conformal "
            f"interval fitted on validation for {interval['coverage']:.0%} coverage; on test it covered "
            f"{test.get('coverage', float('nan')):.1%}. The saved model answers in the target's units: with a plain pipeline use "
            '`pipeline("text-classification", model=DIR, function_to_apply="none")`.',
        ]

    def print_details(self, results: Dict, split: str, labels: List[str], console) -> None:
        interval = results[split].get("interval")
        if interval:
            console.print(f"prediction interval ({split}): ±{results['interval']['halfwidth']:.4g} for {interval['coverage_target']:.0%} "
                          f"coverage (split-conformal, fitted on validation): covers {interval['coverage']:.1%} of {split}")
