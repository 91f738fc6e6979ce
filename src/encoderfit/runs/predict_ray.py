"""`encoderfit predict --engine ray`: Ray Data reads the input, `map_batches` runs one Predictor per actor (`--workers`,
a GPU each where CUDA is there; the Predictor batches by length inside each block), and the driver writes the rows
in input order through the same parts as the local engine, so the output has the local engine's format.

Inputs may be any filesystem pyarrow reads (local paths, file://, s3://, gs://); the output is a local path (or a
mounted bucket) written by the driver.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from ..core.errors import UserError
from .predict_stream import EMPTY, Parts, Reader, json_row, local_path, predict_items, result_options

log = logging.getLogger(__name__)
MISSING = "--engine ray needs Ray: pip install 'encoderfit[ray]'"
LINES = (".jsonl", ".txt")


def check_ray() -> None:
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        raise UserError(MISSING) from None


class PredictorActor:
    """One Predictor per Ray actor: a batch of rows (lines of JSONL/txt, or table rows) -> their output rows, as JSON
    ("" for a blank JSONL line, which is no row), with whether each is a bad row."""

    def __init__(self, run: str, load: Dict, columns: tuple, kind: str):
        from .predictor import Predictor

        self.model = Predictor.from_pretrained(run, **load)
        self.reader = Reader([], *columns, chunk_rows=1)
        self.kind = kind

    def __call__(self, batch: Dict) -> Dict:
        items, keep = [], []
        for i, row in enumerate(batch_rows(batch)):
            item = self.item(row)
            if item is not None:
                items.append(item)
                keep.append(i)
        rows = predict_items(self.model, items)
        out = [""] * len(batch["path"])
        bad = [False] * len(out)
        for i, item, row in zip(keep, items, rows):
            out[i], bad[i] = json.dumps(row, ensure_ascii=False), item[3]
        return {"row": out, "bad": bad, "path": list(batch["path"])}

    def item(self, row: Dict):
        if self.kind == ".txt":
            return self.reader.item({self.reader.text_column: row["text"]}, [])
        if self.kind == ".jsonl":
            if not row["text"].strip():
                return None
            parsed, bad = json_row(row["text"])
            if bad:
                return row["text"], None, bad, True
            return self.reader.item(parsed, self.reader.check_columns(Path(row["path"]), list(parsed)))
        return self.reader.item(row, self.reader.check_columns(Path(row["path"]), [k for k in row if k != "path"]))


def batch_rows(batch: Dict) -> Iterator[Dict]:
    names = list(batch)
    for values in zip(*(batch[n] for n in names)):
        yield {n: (v.item() if hasattr(v, "item") and not isinstance(v, str) else v) for n, v in zip(names, values)}


def read(source: str, kind: str, columns: tuple, chunk_rows: int):
    """The Ray dataset of an input path, folder or glob (any pyarrow filesystem), with each row's path."""
    import ray.data

    if kind in LINES:
        return ray.data.read_text(source, drop_empty_lines=False, include_paths=True, file_extensions=[kind[1:]])
    if kind == ".parquet":
        return ray.data.read_parquet(source, include_paths=True, file_extensions=["parquet"])
    if kind in (".csv", ".tsv"):
        import pyarrow as pa
        import pyarrow.csv as pacsv

        text = {c: pa.string() for c in columns[:2] if c} | {c: pa.string() for c in columns[2] or []}
        return ray.data.read_csv(source, include_paths=True, file_extensions=[kind[1:]],
                                 parse_options=pacsv.ParseOptions(delimiter="\t" if kind == ".tsv" else ","),
                                 convert_options=pacsv.ConvertOptions(column_types=text, strings_can_be_null=False))
    raise UserError(f"--input: {source}: --engine ray reads .jsonl, .txt, .csv, .tsv or .parquet, not '{kind}'")


def input_kind(source: str) -> str:
    """The one file type of an --input (a folder's files or a glob must share it)."""
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(source) if "://" in source else (fs.LocalFileSystem(), str(Path(source).resolve()))
    info = filesystem.get_file_info(path)
    if info.type == fs.FileType.Directory:
        names = [i.path for i in filesystem.get_file_info(fs.FileSelector(path, recursive=True)) if i.type == fs.FileType.File]
    elif info.type == fs.FileType.File:
        names = [path]
    else:
        raise UserError(f"--input: '{source}' does not exist (--engine ray takes a file or a folder, local or s3://, gs://)")
    kinds = sorted({Path(n).suffix.lower() for n in names if not Path(n).name.startswith(".")})
    if len(kinds) != 1:
        raise UserError(f"--input: {source} holds files of types {kinds}; --engine ray reads a folder of one type")
    return kinds[0]


def run_ray(run: Path, directory, source: str, output: Optional[Path], fmt: str, columns: tuple, load: Dict,
            on_error: str, chunk_rows: int, address: Optional[str], workers: int) -> Optional[Path]:
    """The whole input through Ray (a re-run starts over: the parts are the driver's buffer, not resumed)."""
    import ray

    if output is None:
        raise UserError("--engine ray writes a file: give --output (.jsonl, .csv or .parquet)")
    if str(source).startswith("file://"):
        source = str(source)[len("file://"):]
    output = local_path(output)
    kind = input_kind(source)
    parts = Parts(output)
    options = result_options(columns, load, chunk_rows, fmt, False)
    parts.open({"input": source, "model": directory.fingerprint(), "options": {**options, "engine": "ray"}}, True)
    if address:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    elif not ray.is_initialized():
        ray.init(num_cpus=workers + 1, include_dashboard=False, log_to_driver=False, object_store_memory=256 << 20)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # rows come back in input order
    import torch

    gpus = 1 if torch.cuda.is_available() and load.get("device") in (None, "cuda") else 0
    ds = read(source, kind, columns, chunk_rows).map_batches(
        PredictorActor, fn_constructor_kwargs={"run": str(run), "load": load, "columns": columns, "kind": kind},
        batch_size=chunk_rows, batch_format="numpy", concurrency=workers, num_cpus=1, num_gpus=gpus)
    rows: List[Dict] = []
    seen: Dict[str, int] = {}
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for text, bad, path in zip(batch["row"], batch["bad"], batch["path"]):
            seen[path] = seen.get(path, 0) + 1
            if not text:
                continue
            row = json.loads(text)
            if bad and on_error == "fail":
                where = "line" if kind in LINES else "row"
                raise UserError(f"{path}: {where} {seen[path]}: {row['error']}; fix or remove that {where}, or pass "
                                "--on_error skip to write it with its reason and go on")
            rows.append(row)
            if len(rows) == chunk_rows:
                publish(parts, rows)
                rows = []
    if rows:
        publish(parts, rows)
    total = sum(c["rows"] for c in parts.counts())
    join(parts, fmt, directory, columns)
    log.info("wrote %d predictions to %s (--engine ray, %d worker(s))", total, output, workers)
    return output


def publish(parts: Parts, rows: List[Dict]) -> None:
    bad = [r for r in rows if "error" in r]
    parts.publish(rows, sum(r["error"] != EMPTY for r in bad), sum(r["error"] == EMPTY for r in bad))


def join(parts: Parts, fmt: str, directory, columns: tuple) -> None:
    from ..tasks import get_task

    info = directory.info()
    parts.join(fmt, get_task(info.task, "predict", info.options), info.labels, columns[1] is not None, False)
