"""A fine-tuning run's life in its directory: a new run or a resumed one (`continues`, `check_start`), what an
interrupted one leaves (`abandon`), and the finished run published (`finish_run`, `train_run`, seeds included).
Used by every command that trains (train, tune, cv, distill, compress, retrain, pretrain)."""

from __future__ import annotations

import gc
import logging
import shutil
from pathlib import Path
from typing import Callable, Dict, List, Literal, Optional
from ..core.checkpoints import checkpoints_in, newest_complete
from ..core.args import TrainArgs
from ..core.runconfig import RunConfig, flat
from ..core.distributed import barrier, is_main, join, share
from ..core.errors import UserError
from ..core.files import check_writable, partial_dir, publish_dir
from .rundir import ModelDir, RunDir
from .background import baseline_beside_training
from .tracking import Trackers, check_trackers
from ..tasks import LABELLED
from .training import Prepared, resume_point, train_model

log = logging.getLogger(__name__)


TaskName = Literal[tuple(LABELLED)]  # the registry's fine-tuning tasks: --task's choices (mlm: `encoderfit pretrain`)


# Settings that may change between an interrupted run and its resumption without changing what is computed.
RESUMABLE_CHANGES = {"report", "train.report_to", "train.num_workers", "train.torch_compile", "train.logging_steps", "train.save_steps",
                     "train.keep_checkpoints", "train.eval_batch_size"}


def config_changes(before, now) -> List[str]:
    """Settings that differ between two runs (configs, or their saved mappings), ignoring those that do not change
    the result."""
    a, b = (flat({k: v for k, v in (c if isinstance(c, dict) else c.to_dict()).items() if k not in ("resolved", "labels")})
            for c in (before, now))
    changed = []
    for key in sorted(set(a) | set(b)):
        if key.split(".")[0] in RESUMABLE_CHANGES or key in RESUMABLE_CHANGES:
            continue
        if a.get(key) != b.get(key):
            changed.append(f"{key} was {a.get(key)!r}, now {b.get(key)!r}")
    return changed


def trained_already(workdir: Path) -> bool:
    """Training finished in `workdir` (model/ and metrics.json's train section are its last writes) and only the
    evaluation is left: a run whose evaluation failed is finished without training again."""
    metrics = workdir / RunDir.METRICS
    return (workdir / RunDir.MODEL / ModelDir.INFO).is_file() and metrics.is_file() and "train" in RunDir(workdir).metrics()


def _progress(workdir: Path) -> List[Path]:
    """What an interrupted run left to continue from: a trained model, checkpoints, or members of a several-seed run."""
    if trained_already(workdir):
        return [workdir / RunDir.MODEL]
    members = sorted((workdir / RunDir.MEMBERS).glob("seed-*")) if (workdir / RunDir.MEMBERS).is_dir() else []
    return checkpoints_in(workdir / RunDir.CHECKPOINTS) + members


def continues(workdir: Path, cfg, resume: Optional[bool]) -> bool:
    """Whether to continue the interrupted run in `workdir` (its config, of cfg's type, must match) or start afresh.
    resume None means "if an interrupted run is there"."""
    if resume is False or not _progress(workdir):
        if resume:
            raise UserError(f"--resume: no interrupted run to resume in {workdir}; run without --resume to start one")
        return False
    try:
        before = type(cfg).load(workdir)
    except (UserError, TypeError, ValueError):
        before = None
    changes = ["its config.yaml is missing or unreadable"] if before is None else config_changes(before, cfg)
    if changes:
        raise UserError(f"{workdir} holds an interrupted run with another config ({changes[0]}); run the same config "
                        "to resume it, or pass --resume false to discard it and start over")
    return True


def abandon(workdir: Path, interrupted: bool) -> None:
    """After a failure: keep the directory when it holds a trained model, a checkpoint or a member to resume from,
    else remove it; say which."""
    if trained_already(workdir):
        log.warning("the evaluation failed after training; the trained model is kept in %s: run the same command "
                    "again to evaluate it without training again", workdir)
        return
    kept = newest_complete(workdir / RunDir.CHECKPOINTS) or any((workdir / RunDir.MEMBERS).glob("seed-*/model")) or any(
        newest_complete(m / RunDir.CHECKPOINTS) for m in (workdir / RunDir.MEMBERS).glob("seed-*"))
    if not kept:
        shutil.rmtree(workdir, ignore_errors=True)
        if interrupted:
            log.warning("training stopped before its first complete checkpoint: nothing kept")
    else:
        log.warning("training stopped; checkpoints kept in %s: run the same command again to resume", workdir)


