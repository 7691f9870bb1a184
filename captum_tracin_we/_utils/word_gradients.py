#!/usr/bin/env python3

r"""
Stage 1 of TracIn-WE: the loss gradient at the output of the token-embedding
layer, for every position of every example of a batch, from one forward and one
backward pass.

The gradient of the embedding *table* for an example is sparse: row ``w`` is the
sum of the position gradients over the positions that hold token ``w``. So these
per-position gradients, with the token ids, are all TracIn-WE needs; the dense
``vocab x dim`` gradient is never formed.
"""

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor
from torch.nn import CrossEntropyLoss, Embedding, Module, NLLLoss
from torch.utils.hooks import RemovableHandle

from captum_tracin_we._utils.errors import BatchError
from captum_tracin_we._utils.model_adapter import ModelAdapter


@dataclass
class WordGradients:
    r"""
    Per-position loss gradients at the embedding output for one batch.

    Attributes:
        token_ids (Tensor): ``(B, L)`` token ids as they entered the embedding.
        gradients (Tensor): ``(B, L, D)`` float32 gradients of each example's
                    own loss with respect to the embedding output; zero at
                    positions that do not count.
        mask (Tensor): ``(B, L)`` bool, True at positions that count (not
                    padding, not an excluded token id, and, with Top-k, among the
                    k positions of largest gradient norm).
        real (Tensor): ``(B, L)`` bool, True at positions that are not padding.
        labels (Tensor): ``(B,)`` the batch's labels.
        inputs (list of Tensor): The batch's other per-example model inputs
                    (first dimension ``B``), for fingerprints of the data.
    """

    token_ids: Tensor
    gradients: Tensor
    mask: Tensor
    real: Tensor
    labels: Tensor
    inputs: List[Tensor] = field(default_factory=list)

    @property
    def num_examples(self) -> int:
        return self.token_ids.shape[0]


class _StopForward(Exception):
    r"""Raised by the capture to end a forward pass at the embedding."""


class _EmbeddingCapture:
    r"""
    Replaces the embedding output by a leaf that requires grad, and checks the
    token ids. With ``stop=True`` the forward pass ends at the embedding (for
    reading token ids without running the model).
    """

    def __init__(self, embedding: Embedding, stop: bool = False) -> None:
        self.embedding = embedding
        self.stop = stop
        self.outputs: List[Tensor] = []
        self.token_ids: List[Tensor] = []
        self._handles: List[RemovableHandle] = []

    def __enter__(self) -> "_EmbeddingCapture":
        self._handles = [
            self.embedding.register_forward_pre_hook(self._check_ids, with_kwargs=True),
            self.embedding.register_forward_hook(self._capture, with_kwargs=True),
        ]
        return self

    def __exit__(self, *exc: Any) -> bool:
        for handle in self._handles:
            handle.remove()
        return bool(exc and exc[0] is _StopForward)

    def _check_ids(self, module: Module, args: Any, kwargs: Dict[str, Any]) -> None:
        ids = _ids_argument(args, kwargs)
        if ids.numel() == 0:
            return
        low, high = int(ids.min()), int(ids.max())
        vocab = self.embedding.num_embeddings
        if low < 0 or high >= vocab:
            bad = high if high >= vocab else low
            raise BatchError(
                f"Token id {bad} is outside the embedding layer's vocabulary of "
                f"{vocab} rows. The texts were most likely tokenized with a different "
                "tokenizer than the model's: use the tokenizer the model was trained "
                "with."
            )

    def _capture(
        self, module: Module, args: Any, kwargs: Dict[str, Any], output: Tensor
    ) -> Tensor:
        leaf = output.detach().requires_grad_(True)
        self.outputs.append(leaf)
        self.token_ids.append(_ids_argument(args, kwargs))
        if self.stop:
            raise _StopForward()
        return leaf


