"""How token-classification results are shown: report sections, model-card paragraphs, terminal tables."""

from __future__ import annotations

import re
from typing import Dict, List

from ..base import Pages

MACHINE_LABELS = ("bbc-entities",)  # recipes whose tags a model made: results measure agreement with it


def _marked_html(text: str, esc) -> str:
    """[[words|TYPE]] -> the words highlighted with their type."""
    parts = re.split(r"\[\[(.*?)\|([^\]|]*)\]\]", text)
    out = []
    for k, part in enumerate(parts):
        if k % 3 == 0:
            out.append(esc(part))
        elif k % 3 == 1:
            out.append(f"<mark>{esc(part)}<sub>{esc(parts[k + 1])}</sub></mark>")
    return "".join(out)


def machine_note(cfg) -> str:
    if cfg.data.source in MACHINE_LABELS:
        return (f"<p><b>Machine labels.</b> The {cfg.data.source} tags were made by spaCy's en_core_web_sm pipeline, not by "
                "people: these scores measure agreement with that statistical model (a distillation), not accuracy.</p>")
    return ""


class NerPages(Pages):
    def headline(self, metrics):
        return [("entity F1", "test.f1", ".4f"), ("token accuracy", "test.token_accuracy", ".4f")]

    def card_results(self, metrics):
        test = metrics["test"]
        return [("f1", test["f1"], "Test entity F1 (micro, strict)", {}), ("precision", test["precision"], "Test entity precision", {}),
                ("recall", test["recall"], "Test entity recall", {}), ("accuracy", test["token_accuracy"], "Test token accuracy", {})]

    def intended_use(self, labels):
        types = sorted({label[2:] for label in labels if label != "O"})
        return (f"Finding entities of {len(types)} types ({', '.join(types[:12])}{', ...' if len(types) > 12 else ''}) in text "
                "like the training data, with character offsets. Types rare in training are found poorly (see the per-type F1).")

    def report_sections(self, metrics: Dict, cfg, noise: List[Dict]) -> List[str]:
        from ...core import figures as f

        test, baseline = metrics["test"], metrics.get("baseline")
        types = sorted(test["per_type"], key=lambda t: -test["per_type"][t]["support"])
        rows = [[f.esc(t), *(f.num(test["per_type"][t][k], f"test.per_type.{t}.{k}") for k in ("precision", "recall", "f1")),
                 f.num(baseline["per_type"][t]["f1"], f"baseline.per_type.{t}.f1") if baseline else "",
                 str(test["per_type"][t]["support"])] for t in types]
        errors = [[kind, str(count)] for kind, count in test["errors"].items()]
        confusion = test["type_confusion"]
        calib = test["calibration"]
        bins = [[f"{b['lo']:.1f}-{b['hi']:.1f}", f"{b['confidence']:.3f}", f"{b['accuracy']:.3f}", str(b["count"])] for b in calib["reliability"]]
        mistakes = [[f.esc(m["predicted"]), f"{m['score']:.3f}", _marked_html(m["text"], f.esc),
                     "<br>".join(_marked_html(t, f.esc) for t in m["true"]) or "(no entity there)"] for m in test["confident_mistakes"]]
        return [
            "<h2>Per entity type (test)</h2>" + machine_note(cfg)
            + "<p>Entity-level, strict: an entity counts only with exactly its words and its type (seqeval, IOB2).</p>"
            + f.table(["type", "precision", "recall", "F1", "baseline F1", "support"], rows, (0,))
            + f.image("per-type F1", f.per_label({t: test["per_type"][t]["f1"] for t in types},
                                                 {t: baseline["per_type"][t]["f1"] for t in types} if baseline else None,
                                                 "per-type entity F1 (test), most frequent types first", baseline_label="CRF baseline")),
            "<h2>Entity errors (test)</h2><p>Each true entity is correct, of the wrong type (same words), of the wrong "
            "boundary (overlapping, same type), wrong in both, or missed; a predicted entity overlapping none is spurious.</p>"
            + f.table(["outcome", "entities"], errors, (0,))
            + "<h3>Type confusion</h3><p>Rows: true type (or spurious); columns: the type predicted over it (or missed).</p>"
            + f.table(["true \\ predicted", *map(f.esc, confusion["columns"])],
                      [[f.esc(r), *map(str, row)] for r, row in zip(confusion["rows"], confusion["matrix"])], (0,)),
            f"<h2>Entity confidence (test)</h2><p>An entity's score is the mean probability of its words' tags. Against the share "
            f"of entities exactly right: ECE {f.num(calib['ece'], 'test.calibration.ece')} over {calib['entities']} predicted entities"
            + (f" after temperature scaling (T = {calib['temperature']:.3f}, fitted on validation; ECE before "
               f"{f.num(calib['ece_before'], 'test.calibration.ece_before')})" if calib.get("temperature", 1.0) != 1.0 else "")
            + ".</p>"
            + f.table(["score", "mean score", "exactly right", "entities"], bins),
            "<h2>Most confident mistakes (test)</h2><p>Predicted entities that are not exactly a true one, with the true "
            "entities overlapping them.</p>"
            + (f.table(["predicted", "score", "prediction", "truth"], mistakes, (0, 2, 3)) if mistakes else "<p>None.</p>"),
        ]

    def card_sections(self, metrics: Dict, cfg) -> List[str]:
        note = machine_note(cfg).replace("<p>", "").replace("</p>", "").replace("<b>", "**").replace("</b>", "**")
        return [
            "## Entities",
            "Words are tagged IOB2 at their first sub-word; texts longer than the maximum length are read in overlapping "
            "windows, so every word is tagged. `encoderfit predict`/`serve` return entities with character offsets into the "
            "input; `transformers.pipeline(\"token-classification\", aggregation_strategy=\"simple\")` loads the model too.",
            *([note] if note else []),
        ]

    def print_details(self, results: Dict, split: str, labels: List[str], console) -> None:
        from ...core.tables import per_label_table

        m = results[split]
        console.print(per_label_table(f"per entity type ({split})", m["per_type"], ("precision", "recall", "f1", "support")))
        console.print(f"entity errors ({split}): " + ", ".join(f"{k} {v}" for k, v in m["errors"].items())
                      + f"; entity confidence ECE {m['calibration']['ece']:.4f}")
