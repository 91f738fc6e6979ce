"""The model card: model/README.md in the Hugging Face format. The YAML header (pipeline tag, base model, test
metrics as model-index results) is huggingface_hub's ModelCardData; the body is ours, with the task's sections."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

from ..core.runconfig import RunConfig
from ..core.files import atomic_file
from ..tasks import get_task


def header(cfg: RunConfig, metrics: Dict) -> str:
    from huggingface_hub import EvalResult, ModelCardData

    task = get_task(cfg.task, options=cfg.options)
    results = [EvalResult(task_type=task.pipeline_tag, dataset_type=str(cfg.data.source), dataset_name=str(cfg.data.source),
                          dataset_split=cfg.data.test_split, metric_type=kind, metric_value=round(float(value), 4),
                          metric_name=name, metric_args=args or None)
               for kind, value, name, args in task.pages.card_results(metrics)]
    data = ModelCardData(library_name="transformers", pipeline_tag=task.pipeline_tag, base_model=cfg.model.name_or_path,
                         tags=["encoderfit", task.pipeline_tag, task.name], model_name=f"{Path(str(cfg.data.source)).name}-{task.name}",
                         eval_results=results)
    return f"---\n{data.to_yaml()}\n---\n"


def distillation_lines(metrics: Dict, task) -> List[str]:
    """What a distilled student's card and report say of its teacher: the transfer set and the paired tests."""
    d = metrics.get("distillation")
    if not d:
        return []
    t, key = d["transfer"], task.summary[0][0]
    lines = [f"This model was distilled from the teacher `{d['teacher']['model']}` (run `{d['teacher']['run']}`) at temperature "
             f"{d['temperature']:g} and alpha {d['alpha']:g}, on {t['total']} texts the teacher labelled: {t['train']} training "
             f"texts, {t['unlabelled']} unlabelled, {t['augmented']} augmented variants (no validation or test text)."]
    for role in ("teacher", "direct"):
        if role in d:
            other = d[role]
            lines.append(f"Against {'the teacher' if role == 'teacher' else 'the student model trained on the labels'} "
                         f"`{other['model']}` (test {key} {other['test'].get(key, float('nan')):.4f}): "
                         f"{other['comparison']['verdict']['sentence']}")
    return lines


def card_text(cfg: RunConfig, metrics: Dict) -> str:
    task = get_task(cfg.task, options=cfg.options)
    sizes = cfg.resolved.get("examples", {})
    t = cfg.train
    columns = [title for _, title in task.summary]
    from ..core.stats import with_ci

    ci = metrics["test"].get("ci") or {}
    cells = " | ".join(with_ci(metrics["test"][k], ci.get(k)) for k, _ in task.summary)
    rows = [f"| fine-tuned {cfg.model.name_or_path} | {cells} |"]
    if metrics.get("baseline"):
        rows.append(f"| {metrics['baseline']['model']} | " + " | ".join(f"{metrics['baseline'][k]:.4f}" for k, _ in task.summary) + " |")
    shown = ", ".join(f"`{name}`" for name in cfg.labels[:40]) + (f", … ({len(cfg.labels)} in all)" if len(cfg.labels) > 40 else "")
    pair = f", second text column `{cfg.data.text_pair_column}`" if cfg.data.text_pair_column else ""
    windowed = ((metrics.get("inputs") or {}).get("test") or {}).get("treatment") == "windows"
    return "\n".join([
        header(cfg, metrics),
        f"# {cfg.model.name_or_path} fine-tuned on {cfg.data.source} ({task.name})",
        "",
        f"A {task.name} model trained with encoderfit from `{cfg.model.name_or_path}`. {task.output_noun.capitalize()}: {shown}.",
        "",
        "## Data",
        f"Source `{cfg.data.source}`, text column `{cfg.data.text_column}`{pair}, target column `{cfg.data.label_column}`. "
        f"Examples: train {sizes.get('train', '?')}, validation {sizes.get('validation', '?')}, test {sizes.get('test', '?')} "
        f"(split seed {cfg.data.split_seed}; exact duplicates dropped before splitting: {cfg.data.dedupe}).",
        "",
        "## Training",
        f"max_length {cfg.resolved.get('max_length')}, {t.epochs:g} epochs, batch {t.batch_size} x {t.gradient_accumulation_steps}, "
        f"AdamW lr {t.learning_rate:g} (betas {t.adam_beta1}, {t.adam_beta2}, eps {t.adam_epsilon:g}, weight decay {t.weight_decay:g}), "
        f"{t.warmup_ratio:.0%} warmup, {t.lr_scheduler} schedule, seed {t.seed}, precision {cfg.resolved.get('precision')}. "
        f"Checkpoint kept by validation {t.metric_for_best}.",
        "",
        "## Evaluation (test split)",
        "| model | " + " | ".join(columns) + " |",
        "| --- | " + " | ".join("---" for _ in columns) + " |",
        *rows,
        "",
        f"Intervals: 95% bootstrap confidence intervals over the {metrics['test']['n']} test examples. "
        + ((metrics.get("comparison") or {}).get("verdict") or {}).get("sentence", ""),
        "",
        *(["## Distillation", *distillation_lines(metrics, task), ""] if metrics.get("distillation") else []),
        *task.pages.card_sections(metrics, cfg),
        "",
        "## Intended use and limits",
        f"{task.pages.intended_use(cfg.labels)} Scores are measured on a held-out split of the same source; results on text from "
        f"other sources, periods or styles will differ and should be measured. Inputs longer than "
        f"{cfg.resolved.get('max_length')} tokens are {'cut into overlapping windows' if windowed else 'truncated'}.",
        "",
        "## Use",
        "```python",
        "from encoderfit import Predictor   # applies the head fitted on validation",
        'model = Predictor.from_pretrained("path/to/model")',
        *task.pages.plain_usage(cfg),
        "```",
        "",
    ])


def write_card(model_dir, cfg: RunConfig, metrics: Dict) -> Path:
    path = Path(model_dir.path if hasattr(model_dir, "path") else model_dir) / "README.md"
    with atomic_file(path) as handle:
        handle.write(card_text(cfg, metrics))
    return path
