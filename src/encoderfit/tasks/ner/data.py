"""The shapes token-classification data comes in, read into one: `text`, `words` (each word's character span in
the text) and `labels` (one tag per word, in the file's scheme; tags.convert settles the scheme).

- CoNLL files (.conll/.iob/.bio/.txt...): a token and its tag per line (the first and the last column; others
  ignored), a blank line between sentences, -DOCSTART- lines between documents (with ner.documents, a document's
  sentences are read as one text, so the model reads each word with its neighbouring sentences).
- Tables (JSON/JSONL/Parquet, a datasets directory or the hub) with a token list and a tag list per row: string
  tags, or integer tags with ClassLabel names (the hub's conll2003 `ner_tags`).
- JSONL/tables with raw text and character-offset spans, the spaCy/Prodigy shape:
  {"text": "...", "spans": [{"start": 0, "end": 5, "label": "PER"}, ...]}.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional

from ...data.conll import DOCSTART, LINES  # noqa: F401  (LINES: the column ner.py reads back)
from ...core.errors import UserError
from ..base.words import join_tokens, split_words, word_of_char
from .tags import to_iob2

log = logging.getLogger(__name__)
CONLL_SUFFIXES = (".conll", ".iob", ".iob2", ".bio", ".bioes")
TOKEN_COLUMNS = ("tokens", "words")
TAG_COLUMNS = ("ner_tags", "tags", "labels", "label")
SPAN_COLUMNS = ("spans", "entities", "label", "labels")
SOURCE = "tags from column "  # how a canonical split's info records the column its tags came from


def _pick(ds, wanted: str, defaults, where: str, what: str, flag: str) -> str:
    if wanted in ds.column_names:
        return wanted
    found = next((c for c in defaults if c in ds.column_names), None)
    if found is None:
        raise UserError(f"{where}: no {what} column ('{wanted}', or one of {list(defaults)}); columns are {ds.column_names}; "
                        f"set --data.{flag}")
    return found


def _tag_names(ds, column: str, where: str):
    """A function turning one row's tag values (and the row's 0-based number) into strings: ClassLabel ids -> names,
    surrounding whitespace stripped ("B-PER " is "B-PER"); a missing tag is an error naming its row."""
    from datasets import ClassLabel

    feature = ds.features[column]
    inner = getattr(feature, "feature", None)

    def names(row, r: int):
        for k, v in enumerate(row):
            if v is None or (isinstance(v, str) and not v.strip()) or (isinstance(inner, ClassLabel) and int(v) < 0):
                raise UserError(f"{where}: row {r + 1}: tag {k + 1} in column '{column}' is empty (null); give every token "
                                "a tag (O outside entities)")
        if isinstance(inner, ClassLabel):
            return [inner.int2str(int(v)) for v in row]
        odd = next((v for v in row if not isinstance(v, str)), None)
        if isinstance(odd, int) and not isinstance(odd, bool):
            raise UserError(f"{where}: column '{column}' holds integer tags without names; give string tags, or a "
                            "datasets ClassLabel sequence feature naming them (as the hub's conll2003 ner_tags)")
        if odd is not None:
            raise UserError(f"{where}: row {r + 1}: column '{column}' holds a tag of type {type(odd).__name__} ({odd!r}); "
                            "tags are strings such as B-PER, I-PER, O")
        return [v.strip() for v in row]

    return names


def canonical(ds, data, where: str, need_labels: bool = True, documents_as_texts: bool = False):
    """Any supported shape -> columns text, words, labels (tag strings per word); token rows of one document joined
    into one text with `documents_as_texts` (ner.documents)."""
    from datasets import Dataset

    if len(ds) == 0:
        raise UserError(f"{where}: no rows; it must hold at least one example")
    text_column = data.text_column if data.text_column in ds.column_names else _pick(
        ds, data.text_column, TOKEN_COLUMNS + ("text",), where, "text or token", "text_column")
    first = next((v for v in ds[text_column] if v is not None), None)
    if isinstance(first, (list, tuple)):
        return _from_tokens(ds, data, text_column, where, need_labels, documents_as_texts)
    texts = list(ds[text_column])
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"{where}: row {i + 1}: column '{text_column}' is empty or not text; fill it in or remove the row")
    words = [split_words(t) for t in texts]
    if not need_labels:
        return Dataset.from_dict({"text": texts, "words": words})
    span_column = _pick(ds, data.label_column, SPAN_COLUMNS, where, "entity spans", "label_column")
    tags = [_spans_to_tags(t, w, spans, where, i, span_column) for i, (t, w, spans) in enumerate(zip(texts, words, ds[span_column]))]
    snapped = sum(s for _, s, _ in tags)
    if snapped:
        log.warning("warning: %s: %d span edge(s) fell inside a word: widened to the word's edges (a second span inside "
                    "the same word is dropped)", where, snapped)
    stripped = sum(s for _, _, s in tags)
    if stripped:
        log.info("%s: stripped surrounding whitespace from %d span label(s)", where, stripped)
    return _labelled({"text": texts, "words": words, "labels": [t for t, _, _ in tags]}, span_column)


def _labelled(columns: Dict[str, list], source: str):
    """A canonical split whose info names the column its tags were read from (`source_column` reads it back)."""
    from datasets import Dataset, DatasetInfo

    return Dataset.from_dict(columns, info=DatasetInfo(description=f"{SOURCE}{source}"))


def source_column(ds) -> Optional[str]:
    """The data's column that the tags of a canonical split were read from (None if not recorded)."""
    description = ds.info.description or ""
    return description[len(SOURCE):] if description.startswith(SOURCE) else None


