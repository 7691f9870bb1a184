#!/usr/bin/env python3

r"""
``explain --keep-warm``: the warm process. It prepares the explain job once
(:func:`prepare_explain`), then answers questions one at a time on a Unix
socket in this user's private folder, each with :func:`answer_explain`, the
function the command itself runs, so every answer equals the command's own.

It stops, removing its socket, after ``minutes`` without a question, and
when a file it loaded from has changed since (the model folder, the training
data, the index's manifest and stored last layer): that question is answered
``{"stale": true}``, and the command answers it itself.

Run by :func:`~captum_tracin_we._jobs.warm_client.start`, as
``python -m captum_tracin_we._jobs.warm_worker REQUEST.json``.
"""

import contextlib
import io
import json
import os
import socket
import sys
import time
from dataclasses import replace
from typing import Any, Dict, List, Optional, Tuple

from captum_tracin_we._jobs.warm_client import (
    QUESTION_FIELDS,
    _read_line,
    socket_path,
    warm_key,
)

Signature = List[Tuple[str, int, int, int, int]]


def file_signature(paths: List[Optional[str]]) -> Signature:
    r"""Size, modification and change times and inode of every file at or
    under ``paths`` (the change time moves on every write and cannot be set
    back)."""
    found: Signature = []
    for path in paths:
        if not path or not os.path.exists(path):
            continue
        files = [path]
        if os.path.isdir(path):
            files = sorted(
                os.path.join(folder, name)
                for folder, _, names in os.walk(path)
                for name in names
                if not name.startswith(".")
            )
        for name in files:
            status = os.stat(name)
            found.append(
                (
                    name,
                    status.st_size,
                    status.st_mtime_ns,
                    status.st_ctime_ns,
                    status.st_ino,
                )
            )
    return found


def watched(settings: Any) -> List[Optional[str]]:
    r"""The files a prepared job was loaded from."""
    paths = [settings.model, settings.train]
    if settings.index:
        paths += [
            os.path.join(settings.index, "manifest.json"),
            os.path.join(settings.index, "tracincp_fast.pt"),
        ]
    return paths


def answer(prepared: Any, question: Dict[str, Any]) -> Dict[str, Any]:
    r"""One question's answer: the printed text, or the error the command
    would stop with."""
    from captum_tracin_we._jobs.explain import answer_explain, check_request

    request = replace(
        prepared.settings, **{name: question.get(name) for name in QUESTION_FIELDS}
    )
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            check_request(request)
            answer_explain(prepared, request)
    except (ValueError, OSError) as error:
        return {"ok": False, "error": str(error), "output": printed.getvalue()}
    return {"ok": True, "output": printed.getvalue()}


def serve(request_file: str) -> None:
    r"""Prepares the job described in ``request_file`` and answers questions."""
    from captum_tracin_we._jobs.explain import ExplainSettings, prepare_explain

    with open(request_file, encoding="utf-8") as stream:
        request = json.load(stream)
    settings = ExplainSettings(**{**request["settings"], "show_progress": False})
    idle_seconds = float(request["minutes"]) * 60
    path = socket_path(warm_key(settings))
    before = file_signature(watched(settings))
    prepared = prepare_explain(settings)
    for loaded in prepared.tracin.checkpoint_pass():
        loaded.fingerprint()  # hashed once here, not in the first question
    prepared.seconds = {"load": 0.0, "index": 0.0}  # its answers load nothing
    if file_signature(watched(settings)) != before:
        return  # a file changed while it loaded: nothing trustworthy to serve
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        if _answers(path):
            return  # another warm process for these settings runs already
        try:
            if os.path.exists(path):
                os.remove(path)  # a socket left by a process that was killed
            server.bind(path)
        except OSError:
            return  # another warm process took the name first
        server.listen(8)
        try:
            _answer_until_idle(server, prepared, settings, before, idle_seconds)
        finally:
            with contextlib.suppress(OSError):
                os.remove(path)


def _answers(path: str) -> bool:
    r"""True when a process listens on the socket at ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
        return True


def _answer_until_idle(
    server: socket.socket,
    prepared: Any,
    settings: Any,
    signature: Signature,
    idle_seconds: float,
) -> None:
    last = time.monotonic()
    while True:
        server.settimeout(max(0.05, idle_seconds - (time.monotonic() - last)))
        try:
            connection, _ = server.accept()
        except TimeoutError:
            return
        with connection:
            connection.settimeout(60)
            try:
                question = json.loads(_read_line(connection))
                if file_signature(watched(settings)) != signature:
                    connection.sendall(b'{"stale": true}\n')
                    return
                reply = answer(prepared, question)
                connection.sendall(json.dumps(reply).encode("utf-8") + b"\n")
            except (OSError, ValueError):
                pass  # a client that went away, or sent no question
        last = time.monotonic()


if __name__ == "__main__":
    serve(sys.argv[1])
