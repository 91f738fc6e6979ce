"""Masked-language-model training for `encoderfit pretrain` and `tune-pretrain` (commands/pretrain.py,
commands/tune_pretrain.py): the MLM task, the run's tokenizer (trained or reused), packed sequences, and one
training of the model on them with the same machinery as fine-tuning (models/trainer.py, sealed checkpoints)."""

from __future__ import annotations

import json
import logging
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sized

import numpy as np

from .. import __version__
from ..core.device import keep_freed_memory, pick_precision
from ..core.distributed import barrier, is_main
from ..core.errors import UserError
from ..core.files import write_json
from .settings import PretrainConfig, build_model
from ..runs.rundir import ModelInfo, RunDir
from ..tasks import get_task
from .tokenizer import train_tokenizer

log = logging.getLogger(__name__)
TOKENIZER = "tokenizer"  # where the run's tokenizer waits in the hidden directory until model/ is written


def mlm_task():
    """The masked-LM task this stage (and tune-pretrain) exists for."""
    return get_task("mlm", "pretrain")


def run_tokenizer(cfg: PretrainConfig, documents: List[str], workdir: Path, max_length: int, wait: bool = True):
    """The run's tokenizer: trained on the training documents (at most corpus.tokenizer_sample of them, a seeded
    sample; once: a resumed run reads it back), or reused. `wait`: the other processes wait for the main one's."""
    from transformers import AutoTokenizer

    from ..core.args import ModelArgs
    from ..models.loading import load_tokenizer

    saved = workdir / TOKENIZER
    if cfg.tokenizer.kind == "reuse" or cfg.model.continued:
        if cfg.model.continued and cfg.tokenizer.kind != "reuse":
            raise UserError(f"tokenizer.kind {cfg.tokenizer.kind}: a continued model keeps the tokenizer its embeddings "
                            "are indexed by; use --tokenizer.kind reuse")
        source = cfg.tokenizer.path or cfg.model.name_or_path
        if not source:
            raise UserError("tokenizer.kind reuse: name the tokenizer with --tokenizer.path (a model directory or hub id)")
        return load_tokenizer(ModelArgs(name_or_path=source, revision=cfg.model.revision))
    if is_main() and not (saved / "tokenizer.json").is_file():
        if len(documents) > cfg.corpus.tokenizer_sample:
            log.info("tokenizer: trained on %d of the %d training documents (corpus.tokenizer_sample, seeded)",
                     cfg.corpus.tokenizer_sample, len(documents))
            documents = random.Random(cfg.corpus.seed).sample(documents, cfg.corpus.tokenizer_sample)
        train_tokenizer(documents, cfg.tokenizer, max_length).save_pretrained(str(saved))
    if wait:
        barrier()
    return AutoTokenizer.from_pretrained(str(saved))


def tokenizer_saved(cfg: PretrainConfig, workdir: Path) -> bool:
    """Whether the run's tokenizer needs no training: reused, or trained by an earlier start."""
    return cfg.tokenizer.kind == "reuse" or cfg.model.continued or (workdir / TOKENIZER / "tokenizer.json").is_file()


@dataclass
class Packed:
    """The corpus as the model reads it: documents packed into full blocks, the held-out blocks masked once."""

    train_docs: Sized
    """The training documents: a list (in memory) or the streamed corpus's memory-mapped documents."""
    validation_docs: List[str]
    train_blocks: Any
    """Dataset of full blocks (input_ids, length): in memory, or memory-mapped Arrow when streamed."""
    train_tokens: int
    validation_blocks: Any
    validation_tokens: int
    masked: Dict
    """The held-out blocks with their masks and labels: every evaluation (and every trial of a search) scores these."""
    counts: Optional[np.ndarray] = None
    """The training blocks' token counts when streaming counted them (else the baseline counts the blocks)."""
    streamed: Optional[Dict] = None
    """What the streaming passes counted (files, documents dropped and why, caps); None in memory."""

    @classmethod
    def from_stream(cls, cfg: PretrainConfig, tok, streamed) -> "Packed":
        from datasets import Dataset

        from ..tasks.mlm.task import mask_once, pack

        validation_blocks, validation_tokens = pack(streamed.validation_docs, tok, cfg.mlm.block_size,
                                                    f"corpus {cfg.corpus.sources} (held-out documents; raise "
                                                    "--corpus.validation_size)")
        masked = mask_once(validation_blocks, tok, cfg.mlm.masking_rate, cfg.train.seed)
        return cls(Dataset.from_file(str(streamed.documents_file)), streamed.validation_docs,
                   Dataset.from_file(str(streamed.blocks_file)), streamed.tokens, validation_blocks, validation_tokens,
                   masked, streamed.counts, streamed.stats)

    @classmethod
    def build(cls, cfg: PretrainConfig, tok, train_docs: List[str], validation_docs: List[str]) -> "Packed":
        from ..tasks.mlm.task import mask_once, pack

        block = cfg.mlm.block_size
        train_blocks, train_tokens = pack(train_docs, tok, block, f"corpus {cfg.corpus.sources} (training documents)")
        validation_blocks, validation_tokens = pack(validation_docs, tok, block, f"corpus {cfg.corpus.sources} (held-out "
                                                    "documents; raise --corpus.validation_size)")
        masked = mask_once(validation_blocks, tok, cfg.mlm.masking_rate, cfg.train.seed)
        return cls(train_docs, validation_docs, train_blocks, train_tokens, validation_blocks, validation_tokens, masked)


