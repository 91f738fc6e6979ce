"""Experiment trackers: `--train.report_to wandb` and `--train.report_to mlflow`, one run per encoderfit run.

The tracker's run is opened here before training, so the transformers Trainer's own callbacks (WandbCallback,
MLflowCallback) log the training curves into it instead of opening their own; when the run is evaluated, this module
adds what only encoderfit knows: the resolved config as parameters, the final metrics with their confidence intervals,
the verdict against the baseline as tags/summary, and the model directory (W&B: a `model` artifact; MLflow: a pyfunc
model that `mlflow.pyfunc.load_model` loads back and predicts with, plus metrics.json and report.html).

An interrupted run resumed with the same command continues the same tracker run: its ids are kept in the work
directory (logs/trackers.json). Each tracker reads its usual environment variables:
  W&B: WANDB_API_KEY, WANDB_PROJECT (default "encoderfit"), WANDB_ENTITY, WANDB_MODE=offline (no network),
       WANDB_DIR (default ./wandb).
  MLflow: MLFLOW_TRACKING_URI (e.g. sqlite:///mlflow.db, http://host:5000; default ./mlruns),
       MLFLOW_EXPERIMENT_NAME (default "encoderfit").
Only the main process of a multi-process launch tracks. Secrets are read from the environment by the trackers
themselves, never logged.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional

from ..core.distributed import is_main
from ..core.runconfig import flat

log = logging.getLogger(__name__)
TRACKERS = ("wandb", "mlflow")
IDS = Path("logs") / "trackers.json"  # in the run's work directory: the tracker runs to continue on resume


def final_figures(results: Dict) -> Dict[str, float]:
    """The figures a tracker shows for a finished run: each split's (and the baseline's) scalar metrics, the test
    metrics' confidence bounds and the verdict's difference and p-value."""
    figures: Dict[str, float] = {}
    for split in ("validation", "test", "baseline"):
        for key, value in (results.get(split) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                figures[f"{split}/{key}"] = float(value)
    for key, ci in ((results.get("test") or {}).get("ci") or {}).items():
        if isinstance(ci, dict) and "low" in ci:
            figures[f"test/{key}_ci_low"], figures[f"test/{key}_ci_high"] = float(ci["low"]), float(ci["high"])
    verdict = verdict_of(results)
    if verdict:
        difference = verdict.get("difference") or {}
        for key in ("difference", "low", "high"):
            if key in difference:
                figures[f"verdict/{key}"] = float(difference[key])
        if verdict.get("p_value") is not None:
            figures["verdict/p_value"] = float(verdict["p_value"])
    return figures


def verdict_of(results: Dict) -> Optional[Dict]:
    return (results.get("comparison") or {}).get("verdict")


def parameters(config: Dict) -> Dict[str, str]:
    """The resolved config as flat "group.setting" parameters (lists and mappings as JSON)."""
    return {key: value if isinstance(value, str) else json.dumps(value, default=str) for key, value in flat(config).items()}


class Trackers:
    """The tracker runs of one encoderfit run (none when --train.report_to names neither tracker)."""

    def __init__(self, names: List[str], workdir: Path, name: str):
        self.names, self.workdir, self.name = names, workdir, name
        self.ids: Dict[str, str] = {}

    @classmethod
    def start(cls, config: Dict, report_to: List[str], workdir: Path, name: str) -> "Trackers":
        """Open (or, after an interruption, reopen) each tracker's run and log the resolved config into it."""
        trackers = cls([n for n in report_to if n in TRACKERS] if is_main() else [], workdir, name)
        if not trackers.names:
            return trackers
        ids_file = workdir / IDS
        before = json.loads(ids_file.read_text()) if ids_file.is_file() else {}
        tags = {"encoderfit.task": str(config.get("task")), "encoderfit.model": str((config.get("model") or {}).get("name_or_path"))}
        if "wandb" in trackers.names:
            import wandb

            run = wandb.init(project=os.environ.get("WANDB_PROJECT", "encoderfit"), name=name, id=before.get("wandb"),
                             resume="allow", job_type="train", config=parameters(config), tags=sorted(tags.values()))
            trackers.ids["wandb"] = run.id
        if "mlflow" in trackers.names:
            import mlflow

            if os.environ.get("MLFLOW_TRACKING_URI"):  # the environment names the store of this run (as the CLI reads it)
                mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
            if before.get("mlflow"):
                run = mlflow.start_run(run_id=before["mlflow"])
            else:
                mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "encoderfit"))
                run = mlflow.start_run(run_name=name, tags=tags)
                mlflow.log_params(parameters(config))
            trackers.ids["mlflow"] = run.info.run_id
        ids_file.parent.mkdir(parents=True, exist_ok=True)
        ids_file.write_text(json.dumps(trackers.ids))
        log.info("tracking in %s", ", ".join(f"{k} run {v}" for k, v in trackers.ids.items()))
        return trackers

    def finish(self, results: Dict, run_dir: Path, predictor: bool = True) -> None:
        """Log the evaluated run: figures, verdict, model (for MLflow a pyfunc model where `predictor`, else the
        directory's files); then close the tracker runs."""
        figures, verdict = final_figures(results), verdict_of(results) or {}
        outcome = verdict.get("outcome")
        if "wandb" in self.names:
            import wandb

            run = wandb.run
            run.summary.update(figures)
            if outcome:
                run.summary["verdict"] = outcome
                run.summary["verdict_sentence"] = verdict.get("sentence", "")
                run.tags = tuple(run.tags or ()) + (f"verdict: {outcome}",)
            artifact = wandb.Artifact(f"model-{wandb_name(self.name)}", type="model", metadata={"figures": figures})
            artifact.add_dir(str(run_dir / "model"))
            run.log_artifact(artifact)
            wandb.finish()
        if "mlflow" in self.names:
            import mlflow

            mlflow.log_metrics(figures)
            if outcome:
                mlflow.set_tags({"verdict": outcome, "verdict.sentence": verdict.get("sentence", "")[:5000]})
            for name in ("metrics.json", "report.html", "config.yaml"):
                if (run_dir / name).is_file():
                    mlflow.log_artifact(str(run_dir / name))
            if predictor:
                log_mlflow_model(run_dir / "model")
            else:
                mlflow.log_artifacts(str(run_dir / "model"), "model")
            mlflow.end_run()

    def fail(self) -> None:
        """Close the tracker runs of a run that failed or was interrupted (resuming reopens them)."""
        if "wandb" in self.names:
            import wandb

            wandb.finish(exit_code=1)
        if "mlflow" in self.names:
            import mlflow

            mlflow.end_run(status="KILLED")


def wandb_name(name: str) -> str:
    """An artifact name W&B accepts (letters, digits, dashes, underscores, dots)."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name) or "run"


def log_mlflow_model(model_dir: Path):
    """The model directory as an MLflow pyfunc model: `mlflow.pyfunc.load_model(uri).predict(["a text", ...])`."""
    import warnings

    import mlflow

    from .. import __version__

    with warnings.catch_warnings():  # MLflow asks for type hints on predict(), which would narrow its input to texts
        warnings.simplefilter("ignore", UserWarning)
        from .mlflow_model import EncoderfitModel

        return mlflow.pyfunc.log_model(name="model", python_model=EncoderfitModel(), artifacts={"model": str(model_dir)},
                                       pip_requirements=[f"encoderfit=={__version__}"])
