"""encoderfit against the transformers Trainer on one GPU, on the same split and model: issue 43's measurements.

    python benchmarks/gpu/gpu.py             # on a GPU: ModernBERT-base shape, BBC News paragraphs; writes docs/benchmarks.md's gpu section
    python benchmarks/gpu/gpu.py --smoke     # a tiny ModernBERT on the CPU in about a minute: checks the script itself
    bash benchmarks/gpu/run.sh              # on the GPU machine, after `make gpu-check`: the CUDA tests, then this

What it measures, in one process, each after the same data and the same random-init model (ModernBERT-base shape,
~134M parameters with a 30k BPE vocabulary trained on the texts; random init: throughput does not depend on weights):
1. Training, 1 epoch, batches of 64 texts (and, for encoderfit, a run with a 64k-token budget per step):
   - `encoderfit train` (in this process: its defaults on this device; train.packing as it resolves here);
   - the Trainer as the ModernBERT Modal example does it: `datasets.map(tokenizer(padding=True, max_length=512))`,
     bf16 (where native), adamw_torch_fused;
   - the Trainer tuned: dynamic padding to a multiple of 8, group_by_length, bf16, adamw_torch_fused.
   Each: real (non-pad) tokens/s over its optimizer steps (encoderfit: train_runtime less its evaluation and checkpoint
   seconds), the padding share of the tokens it computed, MFU (model FLOPs on real tokens: 6 x non-embedding
   parameters per token plus 12 x layers x hidden x length per token of attention, counted as full attention, over
   the chip's dense bf16 peak), peak GPU memory, torch.compile's compile seconds (torch._dynamo's own count); for
   encoderfit also the whole command's time split into training steps and the rest (data, baseline, evaluation, ...).
2. Prediction on the validation and test texts: encoderfit's Predictor against `pipeline("text-classification")` in
   fp32 and bf16 (batch 64): texts/s, and the share of texts on which each gives the Predictor's label.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}  # dense TFLOP/s, per spec sheet


def paragraphs(limit: int, seed: int = 0):
    """BBC News paragraphs of 5+ words labelled by their article's topic, split by article 80/10/10: {split: rows}."""
    from encoderfit.data.recipes import bbc_news

    ds = bbc_news()
    ds = ds["train"] if hasattr(ds, "keys") else ds
    articles = list(zip(ds["text"], ds["label"]))
    random.Random(seed).shuffle(articles)
    cut = [int(len(articles) * 0.8), int(len(articles) * 0.9)]
    parts = {"train": articles[:cut[0]], "validation": articles[cut[0]:cut[1]], "test": articles[cut[1]:]}
    out = {}
    for split, rows in parts.items():
        out[split] = [{"text": p.strip(), "label": label} for text, label in rows for p in text.split("\n") if len(p.split()) >= 5]
        out[split] = out[split][: limit if split == "train" else max(1, limit // 8)]
    return out


def build_model(texts, out: Path, smoke: bool) -> Path:
    """A random-init ModernBERT (base shape, or a tiny one) and a BPE tokenizer trained on the texts, saved."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import ModernBertConfig, ModernBertForMaskedLM, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=2000 if smoke else 30000, special_tokens=specials, show_progress=False))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=512)
    shape = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4) if smoke else {}
    config = ModernBertConfig(vocab_size=len(fast), pad_token_id=fast.pad_token_id, cls_token_id=cls, sep_token_id=sep,
                              bos_token_id=cls, eos_token_id=sep, max_position_embeddings=512, **shape)
    torch.manual_seed(0)
    ModernBertForMaskedLM(config).save_pretrained(out)
    fast.save_pretrained(out)
    return out


def flops_per_token(config, mean_length: float, mean_square: float) -> float:
    """Training FLOPs per real token: 6 x non-embedding parameters + attention (fwd+bwd 12 x layers x hidden x length,
    weighted by the tokens' sequence lengths)."""
    d, layers = config.hidden_size, config.num_hidden_layers
    per_layer = 4 * d * d + 3 * d * config.intermediate_size  # q,k,v,o + GLU (wi: 2 x intermediate, wo)
    return 6 * layers * per_layer + 12 * layers * d * (mean_square / mean_length)


def device_summary():
    if not torch.cuda.is_available():
        return "CPU", None
    name = torch.cuda.get_device_name()
    return name, next((peak for key, peak in PEAK_BF16.items() if key in name), None)


def compile_seconds() -> float:
    try:
        from torch._dynamo.utils import compile_times

        table = compile_times(repr="csv")  # (names, [per-function totals as strings])
        return float(sum(float(v) for row in table[1] for v in str(row).split(",") if v.strip()))
    except Exception:  # a torch without this counter: not reported
        return float("nan")


def reset_memory():
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory():
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def run_encoderfit(data: Path, model: Path, out: Path, extra, lengths, fpt, peak) -> dict:
    from encoderfit import cli

    reset_memory()
    compiled_before = compile_seconds()
    started = time.perf_counter()
    code = cli.main(["train", "--data.source", str(data), "--model.name_or_path", str(model), "--output_dir", str(out),
                     "--train.epochs", "1", "--train.batch_size", "64", "--train.report_to", "[]", "--overwrite", "true", *extra])
    wall = time.perf_counter() - started
    assert code == 0, f"encoderfit train exited {code}"
    metrics = json.loads((out / "metrics.json").read_text())["train"]
    steps_s = metrics["train_runtime_s"] - metrics.get("evaluation_s", 0) - metrics.get("checkpoint_s", 0)
    real = sum(lengths)
    packed = "padding-free: on" in LOG.text
    return {"recipe": "encoderfit train " + " ".join(extra), "steps": metrics["steps"], "real_tokens_per_s": real / steps_s,
            "steps_s": steps_s, "evaluation_s": metrics.get("evaluation_s"), "checkpoint_s": metrics.get("checkpoint_s"),
            "command_s": wall, "rest_s": wall - steps_s, "rest_share": (wall - steps_s) / steps_s,
            "padding_share": 0.0 if packed else padding_share(lengths, extra), "mfu": real * fpt / steps_s / peak if peak else None,
            "peak_memory_gib": peak_memory(), "compile_s": compile_seconds() - compiled_before}


def padding_share(lengths, extra) -> float:
    """The pad share of encoderfit's padded batches in epoch 0, rebuilt as its sampler and collator make them."""
    from encoderfit.core.device import padded_length
    from encoderfit.models.token_budget import TokenBudgetBatches
    from encoderfit.models.trainer import EpochSeededLengthSampler

    if "--train.max_batch_tokens" in extra:
        batches = TokenBudgetBatches(lengths, int(extra[extra.index("--train.max_batch_tokens") + 1]), 42, padded_length).batches(0)
    else:
        order = list(EpochSeededLengthSampler(lengths, 64, 42))
        batches = [order[i:i + 64] for i in range(0, len(order), 64)]
    computed = sum(len(b) * padded_length(max(lengths[i] for i in b), 512) for b in batches)
    return 1 - sum(lengths) / computed


class Counting:
    """A Trainer subclass factory that counts real and computed tokens on the device (no per-step host sync)."""

    @staticmethod
    def trainer_class():
        from transformers import Trainer

        class CountingTrainer(Trainer):
            def training_step(self, model, inputs, num_items_in_batch=None):
                mask = inputs["attention_mask"]
                self.real = getattr(self, "real", 0) + mask.sum()
                self.computed = getattr(self, "computed", 0) + mask.numel()
                return super().training_step(model, inputs, num_items_in_batch)

        return CountingTrainer


def run_trainer(recipe: str, splits, model: Path, work: Path, bf16: bool, fpt, peak, smoke: bool) -> dict:
    """One epoch of the transformers Trainer, as `recipe` says: map-padded (the Modal example) or tuned."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, TrainingArguments

    tok = AutoTokenizer.from_pretrained(model)
    labels = sorted({r["label"] for r in splits["train"]})
    ds = Dataset.from_list([{"text": r["text"], "label": labels.index(r["label"])} for r in splits["train"]])
    padded = recipe == "map-padded"
    ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=512, padding=padded), batched=True, remove_columns=["text"])
    net = AutoModelForSequenceClassification.from_pretrained(model, num_labels=len(labels))
    import dataclasses

    fields = {f.name for f in dataclasses.fields(TrainingArguments)}  # transformers 5.25 renamed group_by_length
    grouping = ({"train_sampling_strategy": "random" if padded else "group_by_length"} if "train_sampling_strategy" in fields
                else {"group_by_length": not padded})
    args = TrainingArguments(output_dir=str(work / recipe), per_device_train_batch_size=64, num_train_epochs=1, bf16=bf16,
                             optim="adamw_torch_fused" if torch.cuda.is_available() else "adamw_torch", learning_rate=5e-5,
                             save_strategy="no", eval_strategy="no", report_to="none", logging_steps=50,
                             use_cpu=not torch.cuda.is_available(), disable_tqdm=True, **grouping)
    collator = DataCollatorWithPadding(tok, pad_to_multiple_of=None if padded else 8)
    trainer = Counting.trainer_class()(model=net, args=args, train_dataset=ds, data_collator=collator)
    reset_memory()
    compiled_before = compile_seconds()
    seconds = trainer.train().metrics["train_runtime"]
    real, computed = int(trainer.real), int(trainer.computed)
    return {"recipe": f"Trainer, {recipe}", "steps": trainer.state.global_step, "real_tokens_per_s": real / seconds,
            "steps_s": seconds, "padding_share": 1 - real / computed, "mfu": real * fpt / seconds / peak if peak else None,
            "peak_memory_gib": peak_memory(), "compile_s": compile_seconds() - compiled_before}


def predict_speed(run: Path, texts, bf16: bool) -> dict:
    """Texts/s of encoderfit's Predictor and of pipeline fp32/bf16 on the same texts; label agreement with ours."""
    from transformers import pipeline

    from encoderfit import Predictor

    def timed(fn):
        fn(texts[:64])  # warm-up
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        started = time.perf_counter()
        out = fn(texts)
        return out, len(texts) / (time.perf_counter() - started)

    ours = Predictor.from_pretrained(run)
    mine, speed = timed(lambda t: [r["label"] for r in ours.predict(t)])
    result = {"encoderfit Predictor (" + ours.precision + ")": {"texts_per_s": speed, "agreement": 1.0}}
    device = 0 if torch.cuda.is_available() else -1
    for dtype in (torch.float32, torch.bfloat16) if bf16 else (torch.float32,):
        pipe = pipeline("text-classification", model=str(run / "model"), device=device, dtype=dtype)
        theirs, speed = timed(lambda t: [r["label"] for r in pipe(t, batch_size=64, truncation=True)])
        result[f"pipeline {str(dtype).split('.')[-1]}"] = {"texts_per_s": speed,
                                                           "agreement": sum(a == b for a, b in zip(mine, theirs)) / len(texts)}
    return result


class LOG:
    text = ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny ModernBERT on a few hundred texts: checks the script on a CPU")
    parser.add_argument("--texts", type=int, default=None, help="training paragraphs (default: all of the split)")
    parser.add_argument("--budget", type=int, default=65536, help="encoderfit's second run: --train.max_batch_tokens")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    import logging

    import transformers

    class Keep(logging.Handler):
        def emit(self, record):
            LOG.text += record.getMessage() + "\n"

    logging.getLogger("encoderfit").addHandler(Keep())
    work = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    splits = paragraphs(160 if args.smoke else (args.texts or 10**9))
    data = work / "data"
    data.mkdir()
    import csv

    for split, rows in splits.items():
        with open(data / f"{split}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["text", "label"])
            writer.writeheader()
            writer.writerows(rows)
    model = build_model([r["text"] for r in splits["train"]], work / "model", args.smoke)
    from transformers import AutoConfig, AutoTokenizer

    config, tok = AutoConfig.from_pretrained(model), AutoTokenizer.from_pretrained(model)
    lengths = [len(ids) for ids in tok([r["text"] for r in splits["train"]], truncation=True, max_length=512)["input_ids"]]
    mean, square = sum(lengths) / len(lengths), sum(n * n for n in lengths) / len(lengths)
    fpt = flops_per_token(config, mean, square)
    name, peak = device_summary()
    from encoderfit.core.device import cuda_bf16_native

    bf16 = cuda_bf16_native()
    runs = [run_encoderfit(data, model, work / "ef", [], lengths, fpt, peak),
            run_encoderfit(data, model, work / "ef-budget", ["--train.max_batch_tokens", str(args.budget)], lengths, fpt, peak)]
    runs += [run_trainer(recipe, splits, model, work, bf16, fpt, peak, args.smoke) for recipe in ("map-padded", "tuned")]
    texts = [r["text"] for r in splits["validation"] + splits["test"]]
    predict = predict_speed(work / "ef", texts, bf16)
    tuned, padded = runs[3]["real_tokens_per_s"], runs[2]["real_tokens_per_s"]
    lines = [f"On {name}, torch {torch.__version__}, transformers {transformers.__version__}; {'bf16' if bf16 else 'fp32'}; "
             f"{len(splits['train'])} training texts ({'BBC News paragraphs' if not args.smoke else 'smoke: tiny model'}), "
             f"mean {mean:.0f} tokens, 1 epoch, batch 64 texts; {fpt / 1e9:.2f} GFLOP per real token.", "",
             "| training | real tokens/s | vs tuned Trainer | MFU | padding | peak memory | compile s | whole command (rest/steps) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        cell = lambda v, f: "–" if v is None or v != v else f.format(v)  # noqa: E731
        rest = f"{r['command_s']:.1f} s ({r['rest_share']:.0%})" if "command_s" in r else "–"
        lines.append(f"| {r['recipe']} | {r['real_tokens_per_s']:,.0f} | {r['real_tokens_per_s'] / tuned:.2f} | "
                     f"{cell(r['mfu'], '{:.1%}')} | {cell(r['padding_share'], '{:.0%}')} | {cell(r['peak_memory_gib'], '{:.1f} GiB')} | "
                     f"{cell(r['compile_s'], '{:.0f}')} | {rest} |")
    lines += ["", f"encoderfit: {runs[0]['real_tokens_per_s'] / tuned:.2f}x the tuned Trainer, "
                  f"{runs[0]['real_tokens_per_s'] / padded:.2f}x the map-padded one.", "",
              "| prediction (validation + test texts) | texts/s | same label as encoderfit |", "|---|---|---|"]
    lines += [f"| {k} | {v['texts_per_s']:,.0f} | {v['agreement']:.2%} |" for k, v in predict.items()]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(json.dumps({"device": name, "training": runs, "prediction": predict}, indent=2, default=str))
    if not args.smoke and torch.cuda.is_available():
        from common import write_section

        write_section("gpu", "## GPU: encoderfit against the Trainer (`python benchmarks/gpu/gpu.py`)\n\n" + text)


if __name__ == "__main__":
    main()
