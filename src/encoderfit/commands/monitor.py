"""`encoderfit monitor`: a window of logged traffic (runs/predlog.py) against the run's validation split. Has the
input changed (lengths, unknown tokens, the model's own sentence vectors), have the predictions changed (label shares,
confidence), what accuracy do the confidences imply, and what do the feedback labels say? An HTML report and JSON,
and exit code 3 when an alarm fires, so a cron job or CI step can act on it (docs/monitoring.md).

The drift tests are the registry's (runs/drift/: length, unknown tokens, label shares, confidence, sentence vectors,
and any test registered there) and one family: an alarm needs p < alpha / k for the k tests that ran (Bonferroni), so on
traffic like the validation split the chance of any false alarm stays under alpha.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ..core import drift
from ..core.errors import UserError
from ..core.files import atomic_file, check_writable, write_json
from ..runs.drift import DRIFT_TESTS, DriftOptions, Window
from ..runs.predlog import PredictionLog
from ..runs.rundir import RunDir
from ..tasks import get_task

logger = logging.getLogger(__name__)
EXIT_ALARM = 3
UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass
class MonitorResult:
    """What `monitor` found: the JSON it wrote (`figures`), the alarms that fired, where the report is."""

    figures: Dict
    alarms: List[str] = field(default_factory=list)
    report: Optional[Path] = None

    @property
    def exit_code(self) -> int:
        return EXIT_ALARM if self.alarms else 0


def parse_since(value: Optional[str], now: float, flag: str = "--since") -> Optional[float]:
    """'24h', '7d', '30m', '2w' (that long ago) or an ISO date/time ('2026-12-01', '2026-12-01T08:00') -> epoch seconds.
    `flag`: the option the value came from, named when it is neither."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*", value)
    if match:
        return now - float(match.group(1)) * UNITS[match.group(2)]
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise UserError(f"{flag}: '{value}' is neither a duration (30m, 24h, 7d, 2w) nor a date (2026-12-01 or "
                        "2026-12-01T08:00)") from None


def _abstained(frame) -> int:
    """Logged rows answered with an abstention (UNKNOWN): `Decoding.monitored` marks them in `detail` and keeps the
    model's own top label in `label`, so label shares compare like with like against validation, where none abstains."""
    count = 0
    for detail in frame["detail"].dropna():
        try:
            count += json.loads(detail).get("abstained") is True
        except (ValueError, AttributeError):  # a hand-edited detail: not an abstention mark
            continue
    return count


def _as_logged(value) -> str:
    """A feedback label (its JSON) in the form the log keeps decisions: a label, or labels joined by '|'."""
    value = json.loads(value)
    return "|".join(sorted(value)) if isinstance(value, list) else str(value)


def compute(run: RunDir, store: PredictionLog, since: Optional[float], until: Optional[float], alpha: float,
            max_drop: float, min_rows: int, max_rows: int, permutations: int, embeddings: bool) -> Dict:
    """Every figure of the monitoring report (what monitor.json holds): each registered drift test (runs/drift/)
    whose needs the window meets, the alarm threshold alpha / k for the k of them that gave a p-value (Bonferroni)."""
    cfg = run.config()
    task = get_task(cfg.task, "predict", cfg.options)
    head = run.model.info().head or {}
    fingerprint = run.model.fingerprint()
    frame = store.frame(since=since, until=until)
    others = int((frame["model"] != fingerprint).sum())
    frame = frame[frame["model"] == fingerprint].reset_index(drop=True)
    out: Dict = {"run": str(run.path), "log": str(store.path), "model_sha256": fingerprint, "rows": len(frame),
                 "other_models_rows": others, "since": since, "until": until, "alpha": alpha, "max_drop": max_drop,
                 "window": [float(frame["time"].min()), float(frame["time"].max())] if len(frame) else None, "tests": {},
                 "abstained": _abstained(frame), "alarms": []}
    if others:
        logger.warning("%d logged predictions in the window came from another model than %s's; they are left out", others, run.path)
    val = run.require_predictions("validation", task, cfg.labels)
    metrics = run.metrics()
    out["feedback"] = _feedback(store, fingerprint, task, metrics, alpha, max_drop, out["alarms"], since, until)
    if len(frame) < min_rows:
        out["status"] = f"too few predictions: {len(frame)} of this model in the window, at least {min_rows} needed (--min_rows)"
        return out
    out["status"] = "tested"
    window = Window(run, task, cfg.labels, head, val, frame, out, DriftOptions(min_rows, max_rows, permutations))
    switches = {"embeddings": embeddings}
    tests = out["tests"]
    for test in DRIFT_TESTS.values():
        if switches.get(test.switch, True) and all(window.has(signal) for signal in test.needs):
            tests[test.name] = test.compute(window)
    ran = {k: t for k, t in tests.items() if t and t.get("p_value") is not None}
    threshold = alpha / max(1, len(ran))
    out["threshold"] = threshold
    for name, t in ran.items():
        t["alarm"] = t["p_value"] < threshold
        if t["alarm"]:
            out["alarms"].append(f"{name} drift: p = {t['p_value']:.3g} < {threshold:.3g} (alpha {alpha:g} / {len(ran)} tests)")
    splits = {"validation": val, "test": run.predictions("test", task, cfg.labels)}
    out["accuracy"] = _accuracy(task, splits, cfg.labels, head, frame, metrics, max_drop, out["alarms"])
    out["over_time"] = _over_time(frame, cfg.labels)
    out["histograms"] = out.pop("histograms")  # the report's figures' samples, last (monitor.json leaves them out)
    return out


