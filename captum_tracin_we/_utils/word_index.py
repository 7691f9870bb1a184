#!/usr/bin/env python3

r"""
Stage 2, persistent: the word gradients of a training set stored once per
checkpoint as an inverted index by token id, so that a query only reads the
training rows of the tokens it holds.

Layout of an index folder::

    manifest.json                     format, model, checkpoints, shards, ...
    shard-00000-ckpt-00/tokens.npy    (K,) int64, sorted
    shard-00000-ckpt-00/examples.npy  (K,) int64, global example index
    shard-00000-ckpt-00/vectors.npy   (K, r) float32 or float16, memory-mapped
    shard-00000-ckpt-00/offsets.npy   (V+1,) int64: rows of token t are
                                      offsets[t]:offsets[t+1]
    shard-00000-ckpt-00/self.npy      (n,) float64 exact squared norms per example
    shard-00000-ckpt-00.json          sizes and SHA-256 checksums, written last:
                                      the unit is finished when it exists

Every file is written to a temporary name and renamed into place, so a build
that is killed leaves whole shards or nothing; rebuilding resumes after the
finished units. No pickle: numpy ``.npy`` (``allow_pickle=False``) and JSON.
"""

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch import Tensor

from captum_tracin_we._utils.shared_tokens import QueryGroups, WordRows

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class IndexMismatchError(ValueError):
    r"""An index that does not fit the model, or a damaged index."""


@dataclass
class IndexSettings:
    r"""What an index was built with; attaching checks it against the model."""

    vocab_size: int
    dim: int
    stored_dim: int
    dtype: str
    top_k_words: Optional[int]
    exclude_token_ids: List[int]
    projection_seed: Optional[int]
    learning_rates: List[float]
    checkpoint_fingerprints: List[str]
    shard_size: int

    def to_json(self) -> Dict[str, Any]:
        return dict(self.__dict__)


def projection(dim: int, stored_dim: int, seed: int) -> Tensor:
    r"""
    A seeded Johnson-Lindenstrauss matrix ``(dim, stored_dim)`` with i.i.d.
    N(0, 1/stored_dim) entries: ``E[P P^T] = I``, so projected dot products are
    unbiased estimates of the exact ones.
    """
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(dim, stored_dim, generator=generator) / stored_dim**0.5


def embedding_fingerprint(weight: Tensor) -> str:
    r"""SHA-256 of an embedding table's bytes (identifies a checkpoint's table)."""
    data = weight.detach().float().cpu().contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()


def _atomic_save(path: str, array: np.ndarray) -> str:
    directory = os.path.dirname(path)
    handle, temporary = tempfile.mkstemp(dir=directory, suffix=".tmp")
    with os.fdopen(handle, "wb") as stream:
        np.save(stream, array, allow_pickle=False)
    os.replace(temporary, path)
    return _sha256(path)


