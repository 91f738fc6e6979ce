"""Classification on embeddings (`--task classification --model.head embedding`): SetFit (Tunstall et al. 2022).

1. The sentence encoder is fine-tuned contrastively on pairs made from the labels: two texts of one class should
   embed close, of two classes apart (CoSENT on 1/0 targets: same-class pairs ranked above the others).
2. A multinomial logistic regression is fitted on the training texts' embeddings, its C chosen by validation log-loss.
3. The regression's weights become a linear layer on the pooled, normalised embedding (a Dense module after
   Normalize; the transformer in 0_Transformer/), so the model gives classification logits like any other:
   calibration, thresholds, the TF-IDF verdict, predict, serve and ONNX export apply unchanged, and
   `SentenceTransformer(DIR).encode(texts)` returns the logits. (Runs from before 2026-12-07 kept the layer in
   `classifier.safetensors` beside a top-level transformer; they still load.)
With few labelled examples this is where contrastive pairs win: n examples give about n^2 / 2 pairs to learn from.
The run is a classification run; only training differs.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np

from ...core.errors import UserError
from .task import C_GRID, Classification, ClassificationModeling, ClassificationTargets

log = logging.getLogger(__name__)


def contrastive_pairs(texts, labels, per_example: int, seed: int):
    """About `per_example` pairs per text, half with a text of its class (target 1), half with another class's (0):
    the datasets.Dataset (text, text_pair, labels) the sentence trainer reads."""
    from datasets import Dataset

    rng = random.Random(seed)
    by_class = {}
    for i, y in enumerate(labels):
        by_class.setdefault(int(y), []).append(i)
    rows = {"text": [], "text_pair": [], "labels": []}
    for i, y in enumerate(labels):
        same = [j for j in by_class[int(y)] if j != i]
        other = [j for c, members in by_class.items() if c != int(y) for j in members]
        for k in range(per_example):
            pool, target = (same, 1.0) if k % 2 == 0 else (other, 0.0)
            if pool:
                rows["text"].append(texts[i])
                rows["text_pair"].append(texts[rng.choice(pool)])
                rows["labels"].append(target)
    return Dataset.from_dict(rows)


def fit_logistic(train_x, train_y, val_x, val_y, n_classes: int):
    """(weight (n_classes, dim), bias (n_classes,), C): multinomial logistic regression, C by validation log-loss."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    best = None
    for c in C_GRID:
        model = LogisticRegression(C=c, max_iter=2000).fit(train_x, train_y)
        loss = log_loss(val_y, model.predict_proba(val_x), labels=list(range(n_classes))) if len(set(train_y)) == n_classes else 0
        if best is None or loss < best[0]:
            best = (loss, c, model)
    _, c, model = best
    weight = np.zeros((n_classes, train_x.shape[1]), dtype=np.float32)
    bias = np.zeros(n_classes, dtype=np.float32)
    if model.coef_.shape[0] == 1:  # binary: sklearn keeps one row; logits [0, w.x + b] give the same softmax
        weight[model.classes_[1]], bias[model.classes_[1]] = model.coef_[0], model.intercept_[0]
    else:
        weight[model.classes_], bias[model.classes_] = model.coef_, model.intercept_
    return weight, bias, c


class SetFitTargets(ClassificationTargets):
    def tokenize(self, ds, tokenizer, max_length, windows, train, role):
        if windows:
            raise UserError("model.long_texts windows: not with model.head embedding (one embedding per text); texts are truncated")
        return ds.select_columns(["text", "labels"])


class SetFitModeling(ClassificationModeling):
    probes = False  # its head is fitted on the contrastively tuned embeddings after training

    def load_model(self, args, labels, max_length, stats=None):
        from ..embedding.model import load_sentence_model

        return load_sentence_model(args, max_length)

    def build_trainer(self, net, tokenizer, labels, stats, tokenized, train, precision, workdir, callbacks=None):
        from ..embedding.model import build_sentence_trainer

        pairs = {role: contrastive_pairs(list(ds["text"]), list(ds["labels"]), train.contrastive_pairs, train.seed + k)
                 for k, (role, ds) in enumerate(tokenized.items())}
        log.info("SetFit: %d contrastive pairs from %d training texts (%d per text)", len(pairs["train"]),
                 len(tokenized["train"]), train.contrastive_pairs)
        trainer = build_sentence_trainer(net, "scored", pairs, train, precision, workdir, callbacks)
        trainer.encoderfit_examples = tokenized  # the texts and classes the logistic regression is fitted on
        return trainer

    def after_training(self, model_dir, stats, trainer=None):
        """The logistic regression becomes a Dense module after the embedding's normalisation, and the transformer
        moves to 0_Transformer/ (models/pooling.py): `SentenceTransformer(DIR).encode` gives the class logits, and no
        top-level config.json lets a plain pipeline load the encoder under a random head."""
        import json

        from ...models.loading import SENTENCE_MODULES
        from ...models.pooling import ST_MODULES, TRANSFORMER, nest_transformer, save_dense_head, write_modules

        data = trainer.encoderfit_examples
        embed = lambda ds: trainer.model.encode(list(ds["text"]), batch_size=32, normalize_embeddings=True)  # noqa: E731
        n_classes = len(data["train"].features["labels"].names)
        weight, bias, c = fit_logistic(embed(data["train"]), np.asarray(data["train"]["labels"]),
                                       embed(data["validation"]), np.asarray(data["validation"]["labels"]), n_classes)
        model_dir = Path(model_dir)
        modules = json.loads((model_dir / SENTENCE_MODULES).read_text())  # ... Normalize (load_sentence_model ends so)
        nest_transformer(model_dir, trainer.model[0].save)
        head = f"{len(modules)}_Dense"
        save_dense_head(model_dir, head, weight, bias)
        write_modules(model_dir, [(TRANSFORMER if m["type"].endswith("Transformer") else m["path"], m["type"]) for m in modules]
                      + [(head, ST_MODULES + "Dense")])
        log.info("SetFit: logistic regression on %d-dimensional embeddings, C = %g (validation log-loss)", weight.shape[1], c)
        return True


class EmbeddingHeadClassification(Classification):
    """The training side of `model.head embedding`; every other stage reads the run as plain classification."""
    stages = Classification.stages - {"distill"}
    unsupported = {"distill": "a student is distilled with a linear head: drop model.head embedding for the student"}
    Targets = SetFitTargets
    Modeling = SetFitModeling
