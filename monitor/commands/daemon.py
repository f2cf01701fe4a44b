"""The long-running service: APScheduler drives the cycle; state persists; HTTP serves it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import structlog
from aiohttp import web
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from model.history import History
from model.observation import Observation
from monitor.alerts.model import Sink
from monitor.alerts.setup import silences_path
from monitor.config import Settings
from monitor.http.web import WritePolicy, build_app
from monitor.pipeline.cycle import CycleResult, build_pipeline
from monitor.runpod.client import RUNPOD_LIMITS, client_for
from monitor.state.episodes import Episode
from monitor.state.incidents import Incident
from monitor.state.store import Store

log = structlog.get_logger("monitor.commands.daemon")
# how often the delivery loop looks at the outbox besides after each cycle (retries)
DELIVER_POLL_S = 2.0


class Daemon:
    """One monitor process: probes on a schedule, keeps state, serves metrics and the API."""

    def __init__(
        self,
        settings: Settings,
        *,
        sinks: Sequence[Sink] | None = None,
        clock: Callable[[], float] = time.time,
        dry_run: bool = False,
    ) -> None:
        """`dry_run`: guarded fixes are proposed and approved but never called."""
        self.settings = settings
        self.clock = clock
        # RunPod's per-endpoint limits, enforced here
        self.client = client_for(settings, limits=RUNPOD_LIMITS)
        self.store = Store(settings.state.path)
        # sinks from the settings (Slack, Alertmanager, else the log) unless given
        self.pipeline = build_pipeline(settings, self.client, sinks=sinks, store=self.store,
                                       silences_file=silences_path(settings),
                                       dry_run=dry_run)
        self.metrics = self.pipeline.metrics
        self.sinks = self.pipeline.router.sinks
        self.jobs = self.pipeline.jobs
        self.cycle_no = 0
        self.last_result: CycleResult | None = None
        self.started_mono = time.monotonic()
        self.last_cycle_mono: float | None = None
        self.skipped = 0
        self._inflight: asyncio.Task[object] | None = None
        self._stop = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._scheduler: AsyncIOScheduler | None = None
        self._deliver_wake = asyncio.Event()
        self._deliver_task: asyncio.Task[None] | None = None
        self._delivery_stopping = False
        self._restore()

    # ------------------------------------------------------------------ state
    def _restore(self) -> None:
        restored = self.store.load()
        self.pipeline.restore(restored, self.clock())
        self.cycle_no = self.pipeline.last_cycle
        if restored.last_cycle:
            log.info("state restored", observations=len(self.pipeline.history),
                     active=len(restored.active), last_cycle=restored.last_cycle)

    # ------------------------------------------------------------------ cycle
    async def tick(self) -> None:
        """One scheduled cycle (the pipeline's, probes to store), then wake the delivery."""
        self._inflight = asyncio.current_task()
        try:
            self.cycle_no += 1
            result = await self.pipeline.cycle(self.cycle_no, self.clock())
            self.last_result = result
            self.last_cycle_mono = time.monotonic()
            self._deliver_wake.set()
        except Exception:
            # a bug in one cycle must not stop the schedule; it is logged and the next runs
            log.exception("cycle failed", cycle=self.cycle_no)
        finally:
            self._inflight = None

    async def _deliver_loop(self) -> None:
        """Send what the outbox holds: after each cycle, and every few seconds for retries.
        Delivery runs beside the cycles, so a slow Slack never delays a probe."""
        outbox = self.pipeline.router.outbox
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._deliver_wake.wait(), DELIVER_POLL_S)
            self._deliver_wake.clear()
            try:
                await outbox.deliver(self.clock())
            except Exception as exc:  # the loop must go on; sinks keep secrets out of errors
                log.error("alert delivery round failed", error=type(exc).__name__)
            if self._delivery_stopping:
                return

    def _on_skip(self, event: JobEvent) -> None:
        self.skipped += 1
        self.metrics.cycle_skipped()
        reason = "still running" if event.code == EVENT_JOB_MAX_INSTANCES else "missed"
        log.warning("cycle skipped", reason=reason, skipped_total=self.skipped)

    # ------------------------------------------------------------------ runtime (web)
    def metrics_body(self) -> tuple[bytes, str]:
        return self.metrics.render()

    def health(self) -> tuple[bool, str]:
        limit = 3 * self.settings.interval_s
        now = time.monotonic()
        if self.last_cycle_mono is None:
            if now - self.started_mono <= limit:
                return True, "starting: no cycle has completed yet"
            return False, f"no cycle has completed in {now - self.started_mono:.0f} s"
        age = now - self.last_cycle_mono
        if age <= limit:
            return True, f"ok: last cycle {age:.0f} s ago"
        return False, f"stale: last cycle {age:.0f} s ago (limit {limit:.0f} s)"

    def incidents(self) -> list[Incident]:
        return self.pipeline.tracker.incidents()

    def last_observation(self) -> Observation | None:
        return self.pipeline.history.latest

    def endpoint_name(self, endpoint_id: str) -> str:
        return self.pipeline.history.view().endpoint_name(endpoint_id)

    def history(self) -> History:
        return self.pipeline.history.view()

    def episodes(self) -> list[Episode]:
        return self.pipeline.episodes.episodes()

    def register_job(self, endpoint_id: str, job_id: str) -> bool:
        return self.pipeline.jobs.register(endpoint_id, job_id, self.clock())

    def interval_s(self) -> float:
        return self.settings.interval_s

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> str:
        """Start the HTTP server and the schedule; return the server's base URL."""
        # what start-up built (modules, restored history) lives for the whole run: keep it out
        # of the cyclic collector's full passes (measured: 72 ms -> 8 ms of GC per cycle at
        # 1000 endpoints, benchmarks/README.md)
        gc.collect()
        gc.freeze()
        http = self.settings.http
        auth = None
        if http.basic_auth is not None:
            auth = (http.basic_auth.username, http.basic_auth.password.get_secret_value())
        silences = (self.pipeline.router.silences, self.clock)
        writes = WritePolicy.from_settings(self.settings)
        engine = self.pipeline.actions
        app = build_app(self, auth, silences=silences, writes=writes,
                        actions=None if engine is None else (engine, self.clock))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, http.host, http.port)
        await site.start()
        port = self._runner.addresses[0][1]
        host = f"[{http.host}]" if ":" in http.host else http.host
        scheduler = AsyncIOScheduler()
        scheduler.add_job(
            self.tick, "interval", seconds=self.settings.interval_s, id="cycle",
            next_run_time=datetime.now().astimezone(), max_instances=1, coalesce=True,
            misfire_grace_time=max(1, int(self.settings.interval_s)),
        )
        scheduler.add_listener(self._on_skip, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        scheduler.start()
        self._scheduler = scheduler
        self._deliver_wake.set()  # resume what the outbox held before a restart
        self._deliver_task = asyncio.create_task(self._deliver_loop())
        url = f"http://{host}:{port}"
        log.info("listening", url=url, interval_s=self.settings.interval_s)
        return url

    def request_stop(self) -> None:
        self._stop.set()

    async def wait(self) -> None:
        await self._stop.wait()

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop the schedule, let the cycle in flight finish (or cancel it), flush, close."""
        # pause, not shutdown: APScheduler's asyncio executor cancels the jobs in flight on
        # shutdown, which would abort the cycle this waits for
        if self._scheduler is not None:
            self._scheduler.pause()
        await _finish(self._inflight, grace_s)
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        await self._stop_delivery(grace_s)
        if self._runner is not None:
            await self._runner.cleanup()
        await self.client.aclose()
        self.store.close()
        log.info("stopped", cycles=self.cycle_no)


    async def _stop_delivery(self, grace_s: float) -> None:
        """One last delivery round (bounded by `grace_s`), then close the sinks."""
        task = self._deliver_task
        if task is not None and not task.done():
            self._delivery_stopping = True
            self._deliver_wake.set()
            await _finish(task, grace_s)
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                await sink.close()


async def _finish(task: asyncio.Task[Any] | None, grace_s: float) -> None:
    """Let `task` end within `grace_s` seconds, else cancel it and wait for that."""
    if task is None or task.done():
        return
    try:
        await asyncio.wait_for(asyncio.shield(task), grace_s)
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def serve(daemon: Daemon, on_ready: Callable[[str], None] | None = None) -> int:
    """Run `daemon` until SIGTERM or SIGINT, then shut it down cleanly; exit status 0."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop)
    url = await daemon.start()
    if on_ready is not None:
        on_ready(url)
    try:
        await daemon.wait()
    finally:
        await daemon.stop()
    return 0
