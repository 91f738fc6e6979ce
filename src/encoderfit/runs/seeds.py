"""Several seeds on one split (`--train.seeds K`): how much a result owes to luck, and ensembles.

Each seed trains in RUN/members/seed-S/ (a run directory of its own, so a crash resumes the member it stopped in and
keeps the finished ones). Every member is evaluated on validation and test under its own head; the spread (mean,
sd, range) of each metric goes into metrics.json. The run then keeps the member best on validation, or, with
`--train.ensemble true`, all of them as one model:

- a weight average (a "model soup", Wortsman et al. 2022): one forward pass, a plain transformers model; or
- a logit average: one forward pass per member (model/members/seed-S/ beside the best member's own weights).

The soup is chosen when it scores at least as well on validation as the logit average (the task's primary metric,
each under a head fitted on validation); members fine-tuned from one pretrained model often average well, but not
always (their output layers start from different random draws), so it is measured, not assumed.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Dict, List

from ..core.runconfig import RunConfig
from ..core.distributed import is_main
from ..core.files import write_json
from .rundir import ModelDir, Predictions, RunDir

log = logging.getLogger(__name__)
MEMBERS = RunDir.MEMBERS


def _member(prep, cfg: RunConfig, home: Path, seed: int) -> Path:
    """Train (or resume, or reuse) the member with this seed; its run directory."""
    from .training import resume_point, train_model

    directory = home / f"seed-{seed}"
    if (directory / RunDir.MODEL / ModelDir.INFO).is_file() and (directory / RunDir.METRICS).is_file():
        log.info("seed %d: trained before; reusing %s", seed, directory)
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    member_cfg = replace(cfg, train=replace(cfg.train, seed=seed, seeds=1, ensemble=False))
    member_cfg.save(directory)
    train_model(prep, member_cfg, directory, resume_point(directory, insist=False))
    return directory


def _predictions(predictor, splits) -> Dict[str, Predictions]:
    from .verdict import predict_split

    return {role: predict_split(predictor, ds) for role, ds in (("validation", splits.validation), ("test", splits.test))}


def _scores(task, preds: Dict[str, Predictions], cfg: RunConfig) -> Dict[str, Dict[str, float]]:
    """Each split's summary metrics under a head fitted on this validation split."""
    head = task.scoring.fit_head(preds["validation"], cfg.labels, cfg)
    out = {}
    for role, p in preds.items():
        m = task.scoring.analyse(p, cfg.labels, head, cfg)
        out[role] = {key: m[key] for key, _ in task.summary if isinstance(m.get(key), (int, float))}
    return out


def soup(members: List[Path], target: Path) -> None:
    """The members' weights averaged, written as a model directory (config and tokenizer from the first); every
    weights file is averaged (a sentence-transformers directory keeps its head in 2_Dense/)."""
    from safetensors.numpy import load_file, save_file

    shutil.copytree(members[0], target)
    for file in sorted(p.relative_to(members[0]) for p in members[0].rglob("*.safetensors")):
        weights = [load_file(m / file) for m in members]
        averaged = {k: (sum(w[k].astype("float64") for w in weights) / len(weights)).astype(weights[0][k].dtype) for k in weights[0]}
        save_file(averaged, str(target / file), metadata={"format": "pt"})


def attach_members(model_dir: Path, members: Dict[int, Path]) -> None:
    """Make `model_dir` a logit-average ensemble of the member model directories (seed -> directory): each copied
    whole into model_dir/members/seed-S (a sentence-transformers member keeps its pooling and head in 1_Pooling/ and
    2_Dense/, without which it would load with an untrained head of the wrong size) and named in encoderfit.json."""
    info = ModelDir(model_dir).info()
    for seed, member in members.items():
        shutil.copytree(member, model_dir / MEMBERS / f"seed-{seed}", ignore=shutil.ignore_patterns(MEMBERS, "README.md"))
    info.members = [f"{MEMBERS}/seed-{seed}" for seed in members]
    ModelDir(model_dir).write_info(info)


