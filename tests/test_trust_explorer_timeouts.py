#!/usr/bin/env python3

r"""
The explorer against slow clients (issue 21, item 10): ~70 local connections
that trickle a request line one byte at a time must not hold the server. The
real server runs on a free 127.0.0.1 port with a tiny Trainer-run BERT; every
socket is closed and every wait is bounded, so the test ends by itself.
"""

import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

pytest.importorskip("datasets")
pytest.importorskip("accelerate")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from captum_tracin_we._explorer.server import ExplorerServer  # noqa: E402
from captum_tracin_we._jobs.explore import ExploreSettings, prepare_explorer  # noqa: E402
from tests.test_explain import _texts, _write_csv, trainer_run  # noqa: E402

SLOW_CLIENTS = 70  # more than the server's 64 connection slots
PATIENCE_S = 20.0  # the most the test waits for anything


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("slow_clients")
    rows = _texts(12, seed=5)
    run_dir = trainer_run(root / "run", rows, [t for t, _ in rows], 16, 3, 2e-3)
    settings = ExploreSettings(
        model=run_dir,
        train=_write_csv(root / "train.csv", rows),
        index=str(root / "index"),
        max_length=16,
        show_progress=False,
        top_k=3,
        last_layer=False,
    )
    with ExplorerServer(prepare_explorer(settings)) as served:
        yield served


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return None


class _Trickle:
    r"""Sockets that send ``GET / HTTP/1.1`` one byte every 0.3 s, forever
    unless the server closes them; :meth:`close` ends the thread and closes
    every socket."""

    def __init__(self, port, count):
        self.sockets = []
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.settimeout(0.01)
            self.sockets.append(sock)
        self.closed_by_server = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        line = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
        position = 0
        while not self._stop.wait(0.3):
            byte = line[position % len(line) : position % len(line) + 1]
            position = position + 1 if position + 1 < len(line) else len(line) - 1
            for i, sock in enumerate(self.sockets):
                if i in self.closed_by_server:
                    continue
                try:
                    if sock.recv(1024) == b"":
                        self.closed_by_server.add(i)
                        continue
                except TimeoutError:
                    pass
                except OSError:
                    self.closed_by_server.add(i)
                    continue
                try:
                    sock.sendall(byte)
                except OSError:
                    self.closed_by_server.add(i)

    def close(self):
        self._stop.set()
        self._thread.join(5)
        for sock in self.sockets:
            sock.close()


def test_clients_trickling_headers_cannot_hold_the_server(server):
    assert _get(server.url) == 200
    port = server.port
    trickle = _Trickle(port, SLOW_CLIENTS)
    try:
        started = time.monotonic()
        statuses = []
        while time.monotonic() - started < PATIENCE_S:
            statuses.append(_get(server.url))
            if statuses[-1] == 200:
                break
            time.sleep(0.25)
        waited = time.monotonic() - started
        assert statuses[-1] == 200, (
            f"the explorer answered {sorted(set(statuses), key=str)} for "
            f"{PATIENCE_S:.0f} s while {SLOW_CLIENTS} clients trickled headers"
        )
        assert waited < 10.0  # the request deadline (5 s) freed the slots
        while (
            len(trickle.closed_by_server) < SLOW_CLIENTS
            and time.monotonic() - started < PATIENCE_S
        ):
            time.sleep(0.1)
        assert len(trickle.closed_by_server) == SLOW_CLIENTS
    finally:
        trickle.close()
    assert _get(server.url) == 200


def test_a_request_whose_body_trickles_is_closed_and_a_whole_one_is_answered(
    server,
):
    headers = (
        b"POST /api/query HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE_S)
    try:
        sock.sendall(headers + b"{")  # 1 of 100 bytes, then nothing
        started = time.monotonic()
        data = b""
        try:
            while chunk := sock.recv(4096):
                data += chunk
        except ConnectionResetError:
            pass
        assert time.monotonic() - started < 10.0  # closed by the deadline
    finally:
        sock.close()
    # A slow but whole request, then an idle kept-alive connection.
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE_S)
    try:
        request = b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        for i in range(0, len(request), 10):
            sock.sendall(request[i : i + 10])
            time.sleep(0.05)
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        while sock.recv(65536):
            pass
        assert time.monotonic() - started < 8.0  # the keep-alive ran out
    finally:
        sock.close()
