"""The model card: model/README.md in the Hugging Face format (YAML header with model-index metrics)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import yaml

from .config import RunConfig
from .files import atomic_file


def _header(cfg: RunConfig, metrics: Dict) -> str:
    test = metrics["test"]
    dataset = {"name": str(cfg.data.source), "type": str(cfg.data.source), "split": cfg.data.test_split}
    meta = {
        "library_name": "transformers",
        "pipeline_tag": "text-classification",
        "base_model": cfg.model.name_or_path,
        "tags": ["encoderfit", "text-classification"],
        "model-index": [{
            "name": Path(str(cfg.data.source)).name + "-classifier",
            "results": [{
                "task": {"type": "text-classification", "name": "Text Classification"},
                "dataset": dataset,
                "metrics": [
                    {"type": "accuracy", "value": round(test["accuracy"], 4), "name": "Test accuracy"},
                    {"type": "f1", "value": round(test["f1_macro"], 4), "name": "Test macro-F1", "args": {"average": "macro"}},
                    {"type": "ece", "value": round(test["calibration"]["after"]["ece"], 4), "name": "Test ECE (calibrated)"},
                ],
            }],
        }],
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def card_text(cfg: RunConfig, metrics: Dict) -> str:
    test, val = metrics["test"], metrics["validation"]
    cal, threshold = test["calibration"], metrics["threshold"]
    base = metrics.get("baseline")
    sizes = cfg.resolved.get("examples", {})
    t = cfg.train
    rows = [f"| fine-tuned {cfg.model.name_or_path} | {val['accuracy']:.4f} | {test['accuracy']:.4f} | {test['f1_macro']:.4f} |"]
    if base:
        rows.append(f"| TF-IDF 1-2-gram + logistic regression (C={base['C']:g}) | | {base['accuracy']:.4f} | {base['f1_macro']:.4f} |")
    at = threshold.get("test")
    threshold_text = (
        f"Threshold **{threshold['value']:.2f}** (lowest reaching accuracy {threshold['target_accuracy']} on validation): on test it "
        f"answers {at['coverage']:.1%} of texts with accuracy {at['accuracy']:.4f}; `Classifier.from_pretrained(dir, abstain=True)` "
        "returns UNKNOWN below it."
        if threshold["value"] is not None and at and at["accuracy"] is not None
        else "No abstention threshold was chosen."
    )
    return "\n".join([
        _header(cfg, metrics),
        f"# {cfg.model.name_or_path} fine-tuned on {cfg.data.source}",
        "",
        f"A text classifier trained with [encoderfit](https://github.com/) from `{cfg.model.name_or_path}`.",
        "",
        "## Labels",
        ", ".join(f"`{name}`" for name in cfg.labels),
        "",
        "## Data",
        f"Source `{cfg.data.source}`, text column `{cfg.data.text_column}`, label column `{cfg.data.label_column}`. "
        f"Examples: train {sizes.get('train', '?')}, validation {sizes.get('validation', '?')}, test {sizes.get('test', '?')} "
        f"(split seed {cfg.data.split_seed}; exact duplicates dropped before splitting: {cfg.data.dedupe}).",
        "",
        "## Training",
        f"max_length {cfg.resolved.get('max_length')}, {t.epochs:g} epochs, batch {t.batch_size} x {t.gradient_accumulation_steps}, "
        f"AdamW lr {t.learning_rate:g} (betas {t.adam_beta1}, {t.adam_beta2}, eps {t.adam_epsilon:g}, weight decay {t.weight_decay:g}), "
        f"{t.warmup_ratio:.0%} warmup, {t.lr_scheduler} schedule, seed {t.seed}, precision {cfg.resolved.get('precision')}. "
        f"Checkpoint kept by validation {t.metric_for_best}.",
        "",
        "## Evaluation",
        "| model | validation accuracy | test accuracy | test macro-F1 |",
        "| --- | --- | --- | --- |",
        *rows,
        "",
        "## Calibration and abstention",
        f"Temperature {metrics['calibration']['temperature']:.3f}, fitted on validation (stored in `calibration.json`). "
        f"Test ECE {cal['before']['ece']:.4f} before, {cal['after']['ece']:.4f} after; Brier {cal['before']['brier']:.4f} → "
        f"{cal['after']['brier']:.4f}.",
        "",
        threshold_text,
        "",
        "## Intended use and limits",
        f"Classifying text like the training data into {len(cfg.labels)} labels. Scores are measured on a held-out split of "
        "the same source; accuracy on text from other sources, periods or styles will differ and should be measured. "
        f"Inputs longer than {cfg.resolved.get('max_length')} tokens are truncated. Labels outside the set above are "
        "never predicted; use the abstention threshold to route uncertain texts to a person.",
        "",
        "## Use",
        "```python",
        "from transformers import pipeline",
        'clf = pipeline("text-classification", model="path/to/model")',
        "# or, with calibration and abstention:",
        "from encoderfit import Classifier",
        'clf = Classifier.from_pretrained("path/to/model", abstain=True)',
        "```",
        "",
    ])


def write_card(run_dir: Path, cfg: RunConfig, metrics: Dict) -> Path:
    path = Path(run_dir) / "model" / "README.md"
    with atomic_file(path) as handle:
        handle.write(card_text(cfg, metrics))
    return path
