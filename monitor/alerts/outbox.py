"""The alert outbox: every notification is written down before it is sent.

The router decides; `Outbox.enqueue` writes each notification to the SQLite outbox
(`Store.enqueue`) under a dedupe key `sink:kind:code:endpoint_id:since:n`, so that a
restart which re-decides the same notification does not queue it twice. `Outbox.deliver`
then sends what is queued, one message per batch (the notifications one endpoint got in
one cycle), oldest first, and marks each row sent after the sink accepted it (Slack's 200,
Alertmanager's 2xx).

Guarantees:
- Nothing is lost. A failed delivery stays queued and is retried with exponential backoff
  (5 s doubling to a 5 min cap, with jitter), or after the server's Retry-After; a
  restart resumes the outbox where it stopped.
- Order is kept per sink: while the oldest message of a sink fails, the newer ones wait
  behind it, so a resolved message never overtakes its firing one.
- Nothing is sent twice, except in one window: a message that was sent but whose row
  could not be marked sent (the process died between the sink's answer and the commit)
  is sent again after the restart. At-least-once is the deliberate choice: a duplicate
  is better than a lost alert.
- A message a sink can never accept (Slack refuses its content even as plain text) is
  dropped after that attempt, logged as an error and counted as failed, so it cannot
  block the queue behind it.

Metrics: runpod_alerts_sent_total{sink,kind} per notification delivered,
runpod_alerts_failed_total{sink} per failed delivery attempt, runpod_alerts_pending{sink}.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from monitor.alerts.message import message_text
from monitor.alerts.model import DeliveryError, Message, Notification, Sink
from monitor.backoff import capped_backoff
from monitor.state import codec
from monitor.state.store import OutboxItem

log = structlog.get_logger("monitor.alerts")

PAYLOAD_VERSION = 1
BASE_BACKOFF_S = 5.0
MAX_BACKOFF_S = 300.0
# `Store.due` with this as `now` returns every unsent row: the outbox paces retries itself.
_EVERYTHING = 1e300


class AlertMetrics(Protocol):
    """What the outbox reports to (monitor.metrics.MonitorMetrics)."""

    def init_sink(self, sink: str) -> None: ...
    def alert_sent(self, sink: str, kind: str) -> None: ...
    def alert_failed(self, sink: str) -> None: ...
    def set_alerts_pending(self, sink: str, n: int) -> None: ...


class OutboxStore(Protocol):
    """The part of monitor.state.store.Store the outbox uses (MemoryOutboxStore for replay)."""

    def enqueue(
        self, sink: str, payload: Mapping[str, Any], dedupe_key: str | None = None,
        *, now: float | None = None,
    ) -> int | None: ...
    def due(self, sink: str, now: float, limit: int = 50) -> list[OutboxItem]: ...
    def mark_sent(self, item_id: int, now: float) -> None: ...
    def mark_failed(self, item_id: int, next_attempt: float, error: str) -> None: ...
    def pending(self, sink: str | None = None) -> int: ...


@dataclass
class _Row:
    id: int
    sink: str
    payload: dict[str, Any]
    dedupe_key: str | None
    created_t: float
    next_attempt: float = 0.0
    attempts: int = 0
    sent_t: float | None = None
    last_error: str | None = None


@dataclass
class MemoryOutboxStore:
    """An outbox in memory with the Store's semantics: `replay` and `check` use it."""

    rows: list[_Row] = field(default_factory=list)

    def enqueue(
        self, sink: str, payload: Mapping[str, Any], dedupe_key: str | None = None,
        *, now: float | None = None,
    ) -> int | None:
        if dedupe_key is not None and any(
            r.sink == sink and r.dedupe_key == dedupe_key for r in self.rows
        ):
            return None
        row = _Row(len(self.rows) + 1, sink, dict(payload), dedupe_key, now or 0.0)
        self.rows.append(row)
        return row.id

    def due(self, sink: str, now: float, limit: int = 50) -> list[OutboxItem]:
        rows = [r for r in self.rows
                if r.sink == sink and r.sent_t is None and r.next_attempt <= now][:limit]
        return [OutboxItem(r.id, r.sink, r.payload, r.attempts, r.created_t) for r in rows]

    def mark_sent(self, item_id: int, now: float) -> None:
        self.rows[item_id - 1].sent_t = now

    def mark_failed(self, item_id: int, next_attempt: float, error: str) -> None:
        row = self.rows[item_id - 1]
        row.attempts += 1
        row.next_attempt = next_attempt
        row.last_error = error[:1000]

    def pending(self, sink: str | None = None) -> int:
        return sum(1 for r in self.rows if r.sent_t is None and (sink is None or r.sink == sink))


