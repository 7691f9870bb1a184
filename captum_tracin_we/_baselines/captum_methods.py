#!/usr/bin/env python3

r"""
Captum's own TracIn methods (``TracInCP``, ``TracInCPFast``,
``TracInCPFastRandProj``) on the same model, data and checkpoints as
:class:`~captum_tracin_we.TracInWE`, with no wrapper to write: the batches,
the checkpoint loader and the logits-only model are adapted here, once.
"""

import warnings
from typing import Any, Callable, Iterator, List, Optional, Tuple, Union

import torch
from captum.influence import (
    DataInfluence,
    TracInCP,
    TracInCPBase,
    TracInCPFast,
    TracInCPFastRandProj,
)
from captum.influence._utils.common import KMostInfluentialResults
from torch import Tensor, nn
from torch.nn import Module
from torch.utils.data import DataLoader, Dataset

from captum_tracin_we._checkpoints.checkpoint_pass import (
    kept_state,
    model_lock,
    one_call_per_model,
)
from captum_tracin_we._checkpoints.checkpoints import (
    checked_learning_rate,
    checkpoint_paths,
    load_checkpoint_with_lr,
)
from captum_tracin_we._data.model_adapter import find_embedding_layer, padding_id
from captum_tracin_we._data.training_data import training_loader
from captum_tracin_we._data.tuple_batches import (
    ConvertedBatches,
    LogitsModel,
    TupleBatches,
    test_batches,
)
from captum_tracin_we._errors import TracInWEError, check_k

# Captum's per-sample gradient trick warns that token ids take no gradient.
_INTEGER_INPUTS = "(?s).*Gradients cannot be activated"
Checkpoints = Union[str, List[Any], Iterator[Any]]
LoadFunc = Callable[[Module, Any], float]


class CaptumInfluence(DataInfluence):
    r"""
    One of Captum's TracIn methods, set up on a text model so that it takes
    the same batches as :class:`~captum_tracin_we.TracInWE`: tuples
    ``(inputs..., labels)``, dicts with ``"labels"`` (Hugging Face), a list
    of them, a DataLoader, or a tokenized ``datasets.Dataset``. Make one with
    :func:`tracincp_fast`, :func:`tracincp_fast_rand_proj` or
    :func:`tracincp`.

    Attributes:
        method (TracInCPBase): The Captum object itself (its model is a
                    logits-only wrapper whose ``.model`` is yours).
        name (str): A short description, for example
                    ``"TracInCPFast (classifier)"``.
    """

    def __init__(self, method: TracInCPBase, batches: TupleBatches, name: str) -> None:
        self.method = method
        self.model = method.model
        self.train_dataset = method.train_dataloader
        self.name = name
        self._batches = batches
        self._num_train: Optional[int] = None
        self._pad_id = _pad_id(method.model.model)

    def get_name(self) -> str:  # type: ignore[override]
        return self.name

    @property
    def user_model(self) -> Module:
        r"""The user's model, whose lock a TracInWE on it holds too."""
        return self.model.model

    def _activate_layers(self) -> None:
        r"""TracInCP needs gradients of its layers; flags are restored after."""
        for module in getattr(self.method, "layer_modules", None) or []:
            for param in module.parameters():
                param.requires_grad_(True)

    @property
    def num_train_examples(self) -> int:
        r"""The number of training examples (counted once, on first use)."""
        if self._num_train is None:
            self._num_train = sum(int(b[-1].shape[0]) for b in self.train_dataset)
        return self._num_train

    @one_call_per_model
    def influence(  # type: ignore[override]
        self,
        inputs: Any,
        k: Optional[int] = None,
        proponents: bool = True,
        show_progress: bool = False,
    ) -> Union[Tensor, KMostInfluentialResults]:
        r"""
        The Captum method's ``influence`` on these test batches.

        Args:
            inputs: Test examples with labels, in TracInWE's conventions.
                        Captum's methods pass over the training set once per
                        test batch, so a tokenized ``datasets.Dataset`` goes
                        in as one batch, and a DataLoader's batches should be
                        large.
            k (int, optional): If given, the ``k`` most influential training
                        examples per test example. Default: None (all scores)
            proponents (bool, optional): With ``k``: proponents (largest
                        scores) if True, opponents if False. Default: True
            show_progress (bool, optional): Passed on where the Captum method
                        takes it (``TracInCPFastRandProj`` does not).
                        Default: False

        Returns:
            scores (Tensor or KMostInfluentialResults): ``(n_test, n_train)``
                        scores on CPU when ``k`` is None; else ``(n_test, k)``
                        indices and scores, most influential first.
        """
        if k is not None:
            check_k(k, self.num_train_examples)
        options = {"k": k, "proponents": proponents}
        if not isinstance(self.method, TracInCPFastRandProj):
            options["show_progress"] = show_progress
        parts = []
        with kept_state(self.model), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_INTEGER_INPUTS)
            self._activate_layers()
            # Captum passes over the whole training set per call: one call for
            # a whole datasets.Dataset; DataLoader batches as the user made them.
            for batch in test_batches(inputs, self._pad_id, None):
                parts.append(
                    self.method.influence(self._batches.convert(batch), **options)
                )
        if k is None:
            return torch.cat([p.detach().cpu() for p in parts])
        return KMostInfluentialResults(
            torch.cat([p.indices.long().cpu() for p in parts]),
            torch.cat([p.influence_scores.detach().cpu() for p in parts]),
        )

    @one_call_per_model
    def self_influence(
        self, inputs: Optional[Any] = None, show_progress: bool = False
    ) -> Tensor:
        r"""
        Captum's ``self_influence`` (``TracInCPFast``'s for
        ``TracInCPFastRandProj``, which has none).

        Returns:
            scores (Tensor): ``(n,)``, on CPU.
        """
        call = self.method.self_influence
        if isinstance(self.method, TracInCPFastRandProj):  # use its parent's
            call = TracInCPFast.self_influence.__get__(self.method)
        with kept_state(self.model):
            self._activate_layers()
            if inputs is None:
                return call(show_progress=show_progress).detach().cpu()
            batches = test_batches(inputs, self._pad_id, None)
            return (
                torch.cat(
                    [
                        call(self._batches.convert(b), show_progress=show_progress)
                        for b in batches
                    ]
                )
                .detach()
                .cpu()
            )


