"""A run's data: its source read (data/sources.py), the task settled (inferred from the labels when not given), the targets
encoded by the task, and train/validation/test splits made where the source lacks them (stratified by the task's
own rules, after dropping exact duplicates). The bridge between the data sources and the task registry."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Dict, List, Optional

from ..core.args import DataArgs
from ..data.arrow import file_order, sample_rows, select_rows
from ..data.sources import BATCH, LABEL, PAIR, TEXT, join_columns, load_source
from ..core.errors import UserError, closest

if TYPE_CHECKING:
    from datasets import Dataset

log = logging.getLogger(__name__)


SPLIT_ALIASES = {"validation": ("valid", "dev", "val"), "test": ("testing",)}  # names other distributions use


@dataclass
class Splits:
    """The three splits a run uses, with canonical columns, the task and its ordered output names."""

    train: Dataset
    validation: Dataset
    test: Dataset
    labels: List[str]
    task: str
    options: Dict[str, dict] = field(default_factory=dict)
    """The task's own settings ({task: {setting: value}}) the splits were read with."""
    columns: Dict[str, str] = field(default_factory=dict)
    """Column settings inferred from the data ({"text_pair_column": "text_pair"}), for the run's config to record."""

    def resolve(self, data: DataArgs) -> DataArgs:
        """`data` with the inferred column settings: what the run's config.yaml records, so later stages read the same."""
        return replace(data, **self.columns)

    def as_dict(self) -> Dict[str, Dataset]:
        return {"train": self.train, "validation": self.validation, "test": self.test}

    def fingerprints(self, like: Optional[Dict] = None) -> Dict[str, Dict]:
        """Each split's size and SHA-256 of its examples in order (text, pair, target): recorded by training, so a
        later `eval` knows whether re-reading the source gave the same splits. The SHA-256 is of the rows' 128-bit
        hashes in the split's order (`row_hashes`, read in the file's order: a split read in its own shuffled order
        re-reads pages endlessly once the source outgrows memory); `like`, fingerprints a run recorded, is matched
        in its own scheme (runs before 0.2.2 hashed the rows' JSON read in the split's order)."""
        import hashlib

        old = bool(like) and any("scheme" not in entry for entry in like.values())
        out = {}
        for role, ds in self.as_dict().items():
            columns = [c for c in (TEXT, PAIR, LABEL) if c in ds.column_names]
            if old:
                digest = hashlib.sha256()
                for row in rows_in_batches(ds, columns):
                    digest.update(json.dumps(row, ensure_ascii=False, default=str).encode() + b"\n")
                out[role] = {"examples": len(ds), "sha256": digest.hexdigest()}
            else:
                digest = hashlib.sha256(row_hashes(ds, columns).tobytes())
                out[role] = {"examples": len(ds), "sha256": digest.hexdigest(), "scheme": "row-hashes"}
        return out

    def baseline_sample(self, max_rows: Optional[int], seed: int) -> "Splits":
        """These splits with train cut to a seeded sample of `max_rows` examples (report.baseline_max_rows), so the
        baseline fits in memory whatever the source's size; validation and test stay whole (it is scored on them)."""
        if not max_rows or len(self.train) <= max_rows:
            return self
        return replace(self, train=sample_rows(self.train, max_rows, seed))


def rows_in_batches(ds: "Dataset", columns: List[str]):
    """Each row of `ds` as a tuple of `columns`, read BATCH rows at a time (never the whole column as a list)."""
    for batch in ds.select_columns(columns).iter(batch_size=BATCH):
        yield from zip(*(batch[c] for c in columns))


def row_hashes(ds: "Dataset", columns: List[str]):
    """A 128-bit BLAKE2 digest of each row's `columns` (numpy 'S16', 16 bytes a row): what duplicates and overlaps are
    found by at any size (a collision of two different rows: ~n^2 / 2^129, never in practice)."""
    import hashlib

    import numpy as np

    order = file_order(ds)  # read in the file's order (a split's own order reads all over it), each digest put in place
    digests = np.empty(len(ds), dtype="S16")
    done, batch = 0, bytearray()
    for row in rows_in_batches(ds if order is None else select_rows(ds, order), columns):
        batch += hashlib.blake2b(json.dumps(row, ensure_ascii=False, default=str).encode(), digest_size=16).digest()
        if len(batch) == 16 * BATCH:
            done = _place(digests, order, done, batch)
    _place(digests, order, done, batch)
    return digests