def check_start(output_dir: Path, overwrite: bool, train: TrainArgs) -> Path:
    """Before any work: the output directory can be written (and replaced only with --overwrite), the machine has
    what training needs; then join the other processes of a multi-process launch."""
    out = Path(output_dir)
    if out.exists() and not overwrite:
        raise UserError(f"output_dir: {out} already exists; pass --overwrite true to replace it, or choose another --output_dir")
    check_writable(out, "output_dir")
    train.check_runnable()
    check_trackers(train.report_to)  # a server that does not answer, a refused key: before any work, in seconds
    join()
    return out


def finish_run(prep: Prepared, cfg: RunConfig, workdir: Path, out: Path, model=None,
               more: Optional[Callable[[RunDir, Dict], Dict]] = None, baseline_fit: Optional[Callable[[], Dict]] = None) -> Dict:
    """Evaluate the trained model in `workdir` (in memory when given, else from model/) and publish it as `out`.
    `more(run, results)` adds sections to the results (a distilled student's tests against its teacher) before the
    metrics, report and card are written for the last time."""
    from .evaluation import evaluate_run
    from .predictor import Predictor
    from .report import write_report
    from ..core.tables import print_evaluation

    run = RunDir(workdir)
    precision = "fp32" if prep.precision == "fp32" else "auto"  # a run trained in fp32 predicts in fp32; else bf16 on a GPU
    predictor = (Predictor(model, prep.tokenizer, run.model.info(), precision=precision) if model is not None
                 else Predictor.from_pretrained(workdir, precision=precision))
    results = evaluate_run(run, cfg, predictor, prep.splits, baseline_fit=baseline_fit)
    if more is not None:
        results.update(more(run, results))
        run.write_metrics(results)
        write_report(run, cfg, results)
    publish_dir(workdir, out)
    print_evaluation(results, "test", prep.task, prep.splits.labels)
    return results


def train_run(prep: Prepared, cfg: RunConfig, out: Path, resume: Optional[bool],
              more: Optional[Callable[[RunDir, Dict], Dict]] = None) -> None:
    """Train `prep` under `cfg` in out's hidden work directory (continuing an interrupted run of the same config),
    evaluate it and publish it as `out` (finish_run, with `more`); on failure keep what can be resumed."""
    train = cfg.train
    workdir = partial_dir(out)
    keep = share(continues(workdir, cfg, resume) if is_main() else None)
    if is_main() and not keep:
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        cfg.save(workdir)  # what a later run compares itself with before resuming
    barrier()
    trackers = Trackers([], workdir, out.name)
    baseline = baseline_beside_training(prep.task, prep.splits, cfg, prep.max_length) if is_main() else None  # on a GPU: a thread, now
    try:
        trackers = Trackers.start(cfg.to_dict(), train.report_to, workdir, out.name)  # on failure: nothing left behind
        if keep and trained_already(workdir):
            log.info("%s holds a trained model whose evaluation did not finish: evaluating it", workdir)
            cfg, model = RunConfig.load(workdir), None
        elif train.seeds > 1:
            from .seeds import train_seeds

            model = train_seeds(prep, cfg, workdir)
        else:
            checkpoint = share(str(resume_point(workdir, bool(resume)) or "") if is_main() and keep else "")
            trained = train_model(prep, cfg, workdir, checkpoint or None)
            model = None if trained.stale else trained.trainer.model
            del trained  # the Trainer (optimizer state, data loaders, the sampler's per-row lengths) freed before evaluating
            gc.collect()  # it holds reference cycles (callbacks, accelerate)
        if not is_main():
            return
        results = finish_run(prep, cfg, workdir, out, model, more, baseline.result if baseline else None)
    except BaseException as err:
        if is_main():
            trackers.fail()
            abandon(workdir, interrupted=not isinstance(err, Exception))
        raise
    trackers.finish(results, out)
