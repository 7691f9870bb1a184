#!/usr/bin/env python3

r"""
Stage 2 of TracIn-WE: aggregate position gradients into word gradients (the
non-zero rows of the embedding-table gradient) and score pairs of examples by
their shared tokens.

For examples ``x`` and ``x'`` the score at one checkpoint is
``sum over tokens w in both of <row_w(x), row_w(x')>``, where ``row_w(x)`` is the
sum of the position gradients of ``x`` at the positions holding ``w``. This is
exactly the dot product of the two embedding-table gradients.
"""

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from captum_tracin_we._gradients.word_rows import (  # split out
    WordRows,
)

# Largest dense query block (compressed vocabulary x dim x queries), in elements.
_MAX_QUERY_BLOCK = 1 << 24


def self_scores(rows: WordRows, token_weights: "Tensor | None" = None) -> Tensor:
    r"""
    TracIn-WE of each example with itself at one checkpoint (before the learning
    rate): the squared norm of its embedding-table gradient, each token's part
    times ``token_weights[token]`` if given.

    Returns:
        scores (Tensor): ``(num_examples,)``.
    """
    scores = rows.vectors.new_zeros(rows.num_examples)
    squared = rows.vectors.pow(2).sum(1)
    if token_weights is not None:
        squared = squared * token_weights.to(squared.device)[rows.token_ids]
    return scores.index_add_(0, rows.example_index, squared)


