"""JSON forms of the model for the state store: exact round trips.

`x_from_json(x_to_json(x)) == x` for observations, memory, diagnoses and incidents: tuples
come back as tuples, frozensets as frozensets, mappings as dicts. Fields at their default
value are left out. `masked` cuts token-shaped secrets out of templates before storing.

The store writes observations through `ObservationEncoder`, each endpoint's config by
reference (`"config_ref"`: the digest of its masked JSON text, stored once), and reads them
back through `HistoryDecoder`, which also reads the inline `"config"` of schema 1 and shares
the objects that did not change from one observation to the next, as the prober does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields, replace
from typing import Any

from model.history import Memory
from model.job_memory import ColdStart, EndpointJobs
from model.observation import (
    Account,
    EndpointConfig,
    EndpointSample,
    EnvVar,
    GpuStock,
    Health,
    Job,
    LogLine,
    NetworkVolume,
    Observation,
    Pod,
    Release,
    ReleaseChange,
    Releases,
    Template,
    TrackedJob,
    Worker,
    WorkerLogs,
    Workers,
)
from monitor.state.incidents import Incident
from rules.diagnosis import Diagnosis
from rules.log_evidence import config_secrets
from rules.secrets import mask, mask_values, secret_values

Json = dict[str, Any]


_FIELDS: dict[type, tuple[tuple[str, Any], ...]] = {}


def _fields_of(cls: type) -> tuple[tuple[str, Any], ...]:
    """(name, default or MISSING) of each field of a dataclass, in order."""
    found = _FIELDS.get(cls)
    if found is None:
        found = _FIELDS[cls] = tuple((f.name, f.default) for f in fields(cls))
    return found


def _plain(obj: Any) -> Json:
    """A dataclass's fields as they are, without those at their default value."""
    out: Json = {}
    # dataclasses.fields() builds its tuple on every call: per class once here (a cycle
    # at 1000 endpoints encodes ~10,000 samples, counts, jobs and memory records)
    for name, default in _fields_of(type(obj)):
        value = getattr(obj, name)
        if default is MISSING or type(value) is not type(default) or value != default:
            out[name] = value
    return out


# --- evidence values: JSON plus tuples, frozensets and mappings with any hashable keys --

def _value_to_json(v: Any) -> Any:
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, list):
        return [_value_to_json(x) for x in v]
    if isinstance(v, tuple):
        return {"~tuple": [_value_to_json(x) for x in v]}
    if isinstance(v, frozenset | set):
        return {"~set": [_value_to_json(x) for x in v]}
    if isinstance(v, Mapping):
        if all(isinstance(k, str) and not k.startswith("~") for k in v):
            return {k: _value_to_json(x) for k, x in v.items()}
        return {"~dict": [[_value_to_json(k), _value_to_json(x)] for k, x in v.items()]}
    raise TypeError(f"cannot encode {type(v).__name__} as JSON")


def _value_from_json(v: Any) -> Any:
    if isinstance(v, list):
        return [_value_from_json(x) for x in v]
    if not isinstance(v, dict):
        return v
    if len(v) == 1 and "~tuple" in v:
        return tuple(_value_from_json(x) for x in v["~tuple"])
    if len(v) == 1 and "~set" in v:
        return frozenset(_value_from_json(x) for x in v["~set"])
    if len(v) == 1 and "~dict" in v:
        return {_value_from_json(k): _value_from_json(x) for k, x in v["~dict"]}
    return {k: _value_from_json(x) for k, x in v.items()}


# --- observations -----------------------------------------------------------------------

def _template_to_json(t: Template) -> Json:
    return {**_plain(t), "env": [[e.key, e.value] for e in t.env]}


def _template_from_json(d: Json) -> Template:
    return Template(**{**d, "env": tuple(EnvVar(k, v) for k, v in d["env"])})


