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

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor
from torch.nn import Embedding, Module
from torch.utils.hooks import RemovableHandle

from captum_tracin_we._data.batch_labels import (
    class_labels,
)
from captum_tracin_we._data.model_adapter import ModelAdapter
from captum_tracin_we._errors import BatchError
from captum_tracin_we._gradients.summed_loss import (
    check_labels,
    raise_non_finite,
    summed_loss,
)


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
    ``"batch_first"`` if only the rows read as padded sequences,
    ``"sequence_first"`` if only the columns do, else None (no padding, or
    both or neither could be). A line reads as a padded sequence when its pads
    sit at one end: trailing (right padding) or leading (left padding), so a
    left-padded batch-first batch is not taken for a sequence-first one.
    """
    if pad_id is None:
        return None
    pads = tensor == pad_id
    if not bool(pads.any()):
        return None

    def at_an_end(mask: Tensor) -> bool:  # each line's pads: a suffix or a prefix
        ones = mask.int()
        suffix = (ones.cummax(dim=1).values == ones).all(dim=1)
        flipped = ones.flip(1)
        prefix = (flipped.cummax(dim=1).values == flipped).all(dim=1)
        return bool((suffix | prefix).all())

    along_rows, along_columns = at_an_end(pads), at_an_end(pads.t())
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
        check_labels(logits, labels, first_index)
        total_loss = summed_loss(loss_fn, logits, labels, first_index)
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
        labels=_stacked_labels([p.labels for p in parts]),
    )


def _stacked_labels(labels: List[Tensor]) -> Tensor:
    r"""Labels of batches along examples; ``(B, L)`` language-model labels of
    different widths are right-padded with -100 (not predicted)."""
    width = max(label.shape[1] if label.dim() == 2 else 0 for label in labels)
    if all(label.dim() != 2 or label.shape[1] == width for label in labels):
        return torch.cat(labels)
    padded = []
    for label in labels:
        missing = width - label.shape[1]
        padded.append(
            torch.cat([label, label.new_full((label.shape[0], missing), -100)], 1)
        )
    return torch.cat(padded)


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


def _check_finite_gradients(gradients: Tensor, first_index: int) -> None:
    finite = torch.isfinite(gradients).reshape(gradients.shape[0], -1).all(1)
    if not bool(finite.all()):
        raise_non_finite(~finite, first_index)
