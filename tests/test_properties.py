#!/usr/bin/env python3

r"""Property-based checks over random token sequences, against brute force."""

import tempfile

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import TensorDataset

from captum_tracin_we import TracInWE
from tests.helpers import PAD, BagNet, assert_close, dense_reference, save_checkpoints

VOCAB = 12  # small, so that texts share many tokens


@st.composite
def token_batches(draw):
    n_train = draw(st.integers(1, 7))
    n_test = draw(st.integers(1, 4))
    length = draw(st.integers(1, 8))
    rows = []
    for _ in range(n_train + n_test):
        size = draw(st.integers(1, length))
        tokens = draw(st.lists(st.integers(0, VOCAB - 1), min_size=size, max_size=size))
        rows.append(tokens + [PAD] * (length - size))
    labels = draw(
        st.lists(
            st.integers(0, 2), min_size=n_train + n_test, max_size=n_train + n_test
        )
    )
    top_k = draw(st.one_of(st.none(), st.integers(1, 4)))
    batch_size = draw(st.integers(1, 8))
    return torch.tensor(rows), torch.tensor(labels), n_train, top_k, batch_size


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token_batches(), st.integers(0, 2**16))
def test_matches_brute_force_on_random_sequences(data, seed):
    ids, labels, n_train, top_k, batch_size = data
    torch.manual_seed(seed)
    model = BagNet(vocab=VOCAB, dim=4).eval()
    with tempfile.TemporaryDirectory() as directory:
        paths = save_checkpoints(model, directory, count=2, seed=seed)
        train = (ids[:n_train], labels[:n_train])
        test = (ids[n_train:], labels[n_train:])
        tracin = TracInWE(
            model,
            TensorDataset(*train),
            paths,
            top_k_words=top_k,
            batch_size=batch_size,
        )
        expected = dense_reference(model, train, test, paths, top_k=top_k)
        assert_close(tracin.influence(test), expected)
        self_expected = dense_reference(
            model, train, train, paths, top_k=top_k
        ).diagonal()
        assert_close(tracin.self_influence(), self_expected)
