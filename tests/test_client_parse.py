"""The RunPod parsers against the bodies quoted in spec/runpod-api.md, and on any input."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.observation import (
    Account,
    EndpointConfig,
    EnvVar,
    Health,
    Job,
    NetworkVolume,
    Pod,
    Template,
)
from monitor.runpod.parse import (
    NOT_JSON,
    EndpointItems,
    decode_json,
    error_message,
    graphql_errors,
    is_missing_job,
    is_not_found,
    parse_endpoint_config,
    parse_health,
    parse_job,
    parse_jobs,
    parse_myself,
    parse_retry_after,
)
from monitor.runpod.queries import MYSELF


def body(text: str) -> object:
    """A sample exactly as the spec quotes it, through the client's own decoder."""
    decoded = decode_json(text.encode())
    assert decoded is not NOT_JSON
    return decoded


# -- /health ---------------------------------------------------------------------------------


def test_health_2026_throttled_sample() -> None:
    """The 2026 sample with five throttled workers parses every count."""
    h = parse_health(body(
        '{"jobs":{"completed":241,"failed":16,"inProgress":0,"inQueue":0,"retried":0},'
        '"workers":{"idle":0,"initializing":0,"ready":0,"running":0,"throttled":5,"unhealthy":0}}'
    ))
    assert h == Health(completed=241, failed=16, throttled=5)


def test_health_2026_mixed_samples() -> None:
    """The other 2026 samples (workers first, spaces) and the php-sdk sample parse exactly."""
    assert parse_health(body(
        '{"workers": {"idle": 2, "initializing": 1, "ready": 2, "running": 1, "throttled": 1,'
        ' "unhealthy": 0}, "jobs": {"completed": 50, "failed": 8, "inProgress": 0, "inQueue": 0,'
        ' "retried": 0}}'
    )) == Health(completed=50, failed=8, idle=2, initializing=1, ready=2, running=1, throttled=1)
    assert parse_health(body(
        '{"workers": {"idle": 0, "initializing": 2, "ready": 0, "running": 3, "throttled": 0,'
        ' "unhealthy": 0}, "jobs": {"completed": 59, "failed": 8, "inProgress": 0, "inQueue": 0,'
        ' "retried": 0}}'
    )) == Health(completed=59, failed=8, initializing=2, running=3)
    assert parse_health(body(
        '{"jobs":{"completed":367,"failed":6,"inProgress":0,"inQueue":0,"retried":0},'
        '"workers":{"idle":1,"initializing":0,"ready":1,"running":0,"throttled":0,"unhealthy":0}}'
    )) == Health(completed=367, failed=6, idle=1, ready=1)


def test_health_old_sample_without_unhealthy() -> None:
    """The pre-2025 sample lacks `unhealthy`: it counts as 0."""
    h = parse_health(body(
        '{"jobs":{"completed":72,"failed":1,"inProgress":6,"inQueue":0,"retried":1},'
        '"workers":{"idle":4,"initializing":0,"ready":4,"running":1,"throttled":0}}'
    ))
    assert h == Health(completed=72, failed=1, in_progress=6, retried=1, idle=4, ready=4, running=1)
    assert h is not None
    assert h.unhealthy == 0


def test_health_abbreviated_docs_sample() -> None:
    """The abbreviated docs sample: the missing worker keys count as 0."""
    h = parse_health(body(
        '{"jobs":{"completed":1,"failed":5,"inProgress":0,"inQueue":2,"retried":0},'
        '"workers":{"idle":0,"running":0}}'
    ))
    assert h == Health(completed=1, failed=5, in_queue=2)


def test_health_extra_keys_and_integral_floats_tolerated() -> None:
    """Unknown keys are ignored and 3.0 reads as 3."""
    h = parse_health({"jobs": {"inQueue": 3.0, "queued": 9}, "workers": {"outdated": 1},
                      "extra": [1]})
    assert h == Health(in_queue=3)


def test_health_wrong_types_are_malformed() -> None:
    """Strings, booleans, negatives, fractions, non-objects and count-less bodies give None."""
    bad: object
    for bad in (
        {"jobs": {"inQueue": "3"}, "workers": {}},
        {"jobs": {"inQueue": True}, "workers": {}},
        {"jobs": {"inQueue": -1}, "workers": {}},
        {"jobs": {"inQueue": 1.5}, "workers": {}},
        {"jobs": [], "workers": {}},
        {"message": "Not Found"},
        {"status": "HEALTHY"},
        {},
        [],
        "ok",
        None,
        7,
    ):
        assert parse_health(bad) is None, bad


