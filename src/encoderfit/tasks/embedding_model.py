"""The embedding task's model and trainer: sentence-transformers, set up the encoderfit way.

Training is `SentenceTransformerTrainer` (a transformers Trainer: the same arguments, checkpoints, sealing,
resume, DDP and TensorBoard as every other task) with batches free of duplicate texts, so no in-batch negative is
secretly a positive. The saved model directory is a plain sentence-transformers one (modules.json, 1_Pooling,
2_Normalize) and loads with `SentenceTransformer(DIR)`.

For inference encoderfit runs the transformer itself (`Pooled`: the pooling and normalisation the directory's
modules.json names), so the Predictor's length batching, the ONNX export and the server work unchanged.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List, Optional

from ..errors import UserError

log = logging.getLogger(__name__)
POOLING_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max"}


def load_sentence_model(args, max_length: int):
    """A SentenceTransformer from a sentence-transformers directory or hub id, or any encoder given mean pooling;
    always ending in normalisation (cosine similarity is then a dot product, in the index and in ONNX)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    from ..modeling import ATTENTION_DROPOUT_KEYS, _hub_error, config_overrides, is_sentence_model, load_config, resolve_name

    path = resolve_name(args.name_or_path)
    # attention dropout as model.attention_dropout says (0: PyTorch's fused attention, 2x faster on CPU than BERT's 0.1)
    dropout = {k: v for k, v in config_overrides(args, load_config(args)).items() if k in ATTENTION_DROPOUT_KEYS}
    kwargs = {"trust_remote_code": args.trust_remote_code, "revision": args.revision, "device": "cpu",
              "model_kwargs": {"use_safetensors": True}, "config_kwargs": dropout}
    try:
        if is_sentence_model(path) or not Path(path).is_dir():
            model = SentenceTransformer(path, **kwargs)
        else:  # a plain transformers encoder (a fine-tuned or pre-trained encoderfit model, a random ModernBERT)
            log.info("%s is not a sentence-transformers model: adding mean pooling and normalisation", args.name_or_path)
            remote = {"trust_remote_code": True} if args.trust_remote_code else {}
            body = Transformer(path, model_kwargs={"use_safetensors": True, **remote}, processor_kwargs=dict(remote),
                               config_kwargs={**remote, **dropout})
            model = SentenceTransformer(modules=[body, Pooling(body.get_embedding_dimension(), "mean")], device="cpu")
    except (OSError, ValueError) as err:
        raise _hub_error(args.name_or_path, err) from None
    if not any(type(m).__name__ == "Normalize" for m in model):
        model.append(Normalize())
    model.max_seq_length = max_length
    return model


def training_loss(model, shape: str, train):
    """The loss the data shape calls for (train.embedding_loss overrides it), Matryoshka-wrapped when asked."""
    from sentence_transformers.sentence_transformer import losses

    name = train.embedding_loss if train.embedding_loss != "auto" else ("cosent" if shape == "scored" else "mnrl")
    if name == "mnrl" and shape == "scored":
        raise UserError("train.embedding_loss: mnrl needs (anchor, positive) pairs or triplets, and the data holds scored "
                        "pairs; use cosent or angle")
    if name in ("cosent", "angle") and shape != "scored":
        raise UserError(f"train.embedding_loss: {name} needs scored pairs (a similarity per pair); this data holds "
                        f"{shape}: use mnrl")
    if name == "mnrl":
        loss = (losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=train.contrastive_mini_batch)
                if train.contrastive_mini_batch else losses.MultipleNegativesRankingLoss(model))
    else:
        loss = losses.CoSENTLoss(model) if name == "cosent" else losses.AnglELoss(model)
    log.info("loss: %s%s", type(loss).__name__, f" over Matryoshka dimensions {train.matryoshka_dims}" if train.matryoshka_dims else "")
    if train.matryoshka_dims:
        dims = sorted(set(train.matryoshka_dims), reverse=True)
        if dims[0] > model.get_embedding_dimension():
            raise UserError(f"train.matryoshka_dims: {dims[0]} is above the model's {model.get_embedding_dimension()} dimensions")
        loss = losses.MatryoshkaLoss(model, loss, dims)
    return loss


