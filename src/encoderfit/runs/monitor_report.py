"""The monitoring report: one self-contained HTML page from monitor.json's figures, built from the same pieces and
stylesheet as the run's report (core/figures.py). Every number carries its monitor.json path (data-metric). Each drift
test's row, notes and figure are its registry record's (runs/drift/)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Dict, Optional

from ..core import figures as f
from .drift import DRIFT_TESTS, mean_shift


def _when(ts: Optional[float]) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if ts else "–"


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
    """The table of drift tests that ran, each row as its registry record shows it (a test no longer registered: by
    its key, with the means it compared)."""
    rows = []
    for key, test in figures["tests"].items():
        if not test:
            continue
        record = DRIFT_TESTS.get(key)
        title, statistic, effect = (record.title, record.statistic, record.effect) if record else (key, "statistic", mean_shift)
        rows.append([f.esc(title), f.num(test.get(statistic), f"tests.{key}.{statistic}", ".4g"),
                     f.num(test.get("p_value"), f"tests.{key}.p_value", ".3g"), effect(key, test), "ALARM" if test.get("alarm") else "ok"])
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
    sections = [
        f"<h1>encoderfit monitor</h1><p class=muted>run <b>{f.esc(figures['run'])}</b> · log <b>{f.esc(figures['log'])}</b> · "
        f"{_when(window[0])} to {_when(window[1])} · alarm when p &lt; {f.num(figures.get('threshold'), 'threshold', '.2g')}"
        f" (alpha {f.esc(figures['alpha'])} over the tests run)</p>", verdict,
        "<div class=cards>" + "".join(f"<div class=card>{t}<b>{v}</b></div>" for t, v in cards) + "</div>",
        "<h2>Drift tests (logged traffic against the validation split)</h2>" + _tests(figures),
        "".join(f"<p class=muted>{f.esc(figures[k])}</p>" for t in DRIFT_TESTS.values() for k in t.notes if figures.get(k)),
        _accuracy(figures),
        _over_time(figures.get("over_time")),
        *(t.figure(figures, name) for name, t in DRIFT_TESTS.items() if t.figure is not None),
    ]
    return (f"<!doctype html><html><head><meta charset=utf-8><title>encoderfit monitor</title><style>{f.CSS}</style></head>"
            f"<body>{''.join(sections)}</body></html>")
