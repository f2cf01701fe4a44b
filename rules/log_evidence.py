"""The failing worker's own log lines as evidence for the diagnoses they explain.

A post-pass over the engine's diagnoses: for crash_loop, workers_unhealthy, job_failures
and not_scheduling it reads the endpoint's log snapshots (those the window's samples carry
and those the active incidents keep, `History.kept_logs`), names the cause a known
signature shows (rules/log_signatures.py) in the summary, puts the matched lines in the
evidence and the signature's remedy first; a snapshot no signature explains is attached as
its last lines. Also decides which workers' logs the prober reads (`logs_wanted`) and what
an incident keeps of them (`keep_logs`). Every line is masked before it leaves here:
token-shaped secrets, and the values of the template's own secret-looking env keys.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from model.history import History
from model.observation import EndpointConfig, LogLine, Observation, Worker, WorkerLogs, iso_utc
from rules.diagnosis import Diagnosis
from rules.log_signatures import BY_NAME, SignatureMatch, classify, describe
from rules.secrets import mask_values, secret_values
from rules.thresholds import Thresholds

# the diagnoses a worker's logs can explain
LOG_CODES = frozenset({"crash_loop", "workers_unhealthy", "job_failures", "not_scheduling"})

EVIDENCE_KEY = "worker_logs"
MATCHED_LINES = 10  # matched lines in the evidence
LAST_LINES = 20  # 'last lines' of an unmatched snapshot ...
LAST_BYTES = 4096  # ... within this many bytes
LINE_CHARS = 300  # one line in the evidence, cut beyond
KEEP_SNAPSHOTS = 4  # snapshots an incident keeps ...
KEEP_BYTES = 64 * 1024  # ... within this many bytes of line text
KEEP_LINES = 300  # lines one kept snapshot holds (its tail)
WANT_PER_CYCLE = 2  # worker log reads asked for in one cycle
LOOKBACK_S = 600.0  # a new incident takes the snapshots read this long before it

Key = tuple[str, str | None]


# --- masking ---------------------------------------------------------------------------


def config_secrets(config: EndpointConfig | None) -> frozenset[str]:
    """The template env's own secret values (HF_TOKEN's, DB_PASSWORD's): hidden in logs."""
    if config is None or config.template is None:
        return frozenset()
    return secret_values((e.key, e.value) for e in config.template.env)


def masked_logs(logs: WorkerLogs, secrets: Collection[str] = ()) -> WorkerLogs:
    """`logs` with every line masked (token-shaped secrets and the known `secrets`)."""
    lines = tuple(replace(ll, line=mask_values(ll.line, secrets)) for ll in logs.lines)
    if all(a.line == b.line for a, b in zip(lines, logs.lines, strict=True)):
        return logs
    return replace(logs, lines=lines)


def _size(logs: WorkerLogs) -> int:
    return sum(len(ll.line.encode()) + len(ll.source) + 24 for ll in logs.lines)


def bounded(snapshots: Sequence[WorkerLogs], max_snapshots: int = KEEP_SNAPSHOTS,
            max_bytes: int = KEEP_BYTES) -> tuple[WorkerLogs, ...]:
    """The newest `max_snapshots` of `snapshots` (oldest first) within `max_bytes`: older
    snapshots go first, then the head lines of the oldest one left (`truncated` then)."""
    kept: list[WorkerLogs] = []
    for s in snapshots[-max_snapshots:]:
        if len(s.lines) > KEEP_LINES:
            s = WorkerLogs(s.worker_id, s.lines[-KEEP_LINES:], True)
        kept.append(s)
    total = sum(_size(s) for s in kept)
    while kept and total > max_bytes:
        first = kept[0]
        if len(kept) > 1:
            total -= _size(first)
            kept.pop(0)
            continue
        lines = list(first.lines)
        while lines and total > max_bytes:
            total -= len(lines[0].line.encode()) + len(lines[0].source) + 24
            lines.pop(0)
        kept[0] = WorkerLogs(first.worker_id, tuple(lines), True)
    return tuple(kept)


# --- which workers to read -------------------------------------------------------------


def _latest_workers(history: History, eid: str) -> tuple[tuple[Worker, ...], dict[str, float]]:
    """The newest `/workers` answer's workers, and the previous answer's start times."""
    latest: tuple[Worker, ...] | None = None
    for o in reversed(history.observations):
        s = o.endpoints.get(eid)
        if s is None or s.workers is None:
            continue
        if latest is None:
            latest = s.workers.workers
            continue
        return latest, {w.id: w.started_at for w in s.workers.workers if w.started_at is not None}
    return latest or (), {}


