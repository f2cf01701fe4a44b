"""A forwarding HTTP proxy on loopback, for the client's proxy path over real sockets.

Absolute-form requests (`GET http://host:port/path HTTP/1.1`) are rewritten to origin form
and sent on to their host, one upstream connection per client connection (the tests talk
to one host); answers are piped back byte for byte, so streams, endless bodies and faults
reach the client as the server wrote them. CONNECT opens a tunnel. What the proxy was
asked is kept in `seen`.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Seen:
    method: str
    target: str  # as the client wrote it: absolute form, or host:port for CONNECT
    headers: dict[str, str]


@dataclass
class LoopbackProxy:
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def start(self) -> LoopbackProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> LoopbackProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        pipe: asyncio.Task[None] | None = None
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                line, *rest = head.decode("latin-1").split("\r\n")
                method, target, version = line.split(" ")
                headers = dict(h.split(": ", 1) for h in rest if h)
                self.seen.append(Seen(method, target, headers))
                if method == "CONNECT":
                    host, port = target.rsplit(":", 1)
                    up_r, up_w = await asyncio.open_connection(host, int(port))
                    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    await writer.drain()
                    await asyncio.gather(_copy(reader, up_w), _copy(up_r, writer))
                    return
                parts = urlsplit(target)
                if upstream is None:
                    upstream = await asyncio.open_connection(parts.hostname, parts.port or 80)
                    pipe = asyncio.create_task(_copy(upstream[0], writer))
                length = int(next((v for k, v in headers.items()
                                   if k.lower() == "content-length"), "0"))
                body = await reader.readexactly(length)
                kept = "".join(f"{k}: {v}\r\n" for k, v in headers.items()
                               if not k.lower().startswith("proxy-"))
                path = parts.path + (f"?{parts.query}" if parts.query else "")
                upstream[1].write(f"{method} {path} {version}\r\n{kept}\r\n".encode("latin-1")
                                  + body)
                await upstream[1].drain()
        except (ConnectionError, OSError):
            return
        finally:
            if pipe is not None:
                pipe.cancel()
            if upstream is not None:
                upstream[1].close()
            writer.close()
            self._tasks.discard(task)


async def _copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while chunk := await src.read(65536):
            dst.write(chunk)
            await dst.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            dst.close()