def to_payload(n: Notification) -> dict[str, Any]:
    """The outbox row of one notification (everything needed to render it later)."""
    return {
        "v": PAYLOAD_VERSION,
        "kind": n.kind,
        "batch": n.batch,
        "n": n.n,
        "t": n.t,
        "cycle": n.cycle,
        "note": n.note,
        "incident": codec.incident_to_json(n.incident),
    }


def from_payload(sink: str, payload: Mapping[str, Any]) -> Notification:
    return Notification(
        kind=str(payload["kind"]),
        incident=codec.incident_from_json(payload["incident"]),
        t=float(payload["t"]),
        cycle=int(payload["cycle"]),
        sink=sink,
        batch=str(payload.get("batch", "")),
        n=int(payload.get("n", 0)),
        note=payload.get("note"),
    )


def backoff_s(
    failures: int, rng: random.Random, base: float = BASE_BACKOFF_S, cap: float = MAX_BACKOFF_S
) -> float:
    """Wait after the `failures`-th failure in a row: base·2^(k-1) capped, half of it
    jittered ("equal jitter"), so replicas and restarts do not retry in lockstep."""
    step = capped_backoff(base, cap, max(1, failures))
    return step / 2 + rng.uniform(0, step / 2)


class Outbox:
    """Queues notifications in the store and delivers them to the sinks."""

    def __init__(
        self,
        store: OutboxStore,
        sinks: Sequence[Sink],
        *,
        metrics: AlertMetrics | None = None,
        rng: random.Random | None = None,
        base_backoff_s: float = BASE_BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
        batch_limit: int = 200,
    ) -> None:
        self.store = store
        self.sinks: dict[str, Sink] = {s.name: s for s in sinks}
        self.metrics = metrics
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self.batch_limit = batch_limit
        self.failures: dict[str, int] = {}
        self.blocked_until: dict[str, float] = {}
        self._lock = asyncio.Lock()
        for name in self.sinks:
            if self.metrics is not None:
                self.metrics.init_sink(name)  # zeros, so rate() sees the first event
            self._set_pending(name)

    # -- writing -------------------------------------------------------------------

    def enqueue(self, n: Notification, now: float) -> bool:
        """Queue `n` for its sink; False when it was queued before (same dedupe key)."""
        row = self.store.enqueue(n.sink, to_payload(n), n.dedupe_key, now=now)
        self._set_pending(n.sink)
        return row is not None

    # -- delivering ----------------------------------------------------------------

    def next_due(self) -> float | None:
        """When a blocked sink may be tried again (None: nothing is blocked)."""
        return min(self.blocked_until.values(), default=None)

    async def deliver(self, now: float) -> list[Message]:
        """Send what is queued and due at `now`; return the messages delivered."""
        delivered: list[Message] = []
        async with self._lock:
            for sink in self.sinks.values():
                delivered.extend(await self._deliver_sink(sink, now))
                await self._refresh(sink, now)
        return delivered

    async def _refresh(self, sink: Sink, now: float) -> None:
        """A state sink's push of the active set (a no-op for the others); retried with
        backoff when it fails."""
        key = f"{sink.name}/refresh"
        if now < self.blocked_until.get(key, float("-inf")):
            return
        try:
            new = await sink.refresh(now)
        except DeliveryError as exc:
            failures = self.failures.get(key, 0) + 1
            self.failures[key] = failures
            wait = backoff_s(failures, self.rng, self.base_backoff_s, self.max_backoff_s)
            self.blocked_until[key] = now + wait
            self._count_failed(sink.name)
            log.warning("alert refresh failed; will retry", sink=sink.name, error=exc.reason,
                        retry_in_s=round(wait, 1))
            return
        self.failures.pop(key, None)
        self.blocked_until.pop(key, None)
        for _ in range(int(new or 0)):
            self._count_sent(sink.name, "firing")

    async def _deliver_sink(self, sink: Sink, now: float) -> list[Message]:
        name = sink.name
        if now < self.blocked_until.get(name, float("-inf")):
            return []
        items = self.store.due(name, _EVERYTHING, self.batch_limit)
        delivered: list[Message] = []
        for batch in _batches(items):
            message = self._message(name, batch)
            try:
                await sink.send(message)
            except DeliveryError as exc:
                if exc.permanent:
                    self._drop(name, batch, message, exc, now)
                    continue
                self._fail(name, batch, exc, now)
                break
            except Exception as exc:  # a sink's bug must not stop the loop; no text: secrets
                self._fail(name, batch, DeliveryError(f"unexpected {type(exc).__name__}"), now)
                log.error("alert sink raised", sink=name, error=type(exc).__name__)
                break
            for item in batch:
                self.store.mark_sent(item.id, now)
            for n in message.notifications:
                self._count_sent(name, n.kind)
            self.failures.pop(name, None)
            self.blocked_until.pop(name, None)
            delivered.append(message)
        self._set_pending(name)
        return delivered

    def _message(self, sink: str, items: Sequence[OutboxItem]) -> Message:
        notes = [from_payload(sink, i.payload) for i in items]
        first = notes[0]
        text = message_text(first.kind, notes, first.t)
        notes = [
            Notification(n.kind, n.incident, n.t, n.cycle, text, n.sink, n.batch, n.n, n.note)
            for n in notes
        ]
        return Message(first.kind, sink, first.batch, first.t, first.cycle, tuple(notes), text)

    def _fail(self, sink: str, batch: Sequence[OutboxItem], exc: DeliveryError, now: float) -> None:
        failures = self.failures.get(sink, 0) + 1
        self.failures[sink] = failures
        wait = backoff_s(failures, self.rng, self.base_backoff_s, self.max_backoff_s)
        if exc.retry_after is not None:
            wait = max(exc.retry_after, 0.0)
        self.blocked_until[sink] = now + wait
        for item in batch:
            self.store.mark_failed(item.id, now + wait, exc.reason)
        self._count_failed(sink)
        log.warning("alert delivery failed; will retry", sink=sink, error=exc.reason,
                    failures=failures, retry_in_s=round(wait, 1))

    def _drop(
        self, sink: str, batch: Sequence[OutboxItem], message: Message, exc: DeliveryError,
        now: float,
    ) -> None:
        for item in batch:
            self.store.mark_failed(item.id, now, "dropped: " + exc.reason)
            self.store.mark_sent(item.id, now)
        self._count_failed(sink)
        log.error("alert dropped: the sink refuses it", sink=sink, error=exc.reason,
                  kind=message.kind, codes=[i.diagnosis.code for i in message.incidents])

    def _count_sent(self, sink: str, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.alert_sent(sink, kind)

    def _count_failed(self, sink: str) -> None:
        if self.metrics is not None:
            self.metrics.alert_failed(sink)

    def _set_pending(self, sink: str) -> None:
        if self.metrics is not None:
            self.metrics.set_alerts_pending(sink, self.store.pending(sink))


def _batches(items: Sequence[OutboxItem]) -> list[list[OutboxItem]]:
    """Consecutive rows of one batch, in queue order."""
    out: list[list[OutboxItem]] = []
    for item in items:
        batch = item.payload.get("batch")
        if out and batch and out[-1][0].payload.get("batch") == batch:
            out[-1].append(item)
        else:
            out.append([item])
    return out
