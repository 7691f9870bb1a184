#!/usr/bin/env python3

r"""
The influence explorer's web layer: a small JSON API and the static front end
(``static/``), served by Starlette on uvicorn. See "The explorer" in
the docs for why these two.

Every answer is JSON (the front end writes training text into the page as
text, never as markup), except ``/api/export``, which returns a standalone
HTML page with every piece of text escaped. Bad requests get a 4xx JSON
``{"error": ...}``; a failure inside a query gets a 500 with a short message,
and the server keeps serving.
"""

import asyncio
import html
import json
import logging
import os
import socket
import sys
import threading
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence

from captum_tracin_we._explorer.engine import Explorer
from captum_tracin_we._explorer.guard import Guard, json_error
from captum_tracin_we._explorer.pages import export_page
from captum_tracin_we._explorer.requests import RequestError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_LOG = logging.getLogger("captum_tracin_we.explorer")
_EXPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'"
# A request (line, headers and body) must arrive whole within this many seconds
# of the connection opening or of the previous answer; an idle kept-alive
# connection closes after KEEP_ALIVE_S. A slow client cannot hold a slot of
# the server's MAX_CONNECTIONS longer.
REQUEST_TIMEOUT_S = 5.0
KEEP_ALIVE_S = 3
MAX_CONNECTIONS = 64


def _imports() -> Any:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "The explorer needs starlette and uvicorn: "
            "pip install 'captum_tracin_we[explore]'"
        ) from error