def config_to_json(c: EndpointConfig) -> Json:
    d = _plain(c)
    if c.template is not None:
        d["template"] = _template_to_json(c.template)
    return d


def config_from_json(d: Json) -> EndpointConfig:
    t = d.get("template")
    return EndpointConfig(**{
        **d,
        "template": None if t is None else _template_from_json(t),
        "network_volume_ids": tuple(d.get("network_volume_ids", ())),
    })


# --- REST v2 facts: workers, releases, log snapshots, the GPU catalog --------------------

def _workers_to_json(w: Workers) -> Json:
    return {**_plain(w), "workers": [_plain(x) for x in w.workers]}


def _workers_from_json(d: Json) -> Workers:
    return Workers(**{**d, "workers": tuple(Worker(**x) for x in d.get("workers", ()))})


def _releases_to_json(r: Releases) -> Json:
    # a diff's values may hold env values: token-shaped secrets never reach the file
    return {**_plain(r), "releases": [
        {**_plain(x), "diff": [[c.field, mask(c.old), mask(c.new)] for c in x.diff]}
        for x in r.releases
    ]}


def _releases_from_json(d: Json) -> Releases:
    return Releases(**{**d, "releases": tuple(
        Release(**{**x, "diff": tuple(ReleaseChange(*c) for c in x.get("diff", ()))})
        for x in d.get("releases", ())
    )})


def _logs_to_json(logs: tuple[WorkerLogs, ...], secrets: frozenset[str] = frozenset()
                  ) -> list[Json]:
    """Log snapshots with every line masked: token-shaped secrets, and `secrets` (the
    values of the template's secret-looking env keys, which need not look like tokens)."""
    return [
        {**_plain(w), "lines": [[x.t, x.source, mask_values(x.line, secrets)] for x in w.lines]}
        for w in logs
    ]


def _logs_from_json(items: list[Json]) -> tuple[WorkerLogs, ...]:
    return tuple(
        WorkerLogs(**{**w, "lines": tuple(LogLine(*x) for x in w.get("lines", ()))})
        for w in items
    )


def _stock_to_json(stock: tuple[GpuStock, ...]) -> list[Json]:
    return [{**_plain(g), "datacenters": [list(p) for p in g.datacenters]} for g in stock]


def _stock_from_json(items: list[Json]) -> tuple[GpuStock, ...]:
    return tuple(
        GpuStock(**{**g, "datacenters": tuple((a, b) for a, b in g.get("datacenters", ()))})
        for g in items
    )


def _v2_to_json(s: EndpointSample, d: Json) -> None:
    if s.workers is not None:
        d["workers"] = _workers_to_json(s.workers)
    if s.releases is not None:
        d["releases"] = _releases_to_json(s.releases)
    if s.logs is not None:
        d["logs"] = _logs_to_json(s.logs, config_secrets(s.config))


def _v2_from_json(d: Json) -> Json:
    """The v2 parts of a sample's JSON as model objects (absent ones left out)."""
    out: Json = {}
    if (w := d.get("workers")) is not None:
        out["workers"] = _workers_from_json(w)
    if (r := d.get("releases")) is not None:
        out["releases"] = _releases_from_json(r)
    if (x := d.get("logs")) is not None:
        out["logs"] = _logs_from_json(x)
    return out


def _sample_to_json(s: EndpointSample, config_ref: str | None = None) -> Json:
    """`s` with its config inline, or, when `config_ref` is given, a `"config_ref"` key
    holding it in the config's place."""
    d = _plain(s)
    if s.health is not None:
        d["health"] = _plain(s.health)
    if s.jobs is not None:
        d["jobs"] = [_plain(j) for j in s.jobs]
    _v2_to_json(s, d)
    if s.config is not None:
        del d["config"]
        if config_ref is None:
            d["config"] = config_to_json(s.config)
        else:
            d["config_ref"] = config_ref
    return d


