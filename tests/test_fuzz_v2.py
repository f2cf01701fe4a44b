"""Fuzzing the REST v2 parsers (problem+json, pages, endpoints, workers, releases, billing,
account, catalog, server-sent events) and the client's v2 decode path, as tests/test_fuzz.py
does for GraphQL and the data plane: never an exception; a value that holds its invariants,
or None (the client's `malformed`)."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from hypothesis import strategies as st
from test_fuzz import COUNT, EXAMPLES, KEY, SCALARS, _raw_http_server, fuzz, trees

from model.observation import FAILURE_KINDS, RETIRED, EndpointConfig
from monitor.runpod import Failure, Ok, RunPodClient
from monitor.runpod import parse_v2 as p
from monitor.runpod.rest_v2 import LogBounds, V2Pagination


def _mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any],
            odds: int = 4) -> st.SearchStrategy[Any]:
    """`good` `odds` times for each `bad`: most bodies get deep into the parser, some trip it."""
    # (one_of would not do: it draws each distinct branch alike, repeated or not)
    return st.integers(0, odds).flatmap(lambda i: bad if i == 0 else good)


def _field(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """One field: rarely wrong, so a body of a dozen fields is often wholly right."""
    return _mostly(good, bad, 24)


TEXT = _field(st.text(min_size=1, max_size=8), st.text(max_size=10))
TIMES = st.one_of(SCALARS, st.sampled_from([
    "2026-12-01T12:00:00Z", "2026-12-01T13:00:00Z", "2026-12-01T14:00:00+00:00",
    "2026-12-01T12:00:00", "2026-13-01T00:00:00Z", "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z", "2026-12-01T12:00:00.5-05:00", "yesterday"]))
NUMS = _field(st.floats(0, 1e6) | st.integers(0, 1000),
               st.one_of(COUNT, st.floats(allow_nan=True, allow_infinity=True)))
GOOD_TIMES = st.sampled_from(["2026-12-01T12:00:00Z", "2026-12-01T13:00:00Z",
                              "2026-12-01T14:00:00Z", "2026-12-01T13:00:00+00:00"])
COUNT = _field(st.integers(0, 1000), COUNT)
TIMES = _field(GOOD_TIMES, TIMES)
ID = _field(st.text(min_size=1, max_size=8), SCALARS)

ENDPOINT_KEYS = ["id", "name", "type", "gpu", "pools", "excludedTypes", "count", "workers",
                 "min", "max", "idleTimeout", "scaling", "queueDelay", "requestCount",
                 "dataCenterIds", "networkVolumes", "timeout", "flashboot", "image", "args",
                 "disk", "env", "endpoints", "nextCursor"]
WORKER_KEYS = ["endpointVersion", "workers", "id", "status", "isStale", "version", "startedAt",
               "uptimeSeconds", "gpuTypeId", "dataCenterId", "gpuCount", "image"]
RELEASE_KEYS = ["endpointVersion", "rollout", "inProgress", "percentOnLatest", "releases",
                "version", "createdAt", "source", "buildId", "workerCount", "diff", "field",
                "old", "new"]
BILLING_KEYS = ["records", "metadata", "query", "startTime", "endTime", "serverlessId",
                "totalAmount", "totals", "balanceAmount", "billingMode", "spendRate",
                "serverlessWorkers", "limit", "current", "removed"]
CATALOG_KEYS = ["gpus", "id", "pool", "availability", "dataCenters", "price", "serverless",
                "networkVolumes", "name", "size", "dataCenter", "pods", "status", "cost",
                "nextCursor"]
PROBLEM_KEYS = ["title", "status", "detail", "errors", "message", "error", "data"]


def _strs(*extra: str) -> st.SearchStrategy[Any]:
    return _field(st.lists(st.one_of(TEXT, st.sampled_from(extra or ("ADA_24",))),
                            max_size=3), SCALARS)


def _or(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return _field(good, SCALARS)


def _obj(fields: dict[str, st.SearchStrategy[Any]], keys: list[str],
         required: dict[str, st.SearchStrategy[Any]] | None = None) -> st.SearchStrategy[Any]:
    """An object of the right shape (optional `fields`), else a tree of `keys` or a scalar."""
    return _field(st.fixed_dictionaries(required or {}, optional=fields),
                  st.one_of(trees(keys, max_leaves=6), SCALARS))


def _endpoint() -> st.SearchStrategy[Any]:
    k = ENDPOINT_KEYS
    return st.fixed_dictionaries({"id": ID}, optional={
        "name": _or(TEXT), "type": _or(st.sampled_from(["QUEUE", "LOAD_BALANCER"])),
        "gpu": _obj({"pools": _strs("ADA_24", "AMPERE_16"),
                     "excludedTypes": _strs("NVIDIA L40")}, k),
        "workers": _obj({"min": COUNT, "max": COUNT, "idleTimeout": COUNT}, k),
        "scaling": _obj({"type": _or(st.sampled_from(["QUEUE_DELAY", "REQUEST_COUNT"])),
                         "queueDelay": NUMS, "requestCount": NUMS}, k),
        "dataCenterIds": _strs("US-KS-2"), "networkVolumes": _strs("vol1"),
        "timeout": COUNT, "flashboot": _or(TEXT), "image": _or(TEXT), "args": _or(TEXT),
        "disk": COUNT, "env": _mostly(st.dictionaries(TEXT, TEXT, max_size=3),
                                      trees(k, max_leaves=6)),
    })


def _page(item: st.SearchStrategy[Any], key: str, keys: list[str]) -> st.SearchStrategy[Any]:
    return _mostly(st.fixed_dictionaries({key: _or(st.lists(item, max_size=3))},
                                         optional={"nextCursor": _or(TEXT)}), trees(keys))


def _worker() -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(
        {"id": ID, "status": _or(st.sampled_from(["RUNNING", "IDLE", "UNHEALTHY", "THROTTLED"]))},
        optional={"isStale": _or(st.booleans()), "version": COUNT, "startedAt": TIMES,
                  "uptimeSeconds": COUNT, "gpuTypeId": _or(TEXT), "dataCenterId": _or(TEXT),
                  "gpuCount": COUNT, "image": _or(TEXT)})


def _release() -> st.SearchStrategy[Any]:
    change = st.fixed_dictionaries({"field": ID}, optional={
        "old": trees(RELEASE_KEYS, max_leaves=4), "new": trees(RELEASE_KEYS, max_leaves=4)})
    return st.fixed_dictionaries({"version": COUNT}, optional={
        "createdAt": TIMES, "source": _or(TEXT), "buildId": _or(TEXT),
        "workerCount": COUNT, "diff": _or(st.lists(change, max_size=3))})


def _record() -> st.SearchStrategy[Any]:
    return _mostly(st.fixed_dictionaries({"startTime": TIMES, "endTime": TIMES,
                                          "serverlessId": ID, "totalAmount": NUMS}),
                   st.fixed_dictionaries({}, optional={
                       "startTime": TIMES, "endTime": TIMES, "serverlessId": ID,
                       "totalAmount": NUMS}))


def _gpu() -> st.SearchStrategy[Any]:
    dc = st.fixed_dictionaries({"id": ID, "availability": _or(TEXT)})
    return st.fixed_dictionaries({"id": ID}, optional={
        "pool": _or(TEXT), "availability": _or(TEXT),
        "dataCenters": _or(st.lists(dc, max_size=2)),
        "price": _obj({"serverless": NUMS}, CATALOG_KEYS)})


def _listed(key: str, item: st.SearchStrategy[Any], keys: list[str],
            optional: dict[str, st.SearchStrategy[Any]] | None = None) -> st.SearchStrategy[Any]:
    return _mostly(st.fixed_dictionaries({key: _or(st.lists(item, max_size=3))},
                                         optional=optional or {}), trees(keys))


VOLUME = st.fixed_dictionaries({"id": ID}, optional={
    "name": _or(TEXT), "size": NUMS, "dataCenter": _or(TEXT)})
BODIES: dict[str, st.SearchStrategy[Any]] = {
    "endpoints": _page(_endpoint(), "endpoints", ENDPOINT_KEYS),
    "workers": _listed("workers", _worker(), WORKER_KEYS, {"endpointVersion": COUNT}),
    "releases": _listed("releases", _release(), RELEASE_KEYS, {
        "endpointVersion": COUNT,
        "rollout": _obj({"inProgress": _or(st.booleans()), "percentOnLatest": NUMS},
                        RELEASE_KEYS)}),
    "billing": _listed("records", _record(), BILLING_KEYS, {
        "metadata": _obj({"query": _obj({"endTime": TIMES}, BILLING_KEYS)}, BILLING_KEYS)}),
    "account": _mostly(st.fixed_dictionaries({}, optional={
        "balanceAmount": NUMS, "billingMode": _or(st.sampled_from(["PREPAID", "POSTPAID"])),
        "removed": COUNT,
        "spendRate": _obj({"limit": NUMS, "current": NUMS}, BILLING_KEYS),
        "serverlessWorkers": _obj({"limit": NUMS, "current": NUMS}, BILLING_KEYS)}),
        trees(BILLING_KEYS)),
    "gpus": _listed("gpus", _gpu(), CATALOG_KEYS),
    "volumes": _listed("networkVolumes", VOLUME, CATALOG_KEYS),
    "problem": _mostly(st.fixed_dictionaries({}, optional={
        "title": _or(TEXT), "detail": _or(st.text(max_size=300)), "status": COUNT,
        "errors": _or(st.lists(_or(st.text(max_size=300)), max_size=3)), "data": SCALARS}),
        trees(PROBLEM_KEYS)),
}


def _finite(*values: float | None, nonneg: bool = True) -> bool:
    return all(v is None or (math.isfinite(v) and (not nonneg or v >= 0)) for v in values)


def _good_endpoint(e: EndpointConfig) -> bool:
    return (isinstance(e.id, str) and bool(e.id) and e.workers_min >= 0 and e.workers_max >= 0
            and all(v is None or v >= 0 for v in (e.idle_timeout, e.scaler_value, e.timeout_ms))
            and (e.locations is None or bool(e.locations))
            and all(isinstance(v, str) and v for v in e.network_volume_ids)
            and e.network_volume_id == (e.network_volume_ids[0] if e.network_volume_ids
                                        else None))


# ---------------------------------------------------------------- the parsers


def test_fuzz_endpoints_and_pages() -> None:
    """parse_endpoints_page / parse_endpoint_v2: sane EndpointConfigs and a str|None cursor."""
    def check(body: Any) -> None:
        page = p.parse_endpoints_page(body)
        if page is not None:
            assert all(_good_endpoint(e) for e in page.items)
            assert page.next_cursor is None or (isinstance(page.next_cursor, str)
                                                and page.next_cursor)
        one = p.parse_endpoint_v2(body)
        assert one is None or _good_endpoint(one)
        pods = p.parse_pods_page(body)
        assert pods is None or all(_finite(x.cost_per_hr) for x in pods.items)

    fuzz("parse_endpoints_page", st.one_of(BODIES["endpoints"], _endpoint()), check)


def test_fuzz_workers() -> None:
    def check(body: Any) -> None:
        out = p.parse_workers(body)
        if out is not None:
            assert out.endpoint_version is None or out.endpoint_version >= 0
            for w in out.workers:
                assert isinstance(w.id, str)
                assert w.id
                assert isinstance(w.status, str)
                assert w.status
                assert isinstance(w.stale, bool)
                assert w.gpu_count >= 0
                assert w.started_at is None or math.isfinite(w.started_at)

    fuzz("parse_workers", BODIES["workers"], check)


def test_fuzz_releases() -> None:
    """Releases newest first; every diff's old/new is JSON text."""
    def check(body: Any) -> None:
        out = p.parse_releases(body)
        if out is not None:
            versions = [r.version for r in out.releases]
            assert versions == sorted(versions, reverse=True)
            assert all(v >= 1 for v in versions)
            for r in out.releases:
                for c in r.diff:
                    json.loads(c.old)
                    json.loads(c.new)
            assert _finite(out.percent_on_latest)

    fuzz("parse_releases", BODIES["releases"], check)


