"""Question-answering inference speed, side by side in one run on the same model and questions: encoderfit's
Predictor (length-batched windows under a token budget) against plain transformers as its docs show it (transformers
5 removed pipeline("question-answering")): one question at a time, and batches padded to max_length, argmax start
and end in one window; then the exported ONNX fp32 and int8 models; with the share of answers equal to encoderfit's.

    python benchmarks/speed/qa_speed.py runs/public/squad-v1.1      # a trained QA run whose evaluation saved its test questions

Each timing is the best of `--repeats` passes over the questions (after one warm-up pass), alone on the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import best_of, write_section  # noqa: E402


def main() -> None:
    import numpy as np
    import torch
    import transformers
    from transformers import AutoModelForQuestionAnswering

    from encoderfit.runs.predictor import Predictor
    from encoderfit.runs.rundir import RunDir
    from encoderfit.tasks import get_task
    from encoderfit.tasks.qa.metrics import per_question

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args()

    run = RunDir(args.run)
    info = run.model.info()
    preds = run.predictions("test", get_task("qa"), info.labels)
    questions, contexts = preds.texts[: args.questions], preds.pairs[: args.questions]
    n = len(questions)
    ours = Predictor.from_pretrained(args.run)
    plain = AutoModelForQuestionAnswering.from_pretrained(run.model.path).eval()
    tok = ours.tokenizer
    stride = (info.windows or {}).get("overlap", 64)

    def plain_answers(batch_size):
        """The transformers docs' way: question + context padded to max_length, argmax start and end."""
        answers = []
        for b in range(0, n, batch_size):
            enc = tok(questions[b : b + batch_size], contexts[b : b + batch_size], truncation="only_second",
                      max_length=info.max_length, padding="max_length", return_offsets_mapping=True, return_tensors="pt")
            offsets = enc.pop("offset_mapping")
            with torch.inference_mode():
                out = plain(**enc)
            for k, (s, e) in enumerate(zip(out.start_logits.argmax(-1).tolist(), out.end_logits.argmax(-1).tolist())):
                context = contexts[b + k]
                answers.append(context[int(offsets[k, s, 0]) : int(offsets[k, e, 1])].strip() if s <= e else "")
        return answers

    rows, answers = [], {}
    seconds, result = best_of(lambda: ours.predict(questions, contexts), args.repeats)
    answers["encoderfit"] = [(r["answer"] or "").strip() for r in result]
    rows.append(("encoderfit Predictor (torch)", seconds))
    for label, batch in ((f"plain transformers, padded to {info.max_length}, one at a time", 1),
                         (f"plain transformers, padded to {info.max_length}, batches of {args.batch_size}", args.batch_size)):
        seconds, result = best_of(lambda b=batch: plain_answers(b), args.repeats)
        answers[label] = result
        rows.append((label, seconds))
    if (args.run / "onnx" / "model.onnx").is_file():
        for backend in ("onnx", "onnx-int8"):
            if backend == "onnx-int8" and not (args.run / "onnx" / "model.int8.onnx").is_file():
                continue
            model = Predictor.from_pretrained(args.run, backend=backend)
            seconds, result = best_of(lambda m=model: m.predict(questions, contexts), args.repeats)
            answers[f"encoderfit {backend}"] = [(r["answer"] or "").strip() for r in result]
            rows.append((f"encoderfit Predictor ({backend})", seconds))
    base = rows[0][1]
    keys = ["encoderfit", *[k for k in answers if k != "encoderfit"]]
    references = [list(t["text"]) for t in preds.targets[:n]]
    lines = ["| path | questions/s | vs encoderfit | answers equal to encoderfit's (torch) | F1 / EM on these questions |",
             "|---|---|---|---|---|"]
    for (label, seconds), key in zip(rows, keys):
        agree = float(np.mean([a == b for a, b in zip(answers[key], answers["encoderfit"])]))
        scored = per_question(answers[key], references)
        lines.append(f"| {label} | {n / seconds:.1f} | {base / seconds:.2f}x | {agree:.1%} | "
                     f"{100 * scored['f1'].mean():.1f} / {100 * scored['em'].mean():.1f} |")
    text = ("## Question answering: inference speed\n\n"
            f"`python benchmarks/speed/qa_speed.py {args.run}`: {n} SQuAD test questions of the run (max_length {info.max_length}, "
            f"stride {stride}), best of {args.repeats} passes after a warm-up, alone on the machine "
            f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads), "
            f"torch {torch.__version__}, transformers {transformers.__version__}. Plain transformers runs with the same "
            "max_length; it reads one window per question (no stride) and argmax start and end, as transformers' docs do.\n\n" + "\n".join(lines))
    write_section("qa-speed", text)
    print(text)


if __name__ == "__main__":
    main()