def build_sentence_trainer(net, shape: str, tokenized: Dict, train, precision: str, workdir: Path, callbacks: Optional[list]):
    """SentenceTransformerTrainer with encoderfit's training arguments, callbacks and duplicate-free batches."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    from ..trainer import _callbacks, training_arguments

    if train.ensemble:
        raise UserError("train.ensemble: ensembles of embedding models are not supported (their vector spaces differ); "
                        "drop train.ensemble (train.seeds alone keeps the best seed on validation)")
    if train.metric_for_best != "loss":
        raise UserError(f"train.metric_for_best: the embedding task keeps the checkpoint with the lowest validation loss; "
                        f"drop '{train.metric_for_best}'")
    # in-batch negatives (mnrl) need batches without duplicates; scored pairs (CoSENT/AnglE) rank the batch's pairs
    # against each other, and length-grouped batches waste less on padding
    sampler = length_grouped_sampler() if shape == "scored" else BatchSamplers.NO_DUPLICATES
    args = training_arguments(train, precision, workdir / "checkpoints", cls=SentenceTransformerTrainingArguments,
                              batch_sampler=sampler)
    return SentenceTransformerTrainer(model=net, args=args, train_dataset=tokenized["train"],
                                      eval_dataset=tokenized["validation"], loss=training_loss(net, shape, train),
                                      callbacks=_callbacks(train, workdir / "logs", callbacks or []))


def length_grouped_sampler():
    """A sentence-transformers batch sampler that groups examples of similar length (transformers' length grouping:
    megabatches of 50 batches, each sorted by length), in an order that is a function of (seed, epoch) alone, so a
    resumed run sees the same batches. Built on first use (sentence-transformers loads only then) and kept as this
    module's LengthGroupedBatchSampler, so the training arguments that name it can be pickled."""
    if "LengthGroupedBatchSampler" in globals():
        return globals()["LengthGroupedBatchSampler"]
    import torch
    from sentence_transformers.base.sampler import DefaultBatchSampler
    from transformers.trainer_pt_utils import get_length_grouped_indices

    class LengthGroupedBatchSampler(DefaultBatchSampler):
        def __init__(self, dataset, batch_size, drop_last, valid_label_columns=None, generator=None, seed=0):
            super().__init__(dataset, batch_size=batch_size, drop_last=drop_last, valid_label_columns=valid_label_columns,
                             generator=generator, seed=seed)
            columns = [c for c in ("text", "text_pair", "anchor", "positive") if c in dataset.column_names]
            self.lengths = [sum(len(x) for x in row) for row in zip(*(dataset[c] for c in columns))]  # characters: cheap

        def __iter__(self):
            order = get_length_grouped_indices(self.lengths, self.batch_size,
                                               generator=torch.Generator().manual_seed(self.seed + self.epoch))
            for start in range(0, len(order), self.batch_size):
                batch = order[start:start + self.batch_size]
                if len(batch) == self.batch_size or not self.drop_last:
                    yield batch

        def __len__(self):
            return len(self.lengths) // self.batch_size if self.drop_last else -(-len(self.lengths) // self.batch_size)

    LengthGroupedBatchSampler.__qualname__ = LengthGroupedBatchSampler.__name__
    globals()["LengthGroupedBatchSampler"] = LengthGroupedBatchSampler
    return LengthGroupedBatchSampler


def __getattr__(name):  # unpickling names the sampler class before anything built it
    if name == "LengthGroupedBatchSampler":
        return length_grouped_sampler()
    raise AttributeError(name)


