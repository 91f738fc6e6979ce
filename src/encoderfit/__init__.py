"""encoderfit: labelled text in; a fine-tuned, evaluated, deployable transformer encoder out."""

__version__ = "0.2.0"

from .core.errors import UserError  # noqa: E402

# The Python API mirrors the CLI: each subcommand's function, and the Predictor that predict and serve use.
# Loaded on first use, so `import encoderfit` stays light (torch loads only when the API is used).
_API = {"Predictor": "runs.predictor", "Classifier": "runs.predictor", "fit": "commands.train", "cross_validate": "commands.cv", "tune": "commands.tune", "evaluate": "commands.eval",
        "export": "commands.export", "report": "commands.report", "serve": "commands.serve", "pretrain": "commands.pretrain", "tune_pretrain": "commands.tune_pretrain", "CorpusArgs": "pretraining.corpus",
        "TokenizerArgs": "pretraining.tokenizer", "PretrainModelArgs": "pretraining.settings", "MlmArgs": "pretraining.settings", "distill": "commands.distill", "DistillArgs": "core.args",
        "launch_modal": "launch.on_modal", "launch_skypilot": "launch.on_skypilot", "monitor": "commands.monitor",
        "feedback": "commands.feedback", "retrain": "commands.retrain", "PredictionLog": "runs.predlog"}


def __getattr__(name):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(name)


__all__ = ["Predictor", "Classifier", "UserError", "fit", "cross_validate", "tune", "evaluate", "export", "report", "serve", "pretrain", "tune_pretrain", "CorpusArgs",
           "TokenizerArgs", "PretrainModelArgs", "MlmArgs", "distill", "DistillArgs", "launch_modal", "launch_skypilot", "monitor", "feedback", "retrain", "PredictionLog", "__version__"]
