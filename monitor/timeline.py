"""`replay --format text`: a timeline a person reads: when, what, why, what to do."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any

from monitor.alerts.message import code_split, place, shell_lines
from rules.diagnosis import Diagnosis
from rules.log_evidence import EVIDENCE_KEY as LOGS_KEY
from rules.log_evidence import excerpt
from rules.signals import minutes

if TYPE_CHECKING:  # replay runs the daemon's pipeline; the console renderer needs none of it
    from monitor.replay import ReplayResult

WIDTH = 100


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


def _evidence(evidence: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in evidence.items() if k != LOGS_KEY)


def _wrap(label: str, text: str) -> list[str]:
    """`text` under `label`: prose wrapped at WIDTH; each command whole, on lines of its
    own joined by ' \\' (never cut inside a quoted word), so it pastes as it is."""
    lines: list[str] = []
    for para in text.splitlines() or [""]:
        prose, code = code_split(para)
        if prose:
            indent = " " * (len(prose) - len(prose.lstrip()))
            prefix = f"    {label:<6}" if not lines else " " * 10
            lines.extend(textwrap.wrap(prose.strip(), width=WIDTH, initial_indent=prefix + indent,
                                       subsequent_indent=" " * 10 + indent,
                                       break_on_hyphens=False)
                         or [prefix.rstrip()])
        if code:
            # inline ("4. Check: curl ..."): the command goes under its step
            lead = prose if prose else para
            indent = " " * (len(lead) - len(lead.lstrip())) + ("   " if prose else "")
            prefix = f"    {label:<6}" if not lines else " " * 10
            for i, piece in enumerate(shell_lines(code, WIDTH - 12)):
                lines.append((prefix if i == 0 else " " * 12) + indent + piece)
        if not prose and not code:
            lines.append(f"    {label:<6}".rstrip() if not lines else "")
    return lines


def incident_block(d: Diagnosis, head: str) -> list[str]:
    """One incident as a person reads it: `head`, then what, why, the worker's log lines
    when it has them, and the fix."""
    logs = excerpt(d.evidence, max_lines=5, max_chars=WIDTH - 12)
    return [
        head,
        *_wrap("what", d.summary),
        *_wrap("why", _evidence(dict(d.evidence))),
        *(_wrap("logs", "\n".join(logs)) if logs else []),
        *_wrap("fix", d.remedy),
    ]


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
