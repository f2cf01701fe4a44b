"""The status page at `/`: one server-rendered HTML page, readable on a phone.

The page is a plain string built here: every value from RunPod or the rules goes through
`html.escape`, there is no JavaScript and no external asset (the CSS is inline), and it
reloads itself every probe interval. It reads only what the runtime already holds, so a
request never calls RunPod. It shows no configuration secret and no template env value.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING, Any

from aiohttp import web

from model.observation import OK, WORKER_STATES, Account, EndpointSample, Observation
from monitor import __version__
from monitor.incidents import Incident
from rules.diagnosis import SEVERITY_ORDER

if TYPE_CHECKING:
    from monitor.web import Runtime

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
--info-bg:#e8f0fc;--ok:#1b7f3b;--ok-bg:#e6f4ea;--code-bg:#f0f2f5}
@media (prefers-color-scheme:dark){:root{--bg:#111418;--card:#1a1f25;--fg:#e6e9ed;
--muted:#9aa5b1;--line:#2c333b;--crit:#ff6b6b;--crit-bg:#3a1c1c;--warn:#f0a540;
--warn-bg:#3a2c14;--info:#74a7ff;--info-bg:#182a45;--ok:#4cc27a;--ok-bg:#17301f;
--code-bg:#12161b}}
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
.diag .head{display:flex;flex-wrap:wrap;align-items:center;gap:6px 8px}
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
footer{margin:18px 2px 8px;font-size:.8rem;color:var(--muted)}
footer a{color:inherit}
@media (max-width:520px){main{padding:8px}.stat{padding:8px}.stat .value{font-size:1.1rem}
.card{padding:10px 12px}th{width:40%}}
@media (max-width:340px){.stats,.kv{grid-template-columns:1fr 1fr}}
"""


# ---------------------------------------------------------------- formatting


def _e(value: object) -> str:
    """Any value as escaped text."""
    return escape(str(value), quote=True)


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


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
        f'<time datetime="{_e(_iso(t))}" title="{_e(_utc(t))}">{_e(text)}</time> '
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


def _account(obs: Observation | None, incidents: list[Incident]) -> str:
    account = obs.account if obs is not None else None
    if account is None:
        why = "no probe cycle yet" if obs is None else f"GraphQL probe: {obs.graphql_outcome}"
        return (
            '<h2 id="account">Account</h2><div class="card empty">'
            f"Balance and spend unknown this cycle ({_e(why)}).</div>"
            + _links(i for i in incidents if i.diagnosis.scope == "account")
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
        f"</div>{scoped}"
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
    )
    evidence = (
        f'<details open><summary>Evidence</summary><table>{rows}</table></details>'
        if rows else ""
    )
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


def _diagnoses(incidents: list[Incident], now: float) -> str:
    body = "".join(_diagnosis(i, now) for i in incidents) or (
        '<div class="card empty">No active diagnosis: nothing looks wrong.</div>'
    )
    count = f'<span class="muted small">{len(incidents)}</span>'
    return f'<h2 id="diagnoses">Active diagnoses {count}</h2>{body}'


def _oldest_wait(sample: EndpointSample) -> str:
    """How long the oldest queued job has waited; '—' when none is queued or none told."""
    delays = [j.delay_ms for j in sample.jobs or () if j.status == "IN_QUEUE" and j.delay_ms]
    return _ago(max(delays) / 1000) if delays else "—"


def _chip(state: str, n: int) -> str:
    cls = "zero"
    if n:
        cls = {"unhealthy": "bad", "throttled": "hot", "running": "good"}.get(state, "")
    return f'<span class="chip {cls}">{_e(state)} <b>{n}</b></span>'


def _endpoint(eid: str, name: str, sample: EndpointSample, mine: list[Incident]) -> str:
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
    return (
        f'<article class="card ep {_e(worst or "")}" id="ep-{_e(eid)}">'
        f'<div class="head"><h3>{title}</h3>{up}</div>{ident}{listed}{chips}'
        '<div class="kv">'
        f"<div>in queue<b>{_e(queue)}</b></div>"
        f"<div>in progress<b>{_e(running)}</b></div>"
        f"<div>oldest wait<b>{_e(_oldest_wait(sample))}</b></div>"
        f"<div>workers<b>{_e(wmax)}</b></div>"
        f"</div>{gpus}{_links(mine)}</article>"
    )


def _endpoints(obs: Observation | None, runtime: Runtime, incidents: list[Incident]) -> str:
    if obs is None or not obs.endpoints:
        return (
            '<h2 id="endpoints">Endpoints</h2>'
            '<div class="card empty">No endpoint observed yet.</div>'
        )
    mine = {
        eid: [i for i in incidents if i.diagnosis.endpoint_id == eid] for eid in obs.endpoints
    }
    worst = {eid: _worst(mine[eid]) for eid in obs.endpoints}
    names = {eid: runtime.endpoint_name(eid) for eid in obs.endpoints}

    def rank(eid: str) -> tuple[int, str]:
        w = worst[eid]
        return (-(SEVERITY_ORDER[w] + 1) if w else 0, names[eid].lower())

    cards = "".join(
        _endpoint(eid, names[eid], obs.endpoints[eid], mine[eid])
        for eid in sorted(obs.endpoints, key=rank)
    )
    count = f'<span class="muted small">{len(obs.endpoints)}</span>'
    return f'<h2 id="endpoints">Endpoints {count}</h2>{cards}'


# ---------------------------------------------------------------- the page


def render(runtime: Runtime, *, now: float | None = None) -> str:
    """The whole status page as an HTML string."""
    now = time.time() if now is None else now
    refresh_s = max(1, math.ceil(runtime.interval_s()))
    incidents = runtime.incidents()
    obs = runtime.last_observation()
    ok, reason = runtime.health()
    worst = _worst(incidents)
    title = "runpod-monitor" + (f" · {len(incidents)} active ({worst})" if worst else " · ok")
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="refresh" content="{refresh_s}">'
        '<meta name="color-scheme" content="light dark">'
        '<meta name="robots" content="noindex">'
        '<link rel="icon" href="data:,">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>"
        f"{_header(ok, reason, obs, refresh_s, now, incidents)}"
        f"{_account(obs, incidents)}"
        f"{_endpoints(obs, runtime, incidents)}"
        f"{_diagnoses(incidents, now)}"
        f"<footer>runpod-monitor {_e(__version__)} · "
        '<a href="/api/v1/diagnoses">diagnoses JSON</a> · '
        '<a href="/api/v1/endpoints">endpoints JSON</a> · '
        '<a href="/metrics">metrics</a></footer>'
        "</main></body></html>\n"
    )


def status_handler(runtime: Runtime) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The aiohttp handler serving the page at `/`."""

    async def status_page(_: web.Request) -> web.Response:
        return web.Response(
            text=render(runtime), content_type="text/html", charset="utf-8", headers=HEADERS
        )

    return status_page
