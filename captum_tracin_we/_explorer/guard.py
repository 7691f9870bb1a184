#!/usr/bin/env python3

r"""
The explorer's guard, an ASGI middleware in front of every route: the
``Host`` must be an IP address or a known name (DNS rebinding always arrives
with the attacker's domain name), a POST from another site is refused, and
every response gets the security headers.
"""

import ipaddress
from typing import Any, Dict, List
from urllib.parse import urlsplit

# The page may only load its own files; nothing from the internet, no inline
# script. CSSOM colours set from script are allowed by style-src 'self'. Only
# local pages (a notebook) may frame it.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' "
    "data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'self' http://localhost:* http://127.0.0.1:* "
    "https://localhost:* https://127.0.0.1:* http://[::1]:* vscode-webview:"
)


class Guard:
    r"""
    ASGI middleware in front of every route: refuses a ``Host`` that is not
    allowed (400) and a POST from another site (403), and adds the security
    headers to every response, static files included.
    """

    def __init__(self, app: Any, allowed_hosts: List[str]) -> None:
        self.app = app
        self.allowed = {h.strip("[]").lower() for h in allowed_hosts}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {
            k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
        }
        host = headers.get("host", "")
        problem = None
        if not allowed_host(host_name(host), self.allowed):
            problem = (
                400,
                f"Host {host!r} is not served here; open the explorer's own address.",
            )
        elif scope["method"] == "POST" and _cross_site(headers, host):
            problem = (403, "Requests from other sites are refused.")
        if problem is not None:
            await json_error(problem[1], problem[0])(scope, receive, send)
            return

        async def secured(message: Any) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [
                    (k.lower().encode(), v.encode())
                    for k, v in security_headers().items()
                    if k.lower().encode() not in present
                ]
                message = {
                    **message,
                    "headers": list(message.get("headers", [])) + extra,
                }
            await send(message)

        await self.app(scope, receive, secured)


def host_name(host: str) -> str:
    r"""The name in a ``Host`` header, without the port (IPv6 in brackets too)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def allowed_host(name: str, allowed: Any) -> bool:
    r"""An IP address, or an allowed name. DNS rebinding always arrives with
    the attacker's domain name, never with an IP address."""
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return name in allowed


def _cross_site(headers: Dict[str, str], host: str) -> bool:
    if headers.get("sec-fetch-site") == "cross-site":
        return True
    origin = headers.get("origin")
    if origin is None:
        return False
    return urlsplit(origin).netloc.lower() != host.strip().lower()


def security_headers() -> Dict[str, str]:
    r"""The headers every response carries (a saved page sets its own CSP)."""
    return {
        "Content-Security-Policy": _CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def json_error(message: str, status: int) -> Any:
    r"""A JSON error response ``{"error": message}``."""
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status)
