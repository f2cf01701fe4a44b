"""Alerts people act on, as Slack receives them: a loopback stand-in records every post.

Incidents are played in simulated time through the real tracker, router, outbox and Slack
sink (slack_sdk over HTTP); the stand-in answers as each test says.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from alertkit import T0, Story, codes_of, diag, make_router, webhook_sink
from slack_standin import BOT_TOKEN, SlackStandIn

from monitor.alerts.model import DeliveryError, Message, Notification
from monitor.alerts.outbox import MemoryOutboxStore
from monitor.alerts.silences import SilenceBook
from monitor.alerts.slack import SlackSink
from monitor.config import Silence
from monitor.state.incidents import Incident

HOUR = 3600.0


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    server = await SlackStandIn().start()
    yield server
    await server.stop()


def kinds(standin: SlackStandIn) -> list[tuple[str, list[str]]]:
    """(kind, codes) of each delivered message, kind read from its header or its mark."""
    out = []
    for r in standin.delivered():
        body = r.body
        if "attachments" in body:
            kind = "resolved"
        elif "Still firing" in body["blocks"][0]["text"]["text"]:
            kind = "reminder"
        else:
            kind = "firing"
        out.append((kind, codes_of(body)))
    return out


async def test_one_firing_and_one_resolved_per_incident(standin: SlackStandIn) -> None:
    """An incident that lasts 5 minutes gives exactly one firing and one resolved message."""
    story = Story(make_router([webhook_sink(standin)]))
    await story.run(T0, T0 + 300, 30, lambda t: [diag("crash_loop")])
    await story.run(T0 + 300, T0 + 600, 30, lambda t: [])
    assert kinds(standin) == [("firing", ["crash_loop"]), ("resolved", ["crash_loop"])]
    firing, resolved = (r.body for r in standin.delivered())
    assert firing["text"].startswith("[CRITICAL] crash_loop on sdxl-images (ep1)")
    assert resolved["text"] == "[RESOLVED] crash_loop on sdxl-images (ep1) after 5 min."
    assert resolved["attachments"][0]["color"] == "#2EB67D"  # green-marked
    assert len(resolved["attachments"][0]["blocks"]) == 1  # short


async def test_nothing_for_an_incident_shorter_than_group_wait(standin: SlackStandIn) -> None:
    """An incident that resolves within group_wait (30 s) sends nothing at all, not even
    a resolved message."""
    story = Story(make_router([webhook_sink(standin)]))
    await story.run(T0, T0 + 20, 10, lambda t: [diag("crash_loop")])  # t = 0, 10
    await story.run(T0 + 20, T0 + 200, 10, lambda t: [])
    assert standin.requests == []
    assert not story.router.announced


async def test_group_wait_is_measured_from_the_incident(standin: SlackStandIn) -> None:
    """The firing message goes out at the first cycle at least group_wait after `since`."""
    story = Story(make_router([webhook_sink(standin)], group_wait_s=60))
    sent_at: list[float] = []
    t = T0
    while t < T0 + 300:
        await story.step(t, [diag("crash_loop")])
        before = len(standin.requests)
        await story.deliver(t)
        if len(standin.requests) > before:
            sent_at.append(t - T0)
        t += 30
    assert sent_at == [60.0]


async def test_one_endpoints_incidents_in_one_message(standin: SlackStandIn) -> None:
    """Three incidents of one endpoint raised in one cycle, and one raised within
    group_wait after them, arrive in ONE message; another endpoint gets its own."""
    story = Story(make_router([webhook_sink(standin)], group_wait_s=30))
    first = [diag("crash_loop"), diag("job_failures", severity="warning"),
             diag("workers_unhealthy"), diag("no_gpu_capacity", "ep2")]
    await story.step(T0, first)
    await story.deliver(T0)
    await story.step(T0 + 15, [*first, diag("queue_backlog", severity="warning")])
    await story.deliver(T0 + 15)
    assert standin.requests == []
    await story.step(T0 + 30, [*first, diag("queue_backlog", severity="warning")])
    await story.deliver(T0 + 30)
    got = kinds(standin)
    assert len(got) == 2, got
    assert sorted(got[0][1]) == ["crash_loop", "job_failures", "queue_backlog",
                                 "workers_unhealthy"]
    assert got[1][1] == ["no_gpu_capacity"]
    body = standin.delivered()[0].body
    assert body["text"].startswith("[CRITICAL] 4 problems on sdxl-images (ep1)")
    assert "4 problems" in body["blocks"][0]["text"]["text"]
    # replay's view: one entry per incident, all with the message's text
    ep1 = [n for n in story.decided if n.incident.key[1] == "ep1"]
    assert len(ep1) == 4
    assert len({n.text for n in ep1}) == 1
    assert len({n.batch for n in ep1}) == 1


async def test_reminders_after_repeat_interval(standin: SlackStandIn) -> None:
    """While an announced incident stays active, a reminder goes out every repeat_interval
    (4 h): 9 hours give one firing and two reminders, then one resolved."""
    story = Story(make_router([webhook_sink(standin)]))
    await story.run(T0, T0 + 9 * HOUR, 600, lambda t: [diag("crash_loop")])
    await story.run(T0 + 9 * HOUR, T0 + 10 * HOUR, 600, lambda t: [])
    assert [k for k, _ in kinds(standin)] == ["firing", "reminder", "reminder", "resolved"]
    reminders = [n for n in story.decided if n.kind == "reminder"]
    assert [(n.n, n.t - T0) for n in reminders] == [(1, 4 * HOUR), (2, 8 * HOUR)]
    assert reminders[0].text.startswith("[REMINDER] [CRITICAL] crash_loop on sdxl-images (ep1) "
                                        "still active after 4.0 h")


async def test_a_severity_rise_is_announced_again(standin: SlackStandIn) -> None:
    """A warning that turns critical is announced again at once, and only once; it still
    gets a single resolved message."""
    story = Story(make_router([webhook_sink(standin)]))
    await story.run(T0, T0 + 300, 30, lambda t: [diag("no_gpu_capacity", severity="warning")])
    await story.run(T0 + 300, T0 + 900, 30,
                    lambda t: [diag("no_gpu_capacity", severity="critical")])
    await story.run(T0 + 900, T0 + 1200, 30, lambda t: [])
    assert kinds(standin) == [("firing", ["no_gpu_capacity"]), ("firing", ["no_gpu_capacity"]),
                              ("resolved", ["no_gpu_capacity"])]
    first, second, _ = (r.body["text"] for r in standin.delivered())
    assert first.startswith("[WARNING] no_gpu_capacity")
    assert second.startswith("[CRITICAL] no_gpu_capacity")


async def test_inhibition_auth_invalid_mutes_everything_else(standin: SlackStandIn) -> None:
    """auth_invalid mutes everything else: an account warning raised beside it is never
    announced, and an endpoint incident announced before gets no reminder while it holds."""
    story = Story(make_router([webhook_sink(standin)]))
    await story.run(T0, T0 + HOUR, 600, lambda t: [diag("crash_loop")])
    # the key goes bad: the tracker holds crash_loop (cannot see), the router mutes it
    both = [diag("auth_invalid", None), diag("low_balance", None, "warning"),
            diag("crash_loop")]
    await story.run(T0 + HOUR, T0 + 6 * HOUR, 600, lambda t: both)
    got = kinds(standin)
    # crash_loop's reminder (due at 4 h) is muted; auth_invalid's own (at 5 h) is not
    assert got == [("firing", ["crash_loop"]), ("firing", ["auth_invalid"]),
                   ("reminder", ["auth_invalid"])], got
    assert ("crash_loop", "ep1") in story.tracker.active  # held, not resolved


async def test_inhibition_balance_exhausted_mutes_its_endpoint(standin: SlackStandIn) -> None:
    """balance_exhausted mutes the other diagnoses of its endpoint: raised together, only
    the cause is announced; an announced symptom ends with a resolved message that names
    the cause; another endpoint is not muted."""
    story = Story(make_router([webhook_sink(standin)]))
    await story.run(T0, T0 + 120, 30, lambda t: [diag("workers_unhealthy")])
    cause = [diag("balance_exhausted"), diag("crash_loop"), diag("crash_loop", "ep2")]
    await story.run(T0 + 120, T0 + 300, 30, lambda t: cause)
    got = kinds(standin)
    assert got[0] == ("firing", ["workers_unhealthy"])
    assert ("resolved", ["workers_unhealthy"]) in got
    firing_codes = sorted(c for k, cs in got if k == "firing" for c in cs)
    assert firing_codes == ["balance_exhausted", "crash_loop", "workers_unhealthy"]
    ep2 = [r for r in standin.delivered() if "(ep2)" in r.body["text"]]
    assert len(ep2) == 1
    assert "crash_loop" in ep2[0].body["text"]
    resolved = next(r.body for r in standin.delivered() if "attachments" in r.body)
    assert "now explained by balance_exhausted" in resolved["text"]


async def test_router_inhibits_even_without_the_trackers_suppression(
    standin: SlackStandIn,
) -> None:
    """Handed a cause and its symptoms directly, the router announces only the cause."""
    from monitor.state.incidents import Changes

    router = make_router([webhook_sink(standin)], group_wait_s=0)
    raised = [Incident(diag(c), since=T0, raised_cycle=1)
              for c in ("balance_exhausted", "crash_loop", "not_scheduling")]
    await router.route(Changes(raised=raised), T0, 1)
    await router.outbox.deliver(T0)
    assert kinds(standin) == [("firing", ["balance_exhausted"])]


async def test_silence_from_config_mutes_until_it_expires(standin: SlackStandIn) -> None:
    """A configured silence (code + endpoint, with an expiry) mutes the incident; when it
    expires while the incident is still active, the incident is announced then."""
    until = datetime.fromtimestamp(T0 + HOUR, UTC)
    book = SilenceBook([Silence(code="crash_loop", endpoint_id="ep1", until=until)])
    story = Story(make_router([webhook_sink(standin)], silences=book))
    found = [diag("crash_loop"), diag("crash_loop", "ep2")]
    await story.run(T0, T0 + 2 * HOUR, 600, lambda t: found)
    sent = [(r.body["text"].split(":")[0], r.at) for r in standin.delivered()]
    assert len(sent) == 2
    firing = [n for n in story.decided if n.kind == "firing"]
    assert [(n.incident.key[1], n.t - T0) for n in firing] == [("ep2", 600.0), ("ep1", HOUR)]


async def test_silence_by_endpoint_only(standin: SlackStandIn) -> None:
    """A silence naming only an endpoint mutes every diagnosis of that endpoint."""
    book = SilenceBook()
    book.add(None, "ep1", T0 + 10 * HOUR, T0)
    story = Story(make_router([webhook_sink(standin)], silences=book))
    found = [diag("crash_loop"), diag("job_failures", severity="warning"),
             diag("crash_loop", "ep2")]
    await story.run(T0, T0 + HOUR, 600, lambda t: found)
    assert [c for _, c in kinds(standin)] == [["crash_loop"]]
    assert "(ep2)" in standin.delivered()[0].body["text"]


async def test_min_severity_per_sink(standin: SlackStandIn) -> None:
    """Slack's min_severity (warning by default) keeps info diagnoses out of Slack, and an
    incident below it that is never announced never gets a resolved message."""
    story = Story(make_router([webhook_sink(standin, min_severity="critical")]))
    found = [diag("job_failures", severity="warning"), diag("idle_spend", None, "info"),
             diag("crash_loop", "ep2")]
    await story.run(T0, T0 + 300, 30, lambda t: found)
    await story.run(T0 + 300, T0 + 600, 30, lambda t: [])
    assert kinds(standin) == [("firing", ["crash_loop"]), ("resolved", ["crash_loop"])]


async def test_retry_after_is_honoured(standin: SlackStandIn) -> None:
    """Slack's 429 with Retry-After: 2 makes the sink wait at least 2 s before the retry,
    and the message is then delivered once."""
    standin.retry_after = 2
    standin.script = ["429"]
    story = Story(make_router([webhook_sink(standin)], group_wait_s=0))
    await story.step(T0, [diag("crash_loop")])
    await story.deliver(T0)
    assert [r.answered for r in standin.requests] == ["429", "ok"]
    gap = standin.requests[1].at - standin.requests[0].at
    print(f"Retry-After 2 s -> measured gap {gap:.3f} s")
    assert 2.0 <= gap < 4.0
    assert len(standin.delivered()) == 1


async def test_long_retry_after_holds_the_outbox(standin: SlackStandIn) -> None:
    """A Retry-After longer than the sink waits inline goes back to the outbox, which
    sends nothing to Slack until it has passed (in the daemon's time), then delivers."""
    standin.retry_after = 120
    standin.mode = "429"
    sink = webhook_sink(standin, rate_limit_retries=2, max_inline_wait_s=30)
    story = Story(make_router([sink], group_wait_s=0))
    started = time.monotonic()
    await story.step(T0, [diag("crash_loop")])
    await story.deliver(T0)
    assert time.monotonic() - started < 2  # no inline wait for 120 s
    assert len(standin.requests) == 1
    standin.mode = "ok"
    await story.deliver(T0 + 60)  # still within Retry-After: not even tried
    assert len(standin.requests) == 1
    await story.deliver(T0 + 121)
    assert [r.answered for r in standin.requests] == ["429", "ok"]


async def test_at_most_one_message_per_second(standin: SlackStandIn) -> None:
    """With max_per_second 1, three messages (three endpoints) are spaced by >= 1 s."""
    story = Story(make_router([webhook_sink(standin, max_per_second=1.0)], group_wait_s=0))
    await story.step(T0, [diag("crash_loop", e) for e in ("ep1", "ep2", "ep3")])
    await story.deliver(T0)
    at = [r.at for r in standin.requests]
    gaps = [b - a for a, b in itertools.pairwise(at)]
    print("gaps between posts:", [f"{g:.3f}" for g in gaps])
    assert len(at) == 3
    assert all(g >= 0.99 for g in gaps), gaps


async def test_ten_minute_outage_loses_nothing_and_sends_nothing_twice(
    standin: SlackStandIn,
) -> None:
    """Slack answers 500 for 10 minutes (simulated) while incidents fire and resolve:
    afterwards every message arrives exactly once and in order, firing before resolved."""
    now = {"t": T0}
    outage = (T0 + 60, T0 + 660)
    attempts: list[tuple[float, str]] = []

    def mode() -> str:
        answer = "500" if outage[0] <= now["t"] < outage[1] else "ok"
        attempts.append((now["t"] - T0, answer))
        return answer

    standin.mode_fn = mode
    story = Story(make_router([webhook_sink(standin)]))

    def found(t: float) -> list:
        out = [diag("crash_loop")]  # all along
        if T0 + 120 <= t < T0 + 400:
            out.append(diag("no_gpu_capacity", "ep2"))  # fires and resolves in the outage
        if t >= T0 + 500:
            out.append(diag("workers_unhealthy", "ep3"))  # fires in the outage, stays
        return out

    t = T0
    while t < T0 + 1500:
        now["t"] = t
        await story.step(t, found(t))
        await story.deliver(t)
        t += 30
    failed = [r for r in standin.requests if r.answered == "500"]
    assert failed, "the outage was not exercised"
    texts = [r.body["text"].splitlines()[0][:60] for r in standin.delivered()]
    assert len(texts) == len(set(texts)), texts  # nothing twice
    got = kinds(standin)
    assert got == [
        ("firing", ["crash_loop"]),
        ("firing", ["no_gpu_capacity"]),
        ("resolved", ["no_gpu_capacity"]),
        ("firing", ["workers_unhealthy"]),
    ], got
    assert story.router.outbox.store.pending() == 0
    resumed = min(t for t, a in attempts if t >= outage[1] - T0 and a == "ok")
    print(f"outage 60..660 s: failed attempts at {[t for t, a in attempts if a == '500']} s; "
          f"delivery resumed at {resumed:.0f} s ({resumed - 660:.0f} s after Slack came back)")
    assert resumed - 660 <= 300 + 30  # the backoff cap plus one cycle


async def test_hanging_slack_times_out_and_is_retried(standin: SlackStandIn) -> None:
    """A Slack that never answers costs one timeout; the message stays queued and is
    delivered on the next attempt after the backoff."""
    standin.script = ["hang"]
    sink = webhook_sink(standin, timeout_s=1.0)
    story = Story(make_router([sink], group_wait_s=0))
    await story.step(T0, [diag("crash_loop")])
    started = time.monotonic()
    await story.deliver(T0)
    assert time.monotonic() - started < 5
    assert story.router.outbox.store.pending() == 1
    await story.deliver(T0 + 10)
    assert len(standin.delivered()) == 1
    assert story.router.outbox.store.pending() == 0


async def test_bot_token_posts_to_chat_post_message(standin: SlackStandIn) -> None:
    """With a bot token, messages go to chat.postMessage on the channel, with the token
    as a bearer and the same Block Kit body; a 429 there is honoured too."""
    standin.script = ["429"]
    sink = SlackSink(bot_token=BOT_TOKEN, channel="#ops", base_url=standin.api_url,
                     max_per_second=1000.0)
    story = Story(make_router([sink], group_wait_s=0))
    await story.step(T0, [diag("crash_loop")])
    await story.deliver(T0)
    assert [r.answered for r in standin.requests] == ["429", "ok"]
    req = standin.delivered()[0]
    assert req.path == "/api/chat.postMessage"
    assert req.body["channel"] == "#ops"
    assert req.body["blocks"][0]["type"] == "header"
    assert req.body["text"].startswith("[CRITICAL] crash_loop")


async def test_refused_blocks_fall_back_to_plain_text(standin: SlackStandIn) -> None:
    """If Slack refuses the blocks (invalid_blocks), the message is sent once more as
    plain text rather than lost or retried forever."""
    standin.script = ["invalid_blocks"]
    story = Story(make_router([webhook_sink(standin)], group_wait_s=0))
    await story.step(T0, [diag("crash_loop")])
    await story.deliver(T0)
    assert [r.answered for r in standin.requests] == ["invalid_blocks", "ok"]
    assert set(standin.delivered()[0].body) == {"text"}
    # without the blocks, the plain text carries the whole fix, command included
    retry = standin.delivered()[0].body["text"]
    assert "Fix: Do the thing for crash_loop:" in retry
    assert "curl -s https://api.runpod.io/graphql" in retry
    assert story.router.outbox.store.pending() == 0


async def test_end_to_end_over_the_simulator(standin: SlackStandIn, sim_scenarios_dir) -> None:
    """The real pipeline over the throttled-capacity scenario (simulator on loopback,
    simulated time) posts one firing and one resolved message for no_gpu_capacity."""
    from monitor.config import load_settings
    from monitor.pipeline.cycle import build_pipeline
    from monitor.runpod.client import RunPodClient
    from monitor.simulator import SimulatorServer, load_scenario

    scenario = load_scenario(sim_scenarios_dir / "throttled-capacity.yaml")
    settings = load_settings(None, env={}, overrides={"rules": scenario.monitor.get("rules", {})})
    server = SimulatorServer(scenario, "k" * 24)
    url = await server.start()
    try:
        async with RunPodClient(api_key="k" * 24, graphql_url=f"{url}/graphql",
                                rest_url=f"{url}/v2", timeout_s=0.5) as client:
            pipeline = build_pipeline(settings, client, sinks=[webhook_sink(standin)],
                                      interval_s=scenario.interval_s)
            for k in range(1, scenario.total_cycles + 1):
                server.set_cycle(k)
                t = T0 + (k - 1) * scenario.interval_s
                await pipeline.cycle(k, t)
                await pipeline.router.outbox.deliver(t)
    finally:
        await server.stop()
    assert kinds(standin) == [("firing", ["no_gpu_capacity"]), ("resolved", ["no_gpu_capacity"])]


async def test_delivery_error_never_holds_the_webhook_secret() -> None:
    """Connection refused, 500 and timeouts surface as DeliveryError texts without the
    webhook URL's secret path, and without a chained cause that would hold it."""
    standin = await SlackStandIn(mode="500").start()
    secret_path = "/services/T000TEST/B000TEST/standinWebhookSecret0123456789"
    port = standin.port
    message = Message("firing", "slack", "b", T0, 1, (
        Notification("firing", Incident(diag("crash_loop"), T0, 1), T0, 1, text="x"),), "x")
    try:
        for url, mode in ((standin.webhook_url, "500"), (standin.webhook_url, "hang")):
            standin.mode = mode
            sink = SlackSink(webhook_url=url, timeout_s=1.0, max_per_second=1000.0)
            with pytest.raises(DeliveryError) as err:
                await sink.send(message)
            assert "standinWebhookSecret" not in str(err.value)
            e = err.value
            assert e.__cause__ is None
            assert e.__context__ is None or e.__suppress_context__
            assert "standinWebhookSecret" not in repr(sink)
    finally:
        await standin.stop()
    # the port is closed now: connection refused
    sink = SlackSink(webhook_url=f"http://127.0.0.1:{port}{secret_path}", timeout_s=1.0)
    with pytest.raises(DeliveryError) as err:
        await sink.send(message)
    assert "standinWebhookSecret" not in str(err.value), str(err.value)


async def test_outbox_logs_never_hold_the_secret(standin: SlackStandIn, capsys) -> None:
    """What the outbox logs about failed Slack deliveries holds no webhook secret."""
    import structlog

    from monitor import logs

    logs.configure("debug", "json")
    try:
        standin.mode = "500"
        story = Story(make_router([webhook_sink(standin)], store=MemoryOutboxStore(),
                                  group_wait_s=0))
        await story.step(T0, [diag("crash_loop")])
        await story.deliver(T0)
        err = capsys.readouterr().err
    finally:
        structlog.reset_defaults()
    assert "alert delivery failed" in err
    assert "standinWebhookSecret" not in err
    assert "Secret0123456789" not in err
