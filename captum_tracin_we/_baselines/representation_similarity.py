#!/usr/bin/env python3

r"""
Representation similarity ("RepSim"): the cosine of two texts' hidden
representations, the baseline that *Do Influence Functions Work on Large
Language Models?* (arXiv 2409.19998) found to beat influence functions.
"""

from typing import Any, Iterable, List, Optional, Union

import torch
from captum.influence import DataInfluence
from torch import Tensor
from torch.nn import Module
from tqdm.auto import tqdm

from captum_tracin_we._checkpoints.checkpoint_pass import scoring_mode
from captum_tracin_we._data.model_adapter import (
    ModelAdapter,
    find_embedding_layer,
    padding_id,
)
from captum_tracin_we._data.model_layers import last_block
from captum_tracin_we._data.training_data import training_loader
from captum_tracin_we._data.tuple_batches import test_batches
from captum_tracin_we._errors import BatchError, TracInWEError, check_k
from captum_tracin_we._gradients.word_gradients import embedded_token_ids
from captum_tracin_we._scoring.top_k import top_k

POOLINGS = ("mean", "first", "last")


class RepresentationSimilarity(DataInfluence):
    r"""
    RepSim: the score of a training text for a test text is the cosine of
    their pooled hidden representations at one layer of the model as it is
    (no checkpoints, no gradients). Scores lie in [-1, 1]; higher means more
    alike. With ``signed_by_label`` a pair whose labels differ gets the
    negative cosine, so that, like influence, a similar text of another label
    counts against (an opponent); this is the label-aware variant used for
    noisy-label detection.

    Args:
        model (torch.nn.Module): The model, with batches as :class:`TracInWE`
                    takes them (tuples with labels last, or dicts).
        train_dataset (Dataset or DataLoader): The training data, in order.
        layer (str or Module, optional): The module whose output is the
                    representation (``(B, S, D)``, or a tuple whose first
                    element is). Default: None, meaning the last transformer
                    block (its hidden state, as BERT's ``last_hidden_state``).
        pooling (str, optional): ``"mean"`` over the real (non-padding)
                    tokens, ``"first"`` token (``[CLS]``) or ``"last"`` real
                    token (causal models). Default: ``"mean"``
        signed_by_label (bool, optional): Negate the cosine of pairs whose
                    labels differ. Default: False
        batch_size (int, optional): For a Dataset. Default: 16

    Raises:
        TracInWEError: If ``pooling`` or ``layer`` is invalid.
    """

    def __init__(
        self,
        model: Module,
        train_dataset: Any,
        layer: Optional[Union[str, Module]] = None,
        pooling: str = "mean",
        signed_by_label: bool = False,
        batch_size: int = 16,
    ) -> None:
        if pooling not in POOLINGS:
            raise TracInWEError(
                f"`pooling` must be one of {POOLINGS}; got {pooling!r}."
            )
        self.model = model
        self.pooling = pooling
        self.signed_by_label = signed_by_label
        embedding = find_embedding_layer(model)
        self._adapter = ModelAdapter(model, embedding)
        self._pad_id = padding_id(model, embedding)
        self._layer = _representation_module(model, layer)
        self.train_dataset = training_loader(
            train_dataset, batch_size, self._pad_id, batch_size
        )
        self._train: Optional[Tensor] = None
        self._train_labels: Optional[Tensor] = None

    def get_name(self) -> str:  # type: ignore[override]
        return "RepSim"

    @property
    def num_train_examples(self) -> int:
        return self._train_side(False)[0].shape[0]

    def influence(  # type: ignore[override]
        self,
        inputs: Any,
        k: Optional[int] = None,
        proponents: bool = True,
        show_progress: bool = False,
    ) -> Any:
        r"""
        Args:
            inputs: Test examples, as for :meth:`TracInWE.influence`.
            k (int, optional): Return the ``k`` most similar (or, with
                        ``proponents=False``, most opposed) training texts.
                        Default: None (all scores)
            proponents (bool, optional): See ``k``. Default: True
            show_progress (bool, optional): Progress bars. Default: False

        Returns:
            scores (Tensor): ``(n_test, n_train)`` float32 cosines, or
                        ``KMostInfluentialResults`` with ``k``.
        """
        train, train_labels = self._train_side(show_progress)
        if k is not None:
            check_k(k, train.shape[0])
        batches = test_batches(inputs, self._pad_id, 16)
        test, test_labels = self.representations(batches, show_progress, "test")
        scores = test @ train.T
        if self.signed_by_label:
            agree = test_labels.reshape(-1, 1) == train_labels.reshape(1, -1)
            scores = torch.where(agree, scores, -scores)
        return top_k(scores, k, proponents)

    def representations(
        self, batches: Iterable[Any], show_progress: bool = False, role: str = ""
    ) -> "tuple[Tensor, Tensor]":
        r"""
        The unit-norm pooled representations of every example of ``batches``.

        Returns:
            (representations, labels): ``(n, D)`` float32 and ``(n,)``.
        """
        vectors: List[Tensor] = []
        labels: List[Tensor] = []
        with scoring_mode(self.model), torch.no_grad():
            for batch in tqdm(
                batches, desc=f"RepSim {role}", disable=not show_progress
            ):
                vectors.append(self._pooled(batch))
                labels.append(self._adapter.split(batch)[2].reshape(-1).cpu())
        if not vectors:
            raise BatchError(f"The {role or 'given'} data is empty.")
        pooled = torch.cat(vectors)
        return torch.nn.functional.normalize(pooled, dim=1), torch.cat(labels)

    def _train_side(self, show_progress: bool) -> "tuple[Tensor, Tensor]":
        if self._train is None:
            self._train, self._train_labels = self.representations(
                self.train_dataset, show_progress, "training"
            )
        assert self._train_labels is not None
        return self._train, self._train_labels

    def _pooled(self, batch: Any) -> Tensor:
        captured: List[Tensor] = []

        def hook(module: Module, args: Any, output: Any) -> None:
            captured.append(output[0] if isinstance(output, (tuple, list)) else output)

        handle = self._layer.register_forward_hook(hook)
        try:
            args, kwargs, _, _ = self._adapter.split(batch)
            self._adapter.logits(args, kwargs)
        finally:
            handle.remove()
        if not captured or captured[-1].dim() != 3:
            raise BatchError(
                "The representation layer must output (batch, tokens, features); "
                "pass `layer=` naming such a module (a transformer block)."
            )
        hidden = captured[-1].float()
        _, real, _, _ = embedded_token_ids(self._adapter, batch)
        real = real.to(hidden.device)
        if real.shape != hidden.shape[:2]:
            raise BatchError(
                f"The representation has {hidden.shape[1]} positions for token ids of "
                f"length {real.shape[1]}; pass `layer=` naming a module whose output "
                "has one position per token."
            )
        return _pool(hidden, real, self.pooling).cpu()


def _pool(hidden: Tensor, real: Tensor, pooling: str) -> Tensor:
    if pooling == "first":
        return hidden[:, 0]
    if pooling == "last":
        last = real.long().cumsum(1).argmax(1)  # the last real position
        return hidden[torch.arange(hidden.shape[0]), last]
    weights = real.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


def _representation_module(
    model: Module, layer: Optional[Union[str, Module]]
) -> Module:
    if layer is None:
        return last_block(model)
    if isinstance(layer, Module):
        if not any(m is layer for m in model.modules()):
            raise TracInWEError("`layer` is not a module of this model.")
        return layer
    named = dict(model.named_modules())
    if layer not in named:
        raise TracInWEError(
            f"The model has no module named {layer!r}; name a transformer block, "
            f"for example {next(reversed(list(named)))!r}."
        )
    return named[layer]
