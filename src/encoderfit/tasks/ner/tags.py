"""Tag schemes of token classification: IO, IOB1, IOB2 (BIO) and BIOES (BILOU read as BIOES), detected from the
training tags, validated, repaired, and converted to one internal scheme, IOB2, through entity spans.

An entity is (type, first word, last word + 1). Every scheme is read into entities and written back as IOB2, so
the model, the metrics and the predictions all speak IOB2 whatever the files used.
"""

from __future__ import annotations

import logging
from typing import Iterable, List, Optional, Sequence, Tuple

from ...core.errors import UserError

log = logging.getLogger(__name__)
SCHEMES = ("io", "iob1", "iob2", "bioes")
PREFIXES = {"B": "B", "I": "I", "E": "E", "S": "S", "L": "E", "U": "S"}  # BILOU's L/U are BIOES's E/S
Entity = Tuple[str, int, int]


def split_tag(tag: str, bare: bool = False) -> Tuple[str, str]:
    """(prefix, type) of a tag: ("O", "") for outside; `bare` types (IO without prefixes) read as ("I", type)."""
    if tag == "O":
        return "O", ""
    if len(tag) > 2 and tag[1] in "-_" and tag[0] in PREFIXES:
        return PREFIXES[tag[0]], tag[2:]
    if bare:
        return "I", tag
    raise ValueError(tag)


Lines = Optional[Sequence[Sequence[int]]]
"""Each row's tags' line numbers in the file, for data read line by line (CoNLL): messages name lines, not rows."""


def at(where: str, row: int, lines: Lines = None, k: int = 0) -> str:
    """'WHERE: row R' (0-based `row`), or 'WHERE: line N' (the file line of the row's tag k) when `lines` are known."""
    return f"{where}: line {lines[row][k]}" if lines else f"{where}: row {row + 1}"


def detect(rows: Sequence[Sequence[str]], where: str, bare: bool = False, lines: Lines = None) -> str:
    """The scheme the tags are written in: E-/S- (or L-/U-) tags: bioes; B- tags that only ever separate two
    entities of one type: iob1; other B- tags: iob2; I- tags only: io."""
    prefixes, b_after_same, b_after_other = set(), 0, 0
    for r, row in enumerate(rows):
        previous = ("O", "")
        for k, tag in enumerate(row):
            try:
                prefix, kind = split_tag(tag, bare)
            except ValueError:
                raise UserError(f"{at(where, r, lines, k)}: tag '{tag}' is not O and has no B-/I-/E-/S- (or L-/U-) prefix, "
                                "so its scheme is unknown; write tags as B-TYPE/I-TYPE (IOB2) or set --ner.tag_scheme io "
                                "for bare type names") from None
            prefixes.add(prefix)
            if prefix == "B":
                if previous[1] == kind:
                    b_after_same += 1
                else:
                    b_after_other += 1
            previous = (prefix, kind)
    if prefixes & {"E", "S"}:
        return "bioes"
    if "B" in prefixes:
        return "iob1" if b_after_other == 0 else "iob2"
    return "io"


def entities(tags: Sequence[str], scheme: str, bare: bool = False) -> Tuple[List[Entity], int]:
    """(entities, repairs) of one row. A tag that cannot continue what precedes it (I-PER after O in IOB2, E-LOC
    with no open LOC in BIOES, an unclosed B- in BIOES) is repaired the lenient way: it starts (or ends) an entity,
    as seqeval's default mode and transformers' pipelines read it. `repairs` counts them."""
    if scheme == "bioes":
        return _bioes(tags)
    found: List[Entity] = []
    repairs, start, kind = 0, None, ""
    for i, tag in enumerate(tags):
        prefix, t = split_tag(tag, bare)
        continues = start is not None and t == kind
        starts = prefix == "B" or (prefix == "I" and not continues)
        repairs += scheme == "iob2" and prefix == "I" and not continues
        if (starts or prefix == "O") and start is not None:
            found.append((kind, start, i))
            start = None
        if starts:
            start, kind = i, t
    if start is not None:
        found.append((kind, start, len(tags)))
    return found, int(repairs)


def _bioes(tags: Sequence[str]) -> Tuple[List[Entity], int]:
    found: List[Entity] = []
    repairs, start, kind = 0, None, ""
    for i, tag in enumerate(tags):
        prefix, t = split_tag(tag)
        inside = start is not None and t == kind and prefix in ("I", "E")
        if start is not None and not inside:  # an entity left open by what comes now
            found.append((kind, start, i))
            repairs += 1
            start = None
        if prefix == "O":
            continue
        if start is None:
            start, kind = i, t
            repairs += prefix in ("I", "E")  # continues nothing
        if prefix in ("E", "S"):
            found.append((kind, start, i + 1))
            start = None
    if start is not None:
        found.append((kind, start, len(tags)))
        repairs += 1
    return found, repairs


def to_iob2(spans: Iterable[Entity], n: int) -> List[str]:
    """Entities -> IOB2 tags of n words."""
    tags = ["O"] * n
    for kind, start, end in spans:
        tags[start] = f"B-{kind}"
        for i in range(start + 1, end):
            tags[i] = f"I-{kind}"
    return tags


def tag_names(types: Iterable[str]) -> List[str]:
    """The model's outputs: O, then B-/I- of each type in sorted order."""
    return ["O", *[f"{p}-{t}" for t in sorted(set(types)) for p in ("B", "I")]]


def _invalid(row: Sequence[str], r: int, scheme: str, bare: bool, where: str, lines: Lines) -> str:
    """The message for a row whose tags are not a valid sequence: its row, or the line of its first bad tag."""
    fix = "fix the row or pass --ner.invalid_tags repair"
    if lines and scheme == "iob2":  # IOB2 counts a repair at the tag that needs it
        k = next(k for k in range(len(row)) if entities(row[: k + 1], scheme, bare)[1])
        return (f"{at(where, r, lines, k)}: tag '{row[k]}' is not valid IOB2 here: no entity of its type before it (in the "
                f"sentence starting at line {lines[r][0]}); {fix}")
    what = f"the sentence starting here has tags {list(row)} that are" if lines else f"tags {list(row)} are"
    return (f"{at(where, r, lines)}: {what} not a valid {scheme.upper()} sequence (e.g. an I- tag with no entity of its "
            f"type before it); {fix}")


def convert(rows: Sequence[Sequence[str]], scheme: Optional[str], invalid: str, where: str,
            lines: Lines = None) -> Tuple[List[List[Entity]], str]:
    """(entities of every row, the scheme read). `scheme` None: detected. Invalid sequences are repaired and counted
    (`invalid` "repair"), or the first one is an error naming its row ("error"), or its first line with `lines`."""
    bare = scheme == "io"
    scheme = scheme or detect(rows, where, lines=lines)
    out, repaired, first = [], 0, None
    for r, row in enumerate(rows):
        try:
            spans, repairs = entities(row, scheme, bare)
        except ValueError as err:
            raise UserError(f"{at(where, r, lines, list(row).index(str(err)))}: tag '{err}' is not O and has no B-/I-/E-/S- "
                            "prefix; fix it or set --ner.tag_scheme io for bare type names") from None
        if repairs:
            repaired += 1
            first = first or at("", r, lines)[2:]
            if invalid == "error":
                raise UserError(_invalid(row, r, scheme, bare, where, lines))
        out.append(spans)
    if repaired:
        log.warning("warning: %s: %d row(s) had tags invalid in %s (first: %s), read leniently (an orphan I- starts an "
                    "entity); --ner.invalid_tags error refuses them", where, repaired, scheme.upper(), first)
    return out, scheme
