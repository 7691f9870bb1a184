#!/usr/bin/env python3

r"""
Word contributions of chosen (test, training) pairs: both texts' position
gradients at every checkpoint, each position scored against the other text's
word rows (:func:`pair_contributions`), summed over the checkpoints.
"""

from typing import Any, Iterable, Optional

import torch
from torch import Tensor

from captum_tracin_we._data.model_adapter import padding_id
from captum_tracin_we._data.same_passes import SamePasses
from captum_tracin_we._gradients.token_choice import weighted_positions
from captum_tracin_we._gradients.word_gradients import WordGradients
from captum_tracin_we._gradients.word_rows import word_rows
from captum_tracin_we._scoring.normalization import inverse_norms
from captum_tracin_we._scoring.shared_tokens import self_scores
from captum_tracin_we._scoring.word_contributions import (
    WordInfluence,
    pair_contributions,
)


def pair_word_influence(
    tracin: Any,
    test_batches: Iterable[Any],
    indices: Tensor,
    weights: Optional[Tensor],
    bar: Any,
) -> WordInfluence:
    r"""
    The body of :meth:`TracInWE.word_influence`.

    Args:
        tracin (TracInWE): The method (its gradient source, training data,
                    losses and checkpoint pass are used).
        test_batches (iterable): The ``n_test`` test examples, as batches.
        indices (Tensor): ``(n_test, m)`` checked training indices.
        weights (Tensor or None): IDF weights ``(vocab_size,)``, or None.
        bar (tqdm): Progress bar, updated per batch.

    Returns:
        word_influence (WordInfluence): See :meth:`TracInWE.word_influence`.
    """
    unique, inverse = torch.unique(indices, return_inverse=True)
    source = tracin.gradient_source
    pad_id = padding_id(tracin.model, tracin.embedding_layer)
    test_c = train_c = None
    source.learn_layout(tracin.training_data.batches())  # before the test side
    test_passes = SamePasses(role="test")
    for loaded in tracin.checkpoint_pass():
        digests = test_passes.start()
        test = source.stacked(
            test_batches, tracin.test_loss_fn, "test", bar, pad_id, digests
        )
        test_passes.finish(digests)
        _check_rows(indices, test.num_examples)
        examples = tracin.training_data.examples(unique.tolist())
        train = source.stacked(examples, tracin.loss_fn, "training", bar, pad_id)
        test_scale, train_scale = _norm_scales(tracin.normalize, test, train)
        parts = pair_contributions(
            test.token_ids,
            loaded.learning_rate * weighted_positions(test, weights) * test_scale,
            train.token_ids[inverse],
            train.gradients[inverse] * train_scale[inverse][..., None, None],
        )
        if test_c is None:
            test_c, train_c = parts
        else:
            test_c, train_c = test_c + parts[0], train_c + parts[1]
    return WordInfluence(
        scores=train_c.sum(-1).cpu(),
        train_indices=indices,
        test_token_ids=test.token_ids.cpu(),
        train_token_ids=train.token_ids[inverse].cpu(),
        test_contributions=test_c.cpu(),
        train_contributions=train_c.cpu(),
        test_mask=test.real.cpu(),
        train_mask=train.real[inverse].cpu(),
        test_labels=test.labels.cpu(),
        train_labels=train.labels[inverse].cpu(),
    )


def _norm_scales(
    normalize: Optional[str], test: WordGradients, train: WordGradients
) -> "tuple[Tensor, Tensor]":
    r"""Per-example factors of the test ``(n, 1, 1)`` and training ``(m,)``
    position gradients: inverse gradient norms where ``normalize`` asks."""
    ones = test.gradients.new_ones(test.num_examples, 1, 1)
    if normalize is None:
        return ones, train.gradients.new_ones(train.num_examples)
    train_scale = inverse_norms(self_scores(word_rows(train)))
    if normalize == "train":
        return ones, train_scale
    return inverse_norms(self_scores(word_rows(test))).reshape(-1, 1, 1), train_scale


def _check_rows(indices: Tensor, num_test: int) -> None:
    if num_test != indices.shape[0]:
        raise ValueError(
            f"`train_indices` has {indices.shape[0]} rows for {num_test} test "
            "examples; pass one row per test example."
        )
