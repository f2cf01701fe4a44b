"""Account scope: the API key, RunPod's API itself, the balance and idle spend.

auth_invalid and runpod_api_errors judge the probes' own outcomes; low_balance and
idle_spend read the account data GraphQL returned. None of them reads a failed probe as
a fact about RunPod: an outage is runpod_api_errors and nothing else.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Literal

from model.history import History
from model.observation import (
    AUTH_OUTCOMES,
    RETIRED,
    SKIPPED,
    UNKNOWN_OUTCOMES,
    Account,
    Observation,
    Pod,
)
from rules.diagnosis import Diagnosis, Severity, evidence
from rules.remedies import REST, REST_URL, api, delete_volume, read, stop_pod, terminate_pod
from rules.rule import Finding, Inhibit, Rule
from rules.signals import minutes, plural
from rules.thresholds import Thresholds

BILLING_URL = "https://www.runpod.io/console/user/billing"
API_KEYS_URL = "https://www.runpod.io/console/user/settings"
HOURS_PER_MONTH = 730
TB_GB = 1000  # network volumes of 1 TB and more bill at the lower per-GB rate (spec 2.6)

AuthState = Literal["auth", "clear", "unknown"]


def _finding(
    severity: Severity, summary: str, remedy: str, numbers: dict[str, object]
) -> Finding:
    return Finding(severity, summary, remedy, evidence(**numbers))


def _counts(outcomes: Iterable[str]) -> str:
    """'timeout: 3, http_5xx: 1', most frequent first."""
    return ", ".join(f"{k}: {n}" for k, n in Counter(outcomes).most_common())


# --- auth_invalid ---------------------------------------------------------------------


def auth_state(obs: Observation) -> AuthState:
    """Whether one cycle saw a 401/403, answered cleanly, or told nothing.

    Clear needs GraphQL to answer without 401/403 and, when endpoints are watched, at
    least one REST `/health` probe to answer with data or a 404.
    """
    rest = [s.health_outcome for s in obs.endpoints.values()]
    if obs.control_outcome in AUTH_OUTCOMES or any(o in AUTH_OUTCOMES for o in rest):
        return "auth"
    if obs.control_outcome in UNKNOWN_OUTCOMES:
        return "unknown"
    if rest and all(o in UNKNOWN_OUTCOMES for o in rest):
        return "unknown"
    return "clear"


def _auth_invalid(history: History, th: Thresholds) -> Finding | None:
    run: list[Observation] = []
    for obs in reversed(history.observations):
        state = auth_state(obs)
        if state == "unknown":
            continue
        if state == "clear":
            break
        run.append(obs)
    if len(run) < th.auth_cycles:
        return None
    newest = run[0]
    graphql = [o.control_outcome for o in run if o.control_outcome in AUTH_OUTCOMES]
    rest = [
        s.health_outcome
        for o in run
        for s in o.endpoints.values()
        if s.health_outcome in AUTH_OUTCOMES
    ]
    rest_endpoints = sorted(
        {eid for o in run for eid, s in o.endpoints.items() if s.health_outcome in AUTH_OUTCOMES}
    )
    where = []
    if graphql:
        where.append("GraphQL")
    if rest:
        where.append(f"REST /health of {plural(len(rest_endpoints), 'endpoint')}")
    codes = sorted({o.replace("http_", "") for o in graphql + rest})
    latest = history.latest
    access = (
        "read access to the REST v2 API (serverless endpoints, billing, pods, network volumes)"
        if api(latest) == REST
        else "read access to GraphQL (account, endpoints)"
    )
    return _finding(
        "critical",
        f"RunPod answered {'/'.join(codes)} to {' and '.join(where)} "
        f"in {plural(len(run), 'cycle')}: "
        "the API key is wrong, revoked, or lacks permission.",
        f"Check the key the monitor uses (RUNPOD_API_KEY): create or fix it at {API_KEYS_URL} "
        f"with {access} and to the Serverless endpoints, "
        f"then test it:\n{read(latest, 'key')}\n"
        f"curl -s {REST_URL}/<endpoint id>/health -H \"Authorization: Bearer $RUNPOD_API_KEY\"\n"
        "Endpoint diagnoses are not raised while it holds.",
        {
            "auth_cycles": len(run),
            "control_outcome": newest.control_outcome,
            "graphql_auth_failures": len(graphql),
            "rest_auth_failures": len(rest),
            "rest_endpoints": ", ".join(rest_endpoints) or None,
            "outcomes": _counts(graphql + rest),
        },
    )


# --- runpod_api_errors ------------------------------------------------------------------


def _graphql_failed(obs: Observation) -> bool | None:
    """Whether the control-plane listing failed this cycle; None when no call was sent
    (back-off), or GraphQL answered that it is retired (a known state, not an error)."""
    if obs.control_outcome in (SKIPPED, RETIRED):
        return None
    return obs.control_outcome in UNKNOWN_OUTCOMES


def _rest_failed(obs: Observation) -> bool | None:
    """Whether every `/health` probe sent this cycle failed; None when endpoints are watched
    but none was probed (back-off, Retry-After): a probe not sent did not fail."""
    sent = _sent_outcomes(obs)
    if not sent:
        return None if obs.endpoints else False
    return all(o in UNKNOWN_OUTCOMES for o in sent)


def _sent_outcomes(obs: Observation) -> list[str]:
    return [s.health_outcome for s in obs.endpoints.values() if s.health_outcome != SKIPPED]


def _failed_run(
    observations: Sequence[Observation], failed: Callable[[Observation], bool | None]
) -> tuple[list[Observation], int]:
    """The newest run of failed cycles, oldest first, and how many cycles since its first
    were not probed: those (None) neither count toward the run nor break it."""
    run: list[Observation] = []
    unsent = pending = 0
    for obs in reversed(observations):
        state = failed(obs)
        if state is None:
            pending += 1
            continue
        if not state:
            break
        run.append(obs)
        unsent, pending = unsent + pending, 0
    run.reverse()
    return run, unsent


def _not_probed(cycles: int) -> str:
    return f", with {plural(cycles, 'more cycle')} not probed (back-off)" if cycles else ""


def _api_errors(history: History, th: Thresholds) -> Finding | None:
    graphql_run, graphql_unsent = _failed_run(history.observations, _graphql_failed)
    rest_run, rest_unsent = _failed_run(history.observations, _rest_failed)
    parts: list[str] = []
    numbers: dict[str, object] = {}
    if len(graphql_run) >= th.api_error_cycles:
        reasons = _counts(o.control_outcome for o in graphql_run)
        parts.append(f"every GraphQL probe failed for {plural(len(graphql_run), 'cycle')} "
                     f"({reasons}){_not_probed(graphql_unsent)}")
        numbers.update(graphql_failed_cycles=len(graphql_run), graphql_failures=reasons,
                       graphql_unprobed_cycles=graphql_unsent or None)
    if len(rest_run) >= th.api_error_cycles:
        reasons = _counts(o for obs in rest_run for o in _sent_outcomes(obs))
        endpoints = len(rest_run[-1].endpoints)
        parts.append(
            f"every REST /health probe of {plural(endpoints, 'endpoint')} failed for "
            f"{plural(len(rest_run), 'cycle')} ({reasons}){_not_probed(rest_unsent)}"
        )
        numbers.update(
            rest_failed_cycles=len(rest_run), rest_failures=reasons, rest_endpoints=endpoints,
            rest_unprobed_cycles=rest_unsent or None,
        )
    if not parts:
        return None
    run = graphql_run if len(graphql_run) >= len(rest_run) else rest_run
    numbers["failing_s"] = round(run[-1].t - run[0].t, 1)
    summary = "RunPod's API is failing from here: " + " and ".join(parts) + "."
    return _finding(
        "warning",
        summary[0].upper() + summary[1:],
        "Check RunPod's status page and this host's network path to "
        "api.runpod.io and api.runpod.ai (DNS, proxy, firewall); 429s mean the probe "
        "interval is too short for the account's rate limit. The monitor keeps the last "
        "known state and raises nothing else from the gap.",
        numbers,
    )


# --- low_balance --------------------------------------------------------------------------


def _hours(h: float) -> str:
    """'20.0 h', or '0.2 h (10 min)' under an hour."""
    return f"{h:.1f} h" if h >= 1 else f"{h:.1f} h ({h * 60:.0f} min)"


def _low_balance(history: History, th: Thresholds) -> Finding | None:
    latest = history.latest
    account = latest.account if latest is not None else None
    if latest is None or account is None:
        return None
    if account.billing_mode == "POSTPAID":
        return None  # invoiced: a low balance does not stop it (spec 2.1)
    balance, spend = account.balance, account.spend_per_hr
    runway_h: float | None = None
    if balance <= 0:
        runway_h = 0.0
    elif spend > 0:
        runway_h = balance / spend
    short_runway = runway_h is not None and runway_h < th.low_balance_runway_h
    if not short_runway and balance >= th.low_balance_usd:
        return None
    critical = runway_h is not None and runway_h < th.low_balance_critical_runway_h
    severity: Severity = "critical" if critical else "warning"
    runs_out: str | None = None
    if runway_h is not None and balance > 0:
        when = datetime.fromtimestamp(latest.t + runway_h * 3600, UTC)
        runs_out = when.strftime("%Y-%m-%d %H:%M UTC")
    if balance <= 0:
        summary = (
            f"The balance is {balance:.2f} USD: it has run out"
            + (f" at a spend of {spend:.2f} USD/h" if spend > 0 else "")
            + ", and RunPod disables endpoints until funds are added."
        )
    elif runway_h is not None and runs_out is not None:
        summary = (
            f"The balance of {balance:.2f} USD lasts {_hours(runway_h)} at the current "
            f"{spend:.2f} USD/h, until {runs_out}."
        )
    else:
        summary = (
            f"The balance is {balance:.2f} USD, under the {th.low_balance_usd:g} USD floor "
            "(nothing is spending right now)."
        )
    return _finding(
        severity,
        summary,
        f"Add funds at {BILLING_URL} (or turn on auto-pay); an exhausted balance disables "
        "Serverless endpoints and they stay broken after the top-up. To lower spend, stop "
        "idle pods, lower workersMin on endpoints, and delete unused network volumes. "
        "Check with:\n" + read(latest, "spend"),
        {
            "balance_usd": round(balance, 2),
            "spend_per_hr": round(spend, 4),
            "runway_h": None if runway_h is None else round(runway_h, 2),
            "runs_out_at": runs_out,
            "runway_threshold_h": th.low_balance_runway_h,
            "balance_threshold_usd": th.low_balance_usd,
        },
    )


# --- idle_spend ---------------------------------------------------------------------------


def _idle(obs: Observation) -> bool | None:
    """Spending with no worker and no pod running; None when the account or any watched
    endpoint's workers are unknown (a 404 endpoint has none)."""
    account = obs.account
    if account is None:
        return None
    if account.spend_per_hr <= 0 or account.pods_running > 0:
        return False
    for sample in obs.endpoints.values():
        if sample.health is None:
            if sample.health_outcome == "http_404":
                continue
            return None
        if sample.health.workers_total > 0:
            return False
    return True


