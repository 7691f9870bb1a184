#!/usr/bin/env python3

r"""
Issue 21, items 1, 3 and 8 (Trainer files): a loss that normalises each batch
is undone exactly (Captum's TracInCP with the per-example loss is the oracle,
at every batch size) or refused with what to pass instead; every learning
rate read from ``trainer_state.json`` or the rate file passes the checks of a
user's rate, and damaged or malformed files name the file and the checkpoint.
"""

import builtins
import json
import os

import pytest
import torch
from captum.influence import TracInCP
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

from captum_tracin_we import BatchError, CheckpointError, TracInWE
from tests.helpers import assert_close, bag_setup, load_into

WEIGHT = torch.tensor([0.3, 2.0, 1.1])
RATE_FILE = "tracin_we_learning_rate.json"  # captum_tracin_we.hf.RATE_FILE


@pytest.fixture
def bag(tmp_path):
    return bag_setup(str(tmp_path), n_train=21, n_test=4)


def _oracle(bag, per_example_loss):
    r"""Captum's TracInCP on the embedding table with a per-example loss."""
    model, train, test, paths = bag
    reference = TracInCP(
        model,
        train,
        list(paths),
        load_into(),
        layers=["emb"],
        loss_fn=per_example_loss,
        batch_size=7,
    )
    return reference.influence(test)


# Item 1: losses that normalise each batch ------------------------------------------


@pytest.mark.parametrize(
    "make_loss",
    [
        lambda **kw: nn.CrossEntropyLoss(weight=WEIGHT, **kw),
        lambda **kw: nn.CrossEntropyLoss(weight=WEIGHT, label_smoothing=0.2, **kw),
        lambda **kw: nn.CrossEntropyLoss(weight=WEIGHT, ignore_index=2, **kw),
        lambda **kw: nn.NLLLoss(weight=WEIGHT, **kw),
    ],
    ids=["weight", "weight+label_smoothing", "weight+ignore_index", "nll_weight"],
)
def test_weighted_mean_losses_equal_tracincp_at_every_batch_size(bag, make_loss):
    model, train, test, paths = bag
    expected = _oracle(bag, make_loss(reduction="none"))
    for batch_size in (1, 3, 7):
        for reduction in ("mean", "sum"):
            tracin = TracInWE(
                model,
                train,
                paths,
                loss_fn=make_loss(reduction=reduction),
                batch_size=batch_size,
            )
            assert_close(tracin.influence(test), expected, rel=1e-6)


def test_ignored_targets_have_zero_influence(bag):
    model, train, test, paths = bag
    loss = nn.CrossEntropyLoss(weight=WEIGHT, ignore_index=2)
    scores = TracInWE(model, train, paths, loss_fn=loss, batch_size=3).influence(test)
    ignored = train.tensors[1] == 2
    assert bool(ignored.any()) and scores[:, ignored].abs().max() == 0


@pytest.mark.parametrize(
    "loss, per_example",
    [
        (nn.MSELoss(), lambda out, y: F.mse_loss(out, y, reduction="none").sum(1)),
        (
            nn.KLDivLoss(reduction="batchmean"),
            lambda out, y: F.kl_div(out, y, reduction="none").sum(1),
        ),
        (
            nn.BCEWithLogitsLoss(pos_weight=WEIGHT),
            lambda out, y: F.binary_cross_entropy_with_logits(
                out, y, pos_weight=WEIGHT, reduction="none"
            ).sum(1),
        ),
    ],
    ids=["mse", "kl_batchmean", "bce_pos_weight"],
)
def test_means_over_elements_give_each_examples_summed_loss(bag, loss, per_example):
    model, train, test, paths = bag
    gen = torch.Generator().manual_seed(5)
    targets = torch.randn(len(train), 3, generator=gen).softmax(1)
    data = torch.utils.data.TensorDataset(train.tensors[0], targets)
    test_targets = (test[0], targets[:4].flip(0))
    oracle = TracInCP(
        model,
        data,
        list(paths),
        load_into(),
        layers=["emb"],
        loss_fn=per_example,
        batch_size=7,
    ).influence(test_targets)
    for batch_size in (1, 3, 7):
        tracin = TracInWE(model, data, paths, loss_fn=loss, batch_size=batch_size)
        assert_close(tracin.influence(test_targets), oracle, rel=1e-6)


