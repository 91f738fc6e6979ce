"""How single-label classification results are shown: report sections, model-card paragraphs, terminal tables."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ..base import Pages


def abstention_note(threshold: Dict[str, Any], split: str) -> Optional[str]:
    """One sentence on the threshold and what it does on `split`."""
    row = threshold.get(split)
    if threshold.get("value") is None:
        target = threshold.get("target_accuracy")
        return "abstention threshold: none" + (f" (no threshold reaches accuracy {target} on validation)" if target else "")
    if row and row.get("accuracy") is not None:
        from ...core.stats import with_ci

        return (f"abstention threshold {threshold['value']:.2f} (target accuracy {threshold['target_accuracy']}, chosen on "
                f"{threshold['chosen_on']}): on {split} answers {row['coverage']:.1%} with accuracy "
                f"{with_ci(row['accuracy'], row.get('accuracy_ci'))}")
    return None


class ClassificationPages(Pages):
    def headline(self, metrics):
        return [("test accuracy", "test.accuracy", ".4f"), ("test macro-F1", "test.f1_macro", ".4f")]

    def card_results(self, metrics):
        test = metrics["test"]
        return [("accuracy", test["accuracy"], "Test accuracy", {}),
                ("f1", test["f1_macro"], "Test macro-F1", {"average": "macro"}),
                ("ece", test["calibration"]["after"]["ece"], "Test ECE (calibrated)", {})]

    def intended_use(self, labels):
        return (f"Classifying text like the training data into {len(labels)} labels. Labels outside that set are never "
                "predicted; use the abstention threshold to route uncertain texts to a person.")

    def report_sections(self, metrics: Dict, cfg, noise: List[Dict]) -> List[str]:
        from ...core import figures as f

        test, cal, threshold = metrics["test"], metrics["test"]["calibration"], metrics["threshold"]
        labels, at = cfg.labels, threshold.get("test")
        per_class = [[f.esc(n), *(f.num(m[k], f"test.per_class.{n}.{k}") for k in ("precision", "recall", "f1")), str(m["support"])]
                     for n, m in test["per_class"].items()]
        ci = test.get("ci") or {}
        calib = [[name, *(f.num(cal[key][k], f"test.calibration.{key}.{k}") for k in ("ece", "brier", "nll")),
                  f"{f.num((ci.get(f'ece_{key}') or {}).get('low'), f'test.ci.ece_{key}.low')}–"
                  f"{f.num((ci.get(f'ece_{key}') or {}).get('high'), f'test.ci.ece_{key}.high')}"]
                 for name, key in (("before", "before"), ("after (T = %.3f)" % metrics["calibration"]["temperature"], "after"))]
        scaling = metrics["calibration"].get("decision")
        scaling_text = (f" {scaling.capitalize()} ({metrics['calibration']['cv_folds']}-fold cross-validation on validation: held-out "
                        f"NLL {metrics['calibration']['cv_nll_unscaled']:.4f} at T = 1, {metrics['calibration']['cv_nll_scaled']:.4f} "
                        "scaled).") if scaling else ""
        confused = [[f.esc(p["true"]), f.esc(p["predicted"]), str(p["count"])] for p in test["confused_pairs"]]
        mistakes = [[str(m["row"]), f.esc(m["label"]), f.esc(m["predicted"]), f"{m['confidence']:.3f}", f.esc(m["text"])]
                    for m in test["confident_mistakes"]]
        noisy = [[r["row"], f.esc(r["label"]), f.esc(r["predicted"]), r["confidence"], f.esc(str(r["text"])[:300])]
                 for r in noise[: cfg.report.max_examples]]
        thr_text = ("no threshold reaches the target accuracy on validation" if threshold["value"] is None and threshold["target_accuracy"]
                    else f"lowest threshold whose validation accuracy on answered texts reaches {threshold['target_accuracy']}")
        baseline = metrics.get("baseline")
        return [
            "<h2>Confusion matrix (test)</h2>" + f.image("confusion matrix", f.confusion(test["confusion_matrix"]["matrix"], labels)),
            "<h2>Per class (test)</h2>" + f.table(["label", "precision", "recall", "F1", "support"], per_class, (0,))
            + f.image("per-class F1", f.per_label({n: m["f1"] for n, m in test["per_class"].items()},
                                                  {n: m["f1"] for n, m in baseline["per_class"].items()} if baseline else None,
                                                  "per-class F1 (test)")),
            f"<h2>Calibration (test)</h2><p>Temperature chosen on the validation split; predict and serve apply it.{f.esc(scaling_text)}</p>"
            + f.table(["", "ECE (15 bins)", "Brier", "NLL", "ECE 95% CI"], calib, (0,)) + f.image("reliability diagram", f.reliability(cal)),
            f"<h2>Coverage and abstention</h2><p>Threshold: {f.num(threshold['value'], 'threshold.value', '.2f')} ({thr_text}). "
            f"On test it answers {f.num(at['coverage'] if at else None, 'threshold.test.coverage', '.1%')} of texts with accuracy "
            f"{f.num(at['accuracy'] if at else None, 'threshold.test.accuracy')}"
            + (f" (95% CI {f.num(at['accuracy_ci']['low'], 'threshold.test.accuracy_ci.low')}–"
               f"{f.num(at['accuracy_ci']['high'], 'threshold.test.accuracy_ci.high')})" if at and at.get("accuracy_ci") else "")
            + "; the rest would be UNKNOWN.</p>"
            + f.image("coverage curve", f.coverage(test["sweep"], threshold["value"])),
            "<h2>Most confused label pairs (test)</h2>" + (f.table(["true", "predicted", "count"], confused, (0, 1)) if confused else "<p>None.</p>"),
            "<h2>Most confident mistakes (test)</h2>"
            + (f.table(["row", "label", "predicted", "confidence", "text"], mistakes, (1, 2, 4)) if mistakes else "<p>None.</p>"),
            f"<h2>Suspected label noise (train)</h2><p>{metrics.get('label_noise', {}).get('count', 0)} training examples whose given "
            f"label the model contradicts with probability ≥ {cfg.report.noise_confidence}; all are in label_noise.csv.</p>"
            + (f.table(["row", "given", "model says", "confidence", "text"], noisy, (1, 2, 4)) if noisy else ""),
        ]

    def card_sections(self, metrics: Dict, cfg) -> List[str]:
        cal, threshold = metrics["test"]["calibration"], metrics["threshold"]
        at = threshold.get("test")
        threshold_text = (
            f"Threshold **{threshold['value']:.2f}** (lowest reaching accuracy {threshold['target_accuracy']} on validation): on test it "
            f"answers {at['coverage']:.1%} of texts with accuracy {at['accuracy']:.4f}; `Predictor.from_pretrained(dir, abstain=True)` "
            "returns UNKNOWN below it."
            if threshold["value"] is not None and at and at["accuracy"] is not None
            else "No abstention threshold was chosen."
        )
        decision = metrics["calibration"].get("decision")
        return [
            "## Calibration and abstention",
            f"Temperature {metrics['calibration']['temperature']:.3f}, chosen on validation (stored in `encoderfit.json`"
            f"{'; ' + decision if decision else ''}). "
            f"Test ECE {cal['before']['ece']:.4f} before, {cal['after']['ece']:.4f} after; Brier {cal['before']['brier']:.4f} → "
            f"{cal['after']['brier']:.4f}.",
            "",
            threshold_text,
        ]

    def print_details(self, results: Dict, split: str, labels: List[str], console) -> None:
        from ...core.stats import with_ci
        from ...core.tables import per_label_table, square_table

        m = results[split]
        console.print(per_label_table("per class", {n: {**v} for n, v in m["per_class"].items()}, ("precision", "recall", "f1", "support")))
        console.print(square_table("confusion matrix (rows: true, columns: predicted)", m["confusion_matrix"]["labels"],
                                   m["confusion_matrix"]["matrix"]))
        cal = m["calibration"]
        console.print(
            f"calibration ({split}): temperature {results['calibration']['temperature']:.3f} "
            f"({results['calibration']['fitted_on']}); ECE {cal['before']['ece']:.4f} -> {cal['after']['ece']:.4f}, "
            f"Brier {cal['before']['brier']:.4f} -> {cal['after']['brier']:.4f}, NLL {cal['before']['nll']:.4f} -> {cal['after']['nll']:.4f}"
        )
        ci = m.get("ci") or {}
        if ci.get("ece_after"):
            console.print(f"test ECE with 95% CI: before {with_ci(cal['before']['ece'], ci.get('ece_before'))}, after "
                          f"{with_ci(cal['after']['ece'], ci.get('ece_after'))}")
        note = abstention_note(results["threshold"], split)
        if note:
            console.print(note)