def volume_month_usd(size_gb: float, th: Thresholds) -> float:
    """A network volume's list price per month: its size at the under- or over-1 TB rate."""
    rate = (
        th.volume_usd_per_gb_month_over_1tb if size_gb >= TB_GB else th.volume_usd_per_gb_month
    )
    return size_gb * rate


def pod_month_usd(pod: Pod, th: Thresholds) -> float | None:
    """What a pod costs per month: a running one its hourly cost x 730, a stopped one its
    disk at the stopped-pod rate; None when neither is known."""
    if pod.cost_per_hr > 0:
        return pod.cost_per_hr * HOURS_PER_MONTH
    if pod.disk_gb is not None and pod.desired_status != "TERMINATED":
        return pod.disk_gb * th.pod_disk_usd_per_gb_month
    return None


def _volume_lines(account: Account, th: Thresholds) -> tuple[list[str], float]:
    lines = []
    total = 0.0
    for v in sorted(account.network_volumes, key=lambda v: -v.size_gb):
        cost = volume_month_usd(v.size_gb, th)
        total += cost
        dc = f", {v.datacenter}" if v.datacenter else ""
        lines.append(f"{v.name or v.id} ({v.id}{dc}): {v.size_gb:g} GB, {cost:.2f} USD/month")
    return lines, total


