"""The status page at `/`: one server-rendered HTML page, readable on a phone.

The page is a plain string built here: every value from RunPod or the rules goes through
`html.escape`, there is no JavaScript and no external asset (the CSS is inline), and it
reloads itself every probe interval. It reads only what the runtime already holds, so a
request never calls RunPod. It shows no configuration secret and no template env value.

Besides the state now it draws the retained history (monitor/http/charts.py: inline SVG whose
coordinates are the data) and lists the incident history (monitor/state/episodes.py). Endpoint
cards come PER_PAGE to a page (`?page=K`), those in trouble first, and only the cards shown
get charts: the page stays small and fast at 1000 endpoints (benchmarks/README.md).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING, Any

from aiohttp import web

from model.observation import (
    OK,
    RETIRED,
    WORKER_STATES,
    Account,
    EndpointSample,
    Health,
    Observation,
    iso_utc,
    queued_wait_ms,
)
from monitor import __version__
from monitor.http import charts
from monitor.http.charts import Span, Window
from monitor.state.episodes import Episode
from monitor.state.incidents import Incident
from rules.diagnosis import SEVERITY_ORDER
from rules.log_evidence import EVIDENCE_KEY as LOGS_KEY
from rules.log_evidence import LAST_LINES, LINE_CHARS, excerpt, excerpt_title

if TYPE_CHECKING:
    from monitor.actions import ActionEngine
    from monitor.http.web import Runtime

# Endpoint cards (with their charts) per page; those in trouble come first.
PER_PAGE = 25
# Incident history rows shown, the newest first.
HISTORY_ROWS = 100
# Worker states stacked in the workers chart, from the bottom: working, then waiting,
# then the ones in trouble on top.
STACK = ("running", "idle", "ready", "initializing", "throttled", "unhealthy")

# No script may run, nothing is fetched from elsewhere, the page is never framed.
HEADERS: Mapping[str, str] = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

_CSS = """
:root{--bg:#f4f5f7;--card:#fff;--fg:#1b1f24;--muted:#5f6b7a;--line:#dde1e6;
--crit:#c62828;--crit-bg:#fdecea;--warn:#b45309;--warn-bg:#fff4e0;--info:#1d5fbf;
--info-bg:#e8f0fc;--ok:#1b7f3b;--ok-bg:#e6f4ea;--code-bg:#f0f2f5;--idle:#7fb3a0}
@media (prefers-color-scheme:dark){:root{--bg:#111418;--card:#1a1f25;--fg:#e6e9ed;
--muted:#9aa5b1;--line:#2c333b;--crit:#ff6b6b;--crit-bg:#3a1c1c;--warn:#f0a540;
--warn-bg:#3a2c14;--info:#74a7ff;--info-bg:#182a45;--ok:#4cc27a;--ok-bg:#17301f;
--code-bg:#12161b;--idle:#3f7a66}}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--fg);line-height:1.45;
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
main{max-width:960px;margin:0 auto;padding:12px}
header{padding:4px 2px 10px}
h1{font-size:1.3rem;margin:0 0 4px}
h2{font-size:1.05rem;margin:20px 2px 8px;display:flex;align-items:center;gap:8px}
h3{font-size:1rem;margin:0;overflow-wrap:anywhere}
.muted{color:var(--muted)}
.small{font-size:.85rem}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;
padding:12px 14px;margin:0 0 10px}
.pill{display:inline-block;border-radius:999px;padding:1px 9px;font-size:.8rem;
font-weight:600;white-space:nowrap;border:1px solid transparent}
.pill.critical{background:var(--crit-bg);color:var(--crit);border-color:var(--crit)}
.pill.warning{background:var(--warn-bg);color:var(--warn);border-color:var(--warn)}
.pill.info{background:var(--info-bg);color:var(--info);border-color:var(--info)}
.pill.ok{background:var(--ok-bg);color:var(--ok);border-color:var(--ok)}
.pill.none{background:var(--code-bg);color:var(--muted);border-color:var(--line)}
.counts,.links{display:flex;flex-wrap:wrap;gap:6px;margin-top:8px}
a.pill{text-decoration:none}
.stats{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:8px}
.stat{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:10px}
.stat .label{font-size:.75rem;text-transform:uppercase;letter-spacing:.04em;
color:var(--muted)}
.stat .value{font-size:1.25rem;font-weight:700;margin-top:2px;overflow-wrap:anywhere}
.stat.critical{border-color:var(--crit)}.stat.critical .value{color:var(--crit)}
.stat.warning{border-color:var(--warn)}.stat.warning .value{color:var(--warn)}
.diag,.ep{border-left:6px solid var(--line)}
.diag.critical,.ep.critical{border-left-color:var(--crit)}
.diag.warning,.ep.warning{border-left-color:var(--warn)}
.diag.info,.ep.info{border-left-color:var(--info)}
.ep{border-left-color:var(--ok)}
.diag .head,.act .head{display:flex;flex-wrap:wrap;align-items:center;gap:6px 8px}
.diag code.code{font-weight:700;font-size:.95rem}
.diag .summary{margin:8px 0}
code,pre{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace}
pre{background:var(--code-bg);border:1px solid var(--line);border-radius:8px;
padding:10px;margin:6px 0 0;font-size:.8rem;white-space:pre-wrap;overflow-wrap:anywhere}
details{margin-top:8px}
summary{cursor:pointer;font-weight:600;font-size:.9rem}
table{border-collapse:collapse;width:100%;font-size:.85rem}
th,td{text-align:left;padding:3px 6px 3px 0;vertical-align:top;
border-bottom:1px solid var(--line);overflow-wrap:anywhere}
th{font-weight:600;color:var(--muted);width:13rem}
.ep .head{display:flex;flex-wrap:wrap;align-items:baseline;justify-content:space-between;
gap:4px 8px}
.ep .id{font-size:.8rem}
.chips{display:flex;flex-wrap:wrap;gap:5px;margin:8px 0 4px}
.chip{border:1px solid var(--line);border-radius:6px;padding:1px 7px;font-size:.8rem;
font-variant-numeric:tabular-nums}
.chip b{font-weight:700}
.chip.zero{color:var(--muted);opacity:.7}
.chip.bad{border-color:var(--crit);color:var(--crit);background:var(--crit-bg)}
.chip.hot{border-color:var(--warn);color:var(--warn);background:var(--warn-bg)}
.chip.good{border-color:var(--ok);color:var(--ok);background:var(--ok-bg)}
.kv{display:grid;grid-template-columns:repeat(4,minmax(0,1fr));gap:6px;margin-top:6px}
.kv div{font-size:.75rem;color:var(--muted)}
.kv b{display:block;color:var(--fg);font-size:1rem;font-variant-numeric:tabular-nums}
.empty{color:var(--muted);font-style:italic}
.notice{border-left:6px solid var(--info);background:var(--info-bg)}
.notice.critical{border-left-color:var(--crit);background:var(--crit-bg)}
footer{margin:18px 2px 8px;font-size:.8rem;color:var(--muted)}
footer a{color:inherit}
.charts{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:6px 14px;margin-top:10px}
.charts.two{grid-template-columns:repeat(2,minmax(0,1fr))}
.fig{margin:0;min-width:0}
.fig figcaption{display:flex;flex-wrap:wrap;justify-content:space-between;gap:0 6px;
font-size:.75rem;color:var(--muted);font-variant-numeric:tabular-nums}
.fig figcaption b{color:var(--fg)}
svg.chart{display:block;width:100%;height:46px;background:var(--code-bg);
border:1px solid var(--line);border-radius:4px}
svg.chart path{vector-effect:non-scaling-stroke}
.grid{fill:none;stroke:var(--line);stroke-width:1px}
.line{fill:none;stroke-width:1.5px}
.area{stroke:none}
.area.q,.area.w,.area.sp{fill-opacity:.6}
.q{stroke:var(--info);fill:var(--info-bg)}.line.q{fill:none}
.w{stroke:var(--warn);fill:var(--warn-bg)}.line.w{fill:none}
.sp{stroke:var(--info);fill:var(--info-bg)}.line.sp{fill:none}
.b{stroke:var(--ok)}
rect.sp{stroke:none;opacity:.2}rect.sp.critical{fill:var(--crit)}
rect.sp.warning{fill:var(--warn)}rect.sp.info{fill:var(--info)}
.bar{fill:none;stroke-width:6px}.bar.critical{stroke:var(--crit)}
.bar.warning{stroke:var(--warn)}.bar.info{stroke:var(--info)}
.s-running{fill:var(--ok);background:var(--ok)}
.s-idle{fill:var(--muted);background:var(--muted)}
.s-ready{fill:var(--idle);background:var(--idle)}
.s-initializing{fill:var(--info);background:var(--info)}
.s-throttled{fill:var(--warn);background:var(--warn)}
.s-unhealthy{fill:var(--crit);background:var(--crit)}
.sw{display:inline-block;width:.65em;height:.65em;border-radius:2px;margin:0 3px 0 0}
.legend{display:flex;flex-wrap:wrap;align-items:center;gap:0 8px;font-size:.7rem;
color:var(--muted)}
.ax{position:relative;height:1.15em;font-size:.68rem;color:var(--muted);overflow:hidden}
.ax span{position:absolute;top:0;transform:translateX(-50%);white-space:nowrap}
.pager{display:flex;flex-wrap:wrap;align-items:center;gap:8px;margin:0 2px 10px}
.evs{list-style:none;margin:0;padding:0}
.ev{border-left:6px solid var(--line);padding:8px 12px}
.ev.critical{border-left-color:var(--crit)}.ev.warning{border-left-color:var(--warn)}
.ev.info{border-left-color:var(--info)}
.ev .head{display:flex;flex-wrap:wrap;align-items:center;gap:4px 8px;margin-bottom:2px}
@media (max-width:520px){main{padding:8px}.stat{padding:8px}.stat .value{font-size:1.1rem}
.card{padding:10px 12px}th{width:40%}.charts{grid-template-columns:1fr;gap:4px}
.charts.two{grid-template-columns:1fr}svg.chart{height:40px}}
@media (max-width:340px){.stats,.kv{grid-template-columns:1fr 1fr}}
"""


# ---------------------------------------------------------------- formatting


def _e(value: object) -> str:
    """Any value as escaped text."""
    return escape(str(value), quote=True)


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")




def _ago(seconds: float) -> str:
    """A duration in words: '12 s', '5 min', '3.2 h', '4.0 days'."""
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _time(t: float, now: float) -> str:
    """A <time> element: the UTC time (without the date when it is today), and how long ago."""
    when = datetime.fromtimestamp(t, UTC)
    text = _utc(t)
    if when.date() == datetime.fromtimestamp(now, UTC).date():
        text = when.strftime("%H:%M:%S UTC")
    return (
        f'<time datetime="{_e(iso_utc(t))}" title="{_e(_utc(t))}">{_e(text)}</time> '
        f'<span class="muted">({_e(_ago(now - t))} ago)</span>'
    )


def _usd(value: float) -> str:
    return f"${value:,.3f}" if 0 < abs(value) < 1 else f"${value:,.2f}"


def _runway(account: Account) -> str:
    """Balance over spend: minutes under an hour, days past two; '—' while nothing spends."""
    if account.spend_per_hr <= 0:
        return "—"
    hours = max(0.0, account.balance) / account.spend_per_hr
    if hours < 1:
        return f"{hours * 60:.0f} min"
    if hours < 48:
        return f"{hours:.1f} h"
    days = hours / 24
    return f"{days:.1f} days" if days < 10 else f"{days:,.0f} days"


def _value(value: Any) -> str:
    """An evidence value as escaped text; lists and mappings as compact JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _e(f"{value:g}")
    if isinstance(value, list | tuple | dict):
        return _e(json.dumps(value, ensure_ascii=False, default=str))
    return _e(value)


def _anchor(incident: Incident) -> str:
    """The id of a diagnosis card, for links from the endpoint and account summaries."""
    d = incident.diagnosis
    return f"d-{d.code}-{d.endpoint_id}" if d.endpoint_id else f"d-{d.code}"


def _links(incidents: Iterable[Incident]) -> str:
    """Links to the given diagnoses' cards, coloured by severity."""
    links = "".join(
        f'<a class="pill {_e(i.diagnosis.severity)}" href="#{_e(_anchor(i))}">'
        f"{_e(i.diagnosis.code)}</a>"
        for i in incidents
    )
    return f'<div class="links">{links}</div>' if links else ""


def _worst(incidents: Iterable[Incident]) -> str | None:
    severities = [i.diagnosis.severity for i in incidents]
    return max(severities, key=SEVERITY_ORDER.__getitem__) if severities else None


# ---------------------------------------------------------------- sections


def _header(ok: bool, reason: str, obs: Observation | None, refresh_s: int, now: float,
            incidents: list[Incident]) -> str:
    state = '<span class="pill ok">monitor ok</span>' if ok else (
        '<span class="pill critical">monitor stale</span>'
    )
    if obs is None:
        fresh = '<span class="muted">no probe cycle has completed yet</span>'
    else:
        fresh = f"last cycle #{_e(obs.cycle)}: {_time(obs.t, now)}"
    detail = f"refreshes every {refresh_s} s"
    if not ok:
        detail = f"{_e(reason)} · {detail}"
    counts = []
    for severity in ("critical", "warning", "info"):
        n = sum(1 for i in incidents if i.diagnosis.severity == severity)
        cls = severity if n else "none"
        counts.append(f'<span class="pill {cls}">{n} {severity}</span>')
    return (
        "<header>"
        f'<h1>RunPod Serverless status</h1>'
        f'<div class="small">{state} {fresh}</div>'
        f'<div class="small muted">{detail}</div>'
        f'<div class="counts">{"".join(counts)}</div>'
        "</header>"
    )


def _account(obs: Observation | None, incidents: list[Incident], pictures: str = "") -> str:
    account = obs.account if obs is not None else None
    if account is None:
        if obs is None:
            why = "no probe cycle yet"
        elif obs.control_plane == "graphql":
            why = f"GraphQL probe: {obs.control_outcome}"
        else:  # REST v2: the balance and the billing each on their own period
            why = "REST v2 balance or billing not known"
        return (
            '<h2 id="account">Account</h2><div class="card empty">'
            f"Balance and spend unknown this cycle ({_e(why)}).</div>"
            + pictures + _links(i for i in incidents if i.diagnosis.scope == "account")
        )
    low = _worst(i for i in incidents if i.diagnosis.code == "low_balance") or ""
    scoped = _links(i for i in incidents if i.diagnosis.scope == "account")
    limit = ""
    if account.spend_limit is not None:
        limit = f' <span class="muted small">limit {_e(_usd(account.spend_limit))}/h</span>'
    return (
        '<h2 id="account">Account</h2>'
        '<div class="stats">'
        f'<div class="stat {low}"><div class="label">Balance</div>'
        f'<div class="value">{_e(_usd(account.balance))}</div></div>'
        f'<div class="stat"><div class="label">Spend</div>'
        f'<div class="value">{_e(_usd(account.spend_per_hr))}/h</div>{limit}</div>'
        f'<div class="stat {low}"><div class="label">Runway</div>'
        f'<div class="value">{_e(_runway(account))}</div></div>'
        f"</div>{pictures}{scoped}"
    )


# Facts of Observation.sources, in the order the page lists them
FACTS = ("endpoints", "balance", "spend_per_hr", "spend_limit", "billing_mode", "volumes",
         "pods", "endpoint_spend", "gpu_stock")
_API = {"rest": "REST v2", "graphql": "GraphQL"}


def _control_plane(obs: Observation | None) -> str:
    """The API the monitor reads RunPod's control plane with, which one fed each fact this
    cycle, and a notice when GraphQL is retired (an error while the config asks for it)."""
    if obs is None:
        return ""
    notice = ""
    if obs.graphql_state == RETIRED:
        if obs.control_plane == "graphql":
            notice = (
                '<div class="card notice critical" id="graphql-retired" role="alert">'
                '<span class="pill critical">error</span> <b>GraphQL is retired</b>, and '
                "<code>runpod.control_plane</code> is <code>graphql</code>: the account and "
                "endpoint configuration are unknown. Set <code>runpod.control_plane: auto"
                "</code> (the default) to read REST v2.</div>"
            )
        else:
            notice = (
                '<div class="card notice" id="graphql-retired" role="status">'
                '<span class="pill info">notice</span> <b>GraphQL is retired; reading REST v2 '
                "only.</b></div>"
            )
    fed = [(f, obs.sources[f]) for f in FACTS if f in obs.sources]
    fed += [(f, a) for f, a in sorted(obs.sources.items()) if f not in FACTS]
    rows = "".join(
        f'<tr><th>{_e(f.replace("_", " "))}</th><td data-fact="{_e(f)}">'
        f"{_e(_API.get(a, a))}</td></tr>"
        for f, a in fed
    ) or '<tr><td class="empty">no control-plane fact this cycle</td></tr>'
    return (
        f'{notice}<div class="small muted" id="control-plane">control plane: '
        f'<b>{_e(_API.get(obs.control_plane, obs.control_plane))}</b></div>'
        f'<details class="small"><summary>Which API fed each fact</summary>'
        f"<table>{rows}</table></details>"
    )


def _diagnosis(incident: Incident, now: float) -> str:
    d = incident.diagnosis
    where = "account"
    if d.endpoint_id is not None:
        name = d.endpoint_name or d.endpoint_id
        where = _e(name) if name == d.endpoint_id else (
            f'{_e(name)} <span class="muted small">({_e(d.endpoint_id)})</span>'
        )
    rows = "".join(
        f"<tr><th>{_e(k)}</th><td>{_value(v)}</td></tr>" for k, v in d.evidence.items()
        if k != LOGS_KEY
    )
    evidence = (
        f'<details open><summary>Evidence</summary><table>{rows}</table></details>'
        if rows else ""
    ) + _worker_logs(d.evidence)
    return (
        f'<article class="card diag {_e(d.severity)}" id="{_e(_anchor(incident))}">'
        '<div class="head">'
        f'<span class="pill {_e(d.severity)}">{_e(d.severity)}</span>'
        f'<code class="code">{_e(d.code)}</code>'
        f"<span>{where}</span></div>"
        f'<div class="small muted">since {_time(incident.since, now)}</div>'
        f'<p class="summary">{_e(d.summary)}</p>'
        f"{evidence}"
        '<details open><summary>Remedy</summary>'
        f'<pre class="remedy">{_e(d.remedy)}</pre></details>'
        "</article>"
    )


def _worker_logs(evidence: Mapping[str, Any]) -> str:
    """The worker's log lines behind a diagnosis, collapsed: the matched ones or the last."""
    title = excerpt_title(evidence)
    if not title:
        return ""
    lines = excerpt(evidence, max_lines=LAST_LINES, max_chars=LINE_CHARS + 60)
    body = "\n".join(lines) or "(no line)"
    return (f'<details class="logs"><summary>{_e(title)}</summary>'
            f'<pre class="logs">{_e(body)}</pre></details>')


def _diagnoses(incidents: list[Incident], now: float) -> str:
    body = "".join(_diagnosis(i, now) for i in incidents) or (
        '<div class="card empty">No active diagnosis: nothing looks wrong.</div>'
    )
    count = f'<span class="muted small">{len(incidents)}</span>'
    return f'<h2 id="diagnoses">Active diagnoses {count}</h2>{body}'


def _oldest_wait(sample: EndpointSample) -> float | None:
    """How long the oldest queued job has waited, by the gauge's rule (0 with none queued);
    None when this cycle did not read the jobs."""
    wait = None if sample.jobs is None else queued_wait_ms(sample.jobs)
    return None if wait is None else wait / 1000


def _chip(state: str, n: int) -> str:
    cls = "zero"
    if n:
        cls = {"unhealthy": "bad", "throttled": "hot", "running": "good"}.get(state, "")
    return f'<span class="chip {cls}">{_e(state)} <b>{n}</b></span>'


def _endpoint(eid: str, name: str, sample: EndpointSample, mine: list[Incident],
              pictures: str = "", wait: float | None = None,
              workers_age: float | None = None) -> str:
    worst = _worst(mine)
    if sample.health_outcome == OK:
        up = f'<span class="pill ok">up · HTTP {_e(sample.http_status)}</span>'
    elif sample.health_outcome == "http_404":
        up = '<span class="pill critical">down · HTTP 404</span>'
    else:
        status = f" · HTTP {sample.http_status}" if sample.http_status else ""
        up = f'<span class="pill warning">unknown · {_e(sample.health_outcome)}{_e(status)}</span>'
    title = _e(name) if name != eid else _e(eid)
    ident = f'<div class="id muted"><code>{_e(eid)}</code></div>' if name != eid else ""
    listed = ""
    if sample.listed is False:
        listed = '<div class="small muted">not listed by GraphQL this cycle</div>'
    h = sample.health
    if h is None:
        chips = '<div class="small empty">no /health data this cycle</div>'
        queue = running = "—"
    else:
        chips = '<div class="chips">' + "".join(
            _chip(state, getattr(h, state)) for state in WORKER_STATES
        ) + "</div>"
        queue, running = str(h.in_queue), str(h.in_progress)
    cfg = sample.config
    wmax = "—" if cfg is None else f"{cfg.workers_min}–{cfg.workers_max}"  # min–max
    gpus = f'<div class="small muted">GPUs: <code>{_e(cfg.gpu_ids)}</code></div>' if (
        cfg is not None and cfg.gpu_ids) else ""
    if workers_age is not None:
        gpus += (f'<div class="small muted workers-age">worker records: '
                 f"{_e(_ago(workers_age))} old</div>")
    return (
        f'<article class="card ep {_e(worst or "")}" id="ep-{_e(eid)}">'
        f'<div class="head"><h3>{title}</h3>{up}</div>{ident}{listed}{chips}'
        '<div class="kv">'
        f"<div>in queue<b>{_e(queue)}</b></div>"
        f"<div>in progress<b>{_e(running)}</b></div>"
        f"<div>oldest wait<b>{_e(_wait_text(wait))}</b></div>"
        f"<div>workers<b>{_e(wmax)}</b></div>"
        f"</div>{pictures}{gpus}{_links(mine)}</article>"
    )


@dataclass(frozen=True, slots=True)
class _Past:
    """What the charts draw from: the retained observations, their window, the episodes."""

    observations: Sequence[Observation]
    times: list[float]  # of the observations
    w: Window
    grid: charts.Grid  # where the (bucketed) samples sit in the window
    episodes: list[Episode]
    now: float
    by_endpoint: dict[str | None, list[Episode]] = field(default_factory=dict)


def _pager(page: int, pages: int) -> str:
    if pages <= 1:
        return ""

    def link(k: int, text: str) -> str:
        return f'<a class="pill none" href="?page={k}#endpoints">{_e(text)}</a>'

    parts = [link(page - 1, "‹ previous")] if page > 1 else []
    parts.append(f'<span class="small muted">page {page} of {pages}</span>')
    if page < pages:
        parts.append(link(page + 1, "next ›"))
    return f'<nav class="pager">{"".join(parts)}</nav>'


def _endpoints(obs: Observation | None, runtime: Runtime, incidents: list[Incident],
               past: _Past | None, page: int, per_page: int | None, now: float) -> str:
    if obs is None or not obs.endpoints:
        return (
            '<h2 id="endpoints">Endpoints</h2>'
            '<div class="card empty">No endpoint observed yet.</div>'
        )
    mine: dict[str, list[Incident]] = {eid: [] for eid in obs.endpoints}
    for i in incidents:
        if i.diagnosis.endpoint_id in mine:
            mine[i.diagnosis.endpoint_id].append(i)
    worst = {eid: _worst(mine[eid]) for eid in obs.endpoints}
    names = {eid: runtime.endpoint_name(eid) for eid in obs.endpoints}
    history = runtime.history()

    def rank(eid: str) -> tuple[int, str, str]:
        w = worst[eid]
        return (-(SEVERITY_ORDER[w] + 1) if w else 0, names[eid].lower(), eid)

    ordered = sorted(obs.endpoints, key=rank)
    total = len(ordered)
    pages = 1 if not per_page else max(1, math.ceil(total / per_page))
    page = min(max(1, page), pages)
    shown = ordered if not per_page else ordered[(page - 1) * per_page:page * per_page]
    cards = []
    for eid in shown:
        pictures, wait = "", _oldest_wait(obs.endpoints[eid])
        if past is not None:
            pictures, wait = _endpoint_charts(eid, past, _spans(past, eid))
        seen = history.latest_workers(eid)  # the freshest REST v2 worker record
        age = None if seen is None else max(0.0, now - seen[0])
        cards.append(_endpoint(eid, names[eid], obs.endpoints[eid], mine[eid], pictures, wait,
                               age))
    if len(shown) < total:
        first = (page - 1) * (per_page or 0) + 1
        count = (f'<span class="muted small">{first}–{first + len(shown) - 1} of {total}, '
                 "in trouble first</span>")
    else:
        count = f'<span class="muted small">{total}</span>'
    nav = _pager(page, pages)
    return f'<h2 id="endpoints">Endpoints {count}</h2>{nav}{"".join(cards)}{nav}'


# ---------------------------------------------------------------- the past: charts


def _clock(t: float, now: float) -> str:
    """A time as HH:MM UTC, with the date when it is not today."""
    when = datetime.fromtimestamp(t, UTC)
    if when.date() == datetime.fromtimestamp(now, UTC).date():
        return when.strftime("%H:%M")
    return when.strftime("%Y-%m-%d %H:%M")


def _spans(past: _Past, endpoint_id: str | None) -> list[Span]:
    """The incidents of one endpoint (or of the account, for None) as spans on the charts:
    an escalated one at its first severity until it rose, then at the higher one."""
    out = []
    w, now = past.w, past.now
    for e in past.by_endpoint.get(endpoint_id, ()):
        end = e.ended_at if e.ended_at is not None else w.t1
        until = _clock(end, now) if e.ended_at is not None else "now"
        label = f"{e.code} ({e.severity}) {_clock(e.since, now)}–{until} UTC"
        if e.escalated_at is not None and e.since < e.escalated_at < end:
            out.append(Span(e.since, e.escalated_at, e.first_severity, e.code, label))
            out.append(Span(e.escalated_at, end, e.severity, e.code, label))
        else:
            out.append(Span(e.since, end, e.severity, e.code, label))
    out.sort(key=lambda s: SEVERITY_ORDER.get(s.severity, 0))  # the worst drawn last, on top
    return out


def _figure(w: Window, name: str, title: str, now_text: str, note: str,
            chart: tuple[float, float, Sequence[tuple[str, str, str]]], spans: list[Span],
            legend: str = "") -> str:
    """A captioned chart: `title` and its value now, a `note` (plain text), the chart of
    (lo, hi, paths) with the spans, the time axis, and an optional legend (HTML)."""
    lo, hi, paths = chart
    label = f"{title} over the last {_ago(w.span)}: now {now_text}, {note}"
    if legend:
        legend = f'<div class="legend">{legend}</div>'
    return (
        f'<figure class="fig"><figcaption><span>{_e(title)} <b>{_e(now_text)}</b></span>'
        f'<span class="muted">{_e(note)}</span></figcaption>'
        f"{charts.chart(w, name, lo, hi, paths, spans, label=label)}{charts.axis(w)}{legend}"
        "</figure>"
    )


def _known(values: Iterable[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def _wait_text(seconds: float | None) -> str:
    return "—" if seconds is None else _ago(seconds)


def _endpoint_charts(eid: str, past: _Past, spans: list[Span]) -> tuple[str, float | None]:
    """Queue depth, oldest wait and workers by state over the window, incidents marked;
    and the oldest wait now (the gauge's value: it holds while the jobs are not read)."""
    w = past.w
    queue: list[float | None] = []
    wait: list[float | None] = []
    stacked: list[list[float | None]] = [[] for _ in STACK]
    last_wait: float | None = None
    prev: EndpointSample | None = None
    row: list[float | None] = [None] * len(STACK)
    queue_now: float | None = None
    for o in past.observations:
        sample = o.endpoints.get(eid)
        # the gauge's rule (runpod_endpoint_queue_delay_seconds): 0 with none queued,
        # the last value while the queued jobs tell no delay
        ms = None if sample is None or sample.jobs is None else queued_wait_ms(sample.jobs)
        if ms is not None:
            last_wait = ms / 1000
        wait.append(None if sample is None or last_wait is None else round(last_wait, 3))
        if sample is not prev:  # the probe path shares an unchanged sample between cycles
            prev = sample
            h: Health | None = None if sample is None else sample.health
            if h is None:
                row = [None] * len(STACK)
            else:
                total = 0
                for k, state in enumerate(STACK):
                    total += getattr(h, state)
                    row[k] = total
            queue_now = None if h is None else h.in_queue
        queue.append(queue_now)
        for series, v in zip(stacked, row, strict=True):
            series.append(v)
    _, (queue, wait, *stacked) = charts.bucket(w, past.times, [queue, wait, *stacked])
    q, wt = _known(queue), _known(wait)
    queue_runs = charts.runs(past.grid, queue)
    wait_runs = charts.runs(past.grid, wait)
    figures = [
        _figure(w, "in_queue", "queue", "—" if queue[-1] is None else str(int(queue[-1])),
                f"max {int(max(q, default=0))}", (0, max(q, default=0), [
                    ("in_queue", "area q", charts.area_path(queue_runs, 0)),
                    ("in_queue", "line q", charts.line_path(queue_runs)),
                ]), spans),
        _figure(w, "oldest_wait_s", "oldest wait", _wait_text(wait[-1]),
                f"max {_wait_text(max(wt)) if wt else '—'}", (0, max(wt, default=0), [
                    ("oldest_wait_s", "area w", charts.area_path(wait_runs, 0)),
                    ("oldest_wait_s", "line w", charts.line_path(wait_runs)),
                ]), spans),
    ]
    paths: list[tuple[str, str, str]] = []
    legend = []
    below: list[float | None] = [None if v is None else 0 for v in stacked[0]]
    for state, series in zip(STACK, stacked, strict=True):
        if series != below:  # a state at 0 throughout adds nothing to the stack
            paths.append((state, f"area s-{state}",
                          charts.area_path(charts.runs(past.grid, series), 0)))
            legend.append(f'<span><i class="sw s-{state}"></i>{_e(state)}</span>')
        below = series
    paths.reverse()  # the tallest (cumulative) first, each lower band painted over it
    top = max(_known(stacked[-1]), default=0)
    figures.append(_figure(
        w, "workers", "workers", "—" if stacked[-1][-1] is None else str(int(stacked[-1][-1])),
        f"max {int(top)}", (0, top, paths), spans, " ".join(legend),
    ))
    return f'<div class="charts">{"".join(figures)}</div>', last_wait


def _account_charts(past: _Past, spans: list[Span]) -> str:
    """Balance and spend per hour over the window, account incidents marked."""
    w = past.w
    balance = [None if o.account is None else round(o.account.balance, 3)
               for o in past.observations]
    spend = [None if o.account is None else round(o.account.spend_per_hr, 3)
             for o in past.observations]
    _, (balance, spend) = charts.bucket(w, past.times, [balance, spend])
    b, sp = _known(balance), _known(spend)
    if not b:
        return ""
    b_runs, s_runs = charts.runs(past.grid, balance), charts.runs(past.grid, spend)
    lo, hi = min(b), max(b)
    spread = f"{_usd(lo)} – {_usd(hi)}" if hi > lo else "unchanged"
    if hi - lo < 0.01:  # a flat balance sits mid-height, not on the floor
        lo, hi = lo - 0.5, hi + 0.5
    return '<div class="charts two">' + "".join([
        _figure(w, "balance_usd", "balance", _usd(b[-1]), spread, (lo, hi, [
            ("balance_usd", "line b", charts.line_path(b_runs)),
        ]), spans),
        _figure(w, "spend_usd_per_hr", "spend", f"{_usd(sp[-1])}/h", f"max {_usd(max(sp))}/h",
                (0, max(sp), [
                    ("spend_usd_per_hr", "area sp", charts.area_path(s_runs, 0)),
                    ("spend_usd_per_hr", "line sp", charts.line_path(s_runs)),
                ]), spans),
    ]) + "</div>"


# ---------------------------------------------------------------- the incident history


def _episode(e: Episode, now: float) -> str:
    where = "account"
    if e.endpoint_id is not None:
        name = e.endpoint_name or e.endpoint_id
        where = _e(name) if name == e.endpoint_id else (
            f'{_e(name)} <span class="muted small">({_e(e.endpoint_id)})</span>'
        )
    steps = [f"raised {_e(_clock(e.since, now))}"]
    if e.escalated_at is not None:
        steps.append(f"escalated to {_e(e.severity)} {_e(_clock(e.escalated_at, now))}")
    if e.ended_at is None:
        state = '<span class="pill none">active</span>'
        lasted = f"for {_e(_ago(now - e.since))} so far"
    else:
        state = '<span class="pill ok">resolved</span>'
        steps.append(f"resolved {_e(_clock(e.ended_at, now))}")
        lasted = f"lasted {_e(_ago(e.ended_at - e.since))}"
    data = (
        f'data-code="{_e(e.code)}" data-endpoint="{_e(e.endpoint_id or "")}" '
        f'data-since="{e.since:.0f}" data-escalated="'
        f'{"" if e.escalated_at is None else f"{e.escalated_at:.0f}"}" '
        f'data-ended="{"" if e.ended_at is None else f"{e.ended_at:.0f}"}"'
    )
    return (
        f'<li class="card ev {_e(e.severity)}" {data}>'
        f'<div class="head"><span class="pill {_e(e.severity)}">{_e(e.severity)}</span>'
        f'<code class="code">{_e(e.code)}</code><span>{where}</span>{state}</div>'
        f'<div class="small muted">{", ".join(steps)} UTC · {lasted}</div>'
        f'<div class="small">{_e(e.summary)}</div></li>'
    )


def _history(episodes: list[Episode], span_s: float | None, now: float) -> str:
    window = f"in the last {_ago(span_s)}" if span_s else "kept"
    count = f'<span class="muted small">{len(episodes)} {_e(window)}</span>'
    if not episodes:
        return (
            f'<h2 id="history">Incident history {count}</h2>'
            '<div class="card empty">No incident in the retained history.</div>'
        )
    rows = "".join(_episode(e, now) for e in episodes[:HISTORY_ROWS])
    more = ""
    if len(episodes) > HISTORY_ROWS:
        more = (f'<div class="small muted">and {len(episodes) - HISTORY_ROWS} older '
                "not shown</div>")
    return f'<h2 id="history">Incident history {count}</h2><ol class="evs">{rows}</ol>{more}'


# ---------------------------------------------------------------- guarded fixes

ACTION_ROWS = 20


def _actions(engine: ActionEngine | None) -> str:
    """Guarded fixes: each open proposal with its call and how to approve it, then the
    newest lines of the audit log. Nothing when no action is enabled and none was ever
    proposed."""
    if engine is None:
        return ""
    listing = engine.listing()
    enabled = [k for k in ("cancel_overrun", "purge_after_crash_loop", "spend_guard")
               if getattr(engine.settings, k).enabled]
    if not listing and not engine.audit and not enabled:
        return ""
    dry = " · dry run: nothing is called" if engine.dry_run else ""
    head = (f'<h2 id="actions">Guarded fixes <span class="muted small">enabled: '
            f'{_e(", ".join(enabled) or "none")}{_e(dry)}</span></h2>')
    rows = []
    for p in [x for x in listing if x.open][:ACTION_ROWS]:
        how = (f"approved by {p.approved_by}, runs at the next cycle" if p.state == "approved"
               else f"approve: {engine.approve_command(p)}")
        rows.append(
            f'<div class="card act"><div class="head"><span class="pill warning">{_e(p.state)}'
            f'</span><code class="code">{_e(p.kind)}</code><span>{_e(p.endpoint_id)}</span>'
            f'<span class="muted small">{_e(p.id)}</span></div>'
            f'<div class="small">{_e(p.summary)}</div>'
            f'<div class="small"><code>{_e(p.call.text())}</code> if still '
            f'<code>{_e(json.dumps(dict(p.precondition)))}</code></div>'
            f'<div class="small muted"><code>{_e(how)}</code></div></div>'
        )
    audit = "".join(
        f'<li class="ev"><span class="small muted">{_e(_utc(a.t))}</span> '
        f'<code>{_e(a.event)}</code> {_e(a.kind)} {_e(a.endpoint_id)} '
        f'<span class="muted small">{_e(a.action_id)} · {_e(a.who)}</span>'
        f'<div class="small">{_e(a.detail)}'
        + (f' · <code>{_e(a.call)}</code>' if a.call else "")
        + (f' → {_e(a.outcome)}' if a.outcome else "") + "</div></li>"
        for a in reversed(engine.audit[-ACTION_ROWS:])
    )
    log = (f'<h3>Audit log</h3><ol class="evs">{audit}</ol>' if audit
           else '<div class="card empty">No action proposed yet.</div>')
    return head + "".join(rows) + log


# ---------------------------------------------------------------- the page


def _the_past(runtime: Runtime, incidents: list[Incident], now: float) -> _Past | None:
    observations = runtime.history().observations
    if len(observations) < 2:  # one sample is no picture of anything
        return None
    times = [o.t for o in observations]
    w = charts.window(times, runtime.interval_s())
    logged = runtime.episodes()
    active = {e.key for e in logged if e.active}
    # an active incident the runtime's log does not hold still gets its span
    episodes = [*logged, *(Episode.opened(i) for i in incidents if i.key not in active)]
    grid = charts.grid(w, charts.bucket(w, times, [])[0])
    by_endpoint: dict[str | None, list[Episode]] = {}
    for e in episodes:
        by_endpoint.setdefault(e.endpoint_id, []).append(e)
    return _Past(observations, times, w, grid, episodes, now, by_endpoint)


def render(runtime: Runtime, *, now: float | None = None, page: int = 1,
           per_page: int | None = PER_PAGE, pictures: bool = True,
           actions: ActionEngine | None = None) -> str:
    """The whole status page as an HTML string: page `page` of the endpoints, `per_page`
    to a page (None: all). `pictures=False` leaves out the charts and the incident history
    (the page as it was before them: the benchmark's baseline)."""
    now = time.time() if now is None else now
    refresh_s = max(1, math.ceil(runtime.interval_s()))
    incidents = runtime.incidents()
    obs = runtime.last_observation()
    ok, reason = runtime.health()
    worst = _worst(incidents)
    title = "runpod-monitor" + (f" · {len(incidents)} active ({worst})" if worst else " · ok")
    past = _the_past(runtime, incidents, now) if pictures else None
    account_pictures = history = window = ""
    if past is not None:
        account_pictures = _account_charts(past, _spans(past, None))
        window = (f'<div class="small muted">charts: the last {_e(_ago(past.w.span))} '
                  "(the retained history); shaded: incidents</div>")
    elif pictures and obs is not None:
        window = '<div class="small muted">charts from the second probe cycle on</div>'
    if pictures:
        kept = past.episodes if past is not None else runtime.episodes()
        history = _history(sorted(kept, key=lambda e: -e.since),
                           None if past is None else past.w.span, now)
    actions_link = ('<a href="/api/v1/actions">actions JSON</a> · '
                    if actions is not None else "")
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="refresh" content="{refresh_s}">'
        '<meta name="color-scheme" content="light dark">'
        '<meta name="robots" content="noindex">'
        '<link rel="icon" href="data:,">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>"
        f"{_header(ok, reason, obs, refresh_s, now, incidents)}{_control_plane(obs)}{window}"
        f"{_account(obs, incidents, account_pictures)}"
        f"{_endpoints(obs, runtime, incidents, past, page, per_page, now)}"
        f"{_diagnoses(incidents, now)}"
        f"{_actions(actions)}"
        f"{history}"
        f"<footer>runpod-monitor {_e(__version__)} · "
        '<a href="/api/v1/diagnoses">diagnoses JSON</a> · '
        '<a href="/api/v1/endpoints">endpoints JSON</a> · '
        f"{actions_link}"
        '<a href="/metrics">metrics</a></footer>'
        "</main></body></html>\n"
    )


def status_handler(
    runtime: Runtime, actions: ActionEngine | None = None
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The aiohttp handler serving the page at `/` (with the guarded fixes of `actions`)."""

    async def status_page(request: web.Request) -> web.Response:
        raw = request.query.get("page", "1")
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 9 or int(raw) < 1:
            return web.Response(
                text=f"page: must be a positive integer, got {raw[:40]!r}\n", status=400,
                content_type="text/plain", headers=HEADERS,
            )
        return web.Response(
            text=render(runtime, page=int(raw), actions=actions), content_type="text/html",
            charset="utf-8",
            headers=HEADERS,
        )

    return status_page
