"""Shared fixtures: a tiny random-init ModernBERT with a BPE tokenizer trained here, toy data, one trained run.

Everything is built locally, once per session; nothing touches the Hugging Face hub.
"""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path

import pytest

from running import free_port, run_cli, serving, serving_in_thread  # noqa: F401  (tests import them from here)

from scheduling import built_once  # a fixture built once for all xdist workers (tests/scheduling.py)

os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest-xdist worker per core: each worker (and every process it starts) computes on one
    # thread, or the workers' OpenMP threads wait on each other's descheduled peers (3-10x slower on 2 cores)
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    import torch

    torch.set_num_threads(1)

TOPICS = {
    "food": "recipe bake flavor dinner spice oven sauce chef taste garlic lunch soup".split(),
    "sport": "match goal team coach league player score season stadium win referee trophy".split(),
    "tech": "software chip network code server laptop data cloud robot app compiler kernel".split(),
}
FILLER = "the a today we saw about new big very of and this that was is it on for".split()


def make_text(rng: random.Random, label: str) -> str:
    words = rng.sample(TOPICS[label], rng.randint(2, 5)) + rng.sample(FILLER, rng.randint(1, 12))
    rng.shuffle(words)
    return " ".join(words)


def make_rows(n_per_label: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = [{"text": make_text(rng, label), "label": label} for label in TOPICS for _ in range(n_per_label)]
    rng.shuffle(rows)
    return rows


def make_multilabel_rows(n: int, seed: int) -> list[dict]:
    """Texts about 0, 1 or 2 of the topics; the label is the set of them, joined by '|' (empty: no topic)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        topics = sorted(rng.sample(sorted(TOPICS), rng.choice([0, 1, 1, 2, 2])))
        words = [w for t in topics for w in rng.sample(TOPICS[t], rng.randint(2, 4))] + rng.sample(FILLER, rng.randint(2, 8))
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": "|".join(topics)})
    return rows


def make_regression_rows(n: int, seed: int) -> list[dict]:
    """The score is (sport words - food words) plus a little noise: a number the text determines."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        sport, food = rng.randint(0, 4), rng.randint(0, 4)
        words = rng.sample(TOPICS["sport"], sport) + rng.sample(TOPICS["food"], food) + rng.sample(FILLER, rng.randint(1, 6))
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": round(sport - food + rng.gauss(0, 0.25), 3)})
    return rows


def make_pair_rows(n: int, seed: int) -> list[dict]:
    """Two texts on independent topics; the label is the second text's topic, so only a model that reads the pair's
    second text can get it right (the first alone gives a third)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.choice(sorted(TOPICS)), rng.choice(sorted(TOPICS))
        rows.append({"text": make_text(rng, a), "text_pair": make_text(rng, b), "label": b})
    return rows


def write_csv(path: Path, rows: list[dict], fieldnames=("text", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fieldnames))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer, hidden-64 ModernBERT (random init) with a byte-level BPE tokenizer trained on the toy vocabulary."""
    from shared import build_tiny_model

    return built_once(tmp_path_factory, "tiny-modernbert", build_tiny_model)


@pytest.fixture(scope="session")
def toy_csv(tmp_path_factory) -> Path:
    """A separable 3-topic data set, one CSV (train only: validation/test are split off by encoderfit)."""
    return built_once(tmp_path_factory, "toy", lambda home: write_csv(home / "toy.csv", make_rows(120, seed=0))) / "toy.csv"


TINY_TRAIN = ["--train.epochs", "6", "--train.batch_size", "16", "--train.learning_rate", "3e-3",
              "--train.warmup_ratio", "0.05", "--train.logging_steps", "5",
              "--train.class_weights", "balanced", "--train.early_stopping_patience", "3"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_model, toy_csv) -> Path:
    """One run of the real CLI on the toy data, shared by the tests that inspect its outputs."""
    out = tmp_path_factory.mktemp("runs") / "toy"
    run_cli("train", "--data.source", str(toy_csv), "--model.name_or_path", str(tiny_model),
            "--output_dir", str(out), *TINY_TRAIN)
    return out


def task_run(tmp_path_factory, tiny_model, name: str, rows: list[dict], fields, *args: str) -> Path:
    """A run of the real CLI on a toy data set of another task (the task inferred from its label column)."""
    def build(home: Path) -> None:
        data = write_csv(home / f"{name}.csv", rows, fieldnames=fields)
        run_cli("train", "--data.source", str(data), "--model.name_or_path", str(tiny_model), "--output_dir", str(home / "run"),
                "--train.epochs", "5", "--train.batch_size", "16", "--train.learning_rate", "3e-3", "--train.warmup_ratio",
                "0.05", "--train.logging_steps", "5", *args)

    return built_once(tmp_path_factory, name, build) / "run"


@pytest.fixture(scope="session")
def multilabel_run(tmp_path_factory, tiny_model) -> Path:
    # no probe (the multi-label default since issue 50): the random-init encoder's features barely vary between texts
    # (sd 0.003), so a probe's raw weights reach thousands and lr 3e-3 then drives logits past 1,000, beyond the
    # artifact tests' absolute 1e-4 parity bounds; tests/tasks/test_multilabel_rare.py tests the default itself
    return task_run(tmp_path_factory, tiny_model, "multilabel", make_multilabel_rows(400, seed=0), ("text", "label"),
                    "--data.label_separator", "|", "--train.linear_probe", "false")


@pytest.fixture(scope="session")
def regression_run(tmp_path_factory, tiny_model) -> Path:
    return task_run(tmp_path_factory, tiny_model, "regression", make_regression_rows(400, seed=0), ("text", "label"),
                    "--regression.target_range", "[-6, 6]")


@pytest.fixture(scope="session")
def pair_run(tmp_path_factory, tiny_model) -> Path:
    return task_run(tmp_path_factory, tiny_model, "pairs", make_pair_rows(480, seed=0), ("text", "text_pair", "label"),
                    "--data.text_pair_column", "text_pair")


PEOPLE = ["alice", "bob", "carol", "dave", "erin"]
PLACES = [["paris"], ["rome"], ["new", "york"], ["oslo"], ["san", "diego"]]
def make_ner_rows(n: int, seed: int) -> list[dict]:
    """Sentences of filler words with people (PER) and places (LOC, one or two words) at random places: tokens and
    IOB2 tags."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        tokens, tags = [], []
        for _ in range(rng.randint(3, 9)):
            r = rng.random()
            if r < 0.15:
                tokens.append(rng.choice(PEOPLE))
                tags.append("B-PER")
            elif r < 0.3:
                place = rng.choice(PLACES)
                tokens += place
                tags += ["B-LOC"] + ["I-LOC"] * (len(place) - 1)
            else:
                tokens.append(rng.choice(FILLER))
                tags.append("O")
        rows.append({"tokens": tokens, "tags": tags})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def ner_data(tmp_path_factory) -> Path:
    def build(home: Path) -> None:
        for split, n, seed in (("train", 400, 0), ("validation", 60, 1), ("test", 60, 2)):
            write_jsonl(home / f"{split}.jsonl", make_ner_rows(n, seed=seed))

    return built_once(tmp_path_factory, "ner-data", build)


@pytest.fixture(scope="session")
def ner_run(tmp_path_factory, tiny_model, ner_data) -> Path:
    return built_once(tmp_path_factory, "ner-run", lambda home: _train_ner(home / "run", tiny_model, ner_data)) / "run"


def _train_ner(out: Path, tiny_model: Path, ner_data: Path) -> None:
    run_cli("train", "--task", "ner", "--data.source", str(ner_data), "--model.name_or_path", str(tiny_model),
            "--output_dir", str(out), "--model.max_length", "24", "--model.window_overlap", "4", "--train.epochs", "6",
            "--train.batch_size", "16", "--train.learning_rate", "3e-3", "--train.warmup_ratio", "0.05",
            "--train.metric_for_best", "f1")


EMBED_TRAIN = ["--train.batch_size", "16", "--train.learning_rate", "1e-3", "--train.warmup_ratio", "0.05",
               "--train.logging_steps", "5", "--train.report_to", "[]"]


def make_search_rows(n: int, seed: int) -> list[dict]:
    """A query of three words of its document; each document unique (a numbered item)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        doc = make_text(rng, rng.choice(sorted(TOPICS))) + f" item{seed}x{i}"
        rows.append({"query": " ".join(rng.sample(doc.split(), 3)), "document": doc})
    return rows


@pytest.fixture(scope="session")
def search_data(tmp_path_factory):
    return built_once(tmp_path_factory, "search-data", lambda home: write_jsonl(home / "pairs.jsonl", make_search_rows(400, 0))) / "pairs.jsonl"


@pytest.fixture(scope="session")
def embedding_run(tmp_path_factory, tiny_model, search_data):
    return built_once(tmp_path_factory, "embedding-run", lambda home: run_cli(
        "train", "--task", "embedding", "--data.source", str(search_data), "--model.name_or_path", str(tiny_model),
        "--data.text_column", "query", "--data.text_pair_column", "document",  # named, as examples/debian-search.yaml does
        "--output_dir", str(home / "run"), "--train.epochs", "3", *EMBED_TRAIN)) / "run"


def read_jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# A run long enough to be killed mid-way (108 steps of batch 8, a checkpoint every 5 steps), no dropout: the
# resume, determinism and multi-process tests compare other runs with it.
STEADY_TRAIN = ["--train.epochs", "3", "--train.batch_size", "8", "--train.learning_rate", "3e-3",
                "--train.save_steps", "5", "--train.logging_steps", "5", "--report.baseline", "false"]


def steady_args(toy_csv: Path, tiny_model: Path, out: Path) -> list[str]:
    return ["train", "--data.source", str(toy_csv), "--model.name_or_path", str(tiny_model), "--output_dir", str(out), *STEADY_TRAIN]


@pytest.fixture(scope="session")
def steady_run(tmp_path_factory, tiny_model, toy_csv) -> Path:
    """The uninterrupted single-process reference run."""
    return built_once(tmp_path_factory, "steady", lambda home: run_cli(*steady_args(toy_csv, tiny_model, home / "ref"))) / "ref"


def load_run(run: Path) -> tuple[dict, dict]:
    """(metrics.json, model weights as numpy arrays)."""
    from safetensors.numpy import load_file

    return json.loads((run / "metrics.json").read_text()), load_file(run / "model" / "model.safetensors")


def max_weight_difference(a: dict, b: dict) -> float:
    import numpy as np

    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


@pytest.fixture(autouse=True)
def _restore_logging():
    """cli.main() configures the root logger on the stream pytest captured for that test; undo it afterwards."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


QA_PEOPLE = "alice bob carol dave erin frank grace heidi ivan judy".split()
QA_PLACES = {"lives in": "paris oslo lima rome cairo kyiv quito hanoi".split(), "works at": "acme initech globex umbrella hooli".split()}


def make_qa_rows(n_articles: int, seed: int, unanswerable: float = 0.0) -> list[dict]:
    """Articles of a few facts ("alice lives in oslo ."), each question about one fact ("where does alice live ?"), in
    the hub's rajpurkar/squad shape; with `unanswerable`, that share asks about a person the context does not name."""
    rng = random.Random(seed)
    rows = []
    for a in range(n_articles):
        people = rng.sample(QA_PEOPLE, 4)
        facts = [(p, relation, rng.choice(QA_PLACES[relation])) for p in people for relation in rng.sample(sorted(QA_PLACES), 1)]
        context, starts = "", []
        for p, relation, place in facts:
            filler = " ".join(rng.sample(FILLER, rng.randint(1, 4)))
            sentence = f"{filler} {p} {relation} "
            starts.append(len(context) + len(sentence))
            context += sentence + place + " . "
        for (p, relation, place), start in zip(facts, starts):
            asks = "where does {} live ?" if relation == "lives in" else "where does {} work ?"
            if rng.random() < unanswerable:
                other = rng.choice([x for x in QA_PEOPLE if x not in people])
                rows.append({"id": f"{a}-{p}-x", "title": f"article {a}", "context": context, "question": asks.format(other),
                             "answers": {"text": [], "answer_start": []}})
            else:
                rows.append({"id": f"{a}-{p}", "title": f"article {a}", "context": context, "question": asks.format(p),
                             "answers": {"text": [place], "answer_start": [start]}})
    return rows


@pytest.fixture(scope="session")
def qa_data(tmp_path_factory) -> Path:
    return built_once(tmp_path_factory, "qa", lambda home: write_jsonl(home / "qa.jsonl", make_qa_rows(160, seed=0))) / "qa.jsonl"


@pytest.fixture(scope="session")
def qa_run(tmp_path_factory, tiny_model, qa_data) -> Path:
    return built_once(tmp_path_factory, "qa-run", lambda home: run_cli(
        "train", "--task", "qa", "--data.source", str(qa_data), "--model.name_or_path", str(tiny_model),
        "--model.max_length", "48", "--model.window_overlap", "16", "--output_dir", str(home / "run"),
        "--train.epochs", "4", "--train.batch_size", "16", "--train.learning_rate", "3e-3", "--train.warmup_ratio", "0.05",
        "--train.logging_steps", "10")) / "run"


# ---------------------------------------------------------------- on a GPU machine (`make gpu-check`)
def _cuda_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


GPUS = _cuda_gpus()
ON_CUDA = GPUS > 0
CPU_EXACT = pytest.mark.skipif(ON_CUDA, reason="compares runs bit for bit as a CPU gives them; on a GPU, bf16 autocast "
                                               "and non-deterministic kernels differ from run to run (the CPU suite covers it)")


def two_process_env() -> dict:
    """The environment of a 2-process torchrun test: one GPU per process (NCCL) where the machine has two, else the
    GPUs hidden so both processes train on the CPU over gloo (two ranks cannot share one GPU: rank 1 would ask for
    cuda:1)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if 0 < GPUS < 2:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


@pytest.fixture(autouse=True, scope="session")
def _tiny_models_are_not_compiled():
    """train.torch_compile auto compiles on a CUDA GPU; the tests train dozens of tiny models, each compile costing
    more than it saves: off here (tests/test_gpu.py compiles on purpose, with --train.torch_compile true)."""
    if not ON_CUDA:
        yield
        return
    from encoderfit.core import device

    saved, device.can_compile = device.can_compile, lambda: False
    yield
    device.can_compile = saved


# (shared: first written for commands/test_pretrain.py)
@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> Path:
    return built_once(tmp_path_factory, "corpus", lambda home: (home / "corpus.txt").write_text(
        "\n\n".join(toy_documents(400, 0)) + "\n", encoding="utf-8")) / "corpus.txt"


@pytest.fixture(scope="session")
def two_process_pretrain(tmp_path_factory, corpus_file) -> Path:
    """`torchrun --standalone --nproc_per_node 2 -m encoderfit pretrain` on corpus_file (tests/shared.py's
    pretrain_args, 40 steps): the run is HOME/ddp and torchrun's stderr HOME/stderr.txt. Read by the two-process test
    (tests/commands/test_pretrain.py) and, as its reference, by the two-node one (tests/scale/test_two_nodes.py)."""
    from shared import pretrain_on_two_processes

    return built_once(tmp_path_factory, "two-process-pretrain", lambda home: pretrain_on_two_processes(home, corpus_file,
                                                                                                     two_process_env()))


# (shared: first written for tasks/test_quality.py)
@pytest.fixture(scope="module")
def tiny_sentence_model(tmp_path_factory):
    """A 2-layer BERT saved as a sentence-transformers directory with mean pooling, its pooler untrained (zero
    biases, tiny weights) as in all-MiniLM-L6-v2."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    from conftest import make_text

    out = tmp_path_factory.mktemp("tiny-sentence")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    corpus = [make_text(random.Random(i), label) for i in range(200) for label in TOPICS] + [" ".join(TRIGGERS)]
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=300, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
                                                              show_progress=False))
    tok.post_processor = processors.BertProcessing(("[SEP]", tok.token_to_id("[SEP]")), ("[CLS]", tok.token_to_id("[CLS]")))
    body = out / "body"
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                            mask_token="[MASK]", model_max_length=128).save_pretrained(body)
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=128, max_position_embeddings=128, hidden_dropout_prob=0.0))
    with torch.no_grad():
        bert.pooler.dense.weight.normal_(std=0.009)
        bert.pooler.dense.bias.zero_()
    bert.save_pretrained(body)
    transformer = Transformer(str(body))
    SentenceTransformer(modules=[transformer, Pooling(64, "mean")], device="cpu").save(str(out / "st"))
    return out / "st"


# ---------------------------------------------------------------- fixtures tests in several folders use

from shared import TRIGGERS, toy_documents  # noqa: E402  (shared.py reads this module's data, defined above)


