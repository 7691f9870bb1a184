#!/usr/bin/env python3

r"""
Captum's ``LayerIntegratedGradients`` on the token embedding, for the same
test batches TracInWE takes: which test words drive the prediction, to set
beside TracIn-WE's test-side word contributions (which test words carry the
training influence).
"""

from typing import Any, Iterable, List, Optional, Tuple, Union

import torch
from captum.attr import LayerIntegratedGradients
from torch import Tensor
from torch.nn import Module

from captum_tracin_we._checkpoints.checkpoint_pass import kept_state
from captum_tracin_we._data.model_adapter import (
    ModelAdapter,
    find_embedding_layer,
    padding_id,
)
from captum_tracin_we._data.tuple_batches import (
    LogitsModel,
    TupleBatches,
    test_batches,
)
from captum_tracin_we._errors import BatchError
from captum_tracin_we._gradients.word_gradients import embedded_token_ids


def embedding_attributions(
    model: Module,
    inputs: Any,
    embedding_layer: Optional[Union[Module, str]] = None,
    keep_token_ids: Iterable[int] = (),
    n_steps: int = 50,
    internal_batch_size: Optional[int] = None,
    return_convergence_delta: bool = False,
) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    r"""
    Integrated gradients of each test text's log-probability of its label,
    attributed to the token embedding with Captum's
    ``LayerIntegratedGradients`` and summed over the embedding dimension.

    Sign: a positive attribution means the token raises the probability of
    the label (the same label whose loss TracIn-WE differentiates; a positive
    TracIn-WE contribution likewise lowers that loss). The baseline replaces
    every token by the padding id, except padding itself and the ids in
    ``keep_token_ids`` (for example the tokenizer's special ids, as in Captum's
    BERT tutorials). The model runs in eval mode; its modes are restored.

    Args:
        model (torch.nn.Module): The classifier (Hugging Face or any module).
        inputs: Test examples with labels, in TracInWE's conventions (one
                    batch, a list of batches, a DataLoader or a tokenized
                    ``datasets.Dataset``). The token ids must be one ``(B, L)``
                    model input.
        embedding_layer (Module or str, optional): The token embedding.
                    Default: None, found as TracInWE finds it.
        keep_token_ids (iterable of int, optional): Ids kept in the baseline.
                    Default: () (all real tokens become padding)
        n_steps (int, optional): Integration steps. Default: 50
        internal_batch_size (int, optional): Captum's chunking of the steps.
                    Default: None (all at once)
        return_convergence_delta (bool, optional): Also return Captum's
                    convergence deltas. Default: False

    Returns:
        attributions (Tensor or tuple): ``(n_test, L)`` on CPU, 0 at padding;
                    ``L`` is the longest batch's length (shorter batches are
                    padded with 0), aligned with the ``test_token_ids`` of
                    ``TracInWE.word_influence`` on the same inputs. With
                    ``return_convergence_delta``, ``(attributions, deltas)``
                    with ``(n_test,)`` deltas.
    """
    embedding = find_embedding_layer(model, embedding_layer)
    adapter = ModelAdapter(model, embedding)
    pad_id = padding_id(model, embedding)
    kept = torch.tensor(sorted({int(i) for i in keep_token_ids}), dtype=torch.long)
    rows: List[Tensor] = []
    deltas: List[Tensor] = []
    with kept_state(model):
        model.eval()
        for batch in test_batches(inputs, pad_id):
            result = _batch_attributions(
                model, adapter, batch, pad_id, kept, n_steps, internal_batch_size
            )
            rows.extend(result[0])
            deltas.append(result[1])
    attributions = _padded(rows)
    if return_convergence_delta:
        return attributions, torch.cat(deltas)
    return attributions


def _batch_attributions(
    model: Module,
    adapter: ModelAdapter,
    batch: Any,
    pad_id: int,
    kept: Tensor,
    n_steps: int,
    internal_batch_size: Optional[int],
) -> Tuple[List[Tensor], Tensor]:
    token_ids, real, _, _ = embedded_token_ids(adapter, batch)
    batches = TupleBatches(model, torch.nn.CrossEntropyLoss())
    converted = batches.convert(batch)
    inputs, labels = converted[:-1], converted[-1]
    position = _ids_position(inputs, token_ids, _input_ids_position(batches))
    wrapper = LogitsModel(model, batches)

    def log_probabilities(ids: Tensor, *others: Any) -> Tensor:
        values = list(others)
        values.insert(position, ids)
        return wrapper(*values).log_softmax(-1)

    ids = inputs[position]
    _check_batch_first(wrapper, inputs, adapter.embedding, ids.shape)
    keep = ~real | torch.isin(ids, kept.to(ids.device))
    baseline = torch.where(keep, ids, torch.full_like(ids, pad_id))
    others = tuple(v for i, v in enumerate(inputs) if i != position)
    attributions, delta = LayerIntegratedGradients(
        log_probabilities, adapter.embedding
    ).attribute(
        ids,
        baselines=baseline,
        additional_forward_args=others,
        target=labels,
        n_steps=n_steps,
        internal_batch_size=internal_batch_size,
        return_convergence_delta=True,
    )
    summed = attributions.sum(-1).detach() * real
    return list(summed.cpu()), delta.detach().cpu()


def _check_batch_first(
    wrapper: Module, inputs: Tuple[Any, ...], embedding: Module, shape: Any
) -> None:
    r"""LayerIntegratedGradients scales the batch dimension: it must come first."""
    seen: List[Any] = []
    handle = embedding.register_forward_hook(
        lambda module, args, output: seen.append(tuple(output.shape[:2]))
    )
    try:
        with torch.no_grad():
            wrapper(*inputs)
    finally:
        handle.remove()
    if seen != [tuple(shape)]:
        raise BatchError(
            "embedding_attributions needs the embedding called once, batch-first, "
            f"on the (batch, length) = {tuple(shape)} ids; it was called on "
            f"{seen}. Sequence-first or flattened embeddings are not supported."
        )


def _ids_position(
    inputs: Tuple[Any, ...], token_ids: Tensor, preferred: Optional[int] = None
) -> int:
    order = list(range(len(inputs)))
    if preferred is not None:  # a dict batch's "input_ids" is checked first
        order.insert(0, order.pop(preferred))
    for i in order:
        value = inputs[i]
        if (
            isinstance(value, Tensor)
            and value.shape == token_ids.shape
            and torch.equal(value.to(token_ids.device), token_ids)
        ):
            return i
    raise BatchError(
        "LayerIntegratedGradients needs the token ids as one (batch, length) model "
        "input; no input of this batch holds the ids the embedding receives."
    )


def _input_ids_position(batches: TupleBatches) -> Optional[int]:
    keys = batches.keys or []
    if "input_ids" not in keys or batches.num_args is None:
        return None
    return batches.num_args + keys.index("input_ids")


def _padded(rows: List[Tensor]) -> Tensor:
    width = max((row.numel() for row in rows), default=0)
    out = torch.zeros(len(rows), width)
    for i, row in enumerate(rows):
        out[i, : row.numel()] = row
    return out