def train_seeds(prep, cfg: RunConfig, workdir: Path):
    """Train cfg.train.seeds members; leave the kept model in workdir/model and the spread in metrics.json.
    Returns None: the final evaluation reloads the kept model from disk."""
    from .predictor import Predictor
    from ..core.stats import spread

    task, home = prep.task, workdir / MEMBERS
    seeds = [cfg.train.seed + k for k in range(cfg.train.seeds)]
    members, preds, scores, best_values = [], {}, {}, {}
    for seed in seeds:
        directory = _member(prep, cfg, home, seed)
        members.append(directory)
        if not is_main():  # every process trains each member; the main one evaluates and writes
            continue
        preds[seed] = _predictions(Predictor.from_pretrained(directory), prep.splits)
        scores[seed] = _scores(task, preds[seed], cfg)
        best_values[seed] = RunDir(directory).metrics()["train"]["best_checkpoint"]["value"]
        log.info("seed %d: %s", seed, scores[seed])
    if not is_main():
        return None
    keys = {role: list(scores[seeds[0]][role]) for role in ("validation", "test")}
    summary = {"seeds": seeds, "members": {str(s): scores[s] for s in seeds},
               "spread": {role: {k: spread([scores[s][role][k] for s in seeds]) for k in keys[role]} for role in keys}}
    primary = task.summary[0][0]
    greater = task.scoring.greater_is_better(primary)
    if not cfg.train.ensemble:
        direction = task.metrics_for_best[cfg.train.metric_for_best]
        chosen = (max if direction else min)(seeds, key=lambda s: best_values[s])
        summary["kept"] = {"kind": "best member", "seed": chosen, "by": f"validation {cfg.train.metric_for_best}"}
        shutil.copytree(members[seeds.index(chosen)] / RunDir.MODEL, workdir / RunDir.MODEL)
    else:
        summary["kept"] = _ensemble(task, prep, cfg, workdir, members, seeds, preds, primary, greater)
    chosen_dir = members[seeds.index(summary["kept"].get("seed", seeds[0]))]
    shutil.copytree(chosen_dir / RunDir.LOGS, workdir / RunDir.LOGS, dirs_exist_ok=True)
    cfg.resolved = {**RunDir(chosen_dir).config().resolved, "seeds": seeds}
    RunDir(workdir).save_config(cfg)
    train_section = RunDir(chosen_dir).metrics()["train"]
    write_json(workdir / RunDir.METRICS, {"train": {**train_section, "seeds": summary}})
    for role in ("validation", "test"):
        log.info("%d seeds, %s: %s", len(seeds), role,
                 ", ".join(f"{k} {v['mean']:.4f} ± {v['sd']:.4f}" for k, v in summary["spread"][role].items()))
    shutil.rmtree(home)  # the kept model, the spread and the chosen member's logs are in the run now
    return None


def _ensemble(task, prep, cfg: RunConfig, workdir: Path, members: List[Path], seeds: List[int], preds: Dict,
              primary: str, greater: bool) -> Dict:
    """Soup or logit average, whichever scores better on validation; the kept model goes to workdir/model."""
    import numpy as np

    from .predictor import Predictor

    mean_logits = {role: np.mean([preds[s][role].logits for s in seeds], axis=0) for role in ("validation", "test")}
    first = preds[seeds[0]]
    averaged = {role: Predictions(first[role].texts, first[role].pairs, first[role].targets, mean_logits[role]) for role in first}
    logit_score = _scores(task, averaged, cfg)["validation"][primary]
    soup(members=[m / RunDir.MODEL for m in members], target=workdir / "soup")
    soup_score = _scores(task, _predictions(Predictor.from_pretrained(workdir / "soup"), prep.splits), cfg)["validation"][primary]
    soup_wins = soup_score >= logit_score if greater else soup_score <= logit_score
    decision = {"kind": "weight average" if soup_wins else "logit average", "members": len(seeds), "seeds": seeds,
                "validation": {"weight average": soup_score, "logit average": logit_score, "metric": primary}}
    if soup_wins:
        (workdir / "soup").rename(workdir / RunDir.MODEL)
    else:
        shutil.rmtree(workdir / "soup")
        best = max(seeds, key=lambda s: _scores(task, preds[s], cfg)["validation"][primary] * (1 if greater else -1))
        shutil.copytree(members[seeds.index(best)] / RunDir.MODEL, workdir / RunDir.MODEL)
        attach_members(workdir / RunDir.MODEL, {seed: member / RunDir.MODEL for seed, member in zip(seeds, members)})
        decision["seed"] = best
    log.info("ensemble of %d seeds: %s (validation %s: weight average %.4f, logit average %.4f)", len(seeds),
             decision["kind"], primary, soup_score, logit_score)
    return decision
