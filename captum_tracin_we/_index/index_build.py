#!/usr/bin/env python3

r"""
Building a word-gradient index: one pass over the training set per
checkpoint, each shard's word rows written as one unit, on one process or
split over ``torch.distributed`` ranks. Storage is :class:`IndexStore`'s; the
model side is :class:`WordGradientSource`'s.
"""

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from captum_tracin_we._checkpoints.checkpoint_pass import LoadedCheckpoint
from captum_tracin_we._data.data_fingerprint import ExampleDigests
from captum_tracin_we._data.training_data import TrainingData
from captum_tracin_we._errors import IndexMismatchError, TrainingDataError
from captum_tracin_we._gradients.gradient_source import WordGradientSource
from captum_tracin_we._index.index_bindings import embedding_identity, loss_identity
from captum_tracin_we._index.index_scoring import barrier, projection, rank_and_world
from captum_tracin_we._index.index_store import IndexSettings, IndexStore
from captum_tracin_we._scoring.shared_tokens import WordRows, self_scores

Passes = Callable[[], Iterator[LoadedCheckpoint]]


@dataclass
class BuildOptions:
    r"""How an index stores word gradients (see ``TracInWE.build_index``)."""

    shard_size: int = 10000
    dtype: str = "float32"
    projection_dim: Optional[int] = None
    projection_seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.shard_size, bool) or not isinstance(self.shard_size, int):
            raise ValueError(
                f"`shard_size` must be a positive int; got {self.shard_size!r}."
            )
        if self.shard_size < 1:
            raise ValueError(f"`shard_size` must be positive; got {self.shard_size}.")
        if self.dtype not in ("float32", "float16"):
            raise ValueError(
                f"`dtype` must be 'float32' or 'float16'; got {self.dtype!r}."
            )
        if self.projection_dim is not None and (
            isinstance(self.projection_dim, bool)
            or not isinstance(self.projection_dim, int)
            or self.projection_dim < 1
        ):
            raise ValueError(
                "`projection_dim` must be a positive int or None; got "
                f"{self.projection_dim!r}."
            )
        if isinstance(self.projection_seed, bool) or not isinstance(
            self.projection_seed, int
        ):
            raise ValueError(
                f"`projection_seed` must be an int; got {self.projection_seed!r}."
            )


def index_settings(
    source: WordGradientSource,
    loss_fn: Callable[..., Tensor],
    passes: Passes,
    options: BuildOptions,
) -> IndexSettings:
    r"""
    The settings of a build: everything that changes the stored vectors, with
    each checkpoint's rate and fingerprint, the loss's identity and the
    embedding module's (:mod:`captum_tracin_we._index.index_bindings`).
    """
    rates, fingerprints = [], []
    for loaded in passes():
        rates.append(loaded.learning_rate)
        fingerprints.append(loaded.fingerprint())
    embedding = source.adapter.embedding
    return IndexSettings(
        vocab_size=embedding.num_embeddings,
        dim=embedding.embedding_dim,
        stored_dim=options.projection_dim or embedding.embedding_dim,
        dtype=options.dtype,
        top_k_words=source.top_k_words,
        exclude_token_ids=source.exclude_token_ids.tolist(),
        projection_seed=options.projection_seed if options.projection_dim else None,
        learning_rates=rates,
        checkpoint_fingerprints=fingerprints,
        shard_size=options.shard_size,
        loss=loss_identity(loss_fn),
        embedding=embedding_identity(source.adapter.model, embedding),
    )


def build_word_index(
    store: IndexStore,
    training: TrainingData,
    source: WordGradientSource,
    loss_fn: Callable[..., Tensor],
    passes: Passes,
    options: BuildOptions,
    show_progress: bool,
) -> None:
    r"""
    Writes every unit this rank owns that is not finished yet, then (rank 0)
    the manifest. Finished units are checked against this build's settings,
    data and checksums, so damaged ones are rebuilt and other data refused.
    Rank 0 holds the folder's build lock throughout, and on taking it removes
    the temporary files a killed build left.

    Raises:
        IndexMismatchError: If the folder holds a build with other settings
                    (the loss and the embedding module included) or data.
        OSError: If a file cannot be written, a full disk for instance (the
                    message names the file, the folder and the fix).
    """
    rank, world = rank_and_world()
    settings = index_settings(source, loss_fn, passes, options)
    lock = store.building() if rank == 0 else contextlib.nullcontext()
    with lock:
        _build_units(
            store, settings, training, source, loss_fn, passes, options, show_progress
        )