def test_fuzz_billing_and_account() -> None:
    """Spend from one complete bucket only, finite and >= 0; balance finite; limits
    tolerate any inner shape."""
    def check_billing(body: Any) -> None:
        out = p.parse_serverless_billing(body, 1_796_130_000.0)
        if out is not None:
            assert _finite(out.total_per_hr, *out.per_endpoint.values())
            if out.per_endpoint:
                assert out.bucket_start is not None
                assert out.bucket_end is not None
                assert out.bucket_end > out.bucket_start
                assert out.total_per_hr == pytest.approx(sum(out.per_endpoint.values()))
            else:
                assert out.total_per_hr is None

    def check_account(body: Any) -> None:
        balance = p.parse_balance(body)
        assert balance is None or _finite(balance.amount, nonneg=False)
        limits = p.parse_account_limits(body)
        assert limits is not None or not isinstance(body, dict)
        if limits is not None:
            assert _finite(limits.spend_limit, limits.spend_current)
            assert all(v is None or v >= 0 for v in (limits.workers_limit,
                                                     limits.workers_current))
        account = p.parse_account(body)
        assert account is None or (isinstance(account, str) and account)
        removed = p.parse_purge(body)
        assert removed is None or removed >= 0

    fuzz("parse_serverless_billing", BODIES["billing"], check_billing)
    fuzz("parse_balance/account_limits/purge", BODIES["account"], check_account)


