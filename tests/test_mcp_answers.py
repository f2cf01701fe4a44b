"""The MCP tools' answer shaping and the daemon's history routes' pure parts: bounded,
masked, folded; tests/test_mcp.py drives them end to end."""

from __future__ import annotations

import json
from typing import Any

from model.observation import (
    EndpointConfig,
    EndpointSample,
    EnvVar,
    Health,
    Observation,
    Template,
)
from monitor.http.history_api import MAX_POINTS, config_json, history_points, incidents_report
from monitor.logs import Redactor
from monitor.mcp import answers
from monitor.state.episodes import Episode

GHP = "ghp_" + "Zt4Rk8Wq2Lm6Np0Xv3Bc7Hd1Jf5Gs9Ky2Ua8"
KEY = "plain-key-not-token-shaped-42"
T0 = 1_800_000_000.0


def _sample(eid: str, throttled: int = 0, in_queue: int = 0) -> EndpointSample:
    return EndpointSample(eid, "ok", 200, Health(in_queue=in_queue, throttled=throttled, idle=1))


def _obs(cycle: int, sample: EndpointSample) -> Observation:
    return Observation(cycle, T0 + cycle, "ok", endpoints={sample.endpoint_id: sample})


def test_history_points_fold_to_the_cap_and_keep_a_spike() -> None:
    """200 cycles become at most MAX_POINTS points covering every cycle, and a one-cycle
    spike of throttled workers and queue survives the folding."""
    samples = []
    for c in range(200):
        s = _sample("e", throttled=3 if c == 117 else 0, in_queue=9 if c == 117 else 1)
        samples.append((_obs(c, s), s))
    points = history_points(samples)
    assert len(points) <= MAX_POINTS
    assert sum(p["cycles"] for p in points) == 200
    spiked = [p for p in points if p["workers"].get("throttled")]
    assert len(spiked) == 1
    assert spiked[0]["workers"]["throttled"] == 3
    assert spiked[0]["in_queue"] == 9
    assert all("throttled" not in p["workers"] for p in points if p is not spiked[0])
    assert points[-1]["t"].startswith("2027-01-15T08:03")  # the last cycle's time


def test_history_points_count_unknown_cycles() -> None:
    down = EndpointSample("e", "timeout")
    [point] = history_points([(_obs(0, down), down)])
    assert point["cycles"] == 1
    assert point["unknown"] == 1
    assert point["outcome"] == "timeout"
    assert "workers" not in point  # nothing known: no counts, not zeros


def test_config_json_masks_docker_args_and_leaves_env_values_out() -> None:
    config = EndpointConfig("e", "leaky", template=Template(
        "tpl", "t", "acme/w:1", docker_args=f"git clone https://u:{GHP}@github.com/a/b",
        env=(EnvVar("GITHUB_TOKEN", GHP), EnvVar("HF_HOME", "/v"))))
    out = config_json(config)
    assert out is not None
    text = json.dumps(out)
    assert GHP[-8:] not in text
    assert out["template"]["env_keys"] == ["GITHUB_TOKEN", "HF_HOME"]
    assert "/v" not in json.dumps(out["template"])
    assert "ghp_****" in out["template"]["docker_args"]


def _episode(code: str, since: float, ended: float | None = None,
             escalated: float | None = None) -> Episode:
    return Episode(code, "e", "ep", f"{code} summary", "warning",
                   "critical" if escalated else "warning", since, 1, escalated, ended,
                   None if ended is None else 2)


def test_incidents_report_keeps_the_window() -> None:
    """Active ones always; resolved ones only when they ended in the window; newest first;
    an escalation in the window is an event."""
    now = T0 + 10_000
    episodes = [
        _episode("crash_loop", now - 7200, escalated=now - 100),
        _episode("queue_backlog", now - 600, ended=now - 300),
        _episode("job_failures", now - 9000, ended=now - 5000),  # before the window
    ]
    out = incidents_report(episodes, now, 3600)
    rows = out["incidents"]
    assert [(r["code"], r["state"]) for r in rows] == [
        ("crash_loop", "active"), ("queue_backlog", "resolved")]
    assert rows[1]["duration_s"] == 300.0
    assert rows[1]["raised_in_window"] is True
    assert rows[0]["raised_in_window"] is False
    events = answers.incident_events(out, "ep", None)
    assert [(e["event"], e["code"]) for e in events["events"]] == [
        ("escalated", "crash_loop"), ("resolved", "queue_backlog"), ("raised", "queue_backlog")]
    assert events["events"][0]["from_severity"] == "warning"
    assert events["active_now"] == 1


