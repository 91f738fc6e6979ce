"""How question-answering results are shown: report sections, model-card paragraphs, terminal tables."""

from __future__ import annotations

from typing import Dict, List

from ..base import Pages

CONTEXT_CHARS = 240  # context shown on each side of a wrong answer


def _marked(example: Dict, esc) -> str:
    """The context around the predicted span, the span marked."""
    context, start, end = example["context"], example["start"], example["end"]
    lo, hi = max(0, start - CONTEXT_CHARS), min(len(context), end + CONTEXT_CHARS)
    return (("…" if lo else "") + esc(context[lo:start]) + f"<mark>{esc(context[start:end])}</mark>" + esc(context[end:hi])
            + ("…" if hi < len(context) else ""))


def _rows(parts: Dict[str, Dict], f, path: str) -> List[List[str]]:
    return [[f.esc(name), str(m["n"]), f.num(m["exact_match"], f"{path}.{name}.exact_match", ".1f"),
             f.num(m["f1"], f"{path}.{name}.f1", ".1f")] for name, m in parts.items()]


class QaPages(Pages):
    def headline(self, metrics):
        return [("F1", "test.f1", ".2f"), ("exact match", "test.exact_match", ".2f")]

    def card_results(self, metrics):
        test = metrics["test"]
        return [("f1", test["f1"], "Test F1 (SQuAD)", {}), ("exact_match", test["exact_match"], "Test exact match (SQuAD)", {})]

    def intended_use(self, labels):
        return ("Answering questions with a span of a given context (extractive QA), for questions and contexts like the "
                "training data; it cannot answer from knowledge the context does not hold.")

    def plain_usage(self, cfg):
        # transformers 5 removed pipeline("question-answering"): its docs now show the model and tokenizer directly
        return ["# or plain transformers (one window; no null threshold):",
                "from transformers import AutoModelForQuestionAnswering, AutoTokenizer",
                'tok, model = AutoTokenizer.from_pretrained("path/to/model"), AutoModelForQuestionAnswering.from_pretrained("path/to/model")',
                'question, context = "Who won?", "The Broncos won the game."',
                'enc = tok(question, context, truncation="only_second", return_offsets_mapping=True, return_tensors="pt")',
                'out = model(**{k: v for k, v in enc.items() if k != "offset_mapping"})',
                "start, end = int(out.start_logits.argmax()), int(out.end_logits.argmax())",
                "answer = context[int(enc.offset_mapping[0, start, 0]) : int(enc.offset_mapping[0, end, 1])]"]

    def report_sections(self, metrics: Dict, cfg, noise: List[Dict]) -> List[str]:
        from ...core import figures as f

        test = metrics["test"]
        head = metrics.get("head") or {}
        sections = [
            "<h2>By question word (test)</h2><p>Exact match and F1 (SQuAD's: answers lower-cased, without punctuation and "
            "articles; F1 over their words; the best over the reference answers), in percent.</p>"
            + f.table(["question word", "questions", "EM", "F1"], _rows(test["by_question_word"], f, "test.by_question_word"), (0,)),
            "<h2>By answer length (test)</h2><p>Words in the first reference answer.</p>"
            + f.table(["answer words", "questions", "EM", "F1"], _rows(test["by_answer_words"], f, "test.by_answer_words"), (0,)),
        ]
        if "HasAns_f1" in test:
            threshold, rule = head.get("null_threshold"), head.get("answerability")
            curve = [[f"{p['threshold']:.3f}", f"{p['exact_match']:.1f}", f"{p['f1']:.1f}", f"{p.get('HasAns_f1', float('nan')):.1f}",
                      f"{p.get('NoAns_f1', float('nan')):.1f}"] for p in test.get("threshold_curve", [])]
            said = (f"A span is given when (1 &minus; w) &times; the answerability head's logit + w &times; the span's margin over "
                    f"the no-answer score (both standardised on validation), w = {f.num(rule['weight'], 'head.answerability.weight', '.2f')} "
                    "chosen on validation, is above the threshold fitted there "
                    f"({f.num(rule['threshold'], 'head.answerability.threshold', '.3f')}, which answered "
                    f"{f.num(rule['validation_answered'], 'head.answerability.validation_answered', '.0f')}% of the validation questions; "
                    "loaded by plain transformers, without the head, the null-score rule's threshold fitted beside it is "
                    f"{f.num(threshold, 'head.null_threshold', '.3f')})"
                    if rule else
                    "A span is given when its score beats the no-answer score by more than the threshold fitted on validation "
                    f"({'none' if threshold is None else f.num(threshold, 'head.null_threshold', '.3f')}"
                    + (f", which answered {f.num(head['validation_answered'], 'head.validation_answered', '.0f')}% of the validation "
                       "questions" if "validation_answered" in head else "") + ")")
            sections.append(
                f"<h2>Unanswerable questions (test)</h2><p>{said}: "
                f"answerable questions F1 {f.num(test['HasAns_f1'], 'test.HasAns_f1', '.1f')} "
                f"({test['HasAns_total']}), unanswerable {f.num(test['NoAns_f1'], 'test.NoAns_f1', '.1f')} ({test['NoAns_total']}). "
                "Test scores at other thresholds (chosen here on test, so for reading only):</p>"
                + f.table(["threshold", "EM", "F1", "answerable F1", "unanswerable F1"], curve))
        comparison = metrics.get("comparison") or {}
        if "model_only" in comparison:
            counts = comparison["mcnemar_exact_match"]

            def rows(key):
                return [[f.esc(d["question"]), f.esc(d["model"] or "(no answer)"), f.esc(d["baseline"] or "(no answer)"),
                         " | ".join(map(f.esc, d["answers"])) or "(unanswerable)"] for d in comparison[key]]

            header = ["question", "model", "baseline", "references"]
            sections.append(
                f"<h2>Model against baseline, question by question (test)</h2><p>Exactly right for the model only: "
                f"{counts['model_only_right']}; for the baseline only: {counts['baseline_only_right']} (McNemar's exact test "
                f"p = {counts['p_value']:.3g}). The first of each:</p><h3>Only the model</h3>"
                + (f.table(header, rows("model_only"), (0, 1, 2, 3)) if comparison["model_only"] else "<p>None.</p>")
                + "<h3>Only the baseline</h3>"
                + (f.table(header, rows("baseline_only"), (0, 1, 2, 3)) if comparison["baseline_only"] else "<p>None.</p>"))
        wrong = [[f.esc(w["question"]), f.esc(w["predicted"] or "(no answer)"), f"{w['probability']:.3f}",
                  " | ".join(map(f.esc, w["answers"])) or "(unanswerable)", _marked(w, f.esc)] for w in test["confident_wrong"]]
        sections.append("<h2>Most confident wrong answers (test)</h2><p>Answers with F1 0 against every reference, the most "
                        "probable first, the answer marked in its context.</p>"
                        + (f.table(["question", "answer", "probability", "references", "context"], wrong, (0, 1, 3, 4))
                           if wrong else "<p>None.</p>"))
        return sections

    def card_sections(self, metrics: Dict, cfg) -> List[str]:
        threshold = (metrics.get("head") or {}).get("null_threshold")
        rule = (metrics.get("head") or {}).get("answerability")
        if rule:
            return ["## Answers",
                    "The answer is a span of the context: the best start and end tokens over overlapping windows of the "
                    "context (question first), sliced from the context by character offsets. Whether to answer at all is "
                    "decided with an answerability head trained beside the span head (a linear layer on the first token's "
                    "and the mean of the sequence's vectors, in `answerability.safetensors`). No answer is given when (1 - w) x "
                    "its logit + w x the span's margin over the no-answer score, both standardised on validation, is "
                    f"{rule['threshold']:.3f} or less, with w = {rule['weight']:.2f} (both fitted on validation for the best F1; saved "
                    "in encoderfit.json's head). The directory is a plain `AutoModelForQuestionAnswering` with its "
                    "tokenizer (transformers 5 has no question-answering pipeline); loaded that way, without the head, "
                    "only the null-score rule is available: no answer when the best span's score beats the [CLS] "
                    f"start + end score by {threshold:.3f} or less (encoderfit's own rule scores better on validation "
                    "when it chose w < 1)."]
        return [
            "## Answers",
            "The answer is a span of the context: the best start and end tokens over overlapping windows of the context "
            "(question first), sliced from the context by character offsets. The model directory is a plain "
            "`AutoModelForQuestionAnswering` with its tokenizer (transformers 5 has no question-answering pipeline). "
            + ("It answers every question (no unanswerable questions in training)." if threshold is None else
               f"No answer is given when the best span's score beats the no-answer score by {threshold:.3f} or less "
               "(fitted on validation for the best F1; saved in encoderfit.json's head)."),
        ]

    def print_details(self, results: Dict, split: str, labels: List[str], console) -> None:
        m = results[split]
        words = ", ".join(f"{w} {p['f1']:.1f}" for w, p in list(m["by_question_word"].items())[:6])
        console.print(f"F1 by question word ({split}): {words}")
        if "HasAns_f1" in m:
            console.print(f"answerable F1 {m['HasAns_f1']:.1f} ({m['HasAns_total']}), unanswerable {m['NoAns_f1']:.1f} ({m['NoAns_total']})")
