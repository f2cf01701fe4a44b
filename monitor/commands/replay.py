"""`replay`: the real pipeline over a scenario, over real HTTP, in simulated time."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from monitor.alerts.router import Notification, RecordingSink, Sink
from monitor.config import load_settings
from monitor.pipeline.cycle import build_pipeline
from monitor.runpod.client import RunPodClient
from monitor.simulator import Scenario, SimulatorServer
from monitor.simulator.scenario import deep_merge
from monitor.state.incidents import Incident
from rules.diagnosis import Diagnosis

# Simulated runs start here, so dates in summaries (runway) are the same on every run; a
# scenario's `v2.epoch` moves it (the simulator's v2 times count from there).
EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def epoch_of(scenario: Scenario) -> float:
    """Unix time of the scenario's simulated t=0."""
    return datetime.fromisoformat(scenario.v2.epoch.replace("Z", "+00:00")).timestamp()
# A timeout fault holds the request; the client gives up after this many real seconds.
REPLAY_TIMEOUT_S = 0.5


@dataclass
class ReplayResult:
    scenario: Scenario
    cycles: list[dict[str, Any]] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)
    alerts: list[Notification] = field(default_factory=list)
    passed: int = 0
    failed: list[str] = field(default_factory=list)
    # per target (graphql or an endpoint id), the cycles whose probe the back-off or a
    # Retry-After held back (not in the JSON of spec/scenario-format.md)
    unprobed: dict[str, list[int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The `replay` JSON of spec/scenario-format.md."""
        return {
            "scenario": self.scenario.name,
            "interval_s": self.scenario.interval_s,
            "cycles": self.cycles,
            "incidents": [incident_json(i) for i in self.incidents],
            "alerts": [
                {
                    "sink": "slack",
                    "kind": n.kind,
                    "code": n.incident.diagnosis.code,
                    "endpoint_id": n.incident.diagnosis.endpoint_id,
                    "cycle": n.cycle,
                    "text": n.text,
                }
                for n in self.alerts
            ],
            "expectations": {"passed": self.passed, "failed": self.failed},
        }


def incident_json(incident: Incident) -> dict[str, Any]:
    d = incident.diagnosis
    return {
        "code": d.code,
        "endpoint_id": d.endpoint_id,
        "endpoint_name": d.endpoint_name,
        "severity": d.severity,
        "raised_cycle": incident.raised_cycle,
        "resolved_cycle": incident.resolved_cycle,
        "summary": d.summary,
        "evidence": dict(d.evidence),
        "remedy": d.remedy,
    }


def _brief(d: Diagnosis) -> dict[str, Any]:
    return {"code": d.code, "endpoint_id": d.endpoint_id, "severity": d.severity}


def _matches(active: Sequence[Diagnosis], item: Mapping[str, Any]) -> bool:
    return any(
        d.code == item.get("code")
        and ("endpoint_id" not in item or d.endpoint_id == item["endpoint_id"])
        for d in active
    )


def _describe(item: Mapping[str, Any]) -> str:
    where = f" on {item['endpoint_id']}" if "endpoint_id" in item else ""
    return f"{item.get('code')}{where}"


class Expectations:
    """Checks a scenario's `expect:` blocks as the cycles run."""

    def __init__(self, expect: Sequence[Mapping[str, Any]]) -> None:
        self.at: dict[int, list[Mapping[str, Any]]] = {}
        self.never: list[Mapping[str, Any]] = []
        for block in expect:
            if "cycle" in block:
                self.at.setdefault(int(block["cycle"]), []).append(block)
            self.never.extend(block.get("never", []))
        self.passed = 0
        self.failed: list[str] = []
        self._never_broken: dict[int, str] = {}

    def check(self, cycle: int, active: Sequence[Diagnosis]) -> None:
        codes = ", ".join(f"{d.code}/{d.endpoint_id or 'account'}" for d in active) or "nothing"
        for block in self.at.get(cycle, []):
            for item in block.get("active", []):
                if _matches(active, item):
                    self.passed += 1
                else:
                    self.failed.append(
                        f"cycle {cycle}: expected {_describe(item)} active; active: {codes}"
                    )
            for item in block.get("inactive", []):
                if _matches(active, item):
                    self.failed.append(
                        f"cycle {cycle}: expected {_describe(item)} inactive; active: {codes}"
                    )
                else:
                    self.passed += 1
        for i, item in enumerate(self.never):
            if i not in self._never_broken and _matches(active, item):
                self._never_broken[i] = f"cycle {cycle}: {_describe(item)} must never be active"

    def finish(self, last_cycle: int) -> None:
        for cycle in sorted(c for c in self.at if c > last_cycle):
            self.failed.append(f"cycle {cycle}: the scenario has only {last_cycle} cycles")
        for i in range(len(self.never)):
            if i in self._never_broken:
                self.failed.append(self._never_broken[i])
            else:
                self.passed += 1


async def replay(
    scenario: Scenario, env: Mapping[str, str] | None = None, sinks: Sequence[Sink] = (),
    *, control_plane: str | None = None,
) -> ReplayResult:
    """Replay `scenario` cycle by cycle against an in-process simulator on loopback;
    `sinks` get the messages too (e.g. the log sink `demo` uses). `control_plane`: the
    `runpod.control_plane` to replay with, over the scenario's own (auto by default)."""
    env = dict(os.environ if env is None else env)
    # replay only records notifications: the user's Slack credentials are not its business
    # (an exported SLACK_BOT_TOKEN, with no channel here, would fail validation)
    for var in ("SLACK_WEBHOOK_URL", "SLACK_BOT_TOKEN"):
        env.pop(var, None)
    overrides: dict[str, Any] = dict(scenario.monitor)
    if control_plane is not None:
        overrides = deep_merge(overrides, {"runpod": {"control_plane": control_plane}})
    settings = load_settings(None, env=env, overrides=overrides)
    api_key = (
        settings.runpod.api_key.get_secret_value()
        if settings.runpod.api_key is not None
        else secrets.token_urlsafe(24)
    )
    server = SimulatorServer(scenario, api_key)
    url = await server.start()
    # what a person would receive on Slack: its minimum severity, the configured group_wait,
    # repeat_interval and silences, in simulated time; delivered right after each cycle
    sink = RecordingSink("slack", settings.alerts.slack.min_severity)
    result = ReplayResult(scenario)
    expectations = Expectations(scenario.expect)
    epoch = epoch_of(scenario)
    try:
        async with RunPodClient(
            api_key=api_key,
            graphql_url=f"{url}/graphql",
            rest_url=f"{url}/v2",
            timeout_s=REPLAY_TIMEOUT_S,
            max_concurrency=settings.runpod.max_concurrency,
        ) as client:
            # the scenario's clock: its interval, whatever the settings' default says
            pipeline = build_pipeline(settings, client, sinks=[sink, *sinks],
                                      interval_s=scenario.interval_s)
            outbox = pipeline.router.outbox
            incidents: dict[tuple[str, str | None, int], Incident] = {}
            for k in range(1, scenario.total_cycles + 1):
                server.set_cycle(k)
                t_rel = (k - 1) * scenario.interval_s
                skipped = dict(pipeline.prober.skipped)
                out = await pipeline.cycle(k, epoch + t_rel)
                for target, n in pipeline.prober.skipped.items():
                    if n > skipped.get(target, 0):
                        result.unprobed.setdefault(target, []).append(k)
                await outbox.deliver(epoch + t_rel)
                # an incident is reported as it was when raised (what a person was told),
                # with the cycle it resolved in
                for inc in out.changes.raised:
                    incidents[(*inc.key, inc.raised_cycle)] = inc
                for inc in out.changes.resolved:
                    first = incidents.get((*inc.key, inc.raised_cycle), inc)
                    incidents[(*inc.key, inc.raised_cycle)] = replace(
                        first, resolved_at=inc.resolved_at, resolved_cycle=inc.resolved_cycle
                    )
                result.cycles.append(
                    {"cycle": k, "t": t_rel, "active": [_brief(d) for d in out.active]}
                )
                expectations.check(k, out.active)
            expectations.finish(scenario.total_cycles)
    finally:
        await server.stop()
    result.incidents = sorted(incidents.values(), key=lambda i: (i.raised_cycle, i.key[0]))
    result.alerts = sink.sent
    result.passed, result.failed = expectations.passed, expectations.failed
    return result
