"""Releases (REST v2): a rollout that does not finish, a template edit that never reached
the endpoint (stale_release), and the release a problem began after (`correlate`).

Two readings of stale_release, both from the endpoint's latest `/workers` answer:

- stuck rollout: workers keep serving an older release (`isStale`) well after the
  current one was created (or, when `/releases` was not read, for that long in the
  records);
- template drift: the image the endpoint's configuration names (the GraphQL template, or
  the v2 listing's inline `image`) is not what any worker on the current release runs
  (`Worker.image`). v2 keeps no template link, so the listing is compared with the
  workers, not with a template: a GraphQL / console template edit shows up as a config
  naming an image no current worker runs, and "Updating Templates vs Releases" (editing
  a template does not roll a release) is the usual cause. Workers do not report their
  env, so env drift is out of reach.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from model.history import History
from model.observation import (
    EndpointConfig,
    EnvVar,
    Release,
    ReleaseChange,
    Releases,
    Template,
    Workers,
    iso_utc,
)
from rules.diagnosis import Diagnosis, evidence
from rules.remedies import (
    REFERENCE_NOTE,
    graphql_curl,
    patch_endpoint,
    save_endpoint,
    update_endpoint,
    watch_rollout,
)
from rules.remedies import (
    env_map as env_with_references,
)
from rules.rule import Finding, Rule
from rules.secrets import STARS, mask
from rules.signals import minutes, plural
from rules.thresholds import Thresholds
from rules.worker_records import ALIVE, ids, stale_workers

# env keys whose values are secrets even when they do not look like a token
_SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "API_KEY", "APIKEY", "CREDENTIAL",
                 "PRIVATE_KEY", "ACCESS_KEY")
# a release's diff fields (v2 names, and the `template.*` names of the bound template) ->
# the PATCH /v2/serverless/{id} field that restores them
_PATCH_FIELD = {
    "image": "image", "template.imageName": "image",
    "args": "args", "template.dockerArgs": "args",
    "disk": "disk", "template.containerDiskInGb": "disk",
    "env": "env", "template.env": "env",
    "timeout": "timeout", "flashboot": "flashboot",
}
_WORKERS_FIELD = {"workers.min": "min", "workers.max": "max",
                  "workers.idleTimeout": "idleTimeout"}
_SHOWN_CHANGES = 3
_VALUE_CHARS = 80


def diagnose(history: History, th: Thresholds) -> list[Diagnosis]:
    """stale_release for every watched endpoint with a worker record in the window."""
    found: list[Diagnosis] = []
    latest = history.latest
    if latest is None:
        return found
    for eid in latest.endpoints:
        for rule in RULES:
            finding = rule.check(history, th, eid, latest.t)
            if finding is not None:
                found.append(rule.diagnosis(finding, eid, history.endpoint_name(eid)))
    return found


# --- values of a release's diff -----------------------------------------------------------


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def env_map(text: str) -> dict[str, str] | None:
    """An env diff value as a map: a JSON object, or the GraphQL list of {key, value}."""
    value = _json(text)
    if isinstance(value, Mapping):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    if isinstance(value, list) and all(isinstance(e, Mapping) and "key" in e for e in value):
        return {str(e["key"]): "" if e.get("value") is None else str(e["value"]) for e in value}
    return None


def secret_key(key: str) -> bool:
    """True for an env key whose value is a secret by its name (HF_TOKEN, DB_PASSWORD)."""
    upper = key.upper()
    return any(word in upper for word in _SECRET_WORDS) or upper.endswith("_KEY")


def shown_env(key: str, value: str) -> str:
    """An env value as it may be shown: whole when harmless, masked (secrets.mask) when it
    holds a token, stars when its key names a secret."""
    return STARS if secret_key(key) else mask(value)


def _scalar(text: str) -> str:
    value = _json(text)
    shown = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    shown = mask(shown)
    return shown if len(shown) <= _VALUE_CHARS else shown[: _VALUE_CHARS - 3] + "..."


def _short_field(field: str) -> str:
    return field.removeprefix("template.")


def change_lines(change: ReleaseChange) -> list[tuple[str, str, str]]:
    """(what, old, new) lines a person may read: one per env key that changed, masked."""
    if _PATCH_FIELD.get(change.field) == "env":
        old, new = env_map(change.old), env_map(change.new)
        if old is not None and new is not None:
            keys = sorted(set(old) | set(new))
            return [
                (f"env {k}", shown_env(k, old[k]) if k in old else "(unset)",
                 shown_env(k, new[k]) if k in new else "(unset)")
                for k in keys if old.get(k) != new.get(k)
            ]
    return [(_short_field(change.field), _scalar(change.old), _scalar(change.new))]


def diff_text(release: Release) -> str:
    """'env MODEL_ID org/model-a -> org/model-b; imageName a:1 -> a:2' (masked)."""
    lines = [line for c in release.diff for line in change_lines(c)]
    if not lines:
        return "no change its release history records"
    text = "; ".join(f"{what} {old} -> {new}" for what, old, new in lines[:_SHOWN_CHANGES])
    if len(lines) > _SHOWN_CHANGES:
        text += f" and {plural(len(lines) - _SHOWN_CHANGES, 'more change')}"
    return text


def diff_evidence(release: Release) -> list[dict[str, str]]:
    """The diff as evidence rows, masked like `diff_text`."""
    return [{"field": what, "old": old, "new": new}
            for c in release.diff for what, old, new in change_lines(c)]


# --- rollback -------------------------------------------------------------------------------


def _patch_value(change: ReleaseChange) -> tuple[Any, bool]:
    """The old value to send back, and whether a secret in it had to be left out (env: a
    `{{ RUNPOD_SECRET_<key> }}` reference, as rules/remedies.py writes them; else masked)."""
    if _PATCH_FIELD.get(change.field) == "env":
        old = env_map(change.old)
        if old is not None:
            env = tuple(EnvVar(k, v) for k, v in old.items())
            return env_with_references(Template(id="", env=env))
    value = _json(change.old)
    if isinstance(value, str) and mask(value) != value:
        return mask(value), True
    return value, False


def rollback_body(
    release: Release, config: EndpointConfig | None
) -> tuple[dict[str, Any], list[str], bool]:
    """The PATCH /v2/serverless/{id} body restoring the old values of `release`'s diff, the
    fields it cannot restore, and whether secrets were left out of it."""
    body: dict[str, Any] = {}
    unknown: list[str] = []
    hidden = False
    for change in release.diff:
        field = _PATCH_FIELD.get(change.field)
        if field is not None:
            body[field], secret = _patch_value(change)
            hidden = hidden or secret
        elif change.field in _WORKERS_FIELD:
            workers = body.setdefault("workers", {})
            if config is not None:  # send min and max together (spec 2.10)
                workers.setdefault("min", config.workers_min)
                workers.setdefault("max", config.workers_max)
            workers[_WORKERS_FIELD[change.field]] = _json(change.old)
        else:
            unknown.append(change.field)
    return body, unknown, hidden


def rollback_remedy(
    eid: str, release: Release, config: EndpointConfig | None, control_plane: str
) -> str:
    """How to undo `release`: the PATCH with the diff's old values (rest), or the template
    values to restore and the saveEndpoint that rolls them (graphql)."""
    body, unknown, hidden = rollback_body(release, config)
    if not body:
        return (
            f"Roll back release {release.version}: its history records no change to undo "
            "here; compare it with the release before in the console (Serverless > Releases) "
            "and restore those values."
        )
    lines = [f"Or roll back release {release.version} (restores the values it changed; "
             "a new release rolls out as workers cycle):"]
    if control_plane == "rest":
        lines.append(f"   {patch_endpoint(eid, body)}")
    else:
        # env whole (it is the full map to restore; secrets are references), the rest short
        values = ", ".join(
            f"{k} {mask(json.dumps(v)) if k == 'env' else _scalar(json.dumps(v))}"
            for k, v in body.items()
        )
        lines.append(f"   restore {values} in the endpoint's template (saveTemplate), then "
                     "roll a release with saveEndpoint"
                     + (f": {graphql_curl(save_endpoint(config))}" if config else "."))
    if hidden:
        lines.append(f"   {REFERENCE_NOTE}")
    if unknown:
        lines.append(f"   Restore {', '.join(unknown)} by hand.")
    return "\n".join(lines)


# --- stale_release ------------------------------------------------------------------------


def current_release(releases: Releases) -> Release | None:
    """The release whose version is the endpoint's (newest first: normally the first)."""
    for r in releases.releases:
        if releases.endpoint_version is not None and r.version == releases.endpoint_version:
            return r
    return releases.releases[0] if releases.releases else None