def _accuracy(task, splits: Dict, labels, head, frame, metrics: Dict, max_drop: float, alarms: List[str]) -> Optional[Dict]:
    """ATC and CBPE on the window. Their reference is every labelled held-out split the run kept (validation and test):
    validation alone chose the checkpoint (and the temperature), which makes it optimistic, and a reference twice
    the size halves the variance of ATC's threshold."""
    pairs = {name: task.scoring.confidence_correct(p, labels, head) for name, p in splits.items() if p is not None}
    pairs = {name: pair for name, pair in pairs.items() if pair is not None}
    if not pairs or frame["confidence"].isna().any():
        return None
    confidence = np.concatenate([np.asarray(c, np.float64) for c, _ in pairs.values()])
    correct = np.concatenate([np.asarray(ok, bool) for _, ok in pairs.values()])
    estimates = drift.accuracy_estimates(confidence, correct, frame["confidence"].to_numpy())
    key = task.scoring.agreement_metric
    test = (metrics.get("test") or {}).get(key)
    estimates["test"] = {"metric": key, "value": test, "ci": ((metrics.get("test") or {}).get("ci") or {}).get(key)}
    estimates["reference"] = {"splits": list(pairs), "n": int(len(correct)), "accuracy": float(correct.mean())}
    if test is not None and estimates["atc"]["high"] < test - max_drop:
        alarms.append(f"estimated accuracy (ATC) {estimates['atc']['estimate']:.3f} (95% CI up to {estimates['atc']['high']:.3f}) "
                      f"is more than {max_drop:g} under the test {key} {test:.3f}")
    return estimates


def _feedback(store: PredictionLog, fingerprint: str, task, metrics: Dict, alpha: float, max_drop: float,
              alarms: List[str], since: Optional[float] = None, until: Optional[float] = None) -> Dict:
    """Accuracy on the feedback labels of this model's predictions made in the window (by prediction time, however
    late the label came), against the test figure."""
    labelled = store.labelled()
    rows = labelled[(labelled["model"] == fingerprint) & labelled["predicted"].notna()]
    if since is not None:
        rows = rows[rows["predicted_time"] >= since]
    if until is not None:
        rows = rows[rows["predicted_time"] < until]
    key = task.scoring.agreement_metric
    out = {"labels": int(len(labelled)), "matched": int(len(rows)), "metric": key}
    test = metrics.get("test") or {}
    if key is None or not len(rows) or test.get(key) is None:
        return out
    right = int(sum(_as_logged(label) == predicted for label, predicted in zip(rows["label"], rows["predicted"])))
    n_test = int(test.get("n") or 0)
    out.update(drift.proportion_test(right, len(rows), round(test[key] * n_test), n_test))
    if out.get("p_value") is not None and out["p_value"] < alpha and out["value"] < test[key] - max_drop:
        alarms.append(f"accuracy on {len(rows)} feedback labels {out['value']:.3f} (95% CI {out['low']:.3f}-{out['high']:.3f}) "
                      f"is under the test {key} {test[key]:.3f} (p = {out['p_value']:.3g})")
    return out


