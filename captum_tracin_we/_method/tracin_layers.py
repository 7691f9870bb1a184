#!/usr/bin/env python3

from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

import torch
from captum.influence import TracInCPBase
from captum.influence._utils.common import KMostInfluentialResults
from captum.log import log_usage
from torch import Tensor
from torch.nn import CrossEntropyLoss, Module
from torch.utils.data import DataLoader, Dataset

from captum_tracin_we._checkpoints.checkpoint_pass import (
    LoadedCheckpoint,
    checkpoint_pass,
    one_call_per_model,
    warn_if_training,
)
from captum_tracin_we._checkpoints.checkpoints import (
    checkpoint_paths,
    load_checkpoint_with_lr,
)
from captum_tracin_we._data.model_adapter import (
    ModelAdapter,
    find_embedding_layer,
    padding_id,
)
from captum_tracin_we._data.model_layers import find_linear_layers
from captum_tracin_we._data.same_passes import SamePasses
from captum_tracin_we._data.training_data import TrainingData, training_loader
from captum_tracin_we._data.tuple_batches import test_batches
from captum_tracin_we._errors import check_k
from captum_tracin_we._gradients.layer_source import LayerGradientSource
from captum_tracin_we._method.progress import progress_bar
from captum_tracin_we._scoring.ghost_products import (
    LayerQueries,
    layer_scores,
    layer_self_scores,
)
from captum_tracin_we._scoring.normalization import (
    checked_normalize,
    inverse_norms,
    self_score_factor,
)
from captum_tracin_we._scoring.top_k import top_k

LossFn = Union[Module, Callable[..., Tensor]]
LoadFn = Callable[[Module, Any], float]