def _atomic_json(path: str, content: Dict[str, Any]) -> None:
    directory = os.path.dirname(path) or "."
    handle, temporary = tempfile.mkstemp(dir=directory, suffix=".tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        json.dump(content, stream, indent=1)
    os.replace(temporary, path)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def unit_name(shard: int, checkpoint: int) -> str:
    return f"shard-{shard:05d}-ckpt-{checkpoint:02d}"


def unit_done(root: str, shard: int, checkpoint: int) -> bool:
    r"""A (shard, checkpoint) unit is finished when its sidecar JSON exists."""
    return os.path.isfile(os.path.join(root, unit_name(shard, checkpoint) + ".json"))


def write_unit(
    root: str,
    shard: int,
    checkpoint: int,
    first: int,
    count: int,
    rows: WordRows,
    self_scores: Tensor,
    settings: IndexSettings,
) -> None:
    r"""
    Writes the rows of one shard at one checkpoint as an inverted index by
    token, then its sidecar (sizes and checksums), each atomically.

    Args:
        rows (WordRows): The stored rows (already projected, if at all);
                    example indices local to the shard.
        self_scores (Tensor): ``(count,)`` exact squared norms per example.
    """
    folder = os.path.join(root, unit_name(shard, checkpoint))
    os.makedirs(folder, exist_ok=True)
    order = torch.argsort(rows.token_ids, stable=True)
    tokens = rows.token_ids[order]
    counts = torch.bincount(tokens, minlength=settings.vocab_size)
    offsets = torch.zeros(settings.vocab_size + 1, dtype=torch.long)
    offsets[1:] = counts.cumsum(0)
    arrays = {
        "tokens": tokens.numpy().astype(np.int64),
        "examples": (rows.example_index[order] + first).numpy().astype(np.int64),
        "vectors": rows.vectors[order].numpy().astype(settings.dtype),
        "offsets": offsets.numpy(),
        "self": self_scores.double().numpy(),
    }
    checksums = {
        name: _atomic_save(os.path.join(folder, f"{name}.npy"), array)
        for name, array in arrays.items()
    }
    sidecar = {
        "shard": shard,
        "checkpoint": checkpoint,
        "first": first,
        "count": count,
        "sha256": checksums,
    }
    _atomic_json(os.path.join(root, unit_name(shard, checkpoint) + ".json"), sidecar)


def collect_manifest(root: str, settings: IndexSettings, n_shards: int) -> None:
    r"""Writes ``manifest.json`` from the finished units' sidecars."""
    shards = []
    for shard in range(n_shards):
        sidecars = []
        for checkpoint in range(len(settings.learning_rates)):
            path = os.path.join(root, unit_name(shard, checkpoint) + ".json")
            with open(path, encoding="utf-8") as stream:
                sidecars.append(json.load(stream))
        shards.append(
            {
                "shard": shard,
                "first": sidecars[0]["first"],
                "count": sidecars[0]["count"],
                "sha256": {str(s["checkpoint"]): s["sha256"] for s in sidecars},
            }
        )
    manifest = {
        "format_version": FORMAT_VERSION,
        "num_examples": sum(s["count"] for s in shards),
        "shards": shards,
        **settings.to_json(),
    }
    _atomic_json(os.path.join(root, MANIFEST), manifest)


class WordIndex:
    r"""
    A built index, opened read-only with memory maps.

    Args:
        root (str): The index folder.
        verify (bool, optional): Check every file's SHA-256 on opening.
                    Default: True
    """

    def __init__(self, root: str, verify: bool = True) -> None:
        path = os.path.join(root, MANIFEST)
        if not os.path.isfile(path):
            raise IndexMismatchError(
                f"No TracIn-WE index at {root!r} (missing {MANIFEST}); build one with "
                "TracInWE.build_index(path)."
            )
        with open(path, encoding="utf-8") as stream:
            manifest = json.load(stream)
        if manifest.get("format_version") != FORMAT_VERSION:
            raise IndexMismatchError(
                f"Index {root!r} has format version {manifest.get('format_version')}; "
                f"this version reads {FORMAT_VERSION}. Rebuild the index."
            )
        self.root = root
        self.manifest = manifest
        self.settings = IndexSettings(
            **{k: manifest[k] for k in IndexSettings.__dataclass_fields__}
        )
        self.shards = manifest["shards"]
        self.num_examples = int(manifest["num_examples"])
        if verify:
            self.verify()

    def verify(self) -> None:
        r"""Raises if any file is missing or its checksum differs (corruption)."""
        for shard in self.shards:
            for c, checksums in shard["sha256"].items():
                for name, expected in checksums.items():
                    path = self._path(shard["shard"], int(c), name)
                    if not os.path.isfile(path) or _sha256(path) != expected:
                        raise IndexMismatchError(
                            f"Index file {path!r} is missing or corrupted (checksum "
                            "mismatch). Rebuild the index (finished shards are kept "
                            "only if intact)."
                        )

    def _path(self, shard: int, checkpoint: int, name: str) -> str:
        return os.path.join(self.root, unit_name(shard, checkpoint), f"{name}.npy")

    def _load(self, shard: int, checkpoint: int, name: str) -> np.ndarray:
        return np.load(
            self._path(shard, checkpoint, name), mmap_mode="r", allow_pickle=False
        )

    def shard_scores(
        self, shard: Dict[str, Any], checkpoint: int, groups: "QueryGroups"
    ) -> Tensor:
        r"""
        ``(n_query, count)`` scores of the grouped queries against one shard,
        reading one token's contiguous rows at a time from the memory map, so
        memory stays bounded by the largest token's rows, not the shard.
        """
        index, first = shard["shard"], shard["first"]
        offsets = self._load(index, checkpoint, "offsets")
        vectors = self._load(index, checkpoint, "vectors")
        examples = self._load(index, checkpoint, "examples")
        scores = torch.zeros(groups.num_examples, shard["count"])
        for group, token in enumerate(groups.tokens):
            if token >= len(offsets) - 1:
                continue
            start, stop = int(offsets[token]), int(offsets[token + 1])
            if stop > start:
                rows = torch.from_numpy(np.array(vectors[start:stop], dtype=np.float32))
                owners = torch.from_numpy(np.array(examples[start:stop])) - first
                groups.add_token_scores(scores, group, rows, owners)
        return scores

    def self_scores(self, shard: Dict[str, Any], checkpoint: int) -> Tensor:
        r"""``(count,)`` exact squared word-gradient norms of the shard's examples."""
        stored = self._load(shard["shard"], checkpoint, "self")
        return torch.from_numpy(np.array(stored))
