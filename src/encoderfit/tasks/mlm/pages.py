"""What a pre-training run shows: metrics.json, report.html (curves, the summary against the unigram baseline,
held-out sentences with the model's guesses) and the model card. Every number on the page carries a data-metric
attribute naming its metrics.json path, as on the fine-tuning report."""

from __future__ import annotations

import random
from typing import Dict, List

from ...core.files import atomic_file


def masked_examples(model, tokenizer, documents: List[str], count: int, seed: int, tokens: int = 48) -> List[Dict]:
    """Up to `count` held-out passages (their first `tokens` tokens), about 15% of their words masked, with the
    model's top 3 guesses for each mask."""
    import torch

    rng = random.Random(seed)
    model.eval()
    device = next(model.parameters()).device
    out = []
    for text in documents[:count]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:tokens]
        if len(ids) < 4:
            continue
        positions = sorted(rng.sample(range(len(ids)), max(1, round(0.15 * len(ids)))))
        masked = list(ids)
        for p in positions:
            masked[p] = tokenizer.mask_token_id
        inputs = [tokenizer.cls_token_id, *masked, tokenizer.sep_token_id]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([inputs], device=device)).logits[0, 1:-1].float()
        probs = logits.softmax(-1)
        guesses = []
        for p in positions:
            top = probs[p].topk(3)
            guesses.append({"original": _shown(tokenizer.decode([ids[p]])),
                            "top": [[_shown(tokenizer.decode([int(i)])), round(float(v), 3)] for v, i in zip(top.values, top.indices)]})
        out.append({"masked": tokenizer.decode(masked), "original": tokenizer.decode(ids), "guesses": guesses})
    return out


def _shown(token: str) -> str:
    """A token as a person reads it: stripped, or its escaped form when it is only whitespace ("\\n", "␣")."""
    return token.strip() or token.encode("unicode_escape").decode().replace(" ", "␣")


def render(cfg, metrics: Dict, history: List[Dict]) -> str:
    from ...core import figures as f
    from ...core.figures import CSS

    v, b, t = metrics["validation"], metrics["baseline"], metrics["train"]
    rows = [["model (held-out)", f.num(v["n"], "validation.n", "d"), f.num(v["loss"], "validation.loss"),
             f.num(v["perplexity"], "validation.perplexity", ".1f"), f.num(v["accuracy"], "validation.accuracy")],
            ["unigram baseline", "", f.num(b["loss"], "baseline.loss"), f.num(b["perplexity"], "baseline.perplexity", ".1f"),
             f.num(b["accuracy"], "baseline.accuracy")]]
    corpus = metrics["corpus"]
    examples = [[f.esc(e["masked"]), f.esc(e["original"]),
                 "; ".join(f"{g['original']!r} → " + ", ".join(f"{w!r} {p:.2f}" for w, p in g["top"]) for g in e["guesses"])]
                for e in metrics.get("examples", [])]
    sections = [
        f"<h1>encoderfit pre-training report</h1><p class=muted>{f.esc(cfg.resolved.get('model', ''))} · "
        f"{cfg.resolved.get('parameters', 0) / 1e6:.1f}M parameters · corpus {f.esc(', '.join(cfg.corpus.sources))} · "
        f"tokenizer {f.esc(cfg.tokenizer.kind)} ({cfg.resolved.get('vocab_size')} tokens) · blocks of {cfg.mlm.block_size} "
        f"tokens · {cfg.mlm.masking_rate:.0%} masked</p>",
        "<div class=cards>" + "".join(f"<div class=card>{title}<b>{value}</b></div>" for title, value in (
            ("held-out perplexity", f.num(v["perplexity"], "validation.perplexity", ".1f")),
            ("masked-token accuracy", f.num(v["accuracy"], "validation.accuracy")),
            ("tokens seen", f.num(t["tokens_seen"], "train.tokens_seen", ",d")),
            ("tokens / s", f.num(t["tokens_per_s"], "train.tokens_per_s", ",.0f")))) + "</div>",
        "<h2>Held-out masked-token prediction</h2><p>The same masked positions of held-out documents at every evaluation "
        f"({f.num(v['masked_tokens'], 'validation.masked_tokens', ',d')} masked tokens); the baseline predicts each "
        "masked token by its frequency in the training blocks.</p>"
        + f.table(["", "blocks", "MLM loss", "perplexity", "masked-token accuracy"], rows, (0,)),
        f"<p>Corpus: {f.num(corpus['documents']['train'], 'corpus.documents.train', ',d')} training documents "
        f"({f.num(corpus['tokens']['train'], 'corpus.tokens.train', ',d')} tokens), "
        f"{f.num(corpus['documents']['validation'], 'corpus.documents.validation', ',d')} held out. Training: "
        f"{f.num(t['steps'], 'train.steps', 'd')} steps in {f.num(t['train_runtime_s'], 'train.train_runtime_s', '.0f')} s.</p>",
        "<h2>Training curves</h2>" + f.image("training curves", f.training(history, ["accuracy", "perplexity"])),
        "<h2>Held-out passages, masked</h2>" + f.table(["masked input", "original", "masked token → top guesses"], examples, (0, 1, 2)),
    ]
    return (f"<!doctype html><html><head><meta charset=utf-8><title>encoderfit pre-training report</title><style>{CSS}</style>"
            f"</head><body>{''.join(sections)}</body></html>")


def card(cfg, metrics: Dict) -> str:
    from huggingface_hub import ModelCardData

    data = ModelCardData(library_name="transformers", pipeline_tag="fill-mask", tags=["encoderfit", "fill-mask", "mlm"],
                         base_model=cfg.model.name_or_path or None)
    v, b = metrics["validation"], metrics["baseline"]
    return (f"---\n{data.to_yaml()}\n---\n\n# Masked-language model pre-trained with encoderfit\n\n"
            f"{cfg.resolved.get('model', '')}: {cfg.resolved.get('parameters', 0) / 1e6:.1f}M parameters, trained on "
            f"{', '.join(cfg.corpus.sources)} ({metrics['train']['tokens_seen']:,} tokens seen, blocks of {cfg.mlm.block_size}, "
            f"{cfg.mlm.masking_rate:.0%} masking).\n\n"
            f"Held-out documents: MLM loss {v['loss']:.3f}, perplexity {v['perplexity']:.1f}, masked-token accuracy "
            f"{v['accuracy']:.3f} (a unigram model of the training tokens: perplexity {b['perplexity']:.1f}, accuracy "
            f"{b['accuracy']:.3f}).\n\n"
            "Use it with `transformers.pipeline(\"fill-mask\", model=DIR)`, or fine-tune it: "
            "`encoderfit train --model.name_or_path DIR`.\n")


def write_pages(run, cfg, metrics: Dict) -> None:
    """report.html, the model card and metrics.json of a pre-training run; metrics.json last, since a run directory
    holding it with its train section counts as trained (train.trained_already), which a pre-training run is not
    until its pages are written."""
    with atomic_file(run / run.REPORT) as handle:
        handle.write(render(cfg, metrics, run.history()))
    with atomic_file(run.model / "README.md") as handle:
        handle.write(card(cfg, metrics))
    run.write_metrics(metrics)