def _normal_image(image: str) -> str:
    name = image.strip().removeprefix("docker.io/").removeprefix("library/")
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last or "@" in last else name + ":latest"


def _stale_run(records: Sequence[tuple[float, Workers]]) -> list[tuple[float, Workers]]:
    run: list[tuple[float, Workers]] = []
    for t, w in reversed(records):
        if not stale_workers(w):
            break
        run.append((t, w))
    run.reverse()
    return run


def _current_images(w: Workers) -> set[str]:
    return {
        x.image for x in w.workers
        if x.image and not x.stale and x.status in ALIVE
        and (x.version is None or w.endpoint_version is None or x.version == w.endpoint_version)
    }


def _drift_run(
    history: History, eid: str, records: Sequence[tuple[float, Workers]]
) -> list[tuple[float, str, set[str]]]:
    """The newest run of records in which the config's image is not what any current
    worker runs: (t, config image, current images)."""
    configs = {o.t: s.config for o, s in history.endpoint_samples(eid) if s.config is not None}
    run: list[tuple[float, str, set[str]]] = []
    latest = history.latest_config(eid)
    for t, w in reversed(records):
        cfg = configs.get(t, latest)
        if not _drifts(cfg, w):
            break
        run.append((t, _config_image(cfg), _current_images(w)))
    run.reverse()
    return run


