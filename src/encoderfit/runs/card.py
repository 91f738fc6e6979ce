"""The model card: model/README.md in the Hugging Face format. The YAML header (pipeline tag, base model, test
metrics as model-index results) is huggingface_hub's ModelCardData; the body is ours, with the task's sections."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

from ..core.runconfig import RunConfig
from ..core.files import atomic_file
from ..tasks import get_task


def header(cfg: RunConfig, metrics: Dict, library: str = "transformers") -> str:
    from huggingface_hub import EvalResult, ModelCardData

    task = get_task(cfg.task, options=cfg.options)
    results = [EvalResult(task_type=task.pipeline_tag, dataset_type=str(cfg.data.source), dataset_name=str(cfg.data.source),
                          dataset_split=cfg.data.test_split, metric_type=kind, metric_value=round(float(value), 4),
                          metric_name=name, metric_args=args or None)
               for kind, value, name, args in task.pages.card_results(metrics)]
    data = ModelCardData(library_name=library, pipeline_tag=task.pipeline_tag, base_model=cfg.model.name_or_path,
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


def loading_lines(model_dir: Optional[Path], task) -> List[str]:
    """How the directory loads without encoderfit, as its files are laid out (models/pooling.py)."""
    from ..models.loading import is_sentence_model, transformer_path
    from ..models.pooling import HEAD_FILE

    from transformers.pipelines import SUPPORTED_TASKS

    if model_dir is None or not is_sentence_model(model_dir):
        extra = sorted(p.name for p in Path(model_dir).glob("*.safetensors") if p.name != "model.safetensors") if model_dir else []
        loader = (f"`transformers.pipeline(\"{task.pipeline_tag}\", model=DIR)` (or `{task.auto_model}.from_pretrained(DIR)`)"
                  if task.pipeline_tag in SUPPORTED_TASKS else
                  f"`{task.auto_model}.from_pretrained(DIR)` (transformers has no {task.pipeline_tag} pipeline)")
        beside = f" and the head{'s' if len(extra) > 1 else ''} in {', '.join(f'`{e}`' for e in extra)}" if extra else ""
        return [f"{loader} loads it with its trained head; what was fitted on validation (encoderfit.json: temperature, "
                f"thresholds, intervals){beside} only encoderfit's `Predictor` applies."]
    if transformer_path(str(model_dir)) != str(model_dir):
        return [f"A sentence-transformers model: the encoder in `{Path(transformer_path(str(model_dir))).name}/`, its pooling, "
                f"and the head as a Dense module. `SentenceTransformer(DIR).encode(texts)` returns the logits (a column per "
                f"entry of the {task.output_noun} above, in that order). "
                "`transformers.pipeline` refuses the directory (no config.json at its top): no transformers class holds "
                "a linear head on a pooled sentence vector, and loading the encoder alone would give a random head."]
    if (Path(model_dir) / HEAD_FILE).is_file():  # a SetFit run from before its head became a Dense module
        return [f"`SentenceTransformer(DIR).encode(texts, normalize_embeddings=True)` returns the embeddings; the logits are "
                f"`embedding @ W.T + b` with W and b in `{HEAD_FILE}`. Do not load it with `transformers.pipeline`: "
                "its config.json is the bare encoder's, and the pipeline would add a random head."]
    return ["`SentenceTransformer(DIR).encode(texts)` returns the embeddings (normalised: cosine similarity is their dot "
            "product). transformers' `AutoModel` loads the bare encoder (token vectors, no pooling) and no head."]


def card_text(cfg: RunConfig, metrics: Dict, model_dir: Optional[Path] = None) -> str:
    from ..models.loading import is_sentence_model

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
        header(cfg, metrics, "sentence-transformers" if model_dir is not None and is_sentence_model(model_dir) else "transformers"),
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
        *loading_lines(model_dir, task),
        "",
        "```python",
        "from encoderfit import Predictor   # applies the head fitted on validation",
        'model = Predictor.from_pretrained("path/to/model")',
        *task.pages.plain_usage(cfg),
        "```",
        "",
    ])


def write_card(model_dir, cfg: RunConfig, metrics: Dict) -> Path:
    folder = Path(model_dir.path if hasattr(model_dir, "path") else model_dir)
    path = folder / "README.md"
    with atomic_file(path) as handle:
        handle.write(card_text(cfg, metrics, folder))
    return path
