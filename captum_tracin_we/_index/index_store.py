#!/usr/bin/env python3

r"""
The storage of a word-gradient index: it writes, reads and verifies files and
never scores. Scoring is in :mod:`captum_tracin_we._index.index_scoring`.

Layout of an index folder::

    build.json                        the build's settings: the folder's claim
    manifest.json                     settings, shards, data digests, checksums
    shard-00000-ckpt-00/tokens.npy    (K,) int64, sorted
    shard-00000-ckpt-00/examples.npy  (K,) int64, global example index
    shard-00000-ckpt-00/vectors.npy   (K, r) float32 or float16, memory-mapped
    shard-00000-ckpt-00/offsets.npy   (V+1,) int64: rows of token t are
                                      offsets[t]:offsets[t+1]
    shard-00000-ckpt-00/self.npy      (n,) float64 exact squared norms per example
    shard-00000-ckpt-00.json          the unit's sidecar, written last

What binds an index to what it was built from:

- the settings (model vocabulary and dimension, Top-k, excluded ids, storage,
  each checkpoint's learning rate and whole-state-dict fingerprint, the
  training loss's identity and the embedding module's; see
  :mod:`captum_tracin_we._index.index_bindings`), with their digest in every
  sidecar;
- a data digest per shard (token ids at real positions and labels of its
  examples, in order);
- a SHA-256 and a byte size per file, and a checksum over each JSON file.

A unit counts as finished only when its sidecar is intact, names these
settings and this shard's data, and its files match their checksums; so a
resumed build redoes damaged units and refuses other data. Every file is
written to a temporary name and renamed into place (a write that fails, a
full disk for instance, removes its temporary file and raises an ``OSError``
that names the file, the folder and the fix); ``build.json`` is claimed
with an atomic link, so two builds cannot share a folder, and a resumed build
removes the temporary files a killed one left. No pickle: numpy
``.npy`` (``allow_pickle=False``) and JSON, validated against a schema. Paths
are made from integers only: nothing read from a file names a path.
"""

import contextlib
import errno
import json
import os
import re
import warnings
from dataclasses import asdict
from typing import IO, Any, Dict, Iterator, List, Optional, Tuple

import jsonschema
import numpy as np

from captum_tracin_we._errors import IndexCorruptedError, IndexMismatchError
from captum_tracin_we._index.index_bindings import differences
from captum_tracin_we._index.index_files import (
    _TEMPORARY,
    _atomic_json,
    _atomic_save,
    _create_exclusively,
    _lock_folder,
    _read_checked_json,
    _remove_quietly,
    _sha256,
    _stale,
    _with_checksum,
    _write_temporary,
)
from captum_tracin_we._index.index_format import (
    _MANIFEST_SCHEMA,
    _REBUILD,
    _SIDECAR_SCHEMA,
    ARRAYS,
    BUILD,
    FORMAT_VERSION,
    MANIFEST,
    IndexManifest,
    IndexSettings,
    ShardRecord,
    UnitArrays,
)


