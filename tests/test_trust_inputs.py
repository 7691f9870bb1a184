#!/usr/bin/env python3

r"""
Input contracts that used to give silently wrong numbers or unrelated crashes
(issue 9): samplers, pre-made batches, module modes, the layout of token ids,
labels, learning rates and checkpoint folders. Each test compares against an
oracle (the plain model, a TensorDataset) or checks the error's message.
"""

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import (
    DataLoader,
    IterableDataset,
    SubsetRandomSampler,
    TensorDataset,
)

import captum_tracin_we._checkpoints.checkpoints as checkpoints_module
from captum_tracin_we import (
    BatchError,
    CheckpointError,
    TracInWE,
    TrainingDataError,
)
from tests.helpers import (
    PAD,
    BagNet,
    assert_close,
    bag_setup,
    dense_reference,
    random_ids,
    save_checkpoints,
)


@pytest.fixture
def bag(tmp_path):
    return bag_setup(str(tmp_path), n_train=40, n_test=5)


# Samplers and pre-made batches -------------------------------------------------


def test_subset_random_sampler_is_refused(bag):
    model, train, _, paths = bag
    loader = DataLoader(train, batch_size=8, sampler=SubsetRandomSampler(range(40)))
    with pytest.raises(TrainingDataError, match="SubsetRandomSampler.*position"):
        TracInWE(model, loader, paths, batch_size=None)


def test_reordering_sampler_is_refused(bag):
    model, train, _, paths = bag
    loader = DataLoader(train, batch_size=8, sampler=list(reversed(range(40))))
    with pytest.raises(TrainingDataError, match="samples with list"):
        TracInWE(model, loader, paths, batch_size=None)


def test_drop_last_is_refused(bag):
    model, train, _, paths = bag
    loader = DataLoader(train, batch_size=16, drop_last=True)
    with pytest.raises(TrainingDataError, match="drop_last=True"):
        TracInWE(model, loader, paths, batch_size=None)


class _Reshuffled(IterableDataset):
    r"""Yields the examples in a new order on every pass (a hidden shuffle)."""

    def __init__(self, ids, labels) -> None:
        self.ids, self.labels, self.passes = ids, labels, 0

    def __iter__(self):
        self.passes += 1
        order = torch.randperm(
            len(self.ids), generator=torch.Generator().manual_seed(self.passes)
        )
        for i in order.tolist():
            yield self.ids[i], self.labels[i]


def test_data_that_change_between_checkpoint_passes_are_refused(bag):
    model, train, test, paths = bag
    loader = DataLoader(_Reshuffled(*train.tensors), batch_size=8)
    tracin = TracInWE(model, loader, paths, batch_size=None)
    with pytest.raises(TrainingDataError, match="changed between checkpoint passes"):
        tracin.influence(test)
    with pytest.raises(TrainingDataError, match="changed between checkpoint passes"):
        tracin.self_influence()


def test_premade_batches_count_examples_not_batches(bag):
    model, train, test, paths = bag
    ids, labels = train.tensors
    batches = [(ids[i : i + 8], labels[i : i + 8]) for i in range(0, 40, 8)]
    premade = TracInWE(
        model, DataLoader(batches, batch_size=None), paths, batch_size=None
    )
    plain = TracInWE(model, train, paths, batch_size=8)
    assert premade.num_train_examples == 40
    top = premade.influence(test, k=10)
    expected = plain.influence(test, k=10)
    assert torch.equal(top.indices, expected.indices)
    chosen = torch.tensor([[0, 39, 17], [8, 9, 31], [5, 5, 6], [1, 2, 3], [38, 0, 20]])
    words = premade.word_influence(test, chosen)
    assert_close(words.scores, plain.influence(test).gather(1, chosen))
    assert_close(words.train_contributions.sum(-1), words.scores)


