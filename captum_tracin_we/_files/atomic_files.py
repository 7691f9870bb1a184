#!/usr/bin/env python3

r"""
Safe outputs for ``explain`` and ``demo``: each file is written whole under a
temporary name in its own folder, flushed to disk, then renamed into place, so
that a full disk or a crash leaves the earlier file as it was and no temporary
file behind. An output path that is a symbolic link is refused (never written
through), and output folders are checked before any work starts.
"""

import errno
import os
import secrets
from typing import Dict, Iterable, List, Optional, Union

from captum_tracin_we._errors import TracInWEError

Content = Union[str, bytes]


def check_output_folder(folder: str, names: Iterable[str], option: str) -> None:
    r"""
    Checks, before any work, that ``folder`` is or can become a writable folder
    and that none of its output files ``names`` is a symbolic link or a folder.

    Args:
        folder (str): The output folder; created later if missing.
        names (iterable of str): The files that will be written into it.
        option (str): The option that named the folder, for the message
                    (``"--out"``).

    Raises:
        TracInWEError: If the folder is a file, cannot be created, is not
                    writable, or an output file is a link or a folder.
    """
    check_writable_folder(folder, option)
    for name in names:
        path = os.path.join(folder, name)
        if os.path.islink(path):
            raise TracInWEError(
                f"{path!r} is a symbolic link; captum-tracin-we never writes an "
                "output through a link. Delete the link, or give another "
                f"{option}."
            )
        if os.path.lexists(path) and not os.path.isfile(path):
            raise TracInWEError(
                f"{path!r} is in the way of an output file: it is a folder or not "
                f"a regular file. Move it away, or give another {option}."
            )


def check_writable_folder(folder: str, option: str) -> None:
    r"""
    Checks that ``folder`` is a writable folder, or that its nearest existing
    parent is one (so that it can be created).

    Raises:
        TracInWEError: If it is a file, lies below a file, or is not writable.
    """
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise TracInWEError(
            f"{option} {folder!r} exists and is not a folder. Give a folder path "
            "(it is created if missing), or move the file away."
        )
    existing = _nearest_existing(folder)
    if not os.path.isdir(existing):
        raise TracInWEError(
            f"{option} {folder!r} cannot be created: {existing!r} is a file, not a "
            f"folder. Give another {option}."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise TracInWEError(
            f"{option} {folder!r} is not writable: {existing!r} does not allow "
            f"creating files. Give another {option}, or change its permissions."
        )


def write_file(path: str, content: Content) -> bool:
    r"""
    Writes one file atomically (see :func:`write_files`).

    Returns:
        replaced (bool): Whether an earlier file was replaced.
    """
    return bool(write_files({path: content}))


def write_files(contents: Dict[str, Content]) -> List[str]:
    r"""
    Writes each file under a temporary name in its folder, flushed to disk,
    then renames them all into place (``os.replace``), so that a failure while
    writing any of them leaves every earlier file as it was, and no temporary
    file behind. A renaming replaces the path itself, never a link's target.

    Args:
        contents (dict): Path to text (written as UTF-8) or bytes.

    Returns:
        replaced (list of str): The paths that held an earlier file.

    Raises:
        TracInWEError: If a path is a symbolic link.
        OSError: If a file cannot be written (the message names it).
    """
    for path in contents:
        if os.path.islink(path):
            raise TracInWEError(
                f"{path!r} is a symbolic link; captum-tracin-we never writes an "
                "output through a link. Delete the link, or write elsewhere."
            )
    replaced = [path for path in contents if os.path.lexists(path)]
    staged: Dict[str, str] = {}
    try:
        for path, content in contents.items():
            staged[path] = _temporary_copy(path, content)
        for path, temporary in staged.items():
            os.replace(temporary, path)
    except OSError as error:
        raise _failure(path, error) from error
    finally:
        for temporary in staged.values():
            _remove_quietly(temporary)
    for folder in {os.path.dirname(os.path.abspath(p)) for p in contents}:
        _sync_folder(folder)
    return replaced


def _temporary_copy(path: str, content: Content) -> str:
    r"""Writes ``content`` whole to a new temporary file beside ``path``."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    folder = os.path.dirname(os.path.abspath(path))
    while True:
        temporary = os.path.join(
            folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp"
        )
        try:  # "x": an exclusive create, never an existing file or a planted link
            stream = open(temporary, "xb")
            break
        except FileExistsError:
            continue
    try:
        with stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
    except BaseException:
        _remove_quietly(temporary)
        raise
    return temporary


def _failure(path: str, error: OSError) -> OSError:
    reason = error.strerror or str(error)
    advice = "free some space" if error.errno == errno.ENOSPC else "write elsewhere"
    return OSError(
        error.errno,
        f"Could not write {path!r} ({reason}); no file was left half-written and "
        f"an earlier one there is as it was. {advice.capitalize()} and run again.",
    )


def _nearest_existing(path: str) -> str:
    current = os.path.abspath(path)
    while not os.path.lexists(current):
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return current


def _remove_quietly(path: Optional[str]) -> None:
    try:
        os.remove(path)
    except (OSError, TypeError):
        pass


def _sync_folder(folder: str) -> None:
    r"""Flushes the renamings to disk, where the system allows it."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)