def tracincp_fast(
    model: Module,
    train_dataset: Union[Dataset, DataLoader],
    checkpoints: Checkpoints,
    checkpoints_load_func: LoadFunc = load_checkpoint_with_lr,
    final_fc_layer: Optional[str] = None,
    loss_fn: Optional[Callable[..., Tensor]] = None,
    batch_size: Optional[int] = 16,
    test_loss_fn: Optional[Callable[..., Tensor]] = None,
) -> CaptumInfluence:
    r"""
    Captum's ``TracInCPFast`` (last-layer TracIn in closed form) on ``model``,
    with the same arguments as :class:`~captum_tracin_we.TracInWE`.

    ``TracInCPFast`` uses the gradient of the final layer's *weight* only (its
    bias is left out) and needs the model's logits to be that layer's output;
    this is checked on the first training batch, and a model whose last
    ``nn.Linear`` is followed by more computation raises
    :class:`TracInWEError` (use :func:`tracincp` on that layer instead).

    Args:
        model (torch.nn.Module): The classifier: a Hugging Face model or any
                    module taking the batches' inputs.
        train_dataset (Dataset or DataLoader): The training data, in order, as
                    for TracInWE.
        checkpoints: A Trainer output folder, a folder, a file or a list.
        checkpoints_load_func (Callable, optional): ``f(model, checkpoint)``
                    loads into *your* model and returns the learning rate.
                    Default: :func:`~captum_tracin_we.load_checkpoint_with_lr`
        final_fc_layer (str, optional): Dotted name of the final linear layer
                    in ``model``. Default: None, meaning the last ``nn.Linear``.
        loss_fn (Callable, optional): A ``"sum"`` or ``"mean"`` loss, as
                    Captum requires. Default: None, meaning
                    ``nn.CrossEntropyLoss(reduction="sum")``.
        batch_size (int, optional): Batch size when ``train_dataset`` is a
                    Dataset. Default: 16
        test_loss_fn (Callable, optional): The test loss. Default: ``loss_fn``

    Returns:
        method (CaptumInfluence): Its ``influence`` gives the
                    ``(n_test, n_train)`` scores, or the top ``k``.
    """
    loss_fn = loss_fn or nn.CrossEntropyLoss(reduction="sum")
    layer = final_fc_layer or last_linear_layer(model)
    wrapper, loader, paths, load, batches = _captum_setup(
        model, train_dataset, checkpoints, checkpoints_load_func, loss_fn, batch_size
    )
    with model_lock(model):
        _check_final_layer(wrapper, loader, layer, paths, load)
    with kept_state(wrapper):
        method = TracInCPFast(
            wrapper,
            "model." + layer,
            loader,
            paths,
            load,
            loss_fn=loss_fn,
            batch_size=None,
            test_loss_fn=test_loss_fn,
        )
    return CaptumInfluence(method, batches, f"TracInCPFast ({layer})")


