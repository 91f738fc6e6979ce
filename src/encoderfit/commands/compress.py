"""`encoderfit compress`: a trained run made smaller and faster: structured pruning of its encoder (whole layers,
chosen by their measured effect on the validation outputs; FFN neurons, by their importance on the training split;
models/pruning.py), then recovery by distillation from the run itself (distill.py: the original model as teacher
on its training split, the pruned model, task head included, as the student's starting weights), then the head
refitted on validation as for any run. The output is a normal run directory whose model is a plain transformers
model of a smaller config; metrics.json's "compression" section holds the plan, the sizes before and after and the
comparison with the original (compress_table.py; with --quantize int8, the int8 models too).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Literal, Optional

import numpy as np

from ..core.args import CompressArgs, DataArgs, DistillArgs, ModelArgs, ReportArgs, TrainArgs
from ..core.errors import UserError
from ..models import pruning
from ..runs.distillation import TEACHER_FIX, check_request
from .distill import train_student
from ..runs.evaluation import check_same_splits
from ..runs.rundir import ModelDir, RunDir
from ..runs.splits import prepare
from ..runs.lifecycle import check_start

log = logging.getLogger(__name__)


def output_distance(task, reference, now) -> float:
    """How far the model's outputs on the validation texts moved from the original's: the mean KL divergence of the
    class distributions for single-label outputs (per text, or per word), else the mean squared change relative to
    the outputs' own variance."""
    ref, cur = flat_outputs(reference), flat_outputs(now)
    if task.scoring.softmax_outputs:
        p = _softmax(ref)
        return float(np.mean(np.sum(p * (np.log(p + 1e-12) - np.log(_softmax(cur) + 1e-12)), -1)))
    spread = float(np.mean((ref - ref.mean(0)) ** 2)) or 1.0
    return float(np.mean((cur - ref) ** 2)) / spread


def flat_outputs(outputs) -> np.ndarray:
    """A Predictor's logits as one 2-D array: a row per text, or, where the task labels words, a row per word."""
    if len(outputs) and hasattr(outputs[0], "logits"):
        return np.concatenate([np.asarray(o.logits, dtype=np.float64).reshape(-1, np.shape(o.logits)[-1]) for o in outputs])
    arr = np.asarray(outputs, dtype=np.float64)
    return arr.reshape(len(arr), -1)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def sample_of(texts: List[str], pairs, words, n: int, seed: int = 0):
    """Up to n of the texts (with their pairs and words), drawn with a seed, in their order."""
    if len(texts) <= n:
        return texts, pairs, words
    rows = sorted(np.random.default_rng(seed).choice(len(texts), n, replace=False).tolist())
    return ([texts[i] for i in rows], [pairs[i] for i in rows] if pairs is not None else None,
            [words[i] for i in rows] if words is not None else None)


def plan(args: CompressArgs, shape: pruning.Shape, length: float) -> Dict:
    """The layers and FFN width to keep: from --compress.target_speedup by the cost model, or as given."""
    if args.heads is not None:
        raise UserError(pruning.HEADS_NOT_EXPRESSIBLE)
    if args.target_speedup is not None:
        chosen = pruning.plan_for_speedup(shape, length, args.target_speedup)
        chosen["from"] = f"target_speedup {args.target_speedup:g}"
    elif args.layers is None and args.ffn is None:
        raise UserError("compress: nothing to prune; give --compress.target_speedup (e.g. 2), or --compress.layers "
                        "and/or --compress.ffn")
    else:
        layers, width = args.layers or shape.layers, args.ffn or shape.intermediate
        if layers > shape.layers or width > shape.intermediate:
            raise UserError(f"compress.layers {layers} / compress.ffn {width}: the model has {shape.layers} layers and "
                            f"intermediate_size {shape.intermediate}; keep at most that many")
        if (layers, width) == (shape.layers, shape.intermediate):
            raise UserError(f"compress: layers {layers} and ffn {width} are the model's own sizes; nothing to prune")
        chosen = {"layers": layers, "intermediate_size": width,
                  "speedup": round(shape.flops(length) / shape.flops(length, layers, width), 3), "from": "explicit sizes"}
    chosen.update(mean_tokens=round(length, 1), original={"layers": shape.layers, "intermediate_size": shape.intermediate})
    log.info("plan (%s): %d of %d layers, intermediate_size %d of %d: %.2fx fewer multiply-adds at %.0f tokens a text "
             "(attention + FFN per layer; embeddings and head not counted)", chosen["from"], chosen["layers"], shape.layers,
             chosen["intermediate_size"], shape.intermediate, chosen["speedup"], length)
    return chosen