def _ids_argument(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Tensor:
    r"""The token ids of an ``nn.Embedding`` call, positional or ``input=``."""
    ids = args[0] if args else kwargs.get("input")
    if not isinstance(ids, Tensor):
        raise BatchError(
            "The embedding layer was called without a tensor of token ids (as its "
            "first argument or `input=`); TracIn-WE needs the token ids."
        )
    return ids


class LayoutMemory:
    r"""
    Whether a data set's token-id tensors are batch-first ``(B, L)`` or
    sequence-first ``(L, B)``, learnt from batches where ``B != L`` and used for
    square batches, where the shape cannot tell.
    """

    def __init__(self, pad_id: Optional[int] = None) -> None:
        self.convention: Optional[str] = None
        self.assumed = False
        self.pad_id = pad_id

    def learn(self, convention: str) -> None:
        if self.assumed and convention != self.convention:
            raise BatchError(
                f"A square batch (as many examples as positions) was read as "
                f"{self.convention} before a batch showed the data are {convention}. "
                "Use a batch size different from the sequence length, or make the "
                "first batch non-square."
            )
        self.convention, self.assumed = convention, False

    def for_square(self, tensor: Tensor, mask: Optional[Tensor] = None) -> str:
        r"""The convention of a square tensor: learnt, read off its padding (the
        attention mask's zeros, else the padding id), or (when neither tells)
        assumed batch-first until a batch shows otherwise."""
        if self.convention is not None:
            return self.convention
        padded = None
        if mask is not None and mask.shape == tensor.shape:
            padded = _trailing_padding(mask.bool().logical_not().long(), 1)
        if padded is None:
            padded = _trailing_padding(tensor, self.pad_id)
        if padded is not None:
            self.learn(padded)
            return padded
        self.convention, self.assumed = "batch_first", True
        return self.convention


def _trailing_padding(tensor: Tensor, pad_id: Optional[int]) -> Optional[str]:
    r"""
    ``"batch_first"`` if padding trails along rows only, ``"sequence_first"`` if
    along columns only, else None (no padding, or both or neither look padded).
    """
    if pad_id is None:
        return None
    pads = tensor == pad_id
    if not bool(pads.any()):
        return None

    def trailing(mask: Tensor) -> bool:  # every pad is followed only by pads
        return bool((mask.int().cummax(dim=1).values == mask.int()).all())

    along_rows, along_columns = trailing(pads), trailing(pads.t())
    if along_rows != along_columns:
        return "batch_first" if along_rows else "sequence_first"
    return None


@dataclass
class _Layout:
    r"""How the ids at the embedding map to ``(B, L)``: as they are, transposed,
    reshaped, or reshaped to ``(L, B)`` and transposed."""

    kind: str
    shape: Tuple[int, int]
    ids_dim: int = 2
    batch_convention: str = "batch_first"

    def batch_first(self, tensor: Tensor) -> Tensor:
        r"""``tensor`` shaped like the ids (plus trailing dims) as ``(B, L, ...)``."""
        rest = tensor.shape[self.ids_dim :]
        if self.kind == "transposed":
            return tensor.transpose(0, 1)
        if self.kind == "reshaped":
            return tensor.reshape(*self.shape, *rest)
        if self.kind == "reshaped_transposed":
            return tensor.reshape(self.shape[1], self.shape[0], *rest).transpose(0, 1)
        return tensor

    def batch_mask(self, mask: Optional[Tensor]) -> Optional[Tensor]:
        r"""
        A batch's ``attention_mask``, given in the layout of the batch's ids
        tensor, as ``(B, L)``.

        Raises:
            BatchError: If it cannot be aligned with the embedded ids.
        """
        if mask is None:
            return None
        if mask.dim() == 2 and self.batch_convention == "sequence_first":
            mask = mask.t()
        if tuple(mask.shape) != tuple(self.shape):
            raise BatchError(
                f"The batch's attention_mask has shape {tuple(mask.shape)}, but the "
                f"model embeds {self.shape[0]} examples x {self.shape[1]} positions, "
                "so TracIn-WE cannot tell which positions are padding. Pass an "
                "attention_mask shaped like the input_ids the model embeds, or leave "
                "it out and mark padding with the embedding's padding_idx."
            )
        return mask


def ids_layout(
    ids: Tensor,
    candidates: List[Tensor],
    batch_size: int,
    memory: Optional[LayoutMemory] = None,
    mask: Optional[Tensor] = None,
) -> _Layout:
    r"""
    Finds how the token ids that reached the embedding relate to the batch:
    equal to one of the batch's integer tensors, to its transpose, or to it
    flattened. The batch's tensors may be batch-first or sequence-first; for
    square ones (``B == L``) ``memory`` says which the data set uses. Without a
    match, 2-D ids with one row per example are taken as batch-first.

    Raises:
        BatchError: If the ids cannot be mapped to one row per example.
    """
    memory = memory or LayoutMemory()
    for tensor in candidates:
        convention = _convention(tensor, batch_size, memory, mask)
        if convention is None:
            continue
        examples = tensor if convention == "batch_first" else tensor.t()
        shape = (int(examples.shape[0]), int(examples.shape[1]))
        if ids.shape == examples.shape and torch.equal(ids, examples):
            return _Layout("as_is", shape, batch_convention=convention)
        if (
            ids.dim() == 2
            and ids.shape == shape[::-1]
            and torch.equal(ids.t(), examples)
        ):
            return _Layout("transposed", shape, batch_convention=convention)
        if ids.dim() != 2 and ids.numel() == examples.numel():
            if torch.equal(ids.reshape(-1), examples.reshape(-1)):
                return _Layout("reshaped", shape, ids.dim(), convention)
            if torch.equal(ids.reshape(-1), examples.t().reshape(-1)):
                return _Layout("reshaped_transposed", shape, ids.dim(), convention)
    if ids.dim() == 2 and ids.shape[0] == batch_size:
        return _Layout("as_is", (int(ids.shape[0]), int(ids.shape[1])))
    raise BatchError(
        f"The token ids reach the embedding with shape {tuple(ids.shape)} for a batch "
        f"of {batch_size} examples, and match none of the batch's tensors (as they "
        "are, transposed or flattened). TracIn-WE needs to map each position to its "
        "example: pass the ids the model embeds as a batch-first (B, L) tensor."
    )


def _convention(
    tensor: Tensor,
    batch_size: int,
    memory: LayoutMemory,
    mask: Optional[Tensor] = None,
) -> Optional[str]:
    if tensor.dim() != 2 or batch_size not in tensor.shape:
        return None
    rows, columns = tensor.shape
    if rows == batch_size and columns == batch_size:
        return memory.for_square(tensor, mask)
    convention = "batch_first" if rows == batch_size else "sequence_first"
    memory.learn(convention)
    return convention


def collect_word_gradients(
    adapter: ModelAdapter,
    batch: Any,
    loss_fn: Callable[..., Tensor],
    first_index: int = 0,
    top_k_words: Optional[int] = None,
    exclude_token_ids: Optional[Tensor] = None,
    layout_memory: Optional[LayoutMemory] = None,
) -> WordGradients:
    r"""
    Computes the per-position embedding-output gradients of one batch with one
    forward and one backward pass.

    In eval mode the examples of a batch are independent, so the gradient of the
    summed per-example losses at the embedding output holds, at each position,
    the gradient of that example's own loss.

    Args:
        adapter (ModelAdapter): The model and its embedding table.
        batch (tuple or dict): One batch (see :class:`ModelAdapter`).
        loss_fn (Callable): ``loss_fn(logits, labels)`` with reduction ``"none"``
                    (per-example), ``"sum"`` or ``"mean"``; all give gradients of
                    per-example losses (a ``torch.nn`` loss module's own
                    normalisation, class weights included, is undone; one that
                    cannot be undone is refused).
        first_index (int, optional): Index of the batch's first example in its
                    dataset, used to name examples in error messages.
                    Default: 0
        top_k_words (int, optional): Keep only the ``top_k_words`` positions of
                    largest gradient L2 norm per example (TracIn-WE-Topk).
                    Default: None (keep all)
        exclude_token_ids (Tensor, optional): Token ids whose positions never
                    count. Default: None

    Returns:
        word_gradients (WordGradients): Token ids, gradients and mask of the batch.
    """
    args, kwargs, labels, attention_mask = adapter.split(batch)
    labels = class_labels(labels, loss_fn)
    with torch.enable_grad(), _EmbeddingCapture(adapter.embedding) as capture:
        logits = adapter.logits(args, kwargs)
        _check_capture(capture)
        _check_labels(logits, labels, first_index)
        total_loss = _summed_loss(loss_fn, logits, labels, first_index)
        leaf = capture.outputs[0]
        (gradients,) = torch.autograd.grad(total_loss, leaf, allow_unused=True)
    layout, token_ids, real, inputs = _batch_first_ids(
        adapter, capture, (args, kwargs, labels.shape[0], attention_mask), layout_memory
    )
    if gradients is None:
        gradients = torch.zeros_like(leaf)
    gradients = layout.batch_first(gradients.detach().float())
    _check_finite_gradients(gradients, first_index)
    mask = real & _kept_tokens(token_ids, exclude_token_ids)
    if top_k_words is not None:
        mask = keep_top_positions(gradients, mask, top_k_words)
    gradients = gradients * mask.unsqueeze(-1)
    return WordGradients(token_ids, gradients, mask, real, labels, inputs)


def _batch_first_ids(
    adapter: ModelAdapter,
    capture: "_EmbeddingCapture",
    split: Tuple[Tuple[Any, ...], Dict[str, Any], int, Optional[Tensor]],
    layout_memory: Optional[LayoutMemory],
) -> Tuple["_Layout", Tensor, Tensor, List[Tensor]]:
    r"""
    The layout of the captured ids, the ids as ``(B, L)``, the real (non
    padding) positions, and the batch's other per-example inputs.
    """
    args, kwargs, batch_size, attention_mask = split
    layout = ids_layout(
        capture.token_ids[0],
        adapter.batch_tensors(args, kwargs),
        batch_size,
        layout_memory,
        attention_mask,
    )
    token_ids = layout.batch_first(capture.token_ids[0])
    mask = layout.batch_mask(attention_mask)
    real = _real_positions(token_ids, adapter.embedding, mask)
    return layout, token_ids, real, adapter.per_example_inputs(args, kwargs, batch_size)


def embedded_token_ids(
    adapter: ModelAdapter, batch: Any, layout_memory: Optional[LayoutMemory] = None
) -> Tuple[Tensor, Tensor, Tensor, List[Tensor]]:
    r"""
    The token ids of a batch as the model embeds them, without running the
    model past its embedding layer (the forward pass is stopped there).

    Returns:
        (token_ids, real, labels, inputs): ``(B, L)`` ids, ``(B, L)`` bool
                    non-padding positions, the labels (as in the batch), and the
                    other per-example inputs.
    """
    args, kwargs, labels, attention_mask = adapter.split(batch)
    with torch.no_grad(), _EmbeddingCapture(adapter.embedding, stop=True) as capture:
        adapter.logits(args, kwargs)
    _check_capture(capture)
    batch_size = labels.shape[0] if labels.dim() else 1
    _, token_ids, real, inputs = _batch_first_ids(
        adapter, capture, (args, kwargs, batch_size, attention_mask), layout_memory
    )
    return token_ids, real, labels, inputs


def class_labels(labels: Tensor, loss_fn: Callable[..., Tensor]) -> Tensor:
    r"""
    Checks the labels of a batch; for cross-entropy losses, ``(B, 1)`` class ids
    become ``(B,)``, and float labels of shape ``(B,)`` are refused (cross-entropy
    reads them as class probabilities).

    Raises:
        BatchError: For no labels, or labels cross-entropy cannot take.
    """
    if labels.dim() == 0 or labels.shape[0] == 0:
        raise BatchError(
            "A batch is empty or has no per-example labels; pass at least one example "
            "with one label each."
        )
    if not isinstance(loss_fn, CrossEntropyLoss):
        return labels
    if labels.dtype == torch.bool:
        raise BatchError(
            "The labels are booleans; cross-entropy needs integer class ids: convert "
            "them with `labels.long()`."
        )
    if not labels.is_floating_point() and labels.dtype != torch.long:
        labels = labels.long()  # int32, int16, uint8 class ids: exact
    if labels.dim() == 2 and labels.shape[1] == 1 and not labels.is_floating_point():
        labels = labels[:, 0]
    if labels.dim() == 1 and labels.is_floating_point():
        raise BatchError(
            f"The labels are floats ({labels.dtype}), but the loss is cross-entropy, "
            "which needs integer class ids: convert them with `labels.long()`, or "
            "pass a `loss_fn` that takes float targets."
        )
    if labels.dim() != 1 and not labels.is_floating_point():
        raise BatchError(
            f"The labels have shape {tuple(labels.shape)}; cross-entropy needs one "
            "integer class id per example, shape (B,)."
        )
    return labels


def stack_word_gradients(parts: List[WordGradients], pad_id: int) -> WordGradients:
    r"""Concatenates batches along examples, right-padding shorter ones."""
    width = max(part.token_ids.shape[1] for part in parts)

    def pad(tensor: Tensor, value: Any) -> Tensor:
        missing = width - tensor.shape[1]
        if missing == 0:
            return tensor
        shape = (tensor.shape[0], missing, *tensor.shape[2:])
        return torch.cat([tensor, tensor.new_full(shape, value)], dim=1)

    return WordGradients(
        token_ids=torch.cat([pad(p.token_ids, pad_id) for p in parts]),
        gradients=torch.cat([pad(p.gradients, 0.0) for p in parts]),
        mask=torch.cat([pad(p.mask, False) for p in parts]),
        real=torch.cat([pad(p.real, False) for p in parts]),
        labels=torch.cat([p.labels for p in parts]),
    )


def keep_top_positions(gradients: Tensor, mask: Tensor, k: int) -> Tensor:
    r"""
    Top-k positions by gradient L2 norm (TracIn-WE-Topk, paper eq. 3).

    Args:
        gradients (Tensor): ``(B, L, D)`` position gradients.
        mask (Tensor): ``(B, L)`` bool, positions that may be kept.
        k (int): Positions kept per example; ties go to the earlier position.

    Returns:
        mask (Tensor): ``(B, L)`` bool, at most ``k`` True per row.
    """
    norms = gradients.norm(dim=-1).masked_fill(~mask, -float("inf"))
    order = torch.argsort(norms, dim=1, descending=True, stable=True)[:, :k]
    top = torch.zeros_like(mask).scatter_(1, order, True)
    return top & mask


def _real_positions(
    token_ids: Tensor, embedding: Embedding, attention_mask: Optional[Tensor]
) -> Tensor:
    r"""Positions that are not padding: by ``padding_idx`` and the attention mask
    (already aligned to ``(B, L)``)."""
    mask = torch.ones_like(token_ids, dtype=torch.bool)
    if embedding.padding_idx is not None:
        mask &= token_ids != embedding.padding_idx
    if attention_mask is not None:
        mask &= attention_mask.bool().to(mask.device)
    return mask


def _kept_tokens(token_ids: Tensor, exclude_token_ids: Optional[Tensor]) -> Tensor:
    if exclude_token_ids is None or not exclude_token_ids.numel():
        return torch.ones_like(token_ids, dtype=torch.bool)
    return ~torch.isin(token_ids, exclude_token_ids.to(token_ids.device))


def _check_capture(capture: _EmbeddingCapture) -> None:
    calls = len(capture.outputs)
    if calls == 1:
        return
    if calls == 0:
        raise BatchError(
            "The embedding layer was not called during the forward pass, so the "
            "token ids do not pass through it. Pass token ids (not `inputs_embeds`) "
            "and check `embedding_layer`."
        )
    raise BatchError(
        f"The embedding layer was called {calls} times in one forward pass. "
        "TracIn-WE needs the token ids to pass through it exactly once."
    )


def _check_labels(logits: Tensor, labels: Tensor, first_index: int) -> None:
    if labels.shape[:1] != logits.shape[:1]:
        raise BatchError(
            f"The batch has {labels.shape[0] if labels.dim() else 1} labels for "
            f"{logits.shape[0]} model outputs; each example needs one label."
        )
    if logits.dim() != 2 or labels.is_floating_point() or labels.dim() != 1:
        return
    num_classes = logits.shape[1]
    bad = ((labels < 0) | (labels >= num_classes)).nonzero().flatten()
    if bad.numel():
        i = int(bad[0])
        raise BatchError(
            f"Label {int(labels[i])} of example {first_index + i} is out of range for "
            f"a model with {num_classes} classes (expected 0..{num_classes - 1})."
        )


def _summed_loss(
    loss_fn: Callable[..., Tensor], logits: Tensor, labels: Tensor, first_index: int
) -> Tensor:
    r"""
    The sum of the per-example losses of the batch, whatever the reduction.

    A ``torch.nn`` loss module that reduces (``"mean"``, ``"sum"``,
    ``"batchmean"``) is evaluated again with ``reduction="none"`` and its own
    normalisation undone (see :func:`_unreduced_module_loss`); a function that
    returns one number is probed (see :func:`_probed_reduction`).

    Raises:
        BatchError: If the loss fails, has the wrong shape, is not finite, or
                    reduces the batch in a way per-example losses cannot be
                    recovered from.
    """
    loss = _called_loss(loss_fn, logits, labels, first_index)
    batch_size = logits.shape[0]
    if loss.dim() == 0:
        if _reduces_itself(loss_fn):
            return _unreduced_module_loss(loss_fn, logits, labels, loss, first_index)
        reduction = None
        if torch.isfinite(loss):
            reduction = _probed_reduction(loss_fn, logits, labels, loss)
        total = loss * batch_size if reduction == "mean" else loss
        if not torch.isfinite(total):
            bad = ~torch.isfinite(logits).reshape(batch_size, -1).all(1)
            _raise_non_finite(bad if bad.any() else torch.ones_like(bad), first_index)
        return total
    return _per_example_losses(loss, batch_size, first_index).sum()


def _called_loss(
    loss_fn: Callable[..., Tensor], logits: Tensor, labels: Tensor, first_index: int
) -> Tensor:
    try:
        return loss_fn(logits, labels)
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        raise BatchError(
            f"`loss_fn(logits, labels)` failed at the batch starting with example "
            f"{first_index}, for logits of shape {tuple(logits.shape)} and labels of "
            f"shape {tuple(labels.shape)} ({labels.dtype}): {type(error).__name__}: "
            f"{str(error)[:300]}. Pass labels and a `loss_fn` that fit the model's "
            "output."
        ) from error


def _per_example_losses(loss: Tensor, batch_size: int, first_index: int) -> Tensor:
    r"""``(B,)`` losses from per-example (or per-element) ones, each summed."""
    if loss.dim() == 0 or loss.shape[0] != batch_size:
        raise BatchError(
            f"`loss_fn` returned shape {tuple(loss.shape)} for a batch of "
            f"{batch_size}; use reduction 'none' (one loss per example), 'sum' or "
            "'mean'."
        )
    per_example = loss.reshape(batch_size, -1).sum(1)
    _raise_non_finite(~torch.isfinite(per_example), first_index)
    return per_example


def _reduces_itself(loss_fn: Callable[..., Tensor]) -> bool:
    r"""True for a module whose ``reduction`` attribute names a reduction."""
    reduction = getattr(loss_fn, "reduction", None)
    return (
        isinstance(loss_fn, Module)
        and isinstance(reduction, str)
        and (reduction != "none")
    )


_UNDONE_REDUCTIONS = ("mean", "sum", "batchmean")


def _unreduced_module_loss(
    loss_fn: Module, logits: Tensor, labels: Tensor, loss: Tensor, first_index: int
) -> Tensor:
    r"""
    The summed per-example losses of a reducing loss module: the module's
    ``reduction="none"`` losses (of a shallow copy), each example's summed,
    after checking that the module's own value is their sum divided by the
    normaliser this library knows for it (1 for ``"sum"``, the batch size for
    ``"batchmean"``, and for ``"mean"``: the number of elements, or, for
    :class:`~torch.nn.CrossEntropyLoss` and :class:`~torch.nn.NLLLoss` with
    class ids, the summed class weights of the targets not ignored). The
    scores are then exact and do not depend on the batch size.

    Raises:
        BatchError: If the reduction is unknown, the module cannot be evaluated
                    with ``reduction="none"``, or its value does not reconcile.
    """
    reduction = loss_fn.reduction
    if reduction not in _UNDONE_REDUCTIONS:
        raise _irreducible(loss_fn, "TracIn-WE does not know how it normalises")
    unreduced = _called_loss(_unreduced_copy(loss_fn), logits, labels, first_index)
    if unreduced.dim() == 0 or unreduced.shape[0] != logits.shape[0]:
        raise _irreducible(
            loss_fn,
            f"with reduction='none' it returns shape {tuple(unreduced.shape)}, not "
            f"one loss per example of the batch of {logits.shape[0]}",
        )
    per_example = _per_example_losses(unreduced, logits.shape[0], first_index)
    _check_reconciles(loss_fn, loss.detach(), unreduced.detach(), labels)
    return per_example.sum()


def _check_reconciles(
    loss_fn: Module, loss: Tensor, unreduced: Tensor, labels: Tensor
) -> None:
    r"""
    Raises unless ``loss`` is the sum of ``unreduced`` divided by
    :func:`_normaliser` (a batch whose targets are all ignored, where the
    module's mean is 0 / 0, reconciles: its losses are all zero).
    """
    normaliser = _normaliser(loss_fn, unreduced, labels)
    if normaliser == 0 and not bool(unreduced.any()):
        return
    expected = unreduced.sum() / normaliser
    scale = float(unreduced.abs().sum() / normaliser)
    rtol = 1e-4 if loss.dtype in (torch.float32, torch.float64) else 1e-2
    if not bool(torch.isclose(loss, expected, rtol=rtol, atol=1e-5 * scale + 1e-12)):
        raise _irreducible(
            loss_fn,
            f"its value {float(loss):.6g} is not the sum of its reduction='none' "
            f"losses divided by {float(normaliser):.6g} ({float(expected):.6g}), "
            "which is what TracIn-WE can undo",
        )


def _unreduced_copy(loss_fn: Module) -> Module:
    r"""A shallow copy of ``loss_fn`` (weights shared) with reduction 'none'."""
    unreduced = copy.copy(loss_fn)
    try:
        unreduced.reduction = "none"
    except (AttributeError, TypeError) as error:
        raise _irreducible(
            loss_fn, f"its reduction cannot be set to 'none' ({error})"
        ) from None
    return unreduced


def _normaliser(loss_fn: Module, unreduced: Tensor, labels: Tensor) -> Tensor:
    r"""What ``loss_fn`` divides the sum of its unreduced losses by."""
    one = torch.ones((), dtype=unreduced.dtype, device=unreduced.device)
    if loss_fn.reduction == "sum":
        return one
    if loss_fn.reduction == "batchmean":
        return one * unreduced.shape[0]
    if isinstance(loss_fn, (CrossEntropyLoss, NLLLoss)) and not (
        labels.is_floating_point()
    ):
        kept = labels[labels != loss_fn.ignore_index]
        weight = loss_fn.weight
        if weight is None:
            return one * kept.numel()
        return weight.to(unreduced.device)[kept].sum().to(unreduced.dtype)
    return one * unreduced.numel()


def _irreducible(loss_fn: Module, reason: str) -> BatchError:
    name = type(loss_fn).__name__
    return BatchError(
        f"`loss_fn` ({name} with reduction={loss_fn.reduction!r}) reduces each "
        f"batch in a way per-example losses cannot be recovered from: {reason}; "
        "scores would depend on the batch size. Pass the same loss with "
        f"reduction='none' (one loss per example, e.g. {name}(..., "
        "reduction='none')) or reduction='sum'."
    )


def _probed_reduction(
    loss_fn: Callable[..., Tensor], logits: Tensor, labels: Tensor, loss: Tensor
) -> str:
    r"""
    Tells a summing from an averaging scalar loss without a ``reduction``
    attribute: on the batch repeated twice a sum doubles and a mean stays; and
    split into its first example and the rest, a sum (or a mean weighted by
    the sizes) adds up.

    Raises:
        BatchError: If the loss is neither (then per-example losses cannot be
                    recovered from it).
    """
    with torch.no_grad():
        logits, single = logits.detach(), loss.detach()
        doubled = loss_fn(torch.cat([logits] * 2), torch.cat([labels] * 2))
        reduction = None
        if torch.isclose(doubled, 2 * single, rtol=1e-4, atol=1e-12):
            reduction = "sum"
        elif torch.isclose(doubled, single, rtol=1e-4, atol=1e-12):
            reduction = "mean"
        size = logits.shape[0]
        if reduction is not None and size > 1:
            head = loss_fn(logits[:1], labels[:1])
            rest = loss_fn(logits[1:], labels[1:])
            if reduction == "mean":
                head, rest, single = head, rest * (size - 1), single * size
            if not torch.isclose(head + rest, single, rtol=1e-4, atol=1e-10):
                reduction = None
    if reduction is None:
        raise BatchError(
            "`loss_fn` returns one number per batch that is neither the sum nor the "
            "mean of per-example losses (a mean weighted by class weights, such as "
            "F.cross_entropy(..., weight=w), is neither), so per-example gradients "
            "cannot be recovered. Return one loss per example (reduction='none'), "
            "or pass nn.CrossEntropyLoss(weight=w), whose weighting TracIn-WE undoes."
        )
    return reduction


def _raise_non_finite(bad: Tensor, first_index: int) -> None:
    indices = (bad.nonzero().flatten() + first_index).tolist()
    if indices:
        raise BatchError(
            f"The loss is NaN or infinite for example(s) {indices[:10]}. Check those "
            "inputs and labels, and that the checkpoint's weights are finite."
        )


def _check_finite_gradients(gradients: Tensor, first_index: int) -> None:
    finite = torch.isfinite(gradients).reshape(gradients.shape[0], -1).all(1)
    if not bool(finite.all()):
        _raise_non_finite(~finite, first_index)
