"""Streaming `encoderfit predict`: input files read a chunk at a time, each chunk's rows published as a part
(OUTPUT.parts/part-NNNNN.jsonl, atomically, with a small record of its counts), and the parts joined into OUTPUT at
the end. A manifest of the input's and the model's fingerprints lets the same command continue after a kill.

Memory holds one chunk (and one part while joining), whatever the input's size. Every input row gives one output
row: a bad or empty one is written with its reason under "error" (or, for a bad one, `--on_error fail` stops).
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from ..core.errors import UserError
from ..core.files import atomic_file, write_json
from ..data.sources import check_header, join_row, read_table

log = logging.getLogger(__name__)
STREAMED = (".csv", ".tsv", ".jsonl", ".parquet", ".txt")  # read a chunk at a time; .json (one array) is read whole
EMPTY = "empty text: nothing to label"
Item = Tuple[object, object, Optional[str], bool]  # (text, pair, reason or None, the reason is an error, not emptiness)


def input_files(source: str) -> List[Path]:
    """The files of an --input that is a file, a folder (its CSV/TSV/JSON/JSONL/Parquet/txt files, sorted) or a glob."""
    if any(c in source for c in "*?["):
        files = [Path(p) for p in sorted(glob.glob(source, recursive=True)) if Path(p).is_file()]
        if not files:
            raise UserError(f"--input: no file matches '{source}'")
        return files
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (*STREAMED, ".json")
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not files:
            raise UserError(f"--input: folder {source} holds no .csv/.tsv/.json/.jsonl/.parquet/.txt file")
        return files
    if not path.is_file():
        raise UserError(f"--input: file '{source}' does not exist")
    return [path]


def fingerprint(files: Sequence[Path]) -> List[Dict]:
    """What identifies the input: each file's path, size and modification time."""
    return [{"path": str(p.resolve()), "size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns} for p in files]


class Reader:
    """The input's rows, in order, as (file, where, number, item); `bytes_read`/`total_bytes` measure progress."""

    def __init__(self, files: Sequence[Path], text_column: str, pair_column: Optional[str], joined: Optional[List[str]],
                 chunk_rows: int):
        self.files, self.text_column, self.pair_column, self.joined = list(files), text_column, pair_column, joined
        self.chunk_rows = chunk_rows
        for path in self.files:
            if path.stat().st_size == 0:
                raise UserError(f"{path}: an empty file (0 bytes), no rows; it must hold at least one example")
        self.total_bytes = sum(p.stat().st_size for p in self.files)
        self.bytes_read = 0
        self.rows_known: Optional[int] = None
        if all(p.suffix.lower() == ".parquet" for p in self.files):
            import pyarrow.parquet as pq

            self.rows_known = sum(pq.ParquetFile(p).metadata.num_rows for p in self.files)

    def __iter__(self) -> Iterator[Tuple[Path, str, int, Item]]:
        for path in self.files:
            ext = path.suffix.lower()
            if ext == ".txt" and self.pair_column:
                raise UserError(f"--input: {path} holds one text per line, but this model takes text pairs; give a "
                                f"CSV/TSV/JSONL/Parquet file with columns '{self.text_column}' and '{self.pair_column}'")
            rows = {".txt": self._txt, ".jsonl": self._jsonl, ".csv": self._csv, ".tsv": self._csv,
                    ".parquet": self._parquet}.get(ext, self._whole)(path)
            for where, number, item in rows:
                yield path, where, number, item
            self.bytes_read += 0 if ext in (".txt", ".jsonl", ".csv", ".tsv") else path.stat().st_size

    def _lines(self, path: Path) -> Iterator[Tuple[int, str, Optional[str]]]:
        """(line number, text, reason it cannot be decoded), a line at a time."""
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                self.bytes_read += len(raw)
                try:
                    yield number, raw.decode("utf-8"), None
                except UnicodeDecodeError as err:
                    yield number, "", f"byte 0x{raw[err.start]:02x} is not valid UTF-8; re-save the file as UTF-8"

    def _txt(self, path: Path):
        for number, line, bad in self._lines(path):
            line = line.rstrip("\r\n")
            yield "line", number, (line, None, bad, True) if bad else self.item({self.text_column: line}, [])

    def _jsonl(self, path: Path):
        columns = None
        for number, line, bad in self._lines(path):
            if not bad and not line.strip():
                continue  # as the table reader, a blank line of a JSONL file is no row
            row, bad = (None, bad) if bad else json_row(line)
            if bad:
                yield "line", number, (line.rstrip("\r\n"), None, bad, True)
                continue
            if columns is None:
                columns = self.check_columns(path, list(row))
            yield "line", number, self.item(row, columns)

    def _csv(self, path: Path):
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        check_header(path, delimiter)
        lines = (line for _, line, _ in self._lines(path))  # a line that is not UTF-8 is decoded empty; see below
        reader = csv.reader(lines, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise UserError(f"{path}: an empty file (0 bytes), no rows; it must hold at least one example")
        columns = self.check_columns(path, header)
        for number, fields in enumerate(reader, start=1):
            if not fields:
                yield "row", number, ("", None, EMPTY, False)
            elif len(fields) != len(header):
                yield "row", number, (delimiter.join(fields), None, f"has {len(fields)} fields, the header {len(header)}", True)
            else:
                yield "row", number, self.item(dict(zip(header, fields)), columns)

    def _parquet(self, path: Path):
        import pyarrow.parquet as pq

        handle = pq.ParquetFile(path)
        columns = self.check_columns(path, handle.schema_arrow.names)
        number = 0
        for batch in handle.iter_batches(batch_size=self.chunk_rows, columns=columns):
            for row in batch.to_pylist():
                number += 1
                yield "row", number, self.item(row, columns)

    def _whole(self, path: Path):
        table = read_table(path)  # a .json array (or another table format) is not streamable: read whole
        columns = self.check_columns(path, table.column_names)
        for number, row in enumerate(table, start=1):
            yield "row", number, self.item(row, columns)

    def check_columns(self, path: Path, names: List[str]) -> List[str]:
        """The columns this input needs, checked once per file: the run's join_columns when it has all of them."""
        joined = self.joined if self.joined and all(c in names for c in self.joined) else []
        for column, flag in ((self.text_column, "--text_column"), (self.pair_column, "--text_pair_column")):
            if column and column not in names and not (joined and column == self.text_column):
                raise UserError(f"{path}: no column '{column}'; columns are {names}; set {flag}")
        return [*joined, *[c for c in (self.text_column, self.pair_column) if c and c in names and c not in joined]]

    def item(self, row: Dict, columns: List[str]) -> Item:
        """One row's (text, pair, reason): a value that is not text is an error, as training refuses it."""
        if columns and self.joined and columns[: len(self.joined)] == list(self.joined):
            row = {**row, self.text_column: join_row(row, self.joined)}
        values = [row.get(c) for c in (self.text_column, self.pair_column) if c]
        for column, value in zip((self.text_column, self.pair_column), values):
            if value is not None and not isinstance(value, str):
                return (*_shown(values), f"column '{column}' holds {type(value).__name__} ({str(value)[:40]}), not "
                        "text, as training would refuse it; write it as a string or remove the row", True)
        text, pair = ["" if v is None else v for v in values] + ([None] if not self.pair_column else [])
        if not text.strip() or (self.pair_column and not pair.strip()):
            return text, pair, EMPTY, False
        return text, pair, None, False


def json_row(line: str) -> Tuple[Optional[Dict], Optional[str]]:
    """One JSONL line -> (its object, None), or (None, why it is no row)."""
    try:
        row = json.loads(line)
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except json.JSONDecodeError as err:
        return None, f"not valid JSON ({err.msg} at column {err.colno})"
    except UnicodeEncodeError:
        return None, "a lone surrogate escape (such as \\ud800) is not valid Unicode"
    if not isinstance(row, dict):
        return None, f"expected a JSON object ({{\"text\": ..., ...}}), found {type(row).__name__}"
    return row, None


def _shown(values: List) -> List:
    """A bad row's values as written beside its reason (text as is, anything else as None)."""
    return [v if isinstance(v, str) else None for v in values] + [None] * (2 - len(values))


def chunks(rows: Iterator, size: int) -> Iterator[List]:
    chunk: List = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def predict_items(model, items: Sequence[Item], store=None, log_texts: bool = False) -> List[Dict]:
    """One chunk's output rows, in order: the Predictor (batching by length) on the rows that have text, each bad or
    empty row with its reason. `store`: the --log PredictionLog (calibrated confidences logged, as before)."""
    first, second = model.task.inputs
    keep = [i for i, item in enumerate(items) if item[2] is None]
    texts = [items[i][0] for i in keep]
    pairs = [items[i][1] for i in keep] if model.info.text_pair else None
    results: List[Dict] = []
    if keep:
        decode = model.task.decoding.decode
        logits = model.logits(texts, pairs)
        results = decode(logits, model.labels, model.head, model.calibrated, model.abstain)
        if store is not None:
            from .predlog import log_batch

            logged = results if model.calibrated else decode(logits, model.labels, model.head)
            ids = [r["id"] for r in log_batch(store, model, model.source, texts, pairs, logged, log_texts)]
            results = [{"id": i, **r} for i, r in zip(ids, results)]
    done = dict(zip(keep, results))
    out = []
    for i, (text, pair, reason, _) in enumerate(items):
        inputs = {first: text, **({second: pair} if model.info.text_pair else {})}
        out.append({**inputs, **done[i]} if reason is None else {**inputs, "error": reason})
    return out


class Parts:
    """OUTPUT.parts/: manifest.json, then part-NNNNN.jsonl each with part-NNNNN.json (its counts), written last."""

    def __init__(self, output: Path):
        self.output = Path(output)
        self.dir = Path(f"{output}.parts")
        self.published = 0

    def open(self, manifest: Dict, overwrite: bool) -> int:
        """Start, or continue a run of the same manifest; returns how many input rows are done already."""
        if self.dir.exists() and (overwrite or not (self.dir / "manifest.json").is_file()):
            shutil.rmtree(self.dir)
        if self.dir.exists():
            old = json.loads((self.dir / "manifest.json").read_text())
            named = {"input": "input (its files, sizes or times differ)", "model": "model (its weights differ)"}
            for key in manifest:
                if old.get(key) != manifest[key]:
                    what = named.get(key) or next(f"--{k} ({old.get(key, {}).get(k)!r}, now {v!r})"
                                                  for k, v in manifest[key].items() if (old.get(key) or {}).get(k) != v)
                    raise UserError(f"--output: {self.dir} holds an interrupted run with another {what}; re-run the "
                                    "same command to continue it, or add --overwrite true to start over")
        else:
            self.dir.mkdir(parents=True)
            write_json(self.dir / "manifest.json", manifest)
        self.published = len(self.counts())
        return sum(c["rows"] for c in self.counts())

    def counts(self) -> List[Dict]:
        """Each complete part's counts, in order (a part without its counts file was cut off: it is done again)."""
        out = []
        while (self.dir / f"part-{len(out):05d}.json").is_file():
            out.append(json.loads((self.dir / f"part-{len(out):05d}.json").read_text()))
        return out

    def publish(self, rows: List[Dict], errors: int, empty: int) -> None:
        index = self.published
        with atomic_file(self.dir / f"part-{index:05d}.jsonl") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        write_json(self.dir / f"part-{index:05d}.json", {"rows": len(rows), "errors": errors, "empty": empty})
        self.published += 1

    def rows(self, index: int) -> List[Dict]:
        with open(self.dir / f"part-{index:05d}.jsonl", encoding="utf-8") as handle:
            return [json.loads(line) for line in handle]

    def join(self, fmt: str, task, labels: List[str], pairs: bool, ids: bool) -> None:
        """The parts, in order, into OUTPUT (atomically); then the parts are removed."""
        counts = self.counts()
        shape = (task, labels, pairs, any(c["errors"] or c["empty"] for c in counts), ids)
        if fmt == "parquet":
            write_parquet(self, len(counts), shape)
        else:
            with atomic_file(self.output) as handle:
                if fmt == "jsonl":
                    for i in range(len(counts)):
                        with open(self.dir / f"part-{i:05d}.jsonl", encoding="utf-8", newline="") as part:
                            shutil.copyfileobj(part, handle)
                else:
                    writer = csv.writer(handle)
                    writer.writerow(flat_header(*shape))
                    for i in range(len(counts)):
                        writer.writerows(flat_row(row, *shape) for row in self.rows(i))
        shutil.rmtree(self.dir)


def flat_header(task, labels: List[str], pairs: bool, flagged: bool, ids: bool) -> List[str]:
    """CSV/Parquet columns, as `predict --output x.csv` has them, plus "error" when some row has one."""
    first, second = task.inputs
    return [*(["id"] if ids else []), first, *([second] if pairs else []), *task.decoding.csv_header(labels),
            *(["error"] if flagged else [])]


def flat_row(row: Dict, task, labels: List[str], pairs: bool, flagged: bool, ids: bool) -> List:
    first, second = task.inputs
    head = [*([row.get("id", "")] if ids else []), row[first], *([row[second]] if pairs else [])]
    if "error" in row:
        return [*head, *[""] * len(task.decoding.csv_header(labels)), row["error"]]
    return [*head, *task.decoding.csv_row(row, labels), *([""] if flagged else [])]


def write_parquet(parts: Parts, n: int, shape: tuple) -> None:
    """One row group per part, the CSV's columns (as text; an empty cell as null), into OUTPUT atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = flat_header(*shape)
    schema = pa.schema([(name, pa.string()) for name in names])
    with atomic_file(parts.output, "wb") as handle:
        writer = pq.ParquetWriter(handle, schema)
        for i in range(n):
            values = [flat_row(r, *shape) for r in parts.rows(i)]
            writer.write_table(pa.table({name: [None if v[k] == "" else str(v[k]) for v in values]
                                         for k, name in enumerate(names)}, schema=schema))
        writer.close()


def local_path(path) -> Optional[Path]:
    """An output path; file:///x is the local /x."""
    if path is None:
        return None
    text = str(path)
    return Path(text[len("file://"):] if text.startswith("file://") else text[len("file:"):] if text.startswith("file:") else text)


def result_options(columns: tuple, load: Dict, chunk_rows: int, fmt: str, logged: bool) -> Dict:
    """The options that change the output's bytes: a resumed run must have the same."""
    return {"text_column": columns[0], "text_pair_column": columns[1], "join_columns": columns[2], **load,
            "chunk_rows": chunk_rows, "format": fmt, "log": logged}


def stream(run: Path, directory, source: str, output: Optional[Path], fmt: str, columns: tuple, load: Dict,
           log_path: Optional[Path], log_texts: bool, on_error: str, overwrite: bool, chunk_rows: int) -> Optional[Path]:
    """`predict` over a file, folder or glob: checks and the resumable parts first, then the model."""
    from .predictor import Predictor

    text_column, pair_column, joined = columns
    output = local_path(output)
    files = input_files(str(local_path(source)))
    reader = Reader(files, text_column, pair_column, joined, chunk_rows)
    store = None
    if log_path is not None:
        from .predlog import PredictionLog

        store = PredictionLog(Path(log_path))  # a bad path fails before the model loads
    parts = Parts(output) if output is not None else None
    manifest = {"input": fingerprint(files), "model": directory.fingerprint(),
                "options": result_options(columns, load, chunk_rows, fmt, log_path is not None)}
    done = parts.open(manifest, overwrite) if parts is not None else 0
    model = Predictor.from_pretrained(run, **load)
    run_stream(model, reader, parts, done, fmt, on_error, store, log_texts)
    return output


def run_stream(model, reader: Reader, parts: Optional[Parts], done: int, fmt: str, on_error: str, store=None,
               log_texts: bool = False) -> int:
    """Predict the reader's rows after the first `done` a chunk at a time into the parts, joined into OUTPUT at the
    end (None: JSONL on stdout as made). Returns the number of rows predicted."""
    from tqdm.auto import tqdm

    output = parts.output if parts is not None else None
    totals = {c: sum(p[c] for p in parts.counts()) for c in ("rows", "errors", "empty")} if parts else dict.fromkeys(("rows", "errors", "empty"), 0)
    skipped = iter(reader)
    for _ in range(done):
        next(skipped, None)
    bar = tqdm(total=reader.rows_known, initial=done, unit="row", desc="predict", dynamic_ncols=True, disable=None)
    with bar:
        for chunk in chunks(skipped, reader.chunk_rows):
            bad = next((c for c in chunk if c[3][3]), None)
            if bad is not None and on_error == "fail":
                raise UserError(f"{bad[0]}: {bad[1]} {bad[2]}: {bad[3][2]}; fix or remove that {bad[1]}, or pass "
                                "--on_error skip to write it with its reason and go on")
            rows = predict_items(model, [c[3] for c in chunk], store, log_texts)
            errors, empty = sum(c[3][3] for c in chunk), sum(c[3][2] is not None and not c[3][3] for c in chunk)
            for name, count in (("rows", len(rows)), ("errors", errors), ("empty", empty)):
                totals[name] += count
            if parts is not None:
                parts.publish(rows, errors, empty)
            else:
                sys.stdout.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
                sys.stdout.flush()
            bar.update(len(rows))
            if reader.rows_known is None and reader.bytes_read:  # ETA: rows so far scaled by the bytes left
                bar.total = max(bar.n, int(bar.n * reader.total_bytes / reader.bytes_read))
    predicted = totals["rows"] - totals["errors"] - totals["empty"]
    if not predicted:
        if parts is not None:
            shutil.rmtree(parts.dir)
        if not totals["rows"]:
            raise UserError(f"--input: {', '.join(map(str, reader.files[:3]))}: no rows; it must hold at least one example")
        raise UserError(f"--input: every one of its {totals['rows']} row(s) is empty or bad; nothing to predict (give "
                        f"texts, or check --text_column{'/--text_pair_column' if reader.pair_column else ''})")
    if totals["empty"] or totals["errors"]:
        log.warning("warning: %d empty and %d bad row(s) written with their reason under \"error\"", totals["empty"],
                    totals["errors"])
    if parts is not None:
        parts.join(fmt, model.task, model.labels, reader.pair_column is not None, store is not None)
        log.info("wrote %d predictions to %s", totals["rows"], output)
    return predicted
