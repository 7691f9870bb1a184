#!/usr/bin/env python3

r"""
Checkpoints kept in memory (the explorer's loader): a kept load puts exactly
the file's weights in the model without reading it, scores equal the plain
loader's, and nothing else (a changed file, another loader writing into the
model, a budget, tied weights, another model) can make a kept load wrong.
"""

import copy
import os
import tempfile

import pytest
import torch
from torch import nn

from captum_tracin_we import TracInWE
from captum_tracin_we._checkpoints.checkpoint_pass import checkpoint_pass
from captum_tracin_we._checkpoints.checkpoints import load_checkpoint_with_lr
from captum_tracin_we._checkpoints.resident_checkpoints import ResidentCheckpoints
from tests.helpers import BagNet, assert_close, bag_setup


def _file_state(path):
    return torch.load(path, weights_only=True)["model_state_dict"]


def _assert_holds(model, path):
    state = model.state_dict()
    expected = _file_state(path)
    assert state.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(state[name], value), name


def _nbytes(model):
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


@pytest.fixture()
def bag():
    with tempfile.TemporaryDirectory() as tmp:
        yield (*bag_setup(tmp), tmp)


def test_kept_loads_read_once_and_score_as_the_plain_loader(bag):
    model, train, test, paths, _ = bag
    plain = TracInWE(copy.deepcopy(model), train, paths, batch_size=5)
    expected = plain.influence(test)
    loader = ResidentCheckpoints(load_checkpoint_with_lr, 1 << 30)
    kept = TracInWE(copy.deepcopy(model), train, paths, loader, batch_size=5)
    first = kept.influence(test)
    second = kept.influence(test)
    assert loader.reads == 3 and loader.kept_count == 3
    assert loader.kept_bytes == 3 * _nbytes(model)
    assert torch.equal(first, second)  # the first query runs on the kept tensors too
    assert_close(first, expected, rel=1e-6)
    rates = [loader(kept.model, path) for path in paths]
    assert rates == [0.5, 1.5, 2.5] and loader.reads == 3
    _assert_holds(kept.model, paths[-1])


def test_the_checkpoint_pass_still_knows_each_load_wrote_the_whole_state(bag):
    # Otherwise every query would hash every checkpoint again.
    model, _, _, paths, _ = bag
    loader = ResidentCheckpoints(load_checkpoint_with_lr, 1 << 30)
    for _ in range(2):
        for loaded in checkpoint_pass(model, paths, loader):
            assert loaded.file_key is not None
    assert loader.reads == 3


def test_a_changed_file_is_read_again(bag):
    model, _, _, paths, _ = bag
    loader = ResidentCheckpoints(load_checkpoint_with_lr, 1 << 30)
    loader(model, paths[0])
    other = BagNet()
    torch.save({"model_state_dict": other.state_dict(), "learning_rate": 7.0}, paths[0])
    assert loader(model, paths[0]) == 7.0
    assert loader.reads == 2 and loader.kept_count == 1
    _assert_holds(model, paths[0])


def test_a_budget_keeps_what_fits_and_plain_loads_never_write_into_kept_ones(bag):
    model, _, _, paths, _ = bag
    loader = ResidentCheckpoints(load_checkpoint_with_lr, _nbytes(model))
    for path in [paths[0], paths[1], paths[0], paths[1], paths[0]]:
        loader(model, path)
        _assert_holds(model, path)
    assert loader.kept_count == 1
    assert loader.reads == 3  # paths[0] once, paths[1] every time
    nothing = ResidentCheckpoints(load_checkpoint_with_lr, 0)
    nothing(model, paths[0])
    nothing(model, paths[0])
    assert nothing.reads == 2 and nothing.kept_count == 0


def test_a_write_through_the_model_drops_the_kept_checkpoint(bag):
    # Another method's loader (Captum's, say) copies its weights into the model
    # while it points at a kept checkpoint.
    model, _, _, paths, _ = bag
    loader = ResidentCheckpoints(load_checkpoint_with_lr, 1 << 30)
    loader(model, paths[0])
    model.load_state_dict(_file_state(paths[1]))
    _assert_holds(model, paths[1])
    loader(model, paths[0])
    _assert_holds(model, paths[0])
    assert loader.reads == 2
    with torch.no_grad():
        model.fc.bias.add_(1.0)  # an in-place update of one tensor
    loader(model, paths[0])
    _assert_holds(model, paths[0])
    assert loader.reads == 3


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 4)
        self.out = nn.Linear(4, 11, bias=False)
        self.out.weight = self.emb.weight