def tracincp_fast_rand_proj(
    model: Module,
    train_dataset: Union[Dataset, DataLoader],
    checkpoints: Checkpoints,
    checkpoints_load_func: LoadFunc = load_checkpoint_with_lr,
    final_fc_layer: Optional[str] = None,
    loss_fn: Optional[Callable[..., Tensor]] = None,
    batch_size: Optional[int] = 16,
    test_loss_fn: Optional[Callable[..., Tensor]] = None,
    projection_dim: Optional[int] = None,
    nearest_neighbors: Optional[Any] = None,
    seed: int = 0,
) -> CaptumInfluence:
    r"""
    Captum's ``TracInCPFastRandProj`` (``TracInCPFast`` with the training
    side stored as random projections and searched by nearest neighbours) on
    ``model``. The training side is computed here, at construction. The
    arguments it shares with :func:`tracincp_fast` mean the same here.

    Args:
        projection_dim (int, optional): Captum's size of the projection:
                    the loss gradient and the layer input are each projected
                    to at most ``int(sqrt(projection_dim))`` dimensions (a
                    factor already that small is not projected), so
                    ``64 ** 2`` keeps 64 of each. Default: None, no
                    projection (then the top-k equal ``TracInCPFast``'s).
        nearest_neighbors (optional): Captum's nearest-neighbour store, for
                    example ``AnnoyNearestNeighbors`` (needs the ``annoy``
                    package). Default: None, meaning
                    :class:`ExactNearestNeighbors` (exact dot-product search).
        seed (int, optional): Seed of the projections. The global torch
                    random state is restored afterwards (Captum itself calls
                    ``torch.manual_seed``). Default: 0

    Returns:
        method (CaptumInfluence): As for :func:`tracincp_fast`; ``influence``
                    with ``k`` uses the nearest-neighbour store.
    """
    loss_fn = loss_fn or nn.CrossEntropyLoss(reduction="sum")
    layer = final_fc_layer or last_linear_layer(model)
    wrapper, loader, paths, load, batches = _captum_setup(
        model, train_dataset, checkpoints, checkpoints_load_func, loss_fn, batch_size
    )
    with model_lock(model):
        _check_final_layer(wrapper, loader, layer, paths, load)
    with model_lock(model), kept_state(wrapper), torch.random.fork_rng(devices=[]):
        method = TracInCPFastRandProj(
            wrapper,
            "model." + layer,
            loader,
            paths,
            load,
            loss_fn=loss_fn,
            batch_size=None,
            test_loss_fn=test_loss_fn,
            nearest_neighbors=nearest_neighbors or ExactNearestNeighbors(),
            projection_dim=projection_dim,
            seed=seed,
        )
    suffix = f", projection {projection_dim}" if projection_dim else ""
    return CaptumInfluence(method, batches, f"TracInCPFastRandProj ({layer}{suffix})")


