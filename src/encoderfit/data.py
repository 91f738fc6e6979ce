"""Any source -> validated train/validation/test splits with canonical columns and a label list.

Canonical columns: `text`, optional `text_pair`, and `labels` (integer class ids into `Splits.labels`).
Every check here fails with a `UserError` naming the file, split, row or column and the fix.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import datasets
from datasets import ClassLabel, Dataset, DatasetDict, concatenate_datasets, load_dataset, load_from_disk
from datasets.exceptions import DatasetGenerationError

from .config import DataArgs
from .errors import UserError, closest
from .recipes import RECIPES

log = logging.getLogger(__name__)
datasets.disable_progress_bars()
warnings.filterwarnings("ignore", message="Specifying null_placement", category=FutureWarning)  # pyarrow, via Dataset.sort

TEXT, PAIR, LABEL = "text", "text_pair", "labels"
FORMATS = {  # extension -> (datasets builder, builder options)
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t"}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
}
TEXT_FORMATS = {".csv", ".tsv", ".json", ".jsonl"}


@dataclass
class Splits:
    """The three splits a run uses, with canonical columns, and the ordered label names."""

    train: Dataset
    validation: Dataset
    test: Dataset
    labels: List[str]

    def as_dict(self) -> Dict[str, Dataset]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


# ---------------------------------------------------------------- reading


def decode_utf8(raw: bytes, where: str) -> str:
    """Bytes -> text, failing with the line number of the first byte that is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise UserError(f"{where}: line {line}: byte 0x{raw[err.start]:02x} is not valid UTF-8; re-save it as UTF-8 "
                        "(e.g. `iconv -f cp1252 -t utf-8`)") from None


def check_utf8(path: Path) -> None:
    decode_utf8(path.read_bytes(), str(path))


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


def read_table(path: Path) -> Dataset:
    """One local file -> Dataset, through the datasets library's own readers (after checks that name the line)."""
    ext = path.suffix.lower()
    if ext not in FORMATS:
        raise UserError(f"{path}: unsupported file type '{ext or path.name}'; use one of {', '.join(FORMATS)}")
    builder, options = FORMATS[ext]
    if ext in TEXT_FORMATS:
        check_utf8(path)
    if builder == "csv":
        check_header(path, options.get("delimiter", ","))
    if ext == ".jsonl":
        check_json_lines(path)
    try:
        return load_dataset(builder, data_files=str(path), split="train", **options)
    except (DatasetGenerationError, ValueError, OSError) as err:
        cause = err.__cause__ or err
        if "corresponds to no data" in str(err) or type(cause).__name__ == "EmptyDataError":
            raise UserError(f"{path}: no rows; it must hold at least one example") from None
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise UserError(f"{path}: cannot be read as {ext[1:].upper()} ({reason}); check the file's format") from None


def _split_files(directory: Path) -> Dict[str, Path]:
    found = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix.lower() in FORMATS:
            if path.stem in found:
                raise UserError(f"{directory}: two files for split '{path.stem}' ({found[path.stem].name}, {path.name}); keep one")
            found[path.stem] = path
    return found


def _load_hub(name: str, config_name: Optional[str]) -> DatasetDict:
    try:
        loaded = load_dataset(name, config_name)
    except (ConnectionError, OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0][:200]
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise UserError(
            f"data.source: cannot load '{name}' from the Hugging Face hub{offline}: {reason}. "
            "If the hub is unreachable, point --data.source at a local file, a directory of split files "
            f"or a save_to_disk directory, or use a built-in recipe ({', '.join(RECIPES)})"
        ) from None
    return loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})


def load_source(source: Optional[str], config_name: Optional[str] = None) -> DatasetDict:
    """A source string (recipe, file, directory, save_to_disk directory or hub name) -> DatasetDict."""
    if not source:
        raise UserError(
            "data.source is required: a CSV/TSV/JSON/JSONL/Parquet file, a directory of split files, "
            f"a hub dataset name, or a recipe ({', '.join(RECIPES)}); e.g. --data.source train.csv"
        )
    if source in RECIPES:
        return RECIPES[source]()
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            loaded = load_from_disk(str(path))
            return loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})
        files = _split_files(path)
        if not files:
            raise UserError(f"{path}: no data files found; put train.csv (or .tsv/.json/.jsonl/.parquet) and optionally validation/test files there")
        return DatasetDict({split: read_table(file) for split, file in files.items()})
    if path.is_file():
        return DatasetDict({"train": read_table(path)})
    if path.suffix or source.startswith((".", "/", "~")):
        raise UserError(f"data.source: file '{source}' does not exist; check the path (relative to {os.getcwd()})")
    if "/" not in source:
        hint = closest(source, RECIPES)
        if hint:
            raise UserError(f"data.source: unknown recipe '{source}'{hint}")
    return _load_hub(source, config_name)