class _MaxOfBatch(nn.Module):
    r"""A loss module whose 'mean' is not what its 'none' losses add up to."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, logits, labels):
        losses = F.cross_entropy(logits, labels, reduction="none")
        return losses if self.reduction == "none" else losses.max()


class _Averaging(_MaxOfBatch):
    r"""A loss module with a reduction this library does not know."""

    def forward(self, logits, labels):
        losses = F.cross_entropy(logits, labels, reduction="none")
        return losses if self.reduction == "none" else losses.mean()


def test_a_module_whose_mean_does_not_reconcile_is_refused(bag):
    model, train, test, paths = bag
    tracin = TracInWE(model, train, paths, loss_fn=_MaxOfBatch(), batch_size=3)
    with pytest.raises(
        BatchError,
        match=r"_MaxOfBatch with reduction='mean'.*is not the sum of its "
        r"reduction='none' losses.*depend on the batch size.*reduction='none'",
    ):
        tracin.influence(test)


def test_an_unknown_reduction_is_refused(bag):
    model, train, test, paths = bag
    loss = _Averaging(reduction="weighted_mean")
    with pytest.raises(
        BatchError,
        match=r"_Averaging with reduction='weighted_mean'.*does not know how it "
        r"normalises.*_Averaging\(\.\.\., reduction='none'\)\) or reduction='sum'",
    ):
        TracInWE(model, train, paths, loss_fn=loss, batch_size=3).influence(test)


def test_a_function_averaging_with_class_weights_is_refused(bag):
    model, train, test, paths = bag
    tracin = TracInWE(
        model,
        train,
        paths,
        loss_fn=lambda out, y: F.cross_entropy(out, y, weight=WEIGHT),
        batch_size=7,
    )
    with pytest.raises(
        BatchError,
        match=r"neither the sum nor the mean.*weight=w.*reduction='none'.*"
        r"nn\.CrossEntropyLoss\(weight=w\)",
    ):
        tracin.influence(test)


# Items 3 and 8: learning rates and files of Trainer checkpoints ---------------------


def _checkpoint_folder(model, root, state=None, record=None, step=3):
    r"""A Trainer-like checkpoint folder holding ``model``'s weights and the
    given ``trainer_state.json`` / rate-file text (dicts are JSON-encoded)."""
    folder = os.path.join(str(root), f"checkpoint-{step}")
    os.makedirs(folder, exist_ok=True)
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(weights, os.path.join(folder, "model.safetensors"))
    for name, content in (("trainer_state.json", state), (RATE_FILE, record)):
        if content is not None:
            text = content if isinstance(content, str) else json.dumps(content)
            with open(os.path.join(folder, name), "w", encoding="utf-8") as stream:
                stream.write(text)
    return folder


def _state(rate, step=3):
    return {
        "global_step": step,
        "log_history": [{"step": 1, "learning_rate": 9.0}, {"step": step, **rate}],
    }


def _scores(bag, folder):
    model, train, test, _ = bag
    return TracInWE(model, train, folder, batch_size=7).self_influence()


def test_valid_trainer_state_and_rate_file_give_their_rates(bag, tmp_path):
    model, train, _, paths = bag
    expected = TracInWE(model, train, paths[-1], batch_size=7)
    rate = torch.load(paths[-1], weights_only=True)["learning_rate"]
    state = _checkpoint_folder(model, tmp_path / "a", _state({"learning_rate": rate}))
    assert_close(_scores(bag, state), expected.self_influence())
    record = {"step": 3, "learning_rate": rate}
    recorded = _checkpoint_folder(model, tmp_path / "b", record=record)
    assert_close(_scores(bag, recorded), expected.self_influence())


_STATE_FILE = r"trainer_state\.json'"


@pytest.mark.parametrize(
    "state, message",
    [
        (_state({"learning_rate": True}), r"is True \(a bool\); it must be a number"),
        (_state({"learning_rate": "0.5"}), r"is '0\.5' \(a str\); it must be a number"),
        (_state({"learning_rate": None}), r"is None \(a NoneType\); it must be"),
        (_state({"learning_rate": [0.5]}), r"is \[0\.5\] \(a list\); it must be"),
        (_state({"learning_rate": -0.1}), r"is -0\.1; it must be a finite number"),
        (
            '{"global_step": 3, "log_history": [{"step": 3, "learning_rate": NaN}]}',
            r"is nan; it must be a finite number",
        ),
    ],
    ids=["true", "string", "null", "list", "negative", "nan"],
)
def test_bad_rates_in_trainer_state_are_refused_naming_the_file(
    bag, tmp_path, state, message
):
    folder = _checkpoint_folder(bag[0], tmp_path, state)
    with pytest.raises(
        CheckpointError,
        match=r"checkpoint '.*checkpoint-3', read from '.*checkpoint-3/"
        rf"{_STATE_FILE} \(log_history at step 3\), {message}.*Correct that file",
    ):
        _scores(bag, folder)


@pytest.mark.parametrize(
    "state, message",
    [
        ([1, 2], r"\[1, 2\] \(a list\), not a JSON object"),
        ({"log_history": []}, r"no 'global_step'"),
        ({"global_step": True, "log_history": []}, r"'global_step' = true \(a bool"),
        ({"global_step": 3, "log_history": 5}, r"a 'log_history' of 5 \(a int\), not"),
        (
            {"global_step": 3, "log_history": {"step": 3, "learning_rate": 1}},
            r"a 'log_history' of .* \(a dict\), not a list",
        ),
        ({"global_step": 3, "log_history": [5]}, r"log_history\[0\] = 5 \(a int\)"),
        (
            {"global_step": 3, "log_history": [{"step": "3", "learning_rate": 1}]},
            r"log_history\[0\]\['step'\] = \"3\" \(a str\), not a step number",
        ),
    ],
    ids=["list", "no-step", "bool-step", "int-log", "dict-log", "int-entry", "str"],
)
def test_malformed_trainer_states_are_refused_naming_the_file(
    bag, tmp_path, state, message
):
    folder = _checkpoint_folder(bag[0], tmp_path, state)
    with pytest.raises(
        CheckpointError,
        match=rf"checkpoint-3/{_STATE_FILE} \(checkpoint '.*checkpoint-3'\) "
        rf"(has |holds ){message}.*checkpoints_load_func",
    ):
        _scores(bag, folder)


def test_a_malformed_state_in_a_run_folder_is_refused_before_the_work(bag, tmp_path):
    model, train, _, _ = bag
    _checkpoint_folder(model, tmp_path, _state({"learning_rate": 0.5}), step=2)
    _checkpoint_folder(model, tmp_path, [], step=4)
    with pytest.raises(
        CheckpointError, match=r"checkpoint-4/trainer_state\.json'.*not a JSON object"
    ):
        TracInWE(model, train, str(tmp_path), batch_size=7)


@pytest.mark.parametrize(
    "text",
    ['{"global_step": 3, "log_hi', "", "[" * 100000],
    ids=["truncated", "empty", "deeply-nested"],
)
def test_damaged_trainer_state_names_the_file_and_the_fix(bag, tmp_path, text):
    folder = _checkpoint_folder(bag[0], tmp_path, text)
    with pytest.raises(
        CheckpointError,
        match=rf"Cannot read '.*checkpoint-3/{_STATE_FILE} \(checkpoint '.*"
        r"checkpoint-3'\) as JSON .*damaged or truncated.*leave that checkpoint out",
    ):
        _scores(bag, folder)


@pytest.mark.parametrize(
    "record, message",
    [
        ({"learning_rate": True}, r"', is True \(a bool\); it must be a number"),
        ({"learning_rate": "0.5"}, r"', is '0\.5' \(a str\); it must be a"),
        ({"learning_rate": None}, r"', is None \(a NoneType\); it must be a"),
        ({"learning_rate": -1}, r"', is -1\.0; it must be a finite"),
        ({"step": 3}, r"holds \{\"step\": 3\} \(a dict\), not \{\"learning_rate\""),
        ([0.5], r"holds \[0\.5\] \(a list\), not \{\"learning_rate\""),
        ('{"step": 3, "learn', r"as JSON .*damaged or truncated"),
    ],
    ids=["true", "string", "null", "negative", "missing", "list", "truncated"],
)
def test_bad_rate_files_are_refused_naming_the_file(bag, tmp_path, record, message):
    folder = _checkpoint_folder(
        bag[0], tmp_path, _state({"learning_rate": 0.5}), record
    )
    with pytest.raises(
        CheckpointError, match=rf"tracin_we_learning_rate\.json.*{message}"
    ):
        _scores(bag, folder)


class _FullDisk:
    r"""A file whose writes store half of the text, then fail (a full disk)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        self.stream.write(text[: len(text) // 2])
        raise OSError(28, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.stream, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stream.close()


def test_the_rate_callback_never_leaves_a_truncated_file(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from types import SimpleNamespace

    import captum_tracin_we.hf as hf

    folder = tmp_path / "checkpoint-3"
    folder.mkdir()
    (folder / hf.RATE_FILE).write_text('{"step": 3, "learning_rate": 0.25}')
    callback = hf.LearningRateCallback()
    callback.last_rate = 0.125
    real_open = builtins.open

    def full_disk_open(path, mode="r", *args, **kwargs):
        stream = real_open(path, mode, *args, **kwargs)
        inside = os.path.dirname(os.path.abspath(str(path))) == str(folder)
        return _FullDisk(stream) if inside and "w" in mode else stream

    monkeypatch.setattr(builtins, "open", full_disk_open)
    args, state = (
        SimpleNamespace(output_dir=str(tmp_path)),
        SimpleNamespace(global_step=3),
    )
    with pytest.raises(OSError, match="No space"):
        callback.on_save(args, state, None)
    assert os.listdir(folder) == [hf.RATE_FILE]
    assert json.loads((folder / hf.RATE_FILE).read_text())["learning_rate"] == 0.25
    monkeypatch.undo()
    callback.on_save(args, state, None)
    assert json.loads((folder / hf.RATE_FILE).read_text())["learning_rate"] == 0.125


def test_checkpoints_in_the_legacy_torch_format_load_as_the_zip_format(tmp_path):
    # The default loader memory-maps torch.save files; the pre-zip format
    # cannot be mapped and is read whole, with the same scores.
    model, train, test, paths = bag_setup(str(tmp_path))
    expected = TracInWE(model, train, paths).influence(test)
    legacy = []
    for path in paths:
        checkpoint = torch.load(path, weights_only=True)
        target = path.replace(".pt", "-legacy.pt")
        torch.save(checkpoint, target, _use_new_zipfile_serialization=False)
        legacy.append(target)
    with pytest.raises(RuntimeError, match="mmap"):
        torch.load(legacy[0], weights_only=True, mmap=True)
    assert torch.equal(TracInWE(model, train, legacy).influence(test), expected)
