#!/usr/bin/env python3

r"""
Captum's last-layer ``TracInCPFast`` scores with the training side computed
once and kept beside a TracInWE index, so that a new test text costs its own
passes only.

``TracInCPFast`` scores with the gradient of the final linear layer's weight,
which for one example is the outer product of the loss gradient at the
layer's output ``g`` (``C`` classes) and the layer's input ``a`` (``d``). So
for a test example ``z'`` and a training example ``z``

.. math::

    \sum_c \eta_c \, \langle g_c(z'), g_c(z) \rangle \, \langle a_c(z'), a_c(z) \rangle

and the training side is, per checkpoint, an ``(n, C)`` and an ``(n, d)``
matrix: 1.5 MB per checkpoint for MiniLM and 1,000 texts. They are stored in
one file, bound to what they were computed from: the training data's digest,
each checkpoint's fingerprint and learning rate, the loss, and the layer.
"""

import os
import tempfile
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from captum.influence import DataInfluence
from captum.influence._utils.common import KMostInfluentialResults
from torch import Tensor, nn
from torch.nn import Module
from tqdm.auto import tqdm

from captum_tracin_we._baselines.captum_methods import (
    _module,
    last_linear_layer,
)
from captum_tracin_we._checkpoints.checkpoint_pass import (
    LoadedCheckpoint,
    one_call_per_model,
)
from captum_tracin_we._checkpoints.checkpoints import checkpoint_name
from captum_tracin_we._data.data_fingerprint import ExampleDigests
from captum_tracin_we._data.model_adapter import padding_id
from captum_tracin_we._data.tuple_batches import test_batches
from captum_tracin_we._errors import IndexMismatchError, TracInWEError, check_k
from captum_tracin_we._gradients.summed_loss import summed_loss
from captum_tracin_we._index.index_bindings import differences, loss_identity
from captum_tracin_we._scoring.top_k import top_k

FORMAT = "captum_tracin_we.stored_tracincp_fast/1"
FILE_NAME = "tracincp_fast.pt"