# -- /status and /requests ------------------------------------------------------------------


def test_status_in_progress_sample() -> None:
    """The real IN_PROGRESS sample: delay and worker, no execution time yet."""
    j = parse_job(body(
        '{"id": "870c8202-e1", "status": "IN_PROGRESS", "delayTime": 512,'
        ' "workerId": "ud65qmv9cw0clh"}'
    ))
    assert j == Job("870c8202-e1", "IN_PROGRESS", delay_ms=512, worker_id="ud65qmv9cw0clh")


def test_status_completed_samples() -> None:
    """The real and the docs COMPLETED samples: times in ms, the output's kind and size kept,
    its content not."""
    real = parse_job(body(
        '{"id": "a-e1", "status": "COMPLETED", "delayTime": 515, "executionTime": 7744,'
        ' "workerId": "ud65qmv9cw0clh", "output": {"image": "<base64>", "info": {"...": "..."}}}'
    ))
    size = len('{"image":"<base64>","info":{"...":"..."}}')
    assert real == Job("a-e1", "COMPLETED", 515, 7744, "ud65qmv9cw0clh",
                       output_kind="value", output_bytes=size)
    assert "base64" not in repr(real)
    assert parse_job(body(
        '{"delayTime": 31618, "executionTime": 1437,'
        ' "id": "60902e6c-08a1-426e-9cb9-9eaec90f5e2b-u1",'
        ' "output": {"input_tokens": 22, "output_tokens": 16, "text": ["Hello! ..."]},'
        ' "status": "COMPLETED"}'
    )) == Job("60902e6c-08a1-426e-9cb9-9eaec90f5e2b-u1", "COMPLETED", 31618, 1437,
              output_kind="value", output_bytes=60)


@pytest.mark.parametrize(
    ("extra", "kind"),
    [({}, "absent"), ({"output": None}, "null"), ({"output": ""}, "empty"),
     ({"output": []}, "empty"), ({"output": {}}, "empty"), ({"output": 0}, "value"),
     ({"output": False}, "value"), ({"output": "x"}, "value")],
)
def test_status_output_kinds(extra: dict[str, object], kind: str) -> None:
    """A COMPLETED job's output is absent, null, empty or a value (0 and false are values)."""
    j = parse_job({"id": "j", "status": "COMPLETED", "executionTime": 10, **extra})
    assert j is not None
    assert j.output_kind == kind
    assert (j.output_bytes is not None) == (kind == "value")


def test_failed_to_return_job_results_is_a_lost_output() -> None:
    """RunPod's 'Failed to return job results' marks the output lost, whatever the status;
    unfinished jobs and /requests items leave the output unknown."""
    for status in ("COMPLETED", "FAILED"):
        j = parse_job({"id": "j", "status": status, "output": {"x": 1},
                       "error": "Failed to return job results. | 400, message='Bad Request'"})
        assert j is not None
        assert (j.output_kind, j.output_bytes) == ("lost", None)
    running = parse_job({"id": "j", "status": "IN_PROGRESS", "delayTime": 5})
    assert running is not None
    assert running.output_kind is None
    listed = parse_jobs({"requests": [{"id": "j", "status": "COMPLETED", "output": None}]})
    assert listed is not None
    assert listed[0].output_kind is None


def test_status_in_queue_has_only_id_and_status() -> None:
    """An IN_QUEUE job carries only id and status."""
    j = parse_job(body('{"id": "eaebd6e7-6a92-4bb8-a911-f996ac5ea99d", "status": "IN_QUEUE"}'))
    assert j == Job("eaebd6e7-6a92-4bb8-a911-f996ac5ea99d", "IN_QUEUE")


def test_status_failed_with_error_samples() -> None:
    """A FAILED job keeps its error string, a JSON-encoded worker error verbatim."""
    assert parse_job(body(
        '{"id":"sync-1-u1","status":"FAILED","error":"Invalid image URL"}'
    )) == Job("sync-1-u1", "FAILED", error="Invalid image URL")
    encoded = json.dumps({"error_type": "<class 'RuntimeError'>", "error_message": "CUDA OOM",
                          "error_traceback": "Traceback ...", "hostname": "h", "worker_id": "w",
                          "runpod_version": "1.7.0"})
    j = parse_job({"id": "j2", "status": "FAILED", "delayTime": 100, "executionTime": 600000,
                   "error": encoded})
    assert j is not None
    assert j.error == encoded
    assert json.loads(j.error)["error_message"] == "CUDA OOM"
    timeout = parse_job({"id": "j3", "status": "FAILED", "error": "executionTimeout exceeded"})
    assert timeout is not None
    assert timeout.error == "executionTimeout exceeded"


