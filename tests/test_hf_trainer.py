#!/usr/bin/env python3

r"""
A real ``transformers.Trainer`` run read as it is: TracInWE from the Trainer
folder equals TracInWE from hand-saved checkpoints with the scheduler's
learning rates, and tokenized ``datasets.Dataset`` objects work directly.
"""

import json
import os

import pytest
import torch

datasets = pytest.importorskip("datasets")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from safetensors.torch import load_file  # noqa: E402
from transformers import (  # noqa: E402
    Trainer,
    TrainingArguments,
    get_linear_schedule_with_warmup,
)

from captum_tracin_we import CheckpointError, TracInWE  # noqa: E402
from captum_tracin_we.hf import (  # noqa: E402
    RATE_FILE,
    LearningRateCallback,
    trainer_checkpoints,
)
from tests.helpers import (  # noqa: E402
    PAD,
    assert_close,
    dict_dataset,
    random_ids,
    tiny_hf_classifier,
)

STEPS, SAVE_EVERY, LEARNING_RATE, BATCH = 9, 3, 1e-3, 8


def _texts(n, seed):
    ids = random_ids(n, 10, seed)
    labels = (ids[:, 1] % 3).long()
    rows = {
        "input_ids": [row[row != PAD].tolist() for row in ids],
        "label": labels.tolist(),
    }
    return datasets.Dataset.from_dict(rows)


def _collate(rows):
    width = max(len(row["input_ids"]) for row in rows)
    ids = torch.full((len(rows), width), PAD)
    for i, row in enumerate(rows):
        ids[i, : len(row["input_ids"])] = torch.tensor(row["input_ids"])
    return {
        "input_ids": ids,
        "attention_mask": (ids != PAD).long(),
        "labels": torch.tensor([row["label"] for row in rows]),
    }


def _train(run_dir, logging_steps, callbacks=()):
    model = tiny_hf_classifier("bert")
    args = TrainingArguments(
        output_dir=str(run_dir),
        per_device_train_batch_size=BATCH,
        max_steps=STEPS,
        save_steps=SAVE_EVERY,
        logging_steps=logging_steps,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="linear",
        warmup_steps=0,
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=_texts(40, seed=1),
        data_collator=_collate,
        callbacks=list(callbacks),
    )
    trainer.train()
    return model.eval()