# ---------------------------------------------------------------- validating


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip())


def canonical(ds: Dataset, data: DataArgs, where: str, need_labels: bool = True) -> Dataset:
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
    for name, column in ((TEXT, data.text_column), (PAIR, data.text_pair_column)):
        if name in ds.column_names:
            for i, value in enumerate(ds[name]):
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    raise UserError(f"{where}: row {i + 1}: empty text in column '{column}'; fill it in or remove the row")
                if not isinstance(value, str):
                    raise UserError(f"{where}: row {i + 1}: column '{column}' holds {type(value).__name__}, not text")
    return ds


def _label_strings(ds: Dataset, data: DataArgs, where: str) -> List[str]:
    """Each row's label as a string; surrounding whitespace stripped ("pos " is "pos"), and said so."""
    feature = ds.features[LABEL]
    out, stripped = [], 0
    for i, value in enumerate(ds[LABEL]):
        if _missing(value) or (isinstance(feature, ClassLabel) and value < 0):
            raise UserError(f"{where}: row {i + 1}: empty label in column '{data.label_column}'; fill it in or remove the row")
        if isinstance(feature, ClassLabel):
            out.append(feature.int2str(value))
        elif isinstance(value, float) and value.is_integer():
            out.append(str(int(value)))
        else:
            text = str(value)
            stripped += text != text.strip()
            out.append(text.strip())
    if stripped:
        log.info("%s: stripped surrounding whitespace from %d label(s)", where, stripped)
    return out


def report_near_duplicate_labels(labels: Sequence[str], where: str) -> None:
    """Warn about labels that differ only by case or inner whitespace ("Pos" and "pos"): probably one class."""
    groups: Dict[str, List[str]] = {}
    for name in labels:
        groups.setdefault(" ".join(name.split()).casefold(), []).append(name)
    for names in groups.values():
        if len(names) > 1:
            log.warning("warning: %s: labels %s differ only by case or whitespace and are trained as %d classes; "
                        "if they are one class, make them identical in the data", where, " and ".join(f"'{n}'" for n in names), len(names))


def _label_order(ds: Dataset, strings: Sequence[str]) -> List[str]:
    feature = ds.features[LABEL]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    unique = set(strings)
    if all(s.lstrip("-").isdigit() for s in unique):
        return [str(v) for v in sorted(int(s) for s in unique)]
    return sorted(unique)


def encode_labels(ds: Dataset, data: DataArgs, where: str, labels: List[str], strings: Optional[List[str]] = None) -> Dataset:
    """Replace label values by their id in `labels`; a value not in `labels` is an error naming its row."""
    strings = _label_strings(ds, data, where) if strings is None else strings
    index = {name: i for i, name in enumerate(labels)}
    for i, s in enumerate(strings):
        if s not in index:
            raise UserError(
                f"{where}: row {i + 1}: label '{s}' does not occur in the training labels {labels}; "
                "fix the label or add training examples for it"
            )
    ds = ds.remove_columns(LABEL).add_column(LABEL, [index[s] for s in strings])
    return ds.cast_column(LABEL, ClassLabel(names=labels))


def _dedupe(ds: Dataset) -> Dataset:
    keys = zip(ds[TEXT], ds[PAIR]) if PAIR in ds.column_names else ds[TEXT]
    seen, keep = set(), []
    for i, key in enumerate(keys):
        if key not in seen:
            seen.add(key)
            keep.append(i)
    if len(keep) < len(ds):
        log.info("dropped %d exact duplicate texts before splitting", len(ds) - len(keep))
    return ds.select(keep)


def _holdout(ds: Dataset, size: float, seed: int, single: str) -> tuple[Dataset, Dataset]:
    """Split off `size` of `ds`, stratified by label. A label with a single example cannot be stratified: it stays
    on the kept side, and `single` (a message with the label's name for %s) says so; every other label keeps at
    least one example on the kept side."""
    counts = Counter(ds[LABEL])
    names = ds.features[LABEL].names
    for label in sorted(label for label, n in counts.items() if n < 2):
        log.warning("warning: " + single, names[label])
    rows = [i for i, label in enumerate(ds[LABEL]) if counts[label] >= 2]
    pool = ds.select(rows)
    try:
        parts = pool.train_test_split(test_size=size, stratify_by_column=LABEL, seed=seed)
    except ValueError as err:  # fewer held-out rows than labels
        log.warning("warning: stratified split impossible (%s); splitting at random", str(err).splitlines()[0])
        parts = pool.train_test_split(test_size=size, seed=seed)
    keep, held = parts["train"], parts["test"]
    missing = sorted(set(pool[LABEL]) - set(keep[LABEL]))  # all of a label's examples landed on the held-out side
    if missing:
        back = [next(i for i, label in enumerate(held[LABEL]) if label == m) for m in missing]
        keep = concatenate_datasets([keep, held.select(back)])
        held = held.select([i for i in range(len(held)) if i not in set(back)])
    kept_whole = [i for i, label in enumerate(ds[LABEL]) if counts[label] < 2]
    if kept_whole:
        keep = concatenate_datasets([keep, ds.select(kept_whole)])
    return keep, held


