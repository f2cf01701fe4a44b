"""A diagnosis's worker log lines on every surface, each within its own bounds: the status
page (collapsed), Slack (a short excerpt, within Block Kit's limits and the 160-character
lock screen), Alertmanager (`log_excerpt`), the console timeline and replay JSON."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from alertkit import T0
from rulekit import EID, TH, Health, config, endpoint_history, template
from test_alerts_blocks import check_body, message

from model.history import History
from model.observation import LogLine, WorkerLogs
from monitor.alerts.alertmanager import LOG_EXCERPT_LIMIT, alert_json
from monitor.alerts.message import LOCK_SCREEN_LIMIT, incident_block
from monitor.alerts.slack import LOG_EXCERPT_LINES, render
from monitor.commands.replay import incident_json
from monitor.http.status_page import _diagnosis
from monitor.state.incidents import Incident
from rules.diagnosis import Diagnosis
from rules.engine import evaluate
from rules.log_evidence import EVIDENCE_KEY

CFG = config(template=template(env=[("HF_HOME", "/runpod-volume/hf")]))


def diagnosed(*texts: str) -> Diagnosis:
    """workers_unhealthy with a snapshot of `texts` read this cycle."""
    h = endpoint_history([Health(unhealthy=1, in_queue=2)] * 3, config=CFG)
    snap = WorkerLogs("wrk1", tuple(LogLine(T0 + i, "system", t) for i, t in enumerate(texts)))
    last = h.observations[-1]
    s = replace(last.endpoints[EID], logs=(snap,))
    h = History((*h.observations[:-1], replace(last, endpoints={EID: s})), h.memory)
    (d,) = [d for d in evaluate(h, TH) if d.code == "workers_unhealthy"]
    return d


LONG = "x" * 280
OOM = diagnosed(*["Killed", "worker exited with exit code 137 " + LONG] * 12)


def test_the_page_shows_the_lines_collapsed_and_escaped() -> None:
    d = diagnosed("<b>Killed</b>", "Killed", "worker exited with exit code 137")
    html = _diagnosis(Incident(d, T0, 1), T0 + 60)
    assert '<details class="logs"><summary>Worker logs: the worker was OOM-killed (exit 137) ' \
        'once</summary>' in html  # collapsed: no `open`
    assert "system wrk1: Killed" in html
    assert "<b>Killed</b>" not in html
    assert "worker_logs" not in html  # not dumped as an evidence row


def test_slack_gets_a_short_excerpt_within_its_limits() -> None:
    body: dict[str, Any] = render(message("firing", [OOM]))
    check_body(body)
    assert len(body["text"]) <= LOCK_SCREEN_LIMIT
    assert "OOM-killed" in body["text"]  # the cause leads the summary the lock screen shows
    (logs,) = [b["text"]["text"] for b in body["blocks"]
               if b["type"] == "section" and "text" in b
               and b["text"]["text"].startswith("*Worker logs")]
    code = logs.split("```")[1]
    assert len(code.splitlines()) == LOG_EXCERPT_LINES
    assert all(len(line) <= 200 for line in code.splitlines())
    assert EVIDENCE_KEY not in json.dumps(body)  # not a 2000-character JSON field


def test_alertmanager_annotation_is_bounded() -> None:
    a = alert_json(Incident(OOM, T0, 1), T0 + 120)
    excerpt = a["annotations"]["log_excerpt"]
    assert 0 < len(excerpt) <= LOG_EXCERPT_LIMIT
    assert excerpt.splitlines()[0] == "00:00:00Z system wrk1: Killed"
    plain = alert_json(Incident(diagnosed(), T0, 1), T0 + 120)  # read, no line
    assert "log_excerpt" not in plain["annotations"]


def test_console_and_replay_json() -> None:
    block = "\n".join(incident_block(OOM, "RAISED"))
    assert "    logs  " in block
    assert "worker_logs=" not in block
    j = incident_json(Incident(OOM, T0, 1))
    assert j["evidence"][EVIDENCE_KEY]["signature"] == "oom_killed"
    assert j["evidence"]["log_signature_count"] == 12
    json.dumps(j)  # JSON as it is
