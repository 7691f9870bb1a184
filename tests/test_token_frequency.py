#!/usr/bin/env python3

r"""frequent_token_ids: document frequency on texts with known counts."""

import pytest
import torch

from captum_tracin_we import TracInWE, frequent_token_ids
from tests.helpers import CLS, PAD, SEP, assert_close, bag_setup, dense_reference


def test_counts_each_token_once_per_text_and_ignores_padding():
    ids = torch.tensor(
        [
            [2, 7, 7, 7, 3, 0],  # 7 repeats: still one text
            [2, 5, 9, 3, 0, 0],
            [2, 5, 3, 0, 0, 0],
        ]
    )
    # document frequency: 2 and 3 in 3 texts, 5 in 2, 7 and 9 in 1
    assert frequent_token_ids(ids, 3, ignore_ids=[0]) == [2, 3, 5]
    assert frequent_token_ids(ids, 5, ignore_ids=[0]) == [2, 3, 5, 7, 9]
    assert frequent_token_ids(ids, 1) == [0]  # padding too is in every text
    # n beyond the distinct tokens returns only tokens that occur
    assert frequent_token_ids(ids, 50, ignore_ids=[0, 2, 3]) == [5, 7, 9]


def test_accepts_batches_and_ragged_lists():
    ids = torch.tensor([[2, 7, 3], [2, 5, 3], [2, 5, 3]])
    from_batches = frequent_token_ids([ids[:2], ids[2:]], 3)
    from_lists = frequent_token_ids([[2, 7, 3], [2, 5, 3], [2, 5, 3]], 3)
    assert from_batches == from_lists == frequent_token_ids(ids, 3) == [2, 3, 5]


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="positive"):
        frequent_token_ids(torch.tensor([[1, 2]]), 0)
    with pytest.raises(ValueError, match="No texts"):
        frequent_token_ids([], 3)
    with pytest.raises(TypeError, match="integers"):
        frequent_token_ids(torch.rand(2, 3), 3)
    with pytest.raises(ValueError, match="non-negative"):
        frequent_token_ids(torch.tensor([[1, -4]]), 3)


def test_excluding_the_frequent_tokens_drops_exactly_their_terms(tmp_path):
    model, train, test, paths = bag_setup(str(tmp_path))
    stop = frequent_token_ids(train.tensors[0], 4, ignore_ids=[PAD])
    assert CLS in stop and SEP in stop  # in every text
    tracin = TracInWE(model, train, paths, exclude_token_ids=stop)
    expected = dense_reference(model, train.tensors, test, paths, exclude=stop)
    scores = tracin.influence(test)
    assert_close(scores, expected)
    plain = TracInWE(model, train, paths).influence(test)
    assert not torch.allclose(scores, plain)
