#!/usr/bin/env python3

r"""
The ``captum-tracin-we explore`` job: the same model and data as ``explain``,
served as an interactive influence explorer from an index (built on first
use).
"""

from dataclasses import dataclass, field
from typing import Any, List

from captum_tracin_we._explorer.batch_bounds import (
    DEFAULT_KEEP_CHECKPOINTS_GIB,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_WAIT,
    checked_keep_checkpoints_gib,
    checked_max_batch,
    checked_max_wait,
)
from captum_tracin_we._explorer.engine import Explorer
from captum_tracin_we._explorer.launch import build_explorer, stored_last_layer
from captum_tracin_we._explorer.server import ExplorerServer, listening_socket
from captum_tracin_we._jobs.explain import (
    ExplainSettings,
    _tracin,
    check_index_folder,
    extra_methods,
    group_layers,
    load_training,
)


@dataclass
class ExploreSettings(ExplainSettings):
    r"""Settings of the explore job (see ``captum-tracin-we explore --help``)."""

    host: str = "127.0.0.1"
    port: int = 8000
    top_k: int = 10
    allowed_hosts: List[str] = field(default_factory=list)
    max_batch: int = DEFAULT_MAX_BATCH
    max_wait: float = DEFAULT_MAX_WAIT
    keep_checkpoints_gib: float = DEFAULT_KEEP_CHECKPOINTS_GIB


def prepare_explorer(settings: ExploreSettings) -> Explorer:
    r"""
    Loads the model and training data, attaches the index (building it on
    first use), prepares the last-layer side, and returns the prepared
    explorer.

    Raises:
        TracInWEError: If the index folder is a file or cannot be written
                    where a build is needed (checked before the model loads),
                    or for bad input.
    """
    if not settings.index:
        raise ValueError("Give an index folder: --index DIR (built on first use).")
    checked_max_batch(settings.max_batch)  # before the model loads
    checked_max_wait(settings.max_wait)
    checked_keep_checkpoints_gib(settings.keep_checkpoints_gib)
    check_index_folder(settings.index)  # before the model loads
    folder, names, train, _, max_length, encoded = load_training(settings)
    if settings.layer_group:
        group_layers(folder.model, settings.layer_group)  # before the index build
    tracin = _tracin(settings, folder, encoded)
    last_layer: Any = None
    if settings.last_layer:  # beside the index, sharing TracIn-WE's pass
        last_layer = stored_last_layer(tracin, settings.show_progress)
    extra = extra_methods(settings, folder, encoded)
    return build_explorer(
        tracin,
        folder.tokenizer,
        train.texts,
        label_names=names,
        last_layer=last_layer,
        k=settings.top_k,
        max_length=max_length,
        description=folder.description,
        show_progress=settings.show_progress,
        extra_methods=extra,
        max_batch=settings.max_batch,
        max_wait=settings.max_wait,
        keep_checkpoints_gib=settings.keep_checkpoints_gib,
    )


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
