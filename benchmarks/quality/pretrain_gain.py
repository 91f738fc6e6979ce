"""Does pre-training pay off downstream? Fine-tune a pre-trained encoder and a control on the same split with the same
settings, and compare their test accuracy (95% bootstrap CIs, exact McNemar test on the same test texts).

    # from scratch: the pre-trained model against the same architecture and tokenizer, randomly initialised
    python benchmarks/quality/pretrain_gain.py --pretrained runs/pretrain-tiny --recipes vader-movies bbc-news
    # domain adaptation: the adapted model against the model it started from
    python benchmarks/quality/pretrain_gain.py --pretrained runs/adapt-minilm-vader --control all-MiniLM-L6-v2 --recipes vader-movies

Each recipe is fine-tuned with its example config (examples/RECIPE.yaml), only the model changed, for every seed given.
Runs go to runs/gain/; the table goes to docs/benchmarks.md (section named after the pre-training run).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import write_section  # noqa: E402
from encoderfit.core.args import DataArgs, ModelArgs, ReportArgs, TrainArgs  # noqa: E402
from encoderfit.runs.rundir import RunDir  # noqa: E402
from encoderfit.core.stats import mcnemar_exact  # noqa: E402
from encoderfit.tasks import get_task  # noqa: E402
from encoderfit.commands.train import fit  # noqa: E402


def random_init_copy(pretrained: Path, out: Path) -> Path:
    """The pre-trained model's architecture and tokenizer with fresh random weights (its initialisation, seed 42)."""
    import torch
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

    if not (out / "model.safetensors").is_file():
        torch.manual_seed(42)
        AutoModelForMaskedLM.from_config(AutoConfig.from_pretrained(pretrained)).save_pretrained(out)
        AutoTokenizer.from_pretrained(pretrained).save_pretrained(out)
    return out


def fine_tune(recipe: str, model: str, seed: int, out: Path, learning_rate=None) -> RunDir:
    if not (out / "metrics.json").is_file():
        raw = yaml.safe_load((ROOT / "examples" / f"{recipe}.yaml").read_text())
        train = {**raw["train"], "seed": seed, "report_to": []}
        if learning_rate:
            train["learning_rate"] = learning_rate
        fit(DataArgs(**raw["data"]), ModelArgs(**{**raw["model"], "name_or_path": model}), TrainArgs(**train), ReportArgs(),
            output_dir=out, overwrite=True)
    return RunDir(out)


def correct(run: RunDir) -> np.ndarray:
    cfg = run.config()
    preds = run.require_predictions("test", get_task(cfg.task), cfg.labels)
    return np.asarray(preds.logits).argmax(1) == np.asarray(preds.targets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", required=True, help="a run directory of `encoderfit pretrain`")
    parser.add_argument("--control", default=None, help="the model to compare with (default: the same architecture, random init)")
    parser.add_argument("--recipes", nargs="+", default=["vader-movies", "bbc-news"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--learning_rate", type=float, default=None, help="fine-tune both arms at this rate instead of the example's")
    args = parser.parse_args()
    pretrained = Path(args.pretrained)
    name = pretrained.name
    control = args.control or str(random_init_copy(pretrained / "model", ROOT / "runs" / "gain" / f"{name}-random-init"))
    control_title = args.control or "same architecture and tokenizer, random initialisation"
    rows = []
    for recipe in args.recipes:
        for seed in args.seeds:
            lr = f"-lr{args.learning_rate:g}" if args.learning_rate else ""
            arms = {arm: fine_tune(recipe, model, seed, ROOT / "runs" / "gain" / f"{name}-{arm}-{recipe}-{seed}{lr}", args.learning_rate)
                    for arm, model in (("pretrained", str(pretrained / "model")), ("control", control))}
            m = {arm: run.metrics() for arm, run in arms.items()}
            test = mcnemar_exact(correct(arms["pretrained"]), correct(arms["control"]))
            fmt = lambda t: f"{100 * t['accuracy']:.2f}% ({100 * t['ci']['accuracy']['low']:.2f}–{100 * t['ci']['accuracy']['high']:.2f})"  # noqa: E731
            rate = args.learning_rate or yaml.safe_load((ROOT / "examples" / f"{recipe}.yaml").read_text())["train"]["learning_rate"]
            rows.append(f"| {recipe} | {seed} | {rate:g} | {fmt(m['pretrained']['test'])} | {fmt(m['control']['test'])} | "
                        f"{100 * (m['pretrained']['test']['accuracy'] - m['control']['test']['accuracy']):+.2f} | "
                        f"{test['model_only_right']} vs {test['baseline_only_right']}, p = {test['p_value']:.2g} | "
                        f"{m['pretrained']['train']['train_runtime_s']:.0f} s / {m['control']['train']['train_runtime_s']:.0f} s |")
            print(rows[-1], flush=True)
    metrics = RunDir(pretrained).metrics()
    text = f"""## Downstream: `{name}` against {control_title}

Produced by `python benchmarks/quality/pretrain_gain.py --pretrained runs/{name}{' --control ' + args.control if args.control else ''} --recipes {' '.join(args.recipes)} --seeds {' '.join(map(str, args.seeds))}{f' --learning_rate {args.learning_rate:g}' if args.learning_rate else ''}`.
The pre-trained model: {metrics['train']['tokens_seen']:,} tokens seen in {metrics['train']['train_runtime_s'] / 60:.0f} min, held-out
perplexity {metrics['validation']['perplexity']:.1f} (unigram baseline {metrics['baseline']['perplexity']:.1f}). Each recipe is fine-tuned with
its example config (examples/RECIPE.yaml), only `--model.name_or_path` changed; test accuracy with its 95% bootstrap CI;
McNemar: test texts only the pre-trained model gets right vs only the control.

| recipe | seed | learning rate | pre-trained | control | difference (points) | McNemar | fine-tuning time |
|---|---:|---:|---:|---:|---:|---|---:|
""" + "\n".join(rows)
    write_section(f"gain-{name}" + (f"-lr{args.learning_rate:g}" if args.learning_rate else ""), text)
    print(text)


if __name__ == "__main__":
    main()