def failing_workers(history: History, eid: str) -> list[str]:
    """The endpoint's listed workers, most likely failing first: UNHEALTHY, then the ones
    that restarted (a new `startedAt`) or are INITIALIZING, newest start first, then the
    rest, newest start first (a crash-looping worker can still show RUNNING)."""
    workers, before = _latest_workers(history, eid)

    def rank(w: Worker) -> tuple[int, float]:
        restarted = w.id in before and w.started_at is not None and w.started_at != before[w.id]
        if w.status == "UNHEALTHY":
            tier = 0
        elif restarted or w.status == "INITIALIZING":
            tier = 1
        elif w.status == "THROTTLED":
            tier = 3  # never placed: no container, no log of its own
        else:
            tier = 2
        return tier, -(w.started_at or 0.0)

    return [w.id for w in sorted(workers, key=rank) if w.status != "THROTTLED"]


def logs_wanted(
    active: Iterable[Diagnosis], history: History, already_read: Collection[tuple[str, str]],
    limit: int = WANT_PER_CYCLE,
) -> list[tuple[str, str]]:
    """(endpoint id, worker id) whose logs the prober reads this cycle: for each active
    diagnosis the logs explain whose endpoint lists workers, its most likely failing worker
    not read yet during its incidents (`already_read`, `read_workers`); one per endpoint,
    at most `limit`."""
    wanted: list[tuple[str, str]] = []
    seen: set[str] = set()
    for d in active:
        eid = d.endpoint_id
        if d.code not in LOG_CODES or eid is None or eid in seen:
            continue
        seen.add(eid)
        for wid in failing_workers(history, eid):
            if (eid, wid) not in already_read:
                wanted.append((eid, wid))
                break
        if len(wanted) >= limit:
            break
    return wanted


def read_workers(kept: Mapping[Key, Sequence[WorkerLogs]]) -> frozenset[tuple[str, str]]:
    """(endpoint id, worker id) of every snapshot the active incidents keep."""
    return frozenset((k[1], s.worker_id) for k, snaps in kept.items() if k[1] for s in snaps)


# --- what an incident keeps ------------------------------------------------------------


def _merge(into: dict[str, WorkerLogs], snaps: Iterable[WorkerLogs]) -> None:
    for s in snaps:
        into.pop(s.worker_id, None)  # a worker read again: the newer snapshot, at the end
        into[s.worker_id] = s


def keep_logs(
    kept: Mapping[Key, tuple[WorkerLogs, ...]], active: Mapping[Key, float],
    obs: Observation, history: History,
) -> dict[Key, tuple[WorkerLogs, ...]]:
    """What each active incident (key -> since) the logs explain keeps after `obs`: its
    snapshots and the ones `obs` read for its endpoint (a new incident also takes those of
    the window read shortly before it), masked and `bounded`; the others' go. Unchanged
    entries are the same objects, so the store writes only what changed."""
    out: dict[Key, tuple[WorkerLogs, ...]] = {}
    for key, since in active.items():
        code, eid = key
        if code not in LOG_CODES or eid is None:
            continue
        old = kept.get(key, ())
        if key in kept:
            s = obs.endpoints.get(eid)
            fresh = list(s.logs) if s is not None and s.logs else []
        else:
            fresh = []
            for o in history.observations:
                s = o.endpoints.get(eid)
                if o.t >= since - LOOKBACK_S and s is not None and s.logs:
                    fresh.extend(s.logs)
        if not fresh:
            if old:
                out[key] = old
            continue
        secrets = config_secrets(history.latest_config(eid))
        merged: dict[str, WorkerLogs] = {}
        _merge(merged, old)
        _merge(merged, (masked_logs(f, secrets) for f in fresh))
        out[key] = bounded(list(merged.values()))
    return out


def by_endpoint(kept: Mapping[Key, Sequence[WorkerLogs]]) -> dict[str, tuple[WorkerLogs, ...]]:
    """The kept snapshots by endpoint (one per worker), as `History.kept_logs` holds them."""
    merged: dict[str, dict[str, WorkerLogs]] = {}
    for (_, eid), snaps in kept.items():
        if eid is not None:
            _merge(merged.setdefault(eid, {}), snaps)
    return {eid: tuple(m.values()) for eid, m in merged.items()}


# --- the post-pass ---------------------------------------------------------------------


def snapshots(history: History, eid: str) -> list[WorkerLogs]:
    """The endpoint's log snapshots: those kept, then the window's, one per worker (the
    newest read), oldest first."""
    merged: dict[str, WorkerLogs] = {}
    _merge(merged, history.kept_logs.get(eid, ()))
    for o in history.observations:
        s = o.endpoints.get(eid)
        if s is not None and s.logs:
            _merge(merged, s.logs)
    return list(merged.values())


