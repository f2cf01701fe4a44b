"""Endpoint state: workersMax at zero, and what a REST 404 on `/health` means.

A 404 on `/health` for 2 consecutive cycles has four readings, told apart by GraphQL and
the balance (spec/diagnoses.md): the endpoint is not listed (`endpoint_not_found`), the
balance is exhausted (`balance_exhausted`), it was disabled by an exhausted balance and
stays broken after the top-up (`endpoint_disabled`), or no worker ever registered
(`never_started`). Only known data counts: a sample whose probe failed is skipped, and
when the latest one failed, or the latest GraphQL answer did, nothing is said.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from model.history import History
from model.observation import OK, EndpointConfig, EndpointSample, Health, Observation
from rules.diagnosis import Diagnosis, Severity, evidence
from rules.remedies import REST, api, delete_endpoint_call, read, recreate_endpoint, update_endpoint
from rules.rule import Finding, Inhibit, Rule
from rules.signals import plural
from rules.thresholds import Thresholds

NOT_FOUND = "http_404"
BILLING_URL = "https://www.runpod.io/console/user/billing"


def _known(sample: EndpointSample) -> bool:
    """The `/health` probe answered with data or with a 404."""
    return sample.health_outcome in (OK, NOT_FOUND)


def not_found_run(history: History, endpoint_id: str) -> int:
    """How many of this endpoint's latest known samples answered 404, unknown ones skipped."""
    run = 0
    for _, sample in reversed(history.endpoint_samples(endpoint_id)):
        if not _known(sample):
            continue
        if sample.health_outcome != NOT_FOUND:
            break
        run += 1
    return run


def _answered_before(history: History, endpoint_id: str) -> bool:
    """The endpoint answered `/health` with data at some point (memory or window)."""
    if endpoint_id in history.memory.ever_ok:
        return True
    return any(
        s.health is not None and s.health_outcome == OK
        for _, s in history.endpoint_samples(endpoint_id)
    )


def _balance_was_nonpositive(history: History) -> bool:
    """The balance was seen at or below zero at some point (memory or window)."""
    if history.memory.balance_seen_nonpositive:
        return True
    return any(o.account is not None and o.account.balance <= 0 for o in history.observations)


def _latest_health(history: History, endpoint_id: str) -> Health | None:
    known = history.known_health(endpoint_id)
    return known[-1][1] if known else None


def _finding(
    code: str, severity: Severity, summary: str, remedy: str, numbers: dict[str, object]
) -> Finding:
    return Finding(severity, summary, remedy, evidence(**numbers), code=code)


def _lister(obs: Observation) -> str:
    """Which API listed the endpoints this cycle, for a summary."""
    return "REST v2" if obs.sources.get("endpoints") == REST else "GraphQL"


def _label(history: History, endpoint_id: str) -> str:
    name = history.endpoint_name(endpoint_id)
    return f"'{name}' ({endpoint_id})" if name != endpoint_id else endpoint_id


# --- workers_max_zero -------------------------------------------------------------------


def _workers_max_zero(
    history: History, latest: Observation, endpoint_id: str, th: Thresholds
) -> Finding | None:
    config = latest.endpoints[endpoint_id].config
    if not latest.control_ok or config is None or config.workers_max != 0:
        return None
    health = _latest_health(history, endpoint_id)
    queued = health.in_queue if health is not None else None
    severity: Severity = "critical" if queued else "warning"
    earlier_max = max(
        (
            s.config.workers_max
            for _, s in history.endpoint_samples(endpoint_id)
            if s.config is not None
        ),
        default=0,
    )
    peak_workers = max((h.workers_total for _, h in history.known_health(endpoint_id)), default=0)
    target = max(1, config.workers_min, earlier_max, peak_workers)
    label = _label(history, endpoint_id)
    if queued:
        summary = (
            f"Endpoint {label} has workersMax = 0 with {plural(queued, 'job')} queued: "
            "no worker can start, so they wait forever."
        )
    else:
        summary = (
            f"Endpoint {label} has workersMax = 0: it cannot start any worker, "
            "so the next request will wait in the queue."
        )
    how = "" if api(latest) == REST else " with saveEndpoint"
    remedy = (
        "RunPod lowers workersMax on its own after days without requests (to 2 after 3 days, "
        "to 0 after 7) or after repeated unhealthy workers; if workers were unhealthy, fix "
        f"that first. Raise it to {target}{how}:\n"
        f"{update_endpoint(latest, config, workers_max=target)}"
    )
    return _finding(
        "workers_max_zero", severity, summary, remedy,
        {
            "workers_max": config.workers_max,
            "workers_min": config.workers_min,
            "in_queue": queued,
            "suggested_workers_max": target,
        },
    )


