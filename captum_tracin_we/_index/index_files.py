#!/usr/bin/env python3

r"""Writing and reading the files of an index safely: whole or not at all."""

import hashlib
import json
import os
import re
import tempfile
import time
from typing import IO, Any, Callable, Dict, Optional, Tuple

import numpy as np

from captum_tracin_we._errors import IndexCorruptedError
from captum_tracin_we._index.index_format import _REBUILD, _canonical_digest

try:  # POSIX: a resumed build removes stale temporary files only while it
    import fcntl  # holds the folder's lock (so never those of a live build)
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def _create_exclusively(source: str, target: str) -> None:
    r"""
    Puts a complete copy of ``source`` at ``target`` only if ``target`` does not
    exist, atomically: a hard link where the file system has them, else an
    exclusive create (FAT, SMB and some FUSE mounts have no hard links).

    Raises:
        FileExistsError: If ``target`` exists.
    """
    try:
        os.link(source, target)
        return
    except FileExistsError:
        raise
    except OSError:
        pass
    with open(source, "rb") as stream:
        content = stream.read()
    handle = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    with os.fdopen(handle, "wb") as stream:
        stream.write(content)
        stream.flush()
        os.fsync(stream.fileno())


_TEMPORARY = re.compile(r"tmp[A-Za-z0-9_]+\.tmp")  # tempfile.mkstemp's names


STALE_AFTER_S = 60.0  # a temporary file unchanged this long is a leftover


def _stale(path: str) -> bool:
    try:
        return not os.path.isdir(path) and (
            time.time() - os.stat(path).st_mtime >= STALE_AFTER_S
        )
    except OSError:
        return False


def _lock_folder(root: str) -> Tuple[Optional[int], bool]:
    r"""
    Takes an exclusive, non-blocking ``flock`` on the folder. Returns the
    handle holding it (None without one) and whether no other build holds it
    (True too where the system or file system has no such locks).
    """
    if fcntl is None:
        return None, True
    try:
        handle = os.open(root, os.O_RDONLY)
    except OSError:
        return None, True
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return handle, False
    except OSError:
        return handle, True
    return handle, True


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _with_checksum(content: Dict[str, Any]) -> Dict[str, Any]:
    return {**content, "checksum": _canonical_digest(content)}


def _read_checked_json(path: str) -> Dict[str, Any]:
    r"""
    Reads a JSON file written with :func:`_with_checksum`; verifies it.

    Raises:
        IndexCorruptedError: Naming the file, if it cannot be read, is not
                    JSON (truncated, binary, nested too deep, numbers too
                    long), is not a JSON object, or fails its checksum.
    """
    try:
        with open(path, encoding="utf-8") as stream:
            content = json.load(stream)
    except (OSError, ValueError, RecursionError) as error:
        # ValueError: JSONDecodeError, UnicodeDecodeError, integers too long
        raise IndexCorruptedError(
            f"{path!r} cannot be read as JSON ({type(error).__name__}: "
            f"{_shorter(str(error))}); it is damaged or not an index file. "
            f"{_REBUILD}"
        ) from None
    if not isinstance(content, dict):
        raise IndexCorruptedError(
            f"{path!r} is not a JSON object (it holds a {type(content).__name__}); "
            f"it is damaged or not an index file. {_REBUILD}"
        )
    if "checksum" not in content:
        raise IndexCorruptedError(f"{path!r} has no checksum. {_REBUILD}")
    body = {k: v for k, v in content.items() if k != "checksum"}
    if _canonical_digest(body) != content["checksum"]:
        raise IndexCorruptedError(
            f"{path!r} was altered (its checksum does not match). {_REBUILD}"
        )
    return body


def _shorter(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _write_temporary(
    folder: str, write: Callable[[IO[Any]], None], binary: bool
) -> str:
    r"""
    Writes a new temporary file in ``folder`` with ``write(stream)``; returns
    its path. On any failure (a full disk, an interrupt) the file is removed.
    """
    handle, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        if binary:
            stream = os.fdopen(handle, "wb")
        else:
            stream = os.fdopen(handle, "w", encoding="utf-8")
    except BaseException:
        os.close(handle)
        _remove_quietly(temporary)
        raise
    try:
        with stream:
            write(stream)
    except BaseException:
        _remove_quietly(temporary)
        raise
    return temporary


def _replace(temporary: str, path: str) -> None:
    try:
        os.replace(temporary, path)
    except BaseException:
        _remove_quietly(temporary)
        raise


def _atomic_save(path: str, array: np.ndarray) -> Dict[str, Any]:
    def write(stream: IO[Any]) -> None:
        np.save(stream, array, allow_pickle=False)

    _replace(_write_temporary(os.path.dirname(path), write, binary=True), path)
    return {"sha256": _sha256(path), "bytes": os.path.getsize(path)}


def _atomic_json(path: str, content: Dict[str, Any]) -> None:
    def write(stream: IO[Any]) -> None:
        json.dump(content, stream, indent=1)

    _replace(_write_temporary(os.path.dirname(path), write, binary=False), path)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