def test_finish_masks_known_secrets_and_token_shapes() -> None:
    out = answers.finish({"a": f"key {KEY}", "b": [f"token {GHP}"]}, Redactor([KEY]))
    text = json.dumps(out)
    assert KEY not in text
    assert GHP[-8:] not in text
    assert "ghp_****" in text
    assert out["truncated"] is False


def test_finish_bounds_the_answer_and_says_what_went() -> None:
    big: dict[str, Any] = {"diagnoses": [{"summary": "x" * 500, "n": i} for i in range(400)],
                           "note": "y" * 10_000}
    out = answers.finish(big, Redactor(), max_chars=24_000)
    assert len(json.dumps(out, separators=(",", ":"))) <= 24_000
    assert out["truncated"] is True
    kept = len(out["diagnoses"])
    assert 0 < kept < 400
    assert out["omitted"] == {"diagnoses": 400 - kept}
    assert "narrow" in out["hint"]
    assert [d["n"] for d in out["diagnoses"]] == list(range(kept))  # the first ones stay
    assert out["note"].endswith(answers.CUT)
    assert len(out["note"]) == answers.MAX_STRING + len(answers.CUT)


def test_list_diagnoses_filters_by_endpoint_name_and_severity() -> None:
    ds = [
        {"code": "crash_loop", "severity": "critical", "endpoint_id": "e1",
         "endpoint_name": "Img-API"},
        {"code": "queue_backlog", "severity": "warning", "endpoint_id": "e1",
         "endpoint_name": "Img-API"},
        {"code": "low_balance", "severity": "warning", "endpoint_id": None,
         "endpoint_name": None},
    ]
    assert [d["code"] for d in answers.list_diagnoses(ds, "img-api", None)["diagnoses"]] == [
        "crash_loop", "queue_backlog"]
    assert [d["code"] for d in answers.list_diagnoses(ds, None, "critical")["diagnoses"]] == [
        "crash_loop"]
    assert len(answers.list_diagnoses(ds, None, "info")["diagnoses"]) == 3
    assert answers.resolve_endpoint([{"endpoint_id": "e1", "endpoint_name": "Img-API"}],
                                    "IMG-api") == "e1"
    assert answers.resolve_endpoint([{"endpoint_id": "e1", "endpoint_name": "x"}], "y") is None


# ---------------------------------------------------------------- the server in process


async def test_a_daemon_that_is_down_is_an_error_saying_what_to_do() -> None:
    """Every daemon-reading tool, pointed at a closed port, answers an error (not a crash)
    that names the URL and the command to start; the credentials are not in it."""
    from daemonkit import free_port
    from mcp import Client

    from monitor.config import settings_from_dict
    from monitor.mcp.daemon_api import Target
    from monitor.mcp.server import build_server

    settings = settings_from_dict({}, env={})
    url = f"http://127.0.0.1:{free_port()}"
    server = build_server(settings, Target(url, ("u", "Pw-0123456789"), "tok-0123456789abcdef"))
    async with Client(server) as client:
        for tool, args in (("list_diagnoses", {}), ("explain_endpoint", {"endpoint": "x"}),
                           ("incident_history", {}), ("silence", {"code": "crash_loop"})):
            result = await client.call_tool(tool, args)
            assert result.is_error, tool
            text = " ".join(getattr(c, "text", "") for c in result.content)
            assert url in text, (tool, text)
            assert "runpod-monitor run" in text, (tool, text)
            assert "Pw-0123456789" not in text
            assert "tok-0123456789abcdef" not in text
