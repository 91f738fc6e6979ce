"""Token-budget training batches (--train.max_batch_tokens): each under its budget, every text once an epoch, the same
number of batches every epoch, drawn from (seed, epoch) alone (a resumed run replays them), and the loss a mean over
the step's examples whatever the batches hold."""

import json
import random

import numpy as np
import pytest
import yaml

from conftest import run_cli
from encoderfit.core.device import padded_length
from encoderfit.models.token_budget import TokenBudgetBatches, batch_sizes, epoch_of


def lengths_like_paragraphs(n: int, seed: int = 0) -> list:
    rng = random.Random(seed)
    return [min(512, max(4, int(rng.lognormvariate(4.2, 0.7)))) for _ in range(n)]


@pytest.mark.parametrize("packed", [False, True])
def test_batches_cover_every_text_once_under_the_budget_with_the_same_count_every_epoch(packed):
    lengths = lengths_like_paragraphs(3000)
    budget = 4096
    batches = TokenBudgetBatches(lengths, budget, seed=7, width=padded_length, packed=packed)
    counts = set()
    for epoch in range(3):
        plan = batches.batches(epoch)
        counts.add(len(plan))
        assert sorted(i for b in plan for i in b) == list(range(len(lengths)))  # every text once
        for rows in plan:
            cost = sum(lengths[i] for i in rows) if packed else len(rows) * padded_length(max(lengths[i] for i in rows))
            assert cost <= budget or len(rows) == 1
        heaviest = max(plan, key=lambda rows: sum(lengths[i] for i in rows) if packed else
                       len(rows) * padded_length(max(lengths[i] for i in rows)))
        assert plan[0] == heaviest  # a budget too large for the device fails at the first step
    assert counts == {len(batches)}  # the Trainer counts the steps of an epoch once
    sizes = [len(rows) for rows in batches.batches(0)]
    assert max(sizes) > 4 * min(sizes)  # short texts many to a batch, long ones few
    assert "batches of" in batches.describe() and ("real" if packed else "padded") in batches.describe()


def test_the_order_is_a_function_of_seed_and_epoch_alone():
    lengths = lengths_like_paragraphs(800, seed=1)
    one, two = (TokenBudgetBatches(lengths, 2048, seed=3, width=padded_length) for _ in range(2))
    two.set_epoch(1)
    assert list(two) == one.batches(1)  # another instance (a resumed process) draws the same epoch
    assert one.batches(0) != one.batches(1)  # epochs differ: the batches' order and which equal-length texts meet
    assert [sorted(b) for b in one.batches(0)] != [sorted(b) for b in one.batches(1)]
    assert TokenBudgetBatches(lengths, 2048, seed=4, width=padded_length).batches(0) != one.batches(0)
    order = [max(lengths[i] for i in b) for b in one.batches(0)[1:]]
    assert order != sorted(order) and order != sorted(order, reverse=True)  # shuffled, not by length
    assert epoch_of(0.0) == 0 and epoch_of(1.9999) == 1 and epoch_of(2.0) == 2


def test_cuts_depend_on_the_lengths_only():
    assert batch_sizes([10, 10, 10, 30, 30], 60, width=lambda n: n) == [3, 2]
    assert batch_sizes([10, 10, 10, 30, 30], 60, width=lambda n: n, packed=True) == [4, 1]
    assert batch_sizes([100], 60, width=lambda n: n) == [1]  # a text over the budget goes alone


@pytest.fixture(scope="module")
def prepared(toy_csv, tiny_model):
    from encoderfit.core.args import DataArgs, ModelArgs, TrainArgs
    from encoderfit.runs.training import Prepared

    prep = Prepared.load(DataArgs(source=str(toy_csv)), ModelArgs(name_or_path=str(tiny_model)), TrainArgs())
    prep.model_path = str(tiny_model)
    return prep


def budget_trainer(prepared, tmp_path, **train):
    from encoderfit.core.args import ModelArgs, TrainArgs

    args = TrainArgs(report_to=[], **train)
    net = prepared.task.modeling.load_model(ModelArgs(name_or_path=prepared.model_path), prepared.splits.labels,
                                            prepared.max_length, prepared.stats)
    return prepared.task.modeling.build_trainer(net, prepared.tokenizer, prepared.splits.labels, prepared.stats,
                                                prepared.tokenized, args, prepared.precision, tmp_path)


