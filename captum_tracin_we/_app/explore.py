#!/usr/bin/env python3

r"""
Starting the influence explorer: the ``captum-tracin-we explore`` job (the
same model and data as ``explain``, served from an index built on first use)
and :meth:`TracInWE.explore` (a TracInWE in a notebook).
"""

from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional

from captum_tracin_we._app.data_files import read_text_data
from captum_tracin_we._app.explain import (
    ExplainSettings,
    _loader,
    _max_length,
    _report_truncation,
    _tracin,
    encode,
)
from captum_tracin_we._app.explorer import Explorer
from captum_tracin_we._app.explorer_server import ExplorerServer, listening_socket
from captum_tracin_we._app.labels import label_ids, model_label_names
from captum_tracin_we._app.model_folder import load_model_folder


@dataclass
class ExploreSettings(ExplainSettings):
    r"""Settings of the explore job (see ``captum-tracin-we explore --help``)."""

    host: str = "127.0.0.1"
    port: int = 8000
    top_k: int = 10
    allowed_hosts: List[str] = field(default_factory=list)


def prepare_explorer(settings: ExploreSettings) -> Explorer:
    r"""
    Loads the model and training data, attaches the index (building it on
    first use), prepares the last-layer side, and returns the prepared
    explorer.
    """
    if not settings.index:
        raise ValueError("Give an index folder: --index DIR (built on first use).")
    folder = load_model_folder(settings.model)
    names = model_label_names(folder.model.config, folder.model.config.num_labels)
    train = read_text_data(settings.train, settings.text_column, settings.label_column)
    train_labels = label_ids(train.labels or [], names, repr(settings.train))
    max_length = _max_length(settings, folder)
    encoded = encode(folder.tokenizer, train.texts, train_labels, max_length)
    _report_truncation("training", encoded, max_length)
    tracin = _tracin(settings, folder, encoded)
    last_layer: Any = None
    if settings.last_layer:
        last_layer = rand_proj_last_layer(
            folder.model,
            _loader(folder.tokenizer, encoded, settings.batch_size),
            folder.checkpoints,
            folder.load_func,
        )
    explorer = Explorer(
        tracin,
        folder.tokenizer,
        train.texts,
        label_names=names,
        last_layer=last_layer,
        last_layer_name=last_layer.get_name() if last_layer is not None else "",
        max_length=max_length,
        k=settings.top_k,
        description=folder.description,
    )
    return explorer.prepare(show_progress=settings.show_progress)


def run_explore(settings: ExploreSettings) -> None:
    r"""Prepares the explorer and serves it until Ctrl+C. The port is taken
    first, so that a port in use is reported before the preparation."""
    sock = listening_socket(settings.host, settings.port)
    explorer = prepare_explorer(settings)
    server = ExplorerServer(
        explorer, settings.host, allowed_hosts=settings.allowed_hosts, sock=sock
    )
    print(f"TracIn-WE explorer: {server.url}  (Ctrl+C stops it)")
    server.serve_forever()


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
    tracin = tracin._on_model_copy()  # the caller may go on using theirs
    method = _last_layer(tracin, last_layer)
    explorer = Explorer(
        tracin,
        tokenizer,
        train_texts,
        label_names=label_names,
        last_layer=method,
        last_layer_name=_method_name(method),
        encode=encode,
        max_length=max_length,
        k=k,
        description=description or type(tracin.model).__name__,
    )
    explorer.prepare(show_progress=show_progress)
    server = ExplorerServer(explorer, host, port).start()
    print(f"TracIn-WE explorer: {server.url}")
    return server


def _last_layer(tracin: Any, last_layer: Any) -> Any:
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


def rand_proj_last_layer(
    model: Any, loader: Any, checkpoints: Any, load_func: Any
) -> Any:
    r"""Captum's ``TracInCPFastRandProj`` on the last linear layer, exact (no
    projection): its training side is computed now, one pass per checkpoint."""
    from captum_tracin_we._core.captum_methods import tracincp_fast_rand_proj

    print(
        "Preparing the last-layer side (Captum's TracInCPFastRandProj, exact): "
        "one pass over the training data per checkpoint..."
    )
    return tracincp_fast_rand_proj(model, loader, checkpoints, load_func)
