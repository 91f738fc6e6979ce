"""The embedding task's model and trainer: sentence-transformers, set up the encoderfit way.

Training is `SentenceTransformerTrainer` (a transformers Trainer: the same arguments, checkpoints, sealing,
resume, DDP and TensorBoard as every other task) with batches free of duplicate texts, so no in-batch negative is
secretly a positive. The saved model directory is a plain sentence-transformers one (modules.json, 1_Pooling,
2_Normalize) and loads with `SentenceTransformer(DIR)`.

For inference encoderfit runs the transformer itself (`Pooled`: the pooling and normalisation the directory's
modules.json names), so the Predictor's length batching, the ONNX export and the server work unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ...core.device import process_device
from ...core.errors import UserError

log = logging.getLogger(__name__)


def load_sentence_model(args, max_length: int):
    """A SentenceTransformer from a sentence-transformers directory or hub id, or any encoder given mean pooling;
    always ending in normalisation (cosine similarity is then a dot product, in the index and in ONNX)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    from ...models.loading import ATTENTION_DROPOUT_KEYS, hub_error, config_overrides, is_sentence_model, load_config, resolve_name

    path = resolve_name(args.name_or_path)
    # attention dropout as model.attention_dropout says (0: PyTorch's fused attention, 2x faster on CPU than BERT's 0.1)
    dropout = {k: v for k, v in config_overrides(args, load_config(args)).items() if k in ATTENTION_DROPOUT_KEYS}
    device = str(process_device())  # where it trains or encodes (a base-model baseline): the GPU where there is one
    kwargs = {"trust_remote_code": args.trust_remote_code, "revision": args.revision, "device": device,
              "model_kwargs": {"use_safetensors": True}, "config_kwargs": dropout}
    try:
        if is_sentence_model(path) or not Path(path).is_dir():
            model = SentenceTransformer(path, **kwargs)
        else:  # a plain transformers encoder (a fine-tuned or pre-trained encoderfit model, a random ModernBERT)
            log.info("%s is not a sentence-transformers model: adding mean pooling and normalisation", args.name_or_path)
            remote = {"trust_remote_code": True} if args.trust_remote_code else {}
            body = Transformer(path, model_kwargs={"use_safetensors": True, **remote}, processor_kwargs=dict(remote),
                               config_kwargs={**remote, **dropout})
            model = SentenceTransformer(modules=[body, Pooling(body.get_embedding_dimension(), "mean")], device=device)
    except (OSError, ValueError) as err:
        raise hub_error(args.name_or_path, err) from None
    last = list(model)[-1]
    if type(last).__name__ == "Dense" and type(last.activation_function).__name__ == "Identity":
        # a linear layer after everything else is a classifier's head, as encoderfit's inference reads it (pooling_of):
        # its outputs are logits (models/pooling.py, SetFit), not part of an embedding
        log.info("%s: its last module is a classifier head (a Dense layer giving logits); the embedding model is the "
                 "modules before it", args.name_or_path)
        model = SentenceTransformer(modules=list(model)[:-1], device=device)
    if not any(type(m).__name__ == "Normalize" for m in model):
        model.append(Normalize())
    model.max_seq_length = max_length
    return model


def training_loss(model, shape: str, options=None):
    """The loss the data shape calls for (`options.loss`, the task's --embedding.loss, overrides it), Matryoshka-wrapped
    when asked (`options.matryoshka_dims`). `options`: an EmbeddingOptions, or None for the defaults."""
    from sentence_transformers.sentence_transformer import losses

    loss_name, mini_batch, dims = (options.loss, options.mini_batch, options.matryoshka_dims) if options else ("auto", None, None)
    group = getattr(options, "group", "embedding")
    name = loss_name if loss_name != "auto" else ("cosent" if shape == "scored" else "mnrl")
    if name == "mnrl" and shape == "scored":
        raise UserError(f"{group}.loss: mnrl needs (anchor, positive) pairs or triplets, and the data holds scored "
                        "pairs; use cosent or angle")
    if name in ("cosent", "angle") and shape != "scored":
        raise UserError(f"{group}.loss: {name} needs scored pairs (a similarity per pair); this data holds "
                        f"{shape}: use mnrl")
    if name == "mnrl":
        loss = (losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=mini_batch)
                if mini_batch else losses.MultipleNegativesRankingLoss(model))
    else:
        loss = losses.CoSENTLoss(model) if name == "cosent" else losses.AnglELoss(model)
    log.info("loss: %s%s", type(loss).__name__, f" over Matryoshka dimensions {dims}" if dims else "")
    if dims:
        dims = sorted(set(dims), reverse=True)
        if dims[0] > model.get_embedding_dimension():
            raise UserError(f"{group}.matryoshka_dims: {dims[0]} is above the model's {model.get_embedding_dimension()} dimensions")
        loss = losses.MatryoshkaLoss(model, loss, dims)
    return loss


