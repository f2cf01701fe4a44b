"""The outbox over the real SQLite store: written before sending, resumed after a restart,
never queued twice, retried with capped backoff; and the alert metrics."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alertkit import T0, Story, diag, make_router, observation, webhook_sink
from prometheus_client.parser import text_string_to_metric_families
from slack_standin import SlackStandIn

from model.history import Memory
from monitor.alerts.outbox import MAX_BACKOFF_S, backoff_s
from monitor.alerts.router import AlertRouter
from monitor.metrics import MonitorMetrics
from monitor.state.incidents import IncidentTracker
from monitor.state.store import Store

HOUR = 3600.0


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    server = await SlackStandIn().start()
    yield server
    await server.stop()


def restart(story: Story, store: Store, standin: SlackStandIn, *, announced: bool = True) -> Story:
    """A new process: a new router and outbox over the same database; the tracker's
    incidents and (if the last cycle was saved) the announced keys come back."""
    router = make_router([webhook_sink(standin)], store)
    if announced:
        router.restore(store.load().announced)
    return Story(router, IncidentTracker(dict(story.tracker.active)), story.cycle)


def save(story: Story, store: Store, t: float) -> None:
    store.save_cycle(observation(story.cycle, t), Memory(), story.tracker.active,
                     story.router.announced)


async def test_written_before_sending_and_resumed_after_a_restart(
    standin: SlackStandIn, tmp_path: Path
) -> None:
    """A notification is in the SQLite outbox before any send; a process that dies before
    delivering leaves it there, and the next process delivers it exactly once."""
    store = Store(tmp_path / "state.db")
    story = Story(make_router([webhook_sink(standin)], store, group_wait_s=0))
    await story.step(T0, [diag("crash_loop")])
    save(story, store, T0)
    assert store.pending("slack") == 1
    assert standin.requests == []
    store.close()  # the process dies here, before delivering

    store = Store(tmp_path / "state.db")
    story2 = restart(story, store, standin)
    await story2.deliver(T0 + 5)
    await story2.step(T0 + 30, [diag("crash_loop")])
    await story2.deliver(T0 + 30)
    assert len(standin.delivered()) == 1
    assert store.pending() == 0
    store.close()


async def test_re_deciding_after_a_restart_queues_nothing_twice(
    standin: SlackStandIn, tmp_path: Path
) -> None:
    """A crash after queueing but before the cycle (and its announced keys) was saved makes
    the next process decide the same firing again; the dedupe key keeps it single."""
    store = Store(tmp_path / "state.db")
    story = Story(make_router([webhook_sink(standin)], store, group_wait_s=0))
    await story.step(T0, [diag("crash_loop"), diag("job_failures", severity="warning")])
    await story.deliver(T0)
    assert len(standin.delivered()) == 1
    story2 = restart(story, store, standin, announced=False)  # the save never happened
    await story2.step(T0 + 30, [diag("crash_loop"), diag("job_failures", severity="warning")])
    await story2.deliver(T0 + 30)
    assert len(standin.delivered()) == 1
    assert story2.router.announced == {("crash_loop", "ep1"), ("job_failures", "ep1")}
    store.close()


async def test_reminders_and_resolved_survive_a_restart(
    standin: SlackStandIn, tmp_path: Path
) -> None:
    """Restarts around a reminder neither repeat nor skip it, and the resolved message of
    an incident announced before the restart still arrives."""
    store = Store(tmp_path / "state.db")
    story = Story(make_router([webhook_sink(standin)], store))
    found = [diag("crash_loop")]
    t = T0
    while t <= T0 + 4 * HOUR:  # the 4 h reminder is decided and sent at the last cycle
        await story.step(t, found)
        await story.deliver(t)
        save(story, store, t)
        t += 600
    assert len(standin.delivered()) == 2
    for _ in range(2):  # two restarts in a row, both re-deciding reminder 1
        story = restart(story, store, standin)
        await story.step(t, found)
        await story.deliver(t)
        save(story, store, t)
        t += 600
    assert len(standin.delivered()) == 2
    story = restart(story, store, standin)
    await story.step(t, [])
    await story.deliver(t)
    texts = [r.body["text"].split(" ")[0] for r in standin.delivered()]
    assert texts == ["[CRITICAL]", "[REMINDER]", "[RESOLVED]"]
    store.close()


async def test_restart_during_an_outage_resumes_in_order(
    standin: SlackStandIn, tmp_path: Path
) -> None:
    """Slack is down; the monitor restarts twice meanwhile; when Slack is back, the queued
    firing and resolved arrive once each, firing first."""
    store = Store(tmp_path / "state.db")
    standin.mode = "500"
    story = Story(make_router([webhook_sink(standin)], store, group_wait_s=0))
    await story.step(T0, [diag("crash_loop")])
    await story.deliver(T0)
    save(story, store, T0)
    story = restart(story, store, standin)
    await story.step(T0 + 30, [])
    await story.deliver(T0 + 30)
    save(story, store, T0 + 30)
    story = restart(story, store, standin)
    standin.mode = "ok"
    await story.deliver(T0 + 60)
    got = [r.body["text"].split(" ")[0] for r in standin.delivered()]
    assert got == ["[CRITICAL]", "[RESOLVED]"]
    assert sum(r.answered == "500" for r in standin.requests) == 2
    store.close()


def test_backoff_doubles_to_a_five_minute_cap_with_jitter() -> None:
    """The wait after k failures in a row is in [b/2, b] for b = 5 s * 2^(k-1), capped at
    300 s; jitter spreads it."""
    rng = random.Random(7)
    for k in range(1, 15):
        step = min(MAX_BACKOFF_S, 5.0 * 2 ** (k - 1))
        waits = {backoff_s(k, rng) for _ in range(20)}
        assert all(step / 2 <= w <= step for w in waits)
        assert len(waits) > 1
    assert max(backoff_s(50, rng) for _ in range(100)) <= MAX_BACKOFF_S


async def test_metrics_count_sent_failed_and_pending(standin: SlackStandIn) -> None:
    """runpod_alerts_sent_total{sink,kind}, runpod_alerts_failed_total{sink} and
    runpod_alerts_pending{sink} follow the outbox."""
    metrics = MonitorMetrics()
    standin.script = ["500"]
    router: AlertRouter = make_router([webhook_sink(standin)], group_wait_s=0, metrics=metrics)
    story = Story(router)
    await story.step(T0, [diag("crash_loop"), diag("job_failures", severity="warning")])

    def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        body, _ = metrics.render()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(body.decode())
            for s in fam.samples if s.name.startswith("runpod_alerts")
        }

    assert samples()[("runpod_alerts_pending", (("sink", "slack"),))] == 2
    await story.deliver(T0)
    s = samples()
    assert s[("runpod_alerts_failed_total", (("sink", "slack"),))] == 1
    assert s[("runpod_alerts_pending", (("sink", "slack"),))] == 2
    await story.deliver(T0 + 10)
    await story.step(T0 + 30, [])
    await story.deliver(T0 + 30)
    s = samples()
    assert s[("runpod_alerts_sent_total", (("kind", "firing"), ("sink", "slack")))] == 2
    assert s[("runpod_alerts_sent_total", (("kind", "resolved"), ("sink", "slack")))] == 2
    assert s[("runpod_alerts_pending", (("sink", "slack"),))] == 0