class IndexStore:
    r"""
    Reads, writes and verifies the files of one index folder.

    Args:
        root (str): The index folder.
    """

    def __init__(self, root: str) -> None:
        self.root = os.fspath(root)

    # Writing -----------------------------------------------------------------

    @contextlib.contextmanager
    def building(self) -> Iterator[None]:
        r"""
        Holds the folder's build lock while a build runs (POSIX ``flock`` on
        the folder; one process per build takes it). On getting it, the
        temporary files (``tmp*.tmp``) a killed or failed build left are
        removed; while another build holds it, none are (they may be that
        build's files in flight). Where the system has no such locks they are
        removed all the same.

        Raises:
            OSError: If the folder cannot be created (the message names it).
        """
        self._make_root()
        handle, alone = _lock_folder(self.root)
        try:
            if alone:
                self.remove_stale_temporaries()
            yield
        finally:
            if handle is not None:
                os.close(handle)  # releases the lock

    def remove_stale_temporaries(self) -> List[str]:
        r"""
        Removes the temporary files in the folder and its unit folders that
        have not changed for :data:`STALE_AFTER_S` seconds: what a build killed
        while writing leaves behind. A fresher one may be in flight (another
        build's claim of the folder) and is kept.

        Returns:
            removed (list of str): The paths removed.
        """
        folders = [self.root] + [
            os.path.join(self.root, name)
            for name in sorted(os.listdir(self.root))
            if _UNIT_FOLDER.fullmatch(name)
            and os.path.isdir(os.path.join(self.root, name))
        ]
        removed = []
        for folder in folders:
            for name in sorted(os.listdir(folder)):
                path = os.path.join(folder, name)
                if _TEMPORARY.fullmatch(name) and _stale(path):
                    _remove_quietly(path)
                    removed.append(path)
        return removed

    def claim(self, settings: IndexSettings) -> None:
        r"""
        Claims the folder for a build with ``settings``: creates ``build.json``
        atomically, or checks that the one there holds the same settings.

        Raises:
            IndexMismatchError: If the folder holds a build with other settings
                        (the message says which), or of another index format.
            OSError: If ``build.json`` cannot be written (the message names the
                        file, the folder and the fix).
        """
        self._make_root()
        path = os.path.join(self.root, BUILD)
        body = {"format_version": FORMAT_VERSION, **settings.to_json()}
        with self._writing(path):
            temporary = self._temporary_json(_with_checksum(body))
        try:
            _create_exclusively(temporary, path)
        except FileExistsError:
            self._check_claim(path, body, temporary)
        except OSError as error:
            raise self._write_error(path, error) from error
        finally:
            _remove_quietly(temporary)

    def _check_claim(self, path: str, content: Dict[str, Any], temporary: str) -> None:
        try:
            previous = _read_checked_json(path)
        except IndexCorruptedError:
            warnings.warn(
                f"{path!r} cannot be read as this version's build record (it is "
                "damaged, or was written by another version); replacing it. "
                "Finished units are kept only where their own records match this "
                "build.",
                stacklevel=4,
            )
            with self._writing(path):
                os.replace(temporary, path)
            return
        if previous.get("format_version") != FORMAT_VERSION:
            raise IndexMismatchError(
                f"The index folder {self.root!r} holds a build of index format "
                f"{previous.get('format_version')!r} (another version of "
                f"captum_tracin_we); this version builds format {FORMAT_VERSION}. "
                "Build into a new folder, or delete this one."
            )
        if previous != content:
            found = differences(previous, content)
            raise IndexMismatchError(
                f"The index folder {self.root!r} holds a build with other settings, "
                f"model or checkpoints: {'; '.join(found[:4])}. Resume with the same "
                "settings, checkpoints, loss and embedding module, or build into a "
                "new folder (or delete this one)."
            )

    def finished_unit(
        self, shard: int, checkpoint: int, settings: IndexSettings
    ) -> Optional[Dict[str, Any]]:
        r"""
        The sidecar of a finished unit of this build, or None: finished means
        the sidecar is intact and names these settings, and the unit's files
        match their checksums. A damaged unit is not finished (it is rebuilt).
        The caller checks the sidecar's ``first``, ``count`` and
        ``data_digest`` against the data it streams.
        """
        path = self._sidecar_path(shard, checkpoint)
        if not os.path.isfile(path):
            return None
        try:
            sidecar = _read_checked_json(path)
            jsonschema.validate(sidecar, _SIDECAR_SCHEMA)
        except (IndexCorruptedError, jsonschema.ValidationError):
            return None
        if sidecar["settings_digest"] != settings.digest():
            return None
        if not self._files_intact(shard, checkpoint, sidecar["files"]):
            return None
        return sidecar

    def write_unit(
        self,
        shard: int,
        checkpoint: int,
        first: int,
        count: int,
        data_digest: str,
        arrays: Dict[str, np.ndarray],
        settings: IndexSettings,
    ) -> None:
        r"""
        Writes one unit's arrays, then its sidecar, each atomically.

        Raises:
            OSError: If a file cannot be written, a full disk for instance (the
                        message names the file, the folder and the fix; no
                        temporary file is left).
        """
        folder = self._unit_folder(shard, checkpoint)
        with self._writing(folder):
            os.makedirs(folder, exist_ok=True)
        files = {}
        for name in ARRAYS:
            path = os.path.join(folder, f"{name}.npy")
            with self._writing(path):
                files[name] = _atomic_save(path, arrays[name])
        sidecar = {
            "format_version": FORMAT_VERSION,
            "settings_digest": settings.digest(),
            "shard": shard,
            "checkpoint": checkpoint,
            "first": first,
            "count": count,
            "data_digest": data_digest,
            "files": files,
        }
        path = self._sidecar_path(shard, checkpoint)
        with self._writing(path):
            _atomic_json(path, _with_checksum(sidecar))

    def write_manifest(self, settings: IndexSettings, num_shards: int) -> None:
        r"""
        Writes ``manifest.json`` from the finished units' sidecars.

        Raises:
            IndexMismatchError: If the checkpoints' passes saw different data.
            OSError: If the manifest cannot be written (the message names the
                        file, the folder and the fix).
        """
        shards = []
        for shard in range(num_shards):
            sidecars = [
                _read_checked_json(self._sidecar_path(shard, c))
                for c in range(settings.num_checkpoints)
            ]
            seen = {(s["first"], s["count"], s["data_digest"]) for s in sidecars}
            if len(seen) != 1:
                raise IndexMismatchError(
                    f"The training data of shard {shard} differed between checkpoint "
                    "passes (a random sampler, augmentation or a changing dataset). "
                    "TracIn-WE needs the same examples in the same order at every "
                    "checkpoint."
                )
            first, count, digest = seen.pop()
            files = {str(s["checkpoint"]): s["files"] for s in sidecars}
            shards.append(asdict(ShardRecord(shard, first, count, digest, files)))
        manifest = {
            "format_version": FORMAT_VERSION,
            "settings": settings.to_json(),
            "settings_digest": settings.digest(),
            "num_examples": sum(s["count"] for s in shards),
            "shards": shards,
        }
        path = os.path.join(self.root, MANIFEST)
        with self._writing(path):
            _atomic_json(path, _with_checksum(manifest))

    # Reading -----------------------------------------------------------------

    def open(self) -> IndexManifest:
        r"""
        Reads and validates ``manifest.json``.

        Raises:
            IndexMismatchError: If there is no index in the folder.
            IndexCorruptedError: If the manifest is damaged or breaks the schema.
        """
        path = os.path.join(self.root, MANIFEST)
        if not os.path.isfile(path):
            raise IndexMismatchError(
                f"No TracIn-WE index at {self.root!r} (missing {MANIFEST}); build one "
                "with TracInWE.build_index(path)."
            )
        manifest = _read_checked_json(path)
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            older = (
                isinstance(version, int)
                and not isinstance(version, bool)
                and version < FORMAT_VERSION
            )
            raise IndexMismatchError(
                f"The index at {self.root!r} has format version {version!r}"
                + (" (written by an older captum_tracin_we)" if older else "")
                + f"; this version reads format {FORMAT_VERSION}, which also "
                "records the loss and the embedding module an index was built "
                "with. Build a new index into a new folder (or delete this one "
                "first) with TracInWE.build_index(path)."
            )
        try:
            jsonschema.validate(manifest, _MANIFEST_SCHEMA)
        except jsonschema.ValidationError as error:
            raise IndexCorruptedError(
                f"{path!r} does not follow the index schema: {error.message} (at "
                f"{'/'.join(map(str, error.absolute_path)) or 'top level'}). {_REBUILD}"
            ) from None
        return _checked_manifest(manifest, path)

    def verify_files(self, manifest: IndexManifest) -> None:
        r"""
        Checks every file's size and SHA-256 against the manifest.

        Raises:
            IndexCorruptedError: Naming the first missing or altered file.
        """
        digest = manifest.settings.digest()
        for record in manifest.shards:
            for checkpoint, files in record.files.items():
                self._check_sidecar(record, int(checkpoint), digest)
                if not self._files_intact(record.shard, int(checkpoint), files):
                    raise IndexCorruptedError(
                        f"Index unit {_unit_name(record.shard, int(checkpoint))!r} "
                        f"in {self.root!r} has a missing, truncated or altered file "
                        f"(checksum mismatch). {_REBUILD}"
                    )

    def _check_sidecar(self, record: ShardRecord, checkpoint: int, digest: str) -> None:
        r"""The unit's own record must agree with the manifest."""
        path = self._sidecar_path(record.shard, checkpoint)
        try:
            sidecar = _read_checked_json(path)
        except IndexCorruptedError:
            return  # a damaged sidecar of a built index does not change scores
        expected = (digest, record.first, record.count, record.data_digest)
        found = tuple(
            sidecar.get(key)
            for key in ("settings_digest", "first", "count", "data_digest")
        )
        if found != expected or sidecar.get("files") != record.files[str(checkpoint)]:
            raise IndexCorruptedError(
                f"The manifest of {self.root!r} disagrees with unit "
                f"{_unit_name(record.shard, checkpoint)!r} (settings, examples or "
                f"files). {_REBUILD}"
            )

    def read_unit(
        self, manifest: IndexManifest, record: ShardRecord, checkpoint: int
    ) -> UnitArrays:
        r"""
        Memory-maps one unit's arrays after cheap structural checks: file sizes,
        dtypes, shapes and the token offsets (not the checksums).

        Raises:
            IndexCorruptedError: If a file is missing, truncated or inconsistent.
        """
        files = record.files[str(checkpoint)]
        arrays = {}
        for name in ARRAYS:
            path = os.path.join(
                self._unit_folder(record.shard, checkpoint), f"{name}.npy"
            )
            arrays[name] = self._mapped(path, files[name]["bytes"])
        unit = UnitArrays(
            record.first,
            record.count,
            arrays["tokens"],
            arrays["examples"],
            arrays["vectors"],
            arrays["offsets"],
            arrays["self"],
        )
        problem = _unit_problem(unit, manifest.settings)
        if problem:
            raise IndexCorruptedError(
                f"Index unit {_unit_name(record.shard, checkpoint)!r} in {self.root!r} "
                f"is inconsistent: {problem}. {_REBUILD}"
            )
        return unit

    def unit_signature(self, shard: int, checkpoint: int) -> Optional[Tuple[Any, ...]]:
        r"""Size, modification and change times and inode of each of a unit's
        array files (the change time moves on every write and cannot be set
        back), or None if one is missing."""
        folder = self._unit_folder(shard, checkpoint)
        found = []
        for name in ARRAYS:
            try:
                status = os.stat(os.path.join(folder, f"{name}.npy"))
            except OSError:
                return None
            found.append(
                (status.st_size, status.st_mtime_ns, status.st_ctime_ns, status.st_ino)
            )
        return tuple(found)

    # Helpers -----------------------------------------------------------------

    def _mapped(self, path: str, size: int) -> np.ndarray:
        if not os.path.isfile(path) or os.path.getsize(path) != size:
            raise IndexCorruptedError(
                f"Index file {path!r} is missing or truncated (expected {size} "
                f"bytes). {_REBUILD}"
            )
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise IndexCorruptedError(
                f"Index file {path!r} cannot be read: {error}. {_REBUILD}"
            ) from None

    def _files_intact(
        self, shard: int, checkpoint: int, files: Dict[str, Dict[str, Any]]
    ) -> bool:
        folder = self._unit_folder(shard, checkpoint)
        for name in ARRAYS:
            path = os.path.join(folder, f"{name}.npy")
            expected = files[name]
            if not os.path.isfile(path) or os.path.getsize(path) != expected["bytes"]:
                return False
            if _sha256(path) != expected["sha256"]:
                return False
        return True

    def _unit_folder(self, shard: int, checkpoint: int) -> str:
        return os.path.join(self.root, _unit_name(shard, checkpoint))

    def _sidecar_path(self, shard: int, checkpoint: int) -> str:
        return os.path.join(self.root, _unit_name(shard, checkpoint) + ".json")

    def _temporary_json(self, content: Dict[str, Any]) -> str:
        def write(stream: IO[Any]) -> None:
            json.dump(content, stream, indent=1)
            stream.flush()
            os.fsync(stream.fileno())

        return _write_temporary(self.root, write, binary=False)

    def _make_root(self) -> None:
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise OSError(
                errno.ENOTDIR,
                f"The index folder {self.root!r} is a file, not a folder. Pass a "
                "folder (it is created if needed), or move the file away.",
            )
        with self._writing(self.root):
            os.makedirs(self.root, exist_ok=True)

    @contextlib.contextmanager
    def _writing(self, path: str) -> Iterator[None]:
        r"""Turns an ``OSError`` while writing ``path`` into one that says what
        to do."""
        try:
            yield
        except OSError as error:
            raise self._write_error(path, error) from error

    def _write_error(self, path: str, error: OSError) -> OSError:
        reason = error.strerror or str(error)
        if error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            fix = "Free some space on that disk"
        elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            fix = "Make the folder writable"
        else:
            fix = "Fix the cause"
        return OSError(
            error.errno,
            f"Could not write {path!r} while building the index in {self.root!r} "
            f"({reason}). {fix}, then run the build again with the same folder: "
            "it resumes where it stopped, keeping the finished units (or build "
            "into a new folder elsewhere).",
        )


