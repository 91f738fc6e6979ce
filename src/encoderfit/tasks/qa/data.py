"""Extractive QA's data: each row's answers read into one shape and checked, answer starts checked against the
context (and repaired when off by a little), and the split by article that keeps the answerable share alike on both
sides.

Answers are {"text": [...], "answer_start": [...]} (the hub's rajpurkar/squad shape; empty lists: unanswerable). Also
read: SQuAD's own per-question list [{"text": ..., "answer_start": ...}, ...], and in a CSV cell the same written as
JSON, as a Python literal, or as `datasets`' to_csv writes it (`array([...], dtype=object)`). Anything else (a bare
string, a number in `text`, null) is refused with the row named: a question whose answers are missing is not an
unanswerable one.
"""

from __future__ import annotations

import ast
import json
import logging
import re
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ...core.errors import UserError

log = logging.getLogger(__name__)
REPAIR_CHARS = 100
SHAPE = '{"text": [...], "answer_start": [...]}'
JITTER = 0.25  # the split seed scales each article's size by up to this much before they are ordered, larger first
GREEDY_STEPS, MAX_ORDERS = 20_000, 64  # orders tried by split_by_article: at most 64, fewer past 20,000 articles x orders
NUMPY_ARRAY = re.compile(r"array\((\[[^\]]*\])(?:,\s*dtype=[^)]*)?\)")  # how datasets' to_csv writes a list


def _parsed(cell: str):
    """A CSV cell holding answers -> the object it spells, or the cell itself when it spells none."""
    text = cell.strip()
    if not text.startswith(("{", "[")):
        return cell
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(NUMPY_ARRAY.sub(r"\1", text))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return cell


def read_answers(value, where: str, i: int, column: str) -> Dict[str, List]:
    """One row's answers as {"text": [str], "answer_start": [int]}, or a one-line UserError naming the row."""
    row = f"{where}: row {i + 1}: column '{column}'"
    if isinstance(value, str):
        value = _parsed(value)
    if value is None:
        raise UserError(f"{row} is empty (null or missing); give {SHAPE} (empty lists for an unanswerable question)")
    if isinstance(value, list) and all(isinstance(a, dict) for a in value):  # SQuAD's own per-question list
        value = {"text": [a.get("text") for a in value], "answer_start": [a.get("answer_start") for a in value]}
    if not isinstance(value, dict) or set(value) != {"text", "answer_start"}:
        got = f"{type(value).__name__} {json.dumps(value, default=str)[:60]}" if not isinstance(value, dict) else f"keys {sorted(value)}"
        raise UserError(f"{row}: answers must be {SHAPE} (got {got}); an unanswerable question has empty lists")
    texts, starts = value["text"], value["answer_start"]
    for name, items, kind in (("text", texts, str), ("answer_start", starts, int)):
        if not isinstance(items, list):
            raise UserError(f"{row}: answers.{name} must be a list (got {type(items).__name__} {json.dumps(items, default=str)[:40]}); "
                            f"write {SHAPE}")
        bad = next((x for x in items if not isinstance(x, kind) or isinstance(x, bool)), _NONE)
        if bad is not _NONE:
            raise UserError(f"{row}: answers.{name} holds {json.dumps(bad, default=str)[:40]} ({type(bad).__name__}), not "
                            f"{'text' if kind is str else 'a character position (a whole number)'}; "
                            + ("quote it: the answer is text of the context" if kind is str else "fix the row"))
    if len(texts) != len(starts):
        raise UserError(f"{where}: row {i + 1}: {len(texts)} answer texts but {len(starts)} answer_start values; give one each")
    return {"text": list(texts), "answer_start": list(starts)}


_NONE = object()


def locate(text: str, start: int, context: str, where: str, i: int) -> Tuple[int, bool]:
    """(start, moved): the answer's character start, checked against the context (moved to the text's one nearby
    occurrence when it is off)."""
    if not text.strip():
        raise UserError(f"{where}: row {i + 1}: an empty answer text; an unanswerable question has no answers at all")
    if 0 <= start and context[start : start + len(text)] == text:
        return start, False
    lo = max(0, start - REPAIR_CHARS)
    found = [lo + j for j in _occurrences(context[lo : max(0, start) + len(text) + REPAIR_CHARS], text)]
    if len(found) == 1:
        return found[0], True
    if not 0 <= start < len(context):
        raise UserError(f"{where}: row {i + 1}: answer_start {start} is outside the context ({len(context)} characters); fix the row")
    raise UserError(f"{where}: row {i + 1}: the answer '{text[:60]}' is not at answer_start {start} "
                    f"({'nowhere' if text not in context else 'not once'} near it in the context); fix answer_start or the text")