def _pod_lines(account: Account, th: Thresholds) -> tuple[list[tuple[Pod, str]], float]:
    """(pod, its line) for each pod that bills, dearest first, and their monthly total."""
    priced = [(p, pod_month_usd(p, th)) for p in account.pods]
    billed = sorted(((p, c) for p, c in priced if c), key=lambda pc: -pc[1])
    lines = []
    for pod, cost in billed:
        what = (
            f"{pod.cost_per_hr:g} USD/h" if pod.cost_per_hr > 0
            else f"stopped, {pod.disk_gb:g} GB disk"
        )
        status = pod.desired_status or "unknown status"
        lines.append(
            (pod, f"pod {pod.name or pod.id} ({pod.id}, {status}): {what}, {cost:.2f} USD/month")
        )
    return lines, sum(c for _, c in billed)


def _idle_spend(history: History, th: Thresholds) -> Finding | None:
    latest = history.latest
    if latest is None or _idle(latest) is not True:
        return None
    run: list[Observation] = []
    for obs in reversed(history.observations):
        idle = _idle(obs)
        if idle is None:
            continue
        if not idle:
            break
        run.append(obs)
    idle_s = run[0].t - run[-1].t
    if idle_s < th.idle_spend_s:
        return None
    account = latest.account
    if account is None:  # pragma: no cover - _idle(latest) is True
        return None
    spend = account.spend_per_hr
    monthly = spend * HOURS_PER_MONTH
    volumes, volumes_month = _volume_lines(account, th)
    pods, pods_month = _pod_lines(account, th)
    count = len(account.network_volumes)
    steps: list[str] = []
    if count:
        steps.append(
            f"Network volumes bill while idle ({th.volume_usd_per_gb_month:g} USD per GB-month "
            f"under 1 TB, {th.volume_usd_per_gb_month_over_1tb:g} from 1 TB): "
            + "; ".join(volumes)
            + ". Delete the ones no endpoint needs (a volume's data is lost when it is "
            "deleted), in the console (Storage) or with:\n" + delete_volume("<volume id>")
        )
    if pods:
        steps.append(
            "Pods that bill with nothing running: " + "; ".join(line for _, line in pods)
            + ". A stopped pod still bills its disk; terminate the ones you no longer need "
            "(their disk is lost):"
        )
        for pod, _ in pods:
            command = (
                stop_pod(latest, pod.id) if pod.desired_status == "RUNNING"
                else terminate_pod(latest, pod.id)
            )
            steps.append(f"- {pod.name or pod.id}: {command}")
    if not count:
        steps.append(
            ("No network volume is listed: check " if not pods else "Check ")
            + "stopped pods' volume disks and endpoints' workersMin (active workers bill) "
            "with:\n" + read(latest, "idle")
        )
    parts = [f"{plural(count, 'network volume')} ({volumes_month:.2f} USD/month)"] if count else []
    if pods:
        parts.append(f"{plural(len(pods), 'pod')} ({pods_month:.2f} USD/month)")
    return _finding(
        "info",
        f"The account spends {spend:.3f} USD/h ({monthly:.2f} USD/month) with no worker and "
        f"no pod running for {minutes(idle_s)}"
        + (f": {' and '.join(parts)} bill while idle." if parts else "."),
        "\n".join(steps),
        {
            "spend_per_hr": round(spend, 4),
            "monthly_usd": round(monthly, 2),
            "idle_s": round(idle_s, 1),
            "network_volumes": count,
            "volumes": "; ".join(volumes) or None,
            "volumes_usd_month": round(volumes_month, 2) if count else None,
            "pods": "; ".join(line for _, line in pods) or None,
            "pods_usd_month": round(pods_month, 2) if pods else None,
        },
    )


