"""Any source -> validated train/validation/test splits with canonical columns, for the run's task.

Canonical columns: `text`, optional `text_pair`, and `labels` (the target as the task encodes it: class ids,
multi-hot rows, numbers). Reading targets, naming the outputs and stratifying the splits belong to the task
(tasks/); everything else is here. Every check fails with a `UserError` naming the file, split, row or column
and the fix. The datasets library is imported only when data is actually read, so the CLI starts fast.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..core.args import DataArgs
from ..core.errors import UserError, closest
from ..core.files import decode_utf8
from .arrow import file_order, select_rows
from .recipes import RECIPES

log = logging.getLogger(__name__)

TEXT, PAIR, LABEL = "text", "text_pair", "labels"
CSV_CELLS = {"keep_default_na": False, "na_values": [""]}
"""Only an empty CSV/TSV cell is missing: `None`, `NA`, `null`, `nan`, `N/A` are text (a class, a sentence), not the
missing values pandas reads them as by default."""
FORMATS = {  # extension -> (datasets builder, builder options)
    ".csv": ("csv", CSV_CELLS),
    ".tsv": ("csv", {**CSV_CELLS, "delimiter": "\t"}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
    **{ext: ("conll", {}) for ext in (".conll", ".iob", ".iob2", ".bio", ".bioes", ".txt")},  # token classification
}
TEXT_FORMATS = {".csv", ".tsv", ".json", ".jsonl"}
BATCH = 1000
"""Rows read at a time by the checks that pass over a whole split (text checks here; fingerprints, overlap and
duplicates in runs/splits.py): memory stays that of one batch, the split itself stays memory-mapped."""


def _datasets():
    """The datasets library, quiet."""
    import datasets

    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", message="Specifying null_placement", category=FutureWarning)  # pyarrow, via Dataset.sort
    return datasets


# ---------------------------------------------------------------- reading


def check_utf8(path: Path) -> None:
    """Every line valid UTF-8, read a line at a time (a file of any size); the first bad byte named by its line."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                decode_utf8(b"\n" * (number - 1) + line, str(path))  # its message, with this line's number


def check_header(path: Path, delimiter: str) -> None:
    """A CSV/TSV header naming one column twice would be read with the first silently winning: refuse it."""
    with open(path, newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle, delimiter=delimiter), [])
    seen: Dict[str, int] = {}
    for i, name in enumerate(header, start=1):
        if name in seen:
            raise UserError(f"{path}: column '{name}' appears twice in the header (columns {seen[name]} and {i}); rename or remove one")
        seen[name] = i


def check_json_lines(path: Path) -> None:
    """Parse a JSONL file line by line, so a broken line is reported by its own (1-based) number."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                json.dumps(row, ensure_ascii=False).encode("utf-8")
            except json.JSONDecodeError as err:
                raise UserError(f"{path}: line {number}: not valid JSON ({err.msg} at column {err.colno}); fix or remove that line") from None
            except UnicodeEncodeError:
                raise UserError(f"{path}: line {number}: a lone surrogate escape (such as \\ud800) is not valid Unicode; fix that line") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}: line {number}: expected a JSON object ({{\"text\": ..., ...}}), found {type(row).__name__}")


def read_table(path: Path):
    """One local file -> Dataset, through the datasets library's own readers (after checks that name the line)."""
    ext = path.suffix.lower()
    if ext not in FORMATS:
        raise UserError(f"{path}: unsupported file type '{ext or path.name}'; use one of {', '.join(FORMATS)}")
    builder, options = FORMATS[ext]
    if builder == "conll":
        from .conll import read_conll

        return read_conll(path)
    if path.stat().st_size == 0:  # the datasets json reader stops with a bare StopIteration on 0 bytes
        raise UserError(f"{path}: an empty file (0 bytes), no rows; it must hold at least one example")
    if ext in TEXT_FORMATS:
        check_utf8(path)
    if builder == "csv":
        check_header(path, options.get("delimiter", ","))
    if ext == ".jsonl":
        check_json_lines(path)
    if ext == ".json":
        from .squad import is_squad_json, read_squad

        if is_squad_json(path):
            return read_squad(path)
    datasets = _datasets()
    from datasets.exceptions import DatasetGenerationError

    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train", **options)
    except (DatasetGenerationError, ValueError, OSError) as err:
        cause = err.__cause__ or err
        if "corresponds to no data" in str(err) or type(cause).__name__ == "EmptyDataError":
            raise UserError(f"{path}: no rows; it must hold at least one example") from None
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise UserError(f"{path}: cannot be read as {ext[1:].upper()} ({reason}); check the file's format") from None


