"""`encoderfit monitor`: a window of logged traffic (runs/predlog.py) against the run's validation split. Has the
input changed (lengths, unknown tokens, the model's own sentence vectors), have the predictions changed (label shares,
confidence), what accuracy do the confidences imply, and what do the feedback labels say? An HTML report and JSON,
and exit code 3 when an alarm fires, so a cron job or CI step can act on it (docs/monitoring.md).

The drift tests are one family: an alarm needs p < alpha / k for k tests run (Bonferroni), so on traffic like the
validation split the chance of any false alarm stays under alpha.
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
from ..runs.predlog import PredictionLog, TokenStats
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


def encoder_body(model):
    """The encoder under a task head and under the wrappers inference puts round it (QA's span logits, a pooled
    sentence-transformers module, models/pooling.py): the transformers model whose outputs hold `last_hidden_state`,
    or None where there is none to find."""
    from transformers import PreTrainedModel

    for _ in range(4):
        if isinstance(model, PreTrainedModel):
            return model.base_model  # the model itself when it is a bare encoder
        inner = getattr(model, "encoder", None)
        model = inner if inner is not None else getattr(model, "model", None)
        if model is None:
            return None
    return None


def sentence_vectors(predictor, texts: List[str], pairs: Optional[List[str]]):
    """The model's own sentence vectors: an embedding model's outputs, else its encoder's last hidden states averaged
    over each text's tokens (truncated to max_length); None where the model cannot give them (ONNX)."""
    import torch

    from ..data.sources import encode_texts
    from ..runs.predictor import INPUT_KEYS, length_batches

    if predictor.task.supports("embed"):
        return np.asarray(predictor.logits(texts, pairs))
    base = None if predictor.onnx else encoder_body(predictor.model)
    if base is None:
        return None
    enc = encode_texts(predictor.tokenizer, texts, pairs, predictor.max_length)
    keys = [k for k in INPUT_KEYS if k in enc]
    lengths = [len(ids) for ids in enc["input_ids"]]
    out = None
    with torch.inference_mode():
        for batch in length_batches(lengths, predictor.max_tokens, predictor.max_batch_size):
            inputs = {k: torch.from_numpy(v).to(predictor.device) for k, v in predictor._pad(enc, keys, batch).items()}
            hidden = getattr(base(**inputs), "last_hidden_state", None)
            if hidden is None:
                return None
            hidden = hidden.float()
            mask = inputs["attention_mask"].unsqueeze(-1).float()
            pooled = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu().numpy()
            out = np.empty((len(texts), pooled.shape[1]), np.float32) if out is None else out
            out[batch] = pooled
    return out


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


def _sample(n: int, most: int, seed: int = 0) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, most, replace=False)) if n > most else np.arange(n)


def _as_logged(value) -> str:
    """A feedback label (its JSON) in the form the log keeps decisions: a label, or labels joined by '|'."""
    value = json.loads(value)
    return "|".join(sorted(value)) if isinstance(value, list) else str(value)


def compute(run: RunDir, store: PredictionLog, since: Optional[float], until: Optional[float], alpha: float,
            max_drop: float, min_rows: int, max_rows: int, permutations: int, embeddings: bool) -> Dict:
    """Every figure of the monitoring report (what monitor.json holds)."""
    from ..core.args import ModelArgs
    from ..models.loading import load_tokenizer

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
    results = task.decoding.decode(val.logits, cfg.labels, head)
    seen = [task.decoding.monitored(r) for r in results]
    lengths, unknown = TokenStats(load_tokenizer(ModelArgs(name_or_path=str(run.model.path))))(val.texts, val.pairs)
    tests = out["tests"]
    tests["length"] = drift.ks(lengths, frame["tokens"])
    tests["unknown_tokens"] = drift.ks(unknown, frame["unknown"])
    if seen[0]["label"] is not None and frame["label"].notna().all():
        tests["label_shares"] = drift.label_shift([s["label"] for s in seen], list(frame["label"]), cfg.labels)
    if seen[0]["confidence"] is not None and frame["confidence"].notna().all():
        tests["confidence"] = drift.ks([s["confidence"] for s in seen], frame["confidence"])
    if embeddings:
        tests["embeddings"] = _texts_test(run, val, frame, min_rows, max_rows, permutations, out)
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
    out["histograms"] = {"length": [lengths, frame["tokens"].tolist()],
                         "confidence": [[s["confidence"] for s in seen], frame["confidence"].tolist()] if "confidence" in tests else None}
    return out


def _texts_test(run: RunDir, val, frame, min_rows: int, max_rows: int, permutations: int, out: Dict) -> Optional[Dict]:
    """The embedding test on the window's rows that hold their texts (and second texts, for a model of text pairs;
    an embedding model encodes each text alone); the others (logged without --log_texts) are counted, and with fewer
    than `min_rows` such rows the test is skipped."""
    pairs = val.pairs is not None and run.model.info().text_pair
    held = frame["text"].notna() & (frame["text_pair"].notna() if pairs else True)
    have, n = int(held.sum()), len(frame)
    if have < min_rows:
        held_what = ("no logged row in the window holds its text" if not have else
                     f"only {have} of the {n} logged rows in the window hold their texts (at least {min_rows} needed, --min_rows)")
        out["embeddings_skipped"] = f"{held_what}: start the server (or predict) with --log_texts for the embedding test"
        return None
    if have < n:
        out["embeddings_rows"] = (f"the embedding test ran on the {have} of {n} rows that hold their texts (the others "
                                  "were logged without --log_texts)")
        logger.info("%s", out["embeddings_rows"])
    return _embedding_test(run, val, frame[held].reset_index(drop=True), max_rows, permutations, out, pairs)


def _embedding_test(run: RunDir, val, frame, max_rows: int, permutations: int, out: Dict, read_pairs: bool) -> Optional[Dict]:
    from ..runs.predictor import Predictor

    predictor = Predictor.from_pretrained(run.path)
    ref = _sample(len(val.texts), max_rows, 1)
    cur = _sample(len(frame), max_rows, 2)
    pairs = frame["text_pair"].tolist() if read_pairs else None
    a = sentence_vectors(predictor, [val.texts[i] for i in ref], [val.pairs[i] for i in ref] if pairs is not None else None)
    b = sentence_vectors(predictor, [frame["text"][i] for i in cur], [pairs[i] for i in cur] if pairs is not None else None)
    if a is None or b is None:
        out["embeddings_skipped"] = "this model gives no sentence vectors here"
        return None
    test = drift.mmd(a, b, permutations)
    classifier = drift.domain_classifier(a, b)
    test["domain_auc"] = classifier["auc"]
    scores = classifier["current_scores"]
    if scores and scores[0] is not None:
        top = np.argsort(scores)[::-1][:10]
        out["least_like_training"] = [{"id": frame["id"][cur[i]], "text": frame["text"][cur[i]], "score": float(scores[i])} for i in top]
    test["rows"] = [len(ref), len(cur)]
    return test


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