def _config_image(config: EndpointConfig | None) -> str:
    return config.template.image_name if config is not None and config.template else ""


def _drifts(config: EndpointConfig | None, w: Workers) -> bool:
    image = _config_image(config)
    current = _current_images(w)
    return bool(image and current) and \
        _normal_image(image) not in {_normal_image(i) for i in current}


def _stale_release(history: History, th: Thresholds, eid: str, now: float) -> Finding | None:
    newest = history.latest_workers(eid)
    config = history.latest_config(eid)
    # the common case, a record with nothing stale and no drift, reads only the newest end
    if newest is None or (not stale_workers(newest[1]) and not _drifts(config, newest[1])):
        return None
    records = history.worker_records(eid)
    latest = records[-1][1]
    name = history.endpoint_name(eid)
    control_plane = history.latest.control_plane if history.latest is not None else "graphql"
    known = history.latest_releases(eid)
    releases = known[1] if known is not None else None
    version = latest.endpoint_version or (releases.endpoint_version if releases else None)
    # the release the workers' endpoint version names: when the last /releases read is
    # older than it (the plan reads it the cycle after), its age is unknown, not the age
    # of the release before
    release = current_release(releases) if releases is not None else None
    if release is not None and version is not None and release.version != version:
        release = None

    stale = stale_workers(latest)
    run = _stale_run(records)
    seen_s = run[-1][0] - run[0][0] if len(run) > 1 else 0.0
    age_s = (now - release.created_at
             if release is not None and release.created_at is not None else None)
    # a worker in the middle of a job keeps its version until the job ends, which may take
    # up to the endpoint's execution timeout
    timeout_s = (config.timeout_ms or 0) / 1000 if config is not None else 0.0
    patience_s = max(th.stale_release_s, timeout_s)
    if stale and max(seen_s, age_s or 0.0) >= patience_s:
        old_versions = sorted({x.version for x in stale if x.version is not None})
        since = f"release {version} came {minutes(age_s)} ago" if age_s is not None and \
            version is not None else f"for {minutes(seen_s)}"
        summary = (
            f"{name}'s rollout is stuck: {plural(len(stale), 'worker')} still serve"
            f"{'s' if len(stale) == 1 else ''} "
            + (f"release {', '.join(map(str, old_versions))}" if old_versions
               else "an older release")
            + f" ({since}): requests keep reaching the old version."
        )
        steps = [
            "A new release replaces workers only as they cycle: a worker that never goes idle "
            "long enough (workersMin keeps it, or traffic never stops) keeps the old version.",
            "1. Let the stale workers go: lower workers.min to 0 for a few minutes so they scale "
            "down and start on the new release"
            + (", then restore it:" if config is not None and config.workers_min > 0 else "."),
        ]
        if config is not None:
            steps.append("   " + update_endpoint(history.latest, config, workers_min=0))
        if control_plane == "rest":
            steps.append("2. " + watch_rollout(eid))
        else:
            steps.append(
                f"2. Watch it finish: GET /v2/serverless/{eid}/releases "
                "(rollout.percentOnLatest) and /workers (isStale), or the console's release "
                "history."
            )
        if release is not None:
            steps.append("3. " + rollback_remedy(eid, release, config, control_plane)
                         .replace("Or roll back", "If the new release is the problem, roll back"))
        return Finding(
            severity="warning",
            summary=summary,
            remedy="\n".join(steps),
            evidence=evidence(
                stale_workers=len(stale),
                stale_worker_ids=ids(stale)[:5],
                stale_versions=old_versions or None,
                workers=len(latest.workers),
                endpoint_version=version,
                release_created_at=iso_utc(release.created_at)
                if release is not None and release.created_at is not None else None,
                release_age_s=age_s,
                stale_seen_s=seen_s,
                rollout_in_progress=releases.rollout_in_progress if releases else None,
                percent_on_latest=releases.percent_on_latest if releases else None,
                threshold_s=patience_s,
            ),
        )

    drift = _drift_run(history, eid, records)
    drift_s = drift[-1][0] - drift[0][0] if len(drift) > 1 else 0.0
    if not drift or drift_s < th.template_drift_s:
        return None
    _, image, running = drift[-1]
    runs = ", ".join(sorted(mask(i) for i in running))
    summary = (
        f"{name}'s configuration names image {mask(image)}, but the workers on its current "
        f"release{f' {version}' if version is not None else ''} run {runs} "
        f"({minutes(drift_s)}): a template edit that never reached the endpoint."
    )
    steps = [
        "Editing a template does not roll a release: the endpoint keeps the image of its "
        "current release until the endpoint itself is updated.",
    ]
    if control_plane == "rest":
        steps.append("1. Roll the edit out with a PATCH of the endpoint's image (a new "
                     "release, rolled as workers cycle): "
                     f"{patch_endpoint(eid, {'image': image})}\n{watch_rollout(eid)}")
    elif config is not None:
        steps.append("1. Roll the edit out with saveEndpoint on the endpoint (a new release): "
                     f"{graphql_curl(save_endpoint(config))}")
    else:
        steps.append("1. Roll the edit out with saveEndpoint on the endpoint (a new release).")
    steps.append(
        "2. Or, if the workers' image is the one you want, put it back in the template so "
        "the next release does not change it unseen. Then check the release history "
        f"(GET /v2/serverless/{eid}/releases)."
    )
    return Finding(
        severity="warning",
        summary=summary,
        remedy="\n".join(steps),
        evidence=evidence(
            config_image=mask(image),
            worker_images=sorted(mask(i) for i in running),
            endpoint_version=version,
            drift_s=drift_s,
            threshold_s=th.template_drift_s,
        ),
    )