class StoredTracInCPFast(DataInfluence):
    r"""
    Captum's ``TracInCPFast`` scores (final linear layer, weight gradient
    only, sum over checkpoints of ``lr * <g, g'> <a, a'>``) on the same
    model, data, checkpoints and loss as a :class:`~captum_tracin_we.TracInWE`,
    with the training side read from a file. Make one with
    :func:`stored_tracincp_fast`; its scores equal :func:`tracincp_fast`'s.

    Attributes:
        path (str): The file holding the training side.
        layer (str): Dotted name of the final linear layer.
        name (str): ``"TracInCPFast (<layer>)"``, as :func:`tracincp_fast`.
    """

    def __init__(self, tracin: Any, layer: str, path: str, side: Dict[str, Any]):
        self.tracin = tracin
        self.model = tracin.model
        self.layer = layer
        self.path = path
        self.name = f"TracInCPFast ({layer})"
        self._side = side

    def get_name(self) -> str:  # type: ignore[override]
        return self.name

    @property
    def num_train_examples(self) -> int:
        return int(self._side["num_examples"])

    @one_call_per_model
    def influence(  # type: ignore[override]
        self,
        inputs: Any,
        k: Optional[int] = None,
        proponents: bool = True,
        show_progress: bool = False,
    ) -> Union[Tensor, KMostInfluentialResults]:
        r"""
        Last-layer TracIn scores of the training examples for test examples,
        from the test side's passes only (one per checkpoint and test batch).

        Args:
            inputs: Test examples with labels, as for ``TracInWE.influence``.
            k (int, optional): The ``k`` most influential training examples per
                        test example. Default: None (all scores)
            proponents (bool, optional): With ``k``: largest scores if True,
                        most negative if False. Default: True
            show_progress (bool, optional): A bar over the checkpoints.
                        Default: False

        Returns:
            scores (Tensor or KMostInfluentialResults): ``(n_test, n_train)``
                        float32 on CPU, positive for proponents; with ``k``,
                        ``(n_test, k)`` indices and scores, largest first.
        """
        if k is not None:
            check_k(k, self.num_train_examples)
        scores = _LastLayerPass(self, [inputs], isolate=False)
        passes = self.tracin.checkpoint_pass()
        for loaded in tqdm(passes, disable=not show_progress, desc=self.name):
            scores.add(loaded)
        (found,) = scores.results()
        assert isinstance(found, Tensor)
        if k is None:
            return found
        return top_k(found, k, proponents)  # type: ignore[return-value]

    def influence_pass(self, inputs: Sequence[Any]) -> "_LastLayerPass":
        r"""
        The scores of several test inputs from one checkpoint pass of
        ``tracin`` run by the caller, each input scored exactly as
        :meth:`influence` scores it alone (bitwise); each checkpoint is loaded
        once for all of them, and for a TracInWE pass beside it. An input's
        error is kept as its result. Hold the model's lock for the pass.

        Args:
            inputs (sequence): Test inputs, each as for :meth:`influence`.

        Returns:
            scores: ``add(loaded)`` per checkpoint of
                        ``self.tracin.checkpoint_pass()``, then ``results()``:
                        per input ``(n_test, n_train)`` float32 scores, or its
                        exception.
        """
        return _LastLayerPass(self, inputs, isolate=True)

    def self_influence(
        self, inputs: Optional[Any] = None, show_progress: bool = False
    ) -> Tensor:
        r"""
        ``sum_c lr_c |g_c|^2 |a_c|^2`` of each training example, from the file
        (``inputs`` other than None is not supported: use
        :func:`tracincp_fast`).

        Returns:
            scores (Tensor): ``(n_train,)`` float32, >= 0.
        """
        if inputs is not None:
            raise TracInWEError(
                "StoredTracInCPFast.self_influence scores the stored training set "
                "only; for other examples use tracincp_fast(...).self_influence."
            )
        side = self._side
        total = torch.zeros(self.num_train_examples, dtype=torch.float64)
        for rate, g, a in zip(
            side["learning_rates"], side["output_gradients"], side["inputs"]
        ):
            total += rate * g.double().pow(2).sum(1) * a.double().pow(2).sum(1)
        return total.float()

    def _check_checkpoint(self, loaded: LoadedCheckpoint) -> None:
        stored = self._side["checkpoint_fingerprints"]
        if (
            loaded.position >= len(stored)
            or loaded.fingerprint() != stored[loaded.position]
        ):
            raise IndexMismatchError(
                f"Checkpoint {checkpoint_name(loaded.checkpoint)} is not the one "
                f"the stored last-layer side {self.path!r} was computed from. Remove "
                "that file to compute it again for these checkpoints."
            )
        rate = self._side["learning_rates"][loaded.position]
        if loaded.learning_rate != rate:
            raise IndexMismatchError(
                f"Checkpoint {checkpoint_name(loaded.checkpoint)} has learning rate "
                f"{loaded.learning_rate}, but {self.path!r} was computed with {rate}. "
                "Remove that file to compute it again."
            )


