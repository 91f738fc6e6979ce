"""Labels are data, never markup (issue 50, item 17): a class named like mathtext (`$x^$`) or like HTML trains, and the
report, the model card and the figures show it as typed."""

from __future__ import annotations

import html

from conftest import make_rows, run_cli, write_csv

NAMES = {"food": "$x^$", "sport": "<i>a&b</i>", "tech": r"$\frac{"}


def test_classes_named_like_mathtext_or_html_train_and_are_shown_as_typed(tmp_path, tiny_model):
    from encoderfit import Predictor

    rows = [{"text": r["text"], "label": NAMES[r["label"]]} for r in make_rows(40, seed=3)]
    out = tmp_path / "run"
    run_cli("train", "--data.source", str(write_csv(tmp_path / "marked.csv", rows)), "--model.name_or_path", str(tiny_model),
            "--output_dir", str(out), "--train.epochs", "1", "--train.learning_rate", "3e-3")
    assert not list(tmp_path.glob(".*partial")) and (out / "report.html").is_file()
    page = (out / "report.html").read_text()
    assert "<i>a&b</i>" not in page and html.escape("<i>a&b</i>") in page and html.escape("$x^$") in page
    assert "$x^$" in (out / "model" / "README.md").read_text()
    assert set(Predictor.from_pretrained(out).predict("garlic soup")["probabilities"]) == set(NAMES.values())
    run_cli("report", str(out))  # and again from the saved run
    # the monitoring page's figures (label shares over time) and tables name the labels too
    texts = write_csv(tmp_path / "traffic.csv", make_rows(10, seed=4))
    run_cli("predict", str(out), "--input", str(texts), "--output", str(tmp_path / "p.jsonl"), "--log", str(tmp_path / "log.db"))
    proc = run_cli("monitor", str(out), "--log", str(tmp_path / "log.db"), "--output", str(tmp_path / "m"), "--permutations", "50",
                   "--min_rows", "5", check=False)
    assert proc.returncode in (0, 3), proc.stderr[-2000:]
    page = (tmp_path / "m" / "monitor.html").read_text()
    assert "<i>a&b</i>" not in page and "alt='prediction shares over time'" in page  # its legend names each label


def test_every_figure_draws_its_texts_as_typed():
    """The figures' texts (titles, legends, tick labels, those the drawing makes too) are not parsed as mathtext."""
    from encoderfit.core import figures as f

    labels = list(NAMES.values())
    assert f.confusion([[2, 0, 0], [0, 1, 1], [0, 0, 2]], labels).startswith("data:image/png")
    assert f.per_label({n: 0.5 for n in labels}, {n: 0.4 for n in labels}, "F1 of $x^$").startswith("data:image/png")
    fig, ax = f.plt.subplots()
    ax.bar(labels, [1, 2, 3])  # categorical ticks: their labels are made while drawing
    for name in labels:
        ax.plot([0, 1], [0, 1], label=f"share {name}")
    ax.legend()
    ax.set_title(labels[0])
    assert f.png(fig).startswith("data:image/png")
