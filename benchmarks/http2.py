#!/usr/bin/env python3
"""HTTP/2 or not: client CPU per request over TLS on loopback (see benchmarks/README.md).

The simulator speaks HTTP/1.1 only (aiohttp's server), so HTTP/2 cannot be measured with
it. This script serves a /health-sized JSON body with hypercorn (HTTP/2 and HTTP/1.1 over
TLS, ALPN) and times three clients at the monitor's concurrency (16): httpx with its own
pool over HTTP/1.1, httpx over HTTP/2 (the h2 package), and aiohttp over HTTP/1.1 (the
pool the monitor's client uses). It needs packages the project does not depend on, so
run it from its own virtualenv:

    python3 -m venv /tmp/h2env
    /tmp/h2env/bin/pip install 'httpx[http2]' hypercorn aiohttp
    /tmp/h2env/bin/python benchmarks/http2.py [--requests 500] [--repeat 3]

openssl makes the self-signed certificate.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

APP = '''
import json
BODY = json.dumps({"jobs": {"completed": 1000, "failed": 2, "inProgress": 0, "inQueue": 0,
                            "retried": 0}, "workers": {"idle": 1, "ready": 1}}).encode()
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": BODY})
'''
CONCURRENCY = 16


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _httpx(url: str, cafile: str, n: int, http2: bool) -> tuple[float, float, str]:
    import httpx

    sem = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    # a context each: httpx sets ALPN on the context it is given
    ctx = ssl.create_default_context(cafile=cafile)
    async with httpx.AsyncClient(http2=http2, verify=ctx, limits=limits) as client:

        async def get(i: int) -> str:
            async with sem:
                return (await client.get(f"{url}/v2/e{i}/health")).http_version

        await asyncio.gather(*(get(i) for i in range(50)))
        cpu, wall = time.process_time(), time.perf_counter()
        versions = await asyncio.gather(*(get(i) for i in range(n)))
        return (time.process_time() - cpu) / n * 1000, time.perf_counter() - wall, versions[0]


async def _aiohttp(url: str, cafile: str, n: int) -> tuple[float, float, str]:
    import aiohttp

    sem = asyncio.Semaphore(CONCURRENCY)
    ctx = ssl.create_default_context(cafile=cafile)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY, ssl=ctx)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def get(i: int) -> str:
            async with sem, session.get(f"{url}/v2/e{i}/health") as resp:
                await resp.read()
                v = resp.version
                return "HTTP/1.1" if v is None else f"HTTP/{v.major}.{v.minor}"

        await asyncio.gather(*(get(i) for i in range(50)))
        cpu, wall = time.process_time(), time.perf_counter()
        versions = await asyncio.gather(*(get(i) for i in range(n)))
        return (time.process_time() - cpu) / n * 1000, time.perf_counter() - wall, versions[0]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "app.py").write_text(APP, encoding="utf-8")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
             str(d / "key.pem"), "-out", str(d / "cert.pem"), "-days", "1", "-subj",
             "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True, capture_output=True,
        )
        port = _port()
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "hypercorn"), "--certfile", str(d / "cert.pem"),
             "--keyfile", str(d / "key.pem"), "--bind", f"127.0.0.1:{port}", "app:app"],
            cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(2)
            url, cafile = f"https://127.0.0.1:{port}", str(d / "cert.pem")
            runs: dict[str, list[tuple[float, float, str]]] = {}
            for _ in range(args.repeat):
                for name, make in (
                    ("httpx HTTP/1.1", lambda: _httpx(url, cafile, args.requests, False)),
                    ("httpx HTTP/2", lambda: _httpx(url, cafile, args.requests, True)),
                    ("aiohttp HTTP/1.1", lambda: _aiohttp(url, cafile, args.requests)),
                ):
                    try:
                        runs.setdefault(name, []).append(asyncio.run(make()))
                    except Exception as exc:  # report it: a failure is a finding too
                        print(f"{name}: failed: {type(exc).__name__}: {exc}")
            for name, rows in runs.items():
                cpu = [r[0] for r in rows]
                wall = [r[1] for r in rows]
                print(f"{name:17} client CPU ms/request min {min(cpu):.3f} median "
                      f"{statistics.median(cpu):.3f}; wall s per {args.requests} min "
                      f"{min(wall):.2f} median {statistics.median(wall):.2f}; {rows[0][2]}")
        finally:
            server.terminate()
            server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