def test_fuzz_catalog_volumes() -> None:
    def check(body: Any) -> None:
        gpus = p.parse_gpus(body)
        if gpus is not None:
            for g in gpus:
                assert g.gpu_type
                assert _finite(g.price_serverless)
                assert all(isinstance(dc, str) and dc for dc, _ in g.datacenters)
        vols = p.parse_network_volumes(body)
        assert vols is None or all(v.id and _finite(v.size_gb) for v in vols)

    fuzz("parse_gpus/network_volumes", st.one_of(BODIES["gpus"], BODIES["volumes"]), check)


def test_fuzz_problem_and_retirement() -> None:
    """problem_message is at most 200 characters; is_graphql_retired a bool for any answer."""
    statuses = st.sampled_from([200, 400, 401, 404, 410, 429, 500])

    def check(value: tuple[int, Any]) -> None:
        status, body = value
        message = p.problem_message(body)
        assert isinstance(message, str)
        assert len(message) <= 200
        assert isinstance(p.is_graphql_retired(status, body), bool)

    retired = st.sampled_from([{"errors": [{"message": "The GraphQL API has been retired."}]},
                               {"detail": "graphql is retired"}, {"message": "GraphQL gone"}])
    fuzz("problem_message/is_graphql_retired",
         st.tuples(statuses, st.one_of(BODIES["problem"], retired)), check)