# --- the four readings of a REST 404 ------------------------------------------------------


def _recreate_steps(obs: Observation, endpoint_id: str, config: EndpointConfig | None) -> str:
    """Delete, create again with the same config, update the id (GraphQL: scale to zero
    first, as deleteEndpoint requires)."""
    if config is None:
        if api(obs) == REST:
            create = "POST /v2/serverless"
            first = ""
        else:
            create = "saveEndpoint without an id"
            first = f"set workersMin and workersMax of endpoint {endpoint_id} to 0, "
        return (
            f"{first}delete it, create it again with the same image, GPU pools, network "
            f"volume and worker limits ({create}), then update the endpoint id everywhere it "
            f"is used (apps, env vars, config.yaml). Delete it with: "
            f"{delete_endpoint_call(obs, endpoint_id)}"
        )
    # a disabled endpoint may have had workersMax lowered to 0: recreate it able to scale
    again = replace(config, workers_max=max(1, config.workers_max))
    steps = recreate_endpoint(obs, again)
    letters = "abcdefg"
    lines = [f"  {letters[i]}. {what}: {command}" for i, (what, command) in enumerate(steps)]
    lines.append(
        f"  {letters[len(steps)]}. the new endpoint has a new id: update it everywhere "
        f"{endpoint_id} is used (apps, env vars, config.yaml)"
    )
    return "delete the endpoint and create it again with the same configuration:\n" + "\n".join(
        lines
    )


def _not_found(
    history: History, latest: Observation, endpoint_id: str, th: Thresholds
) -> Finding | None:
    sample = latest.endpoints[endpoint_id]
    if sample.health_outcome != NOT_FOUND or not latest.control_ok:
        return None
    run = not_found_run(history, endpoint_id)
    if run < th.not_found_cycles:
        return None
    label = _label(history, endpoint_id)
    cycles = plural(run, "cycle")
    listed = latest.listed_ids is not None and endpoint_id in latest.listed_ids
    if not listed:
        return _finding(
            "endpoint_not_found", "critical",
            f"Endpoint {label} answers 404 Not Found on /health for {cycles} and RunPod's "
            f"{_lister(latest)} API does not list it on this account.",
            "The endpoint id in the configuration is wrong, or the endpoint was deleted: "
            "update the configuration with the right id, or recreate the endpoint. The ids "
            "your account lists: " + read(latest, "endpoints"),
            {"not_found_cycles": run, "listed": False,
             "endpoints_listed": len(latest.listed_ids or ())},
        )
    if latest.account is None:
        return None
    balance = latest.account.balance
    lister = _lister(latest)
    config = history.latest_config(endpoint_id)
    answered = _answered_before(history, endpoint_id)
    was_nonpositive = _balance_was_nonpositive(history)
    numbers: dict[str, object] = {
        "not_found_cycles": run,
        "listed": True,
        "balance_usd": round(balance, 2),
        "answered_200_before": answered,
        "balance_seen_nonpositive": was_nonpositive,
    }
    # a POSTPAID account is invoiced: a low balance does not disable its endpoints
    if balance <= 0 and latest.account.billing_mode != "POSTPAID":
        return _finding(
            "balance_exhausted", "critical",
            f"Endpoint {label} answers 404 Not Found on /health for {cycles} while "
            f"{lister} still lists it and the balance is {balance:.2f} USD: RunPod "
            "disabled it for the exhausted balance.",
            f"1. Add funds ({BILLING_URL}).\n"
            "2. The endpoint stays broken after a top-up: "
            + _recreate_steps(latest, endpoint_id, config),
            numbers,
        )
    if answered or was_nonpositive:
        because = (
            "it answered /health before" if answered else "the balance was at or below zero"
        )
        return _finding(
            "endpoint_disabled", "critical",
            f"Endpoint {label} answers 404 Not Found on /health for {cycles} although "
            f"{lister} lists it and the balance is {balance:.2f} USD, and {because}: an "
            "endpoint disabled by an exhausted balance stays broken after a top-up.",
            "Recreate it: " + _recreate_steps(latest, endpoint_id, config),
            numbers,
        )
    image = config.template.image_name if config is not None and config.template else None
    gpu_ids = config.gpu_ids if config is not None else None
    numbers.update(image=image, gpu_ids=gpu_ids)
    return _finding(
        "never_started", "warning",
        f"Endpoint {label} answers 404 Not Found on /health for {cycles} while "
        f"{lister} lists it and the balance is {balance:.2f} USD: no worker has ever "
        "registered.",
        "1. Check the image name"
        + (f" ({image})" if image else "")
        + " exists and can be pulled (private registry credentials).\n"
        + (
            "2. Check the endpoint's args: the start command must run the handler "
            "(runpod.serverless.start).\n"
            "3. Check GPU availability for its GPU pools"
            if api(latest) == REST
            else "2. Check the template's dockerArgs: the start command must run the handler "
            "(runpod.serverless.start).\n"
            "3. Check GPU availability for gpuIds"
        )
        + (f" {gpu_ids}" if gpu_ids else "")
        + ": " + read(latest, "gpu_types") + "\n"
        "4. Read the worker logs in the RunPod console (endpoint > Logs).",
        numbers,
    )


