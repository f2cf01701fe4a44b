#!/usr/bin/env python3
"""Performance and scale benchmarks for runpod-monitor (see benchmarks/README.md).

For each size N the parent process writes a scenario with N endpoints, starts the
simulator in its own process (`python -m monitor simulate FILE --port P`), and measures
three kinds of poller, each in its own child process that reports its own getrusage:

- monitor: the real daemon (`monitor.daemon.Daemon.tick`: probes, history, rules,
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
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _rss_mb() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
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


def scenario_dict(n: int, busy_every: int = BUSY_EVERY) -> dict[str, Any]:
    """A stable account with `n` healthy endpoints, every `busy_every`th with jobs in
    flight, 1% throttled (with jobs queued)."""
    endpoints = []
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
        if i % THROTTLED_EVERY == THROTTLED_EVERY - 1:
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
    return {
        "name": f"bench-{n}",
        "description": f"benchmarks/run.py: {n} endpoints, stable state",
        "interval_s": INTERVAL_S,
        "account": {"clientBalance": 5000.0, "currentSpendPerHr": 1.2, "spendLimit": 400},
        "networkVolumes": [
            {"id": "benchvol1", "name": "models", "size": 100, "dataCenterId": "US-TX-3"}
        ],
        "endpoints": endpoints,
    }


def write_scenario(n: int, directory: Path, busy_every: int = BUSY_EVERY) -> Path:
    import yaml

    from monitor.simulator.scenario import Scenario

    data = scenario_dict(n, busy_every)
    Scenario.from_dict(data)  # fail here, not in the simulator, on a bad scenario
    path = directory / f"bench-{n}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, width=120), encoding="utf-8")
    return path


def busy_ids(n: int, busy_every: int = BUSY_EVERY) -> list[str]:
    """The endpoints whose /health shows jobs in flight: the ones whose /requests a steady
    cycle asks (the floors ask the same)."""
    return [e["id"] for e in scenario_dict(n, busy_every)["endpoints"]
            if e["health"]["jobs"].get("inQueue") or e["health"]["jobs"].get("inProgress")]


# ------------------------------------------------------------------------------ simulator


class Simulator:
    """`python -m monitor simulate FILE --port P` in its own process."""

    def __init__(self, scenario: Path, api_key: str, workdir: Path) -> None:
        self.scenario = scenario
        self.api_key = api_key
        self.log = workdir / f"{scenario.stem}.simulator.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120.0) -> None:
        env = {**os.environ, "RUNPOD_API_KEY": self.api_key, "PYTHONPATH": str(ROOT)}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                # a huge interval: the scenario holds its first (and only) state throughout
                [sys.executable, "-m", "monitor", "simulate", str(self.scenario),
                 "--port", str(self.port), "--interval", "86400"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"simulator exited: {self.log.read_text()[-2000:]}")
            if "base URL" in self.log.read_text(errors="replace"):
                return
            time.sleep(0.05)
        raise RuntimeError("simulator did not start in time")

    def cpu_s(self) -> float | None:
        return None if self.proc is None else _proc_cpu(self.proc.pid)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
    """Wraps the monitor client's sender: counts its requests by kind and, while
    `keep` is set, keeps the raw body and status of every answer, by URL."""

    def __init__(self, client: Any) -> None:
        self.counts: dict[str, int] = {}
        self.bodies: dict[str, tuple[bytes, int]] = {}
        self.keep = False
        sender = client._sender
        real_send = sender.send

        async def send(method: str, url: str, payload: object) -> Any:
            kind = _kind(url)
            self.counts[kind] = self.counts.get(kind, 0) + 1
            answer = await real_send(method, url, payload)
            if self.keep:
                self.bodies[url] = (answer.content, answer.status)
            return answer

        sender.send = send


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
    persist: Callable[[Any], None], probed: int = PREFILL_PROBED,
) -> float:
    """Fill the history with `count` more observations, as `count` cycles would; seconds.

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
    db = Path(spec["workdir"]) / f"monitor-{spec['n']}-{spec['concurrency']}.db"
    return load_settings(
        None,
        env={"RUNPOD_API_KEY": spec["api_key"]},
        overrides={
            "interval_s": INTERVAL_S,
            "runpod": {
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
    from monitor.daemon import Daemon
    from monitor.metrics.http import GzipCache
    from monitor.web import build_app

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
    import monitor.cycle as cycle_module

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

    async def tick(measured: bool) -> None:
        counts.clear()
        phases.reset()
        gc_clock.reset()
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
            cycles.append({
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

    recorder.keep = True
    for _ in range(spec["warmup"]):
        await tick(False)
    recorder.keep = False
    rss_no_history = _rss_mb()
    prefill_s = 0.0
    if window > 1:
        prefill_s = await _prefill_history(daemon, recorder.bodies, window - 1, clock["t"],
                                           real_persist)
        clock["t"] += (window - 1) * INTERVAL_S
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
    """The same calls as a steady cycle (GraphQL once, /health of every listed endpoint,
    /requests of the busy ones, at most `concurrency` at once, keep-alive) and nothing else:
    bodies are read,
    not parsed (but GraphQL's, for the endpoint ids). `client`: httpx (its own pool, as
    `httpx.AsyncClient()` comes) or aiohttp (the pool the monitor's client uses)."""
    from monitor.runpod.queries import MYSELF

    base, conc, busy = spec["url"], spec["concurrency"], frozenset(spec["busy_ids"])
    sem = asyncio.Semaphore(conc)
    counts: dict[str, int] = {}
    headers = {"Authorization": f"Bearer {spec['api_key']}", "Accept": "application/json"}

    def count(url: str) -> None:
        kind = _kind(url)
        counts[kind] = counts.get(kind, 0) + 1

    if spec["client"] == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(
            headers=headers, connector=aiohttp.TCPConnector(limit=conc)
        )

        async def post(url: str, payload: object) -> object:
            count(url)
            async with sem, session.post(url, json=payload) as resp:
                return await resp.json()

        async def get(url: str) -> int:
            count(url)
            async with sem, session.get(url) as resp:
                await resp.read()
                return resp.status

        close = session.close
    else:
        import httpx

        client = httpx.AsyncClient(
            headers=headers, timeout=60,
            limits=httpx.Limits(max_connections=conc, max_keepalive_connections=conc),
        )

        async def post(url: str, payload: object) -> object:
            count(url)
            async with sem:
                return (await client.post(url, json=payload)).json()

        async def get(url: str) -> int:
            count(url)
            async with sem:
                return (await client.get(url)).status_code

        close = client.aclose

    async def cycle(limit: int | None = None) -> tuple[float, float, int]:
        w, c = time.perf_counter(), _cpu_self()
        body: Any = await post(f"{base}/graphql", {"query": MYSELF})
        ids = [e["id"] for e in body["data"]["myself"]["endpoints"]][:limit]
        urls = [f"{base}/v2/{eid}/health" for eid in ids]
        urls += [f"{base}/v2/{eid}/requests" for eid in ids if eid in busy]
        statuses = await asyncio.gather(*(get(url) for url in urls))
        return time.perf_counter() - w, _cpu_self() - c, sum(1 for x in statuses if x != 200)

    await cycle(limit=2 * conc)  # warm-up: open the pool
    cycles = []
    for _ in range(spec["cycles"]):
        counts.clear()
        wall, cpu, bad = await cycle()
        cycles.append({"wall_s": wall, "cpu_s": cpu, "failures": bad, "requests": dict(counts)})
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
    from monitor.daemon import Daemon

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
    if kind == "monitor":
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


def measure_monitor(
    sim: Simulator, n: int, args: argparse.Namespace, workdir: Path, concurrency: int,
    cycles: int, scrapes: int, history: str | None = None,
) -> dict[str, Any]:
    spec = {
        "url": sim.url, "api_key": sim.api_key, "workdir": str(workdir), "n": n,
        "concurrency": concurrency, "warmup": args.warmup, "cycles": cycles,
        "history": history or args.history,
        "profile": str(args.profile / f"profile-{n}.txt") if args.profile else None,
        "gc_freeze": args.gc_freeze,
    }
    child = Child("monitor", spec, workdir / f"monitor-{n}-{concurrency}.log", args.timeout)
    try:
        sim_cpu_before = sim.cpu_s()
        serving = child.read()
        sim_cpu_after = sim.cpu_s()
        scraped = scrape(int(serving["port"]), scrapes, child) if scrapes else None
        child.send("done")
        out = child.read()
    finally:
        child.finish()
    c = out["cycles"]
    walls = [x["wall_s"] for x in c]
    cpus = [x["cpu_s"] for x in c]
    graphql = [x["requests"].get("graphql", 0) for x in c]
    if any(g != 1 for g in graphql):
        raise AssertionError(f"N={n}: GraphQL requests per cycle {graphql}, expected 1 each")
    asked = [x["requests"].get("requests", 0) for x in c]
    busy = len(busy_ids(n, args.busy_every))
    if any(a != busy for a in asked):
        raise AssertionError(f"N={n}: /requests per cycle {asked}, expected {busy} (the busy "
                             "endpoints, which the floors ask too)")
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
        "concurrency": concurrency,
        "cycles": len(c),
        "endpoints_probed": probed,
        "requests_per_cycle": c[-1]["requests"],
        "graphql_per_cycle": graphql,
        "failures_per_cycle": [x["failures"] for x in c],
        "active_diagnoses": sum(c[-1]["active"].values()),
        "active_by_code": c[-1]["active"],
        "history_observations": out["history_observations"],
        "prefill_s": out["prefill_s"],
        "cycle_wall_s": summary(walls),
        "cycle_cpu_s": summary(cpus),
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
        "simulator_cpu_s_per_cycle": (
            (sim_cpu_after - sim_cpu_before) / (args.warmup + cycles)
            if sim_cpu_before is not None and sim_cpu_after is not None else None
        ),
    }
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
            "concurrency": args.concurrency}
    out = run_child("restart", spec, workdir / f"restart-{n}.log", args.timeout)
    return {k: v for k, v in out.items() if k != "event"}


def measure_floor(
    sim: Simulator, n: int, args: argparse.Namespace, workdir: Path, cycles: int, client: str
) -> dict[str, Any]:
    spec = {"url": sim.url, "api_key": sim.api_key, "concurrency": args.concurrency,
            "cycles": cycles, "client": client, "busy_ids": busy_ids(n, args.busy_every)}
    out = run_child("floor", spec, workdir / f"floor-{client}-{n}.log", args.timeout)
    c = out["cycles"]
    return {
        "client": client,
        "concurrency": args.concurrency,
        "cycles": len(c),
        "requests_per_cycle": c[-1]["requests"],
        "failures_per_cycle": [x["failures"] for x in c],
        "cycle_wall_s": summary([x["wall_s"] for x in c]),
        "cycle_cpu_s": summary([x["cpu_s"] for x in c]),
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
        out["floor"] = measure_floor(sim, n, args, workdir, base_cycles, "httpx")
        out["floor_aiohttp"] = measure_floor(sim, n, args, workdir, base_cycles, "aiohttp")
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


def targets_check(sizes: list[dict[str, Any]], fit: dict[str, float] | None) -> dict[str, Any]:
    """Each target of benchmarks/README.md at N = 1000: value, target, met."""
    at = next((s for s in sizes if s["n"] == TARGETS["n"]), None)
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
            "interval_s": INTERVAL_S,
        },
        "sizes": results,
        "cpu_fit_ms_per_endpoint": fit,
        "targets": targets_check(results, fit),
        "elapsed_s": time.perf_counter() - started,
    }
    print()
    print(table(results))
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
