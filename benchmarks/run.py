#!/usr/bin/env python3
"""Performance and scale benchmarks for runpod-monitor (see benchmarks/README.md).

For each size N the parent process writes a scenario with N endpoints, starts the
simulator in its own process (`python -m monitor simulate FILE --port P`), and measures
three kinds of poller, each in its own child process that reports its own getrusage:

- monitor: the real daemon (`monitor.commands.daemon.Daemon.tick`: probes, history, rules,
  incidents, alerts, metrics, SQLite), with its history filled to the retention window,
  then the `/metrics` route of its aiohttp app scraped over real HTTP by the parent;
- floor: a bare `httpx.AsyncClient` making the same calls (GraphQL once, then /health and
  /requests per endpoint) with the same concurrency bound, and nothing else;
- naive: the community textfile-exporter pattern: one sequential request per endpoint
  (/health), written to a Prometheus textfile. Two variants: `httpx.get` per request, as
  the ashleykleynhans exporter does (a new client, SSL context and connection each time),
  and one keep-alive `httpx.Client`.

Plain Python: time.perf_counter, resource.getrusage, subprocesses. Usage:

    python benchmarks/run.py                          # N = 10, 100, 1000, 5000
    python benchmarks/run.py --sizes 10,100 --cycles 5 --scrapes 50 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import resource
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PROTOCOL = "@@BENCH "  # prefix of the children's report lines on stdout

DEFAULT_SIZES = (10, 100, 1000, 5000)
DEFAULT_CYCLES = 5
DEFAULT_SCRAPES = 50
DEFAULT_CONCURRENCY = 16  # RunPodSettings.max_concurrency's default
SWEEP_SIZE = 1000
SWEEP_CONCURRENCY = (4, 8, 16, 32, 64)
# The faithful exporter pattern pays a new client + SSL context per request (~45 ms of CPU):
# above this many endpoints it is timed on this many of them and scaled to N (it is a
# sequential loop: its cost is linear in N by construction). Reported as extrapolated.
NAIVE_FRESH_MAX = 200
INTERVAL_S = 30.0  # the daemon's default interval, the one the targets are stated for
PREFILL_PROBED = 10  # history prefill: cycles through the real probe path (then copies)

TARGETS = {
    "n": 1000,
    "cycle_wall_s": 3.0,
    "cycle_cpu_s": 0.5,
    "peak_rss_mb": 150.0,
    "scrape_p99_ms": 50.0,
    "cpu_vs_floor": 1.5,
    "wall_vs_naive": 10.0,
}


# ------------------------------------------------------------------------------ helpers


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _peak_rss_mb() -> float:
    """This process's own peak RSS: /proc's VmHWM. Not ru_maxrss, which Linux carries over
    exec from the parent: a child started once the parent had grown to 206 MB reported
    206.6 MB whatever it held (seen at N = 10 and N = 1000 alike)."""
    hwm = _status_mb("VmHWM:")
    return hwm if not math.isnan(hwm) else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float:
    return _status_mb("VmRSS:")


def _status_mb(field: str) -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return float("nan")


def _wchar() -> int | None:
    """Bytes this process passed to write()/pwrite() so far (Linux /proc/self/io)."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _proc_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) of another process, from /proc/PID/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): with 50 samples p99 is the largest."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
    }


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float]:
    """Least-squares y = slope * x + intercept, and R²."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx if sxx else float("nan")
    intercept = my - slope * mx
    ss_res = sum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, ys, strict=True))
    ss_tot = sum((y - my) ** 2 for y in ys)
    r2 = 1 - ss_res / ss_tot if ss_tot else float("nan")
    return {"slope": slope, "intercept": intercept, "r2": r2, "points": n}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def report(payload: dict[str, Any]) -> None:
    """A child's report line on stdout."""
    sys.stdout.write(PROTOCOL + json.dumps(payload) + "\n")
    sys.stdout.flush()


# ------------------------------------------------------------------------------ scenario

# two tiers each: a single tier on a volume-pinned endpoint raises single_gpu_tier
GPU_POOLS = (
    "AMPERE_48,ADA_48_PRO", "ADA_24,AMPERE_24", "ADA_80_PRO,AMPERE_80", "AMPERE_16,AMPERE_24"
)
BUSY_EVERY = 10  # by default every 10th endpoint has jobs queued and one in progress
THROTTLED_EVERY = 100  # every 100th has its workers throttled (no_gpu_capacity fires)


def endpoint_id(i: int) -> str:
    return f"bench{i:09d}"  # 14 characters, like RunPod's ids


# The v2 quota of every scenario here: 60 calls a minute (the schema example's minute, on
# the simulator's clock), no hour or day window.
V2_QUOTA = {"minute": 60, "hour": None, "day": None}


