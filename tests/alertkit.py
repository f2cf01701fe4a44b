"""Helpers for the alert tests: diagnoses, a story of cycles in simulated time, routers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from slack_standin import SlackStandIn

from model.observation import Account, EndpointSample, Health, Observation
from monitor.alerts.model import Notification, Sink
from monitor.alerts.outbox import MemoryOutboxStore, Outbox, OutboxStore
from monitor.alerts.router import AlertRouter
from monitor.alerts.silences import SilenceBook
from monitor.alerts.slack import SlackSink
from monitor.state.incidents import Changes, IncidentTracker
from rules.diagnosis import Diagnosis
from rules.remedies import graphql_curl

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, as replay's simulated epoch
NAMES = {"ep1": "sdxl-images", "ep2": "whisper", "ep3": "llm-chat"}


def diag(
    code: str, eid: str | None = "ep1", severity: str = "critical", **evidence: Any
) -> Diagnosis:
    """A diagnosis with a summary, evidence and a remedy holding a command to paste."""
    scope = "endpoint" if eid else "account"
    remedy = f"Do the thing for {code}:\n" + graphql_curl(
        f'mutation {{ saveEndpoint(input: {{ id: "{eid}", workersMax: 2 }}) {{ id }} }}'
    )
    return Diagnosis(
        code, scope, severity,  # type: ignore[arg-type]
        f"{code} on {NAMES.get(eid or '', eid)}: 3 jobs wait.", remedy,
        evidence or {"in_queue": 3, "running": 0}, eid, NAMES.get(eid or "") if eid else None,
    )


def observation(cycle: int, t: float, eids: Iterable[str] = ("ep1", "ep2", "ep3")) -> Observation:
    samples = {e: EndpointSample(e, "ok", 200, Health(), listed=True) for e in eids}
    return Observation(cycle, t, "ok", 200, Account(100.0, 0.1),
                       listed_ids=frozenset(samples), endpoints=samples)


@dataclass
class Story:
    """Cycles in simulated time: each step names the diagnoses found at `t`."""

    router: AlertRouter
    tracker: IncidentTracker = field(default_factory=IncidentTracker)
    cycle: int = 0
    decided: list[Notification] = field(default_factory=list)

    async def step(self, t: float, found: Sequence[Diagnosis]) -> Changes:
        self.cycle += 1
        changes = self.tracker.update(observation(self.cycle, t), found)
        self.decided += await self.router.route(changes, t, self.cycle)
        return changes

    async def deliver(self, t: float) -> None:
        await self.router.outbox.deliver(t)

    async def run(
        self, start: float, end: float, every: float, found: Any, deliver: bool = True
    ) -> None:
        """Cycles at start, start+every, ... < end; `found(t)` gives the diagnoses."""
        t = start
        while t < end:
            await self.step(t, found(t))
            if deliver:
                await self.deliver(t)
            t += every


def make_router(
    sinks: Sequence[Sink],
    store: OutboxStore | None = None,
    *,
    group_wait_s: float = 30.0,
    repeat_interval_s: float = 4 * 3600.0,
    silences: SilenceBook | None = None,
    **outbox_kw: Any,
) -> AlertRouter:
    outbox = Outbox(store if store is not None else MemoryOutboxStore(), sinks, **outbox_kw)
    return AlertRouter(outbox=outbox, group_wait_s=group_wait_s,
                       repeat_interval_s=repeat_interval_s, silences=silences)


def webhook_sink(standin: SlackStandIn, **kw: Any) -> SlackSink:
    """A Slack sink on the stand-in's webhook, fast unless told otherwise."""
    kw.setdefault("max_per_second", 1000.0)
    kw.setdefault("timeout_s", 5.0)
    return SlackSink(webhook_url=standin.webhook_url, **kw)


def codes_of(body: dict[str, Any]) -> list[str]:
    """The diagnosis codes a delivered Slack body talks about (from its blocks)."""
    import re

    blocks = body.get("blocks") or [
        b for a in body.get("attachments", []) for b in a.get("blocks", [])
    ]
    text = "\n".join(
        b.get("text", {}).get("text", "") for b in blocks if b.get("type") == "section"
    )
    return re.findall(r"\*([a-z_]+)\* ·", text) + re.findall(r"`([a-z_]+)` on", text)
