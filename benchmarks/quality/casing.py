"""What capitalisation is worth for NER on CoNLL-2003: the CRF baseline trained and tested on the text as written,
and on the same text lower-cased (what an uncased encoder such as all-MiniLM-L6-v2 sees), same split, same grid.

    python benchmarks/quality/casing.py     # needs ../shared/data/conll2003; a few minutes

The offline encoders lower-case their input, and no cased encoder is available offline here, so the cost of casing
is measured where both variants can run: on the classical model whose features read the shape of each word.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import write_section  # noqa: E402


def main() -> None:
    from encoderfit.core.args import DataArgs
    from encoderfit.runs.splits import Splits, prepare
    from encoderfit.core.stats import paired_bootstrap
    from encoderfit.tasks.ner.baseline import crf_baseline
    from encoderfit.tasks.ner.metrics import counts, gold, predicted, prf

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "conll2003")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"skipped: {args.data} is absent (CoNLL-2003 is not shipped; see ../shared/data/README.md)")
        return
    splits = prepare(DataArgs(source=str(args.data)), "ner")
    lower = Splits(**{role: ds.map(lambda r: {"text": r["text"].lower()}) for role, ds in splits.as_dict().items()},
                   labels=splits.labels, task="ner")
    true = [gold(row, splits.labels) for row in splits.test["labels"]]
    found, seconds = {}, {}
    for name, data in (("as written", splits), ("lower-cased", lower)):
        started = time.time()
        fitted = crf_baseline(data, splits.labels)
        seconds[name] = time.time() - started
        found[name] = counts(true, [predicted(s.logits, splits.labels)[0] for s in fitted["logits"]])
    diff = paired_bootstrap(lambda idx, who: prf(found["as written" if who == "model" else "lower-cased"][idx])["f1"], len(true))
    rows = ["| CRF input | test entity F1 | precision | recall | fit time |", "|---|---|---|---|---|"]
    for name, c in found.items():
        m = prf(c)
        rows.append(f"| {name} | **{m['f1']:.4f}** | {m['precision']:.4f} | {m['recall']:.4f} | {seconds[name]:.0f} s |")
    text = ("## What casing is worth (CoNLL-2003)\n\n" + "\n".join(rows)
            + f"\n\nCasing is worth {diff['difference']:+.4f} entity F1 to the CRF (95% CI {diff['low']:+.4f} to {diff['high']:+.4f}, "
            f"paired bootstrap over the {len(true):,} test sentences). An uncased encoder never sees it; `encoderfit train --task ner` "
            f"says so in its log. `python benchmarks/quality/casing.py`, {platform.processor() or platform.machine()}, {os.cpu_count()} cores.")
    write_section("casing", text)
    print(text)


if __name__ == "__main__":
    main()
