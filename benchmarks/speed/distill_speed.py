"""Teacher against student, side by side in one run on the same test texts: texts/s of encoderfit's Predictor in
PyTorch and of the exported ONNX int8 model, with the test metric each keeps. The trade-off table a user chooses from.

    python benchmarks/speed/distill_speed.py runs/distill/vader-mpnet runs/distill/vader-minilm runs/distill/vader-distilled-aug4

Each run is exported first when it has no onnx/ yet (`encoderfit export RUN --quantize int8`, not timed). Each timing
is the best of `--repeats` passes over the texts after one warm-up pass, alone on the machine; the ONNX int8 figure
includes its near-tie re-check in fp32, as predict runs it by default.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import best_of, cpu_name, write_section  # noqa: E402


def main() -> None:
    import numpy as np
    import onnxruntime
    import torch
    import transformers

    from encoderfit.runs.predictor import Predictor
    from encoderfit.runs.rundir import RunDir
    from encoderfit.tasks import get_task

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="classification runs on the same test split (teacher first)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--section", default="distill-speed", help="the docs/benchmarks.md section to write")
    args = parser.parse_args()

    rows, texts, truth = [], None, None
    for path in args.runs:
        run = RunDir(path)
        info = run.model.info()
        task = get_task(info.task)
        preds = run.predictions("test", task, info.labels)
        if texts is None:
            texts, truth = preds.texts, np.asarray(preds.targets)
        elif preds.texts != texts:
            raise SystemExit(f"{path}: another test split than {args.runs[0]}'s; compare runs of the same data")
        if not (path / "onnx" / "model.int8.onnx").is_file():
            subprocess.run(["encoderfit", "export", str(path), "--quantize", "int8"], check=True, capture_output=True)
        cfg = run.config()
        parameters = sum(p.numel() for p in Predictor.from_pretrained(path).model.parameters())
        for backend in ("torch", "onnx-int8"):
            model = Predictor.from_pretrained(path, backend=backend)
            seconds, results = best_of(lambda: model.predict(texts), args.repeats)
            predicted = [model.labels.index(r["label"]) for r in results]
            accuracy = float(np.mean(np.asarray(predicted) == truth))
            rows.append((path.name, cfg.model.name_or_path, parameters, backend, len(texts) / seconds, accuracy,
                         (cfg.distill or {}).get("teacher_model")))
            print(rows[-1], flush=True)

    base = rows[0][4]
    table = ["| run | model | parameters | backend | texts/s | vs teacher (PyTorch) | test accuracy | distilled from |",
             "|---|---|---|---|---|---|---|---|"]
    for name, model, parameters, backend, speed, accuracy, teacher in rows:
        table.append(f"| `{name}` | {model} | {parameters / 1e6:.1f}M | {backend} | {speed:.0f} | {speed / base:.1f}x | "
                     f"{accuracy:.2%} | {teacher or '–'} |")
    note = (f"\n\n`python benchmarks/speed/distill_speed.py {' '.join(str(p) for p in args.runs)}`: {len(texts)} test texts, best of "
            f"{args.repeats} passes after a warm-up, alone on the machine ({cpu_name()}, "
            f"{os.cpu_count()} cores), torch {torch.__version__}, transformers {transformers.__version__}, onnxruntime "
            f"{onnxruntime.__version__}, {time.strftime('%Y-%m-%d')}. Accuracy is recomputed from these very predictions "
            "(int8 with its fp32 re-check of near-ties).")
    write_section(args.section, "\n".join(table) + note)
    write_section(args.section, "\n".join(table) + note, path=ROOT / "docs" / "distill.md")
    print("\n".join(table) + note)


if __name__ == "__main__":
    main()
