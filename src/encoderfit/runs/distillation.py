"""What distillation needs besides the training itself: the teacher run and its checks, the transfer set (gold,
unlabelled and augmented texts), the student tokenizer's check, and the comparison with another run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Tuple
from ..core.args import DataArgs, DistillArgs, ModelArgs, TrainArgs
from ..core.errors import UserError
from ..core.files import decode_utf8, split_lines
from ..data.sources import load_source
from .evaluation import check_same_splits
from .rundir import RunDir
from .splits import Splits
from ..tasks import task_for

log = logging.getLogger(__name__)


MAX_UNKNOWN = 0.05  # a student tokenizer that maps more of the transfer set's words than this to [UNK] cannot read it


def teacher_run(teacher: Optional[Path], task: Optional[str], data: DataArgs, options: Optional[Dict[str, dict]] = None):
    """The teacher's RunDir, its config and task, after the checks a bad command fails on. Task settings given
    (`--ner.documents`, a recipe's `ner:` group) must be the teacher's: the student reads the data as the teacher did."""
    if teacher is None:
        raise UserError("--teacher is missing: name the run to distil (a directory `encoderfit train` wrote)")
    run = RunDir(Path(teacher))
    cfg = run.config()
    if task and task != cfg.task:
        raise UserError(f"--task: the teacher {teacher} is a {cfg.task} run, not {task}; drop --task or choose a {task} teacher")
    kind = run.task()
    if not kind.supports("distill"):
        raise UserError(f"--teacher: {teacher} is a {cfg.task} run: {kind.why_not('distill')}")
    if data != DataArgs() and data != cfg.data:
        raise UserError(f"--data: a student learns on its teacher's data ({cfg.data.source}, split as the teacher's); drop the "
                        "data settings (to add text, use --distill.unlabelled)")
    for group, given in (options or {}).items():
        for name, value in given.items():
            held = cfg.options.get(group, {}).get(name)
            if group != cfg.task or value != held:
                now = f"the teacher's is {held!r}" if group == cfg.task else f"the teacher is a {cfg.task} run"
                raise UserError(f"--{group}.{name} {value!r}: {now}; a student reads the data as its teacher did: drop it")
    return run, cfg, kind


TEACHER_FIX = ("Re-train the teacher on the source as it is now: a student learns on its teacher's splits (distill "
               "takes no --data)")


COMPARE_FIX = "Compare with a run trained on the teacher's splits (`encoderfit train` with the teacher's config)"


def check_request(teacher: Optional[Path], task: Optional[str], data: DataArgs, options: Optional[Dict[str, dict]],
                  model: ModelArgs, train: TrainArgs, compare: Optional[Path] = None):
    """Every check `encoderfit distill` makes before any work (the teacher, the data, the student's settings, the run
    to compare with); `launch` runs it too, so a command refused here is refused before anything is submitted.
    Returns teacher_run's answer."""
    if train.linear_probe:
        raise UserError("train.linear_probe: a student learns from its teacher's outputs, not from a probe on gold labels; drop it")
    run, cfg, kind = teacher_run(teacher, task, data, options)
    student = task_for(cfg.task, model, cfg.options)
    if not student.supports("distill"):
        raise UserError(f"--model.head {model.head}: {student.why_not('distill')}")
    if compare is not None:
        other = RunDir(Path(compare)).config()
        if other.task != cfg.task or other.labels != cfg.labels:
            what = f"a {other.task} run" if other.task != cfg.task else f"a run of other labels ({', '.join(other.labels[:5])})"
            raise UserError(f"distill.compare: {compare} is {what}, the teacher {teacher} a {cfg.task} run; give a run "
                            "trained on the teacher's data and splits (`encoderfit train` with the teacher's config)")
    return run, cfg, kind


def check_config(config: Dict, project: Path) -> None:
    """check_request on a resolved config (the mapping `encoderfit distill ... --print_config` prints), its relative
    paths read from `project`."""
    from ..tasks import OPTIONS

    options = {}
    for group, kind in OPTIONS.items():
        defaults = vars(kind())
        given = {k: v for k, v in (config.get(group) or {}).items() if k in defaults and v != defaults[k]}
        if given:
            options[group] = given
    elsewhere = project.resolve() != Path.cwd().resolve()

    def path(value) -> Optional[Path]:  # as given (and named so in messages) when read from the project itself
        return None if not value else project / value if elsewhere and not Path(value).is_absolute() else Path(value)

    check_request(path(config.get("teacher")), config.get("task"), DataArgs(**(config.get("data") or {})), options,
                  ModelArgs(**(config.get("model") or {})), TrainArgs(**(config.get("train") or {})),
                  path((config.get("distill") or {}).get("compare")))


def unlabelled_texts(args: DistillArgs, held_out: set) -> List[str]:
    """The texts of --distill.unlabelled (every split of the source), without the run's validation and test texts
    and without repeats."""
    path = Path(args.unlabelled)
    if path.suffix.lower() == ".txt" and path.is_file():
        texts = split_lines(decode_utf8(path.read_bytes(), f"distill.unlabelled: {path}"))
    else:
        texts = []
        for name, ds in load_source(args.unlabelled).items():
            if args.unlabelled_column not in ds.column_names:
                raise UserError(f"distill.unlabelled: {args.unlabelled} [{name}] has no column '{args.unlabelled_column}'; "
                                f"columns are {ds.column_names}; set --distill.unlabelled_column")
            texts += ["" if t is None else str(t) for t in ds[args.unlabelled_column]]
    kept = list(dict.fromkeys(t.strip() for t in texts if t and t.strip() and t.strip() not in held_out))
    if not kept:
        raise UserError(f"distill.unlabelled: {args.unlabelled} holds no text outside the run's validation and test splits; "
                        "give a source with other text")
    return kept


def whitespace_words(text: str) -> List[Tuple[int, int]]:
    """The character spans of a text's space-separated words (an augmented variant is made of the words of its source
    text, joined by single spaces)."""
    import re

    return [m.span() for m in re.finditer(r"\S+", text)]


def transfer_set(task, splits: Splits, args: DistillArgs, mask_token: Optional[str]) \
        -> Tuple[List[str], Optional[List[str]], List[bool], Dict, Optional[List[List[Tuple[int, int]]]]]:
    """(texts, pairs, has a gold label, counts, words): the training split's texts as the task has them labelled
    (`Targets.distill_texts`), then the unlabelled texts, then the augmented variants of the training texts; none of
    them a validation or test text. `words`: where the task labels words, each text's word spans (unlabelled text cut
    as predict cuts it; a variant at its spaces, as its source's words are kept whole), else None."""
    from ..data.augment import augment
    from ..tasks.base.words import split_words  # a new text's words, cut as predict cuts them (tasks that label words)

    texts, pairs, words = task.targets.distill_texts(splits.train)
    sources = list(texts)
    held_out = set()
    for ds in (splits.validation, splits.test):
        other, other_pairs, _ = task.targets.distill_texts(ds)
        held_out |= set(other) | set(other_pairs or [])
    gold = [True] * len(texts)
    counts = {"train": len(texts), "unlabelled": 0, "augmented": 0}
    if args.unlabelled:
        if pairs is not None:
            raise UserError("distill.unlabelled: this run's examples are text pairs; unlabelled single texts cannot be read "
                            "as pairs; drop --distill.unlabelled (--distill.augment varies the first text of each pair)")
        extra = [t for t in unlabelled_texts(args, held_out) if t not in set(texts)]
        texts, gold, counts["unlabelled"] = texts + extra, gold + [False] * len(extra), len(extra)
        words = words + [split_words(t) for t in extra] if words is not None else None
    if args.augment:
        variants = augment(sources, args.augment, args.seed, args.augmentations, mask_token, exclude=sorted(held_out | set(texts)))
        texts += [v for _, v in variants]
        pairs = pairs + [pairs[i] for i, _ in variants] if pairs is not None else None
        gold += [False] * len(variants)
        words = words + [whitespace_words(v) for _, v in variants] if words is not None else None
        counts["augmented"] = len(variants)
    counts["total"] = len(texts)
    return texts, pairs, gold, counts, words


def unknown_share(tokenizer, words: List[str]) -> Tuple[float, Optional[str]]:
    """The share of `words` a tokenizer reads with its unknown token, and one such word."""
    unk = tokenizer.unk_token_id
    if unk is None or not words:
        return 0.0, None  # byte-level vocabularies read anything
    ids = tokenizer(words, add_special_tokens=False)["input_ids"]
    unknown = [w for w, i in zip(words, ids) if unk in i]
    return len(unknown) / len(words), unknown[0] if unknown else None


def check_tokenizer(tokenizer, texts: List[str], student: str, teacher_tokenizer=None) -> None:
    """The student's tokenizer must read the transfer set: few of its words may come out as [UNK] (no more than
    MAX_UNKNOWN beyond what the teacher's own tokenizer leaves unread)."""
    sample = texts[:: max(1, len(texts) // 2000)]
    words = [w for t in sample for w in t.split()][:50000]
    share, example = unknown_share(tokenizer, words)
    allowed = MAX_UNKNOWN + (unknown_share(teacher_tokenizer, words)[0] if teacher_tokenizer is not None else 0.0)
    if share > allowed:
        raise UserError(f"--student: {student}'s tokenizer reads {share:.0%} of the transfer set's words as "
                        f"{tokenizer.unk_token} (e.g. {example!r}); choose a student whose vocabulary covers this text")


def against(task, run: RunDir, splits: Splits, labels: List[str], head: Dict, other: Path, name: str, role: str) -> Dict:
    """The student against another run of the same splits (its teacher, or the student model trained on labels): that
    run's test metrics and the paired comparison on the same test examples."""
    from .predictor import Predictor
    from .verdict import compare, predict_split

    mine = run.predictions("test", task, labels)
    other_run = RunDir(other)
    other_cfg = other_run.config()
    if other_cfg.task != task.name or other_cfg.labels != labels:
        raise UserError(f"distill.compare: {other} is a {other_cfg.task} run with other labels; compare with a run on the teacher's data")
    theirs = other_run.predictions("test", task, labels)
    if theirs is None or theirs.texts != mine.texts:
        check_same_splits(other, other_cfg.resolved.get("splits"), splits)
        theirs = predict_split(Predictor.from_pretrained(other), splits.test)
    their_head = other_run.model.info().head or {}
    metrics = task.scoring.analyse(theirs, labels, their_head, other_cfg)
    result = compare(task, mine, theirs, labels, head, their_head, against=(f"{role} ({name})", f"the {role}"))
    verdict = result["verdict"]
    d = verdict["difference"]
    shown = (f"{verdict['metric']} difference {d['difference']:+.4f} (95% CI {d['low']:+.4f} to {d['high']:+.4f})"
             + (f", p = {verdict['p_value']:.3g}" if verdict.get("p_value") is not None else ""))
    verdict["sentence"] = {"better": f"The student is better than the {role} on test: {shown}.",
                           "worse": f"The student is worse than the {role} on test: {shown}.",
                           "not distinguishable": f"The student and the {role} cannot be told apart on this test set: {shown}."
                           }[verdict["outcome"]]
    return {"run": str(other), "model": other_cfg.model.name_or_path,
            "test": {k: metrics[k] for k, _ in task.summary if k in metrics}, "comparison": result}
