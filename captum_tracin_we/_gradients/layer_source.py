#!/usr/bin/env python3

r"""
Layer gradient factors of batches, as every layer-TracIn computation reads
them: one forward and one backward pass per batch, the data fingerprinted as
it passes (so that every checkpoint pass is checked to see the same data).
"""

from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional

import torch
from torch import Tensor
from torch.nn import Module

from captum_tracin_we._data.data_fingerprint import ExampleDigests
from captum_tracin_we._data.model_adapter import ModelAdapter
from captum_tracin_we._gradients.layer_gradients import (
    LayerFactors,
    collect_layer_factors,
)

Factors = Dict[str, LayerFactors]


class LayerGradientSource:
    r"""
    Computes the gradient factors of chosen linear layers, batch by batch.

    Args:
        adapter (ModelAdapter): The model and its batch format.
        layers (dict): Layer name -> module, in order.
        biases (dict): Layer name -> whether its bias counts.
    """

    def __init__(
        self, adapter: ModelAdapter, layers: Dict[str, Module], biases: Dict[str, bool]
    ) -> None:
        self.adapter = adapter
        self.layers = layers
        self.biases = biases

    def stream(
        self,
        batches: Iterable[Any],
        loss_fn: Callable[..., Tensor],
        bar: Any,
        digests: Optional[ExampleDigests] = None,
    ) -> Iterator[Factors]:
        r"""
        Yields each batch's factors in order, at the loaded checkpoint.

        Args:
            batches (iterable): Batches in the training-data convention.
            loss_fn (Callable): The loss.
            bar (tqdm): Progress bar, updated per batch.
            digests (ExampleDigests, optional): Fingerprints the examples.
        """
        first = 0
        for batch in batches:
            factors = collect_layer_factors(
                self.adapter, batch, loss_fn, self.layers, self.biases, first
            )
            if digests is not None:
                _fingerprint(self.adapter, batch, digests)
            first += next(iter(factors.values())).num_examples
            bar.update(1)
            yield factors

    def stacked_parts(self, parts: List[Factors]) -> Factors:
        r"""The factors of several batches as one, right-padded per layer."""
        return {name: _stack([p[name] for p in parts]) for name in self.layers}


def _stack(parts: "list[LayerFactors]") -> LayerFactors:
    length = max(p.inputs.shape[1] for p in parts)

    def pad(tensor: Tensor) -> Tensor:
        extra = length - tensor.shape[1]
        return torch.nn.functional.pad(tensor, (0, 0, 0, extra)) if extra else tensor

    return LayerFactors(
        torch.cat([pad(p.inputs) for p in parts]),
        torch.cat([pad(p.output_gradients) for p in parts]),
        parts[0].has_bias,
    )


def _fingerprint(adapter: ModelAdapter, batch: Any, digests: ExampleDigests) -> None:
    args, kwargs, labels, mask = adapter.split(batch)
    size = labels.shape[0]
    ids = [t for t in adapter.batch_tensors(args, kwargs) if t.shape[0] == size]
    token_ids = ids[0].reshape(size, -1) if ids else labels.reshape(size, -1)
    real = torch.ones_like(token_ids, dtype=torch.bool)
    if mask is not None and mask.shape == token_ids.shape:
        real = mask != 0
    inputs = adapter.per_example_inputs(args, kwargs, size)
    digests.update(token_ids, real, labels, inputs)
