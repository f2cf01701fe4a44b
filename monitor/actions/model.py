"""The vocabulary of guarded fixes: a proposal, the call it would make, an audit entry."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

Kind = Literal["cancel_overrun", "purge_after_crash_loop", "spend_guard"]
KINDS: tuple[Kind, ...] = ("cancel_overrun", "purge_after_crash_loop", "spend_guard")
# failed: the call was made and RunPod refused it (not retried: a write is never repeated
# blindly)
State = Literal["proposed", "approved", "executed", "refused", "expired", "failed"]
OPEN_STATES = frozenset({"proposed", "approved"})


@dataclass(frozen=True, slots=True)
class Call:
    """The exact RunPod request a proposal makes: method, the API ("rest" data plane or
    "v2" control plane), the path under it, and the JSON body."""

    method: str
    api: Literal["rest", "v2"]
    path: str
    body: Mapping[str, Any] | None = None

    def text(self) -> str:
        """`POST /v2/{id}/purge-queue` (the data plane, api.runpod.ai), `PATCH
        /v2/serverless/{id} {...}` (REST v2, api.runpod.io), for a person."""
        body = "" if self.body is None else " " + json.dumps(dict(self.body),
                                                             separators=(",", ":"))
        return f"{self.method} /v2{self.path}{body}"

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "api": self.api, "path": self.path,
                "body": None if self.body is None else dict(self.body)}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Call:
        return cls(str(raw["method"]), raw["api"], str(raw["path"]), raw.get("body"))


@dataclass(frozen=True, slots=True)
class Proposal:
    """One guarded fix: what it is based on (`precondition`, checked again before the call),
    what it will do (`call`), and where it stands."""

    id: str
    kind: Kind
    endpoint_id: str
    incident: tuple[str, float]  # (code, since) of the incident it answers
    summary: str
    precondition: Mapping[str, Any]
    call: Call
    created_t: float
    state: State = "proposed"
    job_id: str | None = None
    approved_by: str | None = None
    decided_t: float | None = None  # when it was approved / executed / refused / expired
    result: str | None = None  # why refused or expired, or what the call answered
    extra: Mapping[str, Any] = field(default_factory=dict)  # e.g. the cost that triggered it

    @property
    def open(self) -> bool:
        return self.state in OPEN_STATES

    def moved(self, state: State, t: float, result: str | None = None,
              approved_by: str | None = None) -> Proposal:
        return replace(self, state=state, decided_t=t, result=result,
                       approved_by=approved_by or self.approved_by)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "endpoint_id": self.endpoint_id,
            "job_id": self.job_id, "incident": {"code": self.incident[0],
                                                "since": self.incident[1]},
            "summary": self.summary, "precondition": dict(self.precondition),
            "call": self.call.to_json(), "created_t": self.created_t, "state": self.state,
            "approved_by": self.approved_by, "decided_t": self.decided_t,
            "result": self.result, "extra": dict(self.extra),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Proposal:
        inc = raw["incident"]
        return cls(
            id=str(raw["id"]), kind=raw["kind"], endpoint_id=str(raw["endpoint_id"]),
            incident=(str(inc["code"]), float(inc["since"])), summary=str(raw["summary"]),
            precondition=dict(raw["precondition"]), call=Call.from_json(raw["call"]),
            created_t=float(raw["created_t"]), state=raw["state"], job_id=raw.get("job_id"),
            approved_by=raw.get("approved_by"), decided_t=raw.get("decided_t"),
            result=raw.get("result"), extra=dict(raw.get("extra") or {}),
        )


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the audit log: what happened to which proposal, when, by whom, and the
    call's outcome where a call was made."""

    t: float
    action_id: str
    kind: str
    endpoint_id: str
    event: State
    who: str  # "auto", "api:<credential>", "monitor" (expiry, refusal)
    detail: str
    call: str | None = None  # Call.text() when a call was made
    outcome: str | None = None  # "ok 200", "http_429 429: ..." (masked)

    def to_json(self) -> dict[str, Any]:
        return {"t": self.t, "action_id": self.action_id, "kind": self.kind,
                "endpoint_id": self.endpoint_id, "event": self.event, "who": self.who,
                "detail": self.detail, "call": self.call, "outcome": self.outcome}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> AuditEntry:
        return cls(float(raw["t"]), str(raw["action_id"]), str(raw["kind"]),
                   str(raw["endpoint_id"]), raw["event"], str(raw["who"]),
                   str(raw["detail"]), raw.get("call"), raw.get("outcome"))


def proposal_id(kind: str, *parts: object) -> str:
    """A stable id: the same incident (and job) gives the same id across cycles and
    restarts, so a proposal is made once."""
    text = "|".join([kind, *(repr(p) for p in parts)])
    return kind.split("_")[0] + "-" + hashlib.sha256(text.encode()).hexdigest()[:12]
