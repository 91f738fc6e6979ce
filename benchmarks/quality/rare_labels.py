"""The synthetic multi-label set with many rare labels (issue 50, item 19): texts of filler words, 40 labels, each
signalled by its own made-up trigger word (`trig0x` ... `trig39x`, as issue 26's check) inserted at a random place;
label k is present in a share 0.2 / (k + 1) of the texts (Zipf's law): 20% down to 0.5%, about 20 labels in under
1% (21 at seed 0, the rarest in 9 texts), 0.86 labels per text, about 40% of texts with none. A bag of words
solves it; an encoder must learn 40 word-piece patterns, most from a few dozen positives.

    python benchmarks/quality/rare_labels.py /tmp/rare.csv          # 2,000 texts, seed 0
    encoderfit train --data.source /tmp/rare.csv --data.label_separator '|' --model.name_or_path all-MiniLM-L6-v2 \\
        --output_dir runs/rare

The default multi-label recipe is measured on it in docs/training.md (test micro-F1 against TF-IDF's).
"""

from __future__ import annotations

import argparse
import csv
import random
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence

LABELS = 40
TOP_SHARE = 0.2
"""The most frequent label's share of texts; label k's is TOP_SHARE / (k + 1)."""
UNIFORM_SHARE = 0.04
FILLER = ("the a today we saw about new big very of and this that was is it on for with from they said one two "
          "after before more some time year people work report").split()


def trigger(k: int) -> str:
    return f"trig{k}x"


def label_name(k: int) -> str:
    return f"label{k:02d}"


def rare_label_rows(n: int = 2000, seed: int = 0, labels: int = LABELS, top_share: float = TOP_SHARE,
                    triggers: Optional[Sequence[str]] = None, uniform: bool = False) -> List[Dict[str, str]]:
    """`n` rows {"text", "label"} (labels joined by '|', empty for none), reproducible from `seed`; label k's word is
    triggers[k] (default `trigkx`; a tiny test tokenizer's own words keep each one token). `uniform`: every label in
    UNIFORM_SHARE of the texts instead (issue 26's construction, no long tail)."""
    words_of = list(triggers) if triggers is not None else [trigger(k) for k in range(labels)]
    labels = len(words_of)
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        present = [k for k in range(labels) if rng.random() < (UNIFORM_SHARE if uniform else top_share / (k + 1))]
        words = rng.choices(FILLER, k=rng.randint(8, 16))
        for k in present:
            words.insert(rng.randrange(len(words) + 1), words_of[k])
        rows.append({"text": " ".join(words), "label": "|".join(label_name(k) for k in present)})
    return rows


def write_rows(path: Path, rows: List[Dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="the CSV file to write (text,label; labels joined by '|')")
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--uniform", action="store_true", help="every label in 4%% of the texts (issue 26's set)")
    args = parser.parse_args()
    rows = rare_label_rows(args.texts, args.seed, uniform=args.uniform)
    write_rows(args.output, rows)
    counts = Counter(name for row in rows for name in row["label"].split("|") if name)
    under = sum(1 for k in range(LABELS) if counts[label_name(k)] < 0.01 * len(rows))
    print(f"{args.output}: {len(rows)} texts, {sum(counts.values()) / len(rows):.2f} labels per text, "
          f"{sum(not r['label'] for r in rows)} with none; {under} of {LABELS} labels in under 1% of texts "
          f"(rarest: {min(counts.values(), default=0)} texts)")


if __name__ == "__main__":
    main()
