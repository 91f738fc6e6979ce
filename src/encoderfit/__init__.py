"""encoderfit: labelled text in; a fine-tuned, evaluated, deployable transformer encoder out."""

__version__ = "0.2.0"

from .errors import UserError  # noqa: E402

# The Python API mirrors the CLI: each subcommand's function, and the Predictor that predict and serve use.
# Loaded on first use, so `import encoderfit` stays light (torch loads only when the API is used).
_API = {"Predictor": "predict", "Classifier": "predict", "fit": "train", "cross_validate": "crossval", "tune": "tune", "evaluate": "evaluate",
        "export": "export", "report": "report", "serve": "serve", "pretrain": "pretrain", "tune_pretrain": "tune_pretrain", "CorpusArgs": "corpus",
        "TokenizerArgs": "tokenizer_training", "PretrainModelArgs": "pretrain_config", "MlmArgs": "pretrain_config"}


def __getattr__(name):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(name)


__all__ = ["Predictor", "Classifier", "UserError", "fit", "cross_validate", "tune", "evaluate", "export", "report", "serve", "pretrain", "tune_pretrain", "CorpusArgs",
           "TokenizerArgs", "PretrainModelArgs", "MlmArgs", "__version__"]
