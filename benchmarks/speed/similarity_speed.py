"""Training speed of scored-pair similarity (STS-B), side by side in one run: encoderfit's trainer against
sentence-transformers' own SentenceTransformerTrainer with its defaults (CoSENT, the same batch size and steps).

    python benchmarks/speed/similarity_speed.py              # needs ../shared/data/stsb; a few minutes
    python benchmarks/speed/similarity_speed.py --steps 20   # a smoke run

Both train all-MiniLM-L6-v2 from the same start on STS-B's training pairs. Only optimizer steps are timed (a
callback around each step; loading, evaluation and saving are left out), in rounds that alternate the two paths,
and each path's fastest round counts (benchmarks/speed/run.py's method). Real tokens: the pairs' tokens without padding
(the mean over the training set times the pairs a round consumed).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import write_section  # noqa: E402
from quality.public import stsb_hub_copy  # noqa: E402


def step_timer():
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def __init__(self):
            self.seconds, self.steps, self._t = 0.0, 0, None

        def on_step_begin(self, args, state, control, **kwargs):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds += time.perf_counter() - self._t
            self.steps += 1

    return Timer()


def sentence_transformers_defaults(model_dir: str, train, batch: int, steps: int, workdir: Path):
    """What a sentence-transformers user writes: the model, CoSENTLoss, the trainer with its default arguments."""
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    model = SentenceTransformer(model_dir, device="cpu")
    args = SentenceTransformerTrainingArguments(output_dir=str(workdir), per_device_train_batch_size=batch, max_steps=steps,
                                                learning_rate=2e-5, warmup_ratio=0.1, save_strategy="no", eval_strategy="no",
                                                report_to="none", disable_tqdm=True, use_cpu=True, seed=42)
    timer = step_timer()
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=CoSENTLoss(model), callbacks=[timer])
    trainer.train()
    return timer


def encoderfit_trainer(model_dir: str, train, validation, batch: int, steps: int, workdir: Path, dropout=0.0, grouped=False):
    """encoderfit's path for --task similarity: its model loading and its trainer (as `encoderfit train` builds them);
    dropout None keeps BERT's attention dropout of 0.1 (what encoderfit did before); grouped: length-grouped batches."""
    from encoderfit.core.args import ModelArgs, TrainArgs
    from encoderfit.tasks.embedding.model import build_sentence_trainer, length_grouped_sampler, load_sentence_model

    model = load_sentence_model(ModelArgs(name_or_path=model_dir, attention_dropout=dropout), 128)
    args = TrainArgs(max_steps=steps, batch_size=batch, learning_rate=2e-5, report_to=[], logging_steps=1000, eval_steps=10 * steps)
    timer = step_timer()
    trainer = build_sentence_trainer(model, "scored", {"train": train, "validation": validation}, args, "fp32", workdir, [timer],
                                     sampler=length_grouped_sampler() if grouped else None)
    trainer.args.disable_tqdm = True
    trainer.train()
    return timer


def main() -> None:
    import torch
    import transformers
    from datasets import load_dataset
    from transformers import AutoTokenizer

    from encoderfit.models.loading import resolve_name

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "stsb")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"skipped: {args.data} is absent (STS-B is not shipped; see ../shared/data/README.md)")
        return
    model_dir = resolve_name("all-MiniLM-L6-v2")
    with tempfile.TemporaryDirectory() as tmp:
        hub = stsb_hub_copy(args.data, Path(tmp) / "stsb")
        ds = load_dataset("json", data_files={s: str(hub / f"{s}.jsonl") for s in ("train", "validation")})
        tok = AutoTokenizer.from_pretrained(model_dir)
        train = ds["train"]
        real = sum(len(a) + len(b) for a, b in zip(tok(list(train["sentence1"]))["input_ids"], tok(list(train["sentence2"]))["input_ids"])) / len(train)
        ours = ds.map(lambda r: {"text": r["sentence1"], "text_pair": r["sentence2"], "labels": r["score"]},
                      remove_columns=train.column_names)
        best = {}
        for r in range(args.rounds):
            order = [("sentence-transformers defaults", None, False), ("encoderfit", 0.0, False),
                     ("encoderfit, attention dropout 0.1 (before)", None, False), ("encoderfit, length-grouped batches", 0.0, True)]
            for i, (name, dropout, grouped) in enumerate(order if r % 2 == 0 else order[::-1]):
                work = Path(tmp) / f"path{i}-{r}"
                timer = (sentence_transformers_defaults(model_dir, train, args.batch, args.steps, work) if name.startswith("sentence")
                         else encoderfit_trainer(model_dir, ours["train"], ours["validation"].select(range(64)), args.batch,
                                                 args.steps, work, dropout, grouped))
                per_step = timer.seconds / max(timer.steps, 1)
                print(f"round {r + 1}: {name}: {per_step:.3f} s/step over {timer.steps} steps", flush=True)
                best[name] = min(best.get(name, per_step), per_step)
    rows = ["| path | s per step | real tokens/s | vs sentence-transformers |", "|---|---|---|---|"]
    base = best["sentence-transformers defaults"]
    for name, per_step in best.items():
        rows.append(f"| {name} | {per_step:.3f} | {args.batch * real / per_step:,.0f} | {base / per_step:.2f}x |")
    text = ("## Similarity training speed (STS-B)\n\n" + "\n".join(rows)
            + f"\n\n`python benchmarks/speed/similarity_speed.py --steps {args.steps} --rounds {args.rounds}`: all-MiniLM-L6-v2, "
            f"{args.batch} pairs per step ({real:.1f} real tokens per pair on average), optimizer steps only, fastest round; "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"transformers {transformers.__version__}; alone on the machine.")
    write_section("similarity-speed", text)
    print(text)


if __name__ == "__main__":
    main()
