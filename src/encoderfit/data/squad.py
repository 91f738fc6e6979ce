"""SQuAD JSON files (v1.1 and v2.0: data -> paragraphs -> qas) read into the flat shape the hub's rajpurkar/squad and
rajpurkar/squad_v2 ship: one row per question with id, title, context, question and answers {text: [...],
answer_start: [...]}; an unanswerable v2 question has empty answer lists.

A file whose questions mix the two versions (some with `is_impossible`, some without) is refused with the first
question of the other kind named: its unanswerable questions could not be told from missing answers. So is a question
whose answers contradict its kind, named by its id: `is_impossible` that is not true/false (the string "false"), an
answerable question (v1, or v2 with is_impossible false) without answers (none, null or []), and an unanswerable one
with answers (SQuAD 2.0 keeps those in `plausible_answers`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List, Optional

from ..core.errors import UserError

COLUMNS = ("id", "title", "context", "question", "answers")
EMPTY_DATA = re.compile(rb'"data"\s*:\s*\[\s*\]')


def is_squad_json(path: Path) -> bool:
    """A .json file that holds one SQuAD object ({"data": [{"paragraphs": ...}]}) rather than rows."""
    with open(path, "rb") as handle:
        start = handle.read(4096).lstrip()
    return start.startswith(b"{") and b'"data"' in start and (
        b'"paragraphs"' in start or b'"title"' in start or b'"version"' in start or EMPTY_DATA.search(start) is not None)


def read_squad(path: Path):
    """A SQuAD JSON file -> Dataset in the hub's flat shape (rows in file order)."""
    from datasets import Dataset, Features, Sequence, Value

    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid SQuAD JSON ({type(err).__name__}: {err}); check the file") from None
    articles = raw.get("data") if isinstance(raw, dict) else None
    if not isinstance(articles, list) or not articles:
        raise UserError(f"{path}: {'an empty' if isinstance(articles, list) else 'no'} 'data' list of articles; a SQuAD file is "
                        "{\"data\": [{\"title\", \"paragraphs\": [{\"context\", \"qas\": [...]}]}]}")
    rows: Dict[str, List] = {c: [] for c in COLUMNS}
    versions: Optional[str] = None  # "v2" once a question has is_impossible, "v1" once one lacks it
    first = {}
    for a, article in enumerate(articles):
        _object(article, f"{path}: article {a + 1}")
        title = str(article.get("title", f"article {a + 1}"))
        for p, paragraph in enumerate(article.get("paragraphs") or []):
            where = f"{path}: article {a + 1} ('{title}'), paragraph {p + 1}"
            context = _object(paragraph, where).get("context")
            if not isinstance(context, str):
                raise UserError(f"{where}: no 'context' text; every paragraph needs one")
            for q, qa in enumerate(paragraph.get("qas") or []):
                qid = str(_object(qa, f"{where}, question {q + 1}").get("id", f"{a + 1}-{p + 1}-{q + 1}"))
                kind = "v2" if "is_impossible" in qa else "v1"
                first.setdefault(kind, qid)
                if versions and kind != versions:
                    raise UserError(f"{path}: question {qid} is SQuAD {kind} ({'with' if kind == 'v2' else 'without'} "
                                    f"is_impossible) but question {first[versions]} is {versions}: one file holds one "
                                    "version; mark every question's is_impossible (v2) or none (v1)")
                versions = kind
                answers = _answers(qa, f"{path}: question {qid}", kind)
                rows["id"].append(qid)
                rows["title"].append(title)
                rows["context"].append(context)
                rows["question"].append(qa.get("question"))
                rows["answers"].append({"text": [x["text"] for x in answers], "answer_start": [x["answer_start"] for x in answers]})
    if not rows["id"]:
        raise UserError(f"{path}: no questions; a SQuAD file needs paragraphs with 'qas'")
    features = Features({"id": Value("string"), "title": Value("string"), "context": Value("string"),
                         "question": Value("string"),
                         "answers": {"text": Sequence(Value("string")), "answer_start": Sequence(Value("int64"))}})
    return Dataset.from_dict(rows, features=features)


def _object(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise UserError(f"{where}: a JSON object is expected, got {type(value).__name__}; see the SQuAD layout "
                        "{\"data\": [{\"title\", \"paragraphs\": [{\"context\", \"qas\": [...]}]}]}")
    return value


def _answers(qa: dict, where: str, kind: str) -> List[dict]:
    """A question's answers, checked against its kind: v1 and answerable v2 questions need at least one, an
    unanswerable v2 question (is_impossible true) has none."""
    impossible = qa.get("is_impossible", False)
    if not isinstance(impossible, bool):
        raise UserError(f"{where}: is_impossible is {json.dumps(impossible)[:40]}, not true or false; write it as a JSON "
                        "boolean (true / false, unquoted)")
    answers = qa.get("answers")
    if answers is not None and not isinstance(answers, list):
        raise UserError(f"{where}: 'answers' must be a list of {{\"text\", \"answer_start\"}} (got {type(answers).__name__})")
    if impossible:
        if answers:
            raise UserError(f"{where}: is_impossible is true but it has {len(answers)} answer(s) ('{str(answers[0])[:40]}'); "
                            "an unanswerable question has \"answers\": [] (SQuAD 2.0 keeps candidates in "
                            "\"plausible_answers\"), or set is_impossible to false")
        return []
    if not answers:
        said = "missing" if "answers" not in qa else json.dumps(answers)
        if kind == "v1":
            raise UserError(f"{where}: no answers ('answers' is {said}); a SQuAD v1 question needs at least one "
                            "([{\"text\": ..., \"answer_start\": ...}]); for unanswerable questions use SQuAD 2.0 "
                            "(\"is_impossible\" on every question)")
        raise UserError(f"{where}: no answers ('answers' is {said}) but is_impossible is false; give its answers "
                        "([{\"text\": ..., \"answer_start\": ...}]) or mark it \"is_impossible\": true")
    for answer in answers:
        text, start = (answer.get("text"), answer.get("answer_start")) if isinstance(answer, dict) else (None, None)
        if not isinstance(text, str) or not isinstance(start, int) or isinstance(start, bool):
            raise UserError(f"{where}: the answer {json.dumps(answer, default=str)[:60]} is not {{\"text\": TEXT, "
                            "\"answer_start\": CHARACTER}}; fix it")
    return answers