def _place(digests, order, done: int, batch: bytearray) -> int:
    """Row digests `done`.. of the file-order pass written to their rows of the split (`order`: file position -> split
    row, None when they are the same); the batch emptied. Returns the rows done."""
    import numpy as np

    values = np.frombuffer(bytes(batch), dtype="S16")
    end = done + len(values)
    if order is None:
        digests[done:end] = values
    else:
        digests[order[done:end]] = values
    batch.clear()
    return end


def warn_overlap(train: "Dataset", test: "Dataset") -> int:
    """Warn of test examples whose input also occurs in training, what makes test metrics optimistic: the text, or
    for pairs the pair (one premise in many pairs is how entailment and QA sets are made); returns their count."""
    import numpy as np

    columns = [c for c in (TEXT, PAIR) if c in test.column_names and c in train.column_names]
    overlap = int(np.isin(row_hashes(test, columns), row_hashes(train, columns)).sum())  # by hashes: any size
    if overlap and len(columns) == 2:
        firsts = int(np.isin(row_hashes(test, [TEXT]), row_hashes(train, [TEXT])).sum())
        log.warning("%d of %d test pairs (text, text_pair) also occur in the training split; test metrics will be optimistic "
                    "(%d test pairs share their first text with a training pair, as is usual in a pair task)",
                    overlap, len(test), firsts)
    elif overlap:
        log.warning("%d of %d test texts also occur in the training split; test metrics will be optimistic", overlap, len(test))
    return overlap


def _dedupe(ds):
    """The first of each set of exact duplicates (text, or text and pair), in order: found by row hashes, 16 bytes a row."""
    import numpy as np

    repeats = repeated_rows(row_hashes(ds, [c for c in (TEXT, PAIR) if c in ds.column_names]))
    if not len(repeats):
        return ds
    log.info("dropped %d exact duplicate texts before splitting", len(repeats))
    return select_rows(ds, np.delete(np.arange(len(ds)), repeats))


def repeated_rows(digests):
    """Positions of the rows whose 16-byte digest occurred earlier (each set of equal digests keeps its first), sorted.
    Sorted by the digests' first 8 bytes (a uint64 view: 17 bytes a row at once, where np.unique on the 16-byte
    strings took about 60: 370 MiB at 6M rows, the prepare stage's peak), rows whose prefixes tie compared whole."""
    import numpy as np

    if len(digests) < 2:
        return np.empty(0, dtype=np.int64)
    prefix = np.ascontiguousarray(digests).view(np.uint64)[::2]
    order = np.argsort(prefix, kind="stable")  # ties in row order: the first of each set comes first
    tied = np.flatnonzero(prefix[order[1:]] == prefix[order[:-1]])  # sorted position i+1 ties with i
    if bool(np.all(digests[order[tied + 1]] == digests[order[tied]])):  # every tie a true duplicate: vectorised
        return np.sort(order[tied + 1])
    repeats = []  # a 64-bit prefix collision: each group of ties compared whole
    for start in tied[np.r_[True, np.diff(tied) > 1]] if len(tied) else []:  # each run of ties: one group
        end = start + 1
        while end < len(order) and prefix[order[end]] == prefix[order[start]]:
            end += 1
        seen = set()
        for row in order[start:end]:
            key = digests[row]
            if key in seen:
                repeats.append(int(row))
            seen.add(key)
    return np.sort(np.asarray(repeats, dtype=np.int64))


def _check_holdout_sizes(n: int, data: DataArgs, missing: List[str], rows: Optional[int] = None) -> None:
    """Every split made must get at least one example (sklearn otherwise fails deep inside with an empty split). `rows`:
    the examples before exact duplicates were dropped, when the duplicates are what left too few."""
    sizes = {"validation": data.validation_size, "test": data.test_size}
    held = sum(sizes[r] for r in missing)
    smallest = min(sizes[r] for r in missing)
    if n * smallest < 1 or n * (1 - held) < 1:
        need = math.ceil(1 / min(smallest, 1 - held))
        if rows is not None and rows > n and rows * smallest >= 1 and rows * (1 - held) >= 1:
            same = f"the {rows} training examples are all identical" if n == 1 else f"only {n} of the {rows} training examples are distinct"
            raise UserError(
                f"{data.source}: {same} (exact duplicates are dropped before splitting, "
                f"so no {'/'.join(missing)} example could be kept apart from training); at least {need} distinct examples "
                f"are needed: add different examples, or provide {'/'.join(missing)} files")
        raise UserError(
            f"{data.source}: {n} training examples are too few to make the {'/'.join(missing)} split(s) "
            f"({', '.join(f'{sizes[r]:.0%} {r}' for r in missing)}): each split needs at least one example, so at least "
            f"{need} are needed; add data, provide {'/'.join(missing)} files, or raise data.{missing[0]}_size"
        )