def _build_units(
    store: IndexStore,
    settings: IndexSettings,
    training: TrainingData,
    source: WordGradientSource,
    loss_fn: Callable[..., Tensor],
    passes: Passes,
    options: BuildOptions,
    show_progress: bool,
) -> None:
    rank, world = rank_and_world()
    if rank == 0:
        store.claim(settings)
    barrier()
    if rank != 0:
        store.claim(settings)  # checks the claim rank 0 made
    total = None
    if training.num_batches is not None:
        total = settings.num_checkpoints * training.num_batches
    bar = tqdm(
        total=total,
        desc="Building the TracIn-WE index"
        + (f" (rank {rank} of {world})" if world > 1 else ""),
        disable=not show_progress,
    )
    writer = _UnitWriter(store, settings, options)
    num_shards = 0
    with bar:
        for loaded in passes():
            num_shards = _build_checkpoint(
                writer, training, source, loss_fn, loaded.position, rank, world, bar
            )
    barrier()
    if rank == 0:
        store.write_manifest(settings, num_shards)
    barrier()


class _UnitWriter:
    r"""Projects, inverts by token and writes the rows of one unit."""

    def __init__(
        self, store: IndexStore, settings: IndexSettings, options: BuildOptions
    ) -> None:
        self.store = store
        self.settings = settings
        self.matrix = (
            projection(settings.dim, settings.stored_dim, options.projection_seed)
            if options.projection_dim
            else None
        )

    def write(
        self, shard: int, checkpoint: int, first: int, rows: WordRows, digest: str
    ) -> None:
        exact_self = self_scores(rows)
        vectors = rows.vectors if self.matrix is None else rows.vectors @ self.matrix
        order = torch.argsort(rows.token_ids, stable=True)
        tokens = rows.token_ids[order]
        counts = torch.bincount(tokens, minlength=self.settings.vocab_size)
        offsets = torch.zeros(self.settings.vocab_size + 1, dtype=torch.long)
        offsets[1:] = counts.cumsum(0)
        arrays = {
            "tokens": tokens.numpy().astype(np.int64),
            "examples": (rows.example_index[order] + first).numpy().astype(np.int64),
            "vectors": vectors[order].numpy().astype(self.settings.dtype),
            "offsets": offsets.numpy(),
            "self": exact_self.double().numpy(),
        }
        self.store.write_unit(
            shard, checkpoint, first, rows.num_examples, digest, arrays, self.settings
        )


@dataclass
class _Shard:
    r"""The shard being streamed: its examples, rows and data digest."""

    index: int
    first: int
    mine: bool
    finished: Optional[dict]
    rows: List[WordRows]
    digests: ExampleDigests
    count: int = 0


def _build_checkpoint(
    writer: _UnitWriter,
    training: TrainingData,
    source: WordGradientSource,
    loss_fn: Callable[..., Tensor],
    checkpoint: int,
    rank: int,
    world: int,
    bar: Any,
) -> int:
    r"""Streams the training set once at one checkpoint; returns the shard count."""
    store, settings = writer.store, writer.settings
    shard: Optional[_Shard] = None
    first = 0
    for batch in training.batches():
        index = first // settings.shard_size
        if shard is None or shard.index != index:
            _finish(writer, shard, checkpoint)
            mine = index % world == rank
            finished = (
                store.finished_unit(index, checkpoint, settings) if mine else None
            )
            shard = _Shard(index, first, mine, finished, [], ExampleDigests())
        if not shard.mine:
            count = source.adapter.count(batch)
        elif shard.finished is None:
            rows = source.rows(batch, loss_fn, first, "training", shard.digests)
            shard.rows.append(rows.to("cpu"))  # the index lives in host memory
            count = rows.num_examples
        else:
            ids, real, labels, inputs = source.token_ids(batch, "training")
            shard.digests.update(ids, real, labels, inputs)
            count = int(ids.shape[0])
        shard.count += count
        first += count
        bar.update(1)
    _finish(writer, shard, checkpoint)
    if first == 0:
        raise TrainingDataError(
            "The training set is empty; TracIn needs examples to score."
        )
    training.check_count(first)
    assert shard is not None
    return shard.index + 1


def _finish(writer: _UnitWriter, shard: Optional[_Shard], checkpoint: int) -> None:
    if shard is None or not shard.mine:
        return
    digest = shard.digests.digests()[0]
    if shard.finished is None:
        rows = WordRows.cat(shard.rows)
        writer.write(shard.index, checkpoint, shard.first, rows, digest)
        return
    if (
        shard.finished["first"],
        shard.finished["count"],
        shard.finished["data_digest"],
    ) != (
        shard.first,
        shard.count,
        digest,
    ):
        raise IndexMismatchError(
            f"The index folder {writer.store.root!r} holds a partial build from other "
            f"training data (shard {shard.index}, examples {shard.first}.."
            f"{shard.first + shard.count - 1} differ), or from the same data in "
            "batches of another size (shards end at batch boundaries). Resume with "
            "the same data and batch size, or use a new folder."
        )
