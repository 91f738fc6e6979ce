"""Reading a datasets.Dataset's columns and rows through Arrow at any size: a split is a shuffled selection of its
source's Arrow file (an indices mapping), which datasets' own column access reads one row at a time."""

from __future__ import annotations


def as_array(values):
    """np.asarray(values); a datasets Column of numbers without missing values is read through Arrow instead."""
    import numpy as np
    import pyarrow as pa

    source, name = getattr(values, "source", None), getattr(values, "column_name", None)
    if name is not None and hasattr(source, "with_format"):
        column = arrow_column(source, name)
        kind = column.type
        if column.null_count == 0 and (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
            return column.to_numpy()
    return np.asarray(values)


def arrow_column(ds, name: str):
    """One column of a datasets.Dataset as a pyarrow ChunkedArray, its rows in the dataset's order. A dataset that is a
    selection of another (a split: `select`, `shuffle`) holds an indices mapping, through which datasets' own
    `with_format("arrow")[name]` gathers one single-row slice per row (about 500 bytes of Python objects a row at
    once: 300 MiB for 600k rows, measured with memray); the rows are taken through the indices instead (`take_rows`)."""
    indices = getattr(ds, "_indices", None)  # datasets' indices mapping: a table of one uint64 column, or None
    table = getattr(getattr(ds, "data", None), "table", None)
    if table is None or name not in table.column_names:  # not a datasets Arrow table as known: its own way
        return ds.with_format("arrow")[name]
    column = table.column(name)
    return column if indices is None else take_rows(column, indices.column(0))


def take_rows(column, rows, memory_pool=None):  # rows: a pyarrow or numpy array of row numbers
    """`column.take(rows)` for a ChunkedArray without joining its chunks first: pyarrow's own take concatenates every
    chunk into one new array before taking (pyarrow 25 here: 310 MB allocated to take 6,000 rows of a 310 MB column),
    which for a split of a large memory-mapped source copies the whole column, text and all, into memory (1 GiB at a 1
    GB source: the evaluation's peak, docs/scaling.md). Here each chunk gives its own rows, put back in `rows`' order.
    A column of numbers is joined (a few bytes a row), which is cheaper than grouping the rows by chunk.
    `memory_pool`: where the result is allocated (pyarrow's default pool when None)."""
    import itertools

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    fixed = pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_boolean(column.type)
    if column.num_chunks <= 1 or len(rows) == 0 or fixed:  # nothing to join, or numbers (8 bytes a row): pyarrow's own
        return pc.take(column, rows if isinstance(rows, (pa.Array, pa.ChunkedArray)) else pa.array(rows, pa.int64()),
                       memory_pool=memory_pool)
    rows = (rows.to_numpy() if isinstance(rows, (pa.Array, pa.ChunkedArray)) else np.asarray(rows)).astype(np.int64, copy=False)
    starts = np.cumsum([0] + [len(chunk) for chunk in column.chunks])
    if rows.min() < 0 or rows.max() >= starts[-1]:
        raise IndexError(f"row index out of bounds for a column of {starts[-1]} rows")
    chunk_of = np.searchsorted(starts, rows, side="right") - 1
    order = np.argsort(chunk_of, kind="stable")  # the rows grouped by chunk, each group in the given order
    bounds = np.searchsorted(chunk_of[order], np.arange(column.num_chunks + 1))
    pieces = [pc.take(column.chunk(c), pa.array(rows[order[lo:hi]] - starts[c]), memory_pool=memory_pool)
              for c, (lo, hi) in enumerate(itertools.pairwise(bounds)) if hi > lo]
    gathered = pa.chunked_array(pieces, type=column.type)  # the rows in `order`: as many as asked for, no more
    if np.array_equal(order, np.arange(len(order))):
        return gathered
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return pc.take(gathered, pa.array(inverse), memory_pool=memory_pool)


MAPPED_ROWS = 1 << 20
"""A selection of this many rows or more keeps its indices in a memory-mapped file in the datasets cache (8 bytes a
row, file-backed and reclaimable, as datasets' own map outputs are) rather than in the process's memory."""


def select_rows(ds, rows):
    """`ds.select(rows)` for an array of row positions in `ds`, without datasets' Python list of them: datasets 5
    turns the positions into a list of numpy scalars and hashes it for the fingerprint (32 bytes a row of Python
    objects at once, measured with tracemalloc, besides the Arrow copies; and seconds a million rows). The indices mapping is made here through Arrow (the positions taken through `ds`'s
    own mapping, as datasets does), fingerprinted by the parent's fingerprint and the positions' bytes; a contiguous
    run of rows is a slice (datasets' own select), as is anything this does not know how to map."""
    import hashlib

    import numpy as np
    import pyarrow as pa

    rows = np.asarray(rows)
    n = len(rows)
    new = getattr(ds, "_new_dataset_with_indices", None)
    if new is None or n == 0 or len(ds) == 0 or rows.dtype.kind not in "iu" or ds.list_indexes():
        return ds.select(rows.tolist() if rows.dtype.kind in "iu" else rows)
    first, low, high = int(rows[0]), int(rows.min()), int(rows.max())
    if low < 0 or high >= len(ds):
        raise IndexError(f"row {low if low < 0 else high} out of range for a dataset of {len(ds)} rows")
    if high - low == n - 1 and first == low and bool(np.all(np.diff(rows) == 1)):
        return ds.select(range(first, first + n))  # contiguous: a slice of the table, no mapping
    indices = getattr(ds, "_indices", None)
    mapped = pa.array(rows).cast(pa.uint64()) if indices is None else take_rows(indices.column(0), rows)
    table = pa.Table.from_arrays([mapped], names=["indices"])
    del mapped
    digest = hashlib.blake2b(ds._fingerprint.encode(), digest_size=8)
    digest.update(np.ascontiguousarray(rows, dtype=np.int64).data)
    fingerprint = digest.hexdigest()
    cached = [f["filename"] for f in ds.cache_files]
    path = _mapped_indices(table, cached[0], fingerprint) if n >= MAPPED_ROWS and cached else None
    if path is not None:
        out = new(indices_cache_file_name=path, fingerprint=fingerprint)
    else:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        del table
        out = new(indices_buffer=sink.getvalue(), fingerprint=fingerprint)
    form = ds.format
    if form.get("type") is not None or form.get("columns") is not None:  # datasets' select keeps the format
        out.set_format(type=form["type"], columns=form["columns"], output_all_columns=form["output_all_columns"],
                       **form["format_kwargs"])
    return out


def _mapped_indices(table, beside: str, fingerprint: str):
    """An indices table written (atomically) beside the dataset's cache file `beside`, named by its fingerprint (the
    same parent and rows give the same file: a re-run reuses it); None where that folder cannot be written."""
    import os
    import tempfile

    import pyarrow as pa

    path = os.path.join(os.path.dirname(beside), f"indices-{fingerprint}.arrow")
    if os.path.isfile(path):
        return path
    try:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    except OSError:  # a read-only cache (a dataset saved elsewhere): the indices stay in memory
        return None
    os.close(fd)
    try:
        with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def sample_rows(ds, rows: int, seed: int):
    """The rows of `ds.shuffle(seed=seed).select(range(rows))` (the same generator and permutation), selected by
    `select_rows`: datasets' shuffle maps every row first, through a Python list of them."""
    import numpy as np

    return select_rows(ds, np.random.default_rng(seed).permutation(len(ds))[:rows])


def file_order(ds):
    """Positions that visit `ds`'s rows in the order they lie in its Arrow file, or None when they already do. A split
    is a shuffled selection of its source: read in the split's order, every batch touches rows all over the file, which
    under memory pressure (the page cache smaller than the file) re-reads the same pages again and again; measured
    here, a 1 GB source under a 1 GiB memory cap had tokenised 12% of its training split after 14 minutes."""
    import numpy as np

    indices = getattr(ds, "_indices", None)  # datasets' indices mapping (see arrow_column)
    if indices is None or len(ds) < 2:
        return None
    physical = indices.column(0).to_numpy()
    return None if bool(np.all(physical[1:] >= physical[:-1])) else np.argsort(physical, kind="stable")


def column_values(ds, name: str):
    """One column of a datasets.Dataset as a numpy array (`as_array`): `ds[name]` is a lazy Column whose iteration
    and indexing go a row at a time through the Python formatter (minutes at millions of rows)."""
    return as_array(ds[name])


def text_column(ds, name: str) -> list:
    """A column of strings (texts, pairs) as a Python list in `ds`'s order, read from its Arrow file in the file's
    order (`file_order`) and put back: a split's validation, test or review rows read in the split's own order touch
    pages all over the file. A column that is not of strings is read as datasets reads it."""
    feature = ds.features.get(name)
    if getattr(feature, "dtype", None) not in ("string", "large_string"):
        return list(ds[name])
    order = file_order(ds)
    if order is None:
        return arrow_column(ds, name).to_pylist()
    out: list = [None] * len(order)
    for position, value in zip(order.tolist(), arrow_column(select_rows(ds, order), name).to_pylist()):
        out[position] = value
    return out
