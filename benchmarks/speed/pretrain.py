"""Pre-training speed, side by side in one run: encoderfit's packed MLM path against the transformers `run_mlm.py`
approach (line by line, every line padded to max_seq_length, 15% masking), on the same model and corpus.

    python benchmarks/speed/pretrain.py            # a few minutes on 2 cores; writes docs/benchmarks.md
    python benchmarks/speed/pretrain.py --quick    # a smoke run

The model is a ModernBERT `tiny` built from scratch (as `encoderfit pretrain` builds it) with a BPE tokenizer trained
here on the corpus; the corpus is the first documents of the built-in english-mix corpus, split into lines for the
line-by-line path. Steps alternate between the paths in rounds, so a slow spell of the machine falls on both.
Throughput is counted in real tokens (padding excluded); MFU is model FLOPs on real tokens over the machine's best
fp32 matrix-product rate.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import DataCollatorForLanguageModeling  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import write_section  # noqa: E402
from speed.run import matmul_peak  # noqa: E402
from encoderfit.pretraining.corpus import CORPORA  # noqa: E402
from encoderfit.pretraining.settings import PretrainModelArgs, build_model  # noqa: E402
from encoderfit.tasks import get_task  # noqa: E402
from encoderfit.tasks.mlm.task import pack  # noqa: E402
from encoderfit.pretraining.tokenizer import TokenizerArgs, train_tokenizer  # noqa: E402

BLOCK, BATCH = 128, 32


def useful_flops(model, real: int, masked: int, length: int) -> float:
    """Training FLOPs of the useful work in a batch: 6 x encoder parameters per real token, attention (12 x layers x
    length x hidden per real token), and the vocabulary projection (6 x vocab x hidden) for the masked tokens only,
    the ones whose prediction enters the loss."""
    config = model.config
    embedding = config.vocab_size * config.hidden_size
    encoder = model.num_parameters() - embedding  # the embedding lookup is not a matmul; its transpose is the head
    return 6 * encoder * real + 12 * config.num_hidden_layers * length * config.hidden_size * real + 6 * embedding * masked


def step_fn(model, batches, optimizer):
    iterator = iter(batches)

    def step():
        batch = next(iterator)
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return batch

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    steps = 6 if args.quick else 30
    documents = CORPORA["english-mix"]()
    rng = np.random.default_rng(0)
    documents = [documents[i] for i in rng.permutation(len(documents))[:3000]]
    tokenizer = train_tokenizer(documents, TokenizerArgs(vocab_size=16384), 512)
    lines = [line.strip() for doc in documents for line in doc.splitlines() if line.strip()]

    # encoderfit: packed full blocks, 30% masking, sparse prediction (the head runs on masked tokens only)
    blocks, _ = pack(documents, tokenizer, BLOCK, "english-mix")
    ours_collator = get_task("mlm").modeling.collator(tokenizer, 0.3, 0)
    ours_batches = [ours_collator([blocks[int(i)] for i in rng.choice(len(blocks), BATCH, replace=False)]) for _ in range(steps)]
    # run_mlm.py --line_by_line --pad_to_max_length: one example per line, padded to 128, 15% masking
    encoded = tokenizer(lines, padding="max_length", truncation=True, max_length=BLOCK)
    seed_collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    rows = [{"input_ids": encoded["input_ids"][i], "attention_mask": encoded["attention_mask"][i]} for i in range(len(lines))]
    seed_batches = [seed_collator([rows[int(i)] for i in rng.choice(len(rows), BATCH, replace=False)]) for _ in range(steps)]

    torch.manual_seed(0)
    ours_model, _ = build_model(PretrainModelArgs(size="tiny"), tokenizer, BLOCK)
    torch.manual_seed(0)
    seed_model, _ = build_model(PretrainModelArgs(size="tiny", overrides={"sparse_prediction": False}), tokenizer, BLOCK)
    paths = {}
    for name, model, batches in (("encoderfit", ours_model, ours_batches), ("run_mlm", seed_model, seed_batches)):
        model.train()
        paths[name] = {"step": step_fn(model, batches, torch.optim.AdamW(model.parameters(), lr=1e-4)), "times": [],
                       "real": [], "computed": [], "masked": [], "model": model}
    for r in range(steps):  # rounds: each path one step, in alternating order
        for name in (list(paths) if r % 2 == 0 else list(reversed(paths))):
            start = time.perf_counter()
            batch = paths[name]["step"]()
            paths[name]["times"].append(time.perf_counter() - start)
            mask = batch.get("attention_mask")
            paths[name]["real"].append(int(mask.sum()) if mask is not None else int(batch["input_ids"].numel()))
            paths[name]["computed"].append(int(batch["input_ids"].numel()))
            paths[name]["masked"].append(int((batch["labels"] != -100).sum()))
    peak = matmul_peak()
    results = {}
    for name, p in paths.items():
        times, real, computed = np.array(p["times"][1:]), np.array(p["real"][1:]), np.array(p["computed"][1:])
        rates = real / times
        flops = useful_flops(p["model"], real.sum(), np.sum(p["masked"][1:]), BLOCK) / times.sum()
        results[name] = {"tok_s": real.sum() / times.sum(), "tok_s_range": (rates.min(), rates.max()),
                         "padding": 1 - real.sum() / computed.sum(), "mfu": flops / (peak * 1e9), "step_s": times.mean()}
        print(name, results[name], flush=True)
    write_section("pretrain", markdown(results, peak, steps, args.quick, len(documents), ours_model), Path(args.output))


def markdown(results, peak, steps, quick, documents, model) -> str:
    ours, seed = results["encoderfit"], results["run_mlm"]
    rows = "\n".join(
        f"| {title} | {r['step_s']:.2f} | {r['padding']:.0%} | {r['tok_s']:,.0f} ({r['tok_s_range'][0]:,.0f}–{r['tok_s_range'][1]:,.0f}) | {r['mfu']:.1%} |"
        for title, r in (("encoderfit pretrain: packed blocks of 128, 30% masking, sparse MLM head", ours),
                         ("run_mlm.py --line_by_line --pad_to_max_length 128, 15% masking", seed)))
    return f"""## Pre-training throughput: `python benchmarks/speed/pretrain.py`

Produced by `python benchmarks/speed/pretrain.py`{' --quick (smoke run)' if quick else ''}. One run, {steps - 1} timed optimizer steps
per path (batch {BATCH}, first step excluded), the paths alternating step by step. Model: ModernBERT `tiny` from scratch
({model.num_parameters() / 1e6:.1f}M parameters, 16,384-token BPE vocabulary trained on the corpus), AdamW, fp32.
Corpus: {documents:,} documents drawn from `english-mix` (speeches, Moby-Dick, Debian descriptions); the line-by-line path
reads them one line per example, as `run_mlm.py --line_by_line` does. Machine: {platform.machine()}, {torch.get_num_threads()}
threads, best fp32 matmul {peak:.0f} GFLOP/s (the MFU denominator; useful FLOPs: the encoder on real tokens, the
vocabulary projection on masked tokens only); torch {torch.__version__}, transformers {transformers.__version__}.

| path | s / step | padding computed | real tokens / s (range over steps) | MFU (useful FLOPs) |
|---|---:|---:|---:|---:|
{rows}

**Ratio: {ours['tok_s'] / seed['tok_s']:.1f}x more real tokens per second** for the packed path. Its blocks are full, so no
padding is computed; the line-by-line path pads short lines (Debian descriptions, speech paragraphs) to 128. With
flash-attention on a GPU the same blocks could be unpadded instead; no GPU was lent to this measurement."""


if __name__ == "__main__":
    main()
