"""SQuAD JSON files (v1.1 and v2.0: data -> paragraphs -> qas) read into the flat shape the hub's rajpurkar/squad and
rajpurkar/squad_v2 ship: one row per question with id, title, context, question and answers {text: [...],
answer_start: [...]}; an unanswerable v2 question has empty answer lists.

A file whose questions mix the two versions (some with `is_impossible`, some without) is refused with the first
question of the other kind named: its unanswerable questions could not be told from missing answers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

from ..core.errors import UserError

COLUMNS = ("id", "title", "context", "question", "answers")


def is_squad_json(path: Path) -> bool:
    """A .json file that holds one SQuAD object ({"data": [{"paragraphs": ...}]}) rather than rows."""
    with open(path, "rb") as handle:
        start = handle.read(4096).lstrip()
    return start.startswith(b"{") and b'"data"' in start and (b'"paragraphs"' in start or b'"title"' in start)


def read_squad(path: Path):
    """A SQuAD JSON file -> Dataset in the hub's flat shape (rows in file order)."""
    from datasets import Dataset, Features, Sequence, Value

    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid SQuAD JSON ({type(err).__name__}: {err}); check the file") from None
    articles = raw.get("data") if isinstance(raw, dict) else None
    if not isinstance(articles, list):
        raise UserError(f"{path}: no 'data' list of articles; a SQuAD file is {{\"data\": [{{\"title\", \"paragraphs\": [...]}}]}}")
    rows: Dict[str, List] = {c: [] for c in COLUMNS}
    versions: Optional[str] = None  # "v2" once a question has is_impossible, "v1" once one lacks it
    first = {}
    for a, article in enumerate(articles):
        title = str(article.get("title", f"article {a + 1}"))
        for p, paragraph in enumerate(article.get("paragraphs") or []):
            context = paragraph.get("context")
            where = f"{path}: article {a + 1} ('{title}'), paragraph {p + 1}"
            if not isinstance(context, str):
                raise UserError(f"{where}: no 'context' text; every paragraph needs one")
            for q, qa in enumerate(paragraph.get("qas") or []):
                qid = str(qa.get("id", f"{a + 1}-{p + 1}-{q + 1}"))
                kind = "v2" if "is_impossible" in qa else "v1"
                first.setdefault(kind, qid)
                if versions and kind != versions:
                    raise UserError(f"{path}: question {qid} is SQuAD {kind} ({'with' if kind == 'v2' else 'without'} "
                                    f"is_impossible) but question {first[versions]} is {versions}: one file holds one "
                                    "version; mark every question's is_impossible (v2) or none (v1)")
                versions = kind
                answers = [] if qa.get("is_impossible") else list(qa.get("answers") or [])
                rows["id"].append(qid)
                rows["title"].append(title)
                rows["context"].append(context)
                rows["question"].append(qa.get("question"))
                rows["answers"].append({"text": [str(x.get("text", "")) for x in answers],
                                        "answer_start": [int(x.get("answer_start", -1)) for x in answers]})
    if not rows["id"]:
        raise UserError(f"{path}: no questions; a SQuAD file needs paragraphs with 'qas'")
    features = Features({"id": Value("string"), "title": Value("string"), "context": Value("string"),
                         "question": Value("string"),
                         "answers": {"text": Sequence(Value("string")), "answer_start": Sequence(Value("int64"))}})
    return Dataset.from_dict(rows, features=features)