def pooling_of(model_dir: Path) -> Dict:
    """What a sentence-transformers directory pools with: {"mode": cls|mean|max, "normalize": bool}."""
    from ..modeling import SENTENCE_MODULES

    modules_file = Path(model_dir) / SENTENCE_MODULES
    if not modules_file.is_file():
        raise UserError(f"{model_dir}: no modules.json; an embedding model directory is a sentence-transformers one "
                        "(re-train the run, or save the model with SentenceTransformer.save)")
    modules = json.loads(modules_file.read_text())
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    unknown = [k for k in kinds if k not in ("Transformer", "Pooling", "Normalize", "Dense")]
    if unknown:
        raise UserError(f"{model_dir}: modules {unknown} are not supported by encoderfit's inference (Transformer, "
                        "Pooling, Normalize, Dense are); use SentenceTransformer(DIR) directly")
    pooling = next((m for m in modules if m["type"].endswith("Pooling")), None)
    config = json.loads((Path(model_dir) / pooling["path"] / "config.json").read_text()) if pooling else {}
    mode = pooling_mode(config) if pooling else "cls"
    if mode is None:
        raise UserError(f"{model_dir}: pooling {config} is not one of cls, mean or max; use SentenceTransformer(DIR) directly")
    dense = next((m["path"] for m in modules if m["type"].endswith("Dense")), None)
    return {"mode": mode, "normalize": "Normalize" in kinds, "dense": dense}


def pooling_mode(config: Dict) -> Optional[str]:
    """cls, mean or max from a Pooling module's config.json (None: another or a combined mode)."""
    if isinstance(config.get("pooling_mode"), str):  # sentence-transformers 6 writes the mode by name
        chosen = [config["pooling_mode"]]
    else:  # earlier versions: one boolean per mode
        chosen = [mode for key, mode in POOLING_MODES.items() if config.get(key)]
        if any(config.get(k) for k in config if k.startswith("pooling_mode") and k not in POOLING_MODES):
            chosen = []
    return chosen[0] if len(chosen) == 1 and chosen[0] in ("cls", "mean", "max") else None


def _dense_layer(model_dir: Path, path: str):
    """A Dense module's linear layer (encoderfit writes the identity activation: the layer's outputs are logits)."""
    import torch
    from safetensors.torch import load_file

    config = json.loads((Path(model_dir) / path / "config.json").read_text())
    activation = str(config.get("activation_function", ""))
    if not activation.endswith("Identity"):
        raise UserError(f"{model_dir}: its Dense module applies {activation}; encoderfit's inference runs Dense layers with the "
                        "identity activation only; use SentenceTransformer(DIR) directly")
    weights = load_file(str(Path(model_dir) / path / "model.safetensors"))
    weights = {k.split(".", 1)[1] if k.startswith("linear.") else k: v for k, v in weights.items()}
    layer = torch.nn.Linear(config["in_features"], config["out_features"], bias="bias" in weights)
    layer.load_state_dict(weights)
    return layer


def pooled(model, model_dir: Path):
    """The transformer with its pooling and normalisation: a module whose `.logits` are the sentence embeddings, or,
    when the directory has a linear head on them (classifier.safetensors: SetFit), that head's class logits."""
    import torch

    from ..pooling import pool
    from .setfit import HEAD_FILE

    setting = pooling_of(model_dir)
    head = None
    if (Path(model_dir) / HEAD_FILE).is_file():
        from safetensors.torch import load_file

        weights = load_file(str(Path(model_dir) / HEAD_FILE))
        head = torch.nn.Linear(weights["weight"].shape[1], weights["weight"].shape[0])
        head.load_state_dict(weights)
    elif setting.get("dense"):  # a linear head fine-tuned with the encoder (pooling.py)
        head = _dense_layer(model_dir, setting["dense"])

    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.config = model.config

        def forward(self, input_ids, attention_mask, **extra):
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
            out = pool(hidden, attention_mask, setting["mode"])
            if setting["normalize"]:
                out = torch.nn.functional.normalize(out, p=2, dim=1)
            return SimpleNamespace(logits=out if self.head is None else self.head(out))

    module = Pooled()
    module.head = head
    return module


def text_columns(shape: str) -> List[str]:
    """The training columns in the order sentence-transformers' losses read them."""
    return {"pairs": ["text", "text_pair"], "triplets": ["text", "text_pair", "negative"], "scored": ["text", "text_pair", "labels"]}[shape]
