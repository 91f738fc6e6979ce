"""Pre-training corpora larger than memory: text files read a line at a time, packed blocks in memory-mapped Arrow.

`encoderfit pretrain` reads its corpus in memory (corpus.py: every document in a list, shuffled, packed as one
stream) unless `corpus.streaming` says otherwise: `true`, or `auto` when the sources are text files (.txt/.md/.rst,
.gz), folders of them or JSONL/CSV/TSV/Parquet files, and their files total more than STREAM_ABOVE_BYTES. Then:

1. Documents are read a line at a time (tables a batch of rows at a time) and split as corpus.py splits them; short
   ones are dropped and counted; exact duplicates are dropped by a Bloom filter of BLOOM_BYTES (fixed memory; the
   chance that a unique document is taken for a duplicate is estimated and written to metrics.json); unreadable
   table rows are counted and the first few named in the log. A document is held out for validation by its hash
   (validation_size of them), at most `corpus.max_validation_documents` (the held-out set stays in memory: it is
   masked once and scored at every evaluation). Training documents are written to an Arrow file in file order (no
   global shuffle: the Trainer draws blocks in random order) and a uniform reservoir sample of
   `corpus.tokenizer_sample` of them is kept for training the tokenizer.
2. The training documents are tokenised a batch at a time into one stream cut into full blocks, exactly as
   tasks/mlm/task.py `pack` cuts them (only the stream's last partial block is dropped), written to a second Arrow
   file that the Trainer reads memory-mapped; the unigram baseline's token counts are summed on the way.

Both files live in the run's hidden directory (corpus/), with a manifest of the sources (path, size, modification
time) and settings: a resumed run of the same corpus reads them back instead of reading the sources again.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from ..core.errors import UserError
from .corpus import CORPORA, CorpusArgs, is_text_file

log = logging.getLogger(__name__)
STREAM_ABOVE_BYTES = 1 << 30  # corpus.streaming auto: stream when the sources' files total more than 1 GiB
BLOOM_BYTES = 64 << 20  # the duplicate filter's fixed size (512 Mbit)
BLOOM_HASHES = 4
TABLES = (".jsonl", ".csv", ".tsv", ".parquet")
FOLDER = "corpus"
BATCH = 1000  # documents tokenised at a time (the fast tokenizer runs them in Rust threads)


@dataclass
class Plan:
    """How the corpus is read: `files` streamed, or (None) in memory; `why`, for the log."""

    files: Optional[List[Path]]
    why: str


def plan(args: CorpusArgs) -> Plan:
    """Stream or read in memory (see the module docstring); said in the log when the corpus is read (packed_corpus),
    so that a bad option or source is refused in one line before anything else is said."""
    files, held_whole = [], []
    for source in args.sources:
        path = Path(source).expanduser()
        if source in CORPORA or not path.exists() or (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            held_whole.append(source)
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_text_file(p))
            if not found:
                raise UserError(f"{path}: no .txt/.md/.rst(.gz) files in this directory")
            files += found
        elif is_text_file(path) or path.suffix.lower() in TABLES:
            files.append(path)
        else:
            held_whole.append(source)
    size = sum(p.stat().st_size for p in files)
    if args.streaming is True:
        if held_whole:
            raise UserError(f"corpus.streaming true: {held_whole[0]} is not a text file, folder of text files or "
                            f"JSONL/CSV/TSV/Parquet file, so it cannot be read a line at a time; drop --corpus.streaming "
                            "true (it is read in memory) or give such files")
        return Plan(files, f"corpus: streamed (corpus.streaming true): {len(files)} files, {size / 1e9:.2f} GB")
    if args.streaming == "auto" and not held_whole and size > STREAM_ABOVE_BYTES:
        return Plan(files, f"corpus: streamed (corpus.streaming auto: {len(files)} files, {size / 1e9:.2f} GB, more than "
                           f"{STREAM_ABOVE_BYTES / 1e9:.2f} GB)")
    why = ("corpus.streaming false" if args.streaming is False else
           f"{held_whole[0]} is held whole" if held_whole else f"{size / 1e9:.2f} GB, at most {STREAM_ABOVE_BYTES / 1e9:.2f} GB")
    return Plan(None, f"corpus: read in memory ({why}; --corpus.streaming true streams text files)")


class BloomFilter:
    """Seen-before test in fixed memory: no false negatives; a false positive (a unique document taken for seen)
    with the probability `false_positive_rate()` estimates."""

    def __init__(self, size_bytes: int = BLOOM_BYTES, hashes: int = BLOOM_HASHES):
        self.bits, self.hashes, self.n = bytearray(size_bytes), hashes, 0
        self.nbits = size_bytes * 8

    def seen(self, digest: bytes) -> bool:
        """Whether `digest` (16 bytes or more) was added before; adds it."""
        found = True
        for i in range(self.hashes):
            bit = int.from_bytes(digest[4 * i: 4 * i + 4], "little") % self.nbits
            byte, mask = bit >> 3, 1 << (bit & 7)
            if not self.bits[byte] & mask:
                found = False
                self.bits[byte] |= mask
        self.n += not found
        return found

    def false_positive_rate(self) -> float:
        return (1 - math.exp(-self.hashes * self.n / self.nbits)) ** self.hashes


def _lines(path: Path) -> Iterator[str]:
    """A text file's lines, split as core.files.split_lines splits (\\n, \\r\\n, \\r alone), read a line at a
    time (a file whose only line ends are lone \\r, as old Macs wrote, is one read); one line naming the line that
    is not UTF-8."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        if b"\x00" in handle.read(8192):
            raise UserError(f"{path}: a binary file, not text; give text files (.txt/.md/.rst) or a table with a text column")
    with opener(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise UserError(f"{path}: line {number}: byte 0x{raw[err.start]:02x} is not valid UTF-8; re-save it as "
                                "UTF-8") from None
            text = text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text
            if "\r" in text:
                parts = text.split("\r")
                yield from parts[:-1] if parts[-1] == "" and not raw.endswith(b"\n") else parts
            else:
                yield text


def _text_documents(path: Path, how: str) -> Iterator[str]:
    """A text file's documents, split as corpus.split_documents splits the whole text."""
    block: List[str] = []
    for line in _lines(path):
        if how == "lines":
            if line.strip():
                yield line.strip()
        elif line == "":
            if block:
                yield " ".join(" ".join(block).split())
            block = []
        elif line.strip() or block:
            block.append(line)
    if block and " ".join(block).strip():
        yield " ".join(" ".join(block).split())


def _table_documents(path: Path, args: CorpusArgs, stats: Dict) -> Iterator[str]:
    from ..runs.predict_stream import Reader

    for _, where, number, (text, _, reason, error) in Reader([path], args.text_column, None, None, BATCH):
        if error:
            stats["unreadable_rows"] += 1
            if stats["unreadable_rows"] <= 5:
                log.warning("corpus: %s %s %d skipped: %s", path, where, number, reason)
        elif reason is None:
            yield text


@dataclass
class Streamed:
    """What the streaming passes leave in the run's corpus/ folder, and what they counted."""

    folder: Path
    validation_docs: List[str]
    sample: List[str]
    stats: Dict
    tokens: int = 0
    """The training stream's length in tokens (as `pack` counts it)."""
    counts: Optional[np.ndarray] = None
    """Each token's count in the training blocks (the unigram baseline's)."""

    @property
    def documents_file(self) -> Path:
        return self.folder / "documents.arrow"

    @property
    def blocks_file(self) -> Path:
        return self.folder / "blocks.arrow"


def read_documents(args: CorpusArgs, files: List[Path], folder: Path) -> Streamed:
    """Pass 1: the sources' documents filtered, deduplicated and held out; training documents to documents.arrow."""
    import pyarrow as pa

    folder.mkdir(parents=True, exist_ok=True)
    stats = {"files": len(files), "bytes": sum(p.stat().st_size for p in files), "documents_read": 0, "too_short": 0,
             "duplicates": 0, "unreadable_rows": 0, "train": 0, "validation": 0, "validation_cap_reached": False,
             "characters_train": 0}
    bloom, rng = BloomFilter(), random.Random(args.seed)
    validation, sample, pending = [], [], []
    schema = pa.schema([("text", pa.large_string())])
    limit = args.max_documents
    with pa.OSFile(str(folder / "documents.arrow"), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for path in files:
            if limit is not None and stats["train"] + len(validation) >= limit:
                break  # the files after it are not opened
            docs = _text_documents(path, args.documents) if is_text_file(path) else _table_documents(path, args, stats)
            for doc in docs:
                if limit is not None and stats["train"] + len(validation) >= limit:
                    break
                stats["documents_read"] += 1
                doc = doc.strip()
                if len(doc) < args.min_characters:
                    stats["too_short"] += 1
                    continue
                digest = hashlib.blake2b(doc.encode("utf-8"), digest_size=20).digest()
                if bloom.seen(digest):
                    stats["duplicates"] += 1
                    continue
                held = int.from_bytes(digest[16:20], "little") / 2 ** 32 < args.validation_size
                if held and len(validation) < args.max_validation_documents:
                    validation.append(doc)
                    continue
                stats["validation_cap_reached"] |= held
                stats["train"] += 1
                stats["characters_train"] += len(doc)
                if len(sample) < args.tokenizer_sample:  # reservoir sampling (Algorithm R): uniform over the training documents
                    sample.append(doc)
                else:
                    j = rng.randrange(stats["train"])
                    if j < args.tokenizer_sample:
                        sample[j] = doc
                pending.append(doc)
                if len(pending) >= 10 * BATCH:
                    writer.write_batch(pa.record_batch([pa.array(pending, pa.large_string())], schema=schema))
                    pending = []
        if pending:
            writer.write_batch(pa.record_batch([pa.array(pending, pa.large_string())], schema=schema))
    stats["validation"], stats["tokenizer_sample"] = len(validation), len(sample)
    stats["duplicate_filter"] = {"kind": "Bloom filter", "bytes": BLOOM_BYTES, "hashes": BLOOM_HASHES,
                                 "false_positive_rate": bloom.false_positive_rate()}
    if stats["train"] < 1 or not validation:
        raise UserError(f"corpus {args.sources}: {stats['train']} training and {len(validation)} held-out document(s) "
                        f"of at least {args.min_characters} characters; pre-training needs text (and a held-out share: "
                        "raise --corpus.validation_size)")
    if limit is not None and stats["train"] + stats["validation"] >= limit:
        log.info("corpus: stopped at corpus.max_documents %d (streaming takes the first ones in file order)", limit)
    log.info("corpus: %d documents read from %d files; dropped %d shorter than %d characters, %d duplicates (Bloom filter "
             "of %d MiB: a unique document is taken for a duplicate with probability %.1g), %d unreadable rows; %d "
             "training documents (%.1f M characters), %d held out%s; tokenizer sample %d documents",
             stats["documents_read"], len(files), stats["too_short"], args.min_characters, stats["duplicates"],
             BLOOM_BYTES >> 20, stats["duplicate_filter"]["false_positive_rate"], stats["unreadable_rows"], stats["train"],
             stats["characters_train"] / 1e6, len(validation),
             f" (capped at corpus.max_validation_documents {args.max_validation_documents})"
             if stats["validation_cap_reached"] else "", len(sample))
    return Streamed(folder, validation, sample, stats)


def write_blocks(streamed: Streamed, tokenizer, block_size: int, where: str) -> None:
    """Pass 2: documents.arrow tokenised into full blocks in blocks.arrow (as `pack` cuts them), the stream's tokens
    and the blocks' token counts (the unigram baseline's) kept in `streamed`."""
    import pyarrow as pa

    body = block_size - 2
    sep, cls = tokenizer.sep_token_id, tokenizer.cls_token_id
    if sep is None or cls is None:
        raise UserError(f"{where}: the tokenizer has no [CLS]/[SEP] (or <s>/</s>) tokens; an encoder's tokenizer needs both")
    counts = np.zeros(len(tokenizer), dtype=np.int64)
    carry, total, blocks = np.zeros(0, dtype=np.int64), 0, 0
    schema = pa.schema([("input_ids", pa.list_(pa.int32())), ("length", pa.int64())])
    # read, not memory-mapped: a map's pages would stay resident in this process (RSS) as the whole file is read
    with pa.OSFile(str(streamed.documents_file), "rb") as source, pa.OSFile(str(streamed.blocks_file), "wb") as sink, \
            pa.ipc.new_stream(sink, schema) as writer:
        for batch in pa.ipc.open_stream(source):
            texts = batch.column(0).to_pylist()
            for start in range(0, len(texts), BATCH):
                ids = tokenizer(texts[start:start + BATCH], add_special_tokens=False, verbose=False)["input_ids"]
                stream = np.concatenate([carry, *[np.asarray(i + [sep], dtype=np.int64) for i in ids]])
                total += len(stream) - len(carry)
                n = len(stream) // body
                carry = stream[n * body:]
                if n == 0:
                    continue
                full = np.concatenate([np.full((n, 1), cls), stream[: n * body].reshape(n, body), np.full((n, 1), sep)], axis=1)
                counts += np.bincount(full.ravel(), minlength=len(counts))[: len(counts)]
                flat = pa.array(full.ravel().astype(np.int32))
                offsets = pa.array(np.arange(0, (n + 1) * block_size, block_size, dtype=np.int32))
                writer.write_batch(pa.record_batch([pa.ListArray.from_arrays(offsets, flat),
                                                    pa.array(np.full(n, block_size, dtype=np.int64))], schema=schema))
                blocks += n
    if blocks == 0:
        raise UserError(f"{where}: {total} tokens, less than one block of {block_size}; give more text or a smaller "
                        f"--mlm.block_size")
    streamed.stats.update(tokens=total, blocks=blocks)
    streamed.tokens, streamed.counts = total, counts


def manifest(args: CorpusArgs, files: List[Path], tokenizer_key: str, block_size: int) -> Dict:
    from ..runs.predict_stream import fingerprint

    return {"files": fingerprint(files), "corpus": asdict(args), "tokenizer": tokenizer_key, "block_size": block_size}


def build(args: CorpusArgs, files: List[Path], workdir: Path, block_size: int,
          tokenizer_for: Callable[[List[str]], object], where: str) -> Tuple[object, Streamed]:
    """Both passes, their results saved in workdir/corpus/ for a resumed start: (the run's tokenizer, Streamed).
    `tokenizer_for(sample)` gives the run's tokenizer (trained on the sample, or reused)."""
    streamed = read_documents(args, files, workdir / FOLDER)
    tok = tokenizer_for(streamed.sample)
    streamed.sample = []
    write_blocks(streamed, tok, block_size, where)
    folder = streamed.folder
    np.save(folder / "counts.npy", streamed.counts)
    (folder / "validation.jsonl").write_text("".join(json.dumps(d) + "\n" for d in streamed.validation_docs), encoding="utf-8")
    (folder / "done.json").write_text(json.dumps({"manifest": manifest(args, files, tokenizer_key(tok), block_size),
                                                  "stats": streamed.stats, "tokens": streamed.tokens}))
    return tok, streamed


def read_back(args: CorpusArgs, files: List[Path], workdir: Path, tok, block_size: int) -> Optional[Streamed]:
    """The streamed corpus an earlier start (or the main process) wrote for these sources, settings and tokenizer;
    None if there is none or it was made otherwise."""
    folder = workdir / FOLDER
    if not (folder / "done.json").is_file():
        return None
    saved = json.loads((folder / "done.json").read_text())
    if saved["manifest"] != manifest(args, files, tokenizer_key(tok), block_size):
        return None
    validation = [json.loads(line) for line in (folder / "validation.jsonl").read_text(encoding="utf-8").splitlines()]
    return Streamed(folder, validation, [], saved["stats"], saved["tokens"], np.load(folder / "counts.npy"))


def tokenizer_key(tok) -> str:
    """What identifies the tokenizer the blocks were cut with: its vocabulary's hash."""
    vocab = sorted(tok.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab).encode("utf-8")).hexdigest()
