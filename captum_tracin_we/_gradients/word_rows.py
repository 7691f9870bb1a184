#!/usr/bin/env python3

r"""
Word rows: each example's distinct tokens and, per token, the sum of the
gradients at the embedding output over the positions holding it (the non-zero
rows of the example's embedding-table gradient).
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from captum_tracin_we._gradients.word_gradients import WordGradients


@dataclass
class WordRows:
    r"""
    The non-zero rows of the embedding-table gradients of a set of examples.

    Attributes:
        example_index (Tensor): ``(K,)`` long, which example each row belongs to.
        token_ids (Tensor): ``(K,)`` long, the token of each row; each
                    ``(example, token)`` pair appears at most once.
        vectors (Tensor): ``(K, D)`` float32, the word gradients.
        num_examples (int): Number of examples (some may have no rows).
    """

    example_index: Tensor
    token_ids: Tensor
    vectors: Tensor
    num_examples: int

    @staticmethod
    def cat(parts: "list[WordRows]") -> "WordRows":
        r"""Concatenates rows of consecutive example sets, renumbering examples."""
        offsets, total = [], 0
        for part in parts:
            offsets.append(total)
            total += part.num_examples
        return WordRows(
            example_index=torch.cat(
                [p.example_index + o for p, o in zip(parts, offsets)]
            ),
            token_ids=torch.cat([p.token_ids for p in parts]),
            vectors=torch.cat([p.vectors for p in parts]),
            num_examples=total,
        )

    def summed(self) -> "WordRows":
        r"""All examples added into one (for ``aggregate=True``)."""
        return word_rows_from_positions(
            torch.zeros_like(self.example_index),
            self.token_ids,
            self.vectors,
            num_examples=1,
        )

    def to(self, device: "torch.device | str") -> "WordRows":
        return WordRows(
            self.example_index.to(device),
            self.token_ids.to(device),
            self.vectors.to(device),
            self.num_examples,
        )

    def weighted(self, token_weights: Tensor) -> "WordRows":
        r"""Each row times the weight of its token (``token_weights[token_id]``)."""
        weights = token_weights.to(self.vectors.device)[self.token_ids]
        return WordRows(
            self.example_index,
            self.token_ids,
            self.vectors * weights.unsqueeze(1),
            self.num_examples,
        )

    def scaled(self, factor: float) -> "WordRows":
        return WordRows(
            self.example_index, self.token_ids, self.vectors * factor, self.num_examples
        )


def word_rows(word_gradients: WordGradients) -> WordRows:
    r"""
    Sums the position gradients of each example by token id.

    Args:
        word_gradients (WordGradients): Position gradients of a batch.

    Returns:
        rows (WordRows): One row per (example, token) among counted positions.
    """
    examples, positions = word_gradients.mask.nonzero(as_tuple=True)
    return word_rows_from_positions(
        examples,
        word_gradients.token_ids[examples, positions],
        word_gradients.gradients[examples, positions],
        num_examples=word_gradients.num_examples,
    )


def word_rows_from_positions(
    example_index: Tensor, token_ids: Tensor, vectors: Tensor, num_examples: int
) -> WordRows:
    r"""Sums ``vectors`` that share an (example, token) pair into one row."""
    span = int(token_ids.max()) + 1 if token_ids.numel() else 1
    keys, inverse = torch.unique(example_index * span + token_ids, return_inverse=True)
    summed = vectors.new_zeros(keys.shape[0], vectors.shape[-1])
    summed.index_add_(0, inverse, vectors)
    return WordRows(
        example_index=keys // span,
        token_ids=keys % span,
        vectors=summed,
        num_examples=num_examples,
    )