def tracincp(
    model: Module,
    train_dataset: Union[Dataset, DataLoader],
    checkpoints: Checkpoints,
    layers: List[str],
    checkpoints_load_func: LoadFunc = load_checkpoint_with_lr,
    loss_fn: Optional[Callable[..., Tensor]] = None,
    batch_size: Optional[int] = 16,
    test_loss_fn: Optional[Callable[..., Tensor]] = None,
    sample_wise_grads_per_batch: Optional[bool] = None,
) -> CaptumInfluence:
    r"""
    Captum's ``TracInCP`` on the named layers of ``model`` (all their
    parameters, dense gradients): for example a middle transformer layer, or
    the embedding itself (then it equals TracInWE, which is much faster).
    The arguments it shares with :func:`tracincp_fast` mean the same here.

    Args:
        layers (list of str): Dotted names of modules of ``model``, for
                    example ``["bert.encoder.layer.2.output.dense"]``.
        loss_fn (Callable, optional): Default: None, meaning cross-entropy with
                    the reduction Captum needs (``"sum"`` when
                    ``sample_wise_grads_per_batch``, else ``"none"``).
        sample_wise_grads_per_batch (bool, optional): Captum's per-sample
                    gradient trick, which works only for ``nn.Linear`` and
                    ``nn.Conv2d`` layers. Default: None, meaning True exactly
                    when every layer named is one of those.

    Returns:
        method (CaptumInfluence): As for :func:`tracincp_fast`.
    """
    if isinstance(layers, str) or not layers:
        raise ValueError(
            f"`layers` must be a non-empty list of layer names; got {layers!r}."
        )
    for name in layers:
        _module(model, name)
    if sample_wise_grads_per_batch is None:
        sample_wise_grads_per_batch = all(
            isinstance(_module(model, n), (nn.Linear, nn.Conv2d)) for n in layers
        )
    if loss_fn is None:
        reduction = "sum" if sample_wise_grads_per_batch else "none"
        loss_fn = nn.CrossEntropyLoss(reduction=reduction)
    wrapper, loader, paths, load, batches = _captum_setup(
        model, train_dataset, checkpoints, checkpoints_load_func, loss_fn, batch_size
    )
    _first_batch(loader)  # fixes the input names before Captum calls the model
    with kept_state(wrapper), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting required grads")
        method = TracInCP(
            wrapper,
            loader,
            paths,
            load,
            layers=["model." + name for name in layers],
            loss_fn=loss_fn,
            batch_size=None,
            test_loss_fn=test_loss_fn,
            sample_wise_grads_per_batch=sample_wise_grads_per_batch,
        )
    return CaptumInfluence(method, batches, f"TracInCP ({', '.join(layers)})")


class ExactNearestNeighbors:
    r"""
    Exact nearest neighbours by dot product, for
    ``TracInCPFastRandProj(nearest_neighbors=...)``: the stored vectors with
    the largest dot product with each query, found by one matrix product.
    Deterministic, and needs no ``annoy``.
    """

    def __init__(self) -> None:
        self.data: Optional[Tensor] = None

    def setup(self, data: Tensor) -> None:
        r"""Stores ``(n, *)`` vectors (flattened to ``(n, d)``)."""
        self.data = data.detach().reshape(len(data), -1)

    def get_nearest_neighbors(self, query: Tensor, k: int) -> Tuple[Tensor, Tensor]:
        r"""
        Returns:
            (indices, dot_products): Both ``(n_query, k)``, largest first.
        """
        if self.data is None:
            raise RuntimeError("Call `setup` before `get_nearest_neighbors`.")
        if k > len(self.data):
            raise ValueError(f"k={k} exceeds the {len(self.data)} stored vectors.")
        products = query.reshape(len(query), -1).to(self.data) @ self.data.T
        values, indices = products.topk(k, dim=1)
        return indices.long(), values


def last_linear_layer(model: Module) -> str:
    r"""
    Dotted name of the last ``nn.Linear`` registered in ``model``: the
    classification head of Hugging Face classifiers.

    Raises:
        TracInWEError: If the model has no ``nn.Linear``.
    """
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise TracInWEError(
            f"{type(model).__name__} has no nn.Linear layer for TracInCPFast; pass "
            "`final_fc_layer`, or use `tracincp(model, ..., layers=[...])`."
        )
    return names[-1]


