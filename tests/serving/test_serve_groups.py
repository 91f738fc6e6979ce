"""serve's options reach the app in groups (serving/app.py: Limits, Batching, Access); the CLI keeps its flat flags."""

import pytest
from starlette.testclient import TestClient

from encoderfit import cli
from encoderfit.runs.predictor import Predictor
from encoderfit.serving.app import Access, Batching, create_app, model_info
from encoderfit.serving.http import Limits


def test_each_group_reaches_the_part_of_the_app_it_configures(trained_run):
    predictor = Predictor.from_pretrained(trained_run)
    app = create_app(predictor, model_info(trained_run, predictor, "torch"), Limits(max_texts=2),
                     Batching(max_queue=7, enabled=False), Access(api_key="k", allowed_hosts=["testserver"], docs=False))
    assert (app.state.batcher.max_queue, app.state.batcher.enabled, app.docs_url) == (7, False, None)
    with TestClient(app) as client:
        assert client.get("/v1/model").status_code == 401
        key = {"Authorization": "Bearer k"}
        assert client.post("/v1/predict", json={"texts": ["a", "b", "c"]}, headers=key).status_code == 422  # max_texts
        assert client.post("/v1/predict", json={"texts": ["a"]}, headers=key).status_code == 200
        assert client.get("/health", headers={"host": "elsewhere.example"}).status_code == 400  # allowed_hosts


def test_serve_keeps_its_documented_flat_flags(capsys):
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    shown = capsys.readouterr().out
    for flag in ("--max_texts", "--max_wait_ms", "--max_queue", "--batching", "--api_key", "--allowed_hosts", "--docs"):
        assert flag in shown, flag
