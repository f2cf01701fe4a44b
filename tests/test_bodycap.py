"""Issue 12.2: what one answer may cost is capped, on every body the monitor reads.

Over real loopback sockets (tests/bombkit.py): a gzip bomb and a deflate bomb (256 MiB of
zeros in ~260 kB), an endless chunked body, an endless gzip stream, a deflate stream of
empty blocks (decodes to nothing: only the wire cap ends it), a Content-Length of 1 TB
that never arrives. Each is a `malformed` answer naming the cap, found before the call's
timeout, the test process's peak RSS grows by no more than a few times the cap, and the
next call or cycle on the same client works.
"""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator

import pytest
from bombkit import ENDPOINT_ID, BombServer, bomb, peak_rss_bytes, peak_rss_reset, rss_bytes
from proxykit import LoopbackProxy

from monitor.alerts.alertmanager import AlertmanagerSink
from monitor.alerts.model import DeliveryError, Message, Notification
from monitor.alerts.router import AlertRouter
from monitor.alerts.slack import SlackSink
from monitor.config import settings_from_dict
from monitor.pipeline.cycle import Pipeline
from monitor.pipeline.history import HistoryBuffer
from monitor.pipeline.probes import Prober
from monitor.runpod import Failure, Ok, RunPodClient
from monitor.runpod.client import client_for
from monitor.state.incidents import Incident, IncidentTracker
from rules.diagnosis import Diagnosis

KEY = "rpa_BODYCAPSECRET0123456789abcdef"
MIB = 1024 * 1024
BOMB_BYTES = 256 * MIB  # what the gzip and deflate bombs inflate to
DEFAULT_DECODED_CAP = 64 * MIB  # runpod.max_decoded_bytes's default
SINK_CAP = 1 * MIB  # what a Slack or Alertmanager answer may cost
TIMEOUT_S = 5.0
HOSTILE = ("gzip", "deflate", "endless", "endless-gzip", "empty-deflate", "huge-length")


@pytest.fixture(scope="module")
def _bombs() -> None:
    for encoding in ("gzip", "deflate"):  # built once (~0.7 s each), before any is timed
        bomb(encoding, BOMB_BYTES)


@pytest.fixture
async def server(_bombs: None) -> AsyncIterator[BombServer]:
    srv = BombServer(decoded_bytes=BOMB_BYTES)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


class Peak:
    """How much this process's peak RSS rose above its RSS at the start of the block."""

    growth = 0

    def __enter__(self) -> Peak:
        gc.collect()
        if not peak_rss_reset():
            pytest.skip("this kernel does not let a process reset its peak RSS")
        self.base = rss_bytes()
        return self

    def __exit__(self, *exc: object) -> None:
        self.growth = peak_rss_bytes() - self.base


@pytest.fixture
def peak() -> Peak:
    return Peak()


def _client(srv: BombServer) -> RunPodClient:
    return RunPodClient(
        api_key=KEY, graphql_url=f"{srv.base}/graphql", rest_url=f"{srv.base}/v2",
        timeout_s=TIMEOUT_S,
    )


