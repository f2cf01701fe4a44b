"""Answers shared by the simulator's APIs: edge error pages, problem+json, a reset socket."""

from __future__ import annotations

import contextlib
import socket
import struct
from typing import Any

from aiohttp import web

HTML_ERROR = (
    "<!DOCTYPE html>\n<html><head><title>{code} {reason}</title></head>\n"
    "<body><center><h1>{code} {reason}</h1></center><hr><center>cloudflare</center>"
    "</body></html>\n"
)
REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 410: "Gone", 422: "Unprocessable Entity",
           429: "Too Many Requests", 500: "Internal Server Error", 501: "Not Implemented",
           502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}
PROBLEM_JSON = "application/problem+json"


def html_error(code: int, status: int) -> web.Response:
    """An edge proxy's HTML error page for `code`, sent with HTTP `status`."""
    text = HTML_ERROR.format(code=code, reason=REASONS[code])
    return web.Response(text=text, status=status, content_type="text/html")


def problem(
    status: int, detail: str, headers: dict[str, str] | None = None,
    errors: list[str] | None = None,
) -> web.Response:
    """An `application/problem+json` answer as REST v2 sends it: title, status, detail."""
    body: dict[str, Any] = {"title": REASONS.get(status, "Error"), "status": status,
                            "detail": detail}
    if errors:
        body["errors"] = errors
    return web.json_response(body, status=status, headers=headers,
                             content_type=PROBLEM_JSON)


def reset(request: web.Request) -> None:
    """Drop the connection with a TCP RST, no response: linger 0 turns close into a reset."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
