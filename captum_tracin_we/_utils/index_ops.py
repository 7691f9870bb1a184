#!/usr/bin/env python3

r"""
Building, attaching and querying a word-gradient index for a TracInWE
instance, on one process or under ``torch.distributed``.
"""

import json
import os
from typing import Any, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor
from tqdm.auto import tqdm

from captum_tracin_we._utils.shared_tokens import QueryGroups, WordRows, self_scores
from captum_tracin_we._utils.word_index import (
    IndexMismatchError,
    IndexSettings,
    WordIndex,
    collect_manifest,
    embedding_fingerprint,
    projection,
    unit_done,
    write_unit,
)

BUILD = "build.json"


def _rank_and_world() -> Tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _settings(
    tracin: Any,
    dtype: str,
    projection_dim: Optional[int],
    projection_seed: int,
    shard_size: int,
) -> IndexSettings:
    if dtype not in ("float32", "float16"):
        raise ValueError(f"`dtype` must be 'float32' or 'float16'; got {dtype!r}.")
    embedding = tracin.embedding_layer
    rates, fingerprints = [], []
    for checkpoint in tracin.checkpoints:
        rates.append(tracin._load(checkpoint))
        fingerprints.append(embedding_fingerprint(embedding.weight))
    return IndexSettings(
        vocab_size=embedding.num_embeddings,
        dim=embedding.embedding_dim,
        stored_dim=projection_dim or embedding.embedding_dim,
        dtype=dtype,
        top_k_words=tracin.top_k_words,
        exclude_token_ids=tracin.exclude_token_ids.tolist(),
        projection_seed=projection_seed if projection_dim else None,
        learning_rates=rates,
        checkpoint_fingerprints=fingerprints,
        shard_size=shard_size,
    )


def _claim_folder(path: str, settings: IndexSettings, rank: int) -> None:
    r"""Records the build settings, or checks them when resuming."""
    build = os.path.join(path, BUILD)
    if rank == 0:
        os.makedirs(path, exist_ok=True)
        if os.path.isfile(build):
            with open(build, encoding="utf-8") as stream:
                previous = json.load(stream)
            if previous != settings.to_json():
                raise IndexMismatchError(
                    f"{path!r} holds a build with other settings, model or "
                    "checkpoints; use a new folder."
                )
        else:
            with open(build, "w", encoding="utf-8") as stream:
                json.dump(settings.to_json(), stream, indent=1)
    _barrier()


def build_word_index(
    tracin: Any,
    path: str,
    shard_size: int,
    dtype: str,
    projection_dim: Optional[int],
    projection_seed: int,
    show_progress: bool,
) -> WordIndex:
    r"""See :meth:`TracInWE.build_index`."""
    if shard_size < 1:
        raise ValueError(f"`shard_size` must be positive; got {shard_size}.")
    rank, world = _rank_and_world()
    with tracin._scoring():
        settings = _settings(tracin, dtype, projection_dim, projection_seed, shard_size)
        _claim_folder(path, settings, rank)
        matrix = (
            projection(settings.dim, settings.stored_dim, projection_seed)
            if projection_dim
            else None
        )
        total = None
        if tracin.train_dataloader_len is not None:
            total = len(tracin.checkpoints) * tracin.train_dataloader_len
        bar = tqdm(
            total=total,
            desc=f"Building the TracIn-WE index (rank {rank})",
            disable=not show_progress,
        )
        n_shards = 0
        for c, checkpoint in enumerate(tracin.checkpoints):
            tracin._load(checkpoint)
            n_shards = _build_checkpoint(
                tracin, path, c, settings, matrix, rank, world, bar
            )
        bar.close()
    _barrier()
    if rank == 0:
        collect_manifest(path, settings, n_shards)
    _barrier()
    return tracin.attach_index(path, verify=False)


def _build_checkpoint(tracin, path, c, settings, matrix, rank, world, bar) -> int:
    r"""Streams the training set once at checkpoint ``c``; returns the shard count."""
    buffer: List[WordRows] = []
    shard, shard_first, first = -1, 0, 0

    def flush() -> None:
        if buffer and shard % world == rank and not unit_done(path, shard, c):
            rows = WordRows.cat(buffer)
            exact_self = self_scores(rows)
            if matrix is not None:
                rows = WordRows(
                    rows.example_index,
                    rows.token_ids,
                    rows.vectors @ matrix,
                    rows.num_examples,
                )
            write_unit(
                path,
                shard,
                c,
                shard_first,
                rows.num_examples,
                rows,
                exact_self,
                settings,
            )

    for batch in tracin.train_dataloader:
        batch_shard = first // settings.shard_size
        if batch_shard != shard:
            flush()
            buffer, shard, shard_first = [], batch_shard, first
        size = _batch_size(tracin, batch)
        if shard % world == rank and not unit_done(path, shard, c):
            rows = tracin._batch_rows(batch, tracin.loss_fn, first, "training")
            buffer.append(rows.to("cpu"))  # the index lives in host memory and files
        else:
            buffer.append(_empty_rows(size, settings.dim))
        first += size
        bar.update(1)
    flush()
    if first == 0:
        raise ValueError("The training set is empty; TracIn needs examples to score.")
    return shard + 1