def test_premade_dict_batches(tmp_path):
    from tests.helpers import dict_dataset, tiny_hf_classifier

    model = tiny_hf_classifier("bert")
    paths = save_checkpoints(model, str(tmp_path), count=2)
    ids, labels = random_ids(12, 7, 3), torch.arange(12) % 3
    rows = dict_dataset(ids, labels)
    batches = [
        {key: torch.stack([row[key] for row in rows[i : i + 4]]) for key in rows[0]}
        for i in range(0, 12, 4)
    ]
    premade = TracInWE(
        model, DataLoader(batches, batch_size=None), paths, batch_size=None
    )
    plain = TracInWE(model, rows, paths, batch_size=5)
    test = batches[1]
    assert_close(premade.influence(test), plain.influence(test))
    chosen = torch.tensor([[11, 0], [4, 3], [7, 7], [1, 10]])
    assert_close(
        premade.word_influence(test, chosen).scores,
        plain.influence(test).gather(1, chosen),
    )


# Module modes ------------------------------------------------------------------


class NormedBag(BagNet):
    r"""A BagNet with a BatchNorm and a Dropout inside."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(8)
        self.drop = nn.Dropout(0.5)

    def from_embeddings(self, embedded, ids):
        mask = (ids != 0).float().unsqueeze(-1)
        pooled = (self.drop(embedded) * mask).sum(1) / mask.sum(1).clamp(min=1)
        return self.fc(torch.tanh(self.hidden(self.bn(pooled))))


def test_each_module_mode_is_restored(tmp_path):
    torch.manual_seed(0)
    model = NormedBag()
    paths = save_checkpoints(model, str(tmp_path), count=2)
    ids, labels = random_ids(12, 6, 1), torch.arange(12) % 3
    test = (ids[:3], labels[:3])
    train = torch.utils.data.TensorDataset(ids, labels)
    model.train()
    model.bn.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = TracInWE(model, train, paths, batch_size=4).influence(test)
    assert model.training and not model.bn.training and model.drop.training
    model.eval()
    model.drop.train()
    second = TracInWE(model, train, paths, batch_size=5).influence(test)
    assert not model.training and not model.bn.training and model.drop.training
    assert_close(first, second)  # scored in eval mode both times


# Layout of the token ids at the embedding ----------------------------------------


class SequenceFirstBag(BagNet):
    def forward(self, ids):
        return self.from_embeddings(self.emb(ids.t()).transpose(0, 1), ids)


class FlatBag(BagNet):
    def forward(self, ids):
        embedded = self.emb(ids.reshape(-1)).reshape(*ids.shape, -1)
        return self.from_embeddings(embedded, ids)


class KeywordBag(BagNet):
    def forward(self, ids):
        return self.from_embeddings(self.emb(input=ids), ids)


@pytest.mark.parametrize("variant", [SequenceFirstBag, FlatBag, KeywordBag])
@pytest.mark.parametrize("length", [9, 5])  # 5: L equals the test batch size
def test_embedding_layouts_equal_the_batch_first_model(tmp_path, variant, length):
    model, train, test, paths = bag_setup(
        str(tmp_path), n_train=20, n_test=5, length=length
    )
    other = variant().eval()
    expected = TracInWE(model, train, paths, batch_size=6)
    actual = TracInWE(other, train, paths, batch_size=6)
    assert_close(actual.influence(test), expected.influence(test))
    top = expected.influence(test, k=3).indices
    words = actual.word_influence(test, top)
    assert_close(
        words.train_contributions,
        expected.word_influence(test, top).train_contributions,
    )


class ExtraPosition(BagNet):
    r"""Embeds one more position than the batch has, sequence-first."""

    def forward(self, ids):
        longer = torch.cat([ids, ids[:, :1]], 1)
        return self.from_embeddings(self.emb(longer.t()).transpose(0, 1), longer)


def test_unmappable_layout_is_a_clear_error(tmp_path):
    _, train, test, paths = bag_setup(str(tmp_path), n_train=8, n_test=4, length=6)
    # the training data's layout is read first (before the test side)
    with pytest.raises(BatchError, match=r"training data.*shape \(7, 1\) for a batch"):
        TracInWE(ExtraPosition().eval(), train, paths).influence(test)


# Labels ------------------------------------------------------------------------------


def test_column_labels_equal_flat_labels(bag):
    model, train, test, paths = bag
    tracin = TracInWE(model, train, paths, batch_size=8)
    assert_close(tracin.influence((test[0], test[1][:, None])), tracin.influence(test))


def test_float_labels_are_a_clear_error(bag):
    model, train, test, paths = bag
    with pytest.raises(BatchError, match=r"floats .*labels.long\(\)"):
        TracInWE(model, train, paths).influence((test[0], test[1].float()))


def test_a_failing_loss_names_the_shapes(bag):
    model, train, test, paths = bag
    tracin = TracInWE(model, train, paths, loss_fn=nn.MSELoss(reduction="none"))
    with pytest.raises(
        BatchError, match=r"loss_fn\(logits, labels\)` failed .*\(5, 3\)"
    ):
        tracin.influence(test)


# Learning rates and checkpoints ---------------------------------------------------


@pytest.mark.parametrize(
    "rate, message",
    [
        (-0.1, ">= 0"),
        ("abc", "must be a number"),
        ("0.1", "must be a number"),
        (True, "must be a number"),
        (None, "must be a number"),
        ([0.1], "must be a number"),
        (float("nan"), ">= 0"),
    ],
)
def test_bad_learning_rates_name_the_file(bag, tmp_path, rate, message):
    model, train, test, _ = bag
    path = str(tmp_path / "odd-rate.pt")
    torch.save({"model_state_dict": model.state_dict(), "learning_rate": rate}, path)
    with pytest.raises(CheckpointError, match=f"odd-rate.pt.*{message}"):
        TracInWE(model, train, path).self_influence()


def test_a_loader_returning_a_negative_rate_is_refused(bag):
    model, train, test, paths = bag
    tracin = TracInWE(model, train, paths, checkpoints_load_func=lambda m, p: -1.0)
    with pytest.raises(CheckpointError, match=">= 0"):
        tracin.self_influence()


def test_bare_state_dict_warns_once(bag, tmp_path, monkeypatch):
    model, train, test, _ = bag
    monkeypatch.setattr(checkpoints_module, "_warned_bare_state_dict", False)
    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f"bare{i}.pt"))
        torch.save(model.state_dict(), paths[-1])
    with pytest.warns(
        UserWarning, match="bare state dict .* learning rate 1.0"
    ) as seen:
        TracInWE(model, train, paths).self_influence()
        TracInWE(model, train, paths).self_influence()
    assert len([w for w in seen if "bare state dict" in str(w.message)]) == 1


def test_a_folder_inside_the_checkpoint_folder_is_named(bag, tmp_path):
    model, train, test, paths = bag
    (tmp_path / "subfolder").mkdir()
    with pytest.raises(CheckpointError, match="subfolder' is a folder"):
        TracInWE(model, train, str(tmp_path)).influence(test)


# Argument types -----------------------------------------------------------------------


def test_float_train_indices_are_refused(bag):
    model, train, test, paths = bag
    tracin = TracInWE(model, train, paths)
    with pytest.raises(ValueError, match="integer indices"):
        tracin.word_influence(test, torch.full((5, 2), 1.7))


@pytest.mark.parametrize(
    "option, message",
    [
        ({"shard_size": 2.5}, "shard_size"),
        ({"shard_size": 0}, "shard_size"),
        ({"projection_dim": -3}, "projection_dim"),
        ({"projection_dim": 2.0}, "projection_dim"),
        ({"dtype": "int8"}, "dtype"),
    ],
)
def test_bad_index_options(bag, tmp_path, option, message):
    model, train, test, paths = bag
    with pytest.raises(ValueError, match=message):
        TracInWE(model, train, paths).build_index(
            str(tmp_path / "index"), show_progress=False, **option
        )


# Found by the hostile review -------------------------------------------------------


def test_a_shuffling_test_loader_is_refused(bag):
    model, train, test, paths = bag
    loader = DataLoader(torch.utils.data.TensorDataset(*test), shuffle=True)
    with pytest.raises(TrainingDataError, match="test DataLoader samples with Random"):
        TracInWE(model, train, paths).influence(loader)


def test_a_collate_fn_that_drops_examples_is_refused(bag):
    model, train, test, paths = bag

    def keep_two_classes(rows):
        kept = [row for row in rows if int(row[1]) != 2]
        return torch.stack([r[0] for r in kept]), torch.stack([r[1] for r in kept])

    loader = DataLoader(train, batch_size=8, collate_fn=keep_two_classes)
    tracin = TracInWE(model, loader, paths, batch_size=None)
    with pytest.raises(TrainingDataError, match="collate_fn drops, splits"):
        tracin.influence(test)


def test_a_sequential_sampler_over_other_data_is_refused(bag):
    from torch.utils.data import SequentialSampler

    model, train, _, paths = bag
    loader = DataLoader(train, batch_size=8, sampler=SequentialSampler(range(12)))
    with pytest.raises(TrainingDataError, match="over other data"):
        TracInWE(model, loader, paths, batch_size=None)


class SequenceFirstBatches(BagNet):
    r"""A classic model whose batches themselves hold (L, B) ids."""

    def forward(self, ids_lb):
        return self.from_embeddings(self.emb(ids_lb).transpose(0, 1), ids_lb.t())


@pytest.mark.parametrize("batch", [9, 6])  # 9: every batch is square
def test_sequence_first_batches_equal_the_batch_first_model(tmp_path, batch):
    model, train, test, paths = bag_setup(str(tmp_path), n_train=18, n_test=9, length=9)
    other = SequenceFirstBatches().eval()
    ids, labels = train.tensors
    batches = [
        (ids[i : i + batch].t(), labels[i : i + batch]) for i in range(0, 18, batch)
    ]
    actual = TracInWE(
        other, DataLoader(batches, batch_size=None), paths, batch_size=None
    )
    expected = TracInWE(model, train, paths, batch_size=batch).influence(test)
    assert_close(actual.influence((test[0].t(), test[1])), expected)


def test_scalar_losses_without_a_reduction_are_probed(bag):
    model, train, test, paths = bag
    expected = TracInWE(model, train, paths).influence(test)
    for loss in (
        lambda out, y: nn.functional.cross_entropy(out, y),
        lambda out, y: nn.functional.cross_entropy(out, y, reduction="sum"),
    ):
        assert_close(
            TracInWE(model, train, paths, loss_fn=loss).influence(test), expected
        )
    odd = TracInWE(model, train, paths, loss_fn=lambda o, y: o.logsumexp(1).max())
    with pytest.raises(BatchError, match="neither the sum nor the mean"):
        odd.influence(test)


@pytest.mark.parametrize(
    "ids, message",
    [([-100], ">= 0"), (5, "iterable"), ("12", "iterable"), ([1.5], "integer")],
)
def test_bad_exclude_token_ids(bag, ids, message):
    model, train, _, paths = bag
    with pytest.raises(ValueError, match=message):
        TracInWE(model, train, paths, exclude_token_ids=ids)


def test_narrow_integer_labels_equal_long_labels_and_bools_are_refused(bag):
    model, train, test, paths = bag
    tracin = TracInWE(model, train, paths)
    assert_close(tracin.influence((test[0], test[1].int())), tracin.influence(test))
    with pytest.raises(BatchError, match="booleans"):
        tracin.influence((test[0], test[1] > 0))


def test_a_left_padded_square_batch_is_read_batch_first(tmp_path):
    # 9 test texts of 9 positions: the shape cannot tell the layout. Left padding
    # (pads leading each row) once read as sequence-first (pads trailing each
    # column) and transposed the batch; the bag model ignores positions, so the
    # left-padded batch must score as the right-padded one.
    model, train, test, paths = bag_setup(str(tmp_path), n_train=18, n_test=9, length=9)
    ids, labels = test
    left = torch.full_like(ids, PAD)
    for i, row in enumerate(ids):
        tokens = row[row != PAD]
        left[i, ids.shape[1] - len(tokens) :] = tokens
    expected = TracInWE(model, train, paths, batch_size=4).influence(test)
    tracin = TracInWE(model, train, paths, batch_size=4)
    assert_close(tracin.influence((left, labels)), expected)


def test_a_pad_id_before_real_tokens_in_a_square_test_batch(tmp_path):
    # Found by the property test: the test side, read before any training
    # batch, took a 2 x 2 batch with a leading pad for sequence-first.
    torch.manual_seed(0)
    model = BagNet(vocab=12, dim=4).eval()
    paths = save_checkpoints(model, str(tmp_path), count=2, seed=0)
    ids = torch.tensor([[0, 0], [0, 0], [0, 0], [0, 0], [0, 1], [0, 0]])
    labels = torch.zeros(6, dtype=torch.long)
    train, test = (ids[:4], labels[:4]), (ids[4:], labels[4:])
    tracin = TracInWE(model, TensorDataset(*train), paths, batch_size=1)
    assert_close(tracin.influence(test), dense_reference(model, train, test, paths))
