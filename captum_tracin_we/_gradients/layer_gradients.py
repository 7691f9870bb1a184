#!/usr/bin/env python3

r"""
Per-example gradients of linear layers, kept in factored form: for each layer,
the input ``a_t`` it saw and the loss gradient ``g_t`` at its output, at every
position ``t`` of every example. The weight gradient of one example is
``sum_t g_t a_t^T`` and its bias gradient ``sum_t g_t``, so inner products of
two examples' gradients follow from these factors without forming the
``d_out x d_in`` gradient of each example (see ``_scoring/ghost_products.py``).
"""

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor
from torch.nn import Module
from torch.utils.hooks import RemovableHandle

from captum_tracin_we._data.batch_labels import class_labels
from captum_tracin_we._data.model_adapter import ModelAdapter
from captum_tracin_we._errors import BatchError
from captum_tracin_we._gradients.summed_loss import check_labels, summed_loss


@dataclass
class LayerFactors:
    r"""
    One layer's gradient factors for a batch.

    Attributes:
        inputs (Tensor): ``(B, S, d_in)`` float32, the layer's input at each
                    position (zero at padding).
        output_gradients (Tensor): ``(B, S, d_out)`` float32, the gradient of
                    each example's loss at the layer's output (zero at padding).
        has_bias (bool): Whether the layer's bias is scored.
    """

    inputs: Tensor
    output_gradients: Tensor
    has_bias: bool

    @property
    def num_examples(self) -> int:
        return self.inputs.shape[0]


class _LayerCapture:
    r"""
    Records each chosen layer's inputs and outputs during one forward pass; an
    output that does not require grad (every parameter is frozen while
    scoring) is replaced by a leaf that does, so the loss reaches it.
    """

    def __init__(self, layers: Dict[str, Module]) -> None:
        self.layers = layers
        self.inputs: Dict[str, List[Tensor]] = {name: [] for name in layers}
        self.outputs: Dict[str, List[Tensor]] = {name: [] for name in layers}
        self._handles: List[RemovableHandle] = []

    def __enter__(self) -> "_LayerCapture":
        for name, module in self.layers.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()

    def _hook(self, name: str) -> Callable[..., Tensor]:
        def capture(module: Module, args: Tuple[Any, ...], output: Tensor) -> Tensor:
            if not args or not isinstance(args[0], Tensor):
                raise BatchError(
                    f"Layer {name!r} was called without a tensor input; TracIn on a "
                    "layer needs the input of a linear map."
                )
            if not output.requires_grad:
                output = output.detach().requires_grad_(True)
            self.inputs[name].append(args[0].detach())
            self.outputs[name].append(output)
            return output

        return capture


def collect_layer_factors(
    adapter: ModelAdapter,
    batch: Any,
    loss_fn: Callable[..., Tensor],
    layers: Dict[str, Module],
    biases: Dict[str, bool],
    first_index: int = 0,
) -> Dict[str, LayerFactors]:
    r"""
    One forward and one backward pass of a batch: every chosen layer's inputs
    and output gradients. In eval mode the examples of a batch are
    independent, so the gradient of the summed per-example losses holds each
    example's own gradient. A layer called several times in one forward pass
    (shared weights) keeps the positions of every call.

    Args:
        adapter (ModelAdapter): The model and its batch format.
        batch (tuple or dict): One batch.
        loss_fn (Callable): The loss, any reduction (see ``summed_loss``).
        layers (dict): Layer name -> ``nn.Linear`` or ``Conv1D`` module.
        biases (dict): Layer name -> whether its bias counts.
        first_index (int, optional): The batch's first example in its dataset,
                    for error messages. Default: 0

    Returns:
        factors (dict): Layer name -> :class:`LayerFactors`.

    Raises:
        BatchError: If no example's loss reaches a layer, or a layer does not
                    see the batch batch-first.
    """
    args, kwargs, labels, attention_mask = adapter.split(batch)
    labels = class_labels(labels, loss_fn)
    with torch.enable_grad(), _LayerCapture(layers) as capture:
        logits = adapter.logits(args, kwargs)
        check_labels(logits, labels, first_index)
        total = summed_loss(loss_fn, logits, labels, first_index)
        _check_called(capture)
        outputs = [out for name in layers for out in capture.outputs[name]]
        grads = torch.autograd.grad(total, outputs, allow_unused=True)
    grads_by_layer: Dict[str, List[Optional[Tensor]]] = {}
    position = 0
    for name in layers:
        count = len(capture.outputs[name])
        grads_by_layer[name] = list(grads[position : position + count])
        position += count
    size = labels.shape[0]
    return {
        name: _factors(
            name,
            capture.inputs[name],
            capture.outputs[name],
            grads_by_layer[name],
            attention_mask,
            size,
            biases[name],
        )
        for name in layers
    }


def _check_called(capture: _LayerCapture) -> None:
    missing = [name for name, calls in capture.outputs.items() if not calls]
    if missing:
        raise BatchError(
            f"The forward pass never called the layer(s) {missing}, so no example's "
            "loss reaches them; choose layers the model uses for these inputs."
        )


def _factors(
    name: str,
    inputs: List[Tensor],
    outputs: List[Tensor],
    grads: List[Optional[Tensor]],
    attention_mask: Optional[Tensor],
    size: int,
    has_bias: bool,
) -> LayerFactors:
    if all(g is None for g in grads):
        raise BatchError(
            f"No example's loss reaches layer {name!r} (its output does not affect "
            "the logits); choose a layer on the path from the inputs to the logits."
        )
    a_parts, g_parts = [], []
    for a, out, g in zip(inputs, outputs, grads):
        g = torch.zeros_like(out) if g is None else g
        a, g = _batch_first(name, a, size), _batch_first(name, g.detach(), size)
        if attention_mask is not None and attention_mask.shape == a.shape[:2]:
            keep = (attention_mask != 0).to(a.dtype).unsqueeze(-1)
            a, g = a * keep, g * keep.to(g.dtype)
        a_parts.append(a.float())
        g_parts.append(g.float())
    a_all, g_all = torch.cat(a_parts, 1), torch.cat(g_parts, 1)
    if not torch.isfinite(g_all).all() or not torch.isfinite(a_all).all():
        raise BatchError(
            f"Layer {name!r} has non-finite inputs or gradients in this batch; check "
            "the model's weights and inputs (and use float32 rather than float16)."
        )
    return LayerFactors(a_all, g_all, has_bias)


def _batch_first(name: str, tensor: Tensor, size: int) -> Tensor:
    if tensor.dim() < 2 or tensor.shape[0] != size:
        raise BatchError(
            f"Layer {name!r} sees a tensor of shape {tuple(tensor.shape)} for a batch "
            f"of {size} examples; TracIn on a layer needs batch-first inputs "
            "(batch, ..., features), as in Hugging Face models."
        )
    return tensor.reshape(size, -1, tensor.shape[-1])
