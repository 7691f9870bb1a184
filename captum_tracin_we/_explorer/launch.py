#!/usr/bin/env python3

r"""
Starting the influence explorer from Python (:meth:`TracInWE.explore`): on a
copy of the model, with Captum's last layer beside TracIn-WE, served in a
background thread.
"""

import os
import warnings
from typing import Any, Callable, Dict, List, Optional

from captum_tracin_we._checkpoints.resident_checkpoints import ResidentCheckpoints
from captum_tracin_we._checkpoints.state_dict_loaders import loads_state_dict_only
from captum_tracin_we._explorer.batch_bounds import (
    DEFAULT_KEEP_CHECKPOINTS_GIB,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_WAIT,
    checked_keep_checkpoints_gib,
)
from captum_tracin_we._explorer.engine import Explorer
from captum_tracin_we._explorer.server import ExplorerServer


def explore(
    tracin: Any,
    tokenizer: Any,
    train_texts: List[str],
    label_names: Optional[List[str]] = None,
    last_layer: Any = True,
    k: int = 10,
    max_length: Optional[int] = None,
    encode: Optional[Callable[..., Any]] = None,
    host: str = "127.0.0.1",
    port: int = 0,
    description: str = "",
    show_progress: bool = True,
) -> ExplorerServer:
    r"""Prepares an :class:`Explorer` and starts its server in a background
    thread (see :meth:`TracInWE.explore`)."""
    if getattr(tracin, "index", None) is None:
        print(
            "No index is attached: every query recomputes the training side. Call "
            "tracin.build_index(path) or tracin.attach_index(path) first for fast "
            "queries."
        )
    tracin = tracin.on_model_copy()  # the caller may go on using theirs
    explorer = build_explorer(
        tracin,
        tokenizer,
        train_texts,
        label_names=label_names,
        last_layer=_last_layer(tracin, last_layer),
        k=k,
        max_length=max_length,
        encode=encode,
        description=description or type(tracin.model).__name__,
        show_progress=show_progress,
    )
    server = ExplorerServer(explorer, host, port).start()
    print(f"TracIn-WE explorer: {server.url}")
    return server


def build_explorer(
    tracin: Any,
    tokenizer: Any,
    train_texts: List[str],
    label_names: Optional[List[str]],
    last_layer: Any,
    k: int,
    max_length: Optional[int],
    description: str,
    encode: Optional[Callable[..., Any]] = None,
    show_progress: bool = True,
    extra_methods: Optional[Dict[str, Any]] = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_wait: float = DEFAULT_MAX_WAIT,
    keep_checkpoints_gib: float = DEFAULT_KEEP_CHECKPOINTS_GIB,
) -> Explorer:
    r"""
    The one way an explorer is made, from Python and from
    ``captum-tracin-we explore``: an :class:`Explorer` over ``tracin``, with
    ``last_layer`` (a ``DataInfluence`` or None) beside TracIn-WE, prepared
    (its training side read once), its query batches bounded by
    ``max_batch`` and ``max_wait`` (see :class:`Explorer`).

    ``tracin`` must be the explorer's own (a model copy, or one loaded for
    it): its checkpoint loader, when it is one of the package's own (which
    only load a state dict), is wrapped in a :class:`ResidentCheckpoints`, so
    each checkpoint is read from disk once and kept in memory, up to
    ``keep_checkpoints_gib`` GiB in all (0 keeps none); later queries point
    the model at the kept weights instead of reading and copying them. A
    custom loader is used as given.

    Returns:
        explorer (Explorer): Ready to answer queries and to be served.
    """
    budget = checked_keep_checkpoints_gib(keep_checkpoints_gib)
    load = tracin.checkpoints_load_func
    if isinstance(load, ResidentCheckpoints):  # bound to another model
        load = load.load_func
    if budget > 0 and loads_state_dict_only(load):
        load = ResidentCheckpoints(load, int(budget * 2**30), tracin.model)
    tracin.checkpoints_load_func = load
    explorer = Explorer(
        tracin,
        tokenizer,
        train_texts,
        label_names=label_names,
        last_layer=last_layer,
        last_layer_name=_method_name(last_layer),
        encode=encode,
        max_length=max_length,
        k=k,
        description=description,
        extra_methods=extra_methods,
        max_batch=max_batch,
        max_wait=max_wait,
    )
    return explorer.prepare(show_progress=show_progress)


def _last_layer(tracin: Any, last_layer: Any) -> Any:
    if last_layer is True and getattr(tracin, "index", None) is not None:
        return stored_last_layer(tracin)
    if last_layer is True:
        return rand_proj_last_layer(
            tracin.model,
            tracin.train_dataloader,
            tracin.checkpoints,
            tracin.checkpoints_load_func,
        )
    if last_layer is False or last_layer is None:
        return None
    if not callable(getattr(last_layer, "influence", None)):
        raise TypeError(
            "`last_layer` must be True (Captum's TracInCPFastRandProj on the last "
            "layer), False, or a DataInfluence such as tracincp_fast(...); got "
            f"{type(last_layer).__name__}."
        )
    return last_layer


def _method_name(method: Any) -> str:
    if method is None:
        return "Last layer"
    name = getattr(method, "get_name", None)
    return str(name()) if callable(name) else type(method).__name__


def stored_last_layer(tracin: Any, show_progress: bool = False) -> Any:
    r"""
    Captum's last-layer ``TracInCPFast`` on the classifier head, its training
    side kept beside ``tracin``'s attached index
    (:func:`~captum_tracin_we.stored_tracincp_fast`: computed there on first
    use, one pass per checkpoint, then read). Its scores equal Captum's, and
    its queries share TracIn-WE's checkpoint pass.

    Returns:
        method (StoredTracInCPFast): Named ``"TracInCPFast (<layer>)"``.
    """
    from captum_tracin_we._baselines.stored_last_layer import (
        FILE_NAME,
        stored_tracincp_fast,
    )

    path = os.path.join(tracin.index.root, FILE_NAME)
    verb = "Reading" if os.path.isfile(path) else "Computing"
    print(f"{verb} the last-layer side (Captum's TracInCPFast, exact) in {path}...")
    return stored_tracincp_fast(tracin, path, show_progress=show_progress)


def rand_proj_last_layer(
    model: Any, loader: Any, checkpoints: Any, load_func: Any
) -> Any:
    r"""Captum's ``TracInCPFastRandProj`` on the last linear layer, exact (no
    projection): its training side is computed now, one pass per checkpoint."""
    from captum_tracin_we._baselines.captum_methods import tracincp_fast_rand_proj

    print(
        "Preparing the last-layer side (Captum's TracInCPFastRandProj, exact): "
        "one pass over the training data per checkpoint; it keeps the last "
        "layer's training side in memory..."
    )
    with warnings.catch_warnings():  # Captum's memory warning, said above
        warnings.filterwarnings("ignore", message=".*stores quantities related to")
        return tracincp_fast_rand_proj(model, loader, checkpoints, load_func)