def shared_token_scores(queries: WordRows, train: WordRows) -> Tensor:
    r"""
    Scores every (query, train) pair by the word gradients of their shared
    tokens, at one checkpoint and before the learning rate.

    The queries are written densely in a vocabulary compressed to their own
    tokens; the training rows whose token no query has are dropped; the
    remaining training rows form a sparse ``(rows, tokens x dim)`` matrix that
    multiplies the dense query block. Work is proportional to the number of
    training word rows that share a token with some query.

    Args:
        queries (WordRows): Word gradients of ``n_query`` examples.
        train (WordRows): Word gradients of ``n_train`` examples.

    Returns:
        scores (Tensor): ``(n_query, n_train)``; positive means the training
                    example's gradient step lowers the query's loss (proponent).
    """
    dim = train.vectors.shape[-1]
    scores = train.vectors.new_zeros(queries.num_examples, train.num_examples)
    block = max(1, _MAX_QUERY_BLOCK // max(1, dim * _distinct(queries.token_ids)))
    for start in range(0, queries.num_examples, block):
        stop = min(start + block, queries.num_examples)
        part = queries.example_index >= start
        part &= queries.example_index < stop
        scores[start:stop] = _block_scores(
            queries.example_index[part] - start,
            queries.token_ids[part],
            queries.vectors[part],
            stop - start,
            train,
        )
    return scores


def _distinct(values: Tensor) -> int:
    return int(torch.unique(values).numel())


def _block_scores(
    query_example: Tensor,
    query_tokens: Tensor,
    query_vectors: Tensor,
    n_query: int,
    train: WordRows,
) -> Tensor:
    scores = train.vectors.new_zeros(n_query, train.num_examples)
    if query_tokens.numel() == 0 or train.token_ids.numel() == 0:
        return scores
    vocab, query_slot = torch.unique(query_tokens, return_inverse=True)
    slot = torch.searchsorted(vocab, train.token_ids).clamp_(max=vocab.numel() - 1)
    shared = vocab[slot] == train.token_ids
    if not bool(shared.any()):
        return scores
    slot, vectors = slot[shared], train.vectors[shared]
    dim = vectors.shape[-1]
    dense = query_vectors.new_zeros(vocab.numel(), dim, n_query)
    dense[query_slot, :, query_example] = query_vectors
    per_row = _sparse_rows(slot, vectors, vocab.numel()) @ dense.view(-1, n_query)
    return scores.index_add_(1, train.example_index[shared], per_row.T)


def _sparse_rows(slot: Tensor, vectors: Tensor, vocab_size: int) -> Tensor:
    r"""``(R, vocab_size * D)`` CSR matrix with row r = vectors[r] at block slot[r]."""
    rows, dim = vectors.shape
    device = vectors.device
    crow = torch.arange(0, rows * dim + 1, dim, device=device)
    cols = (slot.unsqueeze(1) * dim + torch.arange(dim, device=device)).reshape(-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            crow,
            cols,
            vectors.reshape(-1),
            size=(rows, vocab_size * dim),
            check_invariants=False,
        )


class QueryGroups:
    r"""
    Query word rows grouped by token, for scoring against training rows that
    are grouped by token too (as in the index): for each shared token ``w``,
    one small matrix product ``R_w Q_w^T`` between the training rows that hold
    ``w`` and the queries that do. Work is the sum over shared tokens of
    ``n_query(w) * n_train(w) * dim``, the least any exact method does.

    How each token's products are added into the scores is chosen once per
    group, when the queries are grouped: a token of one query adds one row of
    the scores; a token of at least ``dense_share`` of the queries adds by
    columns (one ``index_add_`` along the training examples, missing query
    rows zero); any other by flat positions. Each adds each product once, so
    the scores are the same either way.
    """

    dense_share = 0.5

    def __init__(self, queries: WordRows) -> None:
        order = torch.argsort(queries.token_ids, stable=True)
        self.num_examples = queries.num_examples
        self.example_index = queries.example_index[order]
        self.vectors = queries.vectors[order]
        tokens, counts = torch.unique_consecutive(
            queries.token_ids[order], return_counts=True
        )
        self.tokens = tokens.tolist()
        stops = counts.cumsum(0)
        self.spans = list(zip((stops - counts).tolist(), stops.tolist()))
        self._groups = [self._group(start, stop) for start, stop in self.spans]

    def _group(self, start: int, stop: int) -> "_Group":
        rows, owners = self.vectors[start:stop], self.example_index[start:stop]
        if stop - start == 1:
            return _Group(_ONE, _one_row_block(rows), owners, int(owners[0]))
        if stop - start >= self.dense_share * self.num_examples:
            kind = _DENSE if _is_each_row_in_order(owners, self.num_examples) else _SOME
            return _Group(kind, rows, owners, -1)
        return _Group(_FLAT, rows, owners, -1)

    def add_token_scores(
        self, scores: Tensor, group: int, train_vectors: Tensor, train_examples: Tensor
    ) -> None:
        r"""
        ``scores[q, j] += <query row, train row>`` for one token's rows.

        Args:
            scores (Tensor): ``(n_query, n_columns)``, added to in place.
            group (int): The token's position in :attr:`tokens`.
            train_vectors (Tensor): ``(m, dim)`` training rows of the token.
            train_examples (Tensor): ``(m,)`` long, their columns in
                        ``scores``, distinct (one row per example and token).
        """
        found = self._groups[group]
        # (rows, queries): a tall matrix times a few query columns (the
        # queries' transposed view) runs about twice as fast on CPUs as the
        # other order.
        products = train_vectors @ found.block.T
        if found.kind == _ONE:
            scores[found.owner].index_add_(0, train_examples, products[:, 0])
        elif found.kind == _DENSE:
            scores.index_add_(1, train_examples, products.T)
        elif found.kind == _SOME:
            full = products.new_zeros(self.num_examples, len(train_examples))
            full.index_copy_(0, found.owners, products.T)
            scores.index_add_(1, train_examples, full)
        else:
            width = scores.shape[1]
            where = train_examples[:, None] + found.owners[None, :] * width
            scores.view(-1).index_add_(0, where.reshape(-1), products.reshape(-1))


_ONE, _DENSE, _SOME, _FLAT = "one query", "all queries", "most queries", "few"


@dataclass
class _Group:
    r"""One token's queries: how their products are added (``kind``), the
    query rows multiplied (``block``), their examples, and the one query's
    example for ``_ONE``."""

    kind: str
    block: Tensor
    owners: Tensor
    owner: int


def _one_row_block(row: Tensor) -> Tensor:
    r"""
    A single query row as a two-row block, the second zero. BLAS's
    matrix-vector product ran at a third of the speed of a two-column product
    on the benchmark CPU (``benchmarks/bench_index.py``); only the first
    column of the products is used.
    """
    if row.device.type != "cpu":
        return row
    return torch.cat([row, row.new_zeros(1, row.shape[1])])


def _is_each_row_in_order(owners: Tensor, count: int) -> bool:
    r"""True when ``owners`` is ``0, 1, ..., count - 1``."""
    return len(owners) == count and bool(
        (owners == torch.arange(count, device=owners.device)).all()
    )


def grouped_token_scores(queries: WordRows, train: WordRows) -> Tensor:
    r"""
    The same scores as :func:`shared_token_scores`, computed token by token
    (see :class:`QueryGroups`); faster when many training rows are scored
    against many queries at once, as from an index.
    """
    groups = QueryGroups(queries)
    scores = train.vectors.new_zeros(queries.num_examples, train.num_examples)
    order = torch.argsort(train.token_ids, stable=True)
    tokens = train.token_ids[order]
    wanted = torch.tensor(groups.tokens, dtype=tokens.dtype, device=tokens.device)
    starts = torch.searchsorted(tokens, wanted).tolist()
    stops = torch.searchsorted(tokens, wanted, right=True).tolist()
    for group, (start, stop) in enumerate(zip(starts, stops)):
        if stop > start:
            rows = order[start:stop]
            groups.add_token_scores(
                scores,
                group,
                torch.index_select(train.vectors, 0, rows),
                torch.index_select(train.example_index, 0, rows),
            )
    return scores
