"""The book of proposals and the I/O of guarded fixes: propose after each cycle, approve
(API or `auto`), read again, refuse or call, audit. Every write goes through `Port`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

import structlog

from model.observation import Observation
from monitor.actions import policy
from monitor.actions.model import AuditEntry, Call, Proposal, State
from monitor.alerts.message import PROPOSED_PREFIX
from monitor.config import ActionsSettings
from monitor.runpod.models import Failure, Result
from monitor.state.incidents import Changes, Incident
from monitor.state.store import Store
from rules.secrets import mask

log = structlog.get_logger("monitor.actions")
MAX_AUDIT = 1000  # audit entries kept (newest), in memory and in the store


class Port(Protocol):
    """The RunPod reads and writes a guarded fix needs (runpod_port.RunPodPort)."""

    async def job_status(self, endpoint_id: str, job_id: str) -> Result[str]: ...
    async def queue_length(self, endpoint_id: str) -> Result[int]: ...
    async def endpoint_workers(self, endpoint_id: str) -> Result[tuple[int, int]]: ...
    async def execute(self, p: Proposal) -> Result[str]: ...


def _failure_text(f: Failure) -> str:
    return mask(f"{f.kind} {f.status}: {f.message}".strip())[:300]


class ActionEngine:
    """Keeps every proposal by id (persisted in the store's `actions` table) and the audit
    log (`action_audit`); `dry_run` or no `port`: nothing is ever called."""

    def __init__(self, settings: ActionsSettings, *, store: Store | None = None,
                 port: Port | None = None, dry_run: bool = False,
                 base_url: str = "http://127.0.0.1:9108", retention_s: float = 86400.0
                 ) -> None:
        self.settings = settings
        self.store = store
        self.port = port
        self.dry_run = dry_run or port is None
        self.base_url = (settings.base_url or base_url).rstrip("/")
        self.retention_s = retention_s
        self.proposals: dict[str, Proposal] = {}
        self.audit: list[AuditEntry] = []
        self.would_run: list[Proposal] = []  # dry run: what the last step would have called
        self.fresh: list[Proposal] = []  # proposed in the last step

    # -- state ----------------------------------------------------------------------

    def restore(self) -> None:
        """Load the book and the audit log from the store (after a restart)."""
        if self.store is None:
            return
        self.proposals = {p.id: p for p in map(Proposal.from_json, self.store.load_actions())}
        self.audit = [AuditEntry.from_json(a) for a in self.store.load_audit(MAX_AUDIT)]

    def listing(self) -> list[Proposal]:
        """Every proposal, open ones first, newest first within each."""
        return sorted(self.proposals.values(),
                      key=lambda p: (not p.open, -p.created_t, p.id))

    def _save(self, p: Proposal, event: State, who: str, detail: str, t: float,
              call: Call | None = None, outcome: str | None = None) -> None:
        self.proposals[p.id] = p
        entry = AuditEntry(t, p.id, p.kind, p.endpoint_id, event, who, mask(detail),
                           None if call is None else call.text(), outcome)
        self.audit.append(entry)
        del self.audit[:-MAX_AUDIT]
        log.info("action", id=p.id, kind=p.kind, endpoint_id=p.endpoint_id, change=event,
                 who=who, detail=entry.detail, call=entry.call, outcome=outcome)
        if self.store is not None:
            self.store.save_action(p.id, p.to_json(), entry.to_json(), MAX_AUDIT)

    # -- approval -------------------------------------------------------------------

    def approve(self, action_id: str, who: str, t: float) -> tuple[int, Proposal | str]:
        """Approve a proposed action: (200, it) or (404 | 409, why not). It runs at the
        next cycle, after a fresh read."""
        p = self.proposals.get(action_id)
        if p is None:
            return 404, f"no action {action_id!r}"
        if p.state != "proposed":
            return 409, f"action {action_id} is {p.state}, not proposed"
        moved = p.moved("approved", t, approved_by=who)
        self._save(moved, "approved", who, "approved; runs at the next cycle after a fresh "
                   "read", t)
        return 200, moved

    # -- one cycle ------------------------------------------------------------------

    async def step(self, obs: Observation, changes: Changes, active: Sequence[Incident],
                   t: float) -> Changes:
        """After the incidents of a cycle: new proposals, expiries, auto approvals, then
        the approved ones run (or, dry, are listed in `would_run`). Returns `changes` with
        the open proposals' lines in the remedies the alerts quote."""
        s = self.settings
        self.fresh = []
        for cand in policy.propose(s, active, changes.resolved, obs, t):
            if cand.id not in self.proposals:
                self._save(cand, "proposed", "monitor", cand.summary, t, cand.call)
                self.fresh.append(cand)
        for p in list(self.proposals.values()):
            if not p.open:
                continue
            if t - p.created_t > s.expire_s:
                self._save(p.moved("expired", t, "not run within actions.expire_s"),
                           "expired", "monitor", f"not run within {s.expire_s:g} s", t)
            elif not policy.still_called_for(p, active):
                self._save(p.moved("expired", t, "the incident ended"), "expired",
                           "monitor", "the incident it answered ended", t)
            elif p.state == "proposed" and policy.auto(s, p.kind):
                self._save(p.moved("approved", t, approved_by="auto"), "approved", "auto",
                           f"actions.{p.kind}.auto", t)
        due = sorted((p for p in self.proposals.values()
                      if p.state == "approved" and policy.enabled(s, p.kind)),
                     key=lambda p: (p.decided_t or 0.0, p.id))[: s.max_per_cycle]
        self.would_run = due if self.dry_run else []
        if self.dry_run:
            for p in due:
                log.info("action_dry_run", id=p.id, kind=p.kind, call=p.call.text())
        else:
            for p in due:
                await self._execute(p, t)
        self._prune(t)
        return self.annotate(changes)

    async def _execute(self, p: Proposal, t: float) -> None:
        assert self.port is not None
        fresh = await self._read(p)
        why = policy.refusal(p, fresh)
        if why is not None:
            self._save(p.moved("refused", t, why), "refused", "monitor", why, t)
            return
        out = await self.port.execute(p)
        if isinstance(out, Failure):
            text = _failure_text(out)
            self._save(p.moved("failed", t, text), "failed", "monitor",
                       "the call failed; not retried", t, p.call, text)
            return
        outcome = f"ok {out.status}: {mask(out.value)[:200]}"
        self._save(p.moved("executed", t, outcome), "executed", p.approved_by or "monitor",
                   p.summary, t, p.call, outcome)

    async def _read(self, p: Proposal) -> policy.Fresh:
        """Read again what the proposal was based on: one GET, never a write."""
        assert self.port is not None
        if p.kind == "cancel_overrun":
            job: Result[Any] = await self.port.job_status(p.endpoint_id, p.job_id or "")
            if isinstance(job, Failure):
                if job.kind == "http_404":
                    return policy.Fresh(job_status="gone")
                return policy.Fresh(error=_failure_text(job))
            return policy.Fresh(job_status=str(job.value))
        if p.kind == "purge_after_crash_loop":
            queued = await self.port.queue_length(p.endpoint_id)
            if isinstance(queued, Failure):
                return policy.Fresh(error=_failure_text(queued))
            return policy.Fresh(in_queue=queued.value)
        workers = await self.port.endpoint_workers(p.endpoint_id)
        if isinstance(workers, Failure):
            return policy.Fresh(error=_failure_text(workers))
        return policy.Fresh(workers=workers.value)

    def _prune(self, t: float) -> None:
        old = [k for k, p in self.proposals.items()
               if not p.open and (p.decided_t or p.created_t) < t - self.retention_s]
        for k in old:
            del self.proposals[k]
        if old and self.store is not None:
            self.store.delete_actions(old)

    # -- what the alerts quote ------------------------------------------------------

    def late(self, changes: Changes, notified: set[tuple[str, str | None]]
             ) -> list[tuple[Incident, int]]:
        """The active incidents (in annotated `changes`) that got a proposal this step but
        no notification this cycle, each with the reminder number its own message uses."""
        out = []
        held = {(i.key, i.since): i for i in (*changes.raised, *changes.held)}
        for p in self.fresh:
            inc = held.get(((p.incident[0], p.endpoint_id), p.incident[1]))
            if inc is not None and inc.key not in notified:
                out.append((inc, -1000 - int(p.id.rsplit("-", 1)[1][:6], 16)))
        return out

    def approve_command(self, p: Proposal) -> str:
        return (f"curl -X POST -H \"Authorization: Bearer $RUNPOD_MONITOR_WRITE_TOKEN\" "
                f"{self.base_url}/api/v1/actions/{p.id}/approve")

    def line(self, p: Proposal) -> str:
        """'proposed fix: <what> (<call>); approve: curl ...' ('approved' once it is)."""
        head = f"{PROPOSED_PREFIX} {p.summary} ({p.call.text()})"
        if p.state == "approved":
            return f"{head}; approved by {p.approved_by}, runs at the next cycle"
        return f"{head}; approve: {self.approve_command(p)}"

    def annotate(self, changes: Changes) -> Changes:
        """`changes` with each open proposal's line added to the remedy of the incident it
        answers, so Slack, Alertmanager and the log carry it."""
        by_incident: dict[tuple[str, str, float], list[Proposal]] = {}
        for p in self.proposals.values():
            if p.open:
                by_incident.setdefault((p.incident[0], p.endpoint_id, p.incident[1]),
                                       []).append(p)
        if not by_incident:
            return changes

        def note(inc: Incident) -> Incident:
            key = (inc.key[0], inc.key[1] or "", inc.since)
            found = by_incident.get(key)
            if not found:
                return inc
            extra = "\n".join(self.line(p) for p in found)
            d = replace(inc.diagnosis, remedy=f"{inc.diagnosis.remedy}\n{extra}")
            return replace(inc, diagnosis=d)

        return Changes([note(i) for i in changes.raised], [note(i) for i in changes.held],
                       [note(i) for i in changes.resolved],
                       [note(i) for i in changes.escalated])