class _LastLayerPass:
    r"""
    :class:`StoredTracInCPFast` scores of several test inputs, built up one
    loaded checkpoint at a time: each input's own batches through the model
    and its own products with the stored side, summed over the checkpoints in
    order (as ``influence`` does for one input).
    """

    def __init__(
        self, method: StoredTracInCPFast, inputs: Sequence[Any], isolate: bool
    ) -> None:
        self.method = method
        tracin = method.tracin
        pad_id = padding_id(tracin.model, tracin.embedding_layer)
        self.batches = [
            test_batches(x, pad_id, tracin.batch_size or 16) for x in inputs
        ]
        self.isolate = isolate
        self.errors: Dict[int, Exception] = {}
        self._totals: List[Optional[Tensor]] = [None for _ in self.batches]

    def watch(self) -> "LayerSidesWatch":
        r"""A watch on this method's layer, to take the test side from
        another method's forward and backward passes of the same batches at
        this checkpoint (pass it to :meth:`add` as ``watched``)."""
        return LayerSidesWatch(_module(self.method.tracin.model, self.method.layer))

    def add(
        self, loaded: LoadedCheckpoint, watched: Optional["LayerSidesWatch"] = None
    ) -> None:
        r"""
        Adds the loaded checkpoint's part to every input that has not failed.

        Args:
            loaded (LoadedCheckpoint): From ``tracin.checkpoint_pass()``.
            watched (LayerSidesWatch, optional): What the layer saw in
                        another method's passes of these inputs' batches at
                        this checkpoint (keyed by input position); an input
                        it did not see whole gets its own passes. Default:
                        None (every input its own passes)
        """
        try:
            self.method._check_checkpoint(loaded)
        except Exception as error:
            if not self.isolate:
                raise
            self.errors.update({i: error for i in range(len(self.batches))})
            return
        for i, batches in enumerate(self.batches):
            if i in self.errors:
                continue
            try:
                seen = watched.sides_of(i, len(batches)) if watched else None
                part = self._part(loaded, batches, seen)
            except Exception as error:
                if not self.isolate:
                    raise
                self.errors[i] = error
                continue
            total = self._totals[i]
            self._totals[i] = part if total is None else total + part

    def _part(
        self,
        loaded: LoadedCheckpoint,
        batches: Any,
        seen: Optional[List[Tuple[Tensor, Tensor]]] = None,
    ) -> Tensor:
        method, tracin = self.method, self.method.tracin
        test = seen or [
            layer_sides(tracin, method.layer, b, tracin.test_loss_fn, 0)
            for b in batches
        ]
        gradients = torch.cat([t[0] for t in test]).double()
        activations = torch.cat([t[1] for t in test]).double()
        position = loaded.position
        train_g = method._side["output_gradients"][position].double()
        train_a = method._side["inputs"][position].double()
        part = (gradients @ train_g.T) * (activations @ train_a.T)
        return part * loaded.learning_rate

    def results(self) -> List[Union[Tensor, Exception]]:
        r"""Per input, its ``(n_test, n_train)`` float32 scores, or its error."""
        return [
            self.errors[i]
            if i in self.errors
            else (total if total is not None else torch.zeros(0, 0)).float()
            for i, total in enumerate(self._totals)
        ]


class LayerSidesWatch:
    r"""
    What a linear layer sees in forward and backward passes run by another
    method: per pass, the loss gradient at its output and its input, exactly
    as :func:`layer_sides` computes them in passes of its own (the same
    tensors of the same forward; the gradient at the output does not depend
    on which tensor the backward pass is taken to).

    ``watch(i)`` is a context manager: each forward of the layer inside it
    is filed under input ``i``, its output gradient taken when the backward
    pass reaches it.

    Args:
        module (nn.Module): The layer.
    """

    def __init__(self, module: Module) -> None:
        self.module = module
        self._seen: Dict[int, List[Dict[str, Tensor]]] = {}

    @contextmanager
    def __call__(self, i: int) -> Iterator[None]:
        found = self._seen.setdefault(i, [])

        def hook(_: Module, args: Tuple[Any, ...], output: Any) -> None:
            if not isinstance(output, Tensor) or not output.requires_grad:
                found.append({})  # a pass this watch cannot read
                return
            entry = {"input": args[0].detach()}
            found.append(entry)
            output.register_hook(lambda g: entry.__setitem__("gradient", g))

        handle = self.module.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    def sides_of(self, i: int, passes: int) -> Optional[List[Tuple[Tensor, Tensor]]]:
        r"""
        Input ``i``'s ``(gradients, inputs)`` per pass, ``(B, C)`` and
        ``(B, d)`` float32 on CPU as :func:`layer_sides` returns them, or None
        unless the layer ran exactly once per pass (``passes`` of them), each
        with a ``(B, C)`` output gradient.
        """
        found = self._seen.get(i, [])
        if len(found) != passes or not all("gradient" in e for e in found):
            return None
        sides = []
        for entry in found:
            gradients = entry["gradient"].detach()
            if gradients.dim() != 2:
                return None
            activations = entry["input"].reshape(len(gradients), -1)
            sides.append((gradients.float().cpu(), activations.float().cpu()))
        return sides


