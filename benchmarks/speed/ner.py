"""Entity inference speed, side by side in one run: `encoderfit predict`'s Predictor against transformers'
token-classification pipeline (aggregation "simple", one text at a time as it defaults to, and batched) and against
spaCy's own pipeline (tok2vec + ner only) on the same BBC test sentences.

    python benchmarks/speed/ner.py               # needs runs/bbc-entities (examples/bbc-entities.yaml); a few minutes
    python benchmarks/speed/ner.py --texts 200   # a smoke run

Each path runs once per round, in a rotating order, and its fastest round counts (benchmarks/speed/run.py's method).
Sub-word tokens are the model tokenizer's, without specials, for every path (spaCy reads the same texts).
Agreement: the share of texts where a path returns exactly encoderfit's entity set (type, start, end).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import pipeline  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import write_section  # noqa: E402
from speed.run import cpu_description, interleaved  # noqa: E402

from encoderfit.runs.predictor import Predictor  # noqa: E402
from encoderfit.data.recipes import SPACY_MODEL, bbc_entities  # noqa: E402

RUN = ROOT / "runs" / "bbc-entities"


def _strip(text: str, start: int, end: int) -> tuple:
    """A span without the leading space byte-level offsets can include."""
    piece = text[start:end]
    return start + len(piece) - len(piece.lstrip()), end - len(piece) + len(piece.rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=1000, help="test sentences to run (the first N of the test split)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import spacy

    texts = list(bbc_entities()["test"]["text"][: args.texts])
    ours = Predictor.from_pretrained(RUN)
    tokens = sum(len(ids) for ids in ours.tokenizer(texts, add_special_tokens=False)["input_ids"])
    single = pipeline("token-classification", model=str(RUN / "model"), aggregation_strategy="simple")
    nlp = spacy.load(SPACY_MODEL, exclude=["parser", "lemmatizer", "senter", "tagger", "attribute_ruler"])
    out = {}
    passes = {
        "encoderfit": lambda: out.__setitem__("encoderfit", [{(e["label"], e["start"], e["end"]) for e in r["entities"]}
                                                             for r in ours.predict(texts)]),
        "pipeline": lambda: out.__setitem__("pipeline", [{(e["entity_group"], *_strip(t, e["start"], e["end"])) for e in r}
                                                         for t, r in zip(texts, single(texts))]),
        "pipeline-32": lambda: out.__setitem__("pipeline-32", [{(e["entity_group"], *_strip(t, e["start"], e["end"])) for e in r}
                                                               for t, r in zip(texts, single(texts, batch_size=32))]),
        "spacy": lambda: out.__setitem__("spacy", [{(e.label_, e.start_char, e.end_char) for e in doc.ents} for doc in nlp.pipe(texts)]),
    }
    started = time.time()
    best = interleaved(passes, args.rounds)
    rows = []
    for key, seconds in best.items():
        found = sum(map(len, out[key]))
        agree = sum(a == b for a, b in zip(out[key], out["encoderfit"])) / len(texts)
        rows.append(f"| {TITLES[key]} | {len(texts) / seconds:,.0f} | {found / seconds:,.0f} | {tokens / seconds:,.0f} | "
                    f"{seconds / best['encoderfit']:.2f}x | {found} | {agree:.1%} |")
        print(rows[-1])
    text = f"""## Entity inference (token classification)

`python benchmarks/speed/ner.py --texts {args.texts} --rounds {args.rounds}` ({time.time() - started:.0f} s), on {cpu_description()},
{torch.get_num_threads()} threads, torch {torch.__version__}, transformers {transformers.__version__}, spaCy {spacy.__version__},
Python {platform.python_version()}: the fine-tuned MiniLM of `examples/bbc-entities.yaml` on the first {len(texts)} BBC test
sentences ({tokens:,} sub-word tokens); the fastest of {args.rounds} interleaved rounds per path. "time" is each path's
over encoderfit's (above 1: slower). Agreement: texts whose entity set (type, start, end) equals encoderfit's (spaCy's
row is the test-set agreement of the distilled model with its teacher, on these sentences).

| path | texts/s | entities/s | sub-word tokens/s | time | entities | same entities as encoderfit |
|---|---|---|---|---|---|---|
""" + "\n".join(rows)
    write_section("ner", text)
    print(text)


TITLES = {"encoderfit": "encoderfit Predictor (length-batched, PyTorch fp32)",
          "pipeline": "transformers pipeline, aggregation simple, one text at a time (its default)",
          "pipeline-32": "transformers pipeline, aggregation simple, batch_size 32",
          "spacy": "spaCy en_core_web_sm (tok2vec + ner only), nlp.pipe"}

if __name__ == "__main__":
    main()