def _check_holdout_sizes(n: int, data: DataArgs, missing: List[str]) -> None:
    """Every split made must get at least one example (sklearn otherwise fails deep inside with an empty split)."""
    sizes = {"validation": data.validation_size, "test": data.test_size}
    held = sum(sizes[r] for r in missing)
    smallest = min(sizes[r] for r in missing)
    if n * smallest < 1 or n * (1 - held) < 1:
        need = math.ceil(1 / min(smallest, 1 - held))
        raise UserError(
            f"{data.source}: {n} training examples are too few to make the {'/'.join(missing)} split(s) "
            f"({', '.join(f'{sizes[r]:.0%} {r}' for r in missing)}): each split needs at least one example, so at least "
            f"{need} are needed; add data, provide {'/'.join(missing)} files, or raise data.{missing[0]}_size"
        )


def prepare(data: DataArgs) -> Splits:
    """Load `data.source`, validate it, detect labels and return train/validation/test splits."""
    loaded = load_source(data.source, data.config_name)
    if data.train_split not in loaded:
        raise UserError(
            f"data.train_split: no split '{data.train_split}' in {data.source}{closest(data.train_split, loaded)}; "
            f"splits are {list(loaded)}"
        )
    names = {"train": data.train_split, "validation": data.validation_split, "test": data.test_split}
    raw = {role: canonical(loaded[name], data, f"{data.source} [{name}]") for role, name in names.items() if name in loaded}
    train_strings = _label_strings(raw["train"], data, f"{data.source} [{data.train_split}]")
    labels = _label_order(raw["train"], train_strings)
    report_near_duplicate_labels(labels, f"{data.source} [{data.train_split}]")
    if len(labels) < 2:
        raise UserError(f"{data.source}: only one label ({labels}) in column '{data.label_column}'; a classifier needs two or more")
    splits = {role: encode_labels(ds, data, f"{data.source} [{names[role]}]", labels, train_strings if role == "train" else None)
              for role, ds in raw.items()}

    missing = [role for role in ("validation", "test") if role not in splits]
    if missing:
        pool = _dedupe(splits["train"]) if data.dedupe else splits["train"]
        _check_holdout_sizes(len(pool), data, missing)
        sizes = {"validation": data.validation_size, "test": data.test_size}
        held = sum(sizes[r] for r in missing)
        splits["train"], rest = _holdout(pool, held, data.split_seed, "label '%s' has a single example: it stays in train "
                                         f"and {' and '.join(missing)} will have none of it; add examples of it")
        if len(missing) == 2:
            splits["validation"], splits["test"] = _holdout(rest, data.test_size / held, data.split_seed,
                                                            "label '%s' has a single held-out example: it goes to validation, "
                                                            "and test will have none of it")
        else:
            splits[missing[0]] = rest
        log.info("made %s split(s) from %s: %s", "/".join(missing), data.train_split, {r: len(s) for r, s in splits.items()})
    else:
        seen = set(splits["train"][TEXT])
        overlap = sum(t in seen for t in splits["test"][TEXT])
        if overlap:
            log.warning("%d test texts also occur in the training split; test metrics will be optimistic", overlap)

    if data.max_train_samples and data.max_train_samples < len(splits["train"]):
        splits["train"] = splits["train"].shuffle(seed=data.split_seed).select(range(data.max_train_samples))
    for role, ds in splits.items():
        if len(ds) == 0:
            raise UserError(f"{data.source}: the {role} split is empty; provide more data or change data.{role}_size")
    return Splits(labels=labels, **splits)


def tokenize(ds: Dataset, tokenizer, max_length: int) -> Dataset:
    """Token ids without padding (padding happens per batch), plus a `length` column for length-grouped batching."""
    pair = PAIR in ds.column_names

    def encode(batch):
        enc = tokenizer(batch[TEXT], batch[PAIR] if pair else None, truncation=True, max_length=max_length)
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        return enc

    return ds.map(encode, batched=True, remove_columns=[c for c in (TEXT, PAIR) if c in ds.column_names])