def mean_tokens(tokenizer, texts: List[str], pairs, max_length: int) -> float:
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_length)
    return float(np.mean([len(ids) for ids in enc["input_ids"]]))


def prune_predictor(predictor, splits, task, args: CompressArgs, seed: int) -> Dict:
    """Prune the predictor's encoder in place by the plan: layers by their measured effect on the validation
    outputs, then FFN neurons by their importance on a sample of the training split. Returns what was done (the
    kept layers and neurons, to apply to the saved model)."""
    encoder = pruning.encoder_of(predictor.model)
    shape = pruning.Shape.of(encoder.config)
    train_texts, train_pairs, train_words = sample_of(*task.targets.distill_texts(splits.train), args.sample, seed)
    val = sample_of(*task.targets.distill_texts(splits.validation), args.sample, seed)
    chosen = plan(args, shape, mean_tokens(predictor.tokenizer, train_texts, train_pairs, predictor.max_length))
    reference = predictor.logits(*val)
    steps = pruning.measured_layer_choice(encoder, shape.layers - chosen["layers"],
                                          lambda: output_distance(task, reference, predictor.logits(*val)))
    kept = pruning.kept_layers(steps, shape.layers)
    neurons = None
    if chosen["intermediate_size"] < shape.intermediate:
        scores = pruning.ffn_importance(encoder, lambda: predictor.logits(train_texts, train_pairs, train_words))
        neurons = pruning.top_neurons(scores, chosen["intermediate_size"])
        pruning.prune_ffn(encoder, neurons)
    pruned = predictor.logits(*val)
    chosen["distance"] = round(output_distance(task, reference, pruned), 6)
    log.info("pruned: layers %s kept; validation outputs moved by %.4g before recovery", kept, chosen["distance"])
    return {"plan": {**chosen, "kept_layers": kept, "layer_choice": steps}, "kept": kept, "neurons": neurons,
            "validation": val, "outputs": pruned}


def save_pruned(model_dir: Path, task, kept: List[int], neurons, target: Path) -> None:
    """The run's model loaded afresh through its own loader (a sentence-transformers directory as one, a task model
    as one), pruned as the predictor's was, checked to be what its config builds, and saved to `target` with its
    tokenizer and encoderfit.json."""
    from ..models.loading import auto_model, is_sentence_model, load_tokenizer, load_weights

    if is_sentence_model(model_dir):
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(model_dir), device="cpu", model_kwargs={"use_safetensors": True})
    else:
        model = load_weights(auto_model(task), str(model_dir))
    encoder = pruning.encoder_of(model)
    pruning.drop_layers(encoder, kept)
    if neurons is not None:
        pruning.prune_ffn(encoder, neurons)
    from transformers import PreTrainedModel

    top = next(m for m in model.modules() if isinstance(m, PreTrainedModel))
    pruning.check_plain(top)
    if is_sentence_model(model_dir):
        model.save(str(target))
    else:
        model.save_pretrained(str(target))
        load_tokenizer(ModelArgs(name_or_path=str(model_dir))).save_pretrained(str(target))
    ModelDir(target).write_info(ModelDir(model_dir).info())


def check_saved(student: Path, validation, outputs) -> None:
    """The saved pruned model, loaded afresh, gives the outputs the pruned model in memory gave (the layer choice and
    the neuron importance were measured on that one)."""
    from ..runs.predictor import Predictor

    again = Predictor.from_pretrained(student, packing=False).logits(*validation)
    gap = float(np.abs(flat_outputs(again) - flat_outputs(outputs)).max())
    if gap > 1e-3:
        raise RuntimeError(f"the saved pruned model's outputs differ from the pruned model's by {gap:.2e}")
    log.info("the saved pruned model, reloaded, gives the pruned model's validation outputs (max difference %.1e)", gap)


