"""How multi-label results are shown: report sections, model-card paragraphs, terminal tables."""

from __future__ import annotations

from typing import Dict, List

from ..base import Pages

PER_LABEL_ROWS = 60  # the report's per-label table shows the most frequent labels first, up to this many


class MultilabelPages(Pages):
    def card_results(self, metrics):
        test = metrics["test"]
        return [("f1", test["f1_micro"], "Test micro-F1", {"average": "micro"}),
                ("f1", test["f1_macro"], "Test macro-F1", {"average": "macro"}),
                ("accuracy", test["subset_accuracy"], "Test subset accuracy", {})]

    def intended_use(self, labels):
        return (f"Tagging text like the training data with any subset of {len(labels)} labels. Labels rare in training "
                "are predicted poorly (see the per-label F1).")

    def report_sections(self, metrics: Dict, cfg, noise: List[Dict]) -> List[str]:
        from ...core import figures as f

        test, baseline, head = metrics["test"], metrics.get("baseline"), metrics["thresholds"]
        by_support = sorted(test["per_label"].items(), key=lambda kv: -kv[1]["support"])
        rows = [[f.esc(n), *(f.num(m[k], f"test.per_label.{n}.{k}") for k in ("precision", "recall", "f1")),
                 f.num(baseline["per_label"][n]["f1"], f"baseline.per_label.{n}.f1") if baseline else "",
                 f"{m['threshold']:.2f}", str(m["support"])] for n, m in by_support[:PER_LABEL_ROWS]]
        shown = dict(by_support[:PER_LABEL_ROWS])
        cardinality = [[name, f.num(test["cardinality"][key], f"test.cardinality.{key}", ".3f")]
                       for name, key in (("true labels per text", "true"), ("predicted labels per text", "predicted"),
                                         ("texts with no true label", "empty_true"), ("texts given no label", "empty_predicted"))]
        pairs = lambda key: [[f.esc(p["a"]), f.esc(p["b"]), str(p["count"])] for p in test[key]]  # noqa: E731
        mistakes = [[f.esc(m["label"]), m["kind"], f"{m['probability']:.3f}", f.esc(m["text"])] for m in test["confident_mistakes"]]
        return [
            "<h2>Per label (test)</h2>"
            f"<p>Decision thresholds were chosen on validation, one per label ({head['tuned']} labels with at least "
            f"{head['min_positives']} validation positives); the rarer ones share the micro-F1-optimal threshold "
            f"{f.num(head['global_threshold'], 'thresholds.global_threshold', '.2f')}. Most frequent labels first"
            f"{'' if len(by_support) <= PER_LABEL_ROWS else f' ({PER_LABEL_ROWS} of {len(by_support)} shown; all in metrics.json)'}.</p>"
            + f.table(["label", "precision", "recall", "F1", "baseline F1", "threshold", "support"], rows, (0,))
            + f.image("per-label F1", f.per_label({n: m["f1"] for n, m in shown.items()},
                                                  {n: baseline["per_label"][n]["f1"] for n in shown} if baseline else None,
                                                  "per-label F1 (test), most frequent labels")),
            "<h2>Label cardinality (test)</h2>" + f.table(["", "value"], cardinality, (0,)),
            f"<h2>Calibration (test)</h2><p>Each label's probability as a yes/no forecast: mean ECE over labels "
            f"{f.num(test['calibration']['ece_mean'], 'test.calibration.ece_mean')}, ECE of all label decisions pooled "
            f"{f.num(test['calibration']['ece_pooled'], 'test.calibration.ece_pooled')}.</p>",
            "<h2>Most confused labels (test)</h2><p>Predicted the first label where the second was the true one, in the same text.</p>"
            + (f.table(["predicted", "instead of", "count"], pairs("confused_pairs"), (0, 1)) if test["confused_pairs"] else "<p>None.</p>"),
            "<h2>Labels missed together (test)</h2>"
            + (f.table(["label", "label", "texts missing both"], pairs("co_missed"), (0, 1)) if test["co_missed"] else "<p>None.</p>"),
            "<h2>Most confident mistakes (test)</h2>"
            + (f.table(["label", "mistake", "probability", "text"], mistakes, (0, 1, 3)) if mistakes else "<p>None.</p>"),
        ]

    def card_sections(self, metrics: Dict, cfg) -> List[str]:
        head = metrics["thresholds"]
        return [
            "## Decision thresholds",
            f"One threshold per label, chosen on validation to maximise that label's F1 ({head['tuned']} labels); labels with "
            f"fewer than {head['min_positives']} validation positives share {head['global_threshold']:.2f}, the threshold that "
            "maximises micro-F1. They are stored in `encoderfit.json` and applied by `encoderfit predict`/`serve`. A plain "
            "`transformers` pipeline returns each label's sigmoid probability (`top_k=None`) and knows nothing of them.",
        ]

    def print_details(self, results: Dict, split: str, labels: List[str], console) -> None:
        from ...core.tables import per_label_table

        m = results[split]
        frequent = dict(sorted(m["per_label"].items(), key=lambda kv: -kv[1]["support"])[:20])
        title = f"per label ({min(20, len(labels))} most frequent of {len(labels)})"
        console.print(per_label_table(title, frequent, ("precision", "recall", "f1", "threshold", "support")))
        c = m["cardinality"]
        console.print(f"labels per text ({split}): true {c['true']:.3f}, predicted {c['predicted']:.3f}; "
                      f"calibration: mean per-label ECE {m['calibration']['ece_mean']:.4f}")
