"""Results that were silently wrong: each test fails on the code before its fix.

- eval re-reads a source that changed under the run (splits fingerprinted at training);
- a classifier re-fine-tuned on other labels of the same count kept the old head's rows under the new names;
- weighted cross-entropy: the same normalisation in training and evaluation;
- multi-label thresholds: every decoder reads them by name;
- an ensemble's fingerprint covers its members, so saved predictions are not reused for other members;
- two processes writing one output directory: the second fails at once.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import make_rows, run_cli, write_csv


def _own_copy(run: Path, tmp_path: Path, data: Path) -> Path:
    """A copy of a run whose config reads `data`, so the test may change that file."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    cfg["data"]["source"] = str(data)
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return copy


def test_eval_refuses_splits_that_changed_since_training(trained_run, toy_csv, tmp_path):
    data = tmp_path / "toy.csv"
    shutil.copy(toy_csv, data)
    run = _own_copy(trained_run, tmp_path, data)
    fingerprints = yaml.safe_load((run / "config.yaml").read_text())["resolved"]["splits"]
    assert set(fingerprints) == {"train", "validation", "test"}

    assert run_cli("eval", str(run)).returncode == 0  # the same source: the same splits

    write_csv(data, make_rows(121, seed=0))  # one more example per topic: every split is re-drawn
    before = (run / "metrics.json").read_bytes()
    proc = run_cli("eval", str(run), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no longer gives the splits it was trained on" in proc.stderr and "test had" in proc.stderr
    assert (run / "metrics.json").read_bytes() == before  # nothing refitted or rewritten


def test_a_head_for_other_labels_of_the_same_count_is_initialised_afresh(trained_run):
    from safetensors.numpy import load_file

    from encoderfit.core.args import ModelArgs
    from encoderfit.models.loading import load_model
    from encoderfit.tasks import get_task

    labels = yaml.safe_load((trained_run / "config.yaml").read_text())["labels"]
    saved = load_file(trained_run / "model" / "model.safetensors")
    head_keys = [k for k in saved if k.startswith("classifier.")]
    assert head_keys
    task, args = get_task("classification"), ModelArgs(name_or_path=str(trained_run / "model"))

    same = load_model(args, task, labels).state_dict()
    assert all(np.array_equal(same[k].numpy(), saved[k]) for k in head_keys)  # the same labels: the head carries over

    renamed = load_model(args, task, list(reversed(labels))).state_dict()  # same count, other meaning per row
    assert not any(np.array_equal(renamed[k].numpy(), saved[k]) for k in head_keys if k.endswith("weight"))
    encoder = [k for k in saved if k.startswith("model.layers.")]
    assert all(np.array_equal(renamed[k].numpy(), saved[k]) for k in encoder)  # the encoder is kept


def test_weighted_cross_entropy_is_normalised_alike_in_training_and_evaluation():
    import torch
    from types import SimpleNamespace

    from encoderfit.core.args import TrainArgs
    from encoderfit.tasks import get_task

    loss = get_task("classification").modeling.loss({"counts": [90, 10]}, TrainArgs(class_weights="balanced"))
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.2], [-1.0, 1.5], [0.0, 0.3]])
    labels = torch.tensor([0, 1, 1, 0])
    evaluation = loss(SimpleNamespace(logits=logits), labels)
    training = loss(SimpleNamespace(logits=logits), labels, num_items_in_batch=len(labels))
    assert float(evaluation) == pytest.approx(float(training))


def test_multilabel_thresholds_are_read_by_name_whatever_the_saved_order():
    from encoderfit.tasks import get_task
    from encoderfit.tasks.multilabel.task import fit_thresholds, threshold_vector

    task, labels = get_task("multilabel"), ["a", "b", "c"]
    rng = np.random.default_rng(0)
    y = (rng.random((200, 3)) < [0.5, 0.3, 0.2]).astype(int)
    probs = np.clip(y * 0.6 + rng.random((200, 3)) * 0.5, 0, 1)
    head = fit_thresholds(probs, y, labels)
    shuffled = json.loads(json.dumps({**head, "thresholds": dict(reversed(list(head["thresholds"].items())))}))
    by_name = threshold_vector(head, labels)
    assert len(set(by_name)) > 1  # distinct per label, so an order mix-up would show
    assert np.array_equal(threshold_vector(shuffled), by_name) and np.array_equal(task.decoding._thresholds(shuffled, 3), by_name)
    logits = np.log(probs / (1 - probs + 1e-9) + 1e-9)
    decoded = task.decoding.decode(logits, labels, shuffled)
    assert [r["labels"] for r in decoded] == [[labels[j] for j in np.argsort(-p) if p[j] >= by_name[j]] for p in 1 / (1 + np.exp(-logits))]


def test_an_ensembles_fingerprint_covers_its_members(trained_run, tmp_path):
    from encoderfit.runs.rundir import ModelDir

    model = tmp_path / "model"
    shutil.copytree(trained_run / "model", model)
    for seed in (1, 2):
        shutil.copytree(trained_run / "model", model / "members" / f"seed-{seed}")
    info = json.loads((model / "encoderfit.json").read_text())
    (model / "encoderfit.json").write_text(json.dumps({**info, "members": ["members/seed-1", "members/seed-2"]}))
    before = ModelDir(model).fingerprint()
    weights = model / "members" / "seed-2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b" ")  # another member, the kept model.safetensors untouched
    assert ModelDir(model).fingerprint() != before


def test_a_second_process_writing_the_same_output_dir_fails_at_once(toy_csv, tiny_model, tmp_path):
    from encoderfit.core.files import exclusive

    out = tmp_path / "run"
    with exclusive(out):  # held as another training process holds it
        proc = run_cli("train", "--data.source", str(toy_csv), "--model.name_or_path", str(tiny_model),
                       "--output_dir", str(out), "--train.max_steps", "2", check=False)
        assert proc.returncode == 2 and "another encoderfit process" in proc.stderr and "Traceback" not in proc.stderr
        assert not out.exists() and not (tmp_path / ".run.partial").exists()
        proc = run_cli("pretrain", "--corpus.sources", f"[{toy_csv}]", "--output_dir", str(out), check=False)
        assert proc.returncode == 2 and "another encoderfit process" in proc.stderr


def test_split_fingerprints_are_row_hashes_and_an_older_runs_are_checked_in_its_own_scheme(trained_run, toy_csv, tmp_path):
    """Runs now record the SHA-256 of the rows' hashes (read in the file's order); a run that recorded the older
    scheme (the rows' JSON in the split's order) is still checked, in that scheme: the same source passes."""
    import hashlib
    import json

    from encoderfit.runs.splits import rows_in_batches

    data = tmp_path / "toy.csv"
    shutil.copy(toy_csv, data)
    run = _own_copy(trained_run, tmp_path, data)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert all(entry.get("scheme") == "row-hashes" for entry in cfg["resolved"]["splits"].values())
    from encoderfit.runs.splits import prepare
    from encoderfit.core.args import DataArgs

    splits = prepare(DataArgs(**cfg["data"]), cfg["task"], cfg.get("options"))
    old = {}
    for role, ds in splits.as_dict().items():
        digest = hashlib.sha256()
        for row in rows_in_batches(ds, [c for c in ("text", "text_pair", "labels") if c in ds.column_names]):
            digest.update(json.dumps(row, ensure_ascii=False, default=str).encode() + b"\n")
        old[role] = {"examples": len(ds), "sha256": digest.hexdigest()}
    assert splits.fingerprints(like=old) == old
    cfg["resolved"]["splits"] = old  # as a run of 0.2.1 recorded them
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert run_cli("eval", str(run)).returncode == 0
