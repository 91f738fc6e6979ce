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
themselves, never logged. Before any work, check_trackers tries what each tracker needs (W&B's key against its
server, MLflow's URI and server, each within seconds), so a closed port or a refused key is one line, not minutes of
retries; `launch` makes the same check for a run elsewhere.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional

from ..core.distributed import is_main
from ..core.errors import UserError
from ..core.runconfig import flat

log = logging.getLogger(__name__)
TRACKERS = ("wandb", "mlflow")
IDS = Path("logs") / "trackers.json"  # in the run's work directory: the tracker runs to continue on resume
CHECK_TIMEOUT = 5.0  # seconds a tracker's server has to answer before training starts
WANDB_OFFLINE = ("offline", "disabled", "dryrun")
# MLflow's own tracking stores (plugins add theirs under the entry point group "mlflow.tracking_store")
MLFLOW_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc")
OFFLINE_HINT = "or set WANDB_MODE=offline to log here (`wandb sync` uploads the run later)"


def check_trackers(report_to: List[str], env: Optional[Dict[str, str]] = None, remote: bool = False,
                   timeout: float = CHECK_TIMEOUT) -> None:
    """Before any work, in one line each: the trackers of --train.report_to can be used. W&B online needs an API key
    (and, here, its server must accept it); MLflow's MLFLOW_TRACKING_URI must be well formed, its folder or database
    file writable, its server answering. `remote`: for a run on another machine (`encoderfit launch`), which gets
    only the environment's variables and needs a server: the form of the settings is checked, nothing is probed."""
    env = dict(os.environ if env is None else env)
    if "wandb" in report_to:
        _check_wandb(env, remote, timeout)
    if "mlflow" in report_to:
        _check_mlflow(env, remote, timeout)


def _check_wandb(env: Dict[str, str], remote: bool, timeout: float) -> None:
    if env.get("WANDB_MODE", "").lower() in WANDB_OFFLINE:
        return
    base = (env.get("WANDB_BASE_URL") or "https://api.wandb.ai").rstrip("/")
    key = env.get("WANDB_API_KEY") or (None if remote else _netrc_key(base))
    if remote:
        if not key:
            raise UserError("--train.report_to wandb needs WANDB_API_KEY in the environment (`wandb login` prints where "
                            "to find it)")
        return
    if not key:
        raise UserError(f"--train.report_to wandb: no W&B API key (WANDB_API_KEY, or `wandb login`); set one, {OFFLINE_HINT}")
    import base64
    import urllib.request

    auth = base64.b64encode(f"api:{key}".encode()).decode()
    request = urllib.request.Request(f"{base}/graphql", data=json.dumps({"query": "query { viewer { id } }"}).encode(),
                                     headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"})
    status, body = _ask(request, timeout, f"--train.report_to wandb: cannot reach W&B at {base}",
                        f"check the network (or WANDB_BASE_URL), {OFFLINE_HINT}")
    try:
        viewer = (json.loads(body or b"{}").get("data") or {}).get("viewer")
    except ValueError:
        viewer = None
    if status in (401, 403) or (status == 200 and not viewer):
        raise UserError(f"--train.report_to wandb: W&B at {base} refused the API key (HTTP {status}); check WANDB_API_KEY "
                        f"(`wandb login --relogin`), {OFFLINE_HINT}")


def _netrc_key(base: str) -> Optional[str]:
    """The key `wandb login` saved in ~/.netrc for the W&B host."""
    import netrc
    from urllib.parse import urlparse

    try:
        entry = netrc.netrc(os.environ.get("NETRC")).authenticators(urlparse(base).hostname or "")
    except (OSError, netrc.NetrcParseError):
        return None
    return entry[2] if entry else None


def _ask(request, timeout: float, unreachable: str, hint: str):
    """(HTTP status, body) of one request with a short timeout; a server that does not answer is a UserError."""
    import socket
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(1 << 20)
    except urllib.error.HTTPError as err:  # it answered
        return err.code, err.read(1 << 20)
    except (urllib.error.URLError, socket.timeout, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        raise UserError(f"{unreachable} within {timeout:g} s ({reason}); {hint}") from None


def _check_mlflow(env: Dict[str, str], remote: bool, timeout: float) -> None:
    from urllib.parse import urlparse

    uri = env.get("MLFLOW_TRACKING_URI", "").strip()
    if remote:
        if not uri or uri.startswith(("sqlite:", "file:", "./", "/")) or "://" not in uri:
            raise UserError("--train.report_to mlflow needs MLFLOW_TRACKING_URI set to a tracking server the remote machine "
                            f"can reach (http(s)://..., databricks); got {uri or 'nothing'}")
        return
    if not uri:
        return  # MLflow's default: ./mlruns
    fix = "set it to http(s)://HOST:PORT, sqlite:///mlflow.db or a folder"
    try:
        parsed = urlparse(uri)
    except ValueError as err:
        raise UserError(f"MLFLOW_TRACKING_URI {uri!r} is not a valid URI ({err}); {fix}") from None
    scheme = parsed.scheme.lower()
    if len(scheme) == 1:  # a Windows drive letter: a folder
        scheme = ""
    from importlib.metadata import entry_points

    if scheme and scheme not in MLFLOW_SCHEMES and scheme not in {e.name for e in entry_points(group="mlflow.tracking_store")}:
        raise UserError(f"MLFLOW_TRACKING_URI {uri!r}: MLflow has no tracking store for '{scheme}:'; {fix}")
    if scheme in ("http", "https"):
        if not parsed.hostname:
            raise UserError(f"MLFLOW_TRACKING_URI {uri!r} names no host; {fix}")
        import urllib.request

        _ask(urllib.request.Request(uri.rstrip("/") + "/health"), timeout, f"MLFLOW_TRACKING_URI: the MLflow server at {uri} "
             "does not answer", "start it or fix the address, or unset MLFLOW_TRACKING_URI to track in ./mlruns")
    elif scheme in ("", "file", "sqlite"):
        _check_store_path(uri, scheme, parsed.path)


def _check_store_path(uri: str, scheme: str, path: str) -> None:
    """A folder of runs (a path or file:) or an SQLite database file (sqlite:///) that can be written."""
    from ..core.files import check_writable

    if scheme == "sqlite":
        if not uri.lower().startswith("sqlite:///"):
            raise UserError(f"MLFLOW_TRACKING_URI {uri!r}: an SQLite store is sqlite:///relative.db or sqlite:////absolute.db")
        target = Path(uri[len("sqlite:///"):])
        if target.is_dir():
            raise UserError(f"MLFLOW_TRACKING_URI {uri!r}: {target} is a directory, not a database file; name a file, e.g. "
                            f"sqlite:///{target / 'mlflow.db'}")
        if target.is_file() and target.stat().st_size and target.open("rb").read(16) != b"SQLite format 3\x00":
            raise UserError(f"MLFLOW_TRACKING_URI {uri!r}: {target} is not an SQLite database; name a new file or MLflow's "
                            "database")
    else:
        target = Path(path if scheme == "file" else uri).expanduser()
        if target.exists() and not target.is_dir():
            raise UserError(f"MLFLOW_TRACKING_URI {uri!r}: {target} is a file, but MLflow keeps a folder of runs there; "
                            "name a folder, or sqlite:///mlflow.db")
    if not target.exists():
        check_writable(target, "MLFLOW_TRACKING_URI")


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
        try:
            trackers._open(config, name, before)
        except Exception as err:  # the tracker's own errors (refused key, unusable store): one line, its runs closed
            cls([n for n in trackers.names if n in trackers.ids], workdir, name).fail()  # those that opened
            where = {"wandb": "W&B", "mlflow": f"MLflow ({os.environ.get('MLFLOW_TRACKING_URI') or './mlruns'})"}
            failed = next((n for n in ("wandb", "mlflow") if n in trackers.names and n not in trackers.ids), trackers.names[0])
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise UserError(f"--train.report_to {failed}: {where[failed]} could not start a run: {first}; fix its settings "
                            f"(see docs/launch.md), or drop {failed} from --train.report_to") from None
        ids_file.parent.mkdir(parents=True, exist_ok=True)
        ids_file.write_text(json.dumps(trackers.ids))
        log.info("tracking in %s", ", ".join(f"{k} run {v}" for k, v in trackers.ids.items()))
        return trackers

    def _open(self, config: Dict, name: str, before: Dict) -> None:
        """Each tracker's run opened (ids recorded as each one opens)."""
        tags = {"encoderfit.task": str(config.get("task")), "encoderfit.model": str((config.get("model") or {}).get("name_or_path"))}
        if "wandb" in self.names:
            import wandb

            run = wandb.init(project=os.environ.get("WANDB_PROJECT", "encoderfit"), name=name, id=before.get("wandb"),
                             resume="allow", job_type="train", config=parameters(config), tags=sorted(tags.values()))
            self.ids["wandb"] = run.id
        if "mlflow" in self.names:
            import mlflow

            if os.environ.get("MLFLOW_TRACKING_URI"):  # the environment names the store of this run (as the CLI reads it)
                mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
            if before.get("mlflow"):
                run = mlflow.start_run(run_id=before["mlflow"])
            else:
                mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "encoderfit"))
                run = mlflow.start_run(run_name=name, tags=tags)
                mlflow.log_params(parameters(config))
            self.ids["mlflow"] = run.info.run_id

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