def prepare(data: DataArgs, task: Optional[str] = None, options: Optional[Dict[str, dict]] = None, *,
            settle: bool = True, holdout: bool = True) -> Splits:
    """Load `data.source`, validate it, settle the task (inferred from the labels when None) with its own settings
    (`options`: {task: {setting: value}}), encode the targets and return train/validation/test splits.

    settle: infer unset columns from the data (a pair from well-known column names; Splits.columns) and warn of text
    columns no setting reads; False for a run's recorded settings (eval, export, a distillation's teacher).
    holdout: make the validation/test splits the source lacks; False leaves every example in train (and those splits
    empty): for a caller that pools the splits and cuts its own (cv)."""
    from ..tasks import Task, get_task, resolve_task, suggest_task

    loaded = load_source(data.source, data.config_name)
    if data.train_split not in loaded:
        raise UserError(
            f"data.train_split: no split '{data.train_split}' in {data.source}{closest(data.train_split, loaded)}; "
            f"splits are {list(loaded)}"
        )
    names = {"train": data.train_split, "validation": data.validation_split, "test": data.test_split}
    for role, aliases in SPLIT_ALIASES.items():  # CoNLL-2003 ships valid.txt, GLUE dev.tsv: read them as the default name
        if names[role] == role and role not in loaded:
            names[role] = next((a for a in aliases if a in loaded), role)
    where = {role: f"{data.source} [{name}]" for role, name in names.items()}
    requested = get_task(task, "train", options or {}) if task else None  # a task may read its own shapes of data (token lists, spans)
    settled = (requested or Task()).targets.settle_columns(loaded[names["train"]], data, where["train"]) if settle else data
    columns = {k: getattr(settled, k) for k in ("text_column", "text_pair_column") if getattr(settled, k) != getattr(data, k)}
    data = settled
    if not task:  # QA rows (question, context) without --task: say --task qa, not a column
        suggest_task(loaded[names["train"]].column_names, data.text_column, where["train"])
    raw = {role: (requested or Task()).targets.canonical(join_columns(loaded[name], data.join_columns, data.text_column, where[role]),
                                                 data, where[role]) for role, name in names.items() if name in loaded}
    chosen = resolve_task(task, raw["train"], data.label_separator, data.label_column, options)
    targets = {role: chosen.targets.read_targets(ds, data, where[role]) for role, ds in raw.items()}
    labels = chosen.targets.label_names(targets["train"], raw["train"].features[LABEL], chosen.targets.target_column(raw["train"], data),
                                where["train"])
    splits = {role: chosen.targets.encode(ds, targets[role], labels, where[role]) for role, ds in raw.items()}

    missing = [role for role in ("validation", "test") if role not in splits]
    if missing and not holdout:
        splits["train"] = _dedupe(splits["train"]) if data.dedupe else splits["train"]
        splits.update({role: splits["train"].select([]) for role in missing})
    elif missing:
        pool = _dedupe(splits["train"]) if data.dedupe else splits["train"]
        _check_holdout_sizes(len(pool), data, missing, len(splits["train"]))
        sizes = {"validation": data.validation_size, "test": data.test_size}
        held = sum(sizes[r] for r in missing)
        splits["train"], rest = chosen.targets.holdout(pool, held, data.split_seed, "label '%s' has a single example: it stays in train "
                                               f"and {' and '.join(missing)} will have none of it; add examples of it")
        if len(missing) == 2:
            splits["validation"], splits["test"] = chosen.targets.holdout(rest, data.test_size / held, data.split_seed,
                                                                  "label '%s' has a single held-out example: it goes to "
                                                                  "validation, and test will have none of it")
        else:
            splits[missing[0]] = rest
        log.info("made %s split(s) from %s: %s", "/".join(missing), data.train_split, {r: len(s) for r, s in splits.items()})
    else:
        warn_overlap(splits["train"], splits["test"])

    if data.max_train_samples and data.max_train_samples < len(splits["train"]):
        splits["train"] = sample_rows(splits["train"], data.max_train_samples, data.split_seed)
    for role, ds in splits.items():
        if len(ds) == 0 and (holdout or role not in missing):
            raise UserError(f"{data.source}: the {role} split is empty; provide more data or change data.{role}_size")
    return Splits(labels=labels, task=chosen.name, options=chosen.options_dict(), columns=columns, **splits)
