"""`encoderfit pretrain`: masked-language-model pre-training, from scratch or continued from an encoder.

The same machinery as fine-tuning (stages/train.py): the transformers Trainer set up by models/trainer.py, sealed checkpoints,
resume by re-running the command, torchrun processes, the run directory built hidden and renamed into place.

    RUN/
      config.yaml       the resolved settings (corpus, tokenizer, model, mlm, train)
      metrics.json      held-out MLM loss, perplexity, masked-token accuracy; the unigram baseline; tokens seen, tokens/s
      report.html       curves, the summary against the baseline, held-out sentences with the model's guesses
      logs/             TensorBoard events and history.json
      model/            loads with transformers.pipeline("fill-mask") and AutoModelForMaskedLM; fine-tune it with
                        `encoderfit train --model.name_or_path RUN/model` (the MLM head is dropped, the encoder kept)
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from .. import __version__
from ..core.config import TrainArgs
from .corpus import CorpusArgs, load_corpus
from ..core.device import keep_freed_memory, pick_precision
from ..core.distributed import barrier, is_main, share
from ..core.errors import UserError
from ..core.files import exclusive, partial_dir, publish_dir, write_json
from .config import MlmArgs, PretrainConfig, PretrainModelArgs, build_model, pretrain_defaults
from ..stages.rundir import ModelInfo, RunDir
from ..tasks import get_task
from .tokenizer import TokenizerArgs, train_tokenizer

log = logging.getLogger(__name__)
TOKENIZER = "tokenizer"  # where the run's tokenizer waits in the hidden directory until model/ is written


def mlm_task():
    """The masked-LM task this stage (and tune-pretrain) exists for."""
    return get_task("mlm", "pretrain")


def run_tokenizer(cfg: PretrainConfig, documents: List[str], workdir: Path, max_length: int):
    """The run's tokenizer: trained on the training documents (once: a resumed run reads it back), or reused."""
    from transformers import AutoTokenizer

    from ..core.config import ModelArgs
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
        train_tokenizer(documents, cfg.tokenizer, max_length).save_pretrained(str(saved))
    barrier()
    return AutoTokenizer.from_pretrained(str(saved))


