"""Is AdamW's epsilon small beside the encoder's gradients? After N real training steps, the size of each weight's
update denominator sqrt(v_hat) (Adam's running RMS of its gradient) against train.adam_epsilon: where sqrt(v_hat) is
near epsilon, epsilon damps the step and the learning rate is effectively smaller than asked.

    python benchmarks/quality/adam_epsilon.py                        # Reuters-21578 (../shared/data), all-MiniLM-L6-v2, 40 steps
    python benchmarks/quality/adam_epsilon.py --config examples/bbc-news.yaml

The steps are encoderfit's own (its data, model loading, pooled head, loss and optimizer), with the run's settings.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import write_section  # noqa: E402


def main() -> None:
    import yaml

    from encoderfit.core.args import DataArgs, ModelArgs, TrainArgs
    from encoderfit.runs.training import Prepared

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="examples/reuters.yaml")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    cfg = yaml.safe_load((ROOT / args.config).read_text())
    data = DataArgs(**cfg["data"])
    if data.source and data.source.startswith("../") and not (ROOT / data.source).exists():
        print(f"skipped: {data.source} is absent (the benchmark data is not shipped)")
        return
    os.chdir(ROOT)
    train = TrainArgs(**{**cfg.get("train", {}), "max_steps": args.steps, "report_to": [], "eval_steps": 10 * args.steps})
    model = ModelArgs(**cfg.get("model", {}))
    prep = Prepared.load(data, model, train, cfg.get("task"))
    net = prep.task.modeling.load_model(model, prep.splits.labels, prep.max_length, prep.stats)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = prep.task.modeling.build_trainer(net, prep.tokenizer, prep.splits.labels, prep.stats, prep.tokenized, train,
                                          prep.precision, Path(tmp))
        trainer.args.disable_tqdm = True
        trainer.train()
        rows, names = [], dict((id(p), n) for n, p in trainer.model.named_parameters())
        b2 = train.adam_beta2
        groups = {"encoder": [], "head": []}
        for group in trainer.optimizer.param_groups:
            for p in group["params"]:
                state = trainer.optimizer.state.get(p)
                if not state:
                    continue
                t = float(state["step"])
                rms = (state["exp_avg_sq"] / (1 - b2 ** t)).sqrt().flatten().numpy()
                name = names.get(id(p), "")
                groups["head" if any(k in name for k in ("classifier", "head", "linear")) else "encoder"].append(rms)
    eps = train.adam_epsilon
    for name, parts in groups.items():
        if not parts:
            continue
        rms = np.concatenate(parts)
        q = np.quantile(rms, [0.01, 0.1, 0.5, 0.9])
        rows.append(f"| {name} | {len(rms):,} | {q[0]:.2e} | {q[1]:.2e} | {q[2]:.2e} | {q[3]:.2e} | "
                    f"{(rms < eps).mean():.2%} | {(rms < 10 * eps).mean():.2%} |")
    text = (f"## AdamW epsilon against the gradients ({args.config}, {args.steps} steps)\n\n"
            "| weights | count | sqrt(v̂) 1% | 10% | median | 90% | under ε | under 10ε |\n|---|---|---|---|---|---|---|---|\n"
            + "\n".join(rows)
            + f"\n\nε = {eps:g} (train.adam_epsilon). A weight's step is lr · m̂ / (sqrt(v̂) + ε): where sqrt(v̂) is under 10ε, "
            f"ε shrinks that step by over 9%. `python benchmarks/quality/adam_epsilon.py --config {args.config} --steps {args.steps}`.")
    write_section(f"adam-epsilon-{Path(args.config).stem}", text)
    print(text)


if __name__ == "__main__":
    main()
