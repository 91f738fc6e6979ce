"""`encoderfit predict`: texts from stdin or a file -> one JSONL (or CSV) row per text with the run's task's result."""

from __future__ import annotations

import csv
import json
import logging
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Literal, Optional

from ..core.errors import UserError
from ..core.files import atomic_file, check_output_file
from ..runs.backends import BackendName, get_backend
from ..runs.predictor import Predictor
from ..runs.rundir import locate
from ..tasks import get_task
from ..runs.inputs import drop_empty, one_pair, read_inputs

log = logging.getLogger(__name__)


def _rows(texts: List[str], pairs: Optional[List[str]], results: List[Dict], names) -> Iterator[Dict]:
    """Each input (under the task's names for its texts: text/text_pair, question/context) with its result."""
    for i, (text, result) in enumerate(zip(texts, results)):
        yield {names[0]: text, **({names[1]: pairs[i]} if pairs is not None else {}), **result}


def write_predictions(rows: Iterator[Dict], task, labels: List[str], handle, fmt: str, pairs: bool) -> None:
    first, second = task.inputs
    if fmt == "csv":
        writer = csv.writer(handle)
        rows = iter(rows)
        head = next(rows, None)
        ids = head is not None and "id" in head  # logged (--log): the id feedback names comes first
        writer.writerow([*(["id"] if ids else []), first, *([second] if pairs else []), *task.decoding.csv_header(labels)])
        for row in ([head] if head is not None else []) + list(rows):
            writer.writerow([*([row["id"]] if ids else []), row[first], *([row[second]] if pairs else []), *task.decoding.csv_row(row, labels)])
    else:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def predict(
    run: Path,
    input: str = "-",
    output: Optional[Path] = None,
    text_column: Optional[str] = None,
    text_pair_column: Optional[str] = None,
    device: Optional[str] = None,
    max_tokens: Optional[int] = None,
    calibrated: bool = True,
    abstain: bool = False,
    backend: BackendName = "torch",
    int8_recheck: bool = True,
    question: Optional[str] = None,
    context: Optional[str] = None,
    log: Optional[Path] = None,
    log_texts: bool = False,
    on_error: Literal["fail", "skip"] = "fail",
    overwrite: bool = False,
    chunk_rows: int = 10000,
    engine: Literal["local", "ray"] = "local",
    ray_address: Optional[str] = None,
    workers: int = 1,
) -> Optional[Path]:
    """Predict with a trained run: one JSONL (or CSV) row per text with the task's result (a label with its
    probabilities, a set of labels, or a score with its interval).

    Args:
        run: Run directory written by `encoderfit train` (or a model directory).
        input: Texts: '-' for stdin (one per line), a .txt file (one per line), or a CSV/TSV/JSON/JSONL/Parquet file
            (the only choice for a model trained on text pairs). Empty texts are skipped, with their rows logged.
        output: Where to write; .jsonl or .csv. Default: JSONL on stdout.
        text_column: Column of a table input holding the text. Default: the run's data.text_column, else the task's
            name for it (text; question for QA).
        text_pair_column: Column holding the second text of a pair. Default: the run's data.text_pair_column, else
            the task's name for it (text_pair; context for QA).
        device: Device to run on (cpu, cuda, cuda:1). Default: cuda when available.
        max_tokens: Token budget of one batch (rows x longest row); texts are sorted by length into batches.
            Default: 4096 on CPU (at most 32 texts), 16384 on GPU (at most 256).
        calibrated: Apply the temperature fitted on validation to the probabilities (classification).
        abstain: Answer UNKNOWN when the top probability is below the run's threshold (classification; see
            `eval --report.target_accuracy`).
        backend: torch, onnx or onnx-int8 (the latter two after `encoderfit export RUN [--quantize int8]`), or another
            registered in runs/backends.
        int8_recheck: With onnx-int8, run near-ties (int8 decision margin under the one fitted at export) again in fp32.
        question: QA: one question to answer on the context of --context (instead of --input).
        context: QA: the file holding the context of --question ('-' for stdin).
        log: Prediction log (SQLite) to append these predictions to, as `serve --log` does; each output row gets the
            "id" that `encoderfit feedback` takes (docs/monitoring.md).
        log_texts: Keep the texts in the log too.
        on_error: A bad input row (not JSON, not text, wrong field count): fail (one line naming the file and row,
            exit 2) or skip (written with its reason under "error", the rest go on). Empty rows are always written
            with their reason. Applies to a file, folder or glob --input (streamed); stdin is read whole.
        overwrite: Discard an interrupted run's parts (OUTPUT.parts/) instead of continuing it.
        chunk_rows: Rows read, predicted and written at a time (one part of the resumable output; docs/scaling.md).
        engine: local (this process) or ray (Ray Data, one Predictor per worker; pip install 'encoderfit[ray]').
        ray_address: With --engine ray: the cluster to join (ray://host:10001, auto). Default: a local Ray for the job.
        workers: With --engine ray: predictor actors (one GPU each where CUDA is there).
    """
    if max_tokens is not None and max_tokens < 1:
        raise UserError(f"--max_tokens must be at least 1 (got {max_tokens})")
    get_backend(backend)  # an unknown name: one line naming the registered ones, before anything is read or written
    run = Path(run)
    rundir, directory = locate(run)
    info = directory.info()
    saved = rundir.config().data if rundir else None
    first, second = get_task(info.task).inputs  # the task's names for its texts (QA: question, context)
    text_column = text_column or (saved.text_column if saved and saved.text_column != "text" else first)
    if text_pair_column and not info.text_pair:
        raise UserError("--text_pair_column: this model was trained on single texts, not pairs; drop the flag")
    if info.text_pair:
        text_pair_column = text_pair_column or (saved.text_pair_column if saved else None) or second
    suffix = Path(output).suffix.lower() if output else ".jsonl"
    fmt = {".csv": "csv", ".parquet": "parquet"}.get(suffix, "jsonl")
    if suffix not in (".csv", ".jsonl", ".json", ".parquet"):
        raise UserError(f"--output: unsupported file type '{Path(output).suffix}'; use .jsonl, .csv or .parquet")
    streamed = question is None and context is None and input != "-" and (output is not None or engine == "ray"
                                                                           or any(c in input for c in "*?[") or Path(input).is_dir())
    if fmt == "parquet" and not streamed:
        raise UserError("--output .parquet needs an --input file, folder or glob (stdin and --question go to .jsonl or .csv)")
    for flag, value in (("--chunk_rows", chunk_rows), ("--workers", workers)):
        if value < 1:
            raise UserError(f"{flag} must be at least 1 (got {value})")
    if engine == "ray":
        from ..runs.predict_ray import check_ray

        if log is not None:
            raise UserError("--log with --engine ray: log a local run (--engine local), or drop --log")
        check_ray()
    if output and not str(output).startswith(("s3://", "gs://")):
        check_output_file(Path(output), "--output", f"predictions.{fmt}")
    if streamed:
        from ..runs.predict_stream import stream

        columns = (text_column, text_pair_column, saved.join_columns if saved else None)
        load = dict(device=device, max_tokens=max_tokens, calibrated=calibrated, abstain=abstain, backend=backend,
                    int8_recheck=int8_recheck)
        if engine == "ray":
            from ..runs.predict_ray import run_ray

            return run_ray(run, directory, input, output, fmt, columns, load, on_error, chunk_rows, ray_address, workers)
        return stream(run, directory, input, output, fmt, columns, load, log, log_texts, on_error, overwrite, chunk_rows)
    if question is not None or context is not None:
        texts, pairs = one_pair(question, context, input, (first, second) if info.text_pair else (first,))
    else:
        texts, pairs = read_inputs(input, text_column, text_pair_column, saved.join_columns if saved else None)
    given = len(texts)
    texts, pairs = drop_empty(texts, pairs)
    if given and not texts:  # else an empty output file (or nothing on stdout) and exit 0, as if all went well
        raise UserError(f"--input: every one of its {given} row(s) is empty; nothing to predict (give texts, or check "
                        f"--text_column{'/--text_pair_column' if pairs is not None else ''})")
    if log is not None:
        from ..runs.predlog import PredictionLog

        store = PredictionLog(Path(log))  # a bad path fails before the model loads
    model = Predictor.from_pretrained(run, device=device, max_tokens=max_tokens, calibrated=calibrated, abstain=abstain,
                                      backend=backend, int8_recheck=int8_recheck)
    logits = model.logits(texts, pairs) if texts else None
    decode = model.task.decoding.decode
    results = decode(logits, model.labels, model.head, model.calibrated, model.abstain) if texts else []
    if log is not None and results:
        from ..runs.predlog import log_batch

        # the log keeps calibrated confidences, as monitor's reference has them (an UNKNOWN is marked by the task's
        # Decoding.monitored, its top label kept), whatever this output shows
        logged = results if model.calibrated else decode(logits, model.labels, model.head)
        ids = [r["id"] for r in log_batch(store, model, model.source or directory, texts, pairs, logged, log_texts)]
        results = [{"id": i, **r} for i, r in zip(ids, results)]
    rows = _rows(texts, pairs, results, model.task.inputs)
    if output is None:
        write_predictions(rows, model.task, model.labels, sys.stdout, fmt, pairs is not None)
        return None
    with atomic_file(Path(output)) as handle:
        write_predictions(rows, model.task, model.labels, handle, fmt, pairs is not None)
    logging.getLogger(__name__).info("wrote %d predictions to %s", len(texts), output)  # `log` is the --log path here
    return Path(output)
