"""The Alertmanager sink: pushes diagnoses to `{url}/api/v2/alerts`.

Alertmanager expects its clients to re-send every active alert regularly, each with an
`endsAt` a little in the future, and to send an alert with a past `endsAt` once it ended.
So every cycle the router hands this sink the whole active, unmuted set (`observe`), and
the outbox's delivery round posts it (`refresh`), with `endsAt` = now + 4 intervals: a
monitor that stops lets its alerts expire after that. An incident that ends is queued in
the outbox (`observe` returns the resolved notification) and posted once with `endsAt` =
its resolution time, retried until Alertmanager takes it.

Labels: `alertname` (the diagnosis code), `endpoint_id`, `endpoint` (the name),
`severity`; annotations: `summary`, `remedy`, and `log_excerpt` (a few of the worker's log
lines, when a diagnosis has them). Labels identify an alert, so two monitor
replicas watching the same account post the same alerts and Alertmanager deduplicates
them: that is how the monitor runs highly available. Alertmanager does its own grouping,
repeating and silencing; this sink ignores the router's group_wait and repeat_interval.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import aiohttp

from model.observation import iso_utc
from monitor.alerts.model import DeliveryError, Message, Notification, Sink, severe_enough
from monitor.bodies import SINK_LIMITS, BodyError, capped_session
from monitor.state.incidents import Incident, Key
from rules.log_evidence import excerpt

# the annotation size Alertmanager and its receivers handle comfortably
ANNOTATION_LIMIT = 8000
LOG_EXCERPT_LIMIT = 1024  # a few lines: the annotation is read in a receiver's message


def labels(incident: Incident) -> dict[str, str]:
    d = incident.diagnosis
    return {
        "alertname": d.code,
        "endpoint_id": d.endpoint_id or "",
        "endpoint": (d.endpoint_name or d.endpoint_id or "") if d.endpoint_id else "",
        "severity": d.severity,
    }


def alert_json(incident: Incident, ends_at: float) -> dict[str, Any]:
    """One item of the POST /api/v2/alerts array."""
    d = incident.diagnosis
    annotations = {
        "summary": d.summary[:ANNOTATION_LIMIT],
        "remedy": d.remedy[:ANNOTATION_LIMIT],
    }
    lines = excerpt(d.evidence, max_lines=5, max_chars=200)
    if lines:
        annotations["log_excerpt"] = "\n".join(lines)[:LOG_EXCERPT_LIMIT]
    return {
        "labels": {k: v for k, v in labels(incident).items() if v},
        "annotations": annotations,
        "startsAt": iso_utc(incident.since),
        "endsAt": iso_utc(ends_at),
    }


class AlertmanagerSink(Sink):
    """Pushes the active set every cycle and each resolution once."""

    mode = "state"

    def __init__(
        self,
        url: str,
        *,
        interval_s: float = 30.0,
        min_severity: str = "info",
        name: str = "alertmanager",
        timeout_s: float = 10.0,
        ttl_intervals: float = 4.0,
    ) -> None:
        self.url = url.rstrip("/") + "/api/v2/alerts"
        self.name = name
        self.min_severity = min_severity
        self.ttl_s = max(ttl_intervals * interval_s, 60.0)
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._snapshot: list[dict[str, Any]] = []
        self._snapshot_keys: set[Key] = set()
        self._pushed: dict[Key, Incident] = {}  # what the last snapshot held
        self._acked: set[tuple[Key, float]] = set()  # (key, since) Alertmanager accepted
        self._session: aiohttp.ClientSession | None = None
        self._dirty = False  # a snapshot not posted yet

    def observe(
        self, active: Sequence[Incident], resolved: Sequence[Incident], t: float, cycle: int
    ) -> list[Notification]:
        """Take this cycle's active set; return the resolved notifications to queue."""
        current = {
            i.key: i for i in active if severe_enough(i.diagnosis.severity, self.min_severity)
        }
        out: list[Notification] = []
        batch = f"resolved:alertmanager:{cycle}:{t!r}"
        for incident in resolved:
            if not (incident.key in self._pushed
                    or severe_enough(incident.diagnosis.severity, self.min_severity)):
                continue
            out.append(Notification("resolved", incident, t, cycle, sink=self.name, batch=batch))
        # an alert whose labels changed (severity, name) is a new alert to Alertmanager:
        # end the old one now rather than let it linger until it expires
        for key, old in self._pushed.items():
            new = current.get(key)
            if new is not None and labels(new) != labels(old):
                ended = replace(old, resolved_at=t, resolved_cycle=cycle)
                out.append(Notification("resolved", ended, t, cycle, sink=self.name,
                                        batch=batch, n=cycle))
        self._pushed = current
        self._snapshot = [alert_json(i, t + self.ttl_s) for i in current.values()]
        self._snapshot_keys = set(current)
        self._dirty = True
        return out

    async def _post(self, alerts: list[dict[str, Any]]) -> None:
        if self._session is None or self._session.closed:
            self._session = capped_session(SINK_LIMITS, timeout=self.timeout)
        try:
            async with self._session.post(
                self.url, data=json.dumps(alerts), headers={"Content-Type": "application/json"}
            ) as resp:
                if 200 <= resp.status < 300:
                    return
                body = (await resp.text())[:200]
                raise DeliveryError(f"Alertmanager answered {resp.status}: {body}",
                                    status=resp.status,
                                    permanent=resp.status == 400 and len(alerts) == 1)
        except DeliveryError:
            raise
        except BodyError as exc:  # an error answer over SINK_LIMITS
            raise DeliveryError(f"Alertmanager's answer: {exc}") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DeliveryError(f"Alertmanager unreachable: {type(exc).__name__}") from None

    async def send(self, message: Message) -> None:
        """Post resolved alerts (their endsAt is the resolution time)."""
        alerts = [
            alert_json(i, i.resolved_at if i.resolved_at is not None else message.t)
            for i in message.incidents
        ]
        await self._post(alerts)

    async def refresh(self, now: float) -> int:
        """Post this cycle's active set (once; again after a failure); return how many of
        its alerts Alertmanager got the first time (counted as firing)."""
        if not self._dirty or not self._snapshot:
            return 0
        await self._post(self._snapshot)
        self._dirty = False
        new = {(k, self._pushed[k].since) for k in self._snapshot_keys if k in self._pushed}
        fresh = len(new - self._acked)
        self._acked = new
        return fresh

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