def diagnose(history: History, th: Thresholds) -> list[Diagnosis]:
    """auth_invalid, runpod_api_errors, low_balance and idle_spend for the account."""
    if history.latest is None:
        return []
    found: list[Diagnosis] = []
    for rule in RULES:
        finding = rule.check(history, th)
        if finding is not None:
            found.append(rule.diagnosis(finding))
    return found


# --- the records ---------------------------------------------------------------------

AccountCheck = Callable[[History, Thresholds], Finding | None]

RULES: tuple[Rule[AccountCheck], ...] = (
    Rule(
        code="auth_invalid", scope="account", severity="critical", source="self",
        family="account", check=_auth_invalid, thresholds=("auth_cycles",),
        raised_when="GraphQL or REST answers 401/403 in 2 consecutive cycles",
        inhibits=Inhibit(drops="endpoint_scope", holds=True, mutes="all"),
    ),
    Rule(
        code="runpod_api_errors", scope="account", severity="warning", source="self",
        family="account", check=_api_errors, thresholds=("api_error_cycles",),
        raised_when="every probe of a kind failed in 3 consecutive cycles; a cycle whose "
        "probe the back-off skipped is not a failure (neither counts nor breaks the run)",
    ),
    Rule(
        code="low_balance", scope="account", severity="warning", source="account",
        family="account", check=_low_balance,
        thresholds=("low_balance_runway_h", "low_balance_critical_runway_h", "low_balance_usd"),
        severity_doc="warning; critical under 2 h of runway",
        raised_when="runway under 24 h or balance under 5 USD; never on a POSTPAID account "
        "(invoiced: a low balance does not stop it)",
    ),
    Rule(
        code="idle_spend", scope="account", severity="info", source="account",
        family="account", check=_idle_spend,
        thresholds=(
            "idle_spend_s", "volume_usd_per_gb_month", "volume_usd_per_gb_month_over_1tb",
            "pod_disk_usd_per_gb_month",
        ),
        raised_when="spend > 0 with no worker and no running pod for 30 min",
    ),
)
