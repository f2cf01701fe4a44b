"""The REST v2 parsers on hand-written answers: the cases the fuzzing cannot judge."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from monitor.runpod import parse_v2 as p


def _t(hour: int) -> float:
    return datetime(2026, 12, 1, hour, tzinfo=UTC).timestamp()


def test_sse_decoder_line_endings_comments_and_multiline_data() -> None:
    d = p.SseDecoder()
    raw = (b"\xef\xbb\xbf: keep-alive\r\nid: a/1\r\ndata: one\r\n\r\n"
           b"data: two\rdata: lines\r\rid: b/2\nevent: log\ndata: x\n\n"
           b"data: cut")
    events = [e for i in range(len(raw)) for e in d.feed(raw[i:i + 1])]
    assert events == [p.SseEvent("one", "a/1"), p.SseEvent("two\nlines", "a/1"),
                      p.SseEvent("x", "b/2", "log")]
    assert d.pending  # "data: cut" has no end yet


@pytest.mark.parametrize(("data", "line"), [
    ('{"ts":"2026-12-01T12:00:00Z","source":"system","line":"start container"}',
     ("start container", "system", _t(12))),
    ('{"line":"no ts"}', ("no ts", "", None)),
    ('{"ts":"soon","line":"x"}', None), ('{"line": 3}', None), ("not json", None),
    ('{"line": "x", "ts": NaN}', None),
])
def test_parse_log_event(data: str, line: tuple[str, str, float | None] | None) -> None:
    out = p.parse_log_event(data)
    assert (None if out is None else (out.line, out.source, out.t)) == line


def _bucket(hour: int, sid: str, amount: float) -> dict[str, object]:
    return {"startTime": f"2026-12-01T{hour:02d}:00:00Z",
            "endTime": f"2026-12-01T{hour + 1:02d}:00:00Z", "serverlessId": sid,
            "totalAmount": amount, "gpuAmount": amount}


def test_billing_reads_the_last_complete_bucket_only() -> None:
    body = {"records": [_bucket(12, "a", 0.5), _bucket(12, "b", 0.25), _bucket(13, "a", 9.0)],
            "metadata": {"query": {"endTime": "2026-12-01T14:00:00Z"}}}
    out = p.parse_serverless_billing(body, now=0.0)  # the window says what is complete
    assert out is not None
    assert dict(out.per_endpoint) == {"a": 0.5, "b": 0.25}
    assert (out.total_per_hr, out.bucket_start, out.bucket_end) == (0.75, _t(12), _t(13))
    # without the window, the local clock decides: at 13:30 the 13:00 bucket is running
    body.pop("metadata")
    out = p.parse_serverless_billing(body, now=_t(13) + 1800)
    assert out is not None
    assert dict(out.per_endpoint) == {"a": 0.5, "b": 0.25}
    # only the in-progress bucket: nothing complete, nothing claimed
    only = {"records": [_bucket(13, "a", 9.0)],
            "metadata": {"query": {"endTime": "2026-12-01T14:00:00Z"}}}
    out = p.parse_serverless_billing(only, now=_t(15))
    assert out is not None
    assert (dict(out.per_endpoint), out.total_per_hr) == ({}, None)
    assert p.parse_serverless_billing({"records": [{"serverlessId": "a"}]}, 0.0) is None


@pytest.mark.parametrize(("status", "body", "retired"), [
    (410, None, True), (404, {"message": "Not Found"}, True),
    (200, {"errors": [{"message": "The GraphQL API has been retired. Use REST API v2"}]}, True),
    (400, {"detail": "GraphQL is no longer available"}, True),
    (200, {"errors": [{"message": "GraphQL is deprecated and will be retired in early 2027"}],
           "data": {"myself": {}}}, False),
    (200, {"errors": [{"message": "this endpoint has been retired"}]}, False),  # not GraphQL
    (500, {"errors": [{"message": "The GraphQL API has been retired"}]}, False),
    (401, {"errors": [{"message": "Unauthorized"}]}, False),
])
def test_graphql_retirement(status: int, body: object, retired: bool) -> None:
    assert p.is_graphql_retired(status, body) is retired


def test_problem_message() -> None:
    assert p.problem_message({"title": "Not Found", "status": 404}) == "Not Found"
    assert p.problem_message({"detail": "a", "title": "b", "errors": ["c", "d"]}) == "a: c"
    assert p.problem_message({"message": "x"}) == ""
    assert len(p.problem_message({"detail": "x" * 500})) == 200


def test_endpoint_scaling_and_cpu_endpoints() -> None:
    cpu = p.parse_endpoint_v2({"id": "c1", "workers": {"min": 0, "max": 2}, "gpu": None,
                               "scaling": {"type": "QUEUE_DELAY", "queueDelay": 0.5},
                               "dataCenterIds": [], "networkVolumes": []})
    assert cpu is not None
    assert (cpu.gpu_ids, cpu.locations, cpu.network_volume_id, cpu.template) == (
        "", None, None, None)
    assert (cpu.scaler_type, cpu.scaler_value) == ("QUEUE_DELAY", 1)  # 0.5 s, rounded up to 1
