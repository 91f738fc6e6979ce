"""The inference-backend registry (runs/backends/): a backend registered from outside the package (here, this test
module: docs/development.md's "Recipe: a new inference backend") is what `predict --backend NAME` runs, with no other
file changed; an unknown name is one line naming the registered ones."""

import typing

import numpy as np
import pytest

from conftest import read_jsonl, run_cli
from failing import cli_fails
from encoderfit.commands.embed import embed
from encoderfit.commands.predict import predict
from encoderfit.commands.search import search
from encoderfit.runs.backends import BACKENDS, InferenceBackend, Loaded, exports_for
from encoderfit.runs.predictor import Predictor

TEXTS = ["garlic soup tonight", "the referee stopped the match", "a new server chip", "the chef and the oven"]


class TorchFp64(InferenceBackend):
    """The run's own model in float64: the recipe's one module (load only: it runs the run's weights, nothing to
    export, nothing to re-check)."""

    name = "torch-fp64"

    def load(self, path, device, packing, recheck: bool) -> Loaded:
        loaded = BACKENDS["torch"].load(path, device, packing, recheck)
        loaded.model = loaded.model.double()
        return loaded


def test_a_backend_registered_from_a_test_module_is_what_predict_runs(trained_run, monkeypatch):
    monkeypatch.setitem(BACKENDS, TorchFp64.name, TorchFp64())  # the recipe's one registry entry
    rows = read_jsonl(run_cli("predict", str(trained_run), "--backend", "torch-fp64", input="\n".join(TEXTS) + "\n").stdout)
    torch = Predictor.from_pretrained(trained_run)
    assert [r["label"] for r in rows] == [r["label"] for r in torch.predict(TEXTS)]
    fp64 = Predictor.from_pretrained(trained_run, backend="torch-fp64")  # the Python API takes it too
    assert str(next(fp64.model.parameters()).dtype) == "torch.float64" and fp64.source.path == torch.source.path
    np.testing.assert_allclose(fp64.logits(TEXTS), torch.logits(TEXTS), atol=1e-4)
    # while it is registered, the message for an unknown name lists it with the shipped ones
    assert cli_fails("predict", str(trained_run), "--backend", "tf", input="x\n") == (
        "error: --backend: 'tf' is not valid; expected one of: torch, onnx, onnx-int8, torch-fp64")
    monkeypatch.undo()  # unregistered: the name is unknown again
    assert "torch-fp64" not in BACKENDS
    assert cli_fails("predict", str(trained_run), "--backend", "torch-fp64", input="x\n") == (
        "error: --backend: 'torch-fp64' is not valid; expected one of: torch, onnx, onnx-int8")


def test_an_unknown_backend_is_one_line_naming_the_registered_ones(trained_run, tmp_path):
    (tmp_path / "in.txt").write_text("hello\n")
    out = tmp_path / "out.jsonl"
    line = cli_fails("predict", str(trained_run), "--input", str(tmp_path / "in.txt"), "--output", str(out), "--backend", "tf")
    assert line == "error: --backend: 'tf' is not valid; expected one of: torch, onnx, onnx-int8"
    assert not out.exists() and not list(tmp_path.glob("out.jsonl*"))  # refused before anything is written
    with pytest.raises(Exception, match="expected one of: torch, onnx, onnx-int8"):
        Predictor.from_pretrained(trained_run, backend="tf")


def test_every_backend_option_is_the_one_registry_checked_name():
    """predict, embed, search and serve take `backend` as one shared name (a str the registry checks), not a Literal each."""
    from encoderfit.commands.serve import serve

    for command in (predict, embed, search, serve):
        assert typing.get_type_hints(command)["backend"] is str, command.__name__


def test_export_writes_the_backends_of_its_format(trained_run):
    assert [b.name for b in exports_for("onnx", None)] == ["onnx"]
    assert [b.name for b in exports_for("onnx", "int8")] == ["onnx", "onnx-int8"]  # fp32 first: int8 quantizes its file
    assert cli_fails("export", str(trained_run), "--format", "tflite") == "error: --format: 'tflite' is not valid; expected one of: onnx"
    assert cli_fails("export", str(trained_run), "--quantize", "int4") == "error: --quantize: 'int4' is not valid; expected one of: int8, null"
