#!/usr/bin/env python3

r"""
Exact inner products of per-example linear-layer gradients from their factors.

For examples with inputs ``A`` (``S x d_in``) and output gradients ``G``
(``S x d_out``), the weight gradient is ``G^T A``, so

    <G^T A, G'^T A'> = sum_{s,t} (a_s . a'_t) (g_s . g'_t)

(the "ghost" product, about ``S S' (d_in + d_out)`` operations per pair), or
the two ``d_out x d_in`` gradients are formed and multiplied (about
``(S + S') d_in d_out`` per pair, the test side formed once). Each pair of
batches takes the cheaper route; the bias adds ``(sum_s g_s) . (sum_t g'_t)``.
"""

from typing import Optional

import torch
from torch import Tensor

from captum_tracin_we._gradients.layer_gradients import LayerFactors

# Largest intermediate block, in elements (64 MiB of float32).
_MAX_BLOCK = 1 << 24


class LayerQueries:
    r"""
    The test side of one layer at one checkpoint: its factors, and on first
    need the formed gradients ``(n_test, d_out * d_in)``.

    Args:
        factors (LayerFactors): The test examples' factors.
    """

    def __init__(self, factors: LayerFactors) -> None:
        self.factors = factors
        self._formed: Optional[Tensor] = None

    @property
    def num_examples(self) -> int:
        return self.factors.num_examples

    def formed(self) -> Tensor:
        r"""The test examples' weight gradients, ``(n_test, d_out * d_in)``."""
        if self._formed is None:
            self._formed = formed_gradients(self.factors)
        return self._formed


def formed_gradients(factors: LayerFactors) -> Tensor:
    r"""
    Each example's weight gradient ``G^T A``, flattened.

    Returns:
        gradients (Tensor): ``(B, d_out * d_in)`` float32.
    """
    a, g = factors.inputs, factors.output_gradients
    return torch.einsum("bso,bsi->boi", g, a).reshape(a.shape[0], -1)


def layer_scores(queries: LayerQueries, train: LayerFactors) -> Tensor:
    r"""
    Inner products of every (test, training) pair's gradients of one layer,
    weight and bias, at one checkpoint and before the learning rate.

    Args:
        queries (LayerQueries): The test side, ``n_test`` examples.
        train (LayerFactors): One training batch, ``n_train`` examples.

    Returns:
        scores (Tensor): ``(n_test, n_train)``.
    """
    test = queries.factors
    if _ghost_is_cheaper(test, train, queries._formed is not None):
        scores = _ghost_scores(test, train)
    else:
        scores = queries.formed() @ formed_gradients(train).T
    if train.has_bias:
        scores = scores + test.output_gradients.sum(1) @ train.output_gradients.sum(1).T
    return scores


def layer_self_scores(factors: LayerFactors) -> Tensor:
    r"""
    Each example's squared gradient norm on one layer (weight and bias), at one
    checkpoint and before the learning rate.

    Returns:
        scores (Tensor): ``(B,)``.
    """
    a, g = factors.inputs, factors.output_gradients
    positions, d_in, d_out = a.shape[1], a.shape[2], g.shape[2]
    if positions * (d_in + d_out) <= d_in * d_out:
        scores = ((a @ a.transpose(1, 2)) * (g @ g.transpose(1, 2))).sum((1, 2))
    else:
        scores = formed_gradients(factors).pow(2).sum(1)
    if factors.has_bias:
        scores = scores + g.sum(1).pow(2).sum(1)
    return scores


def _ghost_is_cheaper(test: LayerFactors, train: LayerFactors, formed: bool) -> bool:
    n_test, s_test, d_in = test.inputs.shape
    n_train, s_train, _ = train.inputs.shape
    d_out = test.output_gradients.shape[2]
    ghost = n_test * n_train * s_test * s_train * (d_in + d_out)
    formed_cost = (n_train * s_train + n_test * n_train) * d_in * d_out
    if not formed:
        formed_cost += n_test * s_test * d_in * d_out
    return ghost <= formed_cost


def _ghost_scores(test: LayerFactors, train: LayerFactors) -> Tensor:
    n_test, s_test, _ = test.inputs.shape
    n_train, s_train, _ = train.inputs.shape
    block = max(1, _MAX_BLOCK // max(1, n_train * s_test * s_train))
    parts = []
    for start in range(0, n_test, block):
        a = test.inputs[start : start + block]
        g = test.output_gradients[start : start + block]
        inputs = torch.einsum("csi,bti->cbst", a, train.inputs)
        grads = torch.einsum("cso,bto->cbst", g, train.output_gradients)
        parts.append((inputs * grads).sum((2, 3)))
    return torch.cat(parts)