def packed_corpus(cfg: PretrainConfig, workdir: Path, reading, documents=None):
    """(The run's tokenizer, the Packed corpus): from the (train, validation) documents in memory, or, when
    `reading` (pretraining/streaming.py `plan`) has files, streamed by the main process into workdir/corpus/ (or
    read back from an earlier start's) and read memory-mapped by every process."""
    max_length = max(512, cfg.mlm.block_size)
    files = reading.files
    if is_main():
        log.info(reading.why)
    if files is None:
        tok = run_tokenizer(cfg, documents[0], workdir, max_length)
        return tok, Packed.build(cfg, tok, *documents)
    from . import streaming

    where = f"corpus {cfg.corpus.sources} (training documents)"
    if is_main():
        tok = run_tokenizer(cfg, [], workdir, max_length, wait=False) if tokenizer_saved(cfg, workdir) else None
        streamed = streaming.read_back(cfg.corpus, files, workdir, tok, cfg.mlm.block_size) if tok is not None else None
        if streamed is None:
            tok, streamed = streaming.build(cfg.corpus, files, workdir, cfg.mlm.block_size,
                                            lambda sample: run_tokenizer(cfg, sample, workdir, max_length, wait=False), where)
        else:
            log.info("corpus: the streamed corpus of an earlier start read back from %s", streamed.folder)
    barrier()
    if not is_main():
        tok = run_tokenizer(cfg, [], workdir, max_length, wait=False)
        streamed = streaming.read_back(cfg.corpus, files, workdir, tok, cfg.mlm.block_size)
    return tok, Packed.from_stream(cfg, tok, streamed)


def train_mlm(cfg: PretrainConfig, task, tok, packed: Packed, workdir: Path, checkpoint: Optional[str] = None,
              callbacks: Optional[list] = None) -> Dict:
    """Train and evaluate on the packed corpus; the main process writes model/, logs and returns metrics.json's content."""
    import numpy as np
    import torch
    import transformers
    from transformers import set_seed

    from ..tasks.mlm.task import unigram_baseline
    from ..models.trainer import build_trainer

    block = cfg.mlm.block_size
    train_blocks, validation_blocks, masked = packed.train_blocks, packed.validation_blocks, packed.masked
    set_seed(cfg.train.seed)
    net, how = build_model(cfg.model, tok, block)
    log.info("model: %s; %.1fM parameters; corpus: %d training blocks of %d tokens (%d tokens), %d held-out blocks",
             how, net.num_parameters() / 1e6, len(train_blocks), block, packed.train_tokens, len(validation_blocks))
    if cfg.train.packing in (True, "true"):  # said, not dropped silently
        log.info("train.packing: not used by pre-training: its documents are concatenated into full blocks of %d tokens, "
                 "so there is no padding to remove", block)
    precision = pick_precision(cfg.train.precision)
    from ..core.distributed import rank

    collator = task.modeling.collator(tok, cfg.mlm.masking_rate, cfg.train.seed + 1 + rank())  # not the validation masks' seed
    start = json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"] if checkpoint else 0
    collator.resume_at(start * cfg.train.gradient_accumulation_steps)
    trainer = build_trainer(net, tok, task, [], {}, {"train": train_blocks, "validation": masked}, cfg.train, precision,
                            workdir, callbacks=callbacks, collator=collator)
    keep_freed_memory(trainer.args.device.type, cfg.train.keep_cpu_memory)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    evaluation = trainer.evaluate()
    run = RunDir(workdir)
    tok.model_max_length = max(512, block) if not cfg.model.continued else tok.model_max_length
    trainer.save_model(str(run.model.path))
    if not is_main():
        return {}
    (run.model / "training_args.bin").unlink(missing_ok=True)
    run.model.write_info(ModelInfo(task.name, int(tok.model_max_length), []))
    write_json(run.history_file, trainer.state.log_history)
    shutil.rmtree(run / RunDir.CHECKPOINTS, ignore_errors=True)
    seconds = result.metrics.get("train_runtime", 0.0)
    steps = trainer.state.global_step
    per_step = cfg.train.batch_size * cfg.train.gradient_accumulation_steps * block
    seen = steps * per_step
    cfg.resolved = {"model": how, "parameters": int(net.num_parameters()), "vocab_size": len(tok), "precision": precision,
                    "device": str(trainer.args.device), "processes": trainer.args.world_size,
                    "versions": {"encoderfit": __version__, "transformers": transformers.__version__, "torch": str(torch.__version__)}}
    run.save_config(cfg)
    from ..tasks.mlm.pages import masked_examples

    return {
        "validation": {"loss": evaluation["eval_loss"], "perplexity": evaluation["eval_perplexity"],
                       "accuracy": evaluation["eval_accuracy"], "n": len(validation_blocks),
                       "masked_tokens": int((np.asarray(masked["labels"]) != -100).sum())},
        "baseline": {"name": "unigram token frequencies of the training blocks",
                     **unigram_baseline(train_blocks, masked, len(tok), packed.counts)},
        "corpus": {"documents": {"train": len(packed.train_docs), "validation": len(packed.validation_docs)},
                   "tokens": {"train": packed.train_tokens, "validation": packed.validation_tokens},
                   "blocks": {"train": len(train_blocks), "validation": len(validation_blocks)},
                   **({"streamed": packed.streamed} if packed.streamed is not None else {})},
        "train": {"train_runtime_s": round(seconds, 1), "steps": steps, "epochs": trainer.state.epoch, "tokens_seen": seen,
                  "tokens_per_s": round((steps - start) * per_step / seconds, 1) if seconds else None,  # steps this start ran
                  "resumed_from": Path(checkpoint).name if checkpoint else None},
        "examples": masked_examples(trainer.model, tok, packed.validation_docs, cfg.mlm.examples, cfg.train.seed),
    }