def _occurrences(haystack: str, needle: str) -> List[int]:
    out, k = [], haystack.find(needle)
    while k >= 0:
        out.append(k)
        k = haystack.find(needle, k + 1)
    return out


# ---------------------------------------------------------------- the split by article

def split_by_article(groups: Sequence[str], answerable: Sequence[bool], size: float, seed: int) -> Tuple[List[int], List[int]]:
    """(kept rows, held-out rows): whole articles (`groups`) on each side, about `size` of the questions held out, and
    the answerable share alike on both sides. StratifiedGroupKFold's greedy rule, for two parts of unequal size: each
    article in turn goes to the side where the questions of each kind (answerable, unanswerable) then stay closest to
    that side's share of them (the spread of count / target over sides and kinds is smallest). Tried in several
    orders (larger articles first with sizes jittered by the seed, then seeded random orders; fewer tries when there
    are many articles, where one order is enough), the assignment with the smallest spread is kept."""
    rows: Dict[str, List[int]] = {}
    for i, group in enumerate(groups):
        rows.setdefault(group, []).append(i)
    names = list(rows)
    if len(names) < 2:
        only = names[0] if names else ""
        raise UserError(f"qa: all {len(groups)} questions to split here are about one article ('{str(only)[:60]}'), so they "
                        "cannot be split by article; train, validation and test need at least 3 articles, and more when "
                        "the articles differ in size (a held-out part can fall on one large article, which then cannot be "
                        "divided into validation and test): add articles (a 'title' column that tells them apart), give "
                        "validation and test files, or try another --data.split_seed")
    answerable = np.asarray(answerable, dtype=bool)
    counts = np.asarray([[(~answerable[rows[g]]).sum(), answerable[rows[g]].sum()] for g in names], dtype=float)
    counts = counts[:, counts.sum(axis=0) > 0]  # a kind absent from the data takes no part
    target = np.stack([(1 - size) * counts.sum(axis=0), size * counts.sum(axis=0)])  # [kept, held] x [kinds]
    rng = np.random.default_rng(seed)
    sizes = counts.sum(axis=1)
    orders = [np.argsort(-sizes * rng.uniform(1 - JITTER, 1 + JITTER, len(names)), kind="stable")]
    orders += [rng.permutation(len(names)) for _ in range(int(np.clip(GREEDY_STEPS // len(names), 1, MAX_ORDERS)) - 1)]
    best = min((_assign(order, counts, target) for order in orders), key=lambda found: found[0])[1]
    kept = sorted(i for g, s in zip(names, best) if s == 0 for i in rows[g])
    held = sorted(i for g, s in zip(names, best) if s == 1 for i in rows[g])
    return kept, held


def _assign(order, counts: np.ndarray, target: np.ndarray) -> Tuple[float, np.ndarray]:
    """(spread, side of each article) of the greedy assignment in this order."""
    filled, side = np.zeros_like(target), np.zeros(len(counts), dtype=int)
    for g in order:
        trials = [filled + np.outer(np.arange(2) == s, counts[g]) for s in (0, 1)]
        s = min((0, 1), key=lambda k: (np.std(trials[k] / target), trials[k][k].sum() / target[k].sum()))
        side[g], filled = s, trials[s]
    for s in (0, 1):  # each side keeps at least one article: the smallest of the other side's moves over
        if not (side == s).any():
            moved = int(np.argmin(np.where(side != s, counts.sum(axis=1), np.inf)))
            filled[side[moved]] -= counts[moved]
            filled[s] += counts[moved]
            side[moved] = s
    return float(np.std(filled / target)), side


def describe(rows: Sequence[int], groups: Sequence[str], answerable: Sequence[bool]) -> str:
    """"N questions on K articles, P% answerable" for the log."""
    share = 100 * float(np.mean([answerable[i] for i in rows])) if len(rows) else 0.0
    return f"{len(rows)} questions on {len({groups[i] for i in rows})} article(s), {share:.1f}% answerable"
