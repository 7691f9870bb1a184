#!/usr/bin/env python3

r"""
``explain --keep-warm``: the client side, which imports nothing heavy, so that
a question to a warm process costs a new Python process plus the answer.

A warm process holds what :func:`prepare_explain` loaded (the model, the
training data as the model sees it, TracIn-WE with its index, the stored last
layer) and answers questions to the same model, data and settings over a Unix
socket in a folder only this user can open. It stops after ``--keep-warm``
minutes without a question, and when any file it loaded from changes (the
question is then answered in the command's own process, which starts a fresh
warm process).
"""

import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
import tempfile
from dataclasses import asdict
from typing import Any, Dict, Optional

# The per-question settings; every other setting is the warm process's.
QUESTION_FIELDS = ("test", "texts", "top_k", "out")
_LIMIT = 64 * 1024 * 1024  # the largest answer read back


class WarmError(Exception):
    r"""The warm process could not answer (gone, stale, or broken)."""


def private_folder() -> str:
    r"""
    The folder of this user's warm processes, created with mode 0700.

    Raises:
        PermissionError: If it exists and is not a folder owned by this user
                    that only this user can open.
    """
    folder = os.path.join(tempfile.gettempdir(), f"captum-tracin-we-{os.getuid()}")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    status = os.lstat(folder)
    if (
        not stat.S_ISDIR(status.st_mode)
        or status.st_uid != os.getuid()
        or status.st_mode & 0o077
    ):
        raise PermissionError(
            f"{folder!r} is not a private folder of this user (it holds the warm "
            "processes' sockets); remove it, or run without --keep-warm."
        )
    return folder


def warm_key(settings: Any) -> str:
    r"""Names the warm process for these settings: the files (as real paths)
    and every setting that is not the question's, this package and Python."""
    shared = {
        name: value
        for name, value in asdict(settings).items()
        if name not in QUESTION_FIELDS and name not in ("show_progress", "keep_warm")
    }
    for name in ("model", "train", "index"):
        if shared.get(name):
            shared[name] = os.path.realpath(shared[name])
    shared["package"] = package_signature()
    shared["python"] = sys.executable
    text = json.dumps(shared, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def package_signature() -> list:
    r"""This package's folder and the newest change time of its Python files: a
    warm process started from other code is never asked."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    newest = 0
    for folder, _, names in os.walk(root):
        for name in names:
            if name.endswith(".py"):
                newest = max(newest, os.stat(os.path.join(folder, name)).st_mtime_ns)
    return [root, newest]


# The longest path a Unix socket can be bound at, on Linux (108 with the NUL).
MAX_SOCKET_PATH = 107


def socket_path(key: str) -> str:
    r"""
    The socket of the warm process ``key``.

    Raises:
        OSError: If the path is longer than a Unix socket allows (the
                    temporary folder's path is too long).
    """
    path = os.path.join(private_folder(), f"{key}.sock")
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise OSError(
            f"--keep-warm needs a socket path of at most {MAX_SOCKET_PATH} bytes; "
            f"{path!r} is longer. Set TMPDIR to a shorter folder."
        )
    return path


def ask(settings: Any, timeout: float = 600.0) -> Optional[Dict[str, Any]]:
    r"""
    Asks the warm process for these settings, if one is running.

    Args:
        settings (ExplainSettings): The command's settings.
        timeout (float, optional): Seconds to wait for the answer. Default: 600

    Returns:
        answer (dict or None): ``{"ok": True, "output": text}``, or
                    ``{"ok": False, "error": text}`` for a bad question; None
                    when no warm process answers (none runs, it stopped, or
                    a file it loaded changed).
    """
    try:
        path = socket_path(warm_key(settings))
    except OSError:
        return None  # said when the warm process is started
    question = {name: getattr(settings, name) for name in QUESTION_FIELDS}
    for name in ("test", "out"):
        if question[name]:
            question[name] = os.path.abspath(question[name])
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(timeout)
            connection.connect(path)
            connection.sendall(json.dumps(question).encode("utf-8") + b"\n")
            answer = json.loads(_read_line(connection))
    except (OSError, ValueError):
        return None
    if not isinstance(answer, dict) or answer.get("stale"):
        return None
    return answer


def start(settings: Any, minutes: float) -> None:
    r"""
    Starts a warm process for these settings in the background (its output
    goes to a log file beside its socket), unless one already answers.
    """
    key = warm_key(settings)
    folder = private_folder()
    socket_path(key)  # a path too long is said now, not in a log
    request = os.path.join(folder, f"{key}.json")
    with open(request, "w", encoding="utf-8") as stream:
        json.dump({"settings": asdict(settings), "minutes": minutes}, stream)
    log = open(os.path.join(folder, f"{key}.log"), "ab")
    with log:
        subprocess.Popen(
            [sys.executable, "-m", "captum_tracin_we._jobs.warm_worker", request],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            cwd=os.getcwd(),
        )


def _read_line(connection: socket.socket) -> bytes:
    parts = []
    size = 0
    while True:
        part = connection.recv(1 << 16)
        if not part:
            break
        parts.append(part)
        size += len(part)
        if part.endswith(b"\n") or size > _LIMIT:
            break
    return b"".join(parts)