def trouble_indexes(n: int, trouble: int) -> list[int]:
    """Where the `trouble` endpoints in trouble sit: spread over the account, off the busy
    (every 10th) ones where there is room; all of them at N <= trouble."""
    if trouble <= 0:
        return []
    stride = max(1, n // trouble)
    off = 5 if stride > 5 else 0
    return [k * stride + off for k in range(min(trouble, n))]


def crash_worker(eid: str, j: int) -> dict[str, Any]:
    """The j-th worker of a crash-looping endpoint: a new id every 2 cycles (60 s)."""
    return {"id": f"{eid[-6:]}w{j:03d}", "status": "RUNNING", "started_s": 60 * j}


def scenario_dict(
    n: int, busy_every: int = BUSY_EVERY, *, trouble: int = 0, crashing: int = 0,
    cycles: int = 0, logs_hold_s: float = 0,
) -> dict[str, Any]:
    """A stable account with `n` healthy endpoints, every `busy_every`th with jobs in
    flight, 1% throttled (with jobs queued).

    With `trouble` > 0 (the v2 cycle): no throttled ones, but `trouble` endpoints in
    trouble, the first `crashing` of them crash-looping (a job queued that never starts, a
    worker `running` in every /health, a new worker id in its v2 records every 60 s, a
    traceback in its log), the rest with an UNHEALTHY worker; `cycles` of steps.
    `logs_hold_s`: real seconds a worker-log stream stays open after its backlog (RunPod
    keeps it open to tail; 0 ends it there)."""
    endpoints = []
    bad = trouble_indexes(n, trouble)
    crash = set(bad[:crashing])
    for i in range(n):
        eid = endpoint_id(i)
        volume = i % 4 == 0
        item: dict[str, Any] = {
            "id": eid,
            "name": f"bench-{i}",
            "gpuIds": GPU_POOLS[i % len(GPU_POOLS)],
            "workersMin": 0,
            "workersMax": 3,
            "workersStandby": 0,
            "idleTimeout": 5,
            "scalerType": "QUEUE_DELAY",
            "scalerValue": 4,
            "templateId": f"benchtpl{i:06d}",
            "version": 1,
            "template": {
                "id": f"benchtpl{i:06d}",
                "name": f"worker-{i}",
                "imageName": "example/worker:1.4",
                "dockerArgs": "",
                "containerDiskInGb": 60,
                "env": [
                    {"key": "HF_HOME", "value": "/runpod-volume/hf" if volume else "/cache/hf"},
                    {"key": "MODEL_NAME", "value": "example/model-7b"},
                ],
            },
            "health": {
                "jobs": {"completed": 1000 + i, "failed": 2, "inProgress": 0, "inQueue": 0,
                         "retried": 0},
                "workers": {"idle": 1, "ready": 1},
            },
        }
        if volume:
            item["networkVolumeId"] = "benchvol1"
        if i in crash:
            item["health"] = {
                "jobs": {"completed": 300 + i, "failed": 0, "inProgress": 0, "inQueue": 1},
                "workers": {"running": 1},
            }
            item["jobs"] = [{"id": f"{eid}-q0", "status": "IN_QUEUE"}]
            item["v2"] = {"workers": [crash_worker(eid, 0)], "logs": {"*": [
                {"t": 0, "source": "system", "line": "start container"},
                "Traceback (most recent call last):",
                '  File "/handler.py", line 3, in <module>',
                "ModuleNotFoundError: No module named 'vllm'",
            ]}}
        elif i in bad:
            item["health"] = {
                "jobs": {"completed": 300 + i, "failed": 0, "inProgress": 0, "inQueue": 0},
                "workers": {"unhealthy": 1},
            }
        elif trouble == 0 and i % THROTTLED_EVERY == THROTTLED_EVERY - 1:
            item["health"] = {
                "jobs": {"completed": 50, "failed": 0, "inProgress": 0, "inQueue": 3},
                "workers": {"throttled": 1},
            }
            item["jobs"] = [{"id": f"{eid}-q{k}", "status": "IN_QUEUE"} for k in range(3)]
        elif i % busy_every == 0:
            item["health"] = {
                "jobs": {"completed": 1000 + i, "failed": 2, "inProgress": 1, "inQueue": 2},
                "workers": {"running": 1, "idle": 0, "ready": 0},
            }
            item["jobs"] = [
                {"id": f"{eid}-q0", "status": "IN_QUEUE"},
                {"id": f"{eid}-q1", "status": "IN_QUEUE"},
                {"id": f"{eid}-p0", "status": "IN_PROGRESS", "delayTime": 812, "workerId": "w1"},
                {"id": f"{eid}-c0", "status": "COMPLETED", "delayTime": 640,
                 "executionTime": 7744, "workerId": "w1"},
                {"id": f"{eid}-c1", "status": "COMPLETED", "delayTime": 512,
                 "executionTime": 6120, "workerId": "w1"},
            ]
        endpoints.append(item)
    crash_ids = [endpoint_id(i) for i in sorted(crash)]
    steps = [{"cycles": 2, "endpoints": {eid: {"v2": {"workers": [crash_worker(eid, j)]}}
                                          for eid in crash_ids}}
             for j in range(1, (cycles + 1) // 2)] if crash_ids else []
    return {
        "name": f"bench-{n}",
        "description": f"benchmarks/run.py: {n} endpoints, stable state",
        "interval_s": INTERVAL_S,
        "v2": {"quota": V2_QUOTA, "logs_hold_s": logs_hold_s},
        **({"steps": [{"cycles": 2}, *steps]} if steps else {}),
        "account": {"clientBalance": 5000.0, "currentSpendPerHr": 1.2, "spendLimit": 400},
        "networkVolumes": [
            {"id": "benchvol1", "name": "models", "size": 100, "dataCenterId": "US-TX-3"}
        ],
        "endpoints": endpoints,
    }


def write_scenario(n: int, directory: Path, busy_every: int = BUSY_EVERY, *,
                   trouble: int = 0, crashing: int = 0, cycles: int = 0,
                   logs_hold_s: float = 0) -> Path:
    import yaml

    from monitor.simulator.scenario import Scenario

    data = scenario_dict(n, busy_every, trouble=trouble, crashing=crashing, cycles=cycles,
                         logs_hold_s=logs_hold_s)
    Scenario.from_dict(data)  # fail here, not in the simulator, on a bad scenario
    tag = f"-trouble{trouble}-crash{crashing}" if trouble else ""
    path = directory / f"bench-{n}{tag}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, width=120), encoding="utf-8")
    return path


def busy_ids(n: int, busy_every: int = BUSY_EVERY, **trouble: int) -> list[str]:
    """The endpoints whose /health shows jobs in flight: the ones whose /requests a steady
    cycle asks (the floors ask the same)."""
    return [e["id"] for e in scenario_dict(n, busy_every, **trouble)["endpoints"]
            if e["health"]["jobs"].get("inQueue") or e["health"]["jobs"].get("inProgress")]


# ------------------------------------------------------------------------------ simulator


class Simulator:
    """The simulator in its own process (`run.py --child simulator`), on a manual clock the
    benchmark steps: cycle k is simulated time (k - 1) * 30 s, so the v2 quota, which the
    simulator counts on its simulated clock, sees 30 s between cycles as the daemon does.
    A control port beside it sets the cycle and reads the simulator's own request counts."""

    def __init__(self, scenario: Path, api_key: str, workdir: Path) -> None:
        self.scenario = scenario
        self.api_key = api_key
        self.log = workdir / f"{scenario.stem}.simulator.log"
        self.child: Child | None = None
        self.url = ""
        self.control = ""
        self._next = 1

    def allocate(self, cycles: int) -> int:
        """The first of `cycles` simulator cycles no run has used: each run spends the v2
        quota in windows of its own. Odd: cycle k starts at (k - 1) * 30 s, a minute's start."""
        start = self._next
        self._next += cycles + 2 + (cycles % 2)
        return start

    def start(self, timeout_s: float = 120.0) -> None:
        self.child = Child("simulator", {"scenario": str(self.scenario),
                                         "api_key": self.api_key}, self.log, 10**9)
        self.child.deadline = time.monotonic() + timeout_s
        serving = self.child.read()
        self.child.deadline = math.inf
        self.url, self.control = serving["url"], serving["control"]

    def set_cycle(self, k: int) -> None:
        sim_control(self.control, "cycle", k)

    def counts(self) -> dict[str, Any]:
        return sim_control(self.control, "counts")

    def cpu_s(self) -> float | None:
        return None if self.child is None else _proc_cpu(self.child.proc.pid)

    def stop(self) -> None:
        if self.child is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self.child.send("stop")
        self.child.finish()
        self.child = None

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def sim_control(control: str, what: str, k: int | None = None) -> dict[str, Any]:
    """One request to the simulator child's control port: `cycle` (set it to `k`) or
    `counts` (its request counts, v2 quota windows and 429s so far)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(control)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        path = f"/{what}" + (f"?k={k}" if k is not None else "")
        conn.request("POST" if k is not None else "GET", path)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"simulator control {path}: {resp.status} {body[:200]!r}")
        return dict(json.loads(body))
    finally:
        conn.close()


def count_kinds(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """Requests the simulator received between two `counts` readings, by kind: `graphql`,
    the data plane's operations (`health`, `requests`, `status`, ...) and `v2_<route>`."""
    old = {(a, b): n for a, b, n in before["requests"]}
    out: dict[str, int] = {}
    for a, b, n in after["requests"]:
        d = n - old.get((a, b), 0)
        if d:
            kind = "graphql" if a == "graphql" else f"v2_{b}" if a == "v2" else b
            out[kind] = out.get(kind, 0) + d
    return dict(sorted(out.items()))


async def simulator_child(spec: dict[str, Any]) -> None:
    """`SimulatorServer` on its manual clock, and a control app on another port."""
    from aiohttp import web

    from monitor.simulator import SimulatorServer, load_scenario

    server = SimulatorServer(load_scenario(spec["scenario"]), spec["api_key"])
    url = await server.start()

    async def cycle(request: web.Request) -> web.Response:
        server.set_cycle(int(request.query["k"]))
        return web.json_response({"cycle": server.cycle})

    async def counts(request: web.Request) -> web.Response:
        return web.json_response({
            "requests": [[a, b, n] for (a, b), n in server.request_counts.items()],
            "v2_used": [[w, i, n] for (w, i), n in server.v2.used.items()],
            "v2_throttled": server.v2.throttled,
            "cycle": server.cycle,
        })

    app = web.Application()
    app.router.add_post("/cycle", cycle)
    app.router.add_get("/counts", counts)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    report({"event": "serving", "url": url,
            "control": f"http://127.0.0.1:{runner.addresses[0][1]}"})
    await asyncio.to_thread(sys.stdin.readline)  # "stop", or the parent went away
    await runner.cleanup()
    await server.stop()


# ------------------------------------------------------------------------------ children


class Child:
    """A child process of this script: `run.py --child KIND --spec JSON`."""

    def __init__(self, kind: str, spec: dict[str, Any], log: Path, timeout_s: float) -> None:
        self.kind = kind
        self.deadline = time.monotonic() + timeout_s
        self.log = log
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--child", kind,
                 "--spec", json.dumps(spec)],
                cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
            )

    def read(self) -> dict[str, Any]:
        """The next report line, or RuntimeError when the child ends or runs out of time."""
        assert self.proc.stdout is not None
        while True:
            # The children print only protocol lines; a line at a time keeps this simple.
            if time.monotonic() > self.deadline:
                self.kill()
                raise RuntimeError(f"{self.kind} child timed out; log: {self.log}")
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait(10)
                tail = self.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{self.kind} child exited {self.proc.returncode}: {tail}")
            text = line.decode(errors="replace")
            if text.startswith(PROTOCOL):
                return dict(json.loads(text[len(PROTOCOL):]))

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()

    def finish(self) -> None:
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def run_child(kind: str, spec: dict[str, Any], log: Path, timeout_s: float) -> dict[str, Any]:
    child = Child(kind, spec, log, timeout_s)
    try:
        out = child.read()
    finally:
        child.finish()
    return out


# -- monitor child ----------------------------------------------------------------------


class PhaseClock:
    """Wall and CPU seconds spent in named phases of one cycle."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def reset(self) -> None:
        self.wall.clear()
        self.cpu.clear()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        w, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - w
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - c

    def wrap_async(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            with self.phase(name):
                return await fn(*args, **kwargs)

        return wrapped

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with self.phase(name):
                return fn(*args, **kwargs)

        return wrapped


def _kind(url: str) -> str:
    """The request kind of a URL: graphql, health, requests, ..."""
    path = url.split("?", 1)[0]
    return "graphql" if path.endswith("/graphql") else path.rsplit("/", 1)[-1]


class Recorder:
    """Wraps the monitor client's sender: counts its requests by kind, keeps every request
    of the cycle (`sent`: method, URL, payload; what the floors replay) and, while `keep` is
    set, the raw body and status of every answer, by URL."""

    def __init__(self, client: Any) -> None:
        self.counts: dict[str, int] = {}
        self.bodies: dict[str, tuple[bytes, int]] = {}
        self.sent: list[tuple[str, str, object]] = []
        self.keep = False
        sender = client._sender
        real_send = sender.send
        real_stream = sender.stream

        async def send(method: str, url: str, payload: object) -> Any:
            kind = _kind(url)
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.sent.append((method, url, payload))
            answer = await real_send(method, url, payload)
            if self.keep:
                self.bodies[url] = (answer.content, answer.status)
            return answer

        async def stream(url: str, feed: Any, max_s: float) -> Any:
            self.sent.append(("STREAM", url, None))
            return await real_stream(url, feed, max_s)

        sender.send = send
        sender.stream = stream

    def clear(self) -> None:
        self.counts.clear()
        self.sent = []


class GcClock:
    """Time spent in the cyclic garbage collector, by generation (gc.callbacks)."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            gen = info["generation"]
            self.seconds[gen] += time.perf_counter() - self._started
            self.count[gen] += 1

    def reset(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]


async def _prefill_history(
    daemon: Any, recorded: dict[str, tuple[bytes, int]], count: int, t_first: float,
    persist: Callable[[Any], None], step: Callable[[int], None], probed: int = PREFILL_PROBED,
) -> float:
    """Fill the history with `count` more observations, as `count` cycles would; seconds.
    `step(k)` moves the simulator's clock to the k-th (0-based) of them before it is probed.

    The first `probed` go through the real probe path on recorded answers: the prober's
    client answers from `recorded` (the warm-up cycle's raw bodies, JSON-decoded afresh
    each time, as over HTTP), and the probe report goes into the history as in a cycle.
    The rest of the window repeats those observations with a new endpoint dict each, which
    is what the probe path keeps for answers that did not change (it shares equal samples
    with the previous cycle): running all 240 cycles of a 2-hour window through the parser
    would take minutes at N = 5000. Each goes into the state database (`persist`), so a
    restarted daemon finds the full window; rules and metrics are skipped.
    """
    import dataclasses

    from monitor.runpod import parse

    client = daemon.client
    history = daemon.pipeline.history

    async def answer(
        method: str, url: str, probe: str, endpoint_id: str | None, payload: object
    ) -> tuple[object, int, float]:
        # a completion the sampler reads after the warm-up (its per-cycle cap leaves some
        # for the next cycles) was never recorded: RunPod's answer for a job it forgot
        raw, status = recorded.get(url, (b'{"error": "request does not exist"}', 404))
        return parse.decode_json(raw), status, 0.0

    started = time.perf_counter()
    client._call = answer
    # the client-side rate limiter (if any) paces real calls; these are not sent
    limits = getattr(client, "_limits", None)
    if limits is not None:
        client._limits = {}
    try:
        real = min(count, probed)
        for k in range(real):
            daemon.cycle_no += 1
            step(k)  # v2 calls are sent for real (only `_call` answers from `recorded`)
            report = await daemon.pipeline.prober.probe(daemon.cycle_no, t_first + k * INTERVAL_S)
            history.append(report.observation)
            persist(report.observation)
        latest = history.latest
        for k in range(real, count):
            daemon.cycle_no += 1
            obs = dataclasses.replace(
                latest, cycle=daemon.cycle_no, t=t_first + k * INTERVAL_S,
                endpoints=dict(latest.endpoints),
            )
            history.append(obs)
            persist(obs)
    finally:
        del client._call  # back to the class's method
        if limits is not None:
            client._limits = limits
    return time.perf_counter() - started


def _sizes(directory: Path, prefix: str) -> int:
    """Bytes of the files named `prefix*` (the database, its WAL and shared memory)."""
    return sum(p.stat().st_size for p in directory.glob(prefix + "*"))


def _write(path: str, text: str) -> None:
    Path(path).write_text(text, encoding="utf-8")


def _read(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def _unique_bytes(obs: Any, previous: Any) -> int:
    """Bytes reachable from `obs` and not from `previous` (what one more observation costs).

    Walks gc referents, each object once; classes and modules are not counted.
    """
    import gc

    def walk(root: Any, skip: set[int], count: bool) -> tuple[set[int], int]:
        seen: set[int] = set()
        stack, total = [root], 0
        while stack:
            obj = stack.pop()
            key = id(obj)
            if key in seen or key in skip or isinstance(obj, type):
                continue
            seen.add(key)
            if count:
                total += sys.getsizeof(obj)
            stack.extend(gc.get_referents(obj))
        return seen, total

    shared, _ = walk(previous, set(), False)
    return walk(obs, shared, True)[1]


def _monitor_settings(spec: dict[str, Any]) -> Any:
    """The daemon's settings for a monitor or restart child: the simulator's URLs, the
    run's concurrency, a state database in the work directory."""
    from monitor.config import load_settings

    base = spec["url"]
    # each run its own database: a v2-cycle run must not restore the size run's history
    name = f"monitor-{spec.get('tag', '')}{spec['n']}-{spec['concurrency']}.db"
    db = Path(spec["workdir"]) / name
    return load_settings(
        None,
        env={"RUNPOD_API_KEY": spec["api_key"]},
        overrides={
            "interval_s": INTERVAL_S,
            "runpod": {
                "control_plane": spec.get("control_plane", "auto"),
                "graphql_url": f"{base}/graphql",
                "rest_url": f"{base}/v2",
                "max_concurrency": spec["concurrency"],
                "timeout_s": 60,
            },
            "state": {"path": str(db)},
            "http": {"listen": "127.0.0.1:0"},
        },
    )


async def monitor_child(spec: dict[str, Any]) -> None:
    import gc
    from collections import Counter

    from aiohttp import web

    from monitor import logs
    from monitor.commands.daemon import Daemon
    from monitor.http.web import build_app
    from monitor.metrics.http import GzipCache

    logs.configure("info", "json", [spec["api_key"]])  # as `runpod-monitor run` does
    settings = _monitor_settings(spec)
    window = int(settings.state.retention_s // INTERVAL_S) if spec["history"] == "full" else 0
    # Cycle times: the warm-up, then `window - 1` prefilled cycles, then the measured ones,
    # INTERVAL_S apart and ending now; the daemon's clock is this simulated one.
    clock = {"t": time.time() - (window + spec["cycles"]) * INTERVAL_S}
    daemon = Daemon(settings, clock=lambda: clock["t"])
    recorder = Recorder(daemon.client)
    counts = recorder.counts

    phases = PhaseClock()
    pipeline = daemon.pipeline
    pipeline.prober.probe = phases.wrap_async("probe", pipeline.prober.probe)  # type: ignore[method-assign]
    import monitor.pipeline.cycle as cycle_module

    cycle_module.evaluate = phases.wrap("rules", cycle_module.evaluate)  # type: ignore[assignment]
    daemon.metrics.observe_cycle = phases.wrap("metrics", daemon.metrics.observe_cycle)  # type: ignore[method-assign]
    real_persist = pipeline.persist
    persist_bytes: list[int] = []

    def persist(obs: Any, *episodes: Any) -> None:
        before = _wchar()
        with phases.phase("persist"):
            real_persist(obs, *episodes)
        after = _wchar()
        if before is not None and after is not None:
            persist_bytes.append(after - before)

    pipeline.persist = persist  # type: ignore[method-assign]
    gc_clock = GcClock()
    gc.callbacks.append(gc_clock)
    profiler = None
    if spec.get("profile"):
        from pyinstrument import Profiler  # a dev tool: pip install pyinstrument

        profiler = Profiler(async_mode="enabled")

    cycles: list[dict[str, Any]] = []
    sent: list[list[tuple[str, str, object]]] = []  # each measured cycle's requests
    control_url = spec["control"]
    sim_k = {"k": int(spec["sim_start"])}  # the simulator's cycle: (k - 1) * 30 s
    control = pipeline.prober.control  # None in graphql mode
    trouble = spec.get("trouble_ids") or []

    def step_sim(k: int) -> None:
        sim_k["k"] = k
        sim_control(control_url, "cycle", k)

    async def tick(measured: bool) -> None:
        recorder.clear()
        phases.reset()
        gc_clock.reset()
        step_sim(sim_k["k"])
        sim_before = sim_control(control_url, "counts") if measured else None
        if measured and profiler is not None:
            profiler.start()
        w, c = time.perf_counter(), _cpu_self()
        await daemon.tick()
        wall, cpu = time.perf_counter() - w, _cpu_self() - c
        if measured and profiler is not None:
            profiler.stop()
        result = daemon.last_result
        if result is None or result.observation.cycle != daemon.cycle_no:
            raise RuntimeError(f"cycle {daemon.cycle_no} failed; see the child's log")
        if measured:
            assert sim_before is not None
            sim_after = sim_control(control_url, "counts")
            obs = result.observation
            v2: dict[str, Any] | None = None
            if control is not None:
                seen = control.planner.workers_seen
                plan = control.last_plan
                v2 = {
                    "allowance": control.budget.last_allowance,
                    "planned": plan.calls if plan is not None else 0,
                    "unserved": list(plan.unserved) if plan is not None else [],
                    "throttled_seen": control.budget.throttled,
                    "trouble_workers_now": [e for e in trouble if seen.get(e) == obs.t],
                }
            sent.append(list(recorder.sent))
            if spec.get("paced"):
                # the parent has the floor replay this cycle now, then lets the next go:
                # both measured in the same stretch of the machine's speed
                _write(f"{spec['calls_file']}.{len(sent) - 1}", json.dumps(sent[-1]))
                report({"event": "cycle", "index": len(sent) - 1})
                await asyncio.to_thread(sys.stdin.readline)
            cycles.append({
                "sim_cycle": sim_k["k"],
                "sim_requests": count_kinds(sim_before, sim_after),
                "sim_throttled": sim_after["v2_throttled"] - sim_before["v2_throttled"],
                "v2": v2,
                "crash_loop": sorted(d.endpoint_id or "" for d in result.active
                                     if d.code == "crash_loop"),
                "wall_s": wall,
                "cpu_s": cpu,
                "phases_wall_s": dict(phases.wall),
                "phases_cpu_s": dict(phases.cpu),
                "requests": dict(counts),
                "endpoints": len(result.observation.endpoints),
                "failures": sum(1 for call in result.calls if call.outcome != "ok"),
                "active": dict(Counter(d.code for d in result.active)),
                "gc_s": list(gc_clock.seconds),
                "gc_collections": list(gc_clock.count),
                "rss_mb": _rss_mb(),
            })
        clock["t"] += INTERVAL_S
        sim_k["k"] += 1

    recorder.keep = True
    for _ in range(spec["warmup"]):
        await tick(False)
    recorder.keep = False
    rss_no_history = _rss_mb()
    prefill_s = 0.0
    if window > 1:
        first = sim_k["k"]
        prefill_s = await _prefill_history(daemon, recorder.bodies, window - 1, clock["t"],
                                           real_persist, lambda k: step_sim(first + k))
        clock["t"] += (window - 1) * INTERVAL_S
        sim_k["k"] = first + window - 1
    gc.collect()
    if spec.get("gc_freeze"):
        gc.freeze()  # an experiment: what the daemon would gain from freezing after start
    rss_history = _rss_mb()
    persist_bytes.clear()
    for _ in range(spec["cycles"]):
        await tick(True)
    history = daemon.pipeline.history
    history_len = len(history)
    observations = history.view().observations
    per_observation = (
        _unique_bytes(observations[-1], observations[-2]) if len(observations) >= 2 else None
    )
    db = Path(settings.state.path)
    db_bytes = _sizes(db.parent, db.name)
    if profiler is not None:
        _write(spec["profile"], profiler.output_text(unicode=False, color=False, show_all=False))

    # The scrape: the daemon's own aiohttp app over real HTTP, scraped by the parent.
    render_s: list[float] = []
    real_body = daemon.metrics_body

    def metrics_body() -> tuple[bytes, str]:
        started = time.perf_counter()
        out = real_body()
        render_s.append(time.perf_counter() - started)
        return out

    daemon.metrics_body = metrics_body  # type: ignore[method-assign]
    # the CPU each gzip of the exposition costs (thread CPU: what the machine's load does
    # not change); only a changed text is compressed (a scrape of the same text reuses it)
    gzip_cpu_s: list[float] = []
    real_compress = GzipCache.compress

    def compress(cache: GzipCache, body: bytes) -> bytes:
        started = time.thread_time()
        out = real_compress(cache, body)
        gzip_cpu_s.append(time.thread_time() - started)
        return out

    GzipCache.compress = compress  # type: ignore[method-assign]
    if spec.get("calls_file"):
        _write(spec["calls_file"], json.dumps(sent))
    runner = web.AppRunner(build_app(daemon), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    cpu_before_scrapes = _cpu_self()
    report({"event": "serving", "port": port})
    last = daemon.last_result
    while True:  # the parent scrapes; "refresh" is what a cycle does to the metrics
        command = (await asyncio.to_thread(sys.stdin.readline)).strip()
        if command != "refresh":
            break
        daemon.metrics.observe_cycle(last.facts)
        report({"event": "refreshed"})
    scrape_cpu = _cpu_self() - cpu_before_scrapes
    await runner.cleanup()
    await daemon.client.aclose()
    daemon.store.close()
    report({
        "event": "result",
        "cycles": cycles,
        "history_observations": history_len,
        "bytes_per_observation": per_observation,
        "prefill_s": prefill_s,
        "rss_mb_after_warmup": rss_no_history,
        "rss_mb_with_history": rss_history,
        "peak_rss_mb": _peak_rss_mb(),
        "persist_bytes": persist_bytes,
        "db_bytes_after": db_bytes,
        "scrape_server_cpu_s": scrape_cpu,
        "render_s": render_s,
        "gzip_cpu_s": gzip_cpu_s,
    })


# -- floor child: bare httpx.AsyncClient -------------------------------------------------


async def floor_child(spec: dict[str, Any]) -> None:
    """The monitor's measured cycles replayed request for request (`calls_file`: method,
    URL and payload of each, as its sender sent them), with the same concurrency bound and
    keep-alive, and nothing else: bodies are read, not parsed. The requests the monitor
    sent before its first /health (the endpoint list's pages, GraphQL) go one after the
    other first, then the rest at once (the monitor sends some of those in turn: this is
    the floor). `client`: httpx (its own pool, as `httpx.AsyncClient()` comes) or aiohttp
    (the pool the monitor's client uses)."""
    conc = spec["concurrency"]
    recorded: list[list[list[Any]]] = (
        [] if spec.get("paced") else json.loads(_read(spec["calls_file"])))
    sim_cycles: list[int] = spec["sim_cycles"]
    sem = asyncio.Semaphore(conc)
    headers = {"Authorization": f"Bearer {spec['api_key']}", "Accept": "application/json"}

    if spec["client"] == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(
            headers=headers, connector=aiohttp.TCPConnector(limit=conc)
        )

        async def call(method: str, url: str, payload: object) -> int:
            async with sem:
                if method == "STREAM":
                    method = "GET"
                async with session.request(method, url, json=payload) as resp:
                    await resp.read()
                    return resp.status

        close = session.close
    else:
        import httpx

        client = httpx.AsyncClient(
            headers=headers, timeout=60,
            limits=httpx.Limits(max_connections=conc, max_keepalive_connections=conc),
        )

        async def call(method: str, url: str, payload: object) -> int:
            async with sem:
                if method == "STREAM":
                    method = "GET"
                r = await client.request(method, url, json=payload)
                return r.status_code

        close = client.aclose

    async def cycle(sent: list[list[Any]]) -> tuple[float, float, int]:
        first = next((i for i, (_, url, _) in enumerate(sent) if url.endswith("/health")),
                     len(sent))
        w, c = time.perf_counter(), _cpu_self()
        statuses = [await call(m, u, p) for m, u, p in sent[:first]]
        statuses += await asyncio.gather(*(call(m, u, p) for m, u, p in sent[first:]))
        return time.perf_counter() - w, _cpu_self() - c, sum(1 for x in statuses if x != 200)

    async def replay(sent: list[list[Any]], k: int) -> dict[str, Any]:
        sim_control(spec["control"], "cycle", k)
        before = sim_control(spec["control"], "counts")
        wall, cpu, bad = await cycle(sent)
        after = sim_control(spec["control"], "counts")
        return {"wall_s": wall, "cpu_s": cpu, "failures": bad,
                "requests": count_kinds(before, after),
                "throttled": after["v2_throttled"] - before["v2_throttled"]}

    async def warm_up(sent: list[list[Any]]) -> None:
        # open the pool (data-plane GETs only: they spend no v2 quota)
        warm = [x for x in sent if x[1].endswith("/health")][: 2 * conc]
        sim_control(spec["control"], "cycle", sim_cycles[0] - 2)
        await asyncio.gather(*(call(m, u, p) for m, u, p in warm))

    cycles = []
    if spec.get("paced"):  # one cycle at a time, right after the monitor's (its calls file)
        for i, k in enumerate(sim_cycles):
            path = (await asyncio.to_thread(sys.stdin.readline)).strip()
            sent = json.loads(_read(path))
            if i == 0:
                await warm_up(sent)
            cycles.append(await replay(sent, k))
            report({"event": "cycle", "index": i})
    else:
        await warm_up(recorded[0])
        for sent, k in zip(recorded, sim_cycles, strict=True):
            cycles.append(await replay(sent, k))
    await close()
    report({"event": "result", "cycles": cycles, "peak_rss_mb": _peak_rss_mb()})


# -- naive child: sequential requests into a textfile ------------------------------------

_PROM_WORKERS = ("idle", "initializing", "ready", "running", "throttled", "unhealthy")
_PROM_JOBS = ("completed", "failed", "inProgress", "inQueue", "retried")


def naive_child(spec: dict[str, Any]) -> None:
    """What a cron'd textfile exporter does, looped: GET /health per endpoint, in order."""
    import httpx

    base, ids, fresh = spec["url"], spec["ids"], spec["mode"] == "fresh"
    headers = {"Authorization": f"Bearer {spec['api_key']}"}
    out = Path(spec["workdir"]) / f"naive-{spec['mode']}-{spec['n']}.prom"
    tmp = Path(f"{out}.$$")
    shared = None if fresh else httpx.Client(headers=headers, timeout=60)

    def cycle() -> tuple[float, float, int]:
        w, c = time.perf_counter(), _cpu_self()
        bad = 0
        tmp.unlink(missing_ok=True)
        for eid in ids:
            url = f"{base}/v2/{eid}/health"
            # httpx.get: a new client (SSL context, pool, connection) per call, as the
            # exporter does; or the shared keep-alive client
            r = httpx.get(url, headers=headers, timeout=60) if fresh else shared.get(url)  # type: ignore[union-attr]
            if r.status_code != 200:
                bad += 1
                continue
            data = r.json()
            labels = f'{{endpoint="{eid}"'
            with tmp.open("a") as f:
                for state in _PROM_WORKERS:
                    f.write(f'runpod_serverless_workers{labels},state="{state}"}} '
                            f"{data['workers'].get(state, 0)}\n")
                for state in _PROM_JOBS:
                    f.write(f'runpod_serverless_jobs{labels},state="{state}"}} '
                            f"{data['jobs'].get(state, 0)}\n")
        os.replace(tmp, out)
        return time.perf_counter() - w, _cpu_self() - c, bad

    for _ in range(spec["warmup"]):
        cycle()
    cycles = []
    for _ in range(spec["cycles"]):
        wall, cpu, bad = cycle()
        cycles.append({"wall_s": wall, "cpu_s": cpu, "failures": bad,
                       "requests": {"health": len(ids)}})
    if shared is not None:
        shared.close()
    report({"event": "result", "cycles": cycles, "peak_rss_mb": _peak_rss_mb(),
            "textfile_bytes": out.stat().st_size})


async def restart_child(spec: dict[str, Any]) -> None:
    """A daemon started on the monitor child's database (its full window): what restoring
    costs, and its memory through one cycle."""
    import gc

    from monitor import logs
    from monitor.commands.daemon import Daemon

    logs.configure("info", "json", [spec["api_key"]])
    rss_start = _rss_mb()
    w, c = time.perf_counter(), _cpu_self()
    daemon = Daemon(_monitor_settings(spec))  # restores the history from the database
    restore_wall, restore_cpu = time.perf_counter() - w, _cpu_self() - c
    gc.collect()
    restored = len(daemon.pipeline.history)
    rss_restored = _rss_mb()
    await daemon.tick()
    if daemon.last_result is None:
        raise RuntimeError("the cycle after the restart failed; see the child's log")
    report({
        "event": "result",
        "observations_restored": restored,
        "restore_wall_s": restore_wall,
        "restore_cpu_s": restore_cpu,
        "rss_mb_at_start": rss_start,
        "rss_mb_restored": rss_restored,
        "rss_mb_after_cycle": _rss_mb(),
        "peak_rss_mb": _peak_rss_mb(),
    })
    await daemon.client.aclose()
    daemon.store.close()


def child_main(kind: str, spec: dict[str, Any]) -> int:
    if kind == "simulator":
        asyncio.run(simulator_child(spec))
    elif kind == "monitor":
        asyncio.run(monitor_child(spec))
    elif kind == "restart":
        asyncio.run(restart_child(spec))
    elif kind == "floor":
        asyncio.run(floor_child(spec))
    elif kind == "naive":
        naive_child(spec)
    else:
        raise SystemExit(f"unknown child kind {kind!r}")
    return 0


# ------------------------------------------------------------------------------ parent


def scrape(port: int, count: int, child: Child) -> dict[str, Any]:
    """GETs of the daemon's /metrics over one keep-alive connection, three ways.

    cold: the first scrape after start (nothing rendered yet); steady: `count` scrapes
    with no cycle between them; after_cycle: `count` scrapes each right after the metrics
    took a cycle's result again (a new snapshot: what the first scrape after each cycle
    sees, half the scrapes at a 15 s scrape interval and a 30 s cycle). Steady and
    after-cycle are measured twice: plain, and asking `Accept-Encoding: gzip` as Prometheus
    does (the gzip bytes are timed as they arrive, not inflated: that is Prometheus's cost;
    the body is checked once to inflate to the plain text). The scraper is http.client,
    which reads a body in one C loop: what is timed is the daemon, not the scraper's
    parsing (Prometheus reads and parses in Go).
    """
    import gzip
    import http.client

    def timed(conn: http.client.HTTPConnection, gz: bool = False) -> tuple[float, bytes]:
        started = time.perf_counter()
        conn.request("GET", "/metrics",
                     headers={"Accept-Encoding": "gzip" if gz else "identity"})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"/metrics answered {resp.status}")
        if (resp.getheader("Content-Encoding") == "gzip") != gz:
            raise RuntimeError(f"/metrics: Content-Encoding {resp.getheader('Content-Encoding')}"
                               f" when asked {'gzip' if gz else 'identity'}")
        return time.perf_counter() - started, body

    def after_cycle(gz: bool) -> list[float]:
        out = []
        for _ in range(count):
            child.send("refresh")
            child.read()
            out.append(timed(conn, gz)[0])
        return out

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        cold, first = timed(conn)
        size = len(first)
        series = sum(1 for line in first.splitlines() if line and line[:1] != b"#")
        steady = [timed(conn)[0] for _ in range(count)]
        after = after_cycle(False)
        _, packed = timed(conn, True)
        if gzip.decompress(packed).count(b"\n") != first.count(b"\n"):
            raise RuntimeError("/metrics: the gzip body does not inflate to the exposition")
        gz_steady = [timed(conn, True)[0] for _ in range(count)]
        gz_after = after_cycle(True)
    finally:
        conn.close()
    return {
        "count": count,
        "cold_ms": cold * 1000,
        "median_ms": statistics.median(steady) * 1000,
        "p99_ms": percentile(steady, 99) * 1000,
        "after_cycle_median_ms": statistics.median(after) * 1000,
        "after_cycle_p99_ms": percentile(after, 99) * 1000,
        "payload_bytes": size,
        "series": series,
        "gzip_median_ms": statistics.median(gz_steady) * 1000,
        "gzip_p99_ms": percentile(gz_steady, 99) * 1000,
        "gzip_after_cycle_median_ms": statistics.median(gz_after) * 1000,
        "gzip_after_cycle_p99_ms": percentile(gz_after, 99) * 1000,
        "gzip_payload_bytes": len(packed),
    }


# v2 routes the monitor reads (`v2_<route>` kinds); a write or anything else is a bug here
V2_READS = frozenset({
    "v2_list-endpoints", "v2_workers", "v2_releases", "v2_logs", "v2_balance",
    "v2_account-limits", "v2_billing-serverless", "v2_network-volumes", "v2_pods",
    "v2_catalog-gpus",
})


def v2_calls(kinds: dict[str, int]) -> int:
    return sum(v for k, v in kinds.items() if k.startswith("v2_"))


def check_calls(n: int, mode: str, cycles: list[dict[str, Any]], busy: int,
                settled_from: int = 0) -> None:
    """What each control-plane mode must send per cycle, from the simulator's counts:
    /health of every endpoint and /requests of the busy ones (from `settled_from` on: the
    first cycle reads every endpoint's); GraphQL once (graphql: `myself`; auto: the spend
    query; rest: never); REST v2 reads only, none in graphql mode, no 429 from the quota."""
    for i, x in enumerate(cycles):
        kinds = x["sim_requests"]
        want_graphql = 0 if mode == "rest" else 1
        if kinds.get("graphql", 0) != want_graphql:
            raise AssertionError(f"N={n} {mode}: GraphQL requests in cycle {i + 1}: {kinds}, "
                                 f"expected {want_graphql}")
        if kinds.get("health", 0) != n:
            raise AssertionError(f"N={n} {mode}: /health in cycle {i + 1}: {kinds}")
        if i >= settled_from and kinds.get("requests", 0) != busy:
            raise AssertionError(f"N={n} {mode}: /requests in cycle {i + 1}: {kinds}, expected "
                                 f"{busy} (the endpoints with jobs in flight)")
        v2 = {k for k in kinds if k.startswith("v2_")}
        if mode == "graphql" and v2:
            raise AssertionError(f"N={n}: REST v2 calls in graphql mode: {kinds}")
        if v2 - V2_READS:
            raise AssertionError(f"N={n} {mode}: unexpected v2 calls {sorted(v2 - V2_READS)}")
        if x["sim_throttled"]:
            raise AssertionError(f"N={n} {mode}: {x['sim_throttled']} v2 429s in cycle {i + 1}")
    if mode != "graphql" and not any(v2_calls(x["sim_requests"]) for x in cycles):
        raise AssertionError(f"N={n} {mode}: no REST v2 call in any measured cycle")


def measure_monitor(
    sim: Simulator, n: int, args: argparse.Namespace, workdir: Path, concurrency: int,
    cycles: int, scrapes: int, history: str | None = None, *, warmup: int | None = None,
    busy: int | None = None, trouble_ids: Sequence[str] = (), tag: str = "",
    settled_from: int = 0, floor: str | None = None,
) -> dict[str, Any]:
    """The monitor child's cycles (then its scrapes). `floor` (a floor child's client):
    that floor replays each measured cycle right after it, before the next starts, so the
    two are measured side by side in time (the machine's speed drifts over a run; a floor
    run after the monitor's cycles can meet another stretch of it); `result["floor"]`."""
    calls_file = workdir / f"calls-{tag}{n}-{concurrency}.json"
    spec = {
        "url": sim.url, "api_key": sim.api_key, "workdir": str(workdir), "n": n,
        "control": sim.control, "control_plane": args.control_plane,
        "concurrency": concurrency, "warmup": args.warmup if warmup is None else warmup,
        "cycles": cycles, "history": history or args.history,
        "profile": str(args.profile / f"profile-{tag}{n}.txt") if args.profile else None,
        "gc_freeze": args.gc_freeze, "trouble_ids": list(trouble_ids),
        "calls_file": str(calls_file), "tag": tag, "paced": floor is not None,
    }
    window = int(7200 // INTERVAL_S) if spec["history"] == "full" else 0
    spec["sim_start"] = sim.allocate(int(spec["warmup"]) + window + cycles)
    floor_child = floor_spec = None
    if floor is not None:
        first = spec["sim_start"] + int(spec["warmup"]) + max(window - 1, 0)
        floor_spec = _floor_spec(sim, concurrency, floor, str(calls_file),
                                 list(range(first, first + cycles)))
        floor_spec["paced"] = True
        floor_child = Child("floor", floor_spec, workdir / f"floor-{floor}-{tag}{n}.log",
                            args.timeout)
    child = Child("monitor", spec, workdir / f"monitor-{tag}{n}-{concurrency}.log",
                  args.timeout)
    floor_out = None
    try:
        sim_cpu_before = sim.cpu_s()
        if floor_child is not None:
            for _ in range(cycles):
                done = child.read()
                floor_child.send(f"{calls_file}.{done['index']}")
                floor_child.read()
                child.send("next")
        serving = child.read()
        sim_cpu_after = sim.cpu_s()
        scraped = scrape(int(serving["port"]), scrapes, child) if scrapes else None
        child.send("done")
        out = child.read()
        if floor_child is not None:
            floor_out = floor_child.read()
    finally:
        child.finish()
        if floor_child is not None:
            floor_child.finish()
    c = out["cycles"]
    walls = [x["wall_s"] for x in c]
    cpus = [x["cpu_s"] for x in c]
    check_calls(n, args.control_plane, c,
                len(busy_ids(n, args.busy_every)) if busy is None else busy, settled_from)
    graphql = [x["sim_requests"].get("graphql", 0) for x in c]
    probed = c[0]["endpoints"]
    phases = {
        name: statistics.median(x["phases_cpu_s"].get(name, 0.0) for x in c)
        for name in ("probe", "rules", "metrics", "persist")
    }
    phases_wall = {
        name: statistics.median(x["phases_wall_s"].get(name, 0.0) for x in c)
        for name in ("probe", "rules", "metrics", "persist")
    }
    persist = out["persist_bytes"]
    result: dict[str, Any] = {
        "control_plane": args.control_plane,
        "concurrency": concurrency,
        "cycles": len(c),
        "endpoints_probed": probed,
        "requests_per_cycle": c[-1]["sim_requests"],
        "calls_per_cycle": [x["sim_requests"] for x in c],
        "graphql_per_cycle": graphql,
        "v2_calls_per_cycle": [v2_calls(x["sim_requests"]) for x in c],
        "v2_429s": sum(x["sim_throttled"] for x in c),
        "v2_plan": [x["v2"] for x in c],
        "sim_cycles": [x["sim_cycle"] for x in c],
        "crash_loop_per_cycle": [x["crash_loop"] for x in c],
        "calls_file": str(calls_file),
        "failures_per_cycle": [x["failures"] for x in c],
        "active_diagnoses": sum(c[-1]["active"].values()),
        "active_by_code": c[-1]["active"],
        "history_observations": out["history_observations"],
        "prefill_s": out["prefill_s"],
        "cycle_wall_s": summary(walls),
        "cycle_cpu_s": summary(cpus),
        "wall_s_per_cycle": walls,
        "cpu_s_per_cycle": cpus,
        "cpu_ms_per_endpoint": statistics.median(cpus) / max(probed, 1) * 1000,
        "phase_cpu_s_median": phases,
        "phase_wall_s_median": phases_wall,
        "gc_s_per_cycle": [statistics.median(x["gc_s"][g] for x in c) for g in range(3)],
        "gc_collections_per_cycle": [
            statistics.median(x["gc_collections"][g] for x in c) for g in range(3)
        ],
        "bytes_per_observation": out["bytes_per_observation"],
        "peak_rss_mb": out["peak_rss_mb"],
        "rss_mb_after_warmup": out["rss_mb_after_warmup"],
        "rss_mb_with_history": out["rss_mb_with_history"],
        "sqlite_bytes_per_cycle": statistics.median(persist) if persist else None,
        "sqlite_db_bytes_after": out["db_bytes_after"],
        "simulator_cpu_s_per_cycle": (  # paced: the floor's cycles are in the simulator's
            (sim_cpu_after - sim_cpu_before) / (args.warmup + cycles)
            if sim_cpu_before is not None and sim_cpu_after is not None and floor is None
            else None
        ),
    }
    if floor_out is not None and floor is not None:
        result["floor"] = _floor_result(n, floor, result["calls_per_cycle"], concurrency,
                                        floor_out)
    if scraped is not None:
        render = out["render_s"]
        scraped["server_render_ms"] = {
            "cold": render[0] * 1000,
            "steady_median": statistics.median(render[1:scrapes + 1]) * 1000,
            "after_cycle_median": statistics.median(render[scrapes + 1:2 * scrapes + 1]) * 1000,
            "after_cycle_max": max(render[scrapes + 1:2 * scrapes + 1]) * 1000,
        }
        packing = out["gzip_cpu_s"]  # the check, then one per after-cycle scrape
        scraped["server_gzip_cpu_ms"] = {
            "compressions": len(packing),
            "after_cycle_median": statistics.median(packing[1:]) * 1000,
            "after_cycle_max": max(packing[1:]) * 1000,
        }
        result["scrape"] = scraped
    return result


def measure_restart(
    sim: Simulator, n: int, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    spec = {"url": sim.url, "api_key": sim.api_key, "workdir": str(workdir), "n": n,
            "concurrency": args.concurrency, "control_plane": args.control_plane}
    sim.set_cycle(sim.allocate(2))
    out = run_child("restart", spec, workdir / f"restart-{n}.log", args.timeout)
    return {k: v for k, v in out.items() if k != "event"}


def measure_floor(
    sim: Simulator, n: int, args: argparse.Namespace, workdir: Path, monitor: dict[str, Any],
    client: str, tag: str = "",
) -> dict[str, Any]:
    """A floor replaying the monitor's measured cycles (`monitor["calls_file"]`), checked
    to have sent the same requests by kind, cycle by cycle."""
    spec = _floor_spec(sim, monitor["concurrency"], client, monitor["calls_file"],
                       monitor["sim_cycles"])
    out = run_child("floor", spec, workdir / f"floor-{client}-{tag}{n}.log", args.timeout)
    return _floor_result(n, client, monitor["calls_per_cycle"], monitor["concurrency"], out)


def _floor_spec(sim: Simulator, concurrency: int, client: str, calls_file: str,
                ks: Sequence[int]) -> dict[str, Any]:
    """A floor child's spec: simulator cycles of its own, each in the same half of its
    minute as the monitor's cycle it replays (the same v2 quota window)."""
    start = sim.allocate(max(ks) - min(ks) + 4)
    offset = start + 2 - min(ks)
    offset += offset % 2  # even: each replayed cycle in the same half of its minute
    return {"url": sim.url, "api_key": sim.api_key, "concurrency": concurrency,
            "client": client, "calls_file": calls_file, "control": sim.control,
            "sim_cycles": [k + offset for k in ks]}


def _floor_result(n: int, client: str, calls_per_cycle: Sequence[dict[str, int]],
                  concurrency: int, out: dict[str, Any]) -> dict[str, Any]:
    """A floor child's report, checked to have sent the monitor's requests by kind."""
    c = out["cycles"]
    for i, (ours, theirs) in enumerate(zip(calls_per_cycle, c, strict=True)):
        # the floor reads each log stream whole: the same request
        if ours != theirs["requests"]:
            raise AssertionError(f"N={n}: the {client} floor's cycle {i + 1} sent "
                                 f"{theirs['requests']}, the monitor {ours}")
        if theirs["throttled"]:
            raise AssertionError(f"N={n}: the {client} floor met {theirs['throttled']} 429s")
    return {
        "client": client,
        "concurrency": concurrency,
        "cycles": len(c),
        "requests_per_cycle": c[-1]["requests"],
        "failures_per_cycle": [x["failures"] for x in c],
        "cycle_wall_s": summary([x["wall_s"] for x in c]),
        "cycle_cpu_s": summary([x["cpu_s"] for x in c]),
        "cpu_s_per_cycle": [x["cpu_s"] for x in c],
        "peak_rss_mb": out["peak_rss_mb"],
    }


def measure_naive(
    sim: Simulator, n: int, args: argparse.Namespace, workdir: Path, mode: str, cycles: int
) -> dict[str, Any]:
    ids = [endpoint_id(i) for i in range(n)]
    timed = ids if mode != "fresh" or n <= NAIVE_FRESH_MAX else ids[:NAIVE_FRESH_MAX]
    spec = {"url": sim.url, "api_key": sim.api_key, "workdir": str(workdir), "n": n,
            "ids": timed, "mode": mode, "warmup": 0 if mode == "fresh" else args.warmup,
            "cycles": cycles}
    out = run_child("naive", spec, workdir / f"naive-{mode}-{n}.log", args.timeout)
    c = out["cycles"]
    scale = n / len(timed)
    return {
        "mode": mode,
        "cycles": len(c),
        "endpoints_timed": len(timed),
        "extrapolated": scale != 1,
        "requests_per_cycle": {"health": n},
        "failures_per_cycle": [x["failures"] for x in c],
        "cycle_wall_s": summary([x["wall_s"] * scale for x in c]),
        "cycle_cpu_s": summary([x["cpu_s"] * scale for x in c]),
        "peak_rss_mb": out["peak_rss_mb"],
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def ratios(size: dict[str, Any]) -> dict[str, float | None]:
    mon, floor, aio = size["monitor"], size["floor"], size["floor_aiohttp"]
    naive, keep = size["naive"], size["naive_keepalive"]
    med = "median"
    return {
        "wall_vs_floor": _ratio(mon["cycle_wall_s"][med], floor["cycle_wall_s"][med]),
        "cpu_vs_floor": _ratio(mon["cycle_cpu_s"][med], floor["cycle_cpu_s"][med]),
        "wall_vs_floor_aiohttp": _ratio(mon["cycle_wall_s"][med], aio["cycle_wall_s"][med]),
        "cpu_vs_floor_aiohttp": _ratio(mon["cycle_cpu_s"][med], aio["cycle_cpu_s"][med]),
        "wall_vs_naive": _ratio(mon["cycle_wall_s"][med], naive["cycle_wall_s"][med]),
        "cpu_vs_naive": _ratio(mon["cycle_cpu_s"][med], naive["cycle_cpu_s"][med]),
        "naive_wall_speedup": _ratio(naive["cycle_wall_s"][med], mon["cycle_wall_s"][med]),
        "wall_vs_naive_keepalive": _ratio(mon["cycle_wall_s"][med], keep["cycle_wall_s"][med]),
        "cpu_vs_naive_keepalive": _ratio(mon["cycle_cpu_s"][med], keep["cycle_cpu_s"][med]),
        "naive_keepalive_wall_speedup": _ratio(keep["cycle_wall_s"][med],
                                               mon["cycle_wall_s"][med]),
    }


def run_size(n: int, args: argparse.Namespace, workdir: Path, api_key: str) -> dict[str, Any]:
    log = print if not args.quiet else (lambda *a, **k: None)
    started = time.perf_counter()
    path = write_scenario(n, workdir, args.busy_every)
    base_cycles = args.baseline_cycles
    with Simulator(path, api_key, workdir) as sim:
        log(f"  N={n}: simulator up on {sim.url} ({time.perf_counter() - started:.1f} s)")
        out: dict[str, Any] = {"n": n}
        out["monitor"] = measure_monitor(sim, n, args, workdir, args.concurrency, args.cycles,
                                         args.scrapes)
        log(f"  N={n}: monitor done ({time.perf_counter() - started:.1f} s)")
        if args.history == "full":
            out["monitor"]["restart"] = measure_restart(sim, n, args, workdir)
            log(f"  N={n}: restart done ({time.perf_counter() - started:.1f} s)")
        out["floor"] = measure_floor(sim, n, args, workdir, out["monitor"], "httpx")
        out["floor_aiohttp"] = measure_floor(sim, n, args, workdir, out["monitor"], "aiohttp")
        out["naive_keepalive"] = measure_naive(sim, n, args, workdir, "keepalive",
                                               1 if n > SWEEP_SIZE else base_cycles)
        out["naive"] = measure_naive(sim, n, args, workdir, "fresh", 1)
        log(f"  N={n}: baselines done ({time.perf_counter() - started:.1f} s)")
        if n == SWEEP_SIZE and args.sweep:
            sweep = []
            for conc in SWEEP_CONCURRENCY:
                # the probe phase is what concurrency changes: no history needed
                m = measure_monitor(sim, n, args, workdir, conc, args.sweep_cycles, 0, "empty")
                sweep.append({
                    "concurrency": conc,
                    "cycle_wall_s": m["cycle_wall_s"],
                    "cycle_cpu_s": m["cycle_cpu_s"],
                    "probe_wall_s": m["phase_wall_s_median"]["probe"],
                    "probe_cpu_s": m["phase_cpu_s_median"]["probe"],
                    "simulator_cpu_s_per_cycle": m["simulator_cpu_s_per_cycle"],
                })
            out["concurrency_sweep"] = sweep
            log(f"  N={n}: concurrency sweep done ({time.perf_counter() - started:.1f} s)")
    out["ratios"] = ratios(out)
    out["elapsed_s"] = time.perf_counter() - started
    return out


V2_TROUBLE = 10  # endpoints in trouble in the v2 cycle (issue 14)


def _v2_run(
    n: int, args: argparse.Namespace, workdir: Path, api_key: str, crashing: int,
    logs_hold_s: float, floor: bool,
) -> dict[str, Any]:
    """One v2-cycle scenario at N: the monitor's `--v2-cycles` cycles from an empty history
    (cycle k at simulated (k - 1) * 30 s), and the aiohttp floor replaying them."""
    shape = {"trouble": V2_TROUBLE, "crashing": crashing}
    path = write_scenario(n, workdir, args.busy_every, cycles=args.v2_cycles,
                          logs_hold_s=logs_hold_s, **shape)
    bad = [endpoint_id(i) for i in trouble_indexes(n, V2_TROUBLE)]
    busy = len(busy_ids(n, args.busy_every, **shape))
    tag = f"v2-crash{crashing}-"
    with Simulator(path, api_key, workdir) as sim:
        mon = measure_monitor(sim, n, args, workdir, args.concurrency, args.v2_cycles, 0,
                              "empty", warmup=0, busy=busy, trouble_ids=bad, tag=tag,
                              settled_from=1, floor="aiohttp" if floor else None)
        aio = mon.get("floor")
    calls = mon["calls_per_cycle"]
    kinds = sorted({k for c in calls for k in c})
    by_kind = {k: [c.get(k, 0) for c in calls] for k in kinds}
    v2 = mon["v2_calls_per_cycle"]
    # the run starts at an odd simulator cycle: cycles 2i and 2i + 1 share a minute window
    per_minute = [sum(v2[i:i + 2]) for i in range(0, len(v2), 2)]
    plans = mon["v2_plan"]
    fresh = {e: [e in (p or {}).get("trouble_workers_now", []) for p in plans] for e in bad}
    crash_at = next((i + 1 for i, ids in enumerate(mon["crash_loop_per_cycle"])
                     if bad[0] in ids), None)
    out: dict[str, Any] = {
        "n": n,
        "cycles": len(calls),
        "crashing": crashing,
        "trouble_ids": bad,
        "logs_hold_s": logs_hold_s,
        "calls_per_cycle_by_kind": by_kind,
        "v2_calls_per_cycle": v2,
        "v2_calls_per_minute": per_minute,
        "v2_quota_per_minute": V2_QUOTA["minute"],
        "v2_allowance_per_cycle": [(p or {}).get("allowance") for p in plans],
        "v2_unserved_trouble_per_cycle": [len((p or {}).get("unserved", [])) for p in plans],
        "v2_429s": mon["v2_429s"],
        "trouble_workers_this_cycle": fresh,
        "trouble_workers_every_cycle_from": next(
            (k + 1 for k in range(len(plans)) if all(all(v[k:]) for v in fresh.values())),
            None),
        "crash_loop_raised_cycle": crash_at,
        "crash_loop_endpoints_last_cycle": len(mon["crash_loop_per_cycle"][-1]),
        "log_reads_per_cycle": by_kind.get("v2_logs", [0] * len(calls)),
        "status_per_cycle": by_kind.get("status", [0] * len(calls)),
        "cycle_wall_s": mon["cycle_wall_s"],
        "cycle_wall_s_per_cycle": mon["wall_s_per_cycle"],
        "cycle_cpu_s": mon["cycle_cpu_s"],
        "cycle_cpu_s_per_cycle": mon["cpu_s_per_cycle"],
        "phase_cpu_s_median": mon["phase_cpu_s_median"],
        "peak_rss_mb": mon["peak_rss_mb"],
        "failures_per_cycle": mon["failures_per_cycle"],
        "active_by_code": mon["active_by_code"],
    }
    if aio is not None:
        out["floor_aiohttp"] = aio
        out["cpu_vs_floor_aiohttp"] = _ratio(mon["cycle_cpu_s"]["median"],
                                             aio["cycle_cpu_s"]["median"])
        out["wall_vs_floor_aiohttp"] = _ratio(mon["cycle_wall_s"]["median"],
                                              aio["cycle_wall_s"]["median"])
    return out


def run_v2(n: int, args: argparse.Namespace, workdir: Path, api_key: str) -> dict[str, Any]:
    """The v2 cycle at N (issues 14, 15, 17): 10 endpoints in trouble, one crash-looping;
    then a crash storm (all 10 crash-looping, log streams held open as RunPod does)."""
    log = print if not args.quiet else (lambda *a, **k: None)
    started = time.perf_counter()
    out = _v2_run(n, args, workdir, api_key, 1, 0, True)
    log(f"  v2 N={n}: trouble run done ({time.perf_counter() - started:.1f} s)")
    out["storm"] = _v2_run(n, args, workdir, api_key, V2_TROUBLE, args.v2_logs_hold, False)
    log(f"  v2 N={n}: crash storm done ({time.perf_counter() - started:.1f} s)")
    out["elapsed_s"] = time.perf_counter() - started
    return out


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    import httpx

    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "httpx": httpx.__version__,
        "loadavg_at_start": load,
    }


def v2_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The v2 cycle's runs, and whether crash_loop was raised in the same cycle at every N."""
    raised = {str(r["n"]): r["crash_loop_raised_cycle"] for r in runs}
    return {
        "sizes": runs,
        "crash_loop_raised_cycle_by_n": raised,
        "crash_loop_same_cycle": (len(set(raised.values())) == 1 and None not in
                                  raised.values()) if runs else None,
    }


def v2_table(runs: list[dict[str, Any]]) -> str:
    """The v2 cycle as plain text."""
    lines = ["v2 cycle: 10 endpoints in trouble (1 crash-looping), 60 v2 calls a minute, "
             "medians over the cycles",
             f"{'N':>5}  {'v2/cycle':>8}  {'max/min':>7}  {'429s':>4}  {'trouble fresh from':>18}  "
             f"{'crash_loop at':>13}  {'CPU s':>6}  {'floor CPU s':>11}  {'ratio':>5}  "
             f"{'RSS MB':>6}  {'storm logs/cycle':>16}  {'storm wall max s':>16}  "
             f"{'storm 429s':>10}  {'storm fresh from':>16}"]
    for r in runs:
        st = r["storm"]
        aio = r.get("floor_aiohttp") or {"cycle_cpu_s": {"median": None}}
        lines.append(
            f"{r['n']:>5}  {statistics.median(r['v2_calls_per_cycle']):>8.0f}  "
            f"{max(r['v2_calls_per_minute']):>7}  {r['v2_429s']:>4}  "
            f"{r['trouble_workers_every_cycle_from'] or '-'!s:>18}  "
            f"{r['crash_loop_raised_cycle'] or '-'!s:>13}  {r['cycle_cpu_s']['median']:>6.3f}  "
            f"{_f(aio['cycle_cpu_s']['median'], 3):>11}  {_f(r.get('cpu_vs_floor_aiohttp')):>5}  "
            f"{r['peak_rss_mb']:>6.1f}  {max(st['log_reads_per_cycle']):>16}  "
            f"{max(st['cycle_wall_s_per_cycle']):>16.2f}  "
            f"{st['v2_429s']:>10}  {st['trouble_workers_every_cycle_from'] or '-'!s:>16}")
        kinds = "  ".join(f"{k} {statistics.median(v):g}"
                          for k, v in r["calls_per_cycle_by_kind"].items())
        lines.append(f"       calls per cycle by kind (median): {kinds}")
    return "\n".join(lines)


def targets_check(sizes: list[dict[str, Any]], fit: dict[str, float] | None,
                  v2: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Each target of benchmarks/README.md at N = 1000: value, target, met."""
    at = next((s for s in sizes if s["n"] == TARGETS["n"]), None)
    v2_at = next((r for r in v2 or [] if r["n"] == TARGETS["n"]), None)
    v2_small = next((r for r in v2 or [] if r["n"] != TARGETS["n"]), None)
    out: dict[str, Any] = {
        "n": TARGETS["n"],
        "measured": at is not None,
        "cpu_linear_in_n": {
            "r2": None if fit is None else fit["r2"],
            "slope_ms_per_endpoint": None if fit is None else fit["slope"],
            "target": "R² >= 0.98",
            "met": None if fit is None else fit["r2"] >= 0.98,
        },
    }
    mon: dict[str, Any] = at["monitor"] if at is not None else {
        "cycle_wall_s": {"median": None}, "cycle_cpu_s": {"median": None}, "peak_rss_mb": None,
    }
    r: dict[str, Any] = at["ratios"] if at is not None else {}
    sc = mon.get("scrape") or {}
    scrape_p99 = (max(sc["p99_ms"], sc["after_cycle_p99_ms"], sc["gzip_p99_ms"],
                      sc["gzip_after_cycle_p99_ms"]) if sc else None)

    def check(value: float | None, limit: float, below: bool = True) -> dict[str, Any]:
        met = None if value is None else (value <= limit if below else value >= limit)
        return {"value": value, "target": limit, "met": met}

    out.update({
        "cycle_wall_s": check(mon["cycle_wall_s"]["median"], TARGETS["cycle_wall_s"]),
        "cycle_cpu_s": check(mon["cycle_cpu_s"]["median"], TARGETS["cycle_cpu_s"]),
        "peak_rss_mb": check(mon["peak_rss_mb"], TARGETS["peak_rss_mb"]),
        "scrape_p99_ms": check(scrape_p99, TARGETS["scrape_p99_ms"]),
        "cpu_vs_floor": check(r.get("cpu_vs_floor"), TARGETS["cpu_vs_floor"]),
        "cpu_vs_floor_aiohttp": check(r.get("cpu_vs_floor_aiohttp"), TARGETS["cpu_vs_floor"]),
        "wall_speedup_vs_naive": check(r.get("naive_wall_speedup"), TARGETS["wall_vs_naive"],
                                       below=False),
        "wall_speedup_vs_naive_keepalive": check(r.get("naive_keepalive_wall_speedup"),
                                                 TARGETS["wall_vs_naive"], below=False),
    })
    # the v2 cycle (issue 14) at N = 1000: each is None until it ran there
    fresh = v2_at["trouble_workers_every_cycle_from"] if v2_at else None
    same = None
    if v2_at is not None and v2_small is not None:
        same = (v2_at["crash_loop_raised_cycle"] is not None
                and v2_at["crash_loop_raised_cycle"] == v2_small["crash_loop_raised_cycle"])
    out["v2"] = {
        "v2_429s": {"value": v2_at["v2_429s"] if v2_at else None, "target": 0,
                    "met": None if v2_at is None else v2_at["v2_429s"] == 0},
        "trouble_workers_every_cycle_from": {"value": fresh, "target": 1,
                                             "met": None if v2_at is None else fresh == 1},
        "crash_loop_same_cycle_as_small_n": {
            "value": v2_at["crash_loop_raised_cycle"] if v2_at else None,
            "target": v2_small["crash_loop_raised_cycle"] if v2_small else None, "met": same},
        "cpu_vs_floor_aiohttp": check(v2_at.get("cpu_vs_floor_aiohttp") if v2_at else None,
                                      TARGETS["cpu_vs_floor"]),
        "peak_rss_mb": check(v2_at["peak_rss_mb"] if v2_at else None, TARGETS["peak_rss_mb"]),
    }
    return out


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(sizes: list[dict[str, Any]]) -> str:
    """The results as three plain-text tables: the monitor, the baselines, the ratios."""
    lines = [
        "monitor (median of the measured cycles; min in brackets)",
        f"{'N':>5}  {'wall s':>14}  {'CPU s':>14}  {'CPU ms/ep':>9}  {'peak RSS MB':>11}  "
        f"{'scrape p50/p99 ms':>17}  {'after-cycle p99':>15}  {'/metrics KB':>11}  "
        f"{'SQLite KB/cycle':>15}",
    ]
    for s in sizes:
        m = s["monitor"]
        sc = m.get("scrape") or {}
        sq = m["sqlite_bytes_per_cycle"]
        lines.append(
            f"{s['n']:>5}  "
            f"{_f(m['cycle_wall_s']['median'], 3):>6} ({_f(m['cycle_wall_s']['min'], 3)})  "
            f"{_f(m['cycle_cpu_s']['median'], 3):>6} ({_f(m['cycle_cpu_s']['min'], 3)})  "
            f"{m['cpu_ms_per_endpoint']:>9.3f}  {m['peak_rss_mb']:>11.1f}  "
            f"{_f(sc.get('median_ms'), 1) + '/' + _f(sc.get('p99_ms'), 1):>17}  "
            f"{_f(sc.get('after_cycle_p99_ms'), 1):>15}  "
            f"{_f(sc['payload_bytes'] / 1024 if sc else None, 0):>11}  "
            f"{_f(None if sq is None else sq / 1024, 0):>15}"
        )
    restarts = [(s["n"], s["monitor"]["restart"]) for s in sizes if "restart" in s["monitor"]]
    if restarts:
        lines += ["", "restarted on the full database (restore, then one cycle)",
                  f"{'N':>5}  {'observations':>12}  {'restore s':>9}  {'RSS MB restored':>15}  "
                  f"{'peak RSS MB':>11}"]
        for n, r in restarts:
            lines.append(f"{n:>5}  {r['observations_restored']:>12}  {r['restore_wall_s']:>9.2f}  "
                         f"{r['rss_mb_restored']:>15.1f}  {r['peak_rss_mb']:>11.1f}")
    lines += [
        "",
        "cycle wall s / CPU s, medians: ours and the baselines (same simulator, same N)",
        f"{'N':>5}  {'ours':>15}  {'floor httpx':>15}  {'floor aiohttp':>15}  "
        f"{'naive exporter':>16}  {'naive keep-alive':>16}",
    ]
    for s in sizes:
        def pair(d: dict[str, Any], mark: str = "") -> str:
            return (f"{_f(d['cycle_wall_s']['median'], 3)} / "
                    f"{_f(d['cycle_cpu_s']['median'], 3)}{mark}")

        nv = s["naive"]
        lines.append(
            f"{s['n']:>5}  {pair(s['monitor']):>15}  {pair(s['floor']):>15}  "
            f"{pair(s['floor_aiohttp']):>15}  {pair(nv, '*' if nv['extrapolated'] else ''):>16}  "
            f"{pair(s['naive_keepalive']):>16}"
        )
    lines += [
        "",
        "ratios (ours / baseline for cost; baseline / ours for the naive wall speed-up)",
        f"{'N':>5}  {'CPU/floor httpx':>15}  {'CPU/floor aiohttp':>17}  "
        f"{'wall/floor aiohttp':>18}  {'naive wall/ours':>15}  {'keep-alive wall/ours':>20}",
    ]
    for s in sizes:
        r = s["ratios"]
        lines.append(
            f"{s['n']:>5}  {_f(r['cpu_vs_floor']):>15}  {_f(r['cpu_vs_floor_aiohttp']):>17}  "
            f"{_f(r['wall_vs_floor_aiohttp']):>18}  {_f(r['naive_wall_speedup']):>15}  "
            f"{_f(r['naive_keepalive_wall_speedup']):>20}"
        )
    if any(s["naive"]["extrapolated"] for s in sizes):
        lines.append(f"* timed on the first {NAIVE_FRESH_MAX} endpoints and scaled to N "
                     "(a sequential loop: linear in N by construction)")
    for s in sizes:
        if "concurrency_sweep" in s:
            lines += ["", f"max_concurrency sweep at N={s['n']} (history empty; medians)",
                      f"{'conc':>5}  {'cycle wall s':>12}  {'cycle CPU s':>11}  "
                      f"{'probe wall s':>12}  {'probe CPU s':>11}  {'simulator CPU s':>15}"]
            for row in s["concurrency_sweep"]:
                lines.append(
                    f"{row['concurrency']:>5}  {row['cycle_wall_s']['median']:>12.3f}  "
                    f"{row['cycle_cpu_s']['median']:>11.3f}  {row['probe_wall_s']:>12.3f}  "
                    f"{row['probe_cpu_s']:>11.3f}  {_f(row['simulator_cpu_s_per_cycle']):>15}"
                )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)),
                   help="comma-separated endpoint counts (default 10,100,1000,5000)")
    p.add_argument("--cycles", type=int, default=DEFAULT_CYCLES,
                   help="measured monitor cycles per size, after the warm-up (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured cycles first (default 1)")
    p.add_argument("--baseline-cycles", type=int, default=3,
                   help="measured cycles of the floor and keep-alive naive baselines "
                        "(default 3; the naive keep-alive one runs once above N=1000)")
    p.add_argument("--scrapes", type=int, default=DEFAULT_SCRAPES,
                   help="measured /metrics scrapes (default 50)")
    p.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY,
                   help="max_concurrency of the monitor and the floor (default 16)")
    p.add_argument("--control-plane", choices=("auto", "rest", "graphql"), default="auto",
                   help="the monitor's runpod.control_plane (default auto, the shipped "
                        "default; graphql: the GraphQL-only cycle measured before REST v2)")
    p.add_argument("--v2-sizes", default="10,1000",
                   help="N of the v2 cycle (10 endpoints in trouble, 60 v2 calls a minute; "
                        "default 10,1000; empty: skip it; not run with --control-plane graphql)")
    p.add_argument("--v2-cycles", type=int, default=20,
                   help="cycles of the v2 cycle's runs (default 20)")
    p.add_argument("--v2-logs-hold", type=float, default=30.0,
                   help="seconds the simulator holds a worker-log stream open in the crash "
                        "storm (default 30, as RunPod tails; the monitor stops reading after "
                        "runpod.logs.max_seconds)")
    p.add_argument("--busy-every", type=int, default=BUSY_EVERY,
                   help="every Kth endpoint has jobs in flight (default 10; 1: all busy)")
    p.add_argument("--no-sweep", dest="sweep", action="store_false",
                   help=f"skip the max_concurrency sweep at N={SWEEP_SIZE}")
    p.add_argument("--sweep-cycles", type=int, default=3)
    p.add_argument("--history", choices=("full", "empty"), default="full",
                   help="fill the monitor's history to its retention window before the "
                        "measured cycles (default full: the steady state)")
    p.add_argument("--json", type=Path, default=RESULTS / "latest.json",
                   help="where to write the results (default benchmarks/results/latest.json)")
    p.add_argument("--dated", action="store_true",
                   help="also write benchmarks/results/<date>.json")
    p.add_argument("--timeout", type=float, default=600.0, help="per child process, seconds")
    p.add_argument("--profile", type=Path, default=None,
                   help="write a pyinstrument profile of the measured monitor cycles to "
                        "DIR/profile-N.txt (pip install pyinstrument)")
    p.add_argument("--gc-freeze", action="store_true",
                   help="experiment: gc.freeze() in the monitor after its history is filled")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child, json.loads(args.spec))
    sys.path.insert(0, str(ROOT))
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    started = time.perf_counter()
    info = machine()
    print(f"runpod-monitor benchmarks: sizes {sizes}, {args.cycles} cycles, "
          f"{args.scrapes} scrapes, concurrency {args.concurrency}, history {args.history}; "
          f"{info['nproc']} cores, {info['cpu_model']}, Python {info['python']}", flush=True)
    api_key = "bench-" + secrets.token_urlsafe(18)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="runpod-monitor-bench-") as tmp:
        workdir = Path(tmp)
        for n in sizes:
            results.append(run_size(n, args, workdir, api_key))
        v2_sizes = [int(x) for x in args.v2_sizes.split(",") if x.strip()]
        if args.control_plane == "graphql":
            v2_sizes = []
        v2_results = [run_v2(n, args, workdir, api_key) for n in v2_sizes]
    fit = None
    if len(results) >= 2:
        xs = [float(s["monitor"]["endpoints_probed"]) for s in results]
        ys = [s["monitor"]["cycle_cpu_s"]["median"] * 1000 for s in results]
        fit = fit_line(xs, ys)
    doc = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "machine": info,
        "settings": {
            "sizes": sizes, "cycles": args.cycles, "warmup": args.warmup,
            "scrapes": args.scrapes, "concurrency": args.concurrency, "history": args.history,
            "gc_freeze": args.gc_freeze, "busy_every": args.busy_every,
            "interval_s": INTERVAL_S, "control_plane": args.control_plane,
            "v2_sizes": v2_sizes, "v2_cycles": args.v2_cycles, "v2_quota": V2_QUOTA,
            "v2_logs_hold_s": args.v2_logs_hold,
        },
        "sizes": results,
        "v2_cycle": v2_summary(v2_results),
        "cpu_fit_ms_per_endpoint": fit,
        "targets": targets_check(results, fit, v2_results),
        "elapsed_s": time.perf_counter() - started,
    }
    print()
    print(table(results))
    if v2_results:
        print()
        print(v2_table(v2_results))
    if fit is not None:
        print(f"\ncycle CPU fit: {fit['slope']:.4f} ms per endpoint "
              f"+ {fit['intercept']:.1f} ms, R² = {fit['r2']:.4f}")
    print(f"total {doc['elapsed_s']:.0f} s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    if args.dated:
        dated = RESULTS / f"{datetime.now(UTC).date().isoformat()}.json"
        dated.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