def stored_tracincp_fast(
    tracin: Any,
    path: Optional[str] = None,
    final_fc_layer: Optional[str] = None,
    show_progress: bool = False,
) -> StoredTracInCPFast:
    r"""
    Captum's last-layer ``TracInCPFast`` on ``tracin``'s model, training data,
    checkpoints and loss, its training side read from ``path``, or computed
    (one forward pass and a backward pass through the last layer only, per
    training batch and checkpoint) and saved there when ``path`` does not
    exist yet. Later calls, in new processes too, cost the test side only.

    On reading, the file is checked against the training data (its digest:
    token ids at real positions and labels), the loss, the layer and its
    shape; each checkpoint's fingerprint and learning rate are checked when
    it is loaded for a query.

    Args:
        tracin (TracInWE): The method whose model, data, checkpoints and loss
                    are used (``loss_fn`` for the training side,
                    ``test_loss_fn`` for test examples).
        path (str, optional): The file. Default: None, meaning
                    ``tracincp_fast.pt`` in the folder of ``tracin``'s attached
                    index.
        final_fc_layer (str, optional): Dotted name of the final linear layer
                    (its output must be the logits). Default: None, meaning the
                    last ``nn.Linear`` of the model.
        show_progress (bool, optional): A bar over the training batches when the
                    side is computed. Default: False

    Returns:
        method (StoredTracInCPFast): Its ``influence`` equals
                    ``tracincp_fast(...).influence`` on the same inputs.

    Raises:
        TracInWEError: Without ``path`` and without an attached index; if the
                    layer is not an ``nn.Linear`` whose output is the logits.
        IndexMismatchError: If the file was computed from other data, loss,
                    layer or checkpoint count (remove it to compute it again).
    """
    layer = final_fc_layer or last_linear_layer(tracin.model)
    if not isinstance(_module(tracin.model, layer), nn.Linear):
        raise TracInWEError(
            f"`final_fc_layer` {layer!r} is a "
            f"{type(_module(tracin.model, layer)).__name__}; TracInCPFast needs an "
            "nn.Linear whose output is the logits."
        )
    if path is None:
        if tracin.index is None:
            raise TracInWEError(
                "stored_tracincp_fast needs a file `path`, or a TracInWE with an "
                "attached index (build_index / attach_index) to keep it beside."
            )
        path = os.path.join(tracin.index.root, FILE_NAME)
    if os.path.isfile(path):
        side = _read(path)
        digest = training_digest(tracin)
        check_side(side, path, tracin, layer, digest)
    else:
        side = compute_side(tracin, layer, show_progress)
        _write(side, path)
    return StoredTracInCPFast(tracin, layer, path, side)


def layer_sides(
    tracin: Any, layer: str, batch: Any, loss_fn: Any, first: int
) -> Tuple[Tensor, Tensor]:
    r"""
    The loss gradient at the output of ``layer`` and the layer's input, for
    each example of one batch, with the model as loaded (frozen).

    Returns:
        (gradients, inputs): ``(B, C)`` and ``(B, d)`` float32 on CPU.

    Raises:
        TracInWEError: If the layer's output is not the model's ``(B, C)``
                    logits.
    """
    module = _module(tracin.model, layer)
    seen: Dict[str, Tensor] = {}

    def hook(_: Module, args: Tuple[Any, ...], output: Tensor) -> Tensor:
        seen["input"] = args[0].detach()
        seen["output"] = output.detach().requires_grad_(True)
        return seen["output"]

    adapter = tracin.gradient_source.adapter
    model_args, kwargs, labels, _ = adapter.split(batch)
    handle = module.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = adapter.logits(model_args, kwargs)
            output = seen.get("output")
            if (
                output is None
                or logits.dim() != 2
                or output.shape != logits.shape
                or not torch.equal(output.detach(), logits.detach())
            ):
                raise TracInWEError(
                    f"The output of {layer!r} is not the model's (batch, classes) "
                    "logits, so TracInCPFast's closed form does not apply; pass the "
                    "head that produces the logits as `final_fc_layer`."
                )
            loss = summed_loss(loss_fn, logits, labels, first)
            (gradients,) = torch.autograd.grad(loss, output)
    finally:
        handle.remove()
    activations = seen["input"].reshape(len(gradients), -1)
    return gradients.detach().float().cpu(), activations.float().cpu()


