"""The visual report (one self-contained HTML file, figures embedded) and `encoderfit report`.

Every number on the page is formatted from metrics.json, and each carries a data-metric attribute naming
its JSON path, so tests can check that the page and the JSON agree.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
from pathlib import Path
from typing import Dict, List, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .analysis import PREDICTIONS_DIR, Predictions, analyse  # noqa: E402
from .card import write_card  # noqa: E402
from .config import RunConfig  # noqa: E402
from .errors import UserError  # noqa: E402
from .files import atomic_file, write_json  # noqa: E402

log = logging.getLogger(__name__)
REPORT_FILE = "report.html"
NOISE_FILE = "label_noise.csv"
CSS = """body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;padding:0 1em}
h1{margin-bottom:.1em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}
td.t,th.t{text-align:left;max-width:620px}img{max-width:100%;border:1px solid #eee}.muted{color:#777}
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;min-width:150px}
.card b{font-size:1.5em;display:block}"""


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def fig_training(history: List[Dict]) -> str:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.4))
    train = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    evals = [h for h in history if "eval_loss" in h]
    if train:
        left.plot(*zip(*train), label="training loss")
    if evals:
        left.plot([h["step"] for h in evals], [h["eval_loss"] for h in evals], "o-", label="validation loss")
        for key in ("eval_accuracy", "eval_f1_macro"):
            right.plot([h["step"] for h in evals], [h[key] for h in evals], "o-", label=key.replace("eval_", "validation "))
    left.set(xlabel="step", ylabel="loss", title="loss")
    right.set(xlabel="step", title="validation metrics")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    return _png(fig)


def fig_confusion(matrix: List[List[int]], labels: List[str]) -> str:
    counts = np.asarray(matrix)
    normalised = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    for ax, values, title, fmt in ((axes[0], counts, "counts", "d"), (axes[1], normalised, "row-normalised (recall)", ".2f")):
        ax.imshow(values, cmap="Blues", vmin=0)
        ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xlabel="predicted", ylabel="true", title=title)
        ax.set_xticklabels(labels, rotation=45, ha="right")
        ax.set_yticklabels(labels)
        limit = values.max() / 2 if values.size else 0
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(j, i, format(values[i, j], fmt), ha="center", va="center", fontsize=8,
                        color="white" if values[i, j] > limit else "black")
    return _png(fig)


def fig_reliability(calibration: Dict) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, title in ((axes[0], "before", "before temperature scaling"), (axes[1], "after", "after temperature scaling")):
        bins = calibration[f"reliability_{key}"]
        ax.plot([0, 1], [0, 1], "k--", alpha=0.5, label="perfect calibration")
        ax.bar([b["lo"] for b in bins], [b["accuracy"] for b in bins], width=[b["hi"] - b["lo"] for b in bins],
               align="edge", alpha=0.7, edgecolor="k", label="accuracy in bin")
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "r.", label="(mean confidence, accuracy)")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", title=f"{title}: ECE {calibration[key]['ece']:.4f}")
        ax.legend(loc="upper left", fontsize=8)
    axes[0].set_ylabel("accuracy")
    return _png(fig)


def fig_coverage(sweep: List[Dict], threshold: Optional[float]) -> str:
    fig, ax = plt.subplots(figsize=(8, 4))
    t = [r["threshold"] for r in sweep]
    ax.plot(t, [r["coverage"] for r in sweep], label="coverage (share answered)")
    ax.plot(t, [r["accuracy"] if r["accuracy"] is not None else np.nan for r in sweep], label="accuracy on answered")
    ax.plot(t, [r["overall_accuracy"] for r in sweep], label="overall accuracy (UNKNOWN = wrong)")
    if threshold is not None:
        ax.axvline(threshold, color="k", linestyle="--", label=f"chosen threshold {threshold:.2f}")
    ax.set(xlabel="confidence threshold", ylim=(0, 1.02), title="coverage sweep (calibrated confidence)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return _png(fig)


def fig_per_class(per_class: Dict, baseline: Optional[Dict]) -> str:
    labels = list(per_class)
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels) + 2), 3.6))
    width = 0.4 if baseline else 0.6
    ax.bar(x - (width / 2 if baseline else 0), [per_class[n]["f1"] for n in labels], width, label="model")
    if baseline:
        ax.bar(x + width / 2, [baseline["per_class"][n]["f1"] for n in labels], width, label="TF-IDF baseline")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=30, ha="right")
    ax.set(ylabel="F1", ylim=(0, 1.18), title="per-class F1 (test)")
    ax.legend(loc="upper center", ncol=2, fontsize=8)
    return _png(fig)


def _num(value, path: str, fmt: str = ".4f") -> str:
    shown = "–" if value is None else format(value, fmt)
    return f'<span data-metric="{html.escape(path)}">{shown}</span>'


def _table(header: List[str], rows: List[List[str]], text_columns=()) -> str:
    cls = lambda i: ' class="t"' if i in text_columns else ""  # noqa: E731
    head = "".join(f"<th{cls(i)}>{html.escape(h)}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _summary_rows(metrics: Dict) -> List[List[str]]:
    rows = []
    for name, key in (("validation", "validation"), ("test", "test"), ("TF-IDF + LR baseline (test)", "baseline")):
        if metrics.get(key):
            m = metrics[key]
            rows.append([name, str(m["n"]), *(_num(m[k], f"{key}.{k}") for k in ("accuracy", "f1_macro", "f1_micro", "f1_weighted"))])
    return rows


def render(metrics: Dict, cfg: RunConfig, history: List[Dict], noise: List[Dict]) -> str:
    test, cal, threshold = metrics["test"], metrics["test"]["calibration"], metrics["threshold"]
    labels = cfg.labels
    at = threshold.get("test")
    cards = [
        ("test accuracy", _num(test["accuracy"], "test.accuracy")),
        ("test macro-F1", _num(test["f1_macro"], "test.f1_macro")),
        ("ECE before → after", _num(cal["before"]["ece"], "test.calibration.before.ece") + " → " + _num(cal["after"]["ece"], "test.calibration.after.ece")),
        ("threshold", _num(threshold["value"], "threshold.value", ".2f")),
        ("coverage at threshold", _num(at["coverage"] if at else None, "threshold.test.coverage", ".1%")),
    ]
    if metrics.get("baseline"):
        cards.insert(2, ("baseline test accuracy", _num(metrics["baseline"]["accuracy"], "baseline.accuracy")))
    per_class = [[html.escape(n), *(_num(m[k], f"test.per_class.{n}.{k}") for k in ("precision", "recall", "f1")), str(m["support"])]
                 for n, m in test["per_class"].items()]
    calib = [[name, *(_num(cal[key][k], f"test.calibration.{key}.{k}") for k in ("ece", "brier", "nll"))]
             for name, key in (("before", "before"), ("after (T = %.3f)" % metrics["calibration"]["temperature"], "after"))]
    confused = [[html.escape(p["true"]), html.escape(p["predicted"]), str(p["count"])] for p in test["confused_pairs"]]
    mistakes = [[str(m["row"]), html.escape(m["label"]), html.escape(m["predicted"]), f"{m['confidence']:.3f}", html.escape(m["text"])]
                for m in test["confident_mistakes"]]
    noisy = [[r["row"], html.escape(r["label"]), html.escape(r["predicted"]), r["confidence"], html.escape(r["text"][:300])]
             for r in noise[: cfg.report.max_examples]]
    thr_text = ("no threshold reaches the target accuracy on validation" if threshold["value"] is None and threshold["target_accuracy"]
                else f"lowest threshold whose validation accuracy on answered texts reaches {threshold['target_accuracy']}")
    sections = [
        f"<h1>encoderfit report</h1><p class=muted>base model <b>{html.escape(cfg.model.name_or_path)}</b> · data "
        f"<b>{html.escape(str(cfg.data.source))}</b> · labels {html.escape(', '.join(labels))} · max_length {cfg.resolved.get('max_length')}</p>",
        "<div class=cards>" + "".join(f"<div class=card>{t}<b>{v}</b></div>" for t, v in cards) + "</div>",
        "<h2>Summary</h2>" + _table(["split", "n", "accuracy", "macro-F1", "micro-F1", "weighted-F1"], _summary_rows(metrics), (0,)),
        f"<h2>Training curves</h2><img alt='training curves' src='{fig_training(history)}'>",
        f"<h2>Confusion matrix (test)</h2><img alt='confusion matrix' src='{fig_confusion(test['confusion_matrix']['matrix'], labels)}'>",
        "<h2>Per class (test)</h2>" + _table(["label", "precision", "recall", "F1", "support"], per_class, (0,))
        + f"<img alt='per-class F1' src='{fig_per_class(test['per_class'], metrics.get('baseline'))}'>",
        "<h2>Calibration (test)</h2><p>Temperature fitted on the validation split; predict and serve apply it.</p>"
        + _table(["", "ECE (15 bins)", "Brier", "NLL"], calib, (0,)) + f"<img alt='reliability diagram' src='{fig_reliability(cal)}'>",
        f"<h2>Coverage and abstention</h2><p>Threshold: {_num(threshold['value'], 'threshold.value', '.2f')} ({thr_text}). "
        f"On test it answers {_num(at['coverage'] if at else None, 'threshold.test.coverage', '.1%')} of texts with accuracy "
        f"{_num(at['accuracy'] if at else None, 'threshold.test.accuracy')}; the rest would be UNKNOWN.</p>"
        f"<img alt='coverage curve' src='{fig_coverage(test['sweep'], threshold['value'])}'>",
        "<h2>Most confused label pairs (test)</h2>" + (_table(["true", "predicted", "count"], confused, (0, 1)) if confused else "<p>None.</p>"),
        "<h2>Most confident mistakes (test)</h2>" + (_table(["row", "label", "predicted", "confidence", "text"], mistakes, (1, 2, 4)) if mistakes else "<p>None.</p>"),
        f"<h2>Suspected label noise (train)</h2><p>{metrics.get('label_noise', {}).get('count', 0)} training examples whose given label the "
        f"model contradicts with probability ≥ {cfg.report.noise_confidence}; all are in label_noise.csv.</p>"
        + (_table(["row", "given", "model says", "confidence", "text"], noisy, (1, 2, 4)) if noisy else ""),
    ]
    return f"<!doctype html><html><head><meta charset=utf-8><title>encoderfit report</title><style>{CSS}</style></head><body>{''.join(sections)}</body></html>"


def write_report(run_dir: Path, metrics: Optional[Dict] = None) -> Path:
    """Render report.html (and the model card) from the run's files."""
    run_dir = Path(run_dir)
    cfg = RunConfig.load(run_dir)
    metrics = metrics or json.loads((run_dir / "metrics.json").read_text())
    history_file = run_dir / "logs" / "history.json"
    history = json.loads(history_file.read_text()) if history_file.is_file() else []
    noise_file = run_dir / NOISE_FILE
    noise = list(csv.DictReader(noise_file.open(encoding="utf-8"))) if noise_file.is_file() else []
    with atomic_file(run_dir / REPORT_FILE) as handle:
        handle.write(render(metrics, cfg, history, noise))
    write_card(run_dir, cfg, metrics)
    return run_dir / REPORT_FILE


def report(run: Path) -> Path:
    """Rebuild a run's HTML report and model card from its saved predictions (no model needed, seconds).

    Args:
        run: Run directory written by `encoderfit train`.
    """
    run = Path(run)
    cfg = RunConfig.load(run)
    if not (run / "metrics.json").is_file():
        raise UserError(f"{run}/metrics.json is missing; run `encoderfit eval {run}` first")
    previous = json.loads((run / "metrics.json").read_text())
    preds = {role: Predictions.load(run / PREDICTIONS_DIR / f"{role}.jsonl", cfg.labels) for role in ("validation", "test")}
    metrics = {**previous, **analyse(cfg.labels, preds, cfg.report)}
    write_json(run / "metrics.json", metrics)
    path = write_report(run, metrics)
    log.info("wrote %s", path)
    return path