# --- the release a problem began after ------------------------------------------------------

# evidence keys that say how long the problem has lasted, per family
_DURATION_KEYS = ("stalled_s", "throttled_s", "not_scheduling_s", "backlog_s", "idle_queued_s",
                  "window_s")
_CYCLE_KEYS = ("unhealthy_cycles",)
# a release seen by the first sample of a problem may have come between two polls
_ONSET_SLACK_S = 60.0


def began_at(history: History, d: Diagnosis, now: float) -> float | None:
    """When the diagnosis's problem began, as far as its evidence tells; None when it gives
    no duration (a config finding may be older than any release: it is not named)."""
    for key in _DURATION_KEYS:
        value = d.evidence.get(key)
        if isinstance(value, int | float) and value >= 0:
            return now - float(value)
    for key in _CYCLE_KEYS:
        value = d.evidence.get(key)
        if isinstance(value, int) and value >= 1 and d.endpoint_id is not None:
            known = [o.t for o in history.observations
                     if (s := o.endpoints.get(d.endpoint_id)) is not None
                     and s.health is not None]
            if len(known) >= value:
                return known[-value]
    return None


def release_before(releases: Releases, began: float) -> Release | None:
    """The newest release created before `began` (with a little slack)."""
    dated = [r for r in releases.releases
             if r.created_at is not None and r.created_at <= began + _ONSET_SLACK_S]
    return max(dated, key=lambda r: r.created_at or 0.0) if dated else None