def _line(worker_id: str, ll: LogLine, secrets: Collection[str]) -> dict[str, Any]:
    text = mask_values(ll.line, secrets)
    if len(text) > LINE_CHARS:
        text = text[: LINE_CHARS - 1] + "…"
    return {"t": None if ll.t is None else iso_utc(ll.t), "worker_id": worker_id,
            "source": ll.source, "line": text}


def _last_lines(flat: Sequence[tuple[str, LogLine]],
                secrets: Collection[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    size = 0
    for wid, ll in reversed(flat):
        item = _line(wid, ll, secrets)
        size += len(item["line"].encode())
        if len(out) >= LAST_LINES or (out and size > LAST_BYTES):
            break
        out.append(item)
    out.reverse()
    return out


def explain(d: Diagnosis, snaps: Sequence[WorkerLogs], secrets: Collection[str]) -> Diagnosis:
    """`d` with what `snaps` show: the matched signature's cause, lines and remedy, or
    the last lines when no signature matches."""
    flat = [(s.worker_id, ll) for s in snaps for ll in s.lines]
    workers = list(dict.fromkeys(s.worker_id for s in snaps))
    if not flat:
        return replace(d, evidence={**d.evidence, EVIDENCE_KEY: {
            "kind": "empty", "workers": workers, "lines": []}})
    matches = classify([ll for _, ll in flat])
    if not matches:
        return replace(d, evidence={**d.evidence, EVIDENCE_KEY: {
            "kind": "last_lines", "workers": workers, "lines": _last_lines(flat, secrets)}})
    top: SignatureMatch = matches[0]
    shown = [i for m in matches for i in m.lines][:MATCHED_LINES]
    shown.sort()
    cause = describe(matches)
    logs = {
        "kind": "matched",
        "signature": top.signature.name,
        "cause": cause,
        "count": top.count,
        "workers": workers,
        "lines": [_line(*flat[i], secrets) for i in shown],
    }
    also = [m.signature.name for m in matches[1:]]
    evidence = {**d.evidence, "log_signature": top.signature.name,
                "log_signature_count": top.count, EVIDENCE_KEY: logs}
    if also:
        evidence["log_signatures_also"] = ", ".join(also)
    # first: the lock screen's 160 characters show the cause, not the symptom's numbers
    summary = f"Worker logs: {top.cause}. {d.summary}"
    remedy = (f"From the worker logs ({top.cause}): {top.signature.remedy}\n"
              f"{d.remedy}")
    return replace(d, summary=mask_values(summary, secrets), remedy=remedy, evidence=evidence)


def attach_logs(
    history: History, th: Thresholds, found: Sequence[Diagnosis]
) -> list[Diagnosis]:
    """The engine's post-pass: each diagnosis the logs explain, with its endpoint's logs."""
    out: list[Diagnosis] = []
    for d in found:
        eid = d.endpoint_id
        if d.code in LOG_CODES and eid is not None:
            snaps = snapshots(history, eid)
            if snaps:
                d = explain(d, snaps, config_secrets(history.latest_config(eid)))
        out.append(d)
    return out


# --- for the surfaces ------------------------------------------------------------------


def excerpt(evidence: Mapping[str, Any], max_lines: int = 5, max_chars: int = 200) -> list[str]:
    """A few of the diagnosis's log lines as text ('12:05:04Z system w1: Killed'), each cut
    to `max_chars`: the matched ones, or the last lines; [] without logs."""
    logs = evidence.get(EVIDENCE_KEY)
    if not isinstance(logs, Mapping):
        return []
    lines = [x for x in logs.get("lines") or () if isinstance(x, Mapping)]
    if logs.get("kind") != "matched":
        lines = lines[-max_lines:]
    out = []
    for item in lines[:max_lines]:
        t = str(item.get("t") or "")
        clock = t[11:] if len(t) > 11 else t
        who = f"{item.get('source', '')} {item.get('worker_id', '')}"
        text = f"{clock} {who}: {item.get('line', '')}".strip()
        out.append(text if len(text) <= max_chars else text[: max_chars - 1] + "…")
    return out


def excerpt_title(evidence: Mapping[str, Any]) -> str:
    """'Worker logs: the worker was OOM-killed (exit 137) 4 times' or 'Worker logs: last
    lines'; '' without logs."""
    logs = evidence.get(EVIDENCE_KEY)
    if not isinstance(logs, Mapping):
        return ""
    if logs.get("kind") == "matched":
        sig = BY_NAME.get(str(logs.get("signature")))
        return f"Worker logs: {logs.get('cause') or (sig.name if sig else 'matched')}"
    if logs.get("kind") == "empty":
        return "Worker logs: read, no line"
    return "Worker logs: last lines (no known failure signature)"
