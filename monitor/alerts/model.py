"""The vocabulary of alerting: a notification, a message (notifications sent together),
the sink interface, and the error a sink raises when a delivery fails."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from monitor.state.incidents import Incident
from rules.diagnosis import SEVERITY_ORDER

Kind = Literal["firing", "resolved", "reminder"]
KINDS: tuple[Kind, ...] = ("firing", "resolved", "reminder")

SEVERITY_RANK = SEVERITY_ORDER  # info < warning < critical: the one order, from rules.diagnosis


def severe_enough(severity: str, minimum: str) -> bool:
    """True when `severity` is at least `minimum` (info < warning < critical)."""
    return SEVERITY_RANK.get(severity, 0) >= SEVERITY_RANK.get(minimum, 0)


@dataclass(frozen=True, slots=True)
class Notification:
    """What a sink is told about one incident: it fired, it still fires, or it ended.

    Notifications decided together for one endpoint share a `batch` and travel as one
    message; each carries that message's plain text. `n` numbers the reminders (0 for
    firing and resolved); `note` names the cause that explains a resolved symptom.
    """

    kind: str  # firing, resolved, reminder
    incident: Incident
    t: float
    cycle: int
    text: str = ""
    sink: str = ""
    batch: str = ""
    n: int = 0
    note: str | None = None

    @property
    def dedupe_key(self) -> str:
        """Names this notification across restarts: re-deciding it never queues it twice."""
        code, endpoint_id = self.incident.key
        since = repr(self.incident.since)
        return f"{self.sink}:{self.kind}:{code}:{endpoint_id or '-'}:{since}:{self.n}"


@dataclass(frozen=True, slots=True)
class Message:
    """One delivery: the notifications of one batch, in the order they were decided."""

    kind: str
    sink: str
    batch: str
    t: float
    cycle: int
    notifications: tuple[Notification, ...]
    text: str = ""

    @property
    def incidents(self) -> list[Incident]:
        return [n.incident for n in self.notifications]


class DeliveryError(Exception):
    """A delivery that did not succeed. Its text never holds a secret.

    `retry_after` (seconds) is the server's own wish (HTTP 429 Retry-After); `permanent`
    means the same request will never succeed (e.g. Slack refused the message's blocks).
    """

    def __init__(
        self, reason: str, *, retry_after: float | None = None, permanent: bool = False,
        status: int | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.permanent = permanent
        self.status = status


class Sink(Protocol):
    """Where notifications go. `mode` "messages": the router decides what to say and when
    (Slack, the log); "state": the sink is told the whole active set every cycle
    (Alertmanager, which groups, deduplicates and repeats by itself).

    Every method the pipeline and the outbox call is declared here; a sink subclasses
    `Sink` to take the no-op defaults of those it does not need."""

    name: str
    min_severity: str
    mode: str

    async def send(self, message: Message) -> None:
        """Deliver one message; raise DeliveryError when it was not delivered."""
        ...

    def observe(
        self, active: Sequence[Incident], resolved: Sequence[Incident], t: float, cycle: int
    ) -> list[Notification]:
        """A state sink takes the cycle's active, unmuted set (the router calls it once per
        cycle); return the notifications to queue in the outbox (its resolved ones)."""
        return []

    async def refresh(self, now: float) -> int:
        """Push what `observe` took, in the outbox's delivery round; return how many alerts
        were new to the receiver (counted as firing). Raise DeliveryError to be retried."""
        return 0

    async def close(self) -> None:
        """Release the sink's connections at shutdown."""
        return
