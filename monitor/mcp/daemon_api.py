"""The running daemon's JSON API, as the MCP server reads and writes it.

Reads send the configured basic auth (when set); writes send the bearer write token and
nothing else: basic auth for reading does not make an agent a writer, only the operator's
token given to this process does. Each answer is read up to `MAX_BODY_BYTES`; a daemon that
is down, refuses, or answers something else is a `DaemonError` naming what to do, and no
error text ever holds a credential.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from monitor.config import Settings

MAX_BODY_BYTES = 8 * 1024 * 1024  # /api/v1/endpoints at 1,000 endpoints is ~0.5 MB
TIMEOUT_S = 10.0


class DaemonError(Exception):
    """The daemon could not give an answer; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where the daemon listens and the credentials to reach it."""

    url: str
    basic_auth: tuple[str, str] | None = None
    write_token: str | None = None

    @property
    def can_write(self) -> bool:
        return self.write_token is not None


def daemon_url(settings: Settings) -> str:
    """The base URL of the daemon that `settings` configures, as seen from this machine: a
    wildcard listener is reached on loopback."""
    host = settings.http.host
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.http.port}"


def target_for(settings: Settings, url: str | None, write_token: str | None) -> Target:
    """The daemon's URL (`url`, else the configured listener) and credentials."""
    auth = settings.http.basic_auth
    basic = None if auth is None else (auth.username, auth.password.get_secret_value())
    return Target((url or daemon_url(settings)).rstrip("/"), basic, write_token or None)


class DaemonAPI:
    """An HTTP client of one daemon; use as an async context manager."""

    def __init__(self, target: Target, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.target = target
        # trust_env off: the daemon is reached directly, and its credentials never go to a
        # proxy named by the environment
        self._client = httpx.AsyncClient(
            base_url=target.url, timeout=TIMEOUT_S, trust_env=False, transport=transport,
            follow_redirects=False,
        )

    async def __aenter__(self) -> DaemonAPI:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    async def get(self, path: str, **params: Any) -> dict[str, Any]:
        """GET a JSON object; 404 is a `DaemonError` too."""
        return await self._call("GET", path, params={k: v for k, v in params.items()
                                                     if v is not None})

    async def endpoint(self, endpoint_id: str, window_s: float) -> dict[str, Any] | None:
        """`GET /api/v1/endpoints/{id}`; None when the daemon knows no such endpoint."""
        try:
            return await self._call(
                "GET", f"/api/v1/endpoints/{quote(endpoint_id, safe='')}",
                params={"window_s": window_s}, missing_ok=True,
            )
        except _Missing:
            return None

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a JSON object with the write credential."""
        if not self.target.can_write:
            raise DaemonError("no write credential: set RUNPOD_MONITOR_WRITE_TOKEN in the MCP "
                              "server's environment (the daemon's api.write_token)")
        headers = {"Authorization": f"Bearer {self.target.write_token}"}
        return await self._call("POST", path, json_body=body, headers=headers)

    async def _call(
        self, method: str, path: str, *, params: dict[str, Any] | None = None,
        json_body: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
        auth: httpx.Auth | None = None, missing_ok: bool = False,
    ) -> dict[str, Any]:
        if auth is None and method == "GET" and self.target.basic_auth is not None:
            auth = httpx.BasicAuth(*self.target.basic_auth)
        where = f"the monitor daemon at {self.target.url}"
        try:
            async with self._client.stream(
                method, path, params=params, json=json_body, headers=headers,
                auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT,
            ) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body.extend(chunk)
                    if len(body) > MAX_BODY_BYTES:
                        raise DaemonError(f"{where} sent more than {MAX_BODY_BYTES} bytes "
                                          f"for {path}")
                status = response.status_code
        except httpx.TimeoutException:
            raise DaemonError(f"{where} did not answer {path} within {TIMEOUT_S:g} s") from None
        except httpx.HTTPError as exc:
            raise DaemonError(
                f"{where} is not reachable ({type(exc).__name__}): is `runpod-monitor run` "
                "running with this configuration? (or pass --url)"
            ) from None
        if status == 404 and missing_ok:
            raise _Missing
        try:
            value = json.loads(bytes(body))
        except (ValueError, UnicodeDecodeError):
            value = None
        if status in (401, 403):
            given = ("the write token (RUNPOD_MONITOR_WRITE_TOKEN, which must equal the "
                     "daemon's api.write_token)" if method != "GET"
                     else "the basic auth of the configuration (http.basic_auth)"
                     if self.target.basic_auth is not None
                     else "a read without credentials (give --config with the daemon's "
                          "http.basic_auth)")
            raise DaemonError(f"{where} refused {given} for {method} {path} "
                              f"(HTTP {status}): {_error(value)}")
        if status >= 400:
            raise DaemonError(f"{where} answered HTTP {status} to {method} {path}: "
                              f"{_error(value)}")
        if not isinstance(value, dict):
            raise DaemonError(f"{where} answered {path} with something other than a JSON "
                              "object: is that URL a runpod-monitor daemon?")
        return value


class _Missing(Exception):
    pass


def _error(value: Any) -> str:
    if isinstance(value, dict) and isinstance(value.get("error"), str):
        return str(value["error"])[:500]
    return "(no error message)"