def test_status_error_inside_output_is_kept() -> None:
    """A handler that returns {"error": ...} in its output still surfaces the error."""
    j = parse_job({"id": "j", "status": "FAILED", "output": {"error": "bad input"}})
    assert j is not None
    assert j.error == "bad input"


def test_status_malformed_bodies() -> None:
    """A job without id or status, or with a string time, is malformed."""
    bad: object
    for bad in ({"status": "COMPLETED"}, {"id": "x"}, {"id": "", "status": "IN_QUEUE"},
                {"id": "x", "status": "COMPLETED", "delayTime": "512"},
                {"id": 5, "status": "COMPLETED"}, {"id": "x", "status": "FAILED", "error": 3},
                {"error": "request does not exist"}):
        assert parse_job(bad) is None, bad


def test_requests_sample_and_null() -> None:
    """`/requests` lists jobs (no executionTime while in progress); null requests is empty."""
    jobs = parse_jobs(body(
        '{"requests": [{"id": "a", "status": "IN_PROGRESS", "delayTime": 1234, "workerId": "w1"},'
        ' {"id": "b", "status": "COMPLETED", "delayTime": 512, "executionTime": 7744,'
        ' "workerId": "w2"}]}'
    ))
    assert jobs == (
        Job("a", "IN_PROGRESS", 1234, None, "w1"),
        Job("b", "COMPLETED", 512, 7744, "w2"),
    )
    assert parse_jobs(body('{"requests": null}')) == ()
    assert parse_jobs({"requests": []}) == ()


def test_requests_malformed() -> None:
    """A missing `requests` key, a non-list, or one bad item make the whole body malformed."""
    bad: object
    for bad in ({}, {"requests": {}}, [], {"requests": [{"id": "a"}]},
                {"requests": [{"id": "a", "status": "IN_QUEUE"}, 3]}):
        assert parse_jobs(bad) is None, bad


def test_missing_job_and_not_found_markers() -> None:
    """The purged-job and no-balance bodies are recognised, case and spaces aside."""
    assert is_missing_job({"error": "request does not exist"})
    assert is_missing_job({"error": " Request does not exist "})
    assert not is_missing_job({"error": "Invalid image URL"})
    assert is_not_found({"message": "Not Found"})
    assert not is_not_found({"message": "Bad"})
    assert not is_not_found("Not Found")


# -- GraphQL myself -------------------------------------------------------------------------


def test_myself_list_endpoints_docs_sample() -> None:
    """The docs list-endpoints sample: endpoints parsed, no balance so no Account."""
    m = parse_myself(body(
        '{"data": {"myself": {"endpoints": [{"id": "i02xupws21hp6i", "name": "My Endpoint",'
        ' "gpuIds": "AMPERE_16", "idleTimeout": 5, "locations": "US", "networkVolumeId": null,'
        ' "scalerType": "QUEUE_DELAY", "scalerValue": 4, "templateId": "YOUR_TEMPLATE_ID",'
        ' "workersMax": 5, "workersMin": 0, "pods": []}], "serverlessDiscount": null}}}'
    ))
    assert m is not None
    assert m.account is None
    assert m.errors == ()
    assert m.endpoints_listed
    assert m.endpoints == (EndpointConfig(
        id="i02xupws21hp6i", name="My Endpoint", gpu_ids="AMPERE_16", network_volume_id=None,
        workers_min=0, workers_max=5, idle_timeout=5, scaler_type="QUEUE_DELAY",
        scaler_value=4, locations="US", template=None,
    ),)
    assert m.endpoints[0].gpu_tiers == ("AMPERE_16",)


def test_myself_runpodctl_sample_has_account() -> None:
    """The runpodctl `myself` scalars give an Account; no endpoints key is an unknown list."""
    m = parse_myself({"data": {"myself": body(
        '{"clientBalance": 435.85, "currentSpendPerHr": 0.001, "email": "user@example.com",'
        ' "id": "user_abc123", "notifyLowBalance": true, "notifyPodsGeneral": true,'
        ' "notifyPodsStale": true, "spendLimit": 180}'
    )}})
    assert m is not None
    assert m.account == Account(balance=435.85, spend_per_hr=0.001, spend_limit=180.0)
    assert m.endpoints == ()
    assert not m.endpoints_listed