def _sample_from_json(d: Json) -> EndpointSample:
    h, jobs, c = d.get("health"), d.get("jobs"), d.get("config")
    return EndpointSample(**{
        **d,
        "health": None if h is None else Health(**h),
        "jobs": None if jobs is None else tuple(Job(**j) for j in jobs),
        "config": None if c is None else config_from_json(c),
        **_v2_from_json(d),
    })


def _account_to_json(a: Account) -> Json:
    return {
        **_plain(a),
        "network_volumes": [_plain(v) for v in a.network_volumes],
        "pods": [_plain(p) for p in a.pods],
    }


def _account_from_json(d: Json) -> Account:
    return Account(**{
        **d,
        "network_volumes": tuple(NetworkVolume(**v) for v in d["network_volumes"]),
        "pods": tuple(Pod(**p) for p in d["pods"]),
    })


def _observation_to_json(obs: Observation, endpoints: Json) -> Json:
    d = _plain(obs)
    if obs.account is not None:
        d["account"] = _account_to_json(obs.account)
    if obs.listed_ids is not None:
        d["listed_ids"] = sorted(obs.listed_ids)
    if obs.tracked_jobs:
        d["tracked_jobs"] = [
            {"endpoint_id": tj.endpoint_id, "job": _plain(tj.job)} for tj in obs.tracked_jobs
        ]
    if obs.gpu_stock is not None:
        d["gpu_stock"] = _stock_to_json(obs.gpu_stock)
    if obs.sources:
        d["sources"] = dict(obs.sources)
    if obs.endpoint_spend is not None:
        d["endpoint_spend"] = dict(obs.endpoint_spend)
    d["endpoints"] = endpoints
    return d


def _tracked_from_json(items: list[Json] | None) -> tuple[TrackedJob, ...]:
    return tuple(TrackedJob(i["endpoint_id"], Job(**i["job"])) for i in items or ())


def observation_to_json(obs: Observation) -> Json:
    """`obs` with every config inline (schema 1's form)."""
    return _observation_to_json(obs, {k: _sample_to_json(s) for k, s in obs.endpoints.items()})


def _legacy_keys(d: Json) -> Json:
    """Rows written before the control plane had two APIs name its outcome `graphql_*`."""
    if "graphql_outcome" not in d and "graphql_status" not in d:
        return d
    d = dict(d)
    if "graphql_outcome" in d:
        d["control_outcome"] = d.pop("graphql_outcome")
    if "graphql_status" in d:
        d["control_status"] = d.pop("graphql_status")
    return d


def observation_from_json(d: Json) -> Observation:
    d = _legacy_keys(d)
    a, ids = d.get("account"), d.get("listed_ids")
    return Observation(**{
        **d,
        "account": None if a is None else _account_from_json(a),
        "listed_ids": None if ids is None else frozenset(ids),
        "endpoints": {k: _sample_from_json(s) for k, s in d["endpoints"].items()},
        "tracked_jobs": _tracked_from_json(d.get("tracked_jobs")),
        **_observation_v2_from_json(d),
    })


def _observation_v2_from_json(d: Json) -> Json:
    g = d.get("gpu_stock")
    return {} if g is None else {"gpu_stock": _stock_from_json(g)}


def masked_config(c: EndpointConfig) -> EndpointConfig:
    """`c` with token-shaped secrets in its template's docker args and env values masked,
    and the whole value of a secret-looking env key (DB_PASSWORD) too."""
    t = c.template
    if t is None:
        return c
    env = tuple(EnvVar(e.key, mask_values(e.value, secret_values([(e.key, e.value)])))
                for e in t.env)
    return replace(c, template=replace(t, docker_args=mask(t.docker_args), env=env))


def masked(obs: Observation) -> Observation:
    """`obs` with token-shaped secrets in template docker args and env values masked."""
    def fix(s: EndpointSample) -> EndpointSample:
        if s.config is None or s.config.template is None:
            return s
        return replace(s, config=masked_config(s.config))

    return replace(obs, endpoints={k: fix(s) for k, s in obs.endpoints.items()})


