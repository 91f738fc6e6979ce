"""The linear probe alone (train.linear_probe, models/probe.py), without fine-tuning: which L2 penalty the validation
loss picks on an example's recipe, and each penalty's validation loss.

    python benchmarks/quality/probe_only.py examples/reuters.yaml --source ../shared/data/reuters21578
    python benchmarks/quality/probe_only.py examples/debtags.yaml
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from encoderfit.core.args import DataArgs, ModelArgs, TrainArgs  # noqa: E402
from encoderfit.runs.training import Prepared, fit_probe  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="an example's YAML file")
    parser.add_argument("--source", help="override its data.source")
    args = parser.parse_args()
    cfg = yaml.safe_load(Path(args.config).read_text())
    data = DataArgs(**{**cfg["data"], **({"source": args.source} if args.source else {})})
    model, train = ModelArgs(**cfg["model"]), TrainArgs(**cfg.get("train", {}))
    prep = Prepared.load(data, model, train)
    net = prep.task.modeling.load_model(model, prep.splits.labels, prep.max_length, prep.stats)
    done = fit_probe(prep, net, train)
    print(f"{args.config}: {done['rows']:,} training rows, {done['features']} features, penalty {done['penalty']:g} chosen, "
          f"{done['seconds']:.0f} s; validation loss by penalty: {done['validation_loss']}")


if __name__ == "__main__":
    main()