def test_myself_full_shape() -> None:
    """Every field the MYSELF query selects lands in the rules' types."""
    m = parse_myself({"data": {"myself": {
        "id": "u", "clientBalance": -1.5, "currentSpendPerHr": 0.047, "spendLimit": None,
        "underBalance": True, "minBalance": 0, "maxServerlessConcurrency": 5,
        "endpoints": [{
            "id": "ep1", "name": "sdxl", "gpuIds": None, "workersMin": 1, "workersMax": 3,
            "workersStandby": 1, "idleTimeout": 5, "scalerType": "REQUEST_COUNT",
            "scalerValue": 2, "networkVolumeId": "grvtso8ftn", "locations": None,
            "templateId": "t1", "version": 4,
            "template": {"id": "t1", "name": "sdxl-tpl", "imageName": "me/sdxl:1",
                         "dockerArgs": "", "containerDiskInGb": 20,
                         "env": [{"key": "MODEL", "value": "sdxl"},
                                 {"key": "EMPTY", "value": None}]},
        }, {"id": "ep2", "template": {"id": None, "env": None}, "templateId": "t2"}],
        "networkVolumes": [{"id": "grvtso8ftn", "name": "image-toolbox-models", "size": 50,
                            "dataCenterId": "EU-RO-1"}],
        "pods": [{"id": "p1", "name": "dev", "desiredStatus": "RUNNING", "costPerHr": 0.44,
                  "gpuCount": 1}],
    }}})
    assert m is not None
    assert m.account == Account(
        balance=-1.5, spend_per_hr=0.047, spend_limit=None,
        network_volumes=(NetworkVolume("grvtso8ftn", "image-toolbox-models", 50.0, "EU-RO-1"),),
        pods=(Pod("p1", "dev", "RUNNING", 0.44),),
    )
    ep1, ep2 = m.endpoints
    assert ep1.gpu_ids == ""
    assert ep1.workers_standby == 1
    assert ep1.network_volume_id == "grvtso8ftn"
    assert ep1.template == Template("t1", "sdxl-tpl", "me/sdxl:1", "", 20,
                                    (EnvVar("MODEL", "sdxl"), EnvVar("EMPTY", "")))
    assert ep2.template == Template("t2")


def _myself_body(*items: dict[str, object]) -> dict[str, object]:
    return {"data": {"myself": {"clientBalance": 1.0, "currentSpendPerHr": 0.0,
                                "endpoints": [json.loads(json.dumps(i)) for i in items]}}}


def test_unchanged_endpoint_items_reuse_the_last_config() -> None:
    """An item equal to the last answer's is not parsed again: the same config object comes
    back; a changed item is parsed afresh, a malformed one still fails the whole answer."""
    a = {"id": "ep1", "name": "a", "workersMax": 2, "template": {"id": "t", "env": []}}
    b = {"id": "ep2", "name": "b", "workersMax": 1}
    items = EndpointItems()
    first = parse_myself(_myself_body(a, b), items)
    second = parse_myself(_myself_body(a, {**b, "workersMax": 3}), items)
    assert first is not None
    assert second is not None
    assert second.endpoints[0] is first.endpoints[0]
    assert second.endpoints[1] is not first.endpoints[1]
    assert second.endpoints[1].workers_max == 3
    fresh = parse_myself(_myself_body(a, {**b, "workersMax": 3}))
    assert fresh is not None
    assert second.endpoints == fresh.endpoints
    assert parse_myself(_myself_body(a, {**b, "workersMax": "3"}), items) is None
    # a failed answer leaves the last good one as the reference
    third = parse_myself(_myself_body(a, {**b, "workersMax": 3}), items)
    assert third is not None
    assert third.endpoints[1] is second.endpoints[1]


def test_myself_partial_data_with_errors() -> None:
    """A restricted key: data for permitted fields plus errors → Myself carrying the messages."""
    m = parse_myself({
        "errors": [{"message": "You do not have permission to read clientBalance",
                    "path": ["myself", "clientBalance"]}, {"message": "x" * 500}],
        "data": {"myself": {"id": "u", "clientBalance": None, "currentSpendPerHr": None,
                            "endpoints": [{"id": "ep1", "workersMax": 2}],
                            "networkVolumes": None, "pods": None}},
    })
    assert m is not None
    assert m.account is None
    assert m.endpoints == (EndpointConfig("ep1", workers_max=2),)
    assert m.errors[0] == "You do not have permission to read clientBalance"
    assert len(m.errors[1]) == 200


def test_myself_errors_without_data() -> None:
    """Errors and no usable `myself` give None, and the first message is readable."""
    b = body('{"errors":[{"message":"x"}], "data": {"myself": null}}')
    assert parse_myself(b) is None
    assert graphql_errors(b) == ("x",)
    assert error_message(b) == "x"
    assert parse_myself({"errors": [{"message": "x"}]}) is None


