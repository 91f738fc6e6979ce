"""The report: numbers equal metrics.json, every image loads in a real headless Chromium, clear errors on bad runs."""

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from encoderfit import cli
from encoderfit.runs.predictor import Predictor
from encoderfit.tasks.classification.task import UNKNOWN
from shared import metric_at

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_numbers_equal_metrics_json(trained_run, capsys, tmp_path):
    trained_run = _copy(trained_run, tmp_path)
    assert cli.main(["report", str(trained_run)]) == 0
    page = (trained_run / "report.html").read_text()
    metrics = json.loads((trained_run / "metrics.json").read_text())
    shown = re.findall(r'<span data-metric="([^"]+)">([^<]+)</span>', page)
    assert len(shown) >= 20
    paths = {p for p, _ in shown}
    assert {"test.accuracy", "test.f1_macro", "test.calibration.before.ece", "test.calibration.after.ece", "threshold.value"} <= paths
    for path, text in shown:
        value = metric_at(metrics, path)
        if value is None:
            assert text == "–"
            continue
        if text.endswith("%"):
            number, decimals = float(text[:-1]) / 100, len(text[:-1].split(".")[-1]) + 2
        else:
            number, decimals = float(text), len(text.split(".")[-1])
        assert number == pytest.approx(value, abs=0.5 * 10 ** -decimals + 1e-12), path
    assert page.count("<img ") == 5 and "data:image/png;base64," in page
    assert "Suspected label noise" in page and "TF-IDF" in page


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="Debian chromium not installed (CI installs it)")
def test_report_renders_in_headless_chromium(trained_run, tmp_path):
    from playwright.sync_api import sync_playwright

    metrics = json.loads((trained_run / "metrics.json").read_text())
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=flags)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto((trained_run / "report.html").resolve().as_uri())
        page.wait_for_load_state("load")
        images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
        text = page.inner_text("body")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        if os.environ.get("ENCODERFIT_SCREENSHOT"):
            shutil.copy(tmp_path / "report.png", os.environ["ENCODERFIT_SCREENSHOT"])
        browser.close()
    assert len(images) == 5
    assert all(complete and width > 0 for _, complete, width in images), images
    assert f"{metrics['test']['accuracy']:.4f}" in text and f"{metrics['test']['f1_macro']:.4f}" in text
    assert (tmp_path / "report.png").stat().st_size > 20_000


def test_model_card_header_matches_metrics(trained_run):
    card = (trained_run / "model" / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    metrics = json.loads((trained_run / "metrics.json").read_text())
    values = {m["type"]: m["value"] for m in header["model-index"][0]["results"][0]["metrics"]}
    assert values["accuracy"] == round(metrics["test"]["accuracy"], 4)
    assert header["pipeline_tag"] == "text-classification" and "## Intended use and limits" in card


def test_calibration_and_threshold_are_saved_and_used(trained_run):
    saved = json.loads((trained_run / "model" / "encoderfit.json").read_text())["head"]
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert saved["temperature"] == pytest.approx(metrics["calibration"]["temperature"])
    clf = Predictor.from_pretrained(trained_run)
    assert clf.head["temperature"] == pytest.approx(saved["temperature"])
    texts = ["garlic soup", "goal for the team", "of the and"]
    clf.abstain, clf.head["threshold"] = True, 1.01  # above any probability: everything abstains
    assert {r["label"] for r in clf.predict(texts)} == {UNKNOWN}
    clf.head["threshold"] = 0.0
    assert UNKNOWN not in {r["label"] for r in clf.predict(texts)}


def test_abstaining_on_uncalibrated_probabilities_is_refused(trained_run, tmp_path):
    from conftest import run_cli

    (tmp_path / "in.txt").write_text("garlic soup\n")
    proc = run_cli("predict", str(trained_run), "--input", str(tmp_path / "in.txt"), "--abstain", "true", "--calibrated", "false",
                   check=False)
    assert proc.returncode == 2 and "the threshold was chosen on calibrated probabilities" in proc.stderr


def test_label_noise_csv_is_reviewable(trained_run):
    lines = (trained_run / "label_noise.csv").read_text().splitlines()
    assert lines[0] == "row,label,predicted,confidence,text"


def _copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def test_report_without_predictions_is_a_clear_error(trained_run, tmp_path, capsys):
    run = _copy(trained_run, tmp_path)
    (run / "predictions" / "validation.parquet").unlink()
    assert cli.main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert "predictions/validation.parquet is missing" in err and "encoderfit eval" in err


def test_report_with_mismatched_labels_is_a_clear_error(trained_run, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    run = _copy(trained_run, tmp_path)
    path = run / "predictions" / "test.parquet"
    table = pq.read_table(path)
    labels = table.column("label").to_pylist()
    labels[0] = "weather"
    pq.write_table(table.set_column(table.schema.get_field_index("label"), "label", pa.array(labels)), path)
    assert cli.main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert "label set does not match" in err and "weather" in err


def test_report_refits_nothing(trained_run, tmp_path):
    """Only training and `eval` fit the head; `report` applies the saved one (one writer of each decision)."""
    run = _copy(trained_run, tmp_path)
    info = json.loads((run / "model" / "encoderfit.json").read_text())
    info["head"]["temperature"] = 3.0
    (run / "model" / "encoderfit.json").write_text(json.dumps(info))
    assert cli.main(["report", str(run)]) == 0
    assert json.loads((run / "metrics.json").read_text())["calibration"]["temperature"] == 3.0
    assert json.loads((run / "model" / "encoderfit.json").read_text())["head"]["temperature"] == 3.0
