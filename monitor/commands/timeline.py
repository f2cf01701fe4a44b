"""`replay --format text`: a timeline a person reads: when, what, why, what to do."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

from monitor.alerts.message import WIDTH, incident_block, place
from rules.signals import minutes

if TYPE_CHECKING:  # replay runs the daemon's pipeline; the console renderer needs none of it
    from monitor.commands.replay import ReplayResult

def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


def render_text(result: ReplayResult) -> str:
    """The replay as a timeline of raised and resolved incidents and the expectations."""
    sc = result.scenario
    total = sc.total_cycles * sc.interval_s
    out = [f"{sc.name}: {sc.total_cycles} cycles of {sc.interval_s:g} s ({minutes(total)})"]
    if sc.description:
        out.extend(textwrap.wrap(" ".join(sc.description.split()), width=WIDTH,
                                 initial_indent="  ", subsequent_indent="  "))
    out.append("")
    events: list[tuple[int, int, list[str]]] = []
    for inc in result.incidents:
        d = inc.diagnosis
        where = place(d)
        t = (inc.raised_cycle - 1) * sc.interval_s
        lines = incident_block(d, f"{_clock(t)}  cycle {inc.raised_cycle:<3} RAISED    "
                                  f"{d.severity:<8} {d.code}  {where}")
        events.append((inc.raised_cycle, 0, lines))
        if inc.resolved_cycle is not None:
            t_end = (inc.resolved_cycle - 1) * sc.interval_s
            events.append((inc.resolved_cycle, 1, [
                f"{_clock(t_end)}  cycle {inc.resolved_cycle:<3} RESOLVED  {d.severity:<8} "
                f"{d.code}  {where}  (after {minutes(t_end - t)})"
            ]))
    if not events:
        out.append("Nothing was raised.")
    for _, _, lines in sorted(events, key=lambda e: (e[0], e[1])):
        out.extend(lines)
        out.append("")
    still = [i for i in result.incidents if i.resolved_cycle is None]
    if still:
        out.append("Still active at the end: " + ", ".join(
            f"{i.diagnosis.code}/{i.diagnosis.endpoint_id or 'account'}" for i in still))
    out.append(f"Alerts sent: {len(result.alerts)} "
               f"({sum(a.kind == 'firing' for a in result.alerts)} firing, "
               f"{sum(a.kind == 'resolved' for a in result.alerts)} resolved)")
    out.append(f"Expectations: {result.passed} passed, {len(result.failed)} failed")
    out.extend(f"  FAILED {f}" for f in result.failed)
    return "\n".join(out)