def test_the_loader_replays_an_epoch_after_a_resume_and_the_loss_divides_by_the_steps_examples(prepared, tmp_path):
    from accelerate import skip_first_batches

    trainer = budget_trainer(prepared, tmp_path, max_batch_tokens=256, gradient_accumulation_steps=2, max_steps=4,
                             logging_steps=1)
    budget = trainer.budget
    loader = trainer.get_train_dataloader()
    assert len(loader) == len(budget)
    loader.set_epoch(1)  # as the Trainer does at each epoch's start (accelerate hands the epoch on as it iterates)
    rows = [len(b["input_ids"]) for b in loader]
    expected = budget.batches(1)
    assert rows == [len(b) for b in expected]
    for batch in loader:  # within the budget, padded as the collator pads
        assert batch["input_ids"].numel() <= 256 or len(batch["input_ids"]) == 1
    # a resumed run: the Trainer skips the batches already trained and tells the epoch at its start (the callback)
    budget.set_epoch(0)
    resumed = skip_first_batches(loader, 2)  # accelerate's wrapper does not reach the batches' set_epoch: the callback does
    trainer.callback_handler.on_epoch_begin(trainer.args, type("S", (), {"epoch": 1.5})(), trainer.control)
    assert [len(b["input_ids"]) for b in resumed] == [len(b) for b in expected[2:]]

    seen = []
    loss = trainer.compute_loss_func

    def recording(outputs, labels, num_items_in_batch=None):
        if trainer.model.training:  # a training step, not the evaluation
            seen.append((int(num_items_in_batch), len(labels)))
        return loss(outputs, labels, num_items_in_batch=num_items_in_batch)

    trainer.compute_loss_func = recording
    trainer.train()
    assert len(seen) == 8 and len({n for _, n in seen}) > 1  # batches of different sizes
    for step in range(4):  # each optimizer step: the examples of its two batches, so the loss is their mean
        (items_a, rows_a), (items_b, rows_b) = seen[2 * step: 2 * step + 2]
        assert items_a == items_b == rows_a + rows_b


def test_budget_training_through_the_cli_learns_and_says_how_it_batched(toy_csv, tiny_model, tmp_path):
    out = tmp_path / "budget"
    proc = run_cli("train", "--data.source", str(toy_csv), "--model.name_or_path", str(tiny_model), "--output_dir", str(out),
                   "--train.epochs", "3", "--train.learning_rate", "3e-3", "--train.max_batch_tokens", "256",
                   "--report.baseline", "false")
    said = next(line for line in proc.stderr.splitlines() if line.startswith("token-budget batches:"))
    packed = yaml.safe_load((out / "config.yaml").read_text())["resolved"]["packing"]
    assert " under 256 " in said and ("real tokens" in said) == bool(packed)  # packed: a budget of real tokens
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.8
    assert {"evaluation_s", "checkpoint_s"} <= set(metrics["train"])  # reported apart from the training steps
    assert "max_batch_tokens: 256" in (out / "config.yaml").read_text()


def test_a_budget_below_the_longest_row_and_one_for_the_embedding_trainer_are_refused(tmp_path):
    from encoderfit.core.args import TrainArgs
    from encoderfit.core.errors import UserError
    from encoderfit.models.token_budget import token_budget
    from encoderfit.models.trainer import training_arguments

    longest = padded_length(300)
    said = f"train.max_batch_tokens: 256 is below the longest training row \\({longest} tokens padded\\); use at least {longest}"
    with pytest.raises(UserError, match=said):
        token_budget(TrainArgs(max_batch_tokens=256), [12, 300, 40], None, None)
    assert len(token_budget(TrainArgs(max_batch_tokens=longest), [12, 300, 40], None, None)) == 2
    with pytest.raises(UserError, match="must be at least 64 tokens"):
        TrainArgs(max_batch_tokens=10)
    from sentence_transformers import SentenceTransformerTrainingArguments

    with pytest.raises(UserError, match="sentence-transformers' trainer, which batches by texts"):
        training_arguments(TrainArgs(max_batch_tokens=4096), "fp32", tmp_path, cls=SentenceTransformerTrainingArguments)


def test_budget_batches_need_no_mask_of_their_own(prepared):
    """What the budget counts is what the collator builds: the padded width of each batch."""
    collator = prepared.task.modeling.collator(prepared.tokenizer)
    train = prepared.tokenized["train"]
    batches = TokenBudgetBatches(train["length"], 256, seed=0, width=padded_length)
    for rows in batches.batches(0)[:5]:
        features = [{k: train[int(i)][k] for k in ("input_ids", "attention_mask", "labels")} for i in rows]
        batch = collator(features)
        assert batch["input_ids"].shape[1] == padded_length(max(len(f["input_ids"]) for f in features))
        assert np.prod(batch["input_ids"].shape) <= 256


@pytest.mark.parametrize("n,batch,seed", [(1, 4, 0), (7, 4, 1), (100, 8, 2), (1003, 16, 3), (5000, 2, 4)])
def test_length_grouped_order_is_transformers_order(n, batch, seed):
    """The numpy sampler gives exactly transformers' get_length_grouped_indices order (ties included: lengths drawn
    from few values), so figures measured with it do not move."""
    import numpy as np
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    from encoderfit.models.trainer import length_grouped_order

    lengths = np.random.default_rng(seed).integers(1, 12, n).tolist()
    theirs = get_length_grouped_indices(lengths, batch, generator=torch.Generator().manual_seed(seed))
    ours = length_grouped_order(np.asarray(lengths), batch, generator=torch.Generator().manual_seed(seed))
    assert ours.tolist() == theirs
