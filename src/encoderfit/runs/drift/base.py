"""What a drift test is: a record of the registry (runs/drift/__init__.py's DRIFT_TESTS) saying what it reads from the
prediction log, how it computes its statistic and p-value, and how the monitoring report shows it.

`monitor` runs every registered test whose needs the window meets, counts those that gave a p-value for the multiple-
test correction, and the report (runs/monitor_report.py) takes each test's row title, effect cell and figure from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from .window import SIGNALS, Window


class LazyFigures:
    """core/figures.py on first use: matplotlib loads when a figure is drawn, not when the CLI reads monitor's options."""

    def __getattr__(self, name):
        from ...core import figures

        return getattr(figures, name)


f = FIGURES = LazyFigures()

def mean_shift(name: str, test: Dict) -> str:
    """The report's effect cell of a test of numbers per text: the reference mean -> the window's mean."""
    return (f"means {f.num(test.get('reference_mean'), f'tests.{name}.reference_mean', '.3g')} → "
            f"{f.num(test.get('current_mean'), f'tests.{name}.current_mean', '.3g')}")


@dataclass(frozen=True)
class DriftTest:
    """One drift test of `encoderfit monitor`: logged traffic against the validation split."""

    name: str
    """Its key in monitor.json's `tests` and in its alarm ("NAME drift: p = ...")."""
    title: str
    """Its row in the report's table of drift tests."""
    needs: Tuple[str, ...]
    """The signals it reads (SIGNALS); one the window lacks (see SIGNALS) and the test does not run."""
    compute: Callable[[Window], Optional[Dict]]
    """Window -> its figures for monitor.json: `p_value` (None, or None returned: it ran on nothing and is not counted
    by the correction), its statistic under `statistic`, and any details. It may write the top-level figures named in
    `notes` (window.figures) and draw data (window.histograms)."""
    statistic: str = "statistic"
    """The key of its statistic in what `compute` returns (chi2, mmd2 ...): the report's statistic column."""
    effect: Callable[[str, Dict], str] = mean_shift
    """(name, its figures) -> the report's effect cell, HTML."""
    figure: Optional[Callable[[Dict, str], str]] = None
    """(monitor's figures, name) -> HTML drawn in the report below the accuracy estimates ('' for nothing), or None."""
    notes: Tuple[str, ...] = ()
    """Top-level keys of monitor.json it may write (why it was skipped, on which rows it ran): shown under the table."""
    switch: Optional[str] = None
    """The monitor option (a bool, e.g. `embeddings`) that turns it off; None: it always runs."""

    def __post_init__(self):
        unknown = [s for s in self.needs if s not in SIGNALS]
        if unknown:
            raise ValueError(f"drift test {self.name}: needs {unknown} are not signals; expected some of {', '.join(SIGNALS)}")


def histogram(title: str, xlabel: str) -> Callable[[Dict, str], str]:
    """A test's figure: the reference's and the window's samples (window.histograms[name]) as overlaid histograms."""

    def draw(figures: Dict, name: str) -> str:
        return histograms((figures.get("histograms") or {}).get(name), title, xlabel)

    return draw


def histograms(pair: Optional[List[list]], title: str, xlabel: str) -> str:
    """Two samples (validation, logged traffic) as overlaid density histograms, one image; '' when either is empty."""
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
