"""JSON forms of the model for the state store: exact round trips.

`x_from_json(x_to_json(x)) == x` for observations, memory, diagnoses and incidents: tuples
come back as tuples, frozensets as frozensets, mappings as dicts. Fields at their default
value are left out. `masked` cuts token-shaped secrets out of templates before storing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, fields, replace
from typing import Any

from monitor.incidents import Incident
from rules.model import (
    Account,
    Diagnosis,
    EndpointConfig,
    EndpointSample,
    EnvVar,
    Health,
    Job,
    Memory,
    NetworkVolume,
    Observation,
    Pod,
    Template,
)
from rules.secrets import mask

Json = dict[str, Any]


def _plain(obj: Any) -> Json:
    """A dataclass's fields as they are, without those at their default value."""
    out: Json = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.default is MISSING or type(value) is not type(f.default) or value != f.default:
            out[f.name] = value
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


def _config_to_json(c: EndpointConfig) -> Json:
    d = _plain(c)
    if c.template is not None:
        d["template"] = _template_to_json(c.template)
    return d


def _config_from_json(d: Json) -> EndpointConfig:
    t = d.get("template")
    return EndpointConfig(**{**d, "template": None if t is None else _template_from_json(t)})


def _sample_to_json(s: EndpointSample) -> Json:
    d = _plain(s)
    if s.health is not None:
        d["health"] = _plain(s.health)
    if s.jobs is not None:
        d["jobs"] = [_plain(j) for j in s.jobs]
    if s.config is not None:
        d["config"] = _config_to_json(s.config)
    return d


def _sample_from_json(d: Json) -> EndpointSample:
    h, jobs, c = d.get("health"), d.get("jobs"), d.get("config")
    return EndpointSample(**{
        **d,
        "health": None if h is None else Health(**h),
        "jobs": None if jobs is None else tuple(Job(**j) for j in jobs),
        "config": None if c is None else _config_from_json(c),
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


def observation_to_json(obs: Observation) -> Json:
    d = _plain(obs)
    if obs.account is not None:
        d["account"] = _account_to_json(obs.account)
    if obs.listed_ids is not None:
        d["listed_ids"] = sorted(obs.listed_ids)
    d["endpoints"] = {k: _sample_to_json(s) for k, s in obs.endpoints.items()}
    return d


def observation_from_json(d: Json) -> Observation:
    a, ids = d.get("account"), d.get("listed_ids")
    return Observation(**{
        **d,
        "account": None if a is None else _account_from_json(a),
        "listed_ids": None if ids is None else frozenset(ids),
        "endpoints": {k: _sample_from_json(s) for k, s in d["endpoints"].items()},
    })


def masked(obs: Observation) -> Observation:
    """`obs` with token-shaped secrets in template docker args and env values masked."""
    def fix(s: EndpointSample) -> EndpointSample:
        if s.config is None or s.config.template is None:
            return s
        t = s.config.template
        env = tuple(EnvVar(e.key, mask(e.value)) for e in t.env)
        t = replace(t, docker_args=mask(t.docker_args), env=env)
        return replace(s, config=replace(s.config, template=t))

    return replace(obs, endpoints={k: fix(s) for k, s in obs.endpoints.items()})


# --- memory, diagnoses, incidents -------------------------------------------------------

def memory_to_json(m: Memory) -> Json:
    return {
        **_plain(m),
        "ever_ok": sorted(m.ever_ok),
        "longest_cold_start_ms": dict(m.longest_cold_start_ms),
        "names": dict(m.names),
    }


def memory_from_json(d: Json) -> Memory:
    return Memory(**{**d, "ever_ok": frozenset(d["ever_ok"])})


def diagnosis_to_json(dg: Diagnosis) -> Json:
    return {**_plain(dg), "evidence": _value_to_json(dict(dg.evidence))}


def diagnosis_from_json(d: Json) -> Diagnosis:
    return Diagnosis(**{**d, "evidence": _value_from_json(d["evidence"])})


def incident_to_json(i: Incident) -> Json:
    return {**_plain(i), "diagnosis": diagnosis_to_json(i.diagnosis)}


def incident_from_json(d: Json) -> Incident:
    return Incident(**{**d, "diagnosis": diagnosis_from_json(d["diagnosis"])})