def pretrain(
    corpus: CorpusArgs = CorpusArgs(),
    tokenizer: TokenizerArgs = TokenizerArgs(),
    model: PretrainModelArgs = PretrainModelArgs(),
    mlm: MlmArgs = MlmArgs(),
    train: TrainArgs = pretrain_defaults(),
    output_dir: Path = Path("runs/pretrain"),
    overwrite: bool = False,
    resume: Optional[bool] = None,
) -> Path:
    """Pre-train an encoder with masked language modelling, from scratch or continued (domain adaptation).

    Writes OUTPUT_DIR with model/ (loads with transformers.pipeline("fill-mask"); fine-tune it with
    `encoderfit train --model.name_or_path OUTPUT_DIR/model`), config.yaml, metrics.json, report.html and logs/.

    Args:
        corpus: Where the unlabelled text comes from and how much is held out.
        tokenizer: The tokenizer to train (bpe, wordpiece) or reuse.
        model: The encoder: a ModernBERT size or any config from scratch, or an existing encoder to continue.
        mlm: Block size and masking rate of the masked-language-model objective.
        train: Optimisation and evaluation settings (defaults: one pass, peak learning rate 5e-4, warmup-stable-decay).
        output_dir: The run directory to write.
        overwrite: Replace OUTPUT_DIR if it already exists.
        resume: Continue an interrupted run from its newest complete checkpoint. Default (null): resume when the
            same config was interrupted before; true: insist on resuming; false: discard it and start over.
    """
    from ..stages.tracking import Trackers
    from ..stages.train import _abandon, check_start, continues
    from ..stages.training import resume_point

    started = time.time()
    if train.seeds > 1:
        raise UserError("train.seeds: pre-training trains one model; drop --train.seeds")
    out = check_start(output_dir, overwrite, train)
    with exclusive(out, enabled=is_main(), overwrite=overwrite):  # one writer per output directory
        task = mlm_task()
        cfg = PretrainConfig(corpus=corpus, tokenizer=tokenizer, model=model, mlm=mlm, train=train)
        train_docs, validation_docs = load_corpus(corpus)

        workdir = partial_dir(out)
        keep = share(continues(workdir, cfg, resume) if is_main() else None)
        if is_main() and not keep:
            shutil.rmtree(workdir, ignore_errors=True)
            workdir.mkdir(parents=True)
            cfg.save(workdir)
        barrier()
        trackers = Trackers([], workdir, out.name)
        try:
            trackers = Trackers.start(cfg.to_dict(), train.report_to, workdir, out.name)
            tok = run_tokenizer(cfg, train_docs, workdir, max(512, mlm.block_size))
            checkpoint = share(str(resume_point(workdir, bool(resume)) or "") if is_main() and keep else "")
            results = train_mlm(cfg, task, tok, Packed.build(cfg, tok, train_docs, validation_docs), workdir, checkpoint or None)
            if not is_main():
                return out
            shutil.rmtree(workdir / TOKENIZER, ignore_errors=True)
            from ..tasks.mlm.pages import write_pages

            write_pages(RunDir(workdir), cfg, results)
            publish_dir(workdir, out)
        except BaseException as err:
            if is_main():
                trackers.fail()
                _abandon(workdir, interrupted=not isinstance(err, Exception))
            raise
        trackers.finish(results, out, predictor=False)
        log.info("pre-trained model written to %s (%.0f s): validation loss %.3f, perplexity %.1f, masked-token accuracy %.3f",
                 out, time.time() - started, results["validation"]["loss"], results["validation"]["perplexity"],
                 results["validation"]["accuracy"])
        return out


@dataclass
class Packed:
    """The corpus as the model reads it: documents packed into full blocks, the held-out blocks masked once."""

    train_docs: List[str]
    validation_docs: List[str]
    train_blocks: List[List[int]]
    train_tokens: int
    validation_blocks: List[List[int]]
    validation_tokens: int
    masked: Dict
    """The held-out blocks with their masks and labels: every evaluation (and every trial of a search) scores these."""

    @classmethod
    def build(cls, cfg: PretrainConfig, tok, train_docs: List[str], validation_docs: List[str]) -> "Packed":
        from ..tasks.mlm.task import mask_once, pack

        block = cfg.mlm.block_size
        train_blocks, train_tokens = pack(train_docs, tok, block, f"corpus {cfg.corpus.sources} (training documents)")
        validation_blocks, validation_tokens = pack(validation_docs, tok, block, f"corpus {cfg.corpus.sources} (held-out "
                                                    "documents; raise --corpus.validation_size)")
        masked = mask_once(validation_blocks, tok, cfg.mlm.masking_rate, cfg.train.seed)
        return cls(train_docs, validation_docs, train_blocks, train_tokens, validation_blocks, validation_tokens, masked)


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
                     **unigram_baseline(train_blocks, masked, len(tok))},
        "corpus": {"documents": {"train": len(packed.train_docs), "validation": len(packed.validation_docs)},
                   "tokens": {"train": packed.train_tokens, "validation": packed.validation_tokens},
                   "blocks": {"train": len(train_blocks), "validation": len(validation_blocks)}},
        "train": {"train_runtime_s": round(seconds, 1), "steps": steps, "epochs": trainer.state.epoch, "tokens_seen": seen,
                  "tokens_per_s": round((steps - start) * per_step / seconds, 1) if seconds else None,  # steps this start ran
                  "resumed_from": Path(checkpoint).name if checkpoint else None},
        "examples": masked_examples(trainer.model, tok, packed.validation_docs, cfg.mlm.examples, cfg.train.seed),
    }
