"""Helpers for the tests that run `python -m monitor ...` as subprocesses on loopback.

Every process is started through a `Procs` group whose `close()` kills whatever is still
running (the fixtures call it in a `finally`); every wait here is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
T = TypeVar("T")

# Variables a developer's shell may carry that would change what a subprocess does.
_SCRUBBED_ENV = (
    "RUNPOD_API_KEY", "SLACK_WEBHOOK_URL", "SLACK_BOT_TOKEN", "HTTP_PROXY", "HTTPS_PROXY",
    "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy",
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(**extra: str) -> dict[str, str]:
    """The test process's environment without secrets or proxies, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def wait_until(
    what: str, probe: Callable[[], T | None], timeout_s: float, every_s: float = 0.2
) -> T:
    """Call `probe` until it returns something truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while True:
        try:
            value = probe()
        except (httpx.HTTPError, OSError, ValueError, KeyError) as exc:
            value, last_error = None, exc
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout_s:g} s waiting for {what}"
                + (f" (last error: {last_error!r})" if last_error else "")
            )
        time.sleep(every_s)


# ---------------------------------------------------------------- files


def write_yaml(path: Path, data: Any, mode: int | None = None) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    if mode is not None:
        path.chmod(mode)
    return path


def write_config(
    path: Path, sim_port: int, http_port: int, state_path: Path, **sections: Any
) -> Path:
    """A chmod-600 config.yaml pointing the daemon at the simulator on `sim_port`."""
    data: dict[str, Any] = {
        "interval_s": 1,
        "runpod": {
            "graphql_url": f"http://127.0.0.1:{sim_port}/graphql",
            "rest_url": f"http://127.0.0.1:{sim_port}/v2",
            "timeout_s": 0.5,
        },
        "http": {"listen": f"127.0.0.1:{http_port}"},
        "state": {"path": str(state_path)},
        "alerts": {"group_wait_s": 0},
        "log": {"level": "info", "format": "json"},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    write_yaml(path, data, mode=stat.S_IRUSR | stat.S_IWUSR)
    return path


# ---------------------------------------------------------------- processes


@dataclass
class Proc:
    """One `python -m monitor ...` subprocess with its output in files."""

    name: str
    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    started: float = field(default_factory=time.time)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def output(self) -> str:
        return self.stdout() + self.stderr()

    def log_lines(self) -> list[dict[str, Any]]:
        """The JSON log lines on stderr (other lines are skipped)."""
        return json_lines(self.stderr())

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.popen.send_signal(sig)

    def wait(self, timeout_s: float) -> int:
        """The exit status; fails (after killing it) if it does not exit in time."""
        try:
            return self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.name} did not exit within {timeout_s:g} s\n{self.tail()}"
            ) from None

    def kill(self) -> None:
        """SIGKILL and reap (no-op once exited)."""
        if self.popen.poll() is None:
            self.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)

    def tail(self, n: int = 30) -> str:
        lines = self.output().splitlines()
        return f"--- last {n} lines of {self.name} ---\n" + "\n".join(lines[-n:])


class Procs:
    """Starts subprocesses in `workdir`; `close()` kills every one still running."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Proc] = []

    def monitor(self, name: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        """Start `python -m monitor ARGS`, stdout and stderr to files named after `name`."""
        out = self.workdir / f"{name}.stdout"
        err = self.workdir / f"{name}.stderr"
        with out.open("wb") as fout, err.open("wb") as ferr:
            popen = subprocess.Popen(
                [PYTHON, "-m", "monitor", *args],
                cwd=self.workdir, env=env if env is not None else base_env(),
                stdin=subprocess.DEVNULL, stdout=fout, stderr=ferr, start_new_session=True,
            )
        proc = Proc(name, popen, out, err)
        self.started.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.started:
            proc.kill()


@contextlib.contextmanager
def procs(workdir: Path) -> Iterator[Procs]:
    group = Procs(workdir)
    try:
        yield group
    finally:
        group.close()


def run_monitor(
    workdir: Path, *args: str, env: dict[str, str] | None = None, timeout_s: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run `python -m monitor ARGS` to completion (killed if it overruns)."""
    return subprocess.run(
        [PYTHON, "-m", "monitor", *args], cwd=workdir,
        env=env if env is not None else base_env(), stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )


def run_monitor_many(
    workdir: Path, commands: dict[str, list[str]], env: dict[str, str] | None = None,
    timeout_s: float = 30,
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run several `python -m monitor ARGS` at once; each is killed if it overruns."""
    running: dict[str, subprocess.Popen[str]] = {}
    try:
        for name, args in commands.items():
            running[name] = subprocess.Popen(
                [PYTHON, "-m", "monitor", *args], cwd=workdir,
                env=env if env is not None else base_env(), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
        deadline = time.monotonic() + timeout_s
        done = {}
        for name, popen in running.items():
            out, err = popen.communicate(timeout=max(0.1, deadline - time.monotonic()))
            done[name] = subprocess.CompletedProcess(popen.args, popen.returncode, out, err)
        return done
    finally:
        for popen in running.values():
            if popen.poll() is None:
                popen.kill()
                popen.wait(timeout=10)


def start_simulator(group: Procs, scenario: Path, api_key: str, name: str = "sim") -> str:
    """`simulate SCENARIO --interval 1` on a free port; returns its base URL once it answers."""
    port = free_port()
    proc = group.monitor(
        name, "simulate", str(scenario), "--port", str(port), "--interval", "1",
        env=base_env(RUNPOD_API_KEY=api_key),
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if not proc.alive():
            raise AssertionError(f"the simulator exited\n{proc.tail()}")
        return "base URL:" in proc.stdout()

    wait_until("the simulator to listen", up, timeout_s=15, every_s=0.05)
    return url


def sim_port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


# ---------------------------------------------------------------- HTTP, logs, metrics


def http(auth: tuple[str, str] | None = None) -> httpx.Client:
    """An HTTP client for loopback that ignores proxy settings."""
    return httpx.Client(timeout=3.0, trust_env=False, auth=auth)


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(line)
                if isinstance(value, dict):
                    out.append(value)
    return out


Sample = tuple[str, dict[str, str], float]


def metric_samples(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition as (name, labels, value)."""
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def find_samples(samples: list[Sample], name: str, **labels: str) -> list[Sample]:
    """The samples named `name` whose labels include `labels`."""
    return [
        s for s in samples
        if s[0] == name and all(s[1].get(k) == v for k, v in labels.items())
    ]


def one_value(samples: list[Sample], name: str, **labels: str) -> float:
    found = find_samples(samples, name, **labels)
    assert len(found) == 1, f"expected one {name}{labels}, got {found}"
    return found[0][2]


def wait_listening(proc: Proc, base: str, timeout_s: float = 20) -> None:
    """Wait until the daemon answers /healthz (fails early if it exits)."""
    with http() as client:
        def up() -> bool:
            if not proc.alive():
                raise AssertionError(f"{proc.name} exited early\n{proc.tail()}")
            return client.get(f"{base}/healthz").status_code in (200, 503)

        wait_until(f"{proc.name} to answer /healthz", up, timeout_s, every_s=0.1)


# ---------------------------------------------------------------- in-process HTTP servers


class _ThreadedServer:
    """An aiohttp application on 127.0.0.1 (a free port) served from its own thread."""

    def __init__(self) -> None:
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        raise NotImplementedError

    async def close_extra(self) -> None:
        """Release what the handlers opened (the loop is still running)."""

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await self.close_extra()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Any:
        self._thread.start()
        if not self._ready.wait(10):
            raise AssertionError(f"{type(self).__name__} did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        fut = asyncio.run_coroutine_threadsafe(self._stop(), self._loop)
        with contextlib.suppress(Exception):
            fut.result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class RecordingServer(_ThreadedServer):
    """Answers 200 "ok" to everything and keeps every request (a Slack webhook stand-in)."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Recorded] = []

    def app(self) -> web.Application:
        async def record(request: web.Request) -> web.Response:
            body = await request.read()
            self.requests.append(
                Recorded(request.method, request.path_qs, dict(request.headers), body)
            )
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        return app


class DelayProxy(_ThreadedServer):
    """Forwards every request to `target` after holding it `delay_s`: slow but good answers,
    which (unlike timeouts) no back-off skips. `inflight` counts the requests being held."""

    def __init__(self, target: str, delay_s: float) -> None:
        super().__init__()
        self.target = target
        self.delay_s = delay_s
        self.inflight = 0
        self._session: Any = None

    def app(self) -> web.Application:
        from aiohttp import ClientSession

        async def forward(request: web.Request) -> web.Response:
            if self._session is None:
                self._session = ClientSession()
            body = await request.read()
            self.inflight += 1
            try:
                await asyncio.sleep(self.delay_s)
                async with self._session.request(
                    request.method, self.target + request.path_qs, data=body,
                    headers={k: v for k, v in request.headers.items()
                             if k.lower() in ("authorization", "content-type")},
                ) as resp:
                    return web.Response(
                        status=resp.status, body=await resp.read(),
                        headers={"Content-Type": resp.headers.get("Content-Type",
                                                                  "application/json")},
                    )
            finally:
                self.inflight -= 1

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", forward)
        return app

    async def close_extra(self) -> None:
        if self._session is not None:
            await self._session.close()


SIGTERM = signal.SIGTERM