def diagnose(history: History, th: Thresholds) -> list[Diagnosis]:
    """workers_max_zero and the 404 family for every watched endpoint."""
    latest = history.latest
    if latest is None:
        return []
    found: list[Diagnosis] = []
    for endpoint_id, sample in latest.endpoints.items():
        for check in _CHECKS:
            if check is _not_found and not _known(sample):
                continue
            finding = check(history, latest, endpoint_id, th)
            if finding is not None and finding.code is not None:
                name = history.endpoint_name(endpoint_id)
                found.append(_BY_CODE[finding.code].diagnosis(finding, endpoint_id, name))
    return found


# --- the records ---------------------------------------------------------------------

# (history, the latest observation, endpoint id, thresholds) -> diagnosis
# (each finding names its code: one check decides the four 404 readings)
EndpointCheck = Callable[[History, Observation, str, Thresholds], Finding | None]

# One check, _not_found, decides the four readings of a 404: it names the code it found.
RULES: tuple[Rule[EndpointCheck], ...] = (
    Rule(
        code="workers_max_zero", scope="endpoint", severity="critical", source="graphql",
        family="endpoint_state", check=_workers_max_zero,
        severity_doc="critical while jobs are queued, else warning",
        raised_when="`workersMax == 0`",
    ),
    Rule(
        code="balance_exhausted", scope="endpoint", severity="critical", source="rest+graphql",
        family="endpoint_state", check=_not_found, thresholds=("not_found_cycles",),
        raised_when="REST 404 in 2 consecutive cycles, GraphQL lists the endpoint, "
        "balance ≤ 0",
        inhibits=Inhibit(drops="same_endpoint", holds=False, mutes="same_endpoint"),
    ),
    Rule(
        code="endpoint_disabled", scope="endpoint", severity="critical", source="rest+graphql",
        family="endpoint_state", check=_not_found, thresholds=("not_found_cycles",),
        raised_when="REST 404, listed, balance now > 0, and the endpoint answered before or "
        "the balance was ≤ 0 before",
    ),
    Rule(
        code="never_started", scope="endpoint", severity="warning", source="rest+graphql",
        family="endpoint_state", check=_not_found, thresholds=("not_found_cycles",),
        raised_when="REST 404, listed, balance > 0, never answered, balance never ≤ 0",
    ),
    Rule(
        code="endpoint_not_found", scope="endpoint", severity="critical",
        source="rest+graphql", family="endpoint_state", check=_not_found,
        thresholds=("not_found_cycles",),
        raised_when="REST 404 and GraphQL does not list the endpoint (an id in `endpoints:`)",
    ),
)
_CHECKS: tuple[EndpointCheck, ...] = tuple(dict.fromkeys(r.check for r in RULES))
_BY_CODE: dict[str, Rule[EndpointCheck]] = {r.code: r for r in RULES}
