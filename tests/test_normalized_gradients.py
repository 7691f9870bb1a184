#!/usr/bin/env python3

r"""Normalised gradients (``normalize``): against Captum's per-example gradients."""

import pytest
import torch
from captum.influence import TracInCP
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from captum_tracin_we import TracInWE, TracInWEError
from tests.helpers import CLS, PAD, assert_close, bag_setup, dense_reference, load_into


@pytest.fixture
def bag(tmp_path):
    return bag_setup(str(tmp_path), n_train=20, n_test=5)


def captum_per_checkpoint(model, train, test, paths):
    r"""Per checkpoint: Captum's ``lr * <g', g>``, ``lr |g'|^2`` and ``lr |g|^2``."""
    for path in paths:
        reference = TracInCP(
            model,
            train,
            [path],
            load_into(),
            layers=["emb"],
            loss_fn=nn.CrossEntropyLoss(reduction="none"),
            batch_size=16,
        )
        rate = load_into()(model, path)
        yield (
            rate,
            reference.influence(test).double(),
            reference.self_influence(test).double(),
            reference.self_influence().double(),
        )


def cosine_reference(model, train, test, paths, normalize):
    r"""``sum_c lr_c <g', g> / (|g'| |g|)`` (or ``/ |g|`` for "train")."""
    total = 0.0
    for rate, products, test_self, train_self in captum_per_checkpoint(
        model, train, test, paths
    ):
        train_norms = (train_self / rate).sqrt()
        test_norms = (test_self / rate).sqrt() if normalize == "cosine" else 1.0
        if normalize == "cosine":
            test_norms = test_norms.reshape(-1, 1)
        total = total + products / (test_norms * train_norms.reshape(1, -1))
    return total


@pytest.mark.parametrize("normalize", ["cosine", "train"])
def test_equals_a_cosine_of_captums_per_example_gradients(bag, normalize):
    model, train, test, paths = bag
    expected = cosine_reference(model, train, test, paths, normalize)
    tracin = TracInWE(model, train, paths, batch_size=6, normalize=normalize)
    assert_close(tracin.influence(test), expected)
    if normalize == "cosine":  # each checkpoint adds lr * cos, in [-lr, lr]
        rates = sum(0.5 + i for i in range(len(paths)))
        assert tracin.influence(test).abs().max() <= rates * (1 + 1e-6)


@pytest.mark.parametrize("normalize", ["cosine", "train"])
def test_self_influence_is_the_normalised_score_with_itself(bag, normalize):
    model, train, _, paths = bag
    tracin = TracInWE(model, train, paths, batch_size=7, normalize=normalize)
    expected = 0.0
    for rate, _, _, train_self in captum_per_checkpoint(
        model, train, train.tensors, paths
    ):
        norms = (train_self / rate).sqrt()
        expected = expected + (rate if normalize == "cosine" else rate * norms)
    assert_close(tracin.self_influence(), torch.as_tensor(expected).expand(20))
    assert_close(tracin.self_influence(), tracin.influence(train.tensors).diagonal())


@pytest.mark.parametrize("normalize", ["cosine", "train"])
@pytest.mark.parametrize("options", [{}, {"top_k_words": 3}, {"idf_power": 1.0}])
def test_index_and_stream_agree_and_batching_does_not_matter(
    bag, tmp_path, normalize, options
):
    model, train, test, paths = bag
    streamed = TracInWE(
        model, train, paths, batch_size=4, normalize=normalize, **options
    )
    expected, expected_self = streamed.influence(test), streamed.self_influence()
    other = TracInWE(model, train, paths, batch_size=20, normalize=normalize, **options)
    assert_close(
        other.influence(DataLoader(TensorDataset(*test), batch_size=2)), expected
    )
    streamed.build_index(str(tmp_path / "index"))
    indexed = TracInWE(
        model, train, paths, normalize=normalize, index=str(tmp_path / "index"),
        **options,
    )  # fmt: skip
    assert_close(indexed.influence(test), expected)
    assert_close(indexed.self_influence(), expected_self)
    assert_close(indexed.influence(test, aggregate=True)[0], expected.sum(0))


@pytest.mark.parametrize("normalize", ["cosine", "train"])
def test_with_top_k_and_idf_it_is_the_brute_force_score_over_norms(bag, normalize):
    model, train, test, paths = bag
    tracin = TracInWE(
        model, train, paths, top_k_words=3, idf_power=1.0, normalize=normalize
    )
    weights = tracin.token_weights()
    expected = 0.0
    for i, path in enumerate(paths):
        rate = 0.5 + i
        product = dense_reference(model, train.tensors, test, [path], 3, (), weights)
        train_sq = dense_reference(model, train.tensors, train.tensors, [path], 3)
        test_sq = dense_reference(model, test, test, [path], 3)
        norms = train_sq.diagonal().div(rate).sqrt().reshape(1, -1)
        if normalize == "cosine":
            norms = norms * test_sq.diagonal().div(rate).sqrt().reshape(-1, 1)
        expected = expected + product / norms
    assert_close(tracin.influence(test), expected)


@pytest.mark.parametrize("normalize", ["cosine", "train"])
def test_word_contributions_sum_to_the_normalised_score(bag, normalize):
    model, train, test, paths = bag
    tracin = TracInWE(model, train, paths, batch_size=8, normalize=normalize)
    top = tracin.influence(test, k=4, proponents=False)
    words = tracin.word_influence(test, top.indices)
    assert_close(words.scores, top.influence_scores)
    assert_close(words.train_contributions.sum(-1), words.scores)
    assert_close(words.test_contributions.sum(-1), words.scores)


def test_an_example_with_no_counted_token_scores_zero_not_nan(bag):
    model, train, test, paths = bag
    ids, labels = train.tensors
    ids = ids.clone()
    ids[0] = PAD
    ids[0, 0] = CLS  # only an excluded token left
    data = TensorDataset(ids, labels)
    tracin = TracInWE(model, data, paths, exclude_token_ids=[CLS], normalize="cosine")
    scores = tracin.influence(test)
    assert torch.isfinite(scores).all() and (scores[:, 0] == 0).all()
    assert tracin.self_influence()[0] == 0


@pytest.mark.parametrize("bad", ["cos", "Cosine", 1, True])
def test_a_bad_normalize_is_named(bag, bad):
    model, train, _, paths = bag
    with pytest.raises(TracInWEError, match=r"`normalize` must be None, 'cosine'"):
        TracInWE(model, train, paths, normalize=bad)
