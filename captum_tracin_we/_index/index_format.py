#!/usr/bin/env python3

r"""
The on-disk format of an index: its version, file names, records and JSON
schemas.
"""

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional

import numpy as np

# 3: the loss and the embedding module are recorded in the settings.
FORMAT_VERSION = 3


BUILD = "build.json"


MANIFEST = "manifest.json"


ARRAYS = ("tokens", "examples", "vectors", "offsets", "self")


_REBUILD = "Rebuild it with TracInWE.build_index(path) (intact units are kept)."


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
    loss: Dict[str, str]
    embedding: Dict[str, Any]

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)

    def digest(self) -> str:
        return _canonical_digest(self.to_json())

    @property
    def num_checkpoints(self) -> int:
        return len(self.learning_rates)


@dataclass
class ShardRecord:
    r"""One shard of a built index: its examples, data digest and files."""

    shard: int
    first: int
    count: int
    data_digest: str
    files: Dict[str, Dict[str, Dict[str, Any]]]  # checkpoint -> name -> sha, bytes


@dataclass
class UnitArrays:
    r"""The memory-mapped arrays of one (shard, checkpoint) unit."""

    first: int
    count: int
    tokens: np.ndarray
    examples: np.ndarray
    vectors: np.ndarray
    offsets: np.ndarray
    self_norms: np.ndarray


@dataclass
class IndexManifest:
    r"""A schema-checked manifest."""

    settings: IndexSettings
    num_examples: int
    shards: List[ShardRecord]


_HEX64 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}


_COUNT = {"type": "integer", "minimum": 0}


_FILE = {
    "type": "object",
    "properties": {"sha256": _HEX64, "bytes": {"type": "integer", "minimum": 1}},
    "required": ["sha256", "bytes"],
    "additionalProperties": False,
}


_FILES = {
    "type": "object",
    "properties": {name: _FILE for name in ARRAYS},
    "required": list(ARRAYS),
    "additionalProperties": False,
}


_SETTINGS_SCHEMA = {
    "type": "object",
    "properties": {
        "vocab_size": {"type": "integer", "minimum": 1},
        "dim": {"type": "integer", "minimum": 1},
        "stored_dim": {"type": "integer", "minimum": 1},
        "dtype": {"enum": ["float32", "float16"]},
        "top_k_words": {"type": ["integer", "null"], "minimum": 1},
        "exclude_token_ids": {"type": "array", "items": _COUNT},
        "projection_seed": {"type": ["integer", "null"]},
        "learning_rates": {
            "type": "array",
            "items": {"type": "number", "minimum": 0},
            "minItems": 1,
        },
        "checkpoint_fingerprints": {"type": "array", "items": _HEX64, "minItems": 1},
        "shard_size": {"type": "integer", "minimum": 1},
        "loss": {
            "type": "object",
            "properties": {"kind": {"type": "string"}},
            "required": ["kind"],
            "additionalProperties": {"type": "string"},
        },
        "embedding": {
            "type": "object",
            "properties": {
                "name": {"type": ["string", "null"]},
                "class": {"type": "string"},
                "num_embeddings": {"type": "integer", "minimum": 1},
                "embedding_dim": {"type": "integer", "minimum": 1},
                "padding_idx": {"type": ["integer", "null"]},
                "max_norm": {"type": ["number", "null"]},
            },
            "required": [
                "name",
                "class",
                "num_embeddings",
                "embedding_dim",
                "padding_idx",
                "max_norm",
            ],
            "additionalProperties": False,
        },
    },
    "required": list(IndexSettings.__dataclass_fields__),
    "additionalProperties": False,
}


_MANIFEST_SCHEMA = {
    "type": "object",
    "properties": {
        "format_version": {"const": FORMAT_VERSION},
        "settings": _SETTINGS_SCHEMA,
        "settings_digest": _HEX64,
        "num_examples": {"type": "integer", "minimum": 1},
        "shards": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "shard": _COUNT,
                    "first": _COUNT,
                    "count": {"type": "integer", "minimum": 1},
                    "data_digest": _HEX64,
                    "files": {
                        "type": "object",
                        "patternProperties": {"^[0-9]{1,4}$": _FILES},
                        "additionalProperties": False,
                    },
                },
                "required": ["shard", "first", "count", "data_digest", "files"],
                "additionalProperties": False,
            },
        },
    },
    "required": [
        "format_version",
        "settings",
        "settings_digest",
        "num_examples",
        "shards",
    ],
    "additionalProperties": False,
}


_SIDECAR_SCHEMA = {
    "type": "object",
    "properties": {
        "format_version": {"const": FORMAT_VERSION},
        "settings_digest": _HEX64,
        "shard": _COUNT,
        "checkpoint": _COUNT,
        "first": _COUNT,
        "count": {"type": "integer", "minimum": 1},
        "data_digest": _HEX64,
        "files": _FILES,
    },
    "required": [
        "format_version",
        "settings_digest",
        "shard",
        "checkpoint",
        "first",
        "count",
        "data_digest",
        "files",
    ],
}


def _canonical_digest(content: Any) -> str:
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
