"""Helpers and data that tests in several folders share (the fixtures are conftest.py's): toy corpora and rows,
pre-training arguments, runs killed part-way, a quick QA run, the tiny model and the two-process pre-training run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import FILLER, TOPICS, make_text, write_csv
from running import run_cli

SMALL = '{"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}'


NEW = {"food": "broth noodle pastry curry", "sport": "sprint marathon hurdle rowing", "tech": "router firmware quantum pixel"}


STREAM_WORDS = "goal team chef oven cloud server the a of and very match bread kernel".split()


TRIGGERS = sorted(w for words in TOPICS.values() for w in words)[:12]  # one word per label, in the tokenizer's vocabulary


# (shared: first written for commands/test_report.py)
def metric_at(metrics: dict, path: str):
    value = metrics
    for key in path.split("."):
        value = value[key]
    return value


# (shared: first written for tasks/test_qa_v2.py)
def v2_rows(n: int, seed: int) -> list:
    """SQuAD 2.0-style rows a tiny model learns in a few dozen steps: "where does alice live ?" on a short context that
    holds a place for her ("... alice lives in oslo .", answerable) or none ("... alice is here .", unanswerable, about
    half); four questions an article."""
    import random

    from conftest import FILLER, QA_PEOPLE, QA_PLACES

    rng, rows = random.Random(seed), []
    for i in range(n):
        person, filler = rng.choice(QA_PEOPLE), " ".join(rng.sample(FILLER, 2))
        place = rng.choice(QA_PLACES["lives in"]) if rng.random() < 0.5 else None
        context = f"{filler} {person} lives in {place} ." if place else f"{filler} {person} is here ."
        answers = {"text": [place], "answer_start": [context.index(f" in {place}") + 4]} if place else {"text": [], "answer_start": []}
        rows.append({"id": str(i), "title": f"article {i // 4}", "context": context, "question": f"where does {person} live ?",
                     "answers": answers})
    return rows


# (shared: first written for scale/test_distributed.py)
def files_under(path):
    return sorted("logs/EVENTS" if p.name.startswith("events.out.tfevents") else str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


# (shared: first written for commands/test_pretrain.py)
def toy_documents(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [". ".join(make_text(rng, rng.choice(sorted(TOPICS))) for _ in range(rng.randint(2, 6))) for _ in range(n)]


# (shared: first written for commands/test_pretrain.py)
def pretrain_args(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["pretrain", "--corpus.sources", f"[{corpus}]", "--tokenizer.vocab_size", "384", "--model.overrides", SMALL,
            "--mlm.block_size", "32", "--train.batch_size", "16", "--train.max_steps", "40", "--train.eval_steps", "20",
            "--train.learning_rate", "2e-3", "--train.logging_steps", "5", "--output_dir", str(out), *extra]


# (shared: first written for commands/test_predict_stream.py)
def texts(n: int, seed: int = 0):
    rng = random.Random(seed)
    return [" ".join(rng.choices(STREAM_WORDS, k=rng.choice([1, 3, 8, 20, 60]))) + f" {i}" for i in range(n)]


# (shared: first written for commands/test_predict_stream.py)
def write_texts_jsonl(path: Path, values) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in values))
    return path


# (shared: first written for commands/test_retrain.py)
def new_rows(n, seed, noise=False):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(sorted(NEW))
        words = rng.sample(NEW[label].split(), 2) + rng.sample(FILLER, rng.randint(2, 5))
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": rng.choice(sorted(NEW)) if noise else label})
    return rows


# (shared: first written for commands/test_retrain.py)
def logged_feedback(run, tmp_path, name, rows):
    """The texts go through `predict --log --log_texts`, then their right labels through `encoderfit feedback`."""
    texts = tmp_path / f"{name}.txt"
    texts.write_text("\n".join(r["text"] for r in rows) + "\n")
    log = tmp_path / f"{name}.db"
    run_cli("predict", str(run), "--input", str(texts), "--output", str(tmp_path / f"{name}.jsonl"), "--log", str(log), "--log_texts", "true")
    run_cli("feedback", str(run), str(write_csv(tmp_path / f"{name}.csv", rows)), "--log", str(log))
    return log


# (shared: first written for behaviour/test_probe.py)
# ten lines of a text file, the second with a form feed and the third with a U+2028 in it: str.splitlines() breaks there
TEN = ["garlic soup dinner", "match league\x0cstadium goal", "server laptop\u2028code kernel", "recipe bake oven",
       "coach player season", "chip network cloud", "spice sauce chef", "referee trophy win", "robot app compiler", "taste lunch flavor"]


def sealed(partial: Path) -> list[Path]:
    return sorted(partial.glob("checkpoints/checkpoint-*/encoderfit-complete.json"))


def trained(partial: Path) -> bool:
    """Training has finished: metrics.json holds its train section (the evaluation comes next)."""
    try:
        return "train" in json.loads((partial / "metrics.json").read_text())
    except (OSError, ValueError):
        return False


def kill_after(args: list[str], partial: Path, checkpoints: int = 0, evaluating: bool = False,
               sig: int = signal.SIGKILL) -> str:
    """Start training in a subprocess and SIGKILL it (or send `sig`) once `checkpoints` checkpoints are complete (or,
    `evaluating`, once training has finished and the evaluation runs); its stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "encoderfit", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while (not trained(partial)) if evaluating else len(sealed(partial)) < checkpoints:
        assert proc.poll() is None, f"training ended before it could be killed:\n{proc.stderr.read()[-2000:]}"
        assert time.time() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, sig)
    return proc.communicate(timeout=120)[1]


def quick_qa_run(tmp_path: Path, tiny_model: Path) -> Path:
    """A QA run of one short epoch: what a check of its inputs needs (not a model that answers well)."""
    from conftest import make_qa_rows, write_jsonl

    out = tmp_path / "qa-run"
    run_cli("train", "--task", "qa", "--data.source", str(write_jsonl(tmp_path / "qa.jsonl", make_qa_rows(24, seed=0))),
            "--model.name_or_path", str(tiny_model), "--model.max_length", "48", "--model.window_overlap", "16",
            "--train.epochs", "1", "--report.baseline", "false", "--output_dir", str(out))
    return out


# (shared: conftest's tiny_model)
def build_tiny_model(out: Path) -> None:
    """conftest's tiny_model: a 2-layer, hidden-64 ModernBERT (random init, seed 0) and a byte-level BPE tokenizer
    trained on the toy vocabulary, saved in `out`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import ModernBertConfig, ModernBertForMaskedLM, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    corpus = [make_text(random.Random(i), label) for i in range(300) for label in TOPICS]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False))
    ids = {s: tok.token_to_id(s) for s in specials}
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=512,
    )
    config = ModernBertConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=512, local_attention=64,
        pad_token_id=ids["[PAD]"], bos_token_id=ids["[CLS]"], eos_token_id=ids["[SEP]"],
        cls_token_id=ids["[CLS]"], sep_token_id=ids["[SEP]"],
    )
    import torch

    torch.manual_seed(0)  # the same weights whichever tests ran before in this session
    ModernBertForMaskedLM(config).save_pretrained(out)
    fast.save_pretrained(out)


# (shared: conftest's two_process_pretrain)
def pretrain_on_two_processes(home: Path, corpus: Path, env: dict) -> None:
    """`torchrun --standalone --nproc_per_node 2 -m encoderfit pretrain` (pretrain_args) into HOME/ddp, its stderr in
    HOME/stderr.txt."""
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
                           "encoderfit", *pretrain_args(corpus, home / "ddp")], check=False, capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (home / "stderr.txt").write_text(proc.stderr)