def documents(ds, text_column: str, group: bool):
    """Rows of tokens -> without CoNLL's -DOCSTART- boundary rows; with `group` (ner.documents), each document's
    sentences joined in order into one row (their tags and line numbers alike)."""
    starts = [i for i, tokens in enumerate(ds[text_column]) if list(tokens or []) == [DOCSTART]]
    if not starts:
        return ds
    if not group:
        drop = set(starts)
        return ds.select([i for i in range(len(ds)) if i not in drop])
    from datasets import Dataset

    bounds = set(starts)
    merged: Dict[str, list] = {c: [] for c in ds.column_names}
    current: Optional[Dict[str, list]] = None
    for i, row in enumerate(ds):
        if i in bounds or current is None:
            if current and current[text_column]:
                for c in merged:
                    merged[c].append(current[c])
            current = {c: [] if isinstance(row[c], list) else row[c] for c in ds.column_names}
            if i in bounds:
                continue
        for c in ds.column_names:
            if isinstance(row[c], list):
                current[c] = current[c] + row[c]
    if current and current[text_column]:
        for c in merged:
            merged[c].append(current[c])
    log.info("read %d documents (sentences joined in order) from %d rows", len(merged[text_column]), len(ds))
    return Dataset.from_dict(merged, features=ds.features)


def _from_tokens(ds, data, text_column: str, where: str, need_labels: bool, documents_as_texts: bool):
    from datasets import Dataset

    ds = documents(ds, text_column, documents_as_texts)
    tag_column = _pick(ds, data.label_column, TAG_COLUMNS, where, "tag", "label_column") if need_labels else None
    names = _tag_names(ds, tag_column, where) if tag_column else None
    lines = ds[LINES] if LINES in ds.column_names and names is not None else None
    texts, words, labels = [], [], []
    for i, tokens in enumerate(ds[text_column]):
        if not tokens:
            raise UserError(f"{where}: row {i + 1}: an empty sentence (no tokens); remove the row")
        tokens = [str(t) for t in tokens]
        if any(not t.strip() for t in tokens):
            raise UserError(f"{where}: row {i + 1}: token {next(k for k, t in enumerate(tokens) if not t.strip()) + 1} is empty; "
                            "remove it (and its tag)")
        text, spans = join_tokens(tokens)
        texts.append(text)
        words.append(spans)
        if names is not None:
            row = names(ds[i][tag_column] or [], i)
            if len(row) != len(tokens):
                raise UserError(f"{where}: row {i + 1}: {len(tokens)} tokens but {len(row)} tags in column '{tag_column}'; "
                                "give one tag per token")
            labels.append(row)
    if names is None:
        return Dataset.from_dict({"text": texts, "words": words})
    return _labelled({"text": texts, "words": words, "labels": labels, **({LINES: lines} if lines else {})}, tag_column)


def _spans_to_tags(text: str, words, spans, where: str, row: int, column: str):
    """(IOB2 tags of the words, how many span edges were widened to word edges, how many labels were stripped)."""
    if spans is None:
        spans = []
    if not isinstance(spans, (list, tuple)):
        raise UserError(f"{where}: row {row + 1}: column '{column}' holds {type(spans).__name__}; entity spans are a list of "
                        '{"start", "end", "label"} objects')
    char_word = word_of_char(len(text), words)
    found, snapped, stripped, taken, chars = [], 0, 0, {}, {}
    for k, span in enumerate(spans):
        try:
            start, end, label = int(span["start"]), int(span["end"]), span["label"]
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{where}: row {row + 1}: span {k + 1} ({span}) needs integer 'start', 'end' and a 'label'") from None
        if not isinstance(label, str) or not label.strip():
            what = "an empty label" if label is None or isinstance(label, str) else f"a label of type {type(label).__name__}"
            raise UserError(f"{where}: row {row + 1}: span {k + 1} [{start}, {end}) in column '{column}' has {what}; give "
                            "every span an entity type such as PER")
        stripped += label != label.strip()
        label = label.strip()
        if not 0 <= start < end <= len(text):
            raise UserError(f"{where}: row {row + 1}: span {k + 1} [{start}, {end}) '{label}' falls outside the text "
                            f"(length {len(text)}) or is empty; fix its offsets")
        inside = [int(w) for w in char_word[start:end] if w >= 0]
        if not inside:
            raise UserError(f"{where}: row {row + 1}: span {k + 1} [{start}, {end}) covers no word, only spaces; fix its offsets")
        first, last = inside[0], inside[-1]
        clash = next((taken[w] for w in range(first, last + 1) if w in taken), None)
        if clash is not None:
            if chars[clash][0] < end and start < chars[clash][1]:
                raise UserError(f"{where}: row {row + 1}: spans {clash + 1} and {k + 1} overlap ('{text[max(start, chars[clash][0]):min(end, chars[clash][1])]}'); "
                                "entities of one row must not overlap")
            snapped += 1  # two spans inside one word ('£400m' as '£400' and 'm'): the word takes the first
            continue
        snapped += (words[first][0] != start) + (words[last][1] != end)
        chars[k] = (start, end)
        taken.update({w: k for w in range(first, last + 1)})
        found.append((label, first, last + 1))
    return to_iob2(sorted(found, key=lambda e: e[1]), len(words)), snapped, stripped


def spans_of(text: str, words, entities, scores: Optional[List[float]] = None) -> List[Dict]:
    """Entities (type, first word, last word + 1) -> dicts with character offsets into `text`."""
    out = []
    for k, (kind, first, end) in enumerate(entities):
        start, stop = words[first][0], words[end - 1][1]
        out.append({"text": text[start:stop], "label": kind, "start": int(start), "end": int(stop),
                    **({"score": float(scores[k])} if scores is not None else {})})
    return out
