#!/usr/bin/env python3

r"""TracIn-WE-IDF (``idf_power``): against scikit-learn's IDF and brute force."""

import math

import numpy as np
import pytest
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from torch.utils.data import DataLoader, TensorDataset

from captum_tracin_we import BatchError, IndexMismatchError, TracInWE
from tests.helpers import (
    CLS,
    PAD,
    SEP,
    VOCAB,
    assert_close,
    bag_setup,
    dense_reference,
    dict_dataset,
    load_into,
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


class _SequenceFirstMasked(torch.nn.Module):
    r"""Takes ``input_ids`` and ``attention_mask`` as ``(L, B)``; no padding_idx,
    so only the mask says which positions are padding."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(VOCAB, 8)
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, input_ids, attention_mask):
        embedded = torch.tanh(self.emb(input_ids)) * attention_mask.unsqueeze(-1)
        return self.fc(embedded.sum(0) / attention_mask.sum(0).unsqueeze(-1))


class _BatchFirstMasked(_SequenceFirstMasked):
    def forward(self, input_ids, attention_mask):
        return super().forward(input_ids.T, attention_mask.T)


def _masked_data(n=12, length=7):
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 40, (n, length), generator=generator)
    mask = torch.ones(n, length, dtype=torch.long)
    mask[::2, 4:] = 0
    ids[::2, 4:] = 50  # token 50 only ever at masked positions
    labels = torch.randint(0, 3, (n,), generator=generator)
    return ids, mask, labels


def _batches(ids, mask, labels, size, sequence_first):
    def layout(tensor):
        return tensor.T.contiguous() if sequence_first else tensor

    return [
        {
            "input_ids": layout(ids[i : i + size]),
            "attention_mask": layout(mask[i : i + size]),
            "labels": labels[i : i + size],
        }
        for i in range(0, len(ids), size)
    ]


@pytest.mark.parametrize("power", [None, 1.0])
def test_a_sequence_first_attention_mask_is_read_in_its_layout(tmp_path, power):
    ids, mask, labels = _masked_data()
    model = _SequenceFirstMasked()
    path = str(tmp_path / "c.pt")
    torch.save({"model_state_dict": model.state_dict(), "learning_rate": 1.0}, path)
    batch_first = _BatchFirstMasked()
    batch_first.load_state_dict(model.state_dict())
    seq = _batches(ids, mask, labels, 4, sequence_first=True)
    flat = _batches(ids, mask, labels, 4, sequence_first=False)
    a = TracInWE(model, DataLoader(seq, batch_size=None), [path], idf_power=power)
    b = TracInWE(
        batch_first, DataLoader(flat, batch_size=None), [path], idf_power=power
    )
    # Masked positions never count: the influence equals the batch-first one.
    assert_close(a.influence(seq[0]), b.influence(flat[0]))
    if power is not None:
        assert float(a.token_weights()[50]) == pytest.approx(math.log(13) + 1)


def test_an_attention_mask_that_does_not_fit_the_ids_is_an_error(tmp_path):
    ids, mask, labels = _masked_data()
    model = _BatchFirstMasked()
    path = str(tmp_path / "c.pt")
    torch.save({"model_state_dict": model.state_dict(), "learning_rate": 1.0}, path)

    class Truncating(_BatchFirstMasked):
        def forward(self, input_ids, attention_mask):  # embeds (B, 5) of (B, 7)
            embedded = torch.tanh(self.emb(input_ids[:, :5]))
            return self.fc(embedded.mean(1))

    truncating = Truncating()
    truncating.load_state_dict(model.state_dict())
    data = _batches(ids, mask, labels, 4, sequence_first=False)
    tracin = TracInWE(truncating, DataLoader(data, batch_size=None), [path])
    with pytest.raises(BatchError, match="attention_mask has shape"):
        tracin.influence(data[0])


def test_weights_follow_the_data_when_it_changes_between_calls(bag):
    model, train, test, paths = bag
    tracin = TracInWE(model, train, paths, idf_power=1.0, batch_size=8)
    tracin.influence(test)
    ids = train.tensors[0]
    ids[:, 1:4] = torch.where(ids[:, 1:4] != PAD, torch.tensor(5), ids[:, 1:4])
    fresh = TracInWE(model, train, paths, idf_power=1.0, batch_size=8)
    assert_close(tracin.influence(test), fresh.influence(test))
    assert_close(tracin.token_weights(), sklearn_idf(ids), rel=1e-6)


def test_data_changed_after_the_index_was_built_is_caught(bag, tmp_path):
    model, train, test, paths = bag
    tracin = TracInWE(model, train, paths, idf_power=1.0, batch_size=8)
    tracin.build_index(str(tmp_path / "index"))
    train.tensors[0][3, 1] = 4 if int(train.tensors[0][3, 1]) != 4 else 5
    with pytest.raises(IndexMismatchError):
        tracin.influence(test)


def test_a_read_once_iterable_is_an_error_not_unweighted_scores(bag, tmp_path):
    model, train, test, paths = bag

    class ReadOnce(torch.utils.data.IterableDataset):
        def __init__(self):
            self.rows = iter(list(zip(*train.tensors)))

        def __iter__(self):
            return self.rows

    with pytest.raises(BatchError, match="read only once|no examples|empty"):
        TracInWE(
            model, DataLoader(ReadOnce(), batch_size=8), paths, idf_power=1.0
        ).influence(test)


def test_weights_do_not_depend_on_the_models_mode(bag):
    model, train, _, paths = bag

    class WordDropout(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, ids):
            if self.training:
                ids = ids.masked_fill(ids == 5, 4)
            return self.inner(ids)

    wrapped = WordDropout(model).train()
    load = load_into("inner")
    tracin = TracInWE(wrapped, train, paths, load, idf_power=1.0, batch_size=8)
    assert_close(tracin.token_weights(), sklearn_idf(train.tensors[0]), rel=1e-6)
    assert wrapped.training


def test_numpy_and_tensor_powers_and_overflow(bag):
    model, train, test, paths = bag
    expected = TracInWE(model, train, paths, idf_power=2.0).influence(test)
    for power in (np.float32(2.0), np.int64(2), torch.tensor(2.0)):
        tracin = TracInWE(model, train, paths, idf_power=power)
        assert_close(tracin.influence(test), expected)
    with pytest.raises(ValueError, match="overflows"):
        TracInWE(model, train, paths, idf_power=80).influence(test)


def test_errors_in_the_document_frequency_pass_name_the_training_data(bag):
    model, train, test, paths = bag
    ids = train.tensors[0].clone()
    ids[2, 1] = VOCAB + 5
    bad = TensorDataset(ids, train.tensors[1])
    with pytest.raises(BatchError, match="^In the training data"):
        TracInWE(model, bad, paths, idf_power=1.0).influence(test)