def _over_time(frame, labels: List[str], bins: int = 20) -> Dict:
    """Label shares and mean confidence in up to `bins` equal slices of the window (by arrival)."""
    edges = np.linspace(0, len(frame), min(bins, len(frame)) + 1).astype(int)
    slices = [frame.iloc[a:b] for a, b in zip(edges[:-1], edges[1:]) if b > a]
    return {"time": [float(s["time"].mean()) for s in slices],
            "shares": {label: [float(s["label"].fillna("").str.split("|").apply(lambda v: label in v).mean()) for s in slices]
                       for label in labels} if frame["label"].notna().any() else {},
            "confidence": [float(s["confidence"].mean()) if s["confidence"].notna().any() else None for s in slices]}


def check_output_dir(out: Path) -> None:
    """--output (a directory for monitor.html and monitor.json) refused at once, before any work, when it cannot be
    written: a file there, or under a file, or a place this user cannot write."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--output: {out} is a file; give a directory for monitor.html and monitor.json, e.g. {out.parent / 'monitor'}")
    for name in ("monitor.html", "monitor.json"):
        if (out / name).is_dir():
            raise UserError(f"--output: {out / name} is a directory; remove it or give another --output directory")
    check_writable(out / "monitor.html" if out.is_dir() else out, "--output")


def monitor(
    run: Path,
    log: Optional[Path] = None,
    since: Optional[str] = None,
    until: Optional[str] = None,
    output: Optional[Path] = None,
    alpha: float = 0.01,
    max_drop: float = 0.05,
    min_rows: int = 50,
    max_rows: int = 2000,
    permutations: int = 1000,
    embeddings: bool = True,
) -> MonitorResult:
    """Compare logged traffic with the run's validation split: drift, label-free accuracy, feedback; exit 3 on an alarm.

    Writes OUTPUT/monitor.html and OUTPUT/monitor.json. Exit codes: 0 no alarm, 3 an alarm fired (the message says
    which), 2 a usage error.

    Args:
        run: The run directory whose model is served (`serve RUN --log PATH`).
        log: The prediction log (SQLite) the server or `predict --log` wrote.
        since: Start of the window: a duration back from now (30m, 24h, 7d, 2w) or a date/time (2026-12-01T08:00).
            Default: everything logged.
        until: End of the window, in the same forms. Default: now.
        output: Directory for monitor.html and monitor.json. Default: RUN/monitor.
        alpha: Chance of any false drift alarm on unchanged traffic (split over the tests run, Bonferroni).
        max_drop: An accuracy estimate or feedback accuracy this far under the test figure (and significantly so)
            raises an alarm.
        min_rows: Fewest predictions in the window to test at all (fewer: reported, no alarm).
        max_rows: Most texts on each side of the embedding test (a seeded sample beyond).
        permutations: Permutations of the embedding test (its smallest p-value is 1 / (permutations + 1)).
        embeddings: Run the embedding test (needs the texts: `serve --log_texts`).
    """
    from ..runs.monitor_report import render

    if log is None:
        raise UserError("--log is missing: name the prediction log (the file given to serve/predict --log)")
    if not 0 < alpha < 1 or max_drop < 0 or min_rows < 2 or max_rows < 10 or permutations < 10:
        raise UserError("monitor: alpha must be in (0, 1), max_drop >= 0, min_rows >= 2, max_rows >= 10, permutations >= 10")
    rundir = RunDir(Path(run).resolve())
    rundir.config()
    now = time.time()
    start, end = parse_since(since, now), parse_since(until, now, "--until")
    out = Path(output) if output is not None else rundir.path / "monitor"
    check_output_dir(out)
    store = PredictionLog(Path(log), readonly=True)  # read-only: monitor changes nothing in the log
    try:
        figures = compute(rundir, store, start, end, alpha, max_drop, min_rows, max_rows, permutations, embeddings)
    finally:
        store.close()
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / "monitor.html") as handle:
        handle.write(render(figures))
    write_json(out / "monitor.json", {k: v for k, v in figures.items() if k != "histograms"})
    for alarm in figures["alarms"]:
        logger.warning("ALARM: %s", alarm)
    logger.info("%s; %s; report: %s", figures["status"], f"{len(figures['alarms'])} alarm(s)" if figures["alarms"] else "no alarm",
             out / "monitor.html")
    return MonitorResult(figures, list(figures["alarms"]), out / "monitor.html")