class TracInLayers(TracInCPBase):
    r"""
    Exact TracIn on chosen linear layers (``nn.Linear``, transformers'
    ``Conv1D``, LoRA's ``lora_A`` / ``lora_B``) of a sequence model, without
    per-example gradients: the score of a training example :math:`z` for a
    test example :math:`z'` is

    .. math::
        \sum_c \eta_c \sum_{\ell} \langle \nabla_{W_\ell} \ell(z),
        \nabla_{W_\ell} \ell(z') \rangle

    over the checkpoints :math:`c` and the layers :math:`\ell` (weight and
    bias). A layer's weight gradient for one example is :math:`\sum_t g_t
    a_t^\top` (:math:`a_t` its input, :math:`g_t` the loss gradient at its
    output, over the positions :math:`t`), so each inner product is computed
    as :math:`\sum_{s,t} (a_s \cdot a'_t)(g_s \cdot g'_t)` or from the two
    formed gradients, whichever is cheaper for the pair of batches. This
    equals Captum's ``TracInCP`` with ``layers=[the same modules]``; padding
    positions never count. Positive scores mark proponents.

    Frozen layers: in a model that trains some parameters and not others (a
    LoRA fine-tune), a frozen layer is refused, since training never stepped
    it; score its trained adapters instead. A bias counts when it is trained
    with its weight. Scores per layer are kept (:meth:`layer_influence`);
    :meth:`influence` sums them (TracIn over the union of the layers).
    """

    def __init__(
        self,
        model: Module,
        train_dataset: Union[Dataset, DataLoader],
        checkpoints: Union[str, List[str], Iterator[Any]],
        layers: Sequence[Union[str, Module]],
        checkpoints_load_func: Optional[LoadFn] = load_checkpoint_with_lr,
        loss_fn: Optional[LossFn] = None,
        batch_size: Union[int, None] = 1,
        test_loss_fn: Optional[LossFn] = None,
        normalize: Optional[str] = None,
    ) -> None:
        r"""
        Args:
            model (torch.nn.Module): The model; batch-first inputs, as
                        Hugging Face models (their ``.logits`` are used).
            train_dataset (Dataset or DataLoader): Training batches, as for
                        :class:`TracInWE` (tuples with labels last, or dicts
                        with ``"labels"``); the DataLoader keeps the order.
            checkpoints (str, list, or iterator): As for :class:`TracInWE`.
            layers (list of str or Module): The linear layers to score, by
                        dotted name or as modules, for example a group of
                        :func:`~captum_tracin_we.layer_groups`.
            checkpoints_load_func (Callable, optional): Loads a checkpoint and
                        returns its learning rate. Default:
                        :func:`load_checkpoint_with_lr`.
            loss_fn (Callable, optional): The training loss, any reduction.
                        Default: None, meaning
                        ``nn.CrossEntropyLoss(reduction="none")``.
            batch_size (int, optional): Batch size for a Dataset; scores do not
                        depend on it. Default: 1
            test_loss_fn (Callable, optional): Test loss. Default: ``loss_fn``
            normalize (str, optional): ``"cosine"``: both examples' gradients
                        over all the layers scaled to unit norm at each
                        checkpoint; ``"train"``: the training gradient only. The
                        per-layer scores share the one norm, so they still sum
                        to the total. Default: None (unnormalised)

        Raises:
            TracInWEError: If a layer does not exist (the closest names are
                        given), is not linear, or is frozen while others train.
        """
        self.normalize = checked_normalize(normalize)
        self.layers, biases = find_linear_layers(model, layers)
        embedding = find_embedding_layer(model, None)
        pad_id = padding_id(model, embedding)
        train = training_loader(train_dataset, batch_size, pad_id, 16)
        paths = checkpoint_paths(checkpoints)
        load = checkpoints_load_func or load_checkpoint_with_lr
        super().__init__(model, train, paths, load, loss_fn, batch_size, test_loss_fn)
        if self.loss_fn is None:
            self.loss_fn = CrossEntropyLoss(reduction="none")
        if self.test_loss_fn is None:
            self.test_loss_fn = self.loss_fn
        adapter = ModelAdapter(model, embedding)
        self._pad_id = pad_id
        self._training = TrainingData(self.train_dataloader, adapter)
        self._source = LayerGradientSource(adapter, self.layers, biases)

    @property
    def num_train_examples(self) -> int:
        r"""The number of training examples (not batches)."""
        return self._training.num_examples

    @property
    def training_data(self) -> TrainingData:
        r"""The training set as this method reads it (see :class:`TracInWE`)."""
        return self._training

    @property
    def layer_names(self) -> List[str]:
        r"""The scored layers' names, in order."""
        return list(self.layers)

    @log_usage()
    @one_call_per_model
    def influence(  # type: ignore[override]
        self,
        inputs: Any,
        k: Optional[int] = None,
        proponents: bool = True,
        show_progress: bool = False,
        aggregate: bool = False,
    ) -> Union[Tensor, KMostInfluentialResults]:
        r"""
        TracIn scores over all the layers, as :meth:`TracInWE.influence`.

        Args:
            inputs (tuple, dict, DataLoader or datasets.Dataset): Test examples
                        as the training batches, labels included.
            k (int, optional): Return the ``k`` most influential training
                        examples per test example. Default: None (all scores)
            proponents (bool, optional): With ``k``: largest scores if True,
                        most negative if False. Default: True
            show_progress (bool, optional): Show a progress bar. Default: False
            aggregate (bool, optional): Sum over the test examples (one row).
                        Default: False

        Returns:
            scores (Tensor): Without ``k``, ``(n_test, n_train)`` float32 on
                        CPU, the sum over the layers.
            results (KMostInfluentialResults): With ``k``, ``(n_test, k)``
                        indices and scores, largest first.
        """
        assert inputs is not None, "`inputs` is required; see `self_influence`."
        if k is None:
            return self._influence(inputs, show_progress, aggregate)
        return self._get_k_most_influential(
            inputs, k, proponents, show_progress, aggregate
        )

    def _influence(  # type: ignore[override]
        self, inputs: Any, show_progress: bool = False, aggregate: bool = False
    ) -> Tensor:
        by_layer = self._layer_scores(inputs, show_progress, aggregate)
        return torch.stack(list(by_layer.values())).sum(0)

    @log_usage()
    @one_call_per_model
    def layer_influence(
        self, inputs: Any, show_progress: bool = False, aggregate: bool = False
    ) -> Dict[str, Tensor]:
        r"""
        TracIn scores of each layer on its own, from the same passes.

        Args:
            inputs: Test examples, as for :meth:`influence`.
            show_progress (bool, optional): Show a progress bar. Default: False
            aggregate (bool, optional): Sum over the test examples. Default: False

        Returns:
            scores (dict): Layer name -> ``(n_test, n_train)`` float32 on CPU;
                        they sum to :meth:`influence`. Combine them with
                        :func:`~captum_tracin_we.combine_layers`.
        """
        return self._layer_scores(inputs, show_progress, aggregate)

    def _get_k_most_influential(  # type: ignore[override]
        self,
        inputs: Any,
        k: int,
        proponents: bool = True,
        show_progress: bool = False,
        aggregate: bool = False,
    ) -> KMostInfluentialResults:
        check_k(k, self.num_train_examples)
        scores = self._influence(inputs, show_progress, aggregate)
        return top_k(scores, k, proponents)  # type: ignore[return-value]

    @log_usage()
    @one_call_per_model
    def self_influence(
        self,
        inputs: Optional[Any] = None,
        show_progress: bool = False,
        outer_loop_by_checkpoints: bool = False,
    ) -> Tensor:
        r"""
        Each example's squared gradient norm over the layers, summed over the
        checkpoints times their learning rates (with ``loss_fn``); with
        ``normalize``, its normalised score with itself (``lr`` per checkpoint
        for ``"cosine"``, ``lr * |g|`` for ``"train"``).

        Args:
            inputs (optional): Examples as the training batches. Default: None
                        (the training set).
            show_progress (bool, optional): Show a progress bar. Default: False
            outer_loop_by_checkpoints (bool, optional): Accepted as in
                        ``TracInCP``; no effect on the result. Default: False

        Returns:
            self_influence_scores (Tensor): ``(n,)`` float32 on CPU, >= 0.
        """
        on_training = inputs is None
        batches = self._training.loader if on_training else self._as_batches(inputs)
        passes = SamePasses(self._training)
        if not on_training:
            passes = SamePasses(role="self-influence")
        total: Optional[Tensor] = None
        with progress_bar(self, "self influence", batches, show_progress, False) as bar:
            for loaded in self.checkpoint_pass():
                digests = passes.start()
                parts = [
                    _squared_norms(factors)
                    for factors in self._source.stream(
                        batches, self.loss_fn, bar, digests
                    )
                ]
                passes.finish(digests)
                squared = torch.cat(parts)
                factor = self_score_factor(squared, self.normalize)
                part = loaded.learning_rate * squared * factor
                total = part if total is None else total + part
        assert total is not None
        return total.float().cpu()

    def checkpoint_pass(self) -> Iterator[LoadedCheckpoint]:
        r"""Loads each checkpoint into :attr:`model` in order, yielding it with
        its learning rate."""
        if not getattr(self, "_warned_training", False):
            self._warned_training = True
            warn_if_training(self.model, self.get_name())
        return checkpoint_pass(self.model, self.checkpoints, self.checkpoints_load_func)

    def _layer_scores(
        self, inputs: Any, show_progress: bool, aggregate: bool
    ) -> Dict[str, Tensor]:
        batches = self._as_batches(inputs)
        passes, test_passes = SamePasses(self._training), SamePasses(role="test")
        totals: Dict[str, List[Tensor]] = {name: [] for name in self.layers}
        with progress_bar(self, "influence", batches, show_progress) as bar:
            for loaded in self.checkpoint_pass():
                queries, test_scale = self._queries(batches, bar, test_passes)
                digests = passes.start()
                stream = self._source.stream(
                    self._training.batches(), self.loss_fn, bar, digests
                )
                for i, train in enumerate(stream):
                    scale = loaded.learning_rate * test_scale
                    if self.normalize is not None:
                        scale = scale * inverse_norms(_squared_norms(train))[None]
                    for name in self.layers:
                        block = layer_scores(queries[name], train[name]) * scale
                        if aggregate:
                            block = block.sum(0, keepdim=True)
                        _add(totals[name], i, block)
                passes.finish(digests)
        return {name: torch.cat(b, dim=1).float().cpu() for name, b in totals.items()}

    def _queries(
        self, batches: Any, bar: Any, passes: SamePasses
    ) -> "tuple[Dict[str, LayerQueries], Tensor]":
        r"""The test side's factors per layer, and ``(n_test, 1)`` scales of its
        scores (inverse gradient norms for ``"cosine"``, else ones)."""
        digests = passes.start()
        parts = list(self._source.stream(batches, self.test_loss_fn, bar, digests))
        passes.finish(digests)
        if not parts:
            raise ValueError("The test data is empty; pass at least one example.")
        stacked = self._source.stacked_parts(parts)
        squared = _squared_norms(stacked)
        scale = inverse_norms(squared) if self.normalize == "cosine" else None
        scale = torch.ones_like(squared) if scale is None else scale
        queries = {name: LayerQueries(factors) for name, factors in stacked.items()}
        return queries, scale.reshape(-1, 1)

    def _as_batches(self, inputs: Any) -> Any:
        return test_batches(inputs, self._pad_id, self.batch_size or 16)


def _squared_norms(factors: Dict[str, Any]) -> Tensor:
    r"""``(n,)`` squared gradient norms over all the layers' factors."""
    return sum(layer_self_scores(f) for f in factors.values())  # type: ignore


def _add(totals: List[Tensor], i: int, block: Tensor) -> None:
    if i < len(totals):
        totals[i] += block
    else:
        totals.append(block)
