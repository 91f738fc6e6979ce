"""The report's building blocks: matplotlib figures as embedded PNGs, and HTML pieces whose numbers name their
metrics.json path (`data-metric`), so tests can check that the page and the JSON agree. Any task composes these.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Dict, List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.text  # noqa: E402
import numpy as np  # noqa: E402

# ---------------------------------------------------------------- HTML pieces


def num(value, path: str, fmt: str = ".4f") -> str:
    """A number from metrics.json, formatted, tagged with its JSON path."""
    shown = "–" if value is None else format(value, fmt)
    return f'<span data-metric="{html.escape(path)}">{shown}</span>'


def num_ci(value, path: str, ci: Optional[Dict], fmt: str = ".4f") -> str:
    """A number with its confidence interval beneath it, each part tagged with its metrics.json path."""
    if not ci or ci.get("low") is None:
        return num(value, path, fmt)
    ci_path = path.replace(path.split(".")[0] + ".", path.split(".")[0] + ".ci.", 1)
    return (f"{num(value, path, fmt)}<br><small class=muted>{num(ci['low'], ci_path + '.low', fmt)}–"
            f"{num(ci['high'], ci_path + '.high', fmt)}</small>")


def table(header: List[str], rows: List[List[str]], text_columns=()) -> str:
    cls = lambda i: ' class="t"' if i in text_columns else ""  # noqa: E731
    head = "".join(f"<th{cls(i)}>{html.escape(h)}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def image(alt: str, src: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='{src}'>"


def esc(text) -> str:
    return html.escape(str(text))


def png(fig) -> str:
    """The figure as an embedded PNG, every text drawn as typed: labels are data, never mathtext markup (a class named
    `$x^$` would not parse). Texts made before are switched off one by one, and tick labels that the drawing makes
    start off."""
    for text in fig.findobj(matplotlib.text.Text):
        text.set_parse_math(False)
    buffer = io.BytesIO()
    with matplotlib.rc_context({"text.parse_math": False}):
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


# ---------------------------------------------------------------- figures


def training(history: List[Dict], metric_keys: Sequence[str]) -> str:
    """Training and validation loss by step; the validation metrics by step."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.4))
    train = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    evals = [h for h in history if "eval_loss" in h]
    if train:
        left.plot(*zip(*train), label="training loss")
    if evals:
        left.plot([h["step"] for h in evals], [h["eval_loss"] for h in evals], "o-", label="validation loss")
        for key in metric_keys:
            if f"eval_{key}" in evals[0]:
                right.plot([h["step"] for h in evals], [h[f"eval_{key}"] for h in evals], "o-", label=f"validation {key}")
    left.set(xlabel="step", ylabel="loss", title="loss")
    right.set(xlabel="step", title="validation metrics")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    return png(fig)


def confusion(matrix: List[List[int]], labels: List[str], xlabel: str = "predicted") -> str:
    counts = np.asarray(matrix)
    normalised = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    for ax, values, title, fmt in ((axes[0], counts, "counts", "d"), (axes[1], normalised, "row-normalised (recall)", ".2f")):
        ax.imshow(values, cmap="Blues", vmin=0)
        ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xlabel=xlabel, ylabel="true", title=title)
        ax.set_xticklabels(labels, rotation=45, ha="right")
        ax.set_yticklabels(labels)
        limit = values.max() / 2 if values.size else 0
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(j, i, format(values[i, j], fmt), ha="center", va="center", fontsize=8,
                        color="white" if values[i, j] > limit else "black")
    return png(fig)


def reliability(calibration: Dict, before: str = "before temperature scaling", after: str = "after temperature scaling") -> str:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, title in ((axes[0], "before", before), (axes[1], "after", after)):
        bins = calibration[f"reliability_{key}"]
        ax.plot([0, 1], [0, 1], "k--", alpha=0.5, label="perfect calibration")
        ax.bar([b["lo"] for b in bins], [b["accuracy"] for b in bins], width=[b["hi"] - b["lo"] for b in bins],
               align="edge", alpha=0.7, edgecolor="k", label="accuracy in bin")
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "r.", label="(mean confidence, accuracy)")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", title=f"{title}: ECE {calibration[key]['ece']:.4f}")
        ax.legend(loc="upper left", fontsize=8)
    axes[0].set_ylabel("accuracy")
    return png(fig)


def coverage(sweep: List[Dict], threshold: Optional[float]) -> str:
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
    return png(fig)


def per_label(values: Dict[str, float], baseline: Optional[Dict[str, float]], title: str, ylabel: str = "F1",
              baseline_label: str = "TF-IDF baseline") -> str:
    """Bars per label (or class), the baseline's beside them."""
    labels = list(values)
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(labels) + 2), 3.6))
    width = 0.4 if baseline else 0.6
    ax.bar(x - (width / 2 if baseline else 0), [values[n] for n in labels], width, label="model")
    if baseline:
        ax.bar(x + width / 2, [baseline.get(n, 0.0) for n in labels], width, label=baseline_label)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=60 if len(labels) > 12 else 30, ha="right", fontsize=7 if len(labels) > 30 else 9)
    ax.set(ylabel=ylabel, ylim=(0, 1.18), title=title)
    ax.legend(loc="upper center", ncol=2, fontsize=8)
    return png(fig)


def scatter(y_true: Sequence[float], y_pred: Sequence[float], title: str) -> str:
    """Predicted against true values, with the identity line."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(y_true, y_pred, s=6, alpha=0.4)
    lo, hi = float(np.min([np.min(y_true), np.min(y_pred)])), float(np.max([np.max(y_true), np.max(y_pred)]))
    ax.plot([lo, hi], [lo, hi], "k--", alpha=0.6, label="predicted = true")
    ax.set(xlabel="true", ylabel="predicted", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return png(fig)


def residuals(y_true: Sequence[float], y_pred: Sequence[float], bins: int = 10) -> str:
    """Residuals (predicted - true) against the true value: points and the mean per true-value bin."""
    y_true, error = np.asarray(y_true, float), np.asarray(y_pred, float) - np.asarray(y_true, float)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.scatter(y_true, error, s=5, alpha=0.3, label="text")
    edges = np.unique(np.quantile(y_true, np.linspace(0, 1, bins + 1)))
    centres, means = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (y_true >= lo) & (y_true <= hi)
        if inside.any():
            centres.append((lo + hi) / 2)
            means.append(error[inside].mean())
    ax.plot(centres, means, "r.-", label="mean residual in bin")
    ax.axhline(0, color="k", linestyle="--", alpha=0.6)
    ax.set(xlabel="true value", ylabel="predicted - true", title="residuals by true value")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return png(fig)


CSS = """body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;padding:0 1em}
h1{margin-bottom:.1em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}
td.t,th.t{text-align:left;max-width:620px}img{max-width:100%;border:1px solid #eee}.muted{color:#777}
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;min-width:150px}
.card b{font-size:1.5em;display:block}.verdict{font-size:1.15em;border-left:5px solid #3b7dd8;padding:.5em 1em;background:#f4f8fd}
.verdict.worse,.verdict.not{border-color:#c77c00;background:#fdf8f0}"""