def correlate(history: History, th: Thresholds, found: Sequence[Diagnosis]) -> list[Diagnosis]:
    """Each endpoint diagnosis whose problem began within `release_window_s` after a
    release, with that release named in its summary and evidence and its rollback in the
    remedy."""
    latest = history.latest
    if latest is None:
        return list(found)
    out: list[Diagnosis] = []
    for d in found:
        known = (history.latest_releases(d.endpoint_id)
                 if d.scope == "endpoint" and d.endpoint_id is not None
                 and d.code not in _OWN_CODES else None)
        began = began_at(history, d, latest.t) if known is not None else None
        release = (release_before(known[1], began)
                   if known is not None and began is not None else None)
        if began is None or release is None or release.created_at is None or \
                began - release.created_at > th.release_window_s:
            out.append(d)
            continue
        after = max(0.0, began - release.created_at)
        text = diff_text(release)
        clause = (f"It began {minutes(after)} after release {release.version}, which changed "
                  f"{text}.") if release.diff else \
            f"It began {minutes(after)} after release {release.version}."
        out.append(Diagnosis(
            code=d.code,
            scope=d.scope,
            severity=d.severity,
            summary=f"{d.summary} {clause}",
            remedy=d.remedy + "\n" + rollback_remedy(
                d.endpoint_id or "", release, history.latest_config(d.endpoint_id or ""),
                latest.control_plane),
            evidence={**d.evidence, "release": {
                "version": release.version,
                "created_at": iso_utc(release.created_at),
                "began_after_s": after,
                "diff": diff_evidence(release),
            }},
            endpoint_id=d.endpoint_id,
            endpoint_name=d.endpoint_name,
        ))
    return out


# --- the records ---------------------------------------------------------------------------

# (history, thresholds, endpoint id, now) -> diagnosis
EndpointCheck = Callable[[History, Thresholds, str, float], Finding | None]

RULES: tuple[Rule[EndpointCheck], ...] = (
    Rule(
        code="stale_release", scope="endpoint", severity="warning", source="v2",
        family="releases", check=_stale_release,
        thresholds=("stale_release_s", "template_drift_s", "release_window_s"),
        raised_when="REST v2 workers keep serving an older release (`isStale`) 30 min (or the "
        "execution timeout, if longer) after the current release was created (or for that "
        "long in the records), or for 10 min the image "
        "the endpoint's config names is not what any worker on the current release runs (a "
        "template edit never released); every endpoint diagnosis that began within 30 min "
        "after a release names it, its diff and its rollback",
    ),
)

# its own summary names the release already
_OWN_CODES = frozenset(rule.code for rule in RULES)