def read_tables(paths: Sequence[Path], where: str):
    """The files of one split (the parts of a folder or a glob), in name order -> one Dataset: each file read by
    read_table into the datasets cache, the parts concatenated, still memory-mapped (never loaded into memory)."""
    if len(paths) == 1:
        return read_table(paths[0])
    from datasets import concatenate_datasets

    parts = [read_table(path) for path in paths]
    for path, part in zip(paths, parts):
        if part.features != parts[0].features:
            raise UserError(f"{path}: its columns {dict(part.features)} differ from {paths[0].name}'s {dict(parts[0].features)}; "
                            f"every file of {where} must have the same columns and types")
    return concatenate_datasets(parts)


def glob_files(pattern: str) -> List[Path]:
    """The data files a glob (`data/*.parquet`, `parts/**/*.jsonl`) names, in name order."""
    import glob

    files = sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True)
                   if Path(p).is_file() and Path(p).suffix.lower() in FORMATS)
    if not files:
        raise UserError(f"data.source: the pattern '{pattern}' matches no {'/'.join(sorted(TEXT_FORMATS | {'.parquet'}))} "
                        f"file (relative to {os.getcwd()}); check it")
    return files


DOC_FILES = ("readme", "license", "licence", "copying", "notice", "manifest", "changelog", "source_")


def _split_files(directory: Path) -> Dict[str, List[Path]]:
    """A directory's data files by split name: the file's stem, or a sub-folder's name for a split in parts
    (train/part-00000.parquet ...); a data set's README.txt, LICENSE.txt ... are not splits."""
    found: Dict[str, List[Path]] = {}
    for path in sorted(directory.iterdir()):
        if path.name.lower().startswith(DOC_FILES):
            continue
        if path.is_dir():
            parts = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in FORMATS
                           and not p.name.lower().startswith(DOC_FILES))
            name = path.name
        elif path.is_file() and path.suffix.lower() in FORMATS:
            parts, name = [path], path.stem
        else:
            continue
        if parts and name in found:
            raise UserError(f"{directory}: two files for split '{name}' ({found[name][0].name}, {path.name}); keep one")
        if parts:
            found[name] = parts
    return found


def _load_hub(name: str, config_name: Optional[str]):
    datasets = _datasets()
    try:
        loaded = datasets.load_dataset(name, config_name)
    except (ConnectionError, OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0][:200]
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise UserError(
            f"data.source: cannot load '{name}' from the Hugging Face hub{offline}: {reason}. "
            "If the hub is unreachable, point --data.source at a local file, a directory of split files "
            f"or a save_to_disk directory, or use a built-in recipe ({', '.join(RECIPES)})"
        ) from None
    return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})