def _events_of(chunks: list[bytes]) -> list[p.SseEvent]:
    decoder = p.SseDecoder()
    return [e for c in chunks for e in decoder.feed(c)]


SSE_BYTES = st.one_of(
    st.binary(max_size=300),
    st.lists(st.one_of(
        st.sampled_from([b"data: ", b"id: ", b"event: x", b":ping", b"\n", b"\r\n", b"\r",
                         b'{"ts":"2026-12-01T12:00:00Z","source":"system","line":"l"}',
                         b'{"line": 5}', b"\xff\xfe", "é".encode(), b"\x00"]),
        st.binary(max_size=8)), max_size=30).map(b"".join),
)


def test_fuzz_sse_decoder() -> None:
    """Any bytes, cut anywhere: the same events as when fed whole; each event's data parses
    to a LogLine or None, never an exception."""
    def check(value: tuple[bytes, list[int]]) -> None:
        raw, cuts = value
        points = sorted({c % (len(raw) + 1) for c in cuts})
        pieces = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
        whole = _events_of([raw])
        assert _events_of(pieces) == whole
        for event in whole:
            line = p.parse_log_event(event.data)
            assert line is None or (isinstance(line.line, str) and _finite(line.t,
                                                                           nonneg=False))

    fuzz("SseDecoder", st.tuples(SSE_BYTES, st.lists(st.integers(0, 400), max_size=6)), check)