def explorer_app(explorer: Explorer, allowed_hosts: Optional[List[str]] = None) -> Any:
    r"""
    The Starlette application of the explorer.

    Args:
        explorer (Explorer): The prepared engine.
        allowed_hosts (list of str, optional): Host names accepted in the
                    ``Host`` header besides IP addresses (defends against DNS
                    rebinding). Default: None, meaning ``localhost``.

    Returns:
        app (starlette.applications.Starlette): The ASGI application.
    """
    _imports()
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import ClientDisconnect
    from starlette.responses import FileResponse, JSONResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    limits = explorer.limits

    def endpoint(view: Callable[[Dict[str, Any]], Any]) -> Callable[..., Awaitable]:
        async def answer(request: Any) -> Any:
            from starlette.concurrency import run_in_threadpool

            try:
                body = await _json_body(request, limits.max_body_bytes)
                result = await run_in_threadpool(view, body)
                if isinstance(result, str):
                    return _html_download(result, body)
                return JSONResponse(result)
            except RequestError as error:
                return json_error(str(error), error.status)
            except ClientDisconnect:  # gone, or closed by the request deadline
                return json_error("The client went away.", 400)
            except Exception as error:  # the server keeps serving
                _LOG.exception("An explorer request failed")
                return json_error(_short(error), 500)

        return answer

    async def page(request: Any) -> Any:
        return FileResponse(os.path.join(STATIC, "index.html"))

    async def info(request: Any) -> Any:
        return JSONResponse(explorer.info())

    async def http_error(request: Any, error: Any) -> Any:
        return json_error(str(error.detail), error.status_code)

    def view(method: Callable[..., Any]) -> Callable[[Dict[str, Any]], Any]:
        return lambda body: _call(method, body)

    routes = [
        Route("/", page),
        Route("/api/info", info),
        Route("/api/query", endpoint(view(explorer.query)), methods=["POST"]),
        Route("/api/pair", endpoint(view(explorer.pair)), methods=["POST"]),
        Route("/api/self", endpoint(view(explorer.self_pair)), methods=["POST"]),
        Route("/api/audit", endpoint(view(explorer.audit)), methods=["POST"]),
        Route(
            "/api/export", endpoint(lambda b: _export(explorer, b)), methods=["POST"]
        ),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    hosts = list(allowed_hosts or LOCAL_HOSTS)
    return Starlette(
        routes=routes,
        middleware=[Middleware(Guard, allowed_hosts=hosts)],
        exception_handlers={HTTPException: http_error},
    )


_VIEWS = {"query": "query", "pair": "pair", "self": "self_pair", "audit": "audit"}


def _export(explorer: Explorer, body: Dict[str, Any]) -> str:
    view = body.get("view")
    if not isinstance(view, str) or view not in _VIEWS:
        raise RequestError(f"`view` must be one of {sorted(_VIEWS)}; got {view!r}.")
    request = body.get("request", {})
    if not isinstance(request, dict):
        raise RequestError("`request` must be a JSON object.")
    result = _call(getattr(explorer, _VIEWS[view]), request)
    return export_page(view, result, explorer.info())


def _call(view: Callable[..., Any], body: Dict[str, Any]) -> Any:
    r"""Calls a view with the body's fields as keyword arguments, refusing
    fields the view does not take."""
    import inspect

    accepted = set(inspect.signature(view).parameters)
    unknown = sorted(set(body) - accepted - {"view"})
    if unknown:
        raise RequestError(
            f"Unknown field {unknown[0]!r}; this request takes {sorted(accepted)}."
        )
    return view(**{key: value for key, value in body.items() if key in accepted})


async def _json_body(request: Any, limit: int) -> Dict[str, Any]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise RequestError(
            "Send the request body as JSON, with Content-Type: application/json.",
            415,
        )
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise RequestError(f"The request body is over {limit} bytes.", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"The request body is over {limit} bytes.", 413)
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks) or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise RequestError("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise RequestError("The request body must be a JSON object.")
    return body


def _short(error: Exception) -> str:
    message = " ".join(str(error).split())
    if len(message) > 300:
        message = message[:297] + "..."
    return f"The query failed ({type(error).__name__}): {message}"


def _html_download(page: str, body: Dict[str, Any]) -> Any:
    from starlette.responses import Response

    name = f"tracin_we_{body.get('view', 'view')}.html"
    headers = {
        "Content-Security-Policy": _EXPORT_CSP,
        "Content-Disposition": f'attachment; filename="{name}"',
    }
    return Response(page, media_type="text/html; charset=utf-8", headers=headers)


def request_deadline_protocol(timeout: float = REQUEST_TIMEOUT_S) -> Any:
    r"""
    uvicorn's h11 protocol with a request deadline: a connection whose
    request (request line, headers and body) is not complete ``timeout``
    seconds after the connection opened, or after the previous answer on it,
    is closed. uvicorn itself has no such timeout: a client that trickles its
    headers holds one of the ``limit_concurrency`` slots for as long as it
    likes, and enough of them make the server answer 503 to everyone. The time
    the explorer takes to answer is not limited.

    Args:
        timeout (float, optional): Seconds a client has to send one request.
                    Default: ``REQUEST_TIMEOUT_S``

    Returns:
        protocol (type): A subclass of
                    ``uvicorn.protocols.http.h11_impl.H11Protocol``, for
                    ``uvicorn.Config(http=...)``.
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    waiting = (h11.IDLE, h11.SEND_BODY)  # the client's request is not complete

    class RequestDeadlineProtocol(H11Protocol):
        _deadline: Optional[asyncio.TimerHandle] = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_deadline()

        def connection_lost(self, exc: Optional[Exception]) -> None:
            self._cancel_deadline()
            super().connection_lost(exc)

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state not in waiting:
                self._cancel_deadline()  # the request is whole: no limit now

        def on_response_complete(self) -> None:
            self._arm_deadline()  # first: a pipelined request may be whole
            super().on_response_complete()

        def _arm_deadline(self) -> None:
            self._cancel_deadline()
            self._deadline = self.loop.call_later(timeout, self._deadline_passed)

        def _cancel_deadline(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _deadline_passed(self) -> None:
            self._deadline = None
            if self.conn.their_state in waiting and not self.transport.is_closing():
                _LOG.info("Closed a connection whose request was not sent in time")
                self.transport.close()  # connection_lost frees the slot

    return RequestDeadlineProtocol


def _checked_port(port: Any) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536:
        raise ValueError(f"The port must be an integer from 0 to 65535; got {port!r}.")


def listening_socket(host: str, port: int) -> socket.socket:
    r"""A socket bound to ``host:port`` (port 0: a free one), or an
    ``OSError`` that names the address and the fix."""
    _checked_port(port)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(
            f"The explorer cannot listen on {host}:{port} ({error.strerror}); "
            "choose another port, or 0 for a free one."
        ) from None
    return sock


class ExplorerServer:
    r"""
    A running explorer: ``url`` is its address. Start it in a background
    thread with :meth:`start` (notebooks; stop it with :meth:`stop` or a
    ``with`` block) or in the foreground with :meth:`serve_forever` (the
    command line; Ctrl+C stops it). In a notebook the object shows the page.

    Args:
        explorer (Explorer): The prepared engine.
        host (str, optional): Address to bind. Default: ``"127.0.0.1"``; any
                    other address is reachable from other machines, so a
                    warning is printed.
        port (int, optional): Port; 0 picks a free one. Default: 0
        allowed_hosts (sequence of str, optional): More host names the page
                    may be opened by (IP addresses, ``localhost``, and for
                    another ``host`` this machine's names, are always
                    accepted). Default: ()
        sock (socket.socket, optional): A socket already bound with
                    :func:`listening_socket`. Default: None
    """

    def __init__(
        self,
        explorer: Explorer,
        host: str = "127.0.0.1",
        port: int = 0,
        allowed_hosts: Sequence[str] = (),
        sock: Optional[socket.socket] = None,
    ):
        _imports()
        import uvicorn

        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536:
            raise ValueError(
                f"The port must be an integer from 0 to 65535; got {port!r}."
            )
        if not explorer.label_names:
            raise ValueError(
                "Prepare the explorer first: ExplorerServer(explorer.prepare())."
            )
        self.explorer = explorer
        self.host = host
        allowed = ["localhost", *allowed_hosts]
        if host not in LOCAL_HOSTS:
            message = (
                f"The explorer binds to {host}: anyone who can reach this machine "
                "can query the model and read its training data. Use the default "
                "127.0.0.1 unless you mean it."
            )
            print(f"WARNING: {message}", file=sys.stderr)
            allowed += [socket.gethostname(), socket.getfqdn(), host]
        config = uvicorn.Config(
            explorer_app(explorer, allowed),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            http=request_deadline_protocol(REQUEST_TIMEOUT_S),
            limit_concurrency=MAX_CONNECTIONS,
            timeout_keep_alive=KEEP_ALIVE_S,
        )
        self.port = port
        self._server = uvicorn.Server(config)
        self._socket: Optional[socket.socket] = sock
        if sock is not None:
            self.port = int(sock.getsockname()[1])
        self._thread: Optional[threading.Thread] = None

    def bind(self) -> "ExplorerServer":
        r"""Binds the listening socket (port 0: a free port), so that
        :attr:`url` is known before serving."""
        if self._socket is None:
            self._socket = listening_socket(self.host, self.port)
            self.port = int(self._socket.getsockname()[1])
        return self

    @property
    def url(self) -> str:
        r"""The address to open: ``http://127.0.0.1:<port>/`` by default."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    def start(self, timeout: float = 30.0) -> "ExplorerServer":
        r"""Starts serving in a background thread and waits until it listens."""
        sockets = [self.bind()._socket]
        self._thread = threading.Thread(
            target=self._server.run,
            args=(sockets,),
            name="tracin-we-explorer",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"The explorer did not start on {self.url}.")
            time.sleep(0.02)
        return self

    def serve_forever(self) -> None:
        r"""Serves in the foreground until interrupted (Ctrl+C)."""
        self._server.run([self.bind()._socket])

    def stop(self, timeout: float = 10.0) -> None:
        r"""Stops serving, waits for the thread to end, and frees the port."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        if self._socket is not None:
            self._socket.close()

    def __enter__(self) -> "ExplorerServer":
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        running = self._thread is not None and self._thread.is_alive()
        return f"ExplorerServer({self.url if running else 'not serving'})"

    def _repr_html_(self) -> str:
        url = html.escape(self.url, quote=True)
        return (
            f'<p>TracIn-WE explorer: <a href="{url}" target="_blank">{url}</a></p>'
            f'<iframe src="{url}" width="100%" height="720" '
            'style="border:1px solid #ccc"></iframe>'
        )
