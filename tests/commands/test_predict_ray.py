"""`encoderfit predict --engine ray`: the same rows as the local engine on a local Ray started by the command."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import read_jsonl
from failing import cli_fails
from conftest import run_cli
from shared import texts, write_texts_jsonl


@pytest.mark.slow  # a local Ray cluster starts (~25 s on 2 shared cores)
def test_engine_ray_gives_the_local_engines_rows_in_order(trained_run, tmp_path):
    pytest.importorskip("ray.data")
    values = texts(2000, seed=5)
    lines = [json.dumps({"text": t}) for t in values]
    lines[700] = '{"text": broken'
    source = tmp_path / "in"
    source.mkdir()
    (source / "a.jsonl").write_text("\n".join(lines[:1200]) + "\n")
    (source / "b.jsonl").write_text("\n".join(lines[1200:]) + "\n")
    local, ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    common = ["--chunk_rows", "250", "--on_error", "skip"]
    run_cli("predict", str(trained_run), "--input", str(source), "--output", str(local), *common)
    proc = run_cli("predict", str(trained_run), "--input", f"file://{source}", "--output", str(ray), "--engine", "ray",
                   "--workers", "2", *common, own_process=True)
    assert "--engine ray, 2 worker(s)" in proc.stderr
    a, b = read_jsonl(local.read_text()), read_jsonl(ray.read_text())
    assert [r["text"] for r in b] == [r["text"] for r in a] and len(b) == 2000  # every row once, in input order
    assert [r.get("label", r.get("error")) for r in b] == [r.get("label", r.get("error")) for r in a]
    assert b[700]["error"].startswith("not valid JSON")
    # the same Predictor on the same rows: equal to float noise of other length batches (no exact-bytes promise)
    assert max(abs(x["score"] - y["score"]) for x, y in zip(a, b) if "score" in x) < 1e-5
    failed = subprocess.run([sys.executable, "-m", "encoderfit", "predict", str(trained_run), "--input", str(source),
                             "--output", str(tmp_path / "f.jsonl"), "--engine", "ray", "--chunk_rows", "250"],
                            capture_output=True, text=True)
    assert failed.returncode == 2 and failed.stderr.strip().splitlines()[-1].startswith(f"error: {source / 'a.jsonl'}: line 701: not valid JSON")
    assert not (tmp_path / "f.jsonl").exists()


def test_engine_ray_without_ray_is_one_line(trained_run, tmp_path):
    source = write_texts_jsonl(tmp_path / "in.jsonl", texts(3))
    code = ("import sys; sys.modules['ray'] = None; from encoderfit.cli import main; "
            f"sys.exit(main(['predict', {str(trained_run)!r}, '--input', {str(source)!r}, '--output', "
            f"{str(tmp_path / 'o.jsonl')!r}, '--engine', 'ray']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "error: --engine ray needs Ray: pip install 'encoderfit[ray]'"
    assert not (tmp_path / "o.jsonl").exists()
    assert "--log with --engine ray" in cli_fails("predict", str(trained_run), "--input", str(source), "--output",
                                                  str(tmp_path / "o.jsonl"), "--engine", "ray", "--log", str(tmp_path / "l.db"))


def test_launch_skypilot_runs_predict_with_engine_ray_and_installs_ray(trained_run, tmp_path, monkeypatch):
    import yaml

    project = tmp_path / "proj"
    project.mkdir()
    write_texts_jsonl(project / "in.jsonl", texts(3))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    proc = run_cli("launch", "skypilot", "--dry_run", "true", "--", "predict", str(trained_run), "--input", "in.jsonl",
                   "--output", "out.jsonl", "--engine", "ray", "--workers", "2", cwd=project)
    task = yaml.safe_load(Path(proc.stdout.split("task: ")[1].split()[0]).read_text())
    assert f'-m encoderfit predict {trained_run} --input in.jsonl --engine ray --workers 2 --output /encoderfit-runs/proj/out.jsonl' in task["run"]
    assert "[track,ray]" in task["setup"] and str(trained_run) in task["file_mounts"].values()
    assert "pass --output" in cli_fails("launch", "skypilot", "--dry_run", "true", "--", "predict", str(trained_run),
                                        "--input", "in.jsonl", cwd=project)