def parameters(model_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    for file in Path(model_dir).rglob("*.safetensors"):
        with safe_open(str(file), "np") as handle:
            total += sum(int(np.prod(handle.get_slice(k).get_shape())) for k in handle.keys())
    return total


def recovery_settings(trained: TrainArgs, given: TrainArgs) -> TrainArgs:
    """The run's own training settings, one model (no seeds or ensemble, no probe: the head is the run's), with the
    settings given on the command line (those that differ from the defaults) over them."""
    default = TrainArgs()
    changed = {k: v for k, v in vars(given).items() if v != getattr(default, k)}
    return replace(trained, **{"seeds": 1, "ensemble": False, "linear_probe": None, **changed})


def compress_run(
    run: Path,
    compress: CompressArgs = CompressArgs(),
    distill: DistillArgs = DistillArgs(),
    train: TrainArgs = TrainArgs(),
    report: ReportArgs = ReportArgs(),
    quantize: Optional[Literal["int8"]] = None,
    output_dir: Path = Path("runs/compressed"),
    overwrite: bool = False,
) -> Path:
    """Prune a trained run's encoder (layers, FFN neurons) to a target, recover it by distillation from the run itself.

    Writes OUTPUT_DIR as `encoderfit distill` does (a normal run directory: model/, metrics.json, report.html ...),
    whose model is a plain transformers model of a smaller config, with metrics.json's "compression" section: the
    plan, parameters and size before and after, and the comparison table with the original run.

    Args:
        run: The run to compress: a directory of `encoderfit train` (BERT-family, MPNet or ModernBERT encoder).
        compress: What to prune: a target speed-up, or the layers and FFN width to keep.
        distill: The recovery's distillation settings (--distill.augment, --distill.unlabelled: more text for the
            original run to label).
        train: The recovery's training settings: the run's own, with those given here over them.
        report: Evaluation settings, as for train.
        quantize: int8: also export the compressed run (and the original, for the table) as int8 ONNX, parity checked.
        output_dir: The run directory to write.
        overwrite: Replace OUTPUT_DIR if it already exists.
    """
    from ..runs.predictor import Predictor

    started = time.time()
    source = RunDir(Path(run))
    cfg = source.config()
    kind = source.task()
    if not kind.supports("distill"):
        raise UserError(f"compress: {run} is a {cfg.task} run; a pruned model recovers by distillation from its run, "
                        f"which these runs do not have: {kind.why_not('distill')}")
    info = source.model.info()
    if info.members:
        raise UserError(f"compress: {run} is an ensemble of {len(info.members)} members; compress one member's run "
                        "(train it with --train.seeds 1)")
    if compress.heads is not None:
        raise UserError(pruning.HEADS_NOT_EXPRESSIBLE)
    recovery = recovery_settings(cfg.train, train)
    model = replace(cfg.model, name_or_path=str(source.model.path))
    check_request(Path(run), None, DataArgs(), None, model, recovery)
    out = check_start(output_dir, overwrite, recovery)
    splits = prepare(cfg.data, cfg.task, cfg.options, settle=False)  # a run whose data is gone fails here, in one line
    check_same_splits(Path(run), cfg.resolved.get("splits"), splits, TEACHER_FIX)
    predictor = Predictor.from_pretrained(run, packing=False)
    pruning.encoder_of(predictor.model)  # a family that cannot be pruned: one line, before any work
    done = prune_predictor(predictor, splits, predictor.task, compress, recovery.seed)
    del predictor
    with tempfile.TemporaryDirectory(prefix="encoderfit-pruned-") as scratch:
        student = Path(scratch) / "student"
        save_pruned(source.model.path, kind, done["kept"], done["neurons"], student)
        check_saved(student, done["validation"], done["outputs"])
        written = False
        try:
            train_student(teacher=Path(run), student=str(student), distill=distill, model=replace(model, name_or_path=str(student)),
                          train=recovery, report=report, output_dir=out, overwrite=overwrite)
            written = True
            from ..runs.compress_table import comparison
            from .export import export

            original_int8 = None
            if quantize == "int8":
                export(out, quantize="int8")  # RUN/onnx, parity checked against PyTorch
                original_int8 = Path(scratch) / "original-onnx"  # the original run is left as it is
                export(source.path, quantize="int8", output=original_int8)
            section = {"plan": done["plan"], **comparison(source, RunDir(out), splits, original_int8)}
            section["parameters"] = {"original": parameters(source.model.path), "compressed": parameters(RunDir(out).model.path)}
            metrics = RunDir(out).metrics()
            metrics["compression"] = section
            RunDir(out).write_metrics(metrics)
        except BaseException:
            if written:  # nothing half-written: a run without its compression section is not left behind
                shutil.rmtree(out, ignore_errors=True)
            raise
    log.info("compressed run written to %s (%.0f s)", out, time.time() - started)
    return out