def compute_side(tracin: Any, layer: str, show_progress: bool) -> Dict[str, Any]:
    r"""The training side: per checkpoint, every example's ``g`` and ``a``."""
    digests = ExampleDigests()
    sides: Dict[str, Any] = {"output_gradients": [], "inputs": []}
    fingerprints: List[str] = []
    rates: List[float] = []
    training = tracin.training_data
    total = None
    if training.num_batches is not None:
        total = training.num_batches * len(tracin.checkpoints)
    with tqdm(
        total=total,
        disable=not show_progress,
        desc=f"TracInCPFast ({layer}): training side, batch",
    ) as bar:
        for loaded in tracin.checkpoint_pass():
            gradients, inputs, first = [], [], 0
            for batch in training.batches():
                if loaded.position == 0:
                    digests.update(*tracin.gradient_source.token_ids(batch, "training"))
                g, a = layer_sides(tracin, layer, batch, tracin.loss_fn, first)
                gradients.append(g)
                inputs.append(a)
                first += len(g)
                bar.update(1)
            sides["output_gradients"].append(torch.cat(gradients))
            sides["inputs"].append(torch.cat(inputs))
            fingerprints.append(loaded.fingerprint())
            rates.append(float(loaded.learning_rate))
    module = _module(tracin.model, layer)
    return {
        "format": FORMAT,
        "layer": layer,
        "weight_shape": list(module.weight.shape),
        "num_examples": first,
        "data_digest": digests.digests()[0],
        "loss": loss_identity(tracin.loss_fn),
        "checkpoint_fingerprints": fingerprints,
        "learning_rates": rates,
        **sides,
    }


def training_digest(tracin: Any) -> str:
    r"""The digest of ``tracin``'s training data (no model pass)."""
    digests = ExampleDigests()
    with torch.no_grad():
        for batch in tracin.training_data.batches():
            digests.update(*tracin.gradient_source.token_ids(batch, "training"))
    return digests.digests()[0]


def check_side(
    side: Dict[str, Any], path: str, tracin: Any, layer: str, digest: str
) -> None:
    r"""
    Checks a stored side against ``tracin`` before it is used.

    Raises:
        IndexMismatchError: Naming every difference, and the fix.
    """
    module = _module(tracin.model, layer)
    now = {
        "layer": layer,
        "weight_shape": list(module.weight.shape),
        "data_digest": digest,
        "loss": loss_identity(tracin.loss_fn),
        "checkpoints": len(tracin.checkpoints),
    }
    built = {key: side.get(key) for key in now}
    built["checkpoints"] = len(side.get("checkpoint_fingerprints", []))
    problems = differences(built, now)
    if problems:
        raise IndexMismatchError(
            f"The stored last-layer side {path!r} does not fit this model and data: "
            + "; ".join(p.replace("data_digest", "training data") for p in problems)
            + f". Remove {path!r} to compute it again."
        )


def _read(path: str) -> Dict[str, Any]:
    try:
        side = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise IndexMismatchError(
            f"{path!r} cannot be read as a stored last-layer side "
            f"({type(error).__name__}: {str(error)[:200]}). Remove it to compute "
            "it again."
        ) from None
    if not isinstance(side, dict) or side.get("format") != FORMAT:
        raise IndexMismatchError(
            f"{path!r} is not a stored last-layer side of this version (format "
            f"{FORMAT!r}). Remove it to compute it again."
        )
    _check_arrays(side, path)
    return side


def _check_arrays(side: Dict[str, Any], path: str) -> None:
    r"""Shapes and values as written: one (n, C) and one (n, d) per checkpoint."""
    n, (classes, dim) = side["num_examples"], side["weight_shape"]
    count = len(side["checkpoint_fingerprints"])
    lists = (side["output_gradients"], side["inputs"], side["learning_rates"])
    shapes_ok = all(len(values) == count for values in lists) and all(
        tuple(g.shape) == (n, classes) and tuple(a.shape) == (n, dim)
        for g, a in zip(side["output_gradients"], side["inputs"])
    )
    finite = shapes_ok and all(
        bool(torch.isfinite(t).all()) for t in side["output_gradients"] + side["inputs"]
    )
    if not finite:
        raise IndexMismatchError(
            f"{path!r} is damaged (its arrays do not have the shapes or finite "
            "values it was written with). Remove it to compute it again."
        )


def _write(side: Dict[str, Any], path: str) -> None:
    r"""Writes the file whole, then renames it into place."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".tracincp_fast-", dir=folder)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(side, stream)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