@pytest.fixture(params=["direct", "proxy"])
async def via(request: pytest.FixtureRequest,
              monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LoopbackProxy | None]:
    """Straight to the server, or through a loopback proxy the environment names."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    if request.param == "direct":
        yield None
        return
    async with LoopbackProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        yield proxy


async def _call(client: RunPodClient, target: str) -> Ok[object] | Failure:
    if target == "graphql":
        return await client.myself()
    return await client.health(ENDPOINT_ID)


@pytest.mark.parametrize("target", ["graphql", "rest"])
@pytest.mark.parametrize("kind", HOSTILE)
async def test_hostile_answer_is_malformed_within_the_cap(
    server: BombServer, peak: Peak, kind: str, target: str, via: LoopbackProxy | None
) -> None:
    """GraphQL (control plane) and /health (data plane), straight and through a proxy in
    the environment, with the default caps."""
    server.kinds[target] = kind
    async with _client(server) as client:
        with peak:
            start = time.monotonic()
            result = await _call(client, target)
            elapsed = time.monotonic() - start
        assert peak.growth < 3 * DEFAULT_DECODED_CAP, f"peak RSS +{peak.growth / MIB:.0f} MiB"
        assert isinstance(result, Failure), result
        assert result.kind == "malformed", result
        assert "cap (runpod.max_" in result.message, result.message
        assert elapsed < TIMEOUT_S, f"stopped by the timeout, not the cap ({elapsed:.1f} s)"
        server.kinds[target] = "ok"
        assert isinstance(await _call(client, target), Ok)
    assert via is None or len(via.seen) == 2


async def test_a_daemon_cycle_after_bombs_works(server: BombServer, peak: Peak) -> None:
    """The daemon's cycle with the caps from config: a GraphQL bomb, then a /health bomb,
    each a malformed call within the configured cap; then a clean cycle."""
    settings = settings_from_dict({"runpod": {
        "graphql_url": f"{server.base}/graphql", "rest_url": f"{server.base}/v2",
        "timeout_s": TIMEOUT_S, "max_answer_bytes": 1 * MIB, "max_decoded_bytes": 4 * MIB,
    }}, env={"RUNPOD_API_KEY": KEY})
    t0 = time.time()
    async with client_for(settings) as client:
        pipeline = Pipeline(
            prober=Prober(client, configured=settings.endpoints),
            thresholds=settings.rules, history=HistoryBuffer(settings.state.retention_s),
            tracker=IncidentTracker(), router=AlertRouter([]),
        )
        server.kinds["graphql"] = "gzip"
        with peak:
            first = await pipeline.cycle(1, t0)
        assert not first.observation.control_ok
        assert [(c.probe, c.outcome) for c in first.calls] == [("graphql", "malformed")]
        assert peak.growth < 32 * MIB, f"peak RSS +{peak.growth / MIB:.0f} MiB"

        server.kinds.update(graphql="ok", rest="endless-gzip")
        with peak:
            second = await pipeline.cycle(2, t0 + 30)
        assert second.observation.control_ok
        assert ("health", "malformed") in [(c.probe, c.outcome) for c in second.calls]
        assert peak.growth < 32 * MIB, f"peak RSS +{peak.growth / MIB:.0f} MiB"

        server.kinds["rest"] = "ok"
        third = await pipeline.cycle(3, t0 + 60)
    assert third.observation.control_ok
    assert {c.outcome for c in third.calls} == {"ok"}
    assert third.observation.endpoints[ENDPOINT_ID].health_known
    assert third.active == []


def _message() -> Message:
    d = Diagnosis("crash_loop", "endpoint", "critical", "crash_loop on bomb-target",
                  "Roll back the image.", {"in_queue": 3}, ENDPOINT_ID, "bomb-target")
    incident = Incident(d, time.time(), 1)
    n = Notification("firing", incident, time.time(), 1, text="crash_loop on bomb-target")
    return Message("firing", "slack", "b", time.time(), 1, (n,), "crash_loop on bomb-target")


@pytest.mark.parametrize("how", ["webhook", "bot"])
@pytest.mark.parametrize("kind", HOSTILE)
async def test_slack_answer_is_capped(
    server: BombServer, peak: Peak, kind: str, how: str
) -> None:
    """slack_sdk reads Slack's answer itself (webhook: text(), chat.postMessage: json()):
    through the sink's capped session, a hostile answer is a retryable DeliveryError."""
    if how == "webhook":
        sink = SlackSink(webhook_url=f"{server.base}/services/T0/B0/bombWebhookSecret01234",
                         timeout_s=TIMEOUT_S, max_per_second=100)
    else:
        sink = SlackSink(bot_token="xoxb-bomb-token-secret", channel="C0BOMB",
                         base_url=f"{server.base}/api/", timeout_s=TIMEOUT_S,
                         max_per_second=100)
    server.kinds["slack"] = kind
    try:
        with peak:
            start = time.monotonic()
            with pytest.raises(DeliveryError) as info:
                await sink.send(_message())
            elapsed = time.monotonic() - start
        assert peak.growth < 32 * SINK_CAP, f"peak RSS +{peak.growth / MIB:.0f} MiB"
        assert "cap" in str(info.value), info.value
        assert not info.value.permanent
        assert elapsed < TIMEOUT_S
        server.kinds["slack"] = "ok"
        await sink.send(_message())
    finally:
        await sink.close()


@pytest.mark.parametrize("kind", HOSTILE)
async def test_alertmanager_answer_is_capped(server: BombServer, peak: Peak, kind: str) -> None:
    """Alertmanager's error answer (read for the delivery error's text) is capped too."""
    sink = AlertmanagerSink(server.base, timeout_s=TIMEOUT_S)
    server.kinds["alertmanager"] = kind
    try:
        with peak:
            start = time.monotonic()
            with pytest.raises(DeliveryError) as info:
                await sink.send(_message())
            elapsed = time.monotonic() - start
        assert peak.growth < 32 * SINK_CAP, f"peak RSS +{peak.growth / MIB:.0f} MiB"
        assert "cap" in str(info.value), info.value
        assert elapsed < TIMEOUT_S
        server.kinds["alertmanager"] = "ok"
        await sink.send(_message())
    finally:
        await sink.close()
