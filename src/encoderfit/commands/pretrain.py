"""`encoderfit pretrain`: masked-language-model pre-training, from scratch or continued from an encoder.

The same machinery as fine-tuning (commands/train.py, runs/lifecycle.py): the transformers Trainer set up by models/trainer.py, sealed checkpoints,
resume by re-running the command, torchrun processes, the run directory built hidden and renamed into place.

    RUN/
      config.yaml       the resolved settings (corpus, tokenizer, model, mlm, train)
      metrics.json      held-out MLM loss, perplexity, masked-token accuracy; the unigram baseline; tokens seen, tokens/s
      report.html       curves, the summary against the baseline, held-out sentences with the model's guesses
      logs/             TensorBoard events and history.json
      model/            loads with transformers.pipeline("fill-mask") and AutoModelForMaskedLM; fine-tune it with
                        `encoderfit train --model.name_or_path RUN/model` (the MLM head is dropped, the encoder kept)"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from ..pretraining.corpus import load_corpus
from ..core.distributed import barrier, is_main, share
from ..core.errors import UserError
from ..core.files import exclusive, partial_dir, publish_dir
from ..pretraining.settings import PretrainConfig
from ..runs.rundir import RunDir
from ..pretraining.mlm_training import TOKENIZER, mlm_task, packed_corpus, train_mlm
from ..pretraining.streaming import FOLDER, plan
from .options import PRETRAINING, RUN_DIR, shared

log = logging.getLogger(__name__)


@shared(PRETRAINING, RUN_DIR)
def pretrain(corpus=..., tokenizer=..., model=..., mlm=..., train=..., output_dir: Path = Path("runs/pretrain"),
             overwrite=..., resume=...) -> Path:
    """Pre-train an encoder with masked language modelling, from scratch or continued (domain adaptation).

    Writes OUTPUT_DIR with model/ (loads with transformers.pipeline("fill-mask"); fine-tune it with
    `encoderfit train --model.name_or_path OUTPUT_DIR/model`), config.yaml, metrics.json, report.html and logs/.

    Args:
        output_dir: The run directory to write.
    """
    from ..runs.tracking import Trackers
    from ..runs.lifecycle import abandon, check_start, continues
    from ..runs.training import resume_point

    started = time.time()
    if train.seeds > 1:
        raise UserError("train.seeds: pre-training trains one model; drop --train.seeds")
    out = check_start(output_dir, overwrite, train)
    with exclusive(out, enabled=is_main(), overwrite=overwrite):  # one writer per output directory
        task = mlm_task()
        cfg = PretrainConfig(corpus=corpus, tokenizer=tokenizer, model=model, mlm=mlm, train=train)
        reading = plan(corpus)  # streamed, or in memory (said when it is read)
        documents = load_corpus(corpus) if reading.files is None else None  # before the run's directory: a bad corpus leaves nothing

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
            tok, packed = packed_corpus(cfg, workdir, reading, documents)
            checkpoint = share(str(resume_point(workdir, bool(resume)) or "") if is_main() and keep else "")
            results = train_mlm(cfg, task, tok, packed, workdir, checkpoint or None)
            if not is_main():
                return out
            shutil.rmtree(workdir / TOKENIZER, ignore_errors=True)
            shutil.rmtree(workdir / FOLDER, ignore_errors=True)  # a streamed corpus's Arrow files: not part of the run
            from ..tasks.mlm.pages import write_pages

            write_pages(RunDir(workdir), cfg, results)
            publish_dir(workdir, out)
        except BaseException as err:
            if is_main():
                trackers.fail()
                abandon(workdir, interrupted=not isinstance(err, Exception))
            raise
        trackers.finish(results, out, predictor=False)
        log.info("pre-trained model written to %s (%.0f s): validation loss %.3f, perplexity %.1f, masked-token accuracy %.3f",
                 out, time.time() - started, results["validation"]["loss"], results["validation"]["perplexity"],
                 results["validation"]["accuracy"])
        return out
