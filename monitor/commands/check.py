"""`check`: one cycle now, on top of the daemon's stored history if any; for people and scripts."""

from __future__ import annotations

import json
from pathlib import Path

from monitor.actions import KINDS, Proposal
from monitor.config import Settings
from monitor.http.web import diagnosis_json
from monitor.pipeline.cycle import CycleResult, build_pipeline
from monitor.runpod.client import client_for
from monitor.state.incidents import Incident
from monitor.state.store import PipelineState, Store


def _stored(settings: Settings) -> PipelineState:
    """The daemon's state from its database, read and never written (empty without one)."""
    if not Path(settings.state.path).exists():
        return PipelineState()
    store = Store(settings.state.path)
    try:
        return store.load()
    finally:
        store.close()


async def check_once(
    settings: Settings, now: float, proposals: list[Proposal] | None = None
) -> tuple[CycleResult, list[Incident]]:
    """Run one cycle on top of the stored history, if the daemon's database is there;
    nothing is sent and nothing is written: guarded fixes are only proposed (into
    `proposals` when given), never called."""
    async with client_for(settings) as client:
        pipeline = build_pipeline(settings, client, sinks=[], dry_run=True)
        pipeline.restore(_stored(settings), now)
        result = await pipeline.cycle(pipeline.last_cycle + 1, now)
    if proposals is not None and pipeline.actions is not None:
        proposals.extend(p for p in pipeline.actions.listing() if p.open)
    return result, pipeline.tracker.incidents()


def render_dry_run(settings: Settings, proposals: list[Proposal], fmt: str) -> str:
    """`check --dry-run`: each guarded fix this cycle proposes and the call it would make;
    nothing was called."""
    rows = []
    for p in proposals:
        switch = getattr(settings.actions, p.kind)
        runs = "runs at once (auto)" if switch.auto else "waits for approval"
        rows.append({"id": p.id, "kind": p.kind, "endpoint_id": p.endpoint_id,
                     "summary": p.summary, "call": p.call.text(),
                     "precondition": dict(p.precondition), "would": runs})
    if fmt == "json":
        return json.dumps({"dry_run": True, "actions": rows}, indent=2)
    if not rows:
        on = [k for k in KINDS if getattr(settings.actions, k).enabled]
        return ("dry run: no guarded fix proposed"
                + (f" (enabled: {', '.join(on)})" if on else " (none enabled in actions:)"))
    lines = ["dry run: nothing was called"]
    for r in rows:
        lines.append(f"WOULD    {r['kind']}  {r['endpoint_id']}  [{r['id']}] {r['would']}")
        lines.append(f"         {r['summary']}")
        lines.append(f"         call: {r['call']}  if still {r['precondition']}")
    return "\n".join(lines)


def probe_failures(result: CycleResult) -> list[dict[str, object]]:
    """The calls that gave no usable answer (a 404 is an answer): what could not be judged."""
    return [
        {"probe": c.probe, "endpoint_id": c.endpoint_id, "outcome": c.outcome, "status": c.status}
        for c in result.calls
        if c.outcome not in ("ok", "http_404")
    ]


def failed_to_probe(result: CycleResult) -> bool:
    """True when GraphQL failed or no endpoint's /health answered: nothing could be judged."""
    if not result.observation.control_ok:
        return True
    samples = result.observation.endpoints.values()
    return bool(samples) and all(not s.health_known for s in samples)


def render(result: CycleResult, incidents: list[Incident], fmt: str) -> str:
    """The diagnoses as JSON or as lines for a person."""
    tracker_view = [diagnosis_json(i) for i in incidents]
    failures = probe_failures(result)
    if fmt == "json":
        return json.dumps({"diagnoses": tracker_view, "probe_failures": failures}, indent=2)
    lines = [f"UNKNOWN  {f['probe']}{' ' + str(f['endpoint_id']) if f['endpoint_id'] else ''}: "
             f"{f['outcome']}" for f in failures]
    if not tracker_view and not failures:
        n = len(result.observation.endpoints)
        return f"OK: nothing wrong found ({n} endpoint{'s' if n != 1 else ''} probed)."
    for d in tracker_view:
        where = f"{d['endpoint_name']} ({d['endpoint_id']})" if d["endpoint_id"] else "account"
        lines.append(f"{str(d['severity']).upper():<8} {d['code']}  {where}")
        lines.append(f"         {d['summary']}")
        lines.extend(f"         fix: {line}" if i == 0 else f"              {line}"
                     for i, line in enumerate(str(d["remedy"]).splitlines()))
    return "\n".join(lines)

