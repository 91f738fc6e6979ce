"""The task abstraction's shape: a Task declares what it is and holds five parts (targets, modeling, scoring,
decoding, pages); a task's own settings live in its config group (`--ner.documents`), are saved in config.yaml under
the task's name, and old run directories (settings in data/train) still load."""

import dataclasses

import pytest
import yaml

from conftest import make_rows, run_cli, write_csv
from encoderfit.core.errors import UserError
from encoderfit.core.runconfig import RunConfig
from encoderfit.tasks import HEADS, OPTIONS, TASKS, get_task
from encoderfit.tasks.base import Decoding, Modeling, Pages, Scoring, Targets, Task
from failing import cli_fails

PARTS = {"targets": Targets, "modeling": Modeling, "scoring": Scoring, "decoding": Decoding, "pages": Pages}


@pytest.mark.parametrize("task", [*TASKS.values(), *HEADS.values()], ids=lambda t: f"{type(t).__name__}")
def test_a_task_declares_and_its_parts_do_the_work(task):
    own = [name for cls in type(task).__mro__[:-1] if cls is not Task and issubclass(cls, Task)
           for name, value in vars(cls).items() if callable(value) and not isinstance(value, type)]
    assert own == [], f"{type(task).__name__} defines methods {own}: they belong in one of its parts"
    for attribute, base in PARTS.items():
        part = getattr(task, attribute)
        assert isinstance(part, base) and part.task is task


def test_the_task_class_is_small():
    methods = [name for name, value in vars(Task).items() if callable(value) and not isinstance(value, type)]
    assert len(methods) <= 5, methods  # __init__, reading and applying a run's settings
    for base in PARTS.values():
        public = [name for name, value in vars(base).items() if callable(value) and not name.startswith("_")]
        assert len(public) <= 14, (base.__name__, public)


def test_settings_of_a_task_are_read_into_its_options_and_checked():
    ner = get_task("ner", options={"ner": {"documents": True, "tag_scheme": "iob2"}})
    assert ner.options.documents and ner.options.tag_scheme == "iob2" and ner.options_dict()["ner"]["invalid_tags"] == "repair"
    assert get_task("ner").options.documents is False  # the registry's task keeps the defaults
    with pytest.raises(UserError, match=r"ner.documnets: not a setting of the ner task \(did you mean 'documents'\?\)"):
        get_task("ner", options={"ner": {"documnets": True}})
    with pytest.raises(UserError, match=r"regression.loss: a setting of the regression task, but this run's task is ner"):
        get_task("ner", options={"regression": {"loss": "huber"}})
    with pytest.raises(UserError, match=r"classification.x: the classification task has no settings of its own"):
        get_task("classification", options={"classification": {"x": 1}})
    with pytest.raises(UserError, match=r"similarity.target_range must be \[low, high\] with low < high"):
        get_task("similarity", options={"similarity": {"target_range": [5, 0]}})
    assert set(OPTIONS) == {"ner", "regression", "embedding", "similarity", "qa"}
    assert {f.name for f in dataclasses.fields(OPTIONS["similarity"])} >= {f.name for f in dataclasses.fields(OPTIONS["embedding"])}


def test_an_old_config_yaml_keeps_its_settings_in_the_tasks_group(tmp_path):
    """A config.yaml of encoderfit <= 0.2.0 held the tasks' settings in data/train: a value other than the old
    default moves into the run's task's group, a default is dropped, and nothing is warned as unknown."""
    old = {"task": "regression", "labels": ["target"], "resolved": {},
           "data": {"source": "x.csv", "target_range": [-6, 6], "tag_scheme": None, "documents": False},
           "model": {"name_or_path": "m"},
           "train": {"regression_loss": "huber", "embedding_loss": "auto", "subword_labels": "all", "matryoshka_dims": None}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    cfg = RunConfig.load(tmp_path)
    assert cfg.options == {"regression": {"target_range": [-6, 6], "loss": "huber"}}
    task = get_task(cfg.task, options=cfg.options)
    assert task.options.target_range == [-6, 6] and task.options.loss == "huber"
    saved = cfg.to_dict()
    assert saved["regression"] == {"target_range": [-6, 6], "loss": "huber"} and "options" not in saved
    assert RunConfig.from_dict(saved).options == cfg.options  # the new shape reads back the same


def test_the_cli_takes_each_tasks_group_and_names_the_new_flag_for_an_old_one(tmp_path, tiny_model):
    data = write_csv(tmp_path / "toy.csv", make_rows(20, seed=0))
    help_text = run_cli("train", "--help").stdout
    for flag in ("--ner.documents", "--regression.target_range", "--embedding.matryoshka_dims", "--similarity.loss"):
        assert flag in help_text
    base = ("train", "--data.source", str(data), "--model.name_or_path", str(tiny_model), "--output_dir", str(tmp_path / "run"))
    msg = cli_fails(*base, "--data.documents", "true")
    assert "--data.documents is now --ner.documents" in msg
    msg = cli_fails(*base, "--regression.loss", "huber")  # the task is inferred: classification
    assert "regression.loss: a setting of the regression task, but this run's task is classification" in msg
    assert not (tmp_path / "run").exists()
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"ner": {"documents": True}}))
    msg = cli_fails(*base, "--config", str(config))
    assert "ner.documents: a setting of the ner task, but this run's task is classification" in msg


def test_training_batches_are_padded_to_a_few_length_buckets_never_past_the_model(tiny_model, monkeypatch):
    """On a CPU (and on a GPU under torch.compile) a batch pads to its longest row rounded up to a quarter of the power
    of two below it (one shape per length makes long runs' memory grow, and costs a compiled model a graph), and
    labels pad with it; a bucket past the model's positions is not used. On a GPU without compile: multiples of 8."""
    from transformers import AutoTokenizer

    from encoderfit.core import device

    if device.has_cuda():
        monkeypatch.setattr(device, "_compiling", False)
        assert device.pad_multiple(37) == 8 and device.padded_length(37) == 40
        monkeypatch.setattr(device, "_compiling", True)  # the buckets below: as on a CPU

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rows = lambda *lengths, tags=False: [{"input_ids": [5] * n, "attention_mask": [1] * n, "labels": [1] * n if tags else 1}  # noqa: E731
                                         for n in lengths]
    plain = get_task("classification").modeling.collator(tokenizer)
    assert plain(rows(5, 37))["input_ids"].shape == (2, 40)
    assert plain(rows(100))["input_ids"].shape == (1, 112)
    assert plain(rows(7, 8))["input_ids"].shape == (2, 8)
    tokens = get_task("ner").modeling.collator(tokenizer)(rows(3, 70, tags=True))
    assert tokens["input_ids"].shape == tokens["labels"].shape == (2, 80)
    assert tokens["labels"][0, 3:].eq(-100).all() and tokens["attention_mask"][0].sum() == 3
    tokenizer.model_max_length = 100
    assert get_task("classification").modeling.collator(tokenizer)(rows(99, 4))["input_ids"].shape == (2, 99)