# ---------------------------------------------------------------- the client, end to end


def _dump(body: Any) -> bytes:
    try:
        return json.dumps(body, allow_nan=True).encode()
    except (ValueError, TypeError, RecursionError):
        return b"{}"


ANSWERS_V2 = st.fixed_dictionaries({
    "status": st.sampled_from([200, 200, 200, 204, 400, 401, 403, 404, 410, 422, 429, 500, 503]),
    "body": st.one_of(
        st.binary(max_size=200), SSE_BYTES,
        *(b.map(_dump) for b in BODIES.values()),
        st.sampled_from([f'{{"detail": "bad key {KEY}", "errors": ["{KEY}"]}}'.encode(),
                         b'{"errors": [{"message": "The GraphQL API has been retired"}]}']),
    ),
    "retry_after": st.none() | st.sampled_from(["5", "-1", "nan", "soon", ""]),
    "encoding": st.sampled_from([None, None, "gzip", "br"]),
    "content_type": st.sampled_from(["application/json", "application/problem+json",
                                     "text/event-stream", "text/html", ""]),
})


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _drop(*_: Any) -> Any:
    raise structlog.DropEvent


def test_fuzz_client_v2_decode_path(loop: asyncio.AbstractEventLoop) -> None:
    """Any HTTP answer through the v2 calls (and myself): Ok or a known Failure, never the
    key, never an exception; raw bytes over a real socket."""
    answer: dict[str, Any] = {}
    server, port = loop.run_until_complete(_raw_http_server(answer))
    base = f"http://127.0.0.1:{port}"
    client = RunPodClient(api_key=KEY, graphql_url=f"{base}/graphql", v2_url=f"{base}/v2",
                          rest_url=f"{base}/v2", timeout_s=2,
                          v2_pagination=V2Pagination(max_pages=2),
                          log_bounds=LogBounds(max_lines=5, max_bytes=2048, max_seconds=1))

    async def calls() -> list[Any]:
        return [await client.list_endpoints(), await client.endpoint_workers("ep/1"),
                await client.endpoint_releases("ep1"), await client.worker_logs("ep1", "w1"),
                await client.balance(), await client.account_limits(),
                await client.serverless_spend(), await client.gpu_stock(),
                await client.patch_endpoint("ep1", {"workers": {"max": 1}}),
                await client.purge_queue("ep1"), await client.myself()]

    def check(value: dict[str, Any]) -> None:
        answer.clear()
        answer.update(value)
        for result in loop.run_until_complete(calls()):
            assert isinstance(result, Ok | Failure)
            if isinstance(result, Failure):
                assert result.kind in (*FAILURE_KINDS, RETIRED)
                assert KEY not in result.message
                assert result.retry_after_s is None or (
                    math.isfinite(result.retry_after_s) and result.retry_after_s >= 0)

    old = structlog.get_config()
    structlog.configure(processors=[_drop], cache_logger_on_first_use=False)
    try:
        fuzz("client v2 decode path (11 calls each)", ANSWERS_V2, check, examples=EXAMPLES)
    finally:
        structlog.configure(**old)
        loop.run_until_complete(client.aclose())
        server.close()