def _captum_setup(
    model: Module,
    train_dataset: Union[Dataset, DataLoader],
    checkpoints: Checkpoints,
    load_func: Optional[LoadFunc],
    loss_fn: Callable[..., Tensor],
    batch_size: Optional[int],
) -> Tuple[LogitsModel, DataLoader, List[Any], LoadFunc, TupleBatches]:
    batches = TupleBatches(model, loss_fn)
    wrapper = LogitsModel(model, batches)
    load_func = load_func or load_checkpoint_with_lr
    train_dataset = training_loader(train_dataset, batch_size, _pad_id(model), 16)

    def load(wrapped: Module, checkpoint: Any) -> float:
        rate = checked_learning_rate(load_func(wrapped.model, checkpoint), checkpoint)
        wrapped.eval()
        return rate

    loader = DataLoader(ConvertedBatches(train_dataset, batches), batch_size=None)
    return wrapper, loader, checkpoint_paths(checkpoints), load, batches


def _first_batch(loader: DataLoader) -> Tuple[Any, ...]:
    for batch in loader:
        return batch
    raise TracInWEError("The training data is empty.")


def _check_final_layer(
    wrapper: LogitsModel,
    loader: DataLoader,
    layer: str,
    checkpoints: List[Any],
    load: LoadFunc,
) -> None:
    r"""
    TracInCPFast's closed form holds only when the logits *are* the final
    layer's output. At every checkpoint, on the first training batch, the
    layer's output is shifted by a random ``v``: the logits must move by
    exactly ``v`` (a scale, a temperature, pooling or a nonlinearity after
    the layer fails this).
    """
    module = _module(wrapper.model, layer)
    if not isinstance(module, nn.Linear):
        raise TracInWEError(
            f"`final_fc_layer` {layer!r} is a {type(module).__name__}; TracInCPFast "
            "needs an nn.Linear whose output is the logits."
        )
    inputs = _first_batch(loader)[:-1]
    shift: List[Optional[Tensor]] = [None]

    def shifted(_: Module, __: Any, output: Any) -> Any:
        if shift[0] is None or not isinstance(output, Tensor):
            return None
        if output.shape != shift[0].shape:
            return output  # the logits are not this output: fails below
        return output + shift[0].to(output)

    with kept_state(wrapper), torch.no_grad():
        handle = module.register_forward_hook(shifted)
        try:
            for checkpoint in checkpoints:
                load(wrapper, checkpoint)
                shift[0] = None
                logits = wrapper(*inputs)
                generator = torch.Generator().manual_seed(0)
                shift[0] = torch.randn(logits.shape, generator=generator)
                if not _moves_by(wrapper(*inputs) - logits, shift[0]):
                    raise TracInWEError(
                        f"The model's logits are not the output of {layer!r} (at "
                        f"checkpoint {checkpoint!r}), so TracInCPFast's closed form "
                        "would give wrong scores. Pass the head that produces the "
                        "logits as `final_fc_layer`, or use `tracincp(model, ..., "
                        f"layers=[{layer!r}])`."
                    )
        finally:
            handle.remove()


def _moves_by(moved: Tensor, shift: Tensor) -> bool:
    shift = shift.to(moved)
    scale = float(shift.abs().max())
    return moved.shape == shift.shape and bool(
        (moved - shift).abs().max() <= 1e-4 * scale
    )


def _module(model: Module, name: str) -> Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n][-5:]
        raise TracInWEError(
            f"{type(model).__name__} has no layer {name!r}; layer names are dotted "
            f"paths from `model.named_modules()`, for example {names}."
        ) from None


def _pad_id(model: Module) -> int:
    r"""The padding id as TracInWE reads it: the embedding's, else the config's."""
    try:
        embedding = find_embedding_layer(model)
    except Exception:  # no single token embedding: the config, else 0
        pad = getattr(getattr(model, "config", None), "pad_token_id", None)
        return int(pad) if isinstance(pad, int) else 0
    return padding_id(model, embedding)