def _scheduler_rates():
    r"""The rate of each optimizer step, replayed with transformers' scheduler."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LEARNING_RATE)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, STEPS)
    rates = {}
    for step in range(1, STEPS + 1):
        rates[step] = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
    return rates


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    model = _train(run_dir, logging_steps=1)
    return model, run_dir


def _hand_saved(run_dir, folder):
    rates, paths = _scheduler_rates(), []
    for checkpoint in trainer_checkpoints(str(run_dir)):
        step = int(checkpoint.rsplit("-", 1)[1])
        path = os.path.join(folder, f"step{step:03d}.pt")
        state = load_file(os.path.join(checkpoint, "model.safetensors"))
        torch.save({"model_state_dict": state, "learning_rate": rates[step]}, path)
        paths.append(path)
    return paths


def test_trainer_folder_equals_hand_saved_checkpoints(run, tmp_path):
    model, run_dir = run
    assert [os.path.basename(p) for p in trainer_checkpoints(str(run_dir))] == [
        "checkpoint-3",
        "checkpoint-6",
        "checkpoint-9",
    ]
    train, test = _texts(40, seed=1), _texts(6, seed=2)
    from_run = TracInWE(model, train, str(run_dir), batch_size=BATCH)
    hand = TracInWE(model, train, _hand_saved(run_dir, tmp_path), batch_size=BATCH)
    expected = hand.influence(test)
    assert expected.abs().max() > 0
    assert torch.equal(from_run.influence(test), expected)
    assert torch.equal(from_run.self_influence(), hand.self_influence())


def test_datasets_equal_the_same_rows_as_dict_batches(run):
    model, run_dir = run
    train, test = _texts(40, seed=1), _texts(6, seed=2)
    tracin = TracInWE(model, train, str(run_dir), batch_size=5)
    rows = [
        {"input_ids": torch.tensor(r["input_ids"]), "labels": r["label"]} for r in train
    ]
    plain = TracInWE(
        model,
        torch.utils.data.DataLoader(rows, batch_size=1),
        str(run_dir),
        batch_size=None,
    )
    test_batch = _collate(list(test))
    assert_close(tracin.influence(test), plain.influence(test_batch))
    top = tracin.influence(test, k=4)
    words = tracin.word_influence(test, top.indices)
    assert_close(words.scores, top.influence_scores)


def test_one_checkpoint_folder_and_reference_to_dict_dataset(run):
    model, run_dir = run
    last = trainer_checkpoints(str(run_dir))[-1]
    ids = random_ids(8, 7, 5)
    train = dict_dataset(ids, torch.arange(8) % 3)
    scores = TracInWE(model, train, last, batch_size=4).self_influence()
    assert scores.shape == (8,) and bool((scores > 0).all())


def test_rarely_logged_runs_need_the_callback(tmp_path):
    silent = tmp_path / "silent"
    model = _train(silent, logging_steps=100)
    train = _texts(12, seed=3)
    with pytest.raises(CheckpointError, match="logs no learning rate.*LearningRate"):
        TracInWE(model, train, str(silent), batch_size=4).self_influence()
    recorded = tmp_path / "recorded"
    model = _train(recorded, logging_steps=100, callbacks=[LearningRateCallback()])
    rates = _scheduler_rates()
    for checkpoint in trainer_checkpoints(str(recorded)):
        step = int(checkpoint.rsplit("-", 1)[1])
        with open(os.path.join(checkpoint, RATE_FILE)) as stream:
            assert json.load(stream)["learning_rate"] == pytest.approx(rates[step])
    TracInWE(model, train, str(recorded), batch_size=4).self_influence()


def test_trainer_folder_errors(run, tmp_path):
    model, run_dir = run
    train = _texts(12, seed=3)
    bare = tmp_path / "checkpoint-4"
    bare.mkdir()
    torch.save(model.state_dict(), bare / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="no trainer_state.json"):
        TracInWE(model, train, str(bare), batch_size=4).self_influence()
    other = tiny_hf_classifier("bert", classes=2)
    with pytest.raises(CheckpointError, match="does not fit the model"):
        TracInWE(other, train, str(run_dir), batch_size=4).self_influence()
    with pytest.raises(ValueError, match="no 'label' or 'labels' column"):
        TracInWE(model, train.remove_columns("label"), str(run_dir))


def test_sharded_weights_are_read(run, tmp_path):
    model, run_dir = run
    last = trainer_checkpoints(str(run_dir))[-1]
    sharded = tmp_path / "sharded"
    model.save_pretrained(str(sharded), max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    from captum_tracin_we.hf import read_weights

    whole = load_file(os.path.join(last, "model.safetensors"))
    model.load_state_dict(whole)
    model.save_pretrained(str(sharded), max_shard_size="20KB")
    parts = read_weights(str(sharded))
    assert parts.keys() == whole.keys()
    assert all(torch.equal(parts[k], whole[k]) for k in whole)


def test_label_ids_and_names():
    from transformers import BertConfig

    from captum_tracin_we._files.labels import label_ids, model_label_names

    digits = ["1", "2", "3"]  # star ratings as names: a number is ambiguous
    assert label_ids(["LABEL_0", "LABEL_2"], digits, "data") == [0, 2]
    with pytest.raises(ValueError, match="could mean the name or the id"):
        label_ids([1, "3"], digits, "data")
    assert label_ids([0, 1, 2], ["neg", "pos", "mid"], "data") == [0, 1, 2]
    assert label_ids(["0", "1.0", "LABEL_1"], ["0", "1"], "data") == [0, 1, 1]
    config = BertConfig(num_labels=2)
    config.label2id = {"neg": 0, "pos": 1}
    assert model_label_names(config, 2) == ["neg", "pos"]
    with pytest.raises(ValueError, match="'maybe'"):
        label_ids(["neg", "maybe"], ["neg", "pos"], "data")


def test_datasets_that_cannot_go_in_as_they_are(run):
    model, run_dir = run
    data = _texts(6, seed=4)
    with pytest.raises(ValueError, match="pass one split"):
        TracInWE(model, datasets.DatasetDict({"train": data}), str(run_dir))
    named = data.cast_column("label", datasets.Value("string"))
    with pytest.raises(ValueError, match="text labels"):
        TracInWE(model, named, str(run_dir))


def _readme_code(heading: str) -> str:
    r"""The first Python block of the README section under ``heading``."""
    import re

    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")
    with open(path, encoding="utf-8") as stream:
        readme = stream.read()
    section = readme[readme.index(heading) :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_side_by_side_snippet_runs_on_a_trainer_folder(run):

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model, run_dir = run
    code = _readme_code("## Side by side with Captum")
    assert len([line for line in code.splitlines() if line.strip()]) == 6
    scope = {"model": model, "train_data": _texts(40, seed=1), "test": _texts(12, 5)}
    exec(code.replace("RUN_DIR", str(run_dir)), scope)
    comparison = scope["comparison"]
    assert comparison.k == 10 and comparison.names == ["TracIn-WE", "last layer"]
    assert comparison.proponents["TracIn-WE"].indices.shape == (12, 10)
    plt.close("all")


def test_the_readme_layer_snippet_runs_on_a_trainer_run(run):

    from captum_tracin_we import TracInLayers, aggregate_columns, layer_groups

    model, run_dir = run
    code = _readme_code("## First, middle or last")
    train, test = _texts(40, seed=1), _texts(12, 5)
    scope = {"model": model, "train_data": train, "test": test}
    with pytest.raises(KeyError, match="'attention middle' is not a layer group"):
        layer_groups(model)["attention middle"]  # this tiny model has 2 blocks
    code = code.replace("attention middle", "attention late")
    exec(code.replace("RUN_DIR", str(run_dir)), scope)
    layers = layer_groups(model)["attention late"]
    expected = TracInLayers(model, train, str(run_dir), layers).influence(test)
    assert torch.allclose(scope["scores"], expected, rtol=1e-5, atol=1e-9)
    order = aggregate_columns(expected, "vote").argsort()
    assert torch.equal(scope["harmful_first"], order)
    assert sorted(order.tolist()) == list(range(40))