def load_source(source: Optional[str], config_name: Optional[str] = None):
    """A source string (recipe, file, directory, save_to_disk directory or hub name) -> DatasetDict."""
    if not source:
        raise UserError(
            "data.source is required: a CSV/TSV/JSON/JSONL/Parquet file, a directory of split files, "
            f"a hub dataset name, or a recipe ({', '.join(RECIPES)}); e.g. --data.source train.csv"
        )
    if source in RECIPES:
        return RECIPES[source]()
    path = Path(source).expanduser()
    if not path.exists() and any(c in source for c in "*?["):  # a glob of parts: one train split
        files = glob_files(source)
        return _datasets().DatasetDict({"train": read_tables(files, source)})
    if not path.exists() and (path.suffix or source.startswith((".", "/", "~"))):  # before importing datasets (~1 s)
        raise UserError(f"data.source: file '{source}' does not exist; check the path (relative to {os.getcwd()})")
    datasets = _datasets()
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            loaded = datasets.load_from_disk(str(path))
            return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})
        files = _split_files(path)
        if not files:
            raise UserError(f"{path}: no data files found; put train.csv (or .tsv/.json/.jsonl/.parquet) and optionally validation/test files there")
        return datasets.DatasetDict({split: read_tables(parts, f"{path} [{split}]") for split, parts in files.items()})
    if path.is_file():
        return datasets.DatasetDict({"train": read_table(path)})
    if "/" not in source:
        hint = closest(source, RECIPES)
        if hint:
            raise UserError(f"data.source: unknown recipe '{source}'{hint}")
    return _load_hub(source, config_name)


# ---------------------------------------------------------------- validating


def join_columns(ds, columns: Optional[List[str]], into: str, where: str):
    """With data.join_columns: the text column made from those columns, joined by a blank line (empty parts skipped)."""
    if not columns:
        return ds
    for column in columns:
        if column not in ds.column_names:
            raise UserError(f"{where}: no column '{column}'{closest(column, ds.column_names)}; columns are {ds.column_names}; "
                            "fix --data.join_columns")

    return ds.map(lambda row: {into: join_row(row, columns)})


def join_row(row: Dict, columns: List[str]) -> Optional[str]:
    """One row's text from data.join_columns: the columns' values joined by a blank line (empty parts skipped)."""
    parts = [str(row[c]).strip() for c in columns if row.get(c) is not None and str(row[c]).strip()]
    return "\n\n".join(parts) if parts else None


def canonical(ds, data: DataArgs, where: str, need_labels: bool = True):
    """Select and rename the configured columns to text/text_pair/labels, failing clearly when one is absent."""
    wanted = {data.text_column: TEXT}
    if data.text_pair_column:
        wanted[data.text_pair_column] = PAIR
    if need_labels:
        wanted[data.label_column] = LABEL
    flags = {data.text_column: "text_column", data.text_pair_column: "text_pair_column", data.label_column: "label_column"}
    for column in wanted:
        if column not in ds.column_names:
            raise UserError(
                f"{where}: no column '{column}'{closest(column, ds.column_names)}; columns are {ds.column_names}; "
                f"set --data.{flags[column]}"
            )
    if len(ds) == 0:
        raise UserError(f"{where}: no rows; it must hold at least one example")
    ds = ds.select_columns(list(wanted)).rename_columns({k: v for k, v in wanted.items() if k != v})
    if need_labels and type(ds.features[LABEL]).__name__ == "Json":  # JSON rows whose labels are of several kinds
        from .columns import check_label_kinds

        check_label_kinds(list(ds[LABEL]), data.label_column, where)
    for name, column in ((TEXT, data.text_column), (PAIR, data.text_pair_column)):
        if name in ds.column_names:
            for i, value in enumerate(value for batch in ds.select_columns([name]).iter(batch_size=BATCH) for value in batch[name]):
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    raise UserError(f"{where}: row {i + 1}: empty text in column '{column}'; fill it in or remove the row")
                if not isinstance(value, str):
                    raise UserError(f"{where}: row {i + 1}: column '{column}' holds {type(value).__name__}, not text")
    return ds


