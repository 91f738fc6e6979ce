"""An encoderfit model directory as an MLflow pyfunc model (logged by tracking.py, imported only where MLflow is)."""

from __future__ import annotations

from mlflow.pyfunc import PythonModel


class EncoderfitModel(PythonModel):
    """Texts (a list, a Series, or a DataFrame with the task's text column and, for pairs, its second one) -> the
    same result dicts as `encoderfit predict`."""

    def load_context(self, context):
        from .predictor import Predictor

        self.predictor = Predictor.from_pretrained(context.artifacts["model"])

    def predict(self, context, model_input, params=None):
        first, second = self.predictor.task.inputs
        if hasattr(model_input, "columns"):  # a DataFrame
            texts = [str(t) for t in model_input[first if first in model_input.columns else model_input.columns[0]]]
            pairs = [str(t) for t in model_input[second]] if second in model_input.columns else None
            return self.predictor.predict(texts, pairs)
        return self.predictor.predict([str(t) for t in model_input])