# --- observations with configs by reference: the store's form --------------------------

def config_text(c: EndpointConfig) -> str:
    """The canonical JSON text of `c` masked: what the store keeps of a config."""
    return json.dumps(config_to_json(masked_config(c)), sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False)


def config_digest(text: str) -> str:
    """The stable key of a config's text (`config_text`): 32 hex digits of BLAKE2b."""
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def config_refs(d: Json) -> set[str]:
    """The config digests an observation's JSON refers to."""
    return {r for s in d["endpoints"].values() if (r := s.get("config_ref")) is not None}


@dataclass(frozen=True, slots=True)
class Encoded:
    """One observation encoded by `ObservationEncoder`."""

    json: Json  # shares parts with earlier results: read it, do not change it
    configs: dict[str, EndpointConfig]  # digest -> config, for every config referred to
    texts: dict[str, str]  # digest -> `config_text`, for the configs encoded this time
    text: str  # `json` as compact JSON text (`json_text`), each sample's part kept encoded


def json_text(value: Any) -> str:
    """Compact JSON text, non-ASCII kept: how the store writes what it keeps."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def json_text_with(d: Json, key: str, items: list[str]) -> str:
    """`json_text(d)`, with the object under `key` written from its items' texts
    (`"name":value` each, already encoded), where `d` puts the key."""
    keys = list(d)
    at = keys.index(key)
    before = json_text({k: d[k] for k in keys[:at]})[1:-1]
    after = json_text({k: d[k] for k in keys[at + 1:]})[1:-1]
    middle = f"{json_text(key)}:{{{','.join(items)}}}"
    return "{" + ",".join(x for x in (before, middle, after) if x) + "}"


class ObservationEncoder:
    """Observations to JSON with each sample's config replaced by `"config_ref": digest`.

    A config (or a whole sample) that is the same object as the one encoded last time for
    its endpoint, as the prober makes an unchanged one, is not masked or encoded again,
    nor written as text again (at 1000 endpoints json.dumps of a whole observation takes
    9 ms of a cycle's CPU).
    """

    def __init__(self) -> None:
        self._configs: dict[str, tuple[EndpointConfig, str]] = {}
        # endpoint key -> (sample, its JSON, `"key":{...}` as text)
        self._samples: dict[str, tuple[EndpointSample, Json, str]] = {}

    def encode(self, obs: Observation) -> Encoded:
        configs: dict[str, EndpointConfig] = {}
        texts: dict[str, str] = {}
        endpoints: Json = {}
        seen_configs: dict[str, tuple[EndpointConfig, str]] = {}
        seen_samples: dict[str, tuple[EndpointSample, Json, str]] = {}
        parts: list[str] = []
        for key, s in obs.endpoints.items():
            ref = None
            c = s.config
            if c is not None:
                known = self._configs.get(key)
                if known is not None and known[0] is c:
                    ref = known[1]
                else:
                    text = config_text(c)
                    ref = config_digest(text)
                    texts[ref] = text
                seen_configs[key] = (c, ref)
                configs[ref] = c
            last = self._samples.get(key)
            # the same sample object holds the same config object, hence the same ref
            if last is None or last[0] is not s:
                d = _sample_to_json(s, ref)
                last = (s, d, f"{json_text(key)}:{json_text(d)}")
            seen_samples[key] = last
            endpoints[key] = last[1]
            parts.append(last[2])
        # only the endpoints of this observation: a vanished endpoint is forgotten
        self._configs, self._samples = seen_configs, seen_samples
        d = _observation_to_json(obs, endpoints)
        return Encoded(d, configs, texts, json_text_with(d, "endpoints", parts))


_SHARED_JOB_STRINGS = ("status", "worker_id")  # few distinct values: one string each


class HistoryDecoder:
    """Observations from the store's JSON, oldest first, sharing objects like the prober.

    A config is one object per digest (and per value, for schema 1's inline configs); a
    sample, health, job list or job equal to the one of the previously decoded observation
    for the same endpoint is that object; so are an equal account and listed ids. A restored
    history then costs about what the live one did.
    """

    def __init__(self, config_texts: Mapping[str, str]) -> None:
        self._texts = config_texts
        self._by_ref: dict[str, EndpointConfig] = {}
        self._by_value: dict[EndpointConfig, EndpointConfig] = {}
        self._strings: dict[str, str] = {}
        # endpoint key -> (the key's one string, the sample's JSON, the sample, its digest)
        self._previous: dict[str, tuple[str, Json, EndpointSample, str | None]] = {}
        self._account: tuple[Json, Account] | None = None
        self._listed: tuple[list[str], frozenset[str]] | None = None
        self.refs: set[str] = set()  # the digests the last decoded observation referred to

    def _str(self, s: str) -> str:
        return self._strings.setdefault(s, s)

    def decode(self, d: Json) -> Observation:
        d = _legacy_keys(d)
        self.refs = set()
        account = None
        if (a := d.get("account")) is not None:
            if self._account is None or self._account[0] != a:
                self._account = (a, _account_from_json(a))
            account = self._account[1]
        listed = None
        if (ids := d.get("listed_ids")) is not None:
            if self._listed is None or self._listed[0] != ids:
                self._listed = (ids, frozenset(self._str(i) for i in ids))
            listed = self._listed[1]
        endpoints = {}
        refs = self.refs
        for key, sd in d["endpoints"].items():
            last = self._previous.get(key)
            if last is None or last[1] != sd:
                last = self._sample(key, sd, last)
                self._previous[key] = last
            endpoints[last[0]] = last[2]
            if last[3] is not None:
                refs.add(last[3])
        return Observation(**{**d, "account": account, "listed_ids": listed,
                              "endpoints": endpoints,
                              "tracked_jobs": _tracked_from_json(d.get("tracked_jobs")),
                              **_observation_v2_from_json(d)})

    def _sample(
        self, key: str, d: Json, last: tuple[str, Json, EndpointSample, str | None] | None
    ) -> tuple[str, Json, EndpointSample, str | None]:
        """A sample that differs from the endpoint's last one: built, sharing what is equal."""
        pd, ps = ({}, None) if last is None else (last[1], last[2])
        h, jobs = d.get("health"), d.get("jobs")
        health = None if h is None else Health(**h)
        if ps is not None and health == ps.health:
            health = ps.health
        job_list = None if jobs is None else self._jobs(jobs, ps)
        if ps is not None and job_list == ps.jobs:
            job_list = ps.jobs
        fields_ = {k: v for k, v in d.items() if k != "config_ref"}
        s = EndpointSample(**{
            **fields_,
            "endpoint_id": self._str(d["endpoint_id"]),
            "health_outcome": self._str(d["health_outcome"]),
            "health": health,
            "jobs": job_list,
            "config": self._config(d, pd, ps),
            **_v2_from_json(d),
        })
        if ps is not None and s == ps:  # e.g. an inline config, then the same one by ref
            s = ps
        ref = d.get("config_ref")
        return (self._str(key), d, s, None if ref is None else self._str(ref))

    def _jobs(self, jobs: list[Json], ps: EndpointSample | None) -> tuple[Job, ...]:
        before = {j.id: j for j in ps.jobs or ()} if ps is not None else {}
        out = []
        for jd in jobs:
            j = Job(**{**jd, **{k: self._str(jd[k]) for k in _SHARED_JOB_STRINGS if k in jd}})
            p = before.get(j.id)
            out.append(p if p is not None and p == j else j)
        return tuple(out)

    def _config(self, d: Json, pd: Json, ps: EndpointSample | None) -> EndpointConfig | None:
        ref = d.get("config_ref")
        if ref is not None:
            c = self._by_ref.get(ref)
            if c is None:
                text = self._texts.get(ref)
                if text is None:
                    raise ValueError(f"endpoint {d['endpoint_id']}: config {ref} is missing")
                c = self._intern(config_from_json(json.loads(text)))
                self._by_ref[ref] = c
            return c
        inline = d.get("config")  # schema 1
        if inline is None:
            return None
        if ps is not None and inline == pd.get("config"):
            return ps.config
        return self._intern(config_from_json(inline))

    def _intern(self, c: EndpointConfig) -> EndpointConfig:
        return self._by_value.setdefault(c, c)


# --- memory, diagnoses, incidents -------------------------------------------------------

def _cold_start_to_json(c: ColdStart) -> Json:
    out = _plain(c)
    if c.image:
        out["image"] = mask(c.image)  # an image reference can carry a registry token
    return out


def endpoint_jobs_to_json(e: EndpointJobs) -> Json:
    out = _plain(e)
    if e.image:
        out["image"] = mask(e.image)
    if e.executions:
        out["executions"] = [list(x) for x in e.executions]
    if e.cold_starts:
        out["cold_starts"] = [_cold_start_to_json(c) for c in e.cold_starts]
    if e.at_zero is not None:
        out["at_zero"] = sorted(e.at_zero)
    if e.ready_starts:
        out["ready_starts"] = [_cold_start_to_json(c) for c in e.ready_starts]
    if e.booting:
        out["booting"] = [list(b) for b in e.booting]
    return out


def _endpoint_jobs_from_json(d: Json) -> EndpointJobs:
    at_zero = d.get("at_zero")
    return EndpointJobs(**{
        **d,
        "executions": tuple((str(j), int(ms)) for j, ms in d.get("executions", ())),
        "cold_starts": tuple(ColdStart(**c) for c in d.get("cold_starts", ())),
        "at_zero": frozenset(at_zero) if at_zero is not None else None,
        "ready_starts": tuple(ColdStart(**c) for c in d.get("ready_starts", ())),
        "booting": tuple((str(w), float(s), float(t)) for w, s, t in d.get("booting", ())),
    })


# Memory that is not stored: `failed_last` / `failed_rose_t` only spare job_failures a walk
# over its window (an endpoint they do not know is walked, exactly), and writing two maps
# of every endpoint each cycle cost more (1.1 to 1.7 ms at N = 1000) than the walk it saves
# for the one window after a restart
_MEMORY_NOT_STORED = ("failed_last", "failed_rose_t")


def memory_to_json(m: Memory) -> Json:
    out = {
        **{k: v for k, v in _plain(m).items() if k not in _MEMORY_NOT_STORED},
        "ever_ok": sorted(m.ever_ok),
        "longest_cold_start_ms": dict(m.longest_cold_start_ms),
        "names": dict(m.names),
        "workers_seen_t": dict(m.workers_seen_t),
    }
    if m.jobs:
        out["jobs"] = {eid: endpoint_jobs_to_json(e) for eid, e in m.jobs.items()}
    return out


def memory_from_json(d: Json) -> Memory:
    jobs = {eid: _endpoint_jobs_from_json(e) for eid, e in d.get("jobs", {}).items()}
    return Memory(**{**d, "ever_ok": frozenset(d["ever_ok"]), "jobs": jobs})


def diagnosis_to_json(dg: Diagnosis) -> Json:
    return {**_plain(dg), "evidence": _value_to_json(dict(dg.evidence))}


def diagnosis_from_json(d: Json) -> Diagnosis:
    return Diagnosis(**{**d, "evidence": _value_from_json(d["evidence"])})


def incident_to_json(i: Incident) -> Json:
    return {**_plain(i), "diagnosis": diagnosis_to_json(i.diagnosis)}


def incident_from_json(d: Json) -> Incident:
    return Incident(**{**d, "diagnosis": diagnosis_from_json(d["diagnosis"])})
