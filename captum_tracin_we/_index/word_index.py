#!/usr/bin/env python3

r"""
An attached word-gradient index: the read-only handle TracInWE queries. It
checks, on opening, that the index fits the model, the settings and the
training data, and at every use that each checkpoint is the one it was built
from. It reads through :class:`IndexStore` and never scores.
"""

from typing import Any, Dict, List, Sequence, Tuple

from captum_tracin_we._checkpoints.checkpoint_pass import LoadedCheckpoint
from captum_tracin_we._checkpoints.checkpoints import checkpoint_name
from captum_tracin_we._errors import IndexMismatchError
from captum_tracin_we._index.index_bindings import differences
from captum_tracin_we._index.index_store import (
    IndexManifest,
    IndexSettings,
    IndexStore,
    ShardRecord,
    UnitArrays,
)


class WordIndex:
    r"""
    A built index, opened read-only (arrays are memory-mapped when read).

    Args:
        root (str): The index folder.
        verify (bool, optional): Check every file's SHA-256 on opening (the
                    manifest's schema and checksum, file sizes and array shapes
                    are always checked). Default: True

    Raises:
        IndexMismatchError: If the folder holds no index of this format.
        IndexCorruptedError: If the manifest or (with ``verify``) a file is
                    damaged.
    """

    def __init__(self, root: str, verify: bool = True) -> None:
        self.store = IndexStore(root)
        self.root = self.store.root
        self.manifest: IndexManifest = self.store.open()
        self._units: Dict[Tuple[int, int], Tuple[Any, UnitArrays]] = {}
        if verify:
            self.verify()

    @property
    def settings(self) -> IndexSettings:
        return self.manifest.settings

    @property
    def num_examples(self) -> int:
        return self.manifest.num_examples

    @property
    def shards(self) -> List[ShardRecord]:
        return self.manifest.shards

    def verify(self) -> None:
        r"""Raises :class:`IndexCorruptedError` if any file is missing or altered."""
        self.store.verify_files(self.manifest)

    def shard_ends(self) -> List[int]:
        r"""The example count at the end of each shard."""
        return [record.first + record.count for record in self.shards]

    def check_data(self, digests: Sequence[str], num_examples: int) -> None:
        r"""
        Checks the training data against the index: the example count, and with
        ``digests`` (one per shard) each shard's examples.

        Raises:
            IndexMismatchError: Naming the first shard whose examples differ.
        """
        if num_examples != self.num_examples:
            raise IndexMismatchError(
                f"The index at {self.root!r} was built from {self.num_examples} "
                f"training examples; this TracInWE has {num_examples}. Pass the "
                "training data the index was built from, or build a new index."
            )
        for record, digest in zip(self.shards, digests):
            if digest != record.data_digest:
                raise IndexMismatchError(
                    f"The training data differ from those the index at {self.root!r} "
                    f"was built from (shard {record.shard}: examples {record.first}.."
                    f"{record.first + record.count - 1}: other texts, labels or "
                    "order, or the same texts tokenized otherwise, e.g. with another "
                    "--max-length). Pass the same training data, or build a new index."
                )

    def check_bindings(self, loss: Dict[str, str], embedding: Dict[str, Any]) -> None:
        r"""
        Checks that the index was built with this training loss and on this
        embedding module (records of
        :mod:`captum_tracin_we._index.index_bindings`).

        Raises:
            IndexMismatchError: Saying what differs ("built with X, now Y") and
                        the fix.
        """
        found = differences({"loss": self.settings.loss}, {"loss": loss})
        if found:
            raise IndexMismatchError(
                f"The index at {self.root!r} was built with another training loss "
                f"({'; '.join(found[:4])}). Pass the loss the index was built "
                "with (loss_fn=...), or build a new index for this loss into a "
                "new folder."
            )
        built = self.settings.embedding
        found = differences({"embedding": built}, {"embedding": embedding})
        if found:
            raise IndexMismatchError(
                f"The index at {self.root!r} was built on another embedding module "
                f"({'; '.join(found[:4])}). Pass embedding_layer={built['name']!r} "
                "(the module the index was built on), or build a new index for "
                "this embedding module into a new folder."
            )

    def check_checkpoint(self, loaded: LoadedCheckpoint) -> None:
        r"""
        Checks that a loaded checkpoint is the one the index was built from:
        the whole state dict's fingerprint and the learning rate.

        Raises:
            IndexMismatchError: Naming the checkpoint and what differs.
        """
        position = loaded.position
        expected_rate = self.settings.learning_rates[position]
        if loaded.fingerprint() != self.settings.checkpoint_fingerprints[position]:
            raise IndexMismatchError(
                f"Checkpoint {checkpoint_name(loaded.checkpoint)} is not the one the "
                "index at "
                f"{self.root!r} was built from (its weights differ). Pass the same "
                "checkpoints, or build a new index for these."
            )
        if loaded.learning_rate != expected_rate:
            raise IndexMismatchError(
                f"Checkpoint {checkpoint_name(loaded.checkpoint)} has learning rate "
                f"{loaded.learning_rate}, but the index at {self.root!r} was built "
                f"with {expected_rate}. Pass the same rates, or build a new index."
            )

    def unit(self, record: ShardRecord, checkpoint: int) -> UnitArrays:
        r"""
        The arrays of one shard at one checkpoint (structure checked). A unit
        stays mapped between calls while its files are unchanged (size,
        modification and change times, inode), so a query does not map it
        and fault its pages in again; a changed file is mapped and checked
        anew. Mapped pages are the operating system's file cache, not this
        process's own memory.
        """
        key = (record.shard, checkpoint)
        signature = self.store.unit_signature(record.shard, checkpoint)
        kept = self._units.get(key)
        if kept is not None and signature is not None and kept[0] == signature:
            return kept[1]
        unit = self.store.read_unit(self.manifest, record, checkpoint)
        self._units[key] = (signature, unit)
        return unit
