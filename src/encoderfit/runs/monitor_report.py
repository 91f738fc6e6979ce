"""The monitoring report: one self-contained HTML page from monitor.json's figures, built from the same pieces and
stylesheet as the run's report (core/figures.py). Every number carries its monitor.json path (data-metric)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Dict, List, Optional

from ..core import figures as f

NAMES = {"length": "length in tokens (KS)", "unknown_tokens": "share of unknown tokens (KS)",
         "label_shares": "predicted label shares (chi-square; PSI)", "confidence": "confidence (KS)",
         "embeddings": "sentence vectors (MMD, permutations; domain classifier AUC)"}


def _when(ts: Optional[float]) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if ts else "–"


def _histograms(pair: Optional[List[list]], title: str, xlabel: str) -> str:
    if not pair or not pair[0] or not pair[1]:
        return ""
    fig, ax = f.plt.subplots(figsize=(5.2, 3.0))
    low, high = min(min(pair[0]), min(pair[1])), max(max(pair[0]), max(pair[1]))
    bins = f.np.linspace(low, high if high > low else low + 1, 30)
    ax.hist(pair[0], bins=bins, density=True, alpha=0.5, label="validation")
    ax.hist(pair[1], bins=bins, density=True, alpha=0.5, label="logged traffic")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.legend()
    return f.image(title, f.png(fig))


def _over_time(over: Dict) -> str:
    if not over or not over.get("time"):
        return ""
    fig, ax = f.plt.subplots(figsize=(7, 3.0))
    times = [datetime.fromtimestamp(t, timezone.utc) for t in over["time"]]
    for label, shares in over["shares"].items():
        ax.plot(times, shares, marker=".", label=f"share {label}")
    if any(c is not None for c in over["confidence"]):
        ax.plot(times, [c if c is not None else f.np.nan for c in over["confidence"]], "k--", label="mean confidence")
    ax.set_ylim(0, 1)
    ax.set_title("predictions over the window")
    ax.legend(fontsize=7, ncol=3)
    fig.autofmt_xdate()
    return f.image("prediction shares over time", f.png(fig))


def _tests(figures: Dict) -> str:
    rows = []
    for key, test in figures["tests"].items():
        if not test:
            continue
        stat = test.get("statistic", test.get("chi2", test.get("mmd2")))
        extra = (f"PSI {f.num(test['psi'], f'tests.{key}.psi', '.3f')}" if "psi" in test else
                 f"AUC {f.num(test.get('domain_auc'), f'tests.{key}.domain_auc', '.3f')}" if key == "embeddings" else
                 f"means {f.num(test.get('reference_mean'), f'tests.{key}.reference_mean', '.3g')} → "
                 f"{f.num(test.get('current_mean'), f'tests.{key}.current_mean', '.3g')}")
        rows.append([f.esc(NAMES.get(key, key)), f.num(stat, f"tests.{key}.statistic", ".4g"),
                     f.num(test.get("p_value"), f"tests.{key}.p_value", ".3g"), extra, "ALARM" if test.get("alarm") else "ok"])
    return f.table(["test", "statistic", "p-value", "effect", "verdict"], rows, (0,)) if rows else ""


def _accuracy(figures: Dict) -> str:
    acc = figures.get("accuracy")
    if not acc:
        return ""
    test = acc["test"]
    rows = [["ATC (average thresholded confidence)", f.num_ci(acc["atc"]["estimate"], "accuracy.atc.estimate", acc["atc"])],
            ["mean calibrated confidence (CBPE)", f.num_ci(acc["cbpe"]["estimate"], "accuracy.cbpe.estimate", acc["cbpe"])],
            [f"test {test['metric']} (labelled)", f.num_ci(test["value"], "accuracy.test.value", test.get("ci"))]]
    ref = acc.get("reference")
    if ref:
        rows.append([f"estimates fitted on ({' + '.join(ref['splits'])}, {ref['n']} labelled examples)",
                     f.num(ref["accuracy"], "accuracy.reference.accuracy")])
    fb = figures.get("feedback") or {}
    if fb.get("value") is not None:
        rows.append([f"on {fb['n']} feedback labels", f.num(fb["value"], "feedback.value") +
                     f"<br><small class=muted>{f.num(fb['low'], 'feedback.low')}–{f.num(fb['high'], 'feedback.high')}, "
                     f"p = {f.num(fb['p_value'], 'feedback.p_value', '.3g')} against test</small>"])
    return "<h2>Accuracy</h2>" + f.table(["estimate", "value (95% interval)"], rows, (0,))


def render(figures: Dict) -> str:
    alarms = figures["alarms"]
    verdict = ("<p class='verdict worse'><b>Alarm.</b> " + "<br>".join(f.esc(a) for a in alarms) + "</p>" if alarms else
               f"<p class='verdict better'><b>No alarm.</b> {f.esc(figures['status'])}.</p>")
    window = figures.get("window") or [None, None]
    cards = [("predictions in the window", f.num(figures["rows"], "rows", "d")),
             ("feedback labels", f.num((figures.get("feedback") or {}).get("matched"), "feedback.matched", "d"))]
    if figures.get("abstained"):  # their label shares are the model's own top labels (monitor._abstained)
        cards.append(("answered UNKNOWN (abstained)", f.num(figures["abstained"], "abstained", "d")))
    if figures.get("accuracy"):
        cards.append(("estimated accuracy (ATC)", f.num(figures["accuracy"]["atc"]["estimate"], "accuracy.atc.estimate")))
        cards.append((f"test {figures['accuracy']['test']['metric']}", f.num(figures["accuracy"]["test"]["value"], "accuracy.test.value")))
    hist = figures.get("histograms") or {}
    least = figures.get("least_like_training") or []
    sections = [
        f"<h1>encoderfit monitor</h1><p class=muted>run <b>{f.esc(figures['run'])}</b> · log <b>{f.esc(figures['log'])}</b> · "
        f"{_when(window[0])} to {_when(window[1])} · alarm when p &lt; {f.num(figures.get('threshold'), 'threshold', '.2g')}"
        f" (alpha {f.esc(figures['alpha'])} over the tests run)</p>", verdict,
        "<div class=cards>" + "".join(f"<div class=card>{t}<b>{v}</b></div>" for t, v in cards) + "</div>",
        "<h2>Drift tests (logged traffic against the validation split)</h2>" + _tests(figures),
        "".join(f"<p class=muted>{f.esc(figures[k])}</p>" for k in ("embeddings_skipped", "embeddings_rows") if figures.get(k)),
        _accuracy(figures),
        _over_time(figures.get("over_time")),
        _histograms(hist.get("length"), "length in tokens", "tokens"),
        _histograms(hist.get("confidence"), "confidence", "calibrated top probability"),
        ("<h2>Texts least like the validation split</h2>" + f.table(
            ["domain score", "id", "text"], [[f"{r['score']:.3f}", f.esc(r["id"]), f.esc(r["text"][:300])] for r in least], (1, 2))
         if least else ""),
    ]
    return (f"<!doctype html><html><head><meta charset=utf-8><title>encoderfit monitor</title><style>{f.CSS}</style></head>"
            f"<body>{''.join(sections)}</body></html>")