def _batch_size(tracin: Any, batch: Any) -> int:
    _, _, labels, _ = tracin._adapter.split(batch)
    return int(labels.shape[0])


def _empty_rows(count: int, dim: int) -> WordRows:
    empty = torch.zeros(0, dtype=torch.long)
    return WordRows(empty, empty, torch.zeros(0, dim), count)


def open_word_index(tracin: Any, path: str, verify: bool) -> WordIndex:
    r"""Opens an index and checks that it fits ``tracin``'s model and settings."""
    index = WordIndex(path, verify=verify)
    settings, embedding = index.settings, tracin.embedding_layer
    problems = []
    if settings.vocab_size != embedding.num_embeddings:
        problems.append(
            f"vocabulary {settings.vocab_size} vs the model's "
            f"{embedding.num_embeddings} (another tokenizer or model)"
        )
    if settings.dim != embedding.embedding_dim:
        problems.append(f"dimension {settings.dim} vs {embedding.embedding_dim}")
    if settings.top_k_words != tracin.top_k_words:
        problems.append(f"top_k_words {settings.top_k_words} vs {tracin.top_k_words}")
    if settings.exclude_token_ids != tracin.exclude_token_ids.tolist():
        problems.append("a different exclude_token_ids")
    if len(settings.learning_rates) != len(tracin.checkpoints):
        problems.append(
            f"{len(settings.learning_rates)} checkpoints vs {len(tracin.checkpoints)}"
        )
    if problems:
        raise IndexMismatchError(
            f"The index at {path!r} does not fit this TracInWE: "
            + "; ".join(problems)
            + ". Build a new index for this model."
        )
    return index


def indexed_scores(tracin: Any, test_batches: Any, aggregate: bool, bar: Any) -> Tensor:
    r"""TracIn-WE scores of the test batches against the whole index."""
    index: WordIndex = tracin.index
    settings = index.settings
    matrix = (
        projection(settings.dim, settings.stored_dim, settings.projection_seed)
        if settings.projection_seed is not None
        else None
    )
    scores: Optional[Tensor] = None
    for c, checkpoint in enumerate(tracin.checkpoints):
        learning_rate = tracin._load(checkpoint)
        fingerprint = embedding_fingerprint(tracin.embedding_layer.weight)
        if fingerprint != settings.checkpoint_fingerprints[c]:
            raise IndexMismatchError(
                f"Checkpoint {checkpoint!r} is not the one the index was built from "
                f"(its embedding table differs). Rebuild the index for these "
                "checkpoints."
            )
        queries = WordRows.cat(
            list(tracin._streamed_rows(test_batches, tracin.test_loss_fn, bar, "test"))
        ).to("cpu")
        if aggregate:
            queries = queries.summed()
        queries = queries.scaled(learning_rate)
        if matrix is not None:
            queries.vectors = queries.vectors @ matrix
        part = _score_shards(index, c, queries)
        scores = part if scores is None else scores + part
    assert scores is not None
    return scores


def _score_shards(index: WordIndex, c: int, queries: WordRows) -> Tensor:
    rank, world = _rank_and_world()
    groups = QueryGroups(
        WordRows(
            queries.example_index.cpu(),
            queries.token_ids.cpu(),
            queries.vectors.cpu(),
            queries.num_examples,
        )
    )
    scores = torch.zeros(queries.num_examples, index.num_examples)
    for shard in index.shards:
        if world > 1 and shard["shard"] % world != rank:
            continue
        first, count = shard["first"], shard["count"]
        scores[:, first : first + count] = index.shard_scores(shard, c, groups)
    if world > 1:
        scores = _all_reduce(scores)
    return scores


def _all_reduce(tensor: Tensor) -> Tensor:
    r"""Sums a CPU tensor over ranks (through the GPU when the backend is NCCL)."""
    if dist.get_backend() == "nccl":
        on_device = tensor.cuda()
        dist.all_reduce(on_device)
        return on_device.cpu()
    dist.all_reduce(tensor)
    return tensor


def indexed_self_scores(index: WordIndex) -> Tensor:
    r"""Self-influence of every training example from the stored squared norms."""
    total = torch.zeros(index.num_examples, dtype=torch.float64)
    for c, learning_rate in enumerate(index.settings.learning_rates):
        for shard in index.shards:
            first, count = shard["first"], shard["count"]
            total[first : first + count] += learning_rate * index.self_scores(shard, c)
    return total.float()
