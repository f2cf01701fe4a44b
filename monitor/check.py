"""`check`: one cycle now (on top of the daemon's stored history, if any), for a person or a script."""

from __future__ import annotations

import json
from pathlib import Path

from monitor.alerts.router import AlertRouter
from monitor.config import Settings, require_api_key
from monitor.cycle import CycleResult, Pipeline
from monitor.history import HistoryBuffer
from monitor.incidents import Incident, IncidentTracker
from monitor.probes import Prober
from monitor.runpod.client import RunPodClient
from monitor.store import Store
from monitor.web import diagnosis_json


async def check_once(settings: Settings, now: float) -> tuple[CycleResult, list[Incident]]:
    """Run one cycle; the daemon's database, when present, is read but never written."""
    history = HistoryBuffer(settings.state.retention_s)
    tracker = IncidentTracker()
    cycle = 1
    if Path(settings.state.path).exists():
        store = Store(settings.state.path)
        try:
            restored = store.load()
        finally:
            store.close()
        history.restore([o for o in restored.observations
                         if o.t >= now - settings.state.retention_s], restored.memory)
        tracker = IncidentTracker(restored.active)
        cycle = restored.last_cycle + 1
    async with RunPodClient(
        api_key=require_api_key(settings),
        graphql_url=settings.runpod.graphql_url,
        rest_url=settings.runpod.rest_url,
        timeout_s=settings.runpod.timeout_s,
        max_concurrency=settings.runpod.max_concurrency,
    ) as client:
        pipeline = Pipeline(
            prober=Prober(client, configured=settings.endpoints,
                          track_requests=settings.runpod.track_requests),
            thresholds=settings.rules, history=history, tracker=tracker,
            router=AlertRouter([]),
        )
        result = await pipeline.cycle(cycle, now)
    order = {"critical": 0, "warning": 1, "info": 2}
    incidents = sorted(tracker.active.values(), key=lambda i: (order[i.diagnosis.severity], i.since))
    return result, incidents


def render(result: CycleResult, incidents: list[Incident], fmt: str) -> str:
    """The diagnoses as JSON or as lines for a person."""
    tracker_view = [diagnosis_json(i) for i in incidents]
    if fmt == "json":
        return json.dumps({"diagnoses": tracker_view}, indent=2)
    if not tracker_view:
        n = len(result.observation.endpoints)
        return f"OK: nothing wrong found ({n} endpoint{'s' if n != 1 else ''} probed)."
    lines = []
    for d in tracker_view:
        where = f"{d['endpoint_name']} ({d['endpoint_id']})" if d["endpoint_id"] else "account"
        lines.append(f"{str(d['severity']).upper():<8} {d['code']}  {where}")
        lines.append(f"         {d['summary']}")
        lines.extend(f"         fix: {line}" if i == 0 else f"              {line}"
                     for i, line in enumerate(str(d["remedy"]).splitlines()))
    return "\n".join(lines)