def build_sentence_trainer(net, shape: str, tokenized: Dict, train, precision: str, workdir: Path, callbacks: Optional[list],
                           sampler=None, options=None):
    """SentenceTransformerTrainer with encoderfit's training arguments, callbacks and duplicate-free batches."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    from ...models.trainer import trainer_callbacks, training_arguments

    if train.ensemble:
        raise UserError("train.ensemble: ensembles of embedding models are not supported (their vector spaces differ); "
                        "drop train.ensemble (train.seeds alone keeps the best seed on validation)")
    if train.metric_for_best != "loss":
        raise UserError(f"train.metric_for_best: the embedding task keeps the checkpoint with the lowest validation loss; "
                        f"drop '{train.metric_for_best}'")
    # Random batches without duplicates: in-batch negatives (mnrl) need them, and the scored-pair losses (CoSENT,
    # AnglE) rank every pair of the batch against the others, so a batch of similar lengths (length_grouped_sampler:
    # 2x faster steps) narrows what they compare: on STS-B it cost validation Spearman 0.878 -> 0.871 (docs/benchmarks.md).
    sampler = sampler or BatchSamplers.NO_DUPLICATES
    args = training_arguments(train, precision, workdir / "checkpoints", cls=SentenceTransformerTrainingArguments,
                              batch_sampler=sampler)
    return SentenceTransformerTrainer(model=net, args=args, train_dataset=tokenized["train"],
                                      eval_dataset=tokenized["validation"], loss=training_loss(net, shape, options),
                                      callbacks=trainer_callbacks(train, workdir / "logs", callbacks or []))


def distill_trainer(net, tokenized: Dict, train, precision: str, workdir: Path, callbacks: Optional[list]):
    """A student embedding model trained to reproduce a teacher's similarities through its vectors: sentence-transformers'
    EmbedDistillLoss with the cosine distance (Kim et al. 2023, EmbedDistill) to the teacher's vectors centred on their
    mean over the training texts (the validation texts' centred on the same mean). Not MSELoss on the raw vectors:
    a fine-tuned teacher's vectors share one large direction, and matching it teaches nothing about which texts are
    alike (STS-B: Spearman 0.468 with MSE, 0.832 now; docs/distill.md has each step). A student of another width gets
    a linear projection to the teacher's (a Dense module before Normalize, started by `fitted_projection`), so the
    saved directory still loads with SentenceTransformer(DIR)."""
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer import losses
    from sentence_transformers.sentence_transformer.modules import Dense

    from ...models.trainer import trainer_callbacks, training_arguments

    if train.metric_for_best != "loss":
        raise UserError(f"train.metric_for_best: a distilled embedding model keeps the checkpoint closest to its teacher on "
                        f"validation (the loss); drop '{train.metric_for_best}'")
    mean = np.asarray(tokenized["train"]["label"], dtype=np.float32).mean(0)
    log.info("the teacher's vectors are centred on their training mean (its squared length %.2f: about the mean cosine "
             "of two random training texts)", float(mean @ mean))

    def centred(batch):
        vectors = np.asarray(batch["label"], dtype=np.float32) - mean
        return {"label": (vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)).tolist()}

    tokenized = {split: rows.map(centred, batched=True) if "label" in rows.column_names else rows for split, rows in tokenized.items()}
    width, wanted = net.get_embedding_dimension(), len(mean)
    if width != wanted:
        modules = list(net)
        last = next(i for i, m in enumerate(modules) if type(m).__name__ == "Normalize")
        project = Dense(width, wanted, bias=False, activation_function=__import__("torch").nn.Identity())
        project.linear.weight.data = fitted_projection(modules[:last], tokenized["train"])
        log.info("the student's %d dimensions are projected to the teacher's %d (a Dense module, started from the least-"
                 "squares map of the student's vectors to the teacher's)", width, wanted)
        net = SentenceTransformer(modules=[*modules[:last], project, *modules[last:]], device=str(process_device()))
        net.max_seq_length = modules[0].max_seq_length
    args = training_arguments(train, precision, workdir / "checkpoints", cls=SentenceTransformerTrainingArguments)
    return SentenceTransformerTrainer(model=net, args=args, train_dataset=tokenized["train"], eval_dataset=tokenized["validation"],
                                      loss=losses.EmbedDistillLoss(net, distance_metric="cosine"), callbacks=trainer_callbacks(train, workdir / "logs", callbacks or []))


def fitted_projection(modules, rows, most: int = 20000):
    """The (teacher width, student width) matrix that best maps the student's pooled vectors of (up to `most` of) the
    training texts to their (centred) teacher vectors, by ridge least squares: where the projection starts. A random
    start scrambles what the student's vectors already say while the encoder learns to undo it (STS-B: 0.726 from a
    random start, 0.832 from this one; docs/distill.md)."""
    import torch
    from sentence_transformers import SentenceTransformer

    rows = rows.select(range(min(most, len(rows))))
    pooled = SentenceTransformer(modules=list(modules), device=str(process_device())).encode(rows["text"], batch_size=64, convert_to_numpy=True)
    target = np.asarray(rows["label"], dtype=np.float64)
    gram = pooled.T.astype(np.float64) @ pooled
    gram += 1e-3 * np.trace(gram) / len(gram) * np.eye(len(gram))  # a light ridge, relative to the vectors' scale
    return torch.tensor(np.linalg.solve(gram, pooled.T.astype(np.float64) @ target).T, dtype=torch.float32)


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


def text_columns(shape: str) -> List[str]:
    """The training columns in the order sentence-transformers' losses read them."""
    return {"pairs": ["text", "text_pair"], "triplets": ["text", "text_pair", "negative"], "scored": ["text", "text_pair", "labels"]}[shape]
