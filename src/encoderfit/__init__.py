"""encoderfit: labelled text in; a fine-tuned, evaluated, deployable transformer encoder out."""

__version__ = "0.1.0"

from .errors import UserError  # noqa: E402


def __getattr__(name):  # keep `import encoderfit` light: torch loads only when the API is used
    if name == "Classifier":
        from .predict import Classifier

        return Classifier
    if name == "fit":
        from .train import fit

        return fit
    if name == "tune":
        from .tune import tune

        return tune
    raise AttributeError(name)


__all__ = ["Classifier", "UserError", "fit", "tune", "__version__"]