def test_tied_weights_stay_one_tensor():
    with tempfile.TemporaryDirectory() as tmp:
        model = _Tied()
        path = os.path.join(tmp, "c.pt")
        torch.save({"model_state_dict": model.state_dict(), "learning_rate": 1.0}, path)
        with torch.no_grad():
            model.emb.weight.zero_()
        loader = ResidentCheckpoints(load_checkpoint_with_lr, 1 << 30)
        for _ in range(2):
            loader(model, path)
            assert model.out.weight is model.emb.weight
            _assert_holds(model, path)
        assert loader.kept_bytes == 11 * 4 * 4  # kept once, not per name


def test_other_models_and_checkpoints_that_are_not_files_load_as_before(bag):
    model, _, _, paths, _ = bag
    loader = ResidentCheckpoints(load_checkpoint_with_lr, 1 << 30)
    loader(model, paths[0])
    other = copy.deepcopy(model)
    for _ in range(2):
        loader(other, paths[1])
    _assert_holds(other, paths[1])
    assert loader.reads == 3 and loader.kept_count == 1
    _assert_holds(model, paths[0])  # the first model's kept weights untouched

    states = {"a": _file_state(paths[2])}

    def from_memory(target, name):
        target.load_state_dict(states[name])
        return 1.0

    in_memory = ResidentCheckpoints(from_memory, 1 << 30)
    in_memory(model, "a")
    in_memory(model, "a")
    assert in_memory.reads == 2 and in_memory.kept_count == 0
    _assert_holds(model, paths[2])


@pytest.mark.parametrize("budget", [-1, 1.5, True, "1"])
def test_the_budget_is_checked(budget):
    error = ValueError if budget == -1 else TypeError
    with pytest.raises(error, match="budget_bytes"):
        ResidentCheckpoints(load_checkpoint_with_lr, budget)


def test_only_the_packages_own_loaders_are_kept_by_the_explorer(bag):
    # A custom loader may set more than the state dict (an attribute, a
    # non-persistent buffer): replaying a kept state dict would skip that.
    from captum_tracin_we._checkpoints.state_dict_loaders import loads_state_dict_only
    from captum_tracin_we._checkpoints.trainer_runs import load_trainer_checkpoint

    assert loads_state_dict_only(load_checkpoint_with_lr)
    assert loads_state_dict_only(load_trainer_checkpoint)

    def custom(model, path):
        return load_checkpoint_with_lr(model, path)

    assert not loads_state_dict_only(custom)


class _WithExtraState(BagNet):
    def get_extra_state(self):
        return {"step": 1}

    def set_extra_state(self, state):
        self.step = state["step"]


def test_a_model_with_extra_state_is_never_kept(bag):
    _, _, _, _, tmp = bag
    model = _WithExtraState()
    path = os.path.join(tmp, "extra.pt")
    torch.save({"model_state_dict": model.state_dict(), "learning_rate": 1.0}, path)
    loader = ResidentCheckpoints(load_checkpoint_with_lr, 1 << 30)
    loader(model, path)
    loader(model, path)
    assert loader.kept_count == 0 and loader.reads == 2


def test_a_resized_tensor_is_loaded_not_replayed(bag):
    # A kept checkpoint is replayed only onto tensors of its shapes; otherwise
    # the loader runs and reports the mismatch, as without keeping.
    from captum_tracin_we import CheckpointError

    model, _, _, paths, _ = bag
    loader = ResidentCheckpoints(load_checkpoint_with_lr, 1 << 30, model)
    loader(model, paths[0])
    with torch.no_grad():
        model.fc.bias.set_(torch.zeros(5))
    with pytest.raises(CheckpointError, match="does not fit"):
        loader(model, paths[0])


def test_a_budget_too_small_costs_no_copy(bag, monkeypatch):
    model, _, _, paths, _ = bag
    loader = ResidentCheckpoints(load_checkpoint_with_lr, 1)
    clones = []
    clone = torch.Tensor.clone

    def counting(self, *args, **kwargs):
        clones.append(1)
        return clone(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "clone", counting)
    for path in paths:
        loader(model, path)
    assert clones == [] and loader.kept_count == 0


def test_a_checkpoint_rewritten_while_it_loads_is_an_error(bag):
    from captum_tracin_we import CheckpointError

    model, train, test, paths, _ = bag

    def rewriting(target, path):
        rate = load_checkpoint_with_lr(target, path)
        torch.save(torch.load(path, weights_only=True), path)  # a save meanwhile
        return rate

    with pytest.raises(CheckpointError, match="changed on disk while it was loaded"):
        TracInWE(model, train, paths, rewriting).influence(test)