def test_myself_malformed() -> None:
    """Wrong types anywhere in `myself` make it malformed."""
    bad: object
    for bad in (
        {"data": {"myself": {"clientBalance": "12"}}},
        {"data": {"myself": {"clientBalance": True, "currentSpendPerHr": 0}}},
        {"data": {"myself": {"endpoints": {"id": "x"}}}},
        {"data": {"myself": {"endpoints": [{"name": "no id"}]}}},
        {"data": {"myself": {"endpoints": [{"id": "x", "workersMax": -1}]}}},
        {"data": {"myself": {"endpoints": [{"id": "x", "template": {"env": [{"value": "v"}]}}]}}},
        {"data": {"myself": {"pods": [{"id": "p", "costPerHr": "0.4"}]}}},
        {"data": []},
        "myself",
    ):
        assert parse_myself(bad) is None, bad
    assert parse_endpoint_config({"id": "x", "gpuIds": 16}) is None


def test_query_selects_what_the_parser_reads() -> None:
    """The MYSELF query names every field the parser reads."""
    for field in ("clientBalance", "currentSpendPerHr", "spendLimit", "underBalance",
                  "minBalance", "maxServerlessConcurrency", "workersStandby", "scalerValue",
                  "networkVolumeId", "templateId", "containerDiskInGb", "env { key value }",
                  "networkVolumes { id name size dataCenterId }",
                  "pods { id name desiredStatus costPerHr gpuCount }"):
        assert field in MYSELF, field


# -- helpers ---------------------------------------------------------------------------------


def test_error_message_shapes() -> None:
    """problem+json detail, `{"message"}` and `{"error"}` bodies yield their text."""
    assert error_message({"title": "Unauthorized", "status": 401,
                          "detail": "missing bearer token"}) == "missing bearer token"
    assert error_message({"message": "Not Found"}) == "Not Found"
    assert error_message({"error": "Something went wrong."}) == "Something went wrong."
    assert error_message("<html>") == ""
    assert error_message(None) == ""


def test_retry_after_delta_and_date() -> None:
    """Retry-After parses as delta-seconds or an HTTP-date; garbage gives None."""
    now = 1_800_000_000.0
    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after("-4", now) == 0.0
    date = format_datetime(datetime.fromtimestamp(now + 30, UTC), usegmt=True)
    assert parse_retry_after(date, now) == 30.0
    past = format_datetime(datetime.fromtimestamp(now - 30, UTC), usegmt=True)
    assert parse_retry_after(past, now) == 0.0
    bad: object
    for bad in (None, "", "soon", "nan", "inf", "Mon, 99 Foo 2026 99:99:99 GMT"):
        assert parse_retry_after(bad, now) is None, bad


def test_decode_json_rejects_non_json() -> None:
    """HTML, NaN, invalid UTF-8 and deep nesting are not JSON; null is."""
    assert decode_json(b"<html>502</html>") is NOT_JSON
    assert decode_json(b'{"a": NaN}') is NOT_JSON
    assert decode_json(b"\xff\xfe\xfa") is NOT_JSON
    assert decode_json(b"[" * 100_000) is NOT_JSON
    assert decode_json(b"null") is None


# -- never raise -----------------------------------------------------------------------------

# Dictionary keys are mostly the real ones, so the fuzzing reaches the inner fields too.
keys = st.sampled_from([
    "jobs", "workers", "requests", "data", "myself", "errors", "message", "error", "id",
    "status", "delayTime", "executionTime", "workerId", "output", "endpoints", "template",
    "env", "key", "value", "pods", "networkVolumes", "clientBalance", "currentSpendPerHr",
    "inQueue", "idle", "size", "costPerHr", "containerDiskInGb", "gpuIds",
]) | st.text(max_size=6)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=5),
    max_leaves=20,
)
PARSERS = (parse_health, parse_job, parse_jobs, parse_myself, parse_endpoint_config,
           graphql_errors, error_message, is_missing_job, is_not_found)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_parsers_never_raise_on_any_json(value: object) -> None:
    """No parser raises on arbitrary JSON values, including near-miss shapes."""
    for parser in PARSERS:
        parser(value)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_parsers_never_raise_on_any_bytes(raw: bytes) -> None:
    """Arbitrary bytes go through decode_json and every parser without raising."""
    decoded = decode_json(raw)
    for parser in PARSERS:
        parser(decoded)
