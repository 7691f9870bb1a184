#!/usr/bin/env python3

r"""TracIn-WE-IDF (``idf_power``): against scikit-learn's IDF and brute force."""

import math

import pytest
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from torch.utils.data import DataLoader, TensorDataset

from captum_tracin_we import TracInWE
from tests.helpers import (
    CLS,
    PAD,
    SEP,
    VOCAB,
    assert_close,
    bag_setup,
    dense_reference,
    dict_dataset,
    tiny_hf_classifier,
)


@pytest.fixture
def bag(tmp_path):
    return bag_setup(str(tmp_path), n_train=30, n_test=5)


def sklearn_idf(ids: torch.Tensor, exclude=()) -> torch.Tensor:
    r"""idf per token id from scikit-learn, on the ids written as words."""
    texts = [
        " ".join(f"t{int(t)}" for t in row if int(t) != PAD and int(t) not in exclude)
        for row in ids
    ]
    vectorizer = TfidfVectorizer(token_pattern=r"\S+", smooth_idf=True).fit(texts)
    idf = torch.full((VOCAB,), math.log(len(texts) + 1) + 1, dtype=torch.float64)
    for word, column in vectorizer.vocabulary_.items():
        idf[int(word[1:])] = vectorizer.idf_[column]
    return idf


def test_weights_are_scikit_learns_smooth_idf(bag):
    model, train, _, paths = bag
    for power in (0.5, 1.0, 2.0):
        tracin = TracInWE(model, train, paths, idf_power=power, batch_size=7)
        expected = sklearn_idf(train.tensors[0]) ** power
        assert_close(tracin.token_weights(), expected, rel=1e-6)
    assert TracInWE(model, train, paths).token_weights() is None


@pytest.mark.parametrize("power", [0.5, 2.0])
@pytest.mark.parametrize("top_k", [None, 3])
def test_equals_brute_force(bag, power, top_k):
    model, train, test, paths = bag
    weights = sklearn_idf(train.tensors[0]) ** power
    expected = dense_reference(
        model, train.tensors, test, paths, top_k=top_k, token_weights=weights
    )
    tracin = TracInWE(model, train, paths, idf_power=power, top_k_words=top_k)
    assert_close(tracin.influence(test), expected)
    # The weights really change the scores: the unweighted reference differs.
    plain = dense_reference(model, train.tensors, test, paths, top_k=top_k)
    assert (plain - expected).abs().max() > 1e-3 * expected.abs().max()


def test_excluded_tokens_do_not_count_towards_df(bag):
    model, train, test, paths = bag
    exclude = [CLS, SEP, 7]
    tracin = TracInWE(model, train, paths, idf_power=1.0, exclude_token_ids=exclude)
    weights = sklearn_idf(train.tensors[0], exclude)
    kept = torch.ones(VOCAB, dtype=torch.bool)
    kept[exclude + [PAD]] = False
    assert_close(tracin.token_weights()[kept], weights[kept], rel=1e-6)
    expected = dense_reference(
        model, train.tensors, test, paths, exclude=exclude, token_weights=weights
    )
    assert_close(tracin.influence(test), expected)


def test_power_zero_is_the_papers_method(bag):
    model, train, test, paths = bag
    plain = TracInWE(model, train, paths).influence(test)
    assert_close(TracInWE(model, train, paths, idf_power=0).influence(test), plain)


def test_independent_of_batch_size_and_padding(bag):
    model, train, test, paths = bag
    reference = TracInWE(model, train, paths, idf_power=1.0, batch_size=1)
    expected = reference.influence(test)
    padded_ids = torch.cat([train.tensors[0], torch.full((len(train), 5), PAD)], dim=1)
    padded = TensorDataset(padded_ids, train.tensors[1])
    other = TracInWE(model, padded, paths, idf_power=1.0, batch_size=13)
    assert_close(other.influence(test), expected)
    loader = DataLoader(train, batch_size=4)
    assert_close(
        TracInWE(model, loader, paths, idf_power=1.0).influence(
            DataLoader(TensorDataset(*test), batch_size=2)
        ),
        expected,
    )


def test_word_contributions_sum_to_the_weighted_score(bag):
    model, train, test, paths = bag
    tracin = TracInWE(model, train, paths, idf_power=1.0, batch_size=8)
    top = tracin.influence(test, k=4)
    words = tracin.word_influence(test, top.indices)
    assert_close(words.scores, top.influence_scores)
    assert_close(words.train_contributions.sum(-1), words.scores)
    assert_close(words.test_contributions.sum(-1), words.scores)


def test_self_influence_is_the_weighted_diagonal(bag):
    model, train, _, paths = bag
    tracin = TracInWE(model, train, paths, idf_power=2.0, batch_size=8)
    self_scores = tracin.self_influence()
    assert_close(self_scores, tracin.influence(train.tensors).diagonal())
    plain = TracInWE(model, train, paths, batch_size=8).self_influence()
    assert (self_scores - plain).abs().max() > 1e-3 * plain.abs().max()


def test_index_gives_the_same_weighted_scores(bag, tmp_path):
    model, train, test, paths = bag
    tracin = TracInWE(model, train, paths, idf_power=1.0, batch_size=8)
    expected, expected_self = tracin.influence(test), tracin.self_influence()
    tracin.build_index(str(tmp_path / "index"))
    indexed = TracInWE(
        model, train, paths, idf_power=1.0, index=str(tmp_path / "index")
    )
    assert_close(indexed.influence(test), expected)
    assert_close(indexed.self_influence(), expected_self)
    # One index serves both: the weights are applied at query time.
    plain = TracInWE(model, train, paths, index=str(tmp_path / "index"))
    assert_close(plain.influence(test), TracInWE(model, train, paths).influence(test))


def test_hf_classifier_with_attention_mask(tmp_path):
    model = tiny_hf_classifier("bert")
    ids = torch.randint(5, 50, (12, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[::2, 5:] = 0  # masked positions hold real ids: they must not count
    labels = torch.randint(0, 3, (12,), generator=torch.Generator().manual_seed(1))
    path = str(tmp_path / "c.pt")
    torch.save({"model_state_dict": model.state_dict(), "learning_rate": 1.0}, path)
    data = dict_dataset(ids, labels)
    for row, m in zip(data, mask):
        row["attention_mask"] = m
    tracin = TracInWE(model, DataLoader(data, batch_size=4), [path], idf_power=1.0)
    texts = ids.masked_fill(mask == 0, PAD)
    weights = tracin.token_weights()
    df = torch.zeros(weights.numel())
    for row in texts:
        df[torch.unique(row[row != PAD])] += 1
    expected = torch.log(torch.tensor(13.0) / (1 + df)) + 1
    assert_close(weights, expected, rel=1e-6)


@pytest.mark.parametrize(
    "bad, error, words",
    [
        (-1.0, ValueError, ">= 0"),
        (float("nan"), ValueError, "finite"),
        (float("inf"), ValueError, "finite"),
        ("idf", TypeError, "number"),
        (True, TypeError, "number"),
    ],
)
def test_bad_idf_power_is_named(bag, bad, error, words):
    model, train, _, paths = bag
    with pytest.raises(error, match=words):
        TracInWE(model, train, paths, idf_power=bad)