def stratified_holdout(ds, size: float, seed: int, strata, names: Sequence[str], single_note: Optional[str]):
    """Split off `size` of `ds`, stratified by `strata` (one stratum id per row, any int sequence; `names` for
    messages). A stratum with a single example cannot be stratified: it stays on the kept side, and `single_note`
    (with %s for its name) says so; every other stratum keeps at least one example on the kept side.

    The indices are those of datasets' `train_test_split(test_size=size, stratify_by_column=..., seed=seed)` (its
    own routine, generator and sizes), drawn from the numpy strata: datasets would read the column a row at a time."""
    import numpy as np
    from datasets import concatenate_datasets
    from datasets.utils.stratify import stratified_shuffle_split_generate_indices

    strata = np.asarray(strata, dtype=np.int64)
    counts = np.bincount(strata)
    if single_note:
        for stratum in np.flatnonzero(counts == 1):
            log.warning("warning: " + single_note, names[stratum])
    rows = np.flatnonzero(counts[strata] >= 2)
    pool, pooled = select_rows(ds, rows), strata[rows]
    n_test = math.ceil(size * len(pool))
    try:
        keep_idx, held_idx = next(stratified_shuffle_split_generate_indices(pooled, len(pool) - n_test, n_test,
                                                                            rng=np.random.default_rng(seed)))
    except ValueError as err:  # fewer held-out rows than strata
        log.warning("warning: stratified split impossible (%s); splitting at random", str(err).splitlines()[0])
        parts = pool.train_test_split(test_size=size, seed=seed)
        keep, held = parts["train"], parts["test"]
    else:
        missing = sorted(set(pooled.tolist()) - set(pooled[keep_idx].tolist()))  # all of it on the held-out side
        back = [int(np.flatnonzero(pooled[held_idx] == m)[0]) for m in missing]
        keep_idx = np.concatenate([keep_idx, held_idx[sorted(back)]]) if back else keep_idx
        held_idx = np.delete(held_idx, back) if back else held_idx
        keep, held = select_rows(pool, keep_idx), select_rows(pool, held_idx)
    kept_whole = np.flatnonzero(counts[strata] < 2)
    if len(kept_whole):
        keep = concatenate_datasets([keep, select_rows(ds, kept_whole)])
    return keep, held


def multilabel_holdout(ds, size: float, seed: int):
    """Split off `size` of `ds`, with each label's share held out as close to `size` as possible: iterative
    stratification (Sechidis et al. 2011), through the iterative-stratification package."""
    import numpy as np
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    y = np.asarray(ds[LABEL])
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=size, random_state=seed)
    keep, held = next(splitter.split(np.zeros(len(y)), y))
    return select_rows(ds, np.sort(keep)), select_rows(ds, np.sort(held))


def encode_texts(tokenizer, texts, pairs, max_length: int, windows: Optional[dict] = None):
    """Token ids, never padded. Truncated to max_length; or, with `windows` ({overlap: N}), every window of max_length
    tokens (N shared between neighbours) and `overflow_to_sample_mapping`, the text each window comes from. A pair
    is windowed over its first text; the second is kept whole in every window."""
    if not windows:
        return tokenizer(texts, pairs, truncation=True, max_length=max_length)
    return tokenizer(texts, pairs, truncation="only_first" if pairs is not None else True, max_length=max_length,
                     stride=windows["overlap"], return_overflowing_tokens=True)


def tokenize(ds, tokenizer, max_length: int, windows: Optional[dict] = None, first_window_only: bool = False):
    """Token ids without padding (padding happens per batch), plus a `length` column for length-grouped batching.
    With windows, each window is a row with its text's target (or only each text's first window)."""
    pair = PAIR in ds.column_names

    def encode(batch):
        enc = encode_texts(tokenizer, batch[TEXT], batch[PAIR] if pair else None, max_length, windows)
        if windows:
            source = enc.pop("overflow_to_sample_mapping")
            keep = [i for i, s in enumerate(source) if not first_window_only or i == 0 or source[i - 1] != s]
            enc = {key: [values[i] for i in keep] for key, values in enc.items()}
            for column in (LABEL, "teacher", "gold"):  # a distillation transfer set's rows carry the teacher's outputs
                if column in batch:
                    enc[column] = [batch[column][source[i]] for i in keep]
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        return enc

    drop = ds.column_names if windows else [c for c in (TEXT, PAIR) if c in ds.column_names]
    order = None if windows else file_order(ds)  # windows change the row count: read in the split's order
    if order is None:
        return ds.map(encode, batched=True, remove_columns=drop)
    import numpy as np

    # tokenised in the file's order (sequential reads), then put back in the split's: the same rows in the same order
    return select_rows(select_rows(ds, order).map(encode, batched=True, remove_columns=drop), np.argsort(order))