_UNIT_FOLDER = re.compile(r"shard-[0-9]{5}-ckpt-[0-9]{2}")


def _unit_name(shard: int, checkpoint: int) -> str:
    return f"shard-{int(shard):05d}-ckpt-{int(checkpoint):02d}"


def _unit_problem(unit: UnitArrays, settings: IndexSettings) -> Optional[str]:
    rows = unit.tokens.shape[0] if unit.tokens.ndim == 1 else -1
    expected = {
        "tokens": (unit.tokens, (rows,), np.int64),
        "examples": (unit.examples, (rows,), np.int64),
        "vectors": (
            unit.vectors,
            (rows, settings.stored_dim),
            np.dtype(settings.dtype),
        ),
        "offsets": (unit.offsets, (settings.vocab_size + 1,), np.int64),
        "self": (unit.self_norms, (unit.count,), np.float64),
    }
    for name, (array, shape, dtype) in expected.items():
        if array.shape != shape or array.dtype != dtype:
            return (
                f"{name}.npy is {array.dtype} {array.shape}, expected "
                f"{np.dtype(dtype)} {shape}"
            )
    offsets = np.asarray(unit.offsets)
    if offsets[0] != 0 or offsets[-1] != rows or np.any(np.diff(offsets) < 0):
        return "the token offsets are not increasing from 0 to the row count"
    norms = np.asarray(unit.self_norms)
    if not np.all(np.isfinite(norms)) or np.any(norms < 0):
        return "a stored squared norm is negative or not finite"
    return None


def _checked_manifest(manifest: Dict[str, Any], path: str) -> IndexManifest:
    settings = IndexSettings(**manifest["settings"])
    problems = []
    if manifest["settings_digest"] != settings.digest():
        problems.append("the settings do not match their digest")
    if len(settings.checkpoint_fingerprints) != settings.num_checkpoints:
        problems.append("one fingerprint per learning rate is needed")
    shards, first = [], 0
    for position, entry in enumerate(manifest["shards"]):
        record = ShardRecord(**entry)
        if record.shard != position or record.first != first:
            problems.append(f"shard {position} is out of order or not contiguous")
        if sorted(record.files) != sorted(map(str, range(settings.num_checkpoints))):
            problems.append(f"shard {position} does not list every checkpoint")
        first += record.count
        shards.append(record)
    if first != manifest["num_examples"]:
        problems.append("the shard counts do not add up to num_examples")
    if problems:
        raise IndexCorruptedError(
            f"{path!r} is inconsistent: {'; '.join(problems[:3])}. {_REBUILD}"
        )
    return IndexManifest(settings, manifest["num_examples"], shards)
