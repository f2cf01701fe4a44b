"""What a person sees in a terminal: `demo` under a pseudo-terminal, and the console and
JSON renderers of monitor/logs.py."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pty
import re
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
import yaml
from daemonkit import base_env, free_port
from remedykit import curls

from monitor import logs
from monitor.alerts.message import shell_lines
from rules.diagnosis import Diagnosis
from rules.remedies import graphql_curl, rest_curl

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "monitor" / "data" / "demo.yaml"
LINE_LIMIT = 300  # a terminal screen's worth
HEAD = re.compile(r"^\d\d:\d\d:\d\d  cycle \d+ +(RAISED|ESCALATED) +(\w+) +(\w+)  (.*)$")


def _blocks(lines: list[str]) -> Iterator[tuple[str, str, str, list[str]]]:
    """(change, code, where, body lines) of every incident block in the output."""
    for i, line in enumerate(lines):
        m = HEAD.match(line)
        if not m:
            continue
        body = []
        for follow in lines[i + 1:]:
            if not follow.startswith("    "):
                break
            body.append(follow)
        yield m.group(1), m.group(3), m.group(4), body


def _commands(body: list[str]) -> list[list[str]]:
    """The block's commands as a shell splits them, continuation lines joined."""
    text = "\n".join(line[10:] for line in body)
    return curls(text.replace(" \\\n", " "))


@pytest.mark.integration
def test_demo_on_a_pseudo_terminal_speaks_to_a_person() -> None:
    """`runpod-monitor demo` on a TTY for 36 s: no line is longer than 300 characters, no
    line is JSON, and each incident raised so far is a block naming its code, its endpoint
    and a fix whose commands parse as a shell parses them, with the key from the env."""
    port = free_port()
    env = base_env()
    pid, fd = pty.fork()
    if pid == 0:  # the child: the demo, its stdout and stderr the pseudo-terminal
        argv = [sys.executable, "-m", "monitor", "demo", "--port", str(port)]
        os.execve(sys.executable, argv, env)  # noqa: S606 - a fixed argv, no shell
    out = bytearray()
    deadline = time.monotonic() + 36
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    out += os.read(fd, 65536)
                except OSError:  # the child is gone
                    break
        os.kill(pid, signal.SIGINT)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)
    text = out.decode("utf-8", "replace").replace("\r\n", "\n")
    lines = text.split("\n")

    too_long = [len(line) for line in lines if len(line) > LINE_LIMIT]
    assert not too_long, too_long
    assert not [line for line in lines if line.lstrip().startswith("{\"")], "JSON on a TTY"
    assert "Ctrl-C stops both." in text

    blocks = list(_blocks(lines))
    raised = {code for change, code, _, _ in blocks if change == "RAISED"}
    # by 36 s the demo has raised these (cycles 1-17 of 2 s)
    assert {"secret_in_template", "no_gpu_capacity", "crash_loop", "low_balance",
            "workers_unhealthy"} <= raised, text[-3000:]
    endpoints = {e["id"] for e in yaml.safe_load(DEMO.read_text())["endpoints"]}
    for _, code, where, body in blocks:
        assert where == "the account" or any(f"({eid})" == where.split()[-1]
                                             for eid in endpoints), where
        labels = [line[4:10].strip() for line in body if line[4:10].strip()]
        # the worker's own log lines, when the diagnosis has them, between why and fix
        assert labels in (["what", "why", "fix"], ["what", "why", "logs", "fix"]), (code, body)
        for argv in _commands(body):
            assert argv[0] == "curl"
            assert "Authorization: Bearer $RUNPOD_API_KEY" in argv, argv
            if "-d" in argv:
                body = json.loads(argv[argv.index("-d") + 1])
                if "https://api.runpod.io/graphql" in argv:
                    assert body["query"]
                else:  # REST v2, the default control plane: a method and a JSON object
                    assert argv[argv.index("-X") + 1] in ("PATCH", "POST"), argv
                    assert isinstance(body, dict), argv
                    assert body, argv
    # every diagnosis with a command to paste quotes it once
    fixes = {code: _commands(body) for _, code, _, body in blocks}
    # REST v2 (the default) with the live catalog read: widen the GPU pools to the tiers
    # with stock where the endpoint runs, then the catalog to check again
    capacity = fixes["no_gpu_capacity"]
    assert [argv[argv.index("-X") + 1] if "-X" in argv else "GET" for argv in capacity] == [
        "PATCH", "GET"], capacity
    assert "/v2/serverless/" in capacity[0][4]
    assert json.loads(capacity[0][capacity[0].index("-d") + 1])["gpu"]["pools"]
    assert "/v2/catalog/gpus" in capacity[1][2]
    resolved = [line for line in lines if "RESOLVED" in line]
    assert all(len(line) < 160 for line in resolved)
    # the demo's template token is never shown, only its masked prefix
    assert "hf_DemoOnlyNotARealToken" not in text
    assert "hf_****" in text


def _capture(fmt: str, *events: tuple[str, dict[str, object]]) -> str:
    """Configure logging with `fmt`, log `events`, return what was written."""
    buf = io.StringIO()
    stderr, sys.stderr = sys.stderr, buf
    try:
        logs.configure("info", fmt, secrets=["Sup3rSecretKeyValue"])
        log = structlog.get_logger("test")
        for name, fields in events:
            log.info(name, **fields)
    finally:
        sys.stderr = stderr
        logs.configure("info", "json")
    return buf.getvalue()


DIAG = Diagnosis(
    "crash_loop", "endpoint", "critical",
    "whisper restarts (key Sup3rSecretKeyValue seen in its logs).",
    "1. Read the logs.\n2. Roll a release:\n   "
    + graphql_curl('mutation { saveEndpoint(input: { id: "ep1", workersMax: 2 }) { id } }')
    + "\n3. Then purge the queue: " + rest_curl("ep1", "purge-queue"),
    {"in_queue": 3, "stalled_s": 12.000016}, "ep1", "whisper",
)


def test_console_draws_an_incident_as_a_block_with_the_secret_scrubbed() -> None:
    """An `incident` event on the console is a block: head, what, why, fix with each
    command whole; the redactor scrubs it as it scrubs JSON."""
    out = _capture("console", ("incident", {
        "change": "raised", "code": "crash_loop", "endpoint_id": "ep1", "cycle": 10,
        "t": 0.0, "diagnosis": DIAG}))
    lines = out.splitlines()
    assert "00:00:00  cycle 10   RAISED    critical crash_loop  whisper (ep1)" in lines
    assert "Sup3rSecretKeyValue" not in out
    assert "****" in out
    assert "stalled_s=12" in out
    assert "12.000016" not in out
    # prose wraps at 100 columns; a command breaks only between its options
    assert max(len(line) for line in lines if "curl" not in line and " -" not in line) <= 100
    body = [line for line in lines if line.startswith("    ")]
    assert [argv[:3] for argv in _commands(body)] == [
        ["curl", "-s", "https://api.runpod.io/graphql"],
        ["curl", "-s", "-X"],
    ]


def test_json_log_keeps_short_fields_and_drops_the_diagnosis() -> None:
    """Off a TTY an `incident` event is one JSON line of ids; the Diagnosis is not in it."""
    out = _capture("json", ("incident", {
        "change": "raised", "code": "crash_loop", "endpoint_id": "ep1", "cycle": 10,
        "t": 0.0, "diagnosis": DIAG}))
    (line,) = out.splitlines()
    event = json.loads(line)
    assert (event["event"], event["code"]) == ("incident", "crash_loop")
    assert "diagnosis" not in event
    assert "Roll a release" not in line
    assert len(line) < 300


def test_console_shows_cycles_worth_reading() -> None:
    """A cycle with news or failed calls is one line; quiet cycles are shown once every
    QUIET_EVERY_S; each alert message is one line."""
    quiet = {"endpoints": 3, "calls": 6, "failures": 0, "raised": [], "resolved": [],
             "active": 2}
    out = _capture(
        "console",
        ("cycle", {**quiet, "cycle": 1, "t": 0.0}),
        ("cycle", {**quiet, "cycle": 2, "t": 2.0}),
        ("cycle", {**quiet, "cycle": 3, "t": 4.0, "raised": ["crash_loop"], "active": 3}),
        ("cycle", {**quiet, "cycle": 4, "t": 6.0, "failures": 2}),
        ("cycle", {**quiet, "cycle": 5, "t": 8.0}),
        ("cycle", {**quiet, "cycle": 6, "t": 6.0 + logs.QUIET_EVERY_S}),
        ("alert", {"text": "[CRITICAL] 2 problems on whisper (ep1): a, b", "batch": "x"}),
        ("alert", {"text": "[CRITICAL] 2 problems on whisper (ep1): a, b", "batch": "x"}),
    )
    lines = out.splitlines()
    assert [line.split()[2] for line in lines if " cycle " in line] == ["1", "3", "4", "6"]
    assert "raised crash_loop" in out
    assert "2 failed" in out
    assert sum("alert     [CRITICAL]" in line for line in lines) == 1


def test_shell_lines_paste_as_the_same_command() -> None:
    """A command split over ' \\' continuations is, to a shell, the command it was."""
    long = graphql_curl(
        'mutation { saveEndpoint(input: { id: "demosdxl0001", name: "sdxl images", gpuIds: '
        '"AMPERE_48,ADA_48_PRO,AMPERE_80,ADA_80_PRO", workersMax: 2 }) { id } }')
    for command in (long, rest_curl("ep1", "purge-queue"), "curl -s 'a b' \"c d\" -H x"):
        lines = shell_lines(command, 60)
        assert all(line.endswith(" \\") for line in lines[:-1])
        assert shlex.split("\n".join(lines).replace("\\\n", "")) == shlex.split(command)
    lines = shell_lines(long, 60)
    assert [line.split()[0] for line in lines] == ["curl", "-H", "-H", "-d"]
    assert all(len(line) <= 62 for line in lines[:-1])  # the -d JSON is one word: whole


@pytest.mark.integration
def test_demo_off_a_tty_logs_json_and_log_format_overrides() -> None:
    """`demo` piped (no TTY) logs JSON; `--log-format console` gives the console anyway."""
    cmd = [sys.executable, "-m", "monitor", "demo", "--port"]
    outs = {}
    # each run until its first cycle is logged (within 30 s: a loaded machine starts slowly)
    for name, extra, shown in (("auto", [], '"event": "cycle"'),
                               ("console", ["--log-format", "console"], "RAISED")):
        proc = subprocess.Popen([*cmd, str(free_port()), *extra], env=base_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        lines: list[str] = []
        reader = threading.Thread(target=lambda f=proc.stdout, out=lines: out.extend(f),
                                  daemon=True)
        reader.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(shown in line for line in lines[:]):
            time.sleep(0.1)
        time.sleep(0.5)  # the rest of the cycle's lines
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
        reader.join(timeout=5)
        outs[name] = "".join(lines)
    assert '"event": "cycle"' in outs["auto"]
    assert "RAISED" not in outs["auto"]
    assert "RAISED    critical secret_in_template  llm-chat (demollm00003)" in outs["console"]
    assert '"event"' not in outs["console"]


def test_console_escalated_is_a_block_and_resolved_one_line() -> None:
    """An escalated incident is drawn again as a block; a resolved one is one line that
    says how long it lasted."""
    base = {"code": "crash_loop", "endpoint_id": "ep1", "cycle": 12, "t": 60.0,
            "diagnosis": DIAG}
    out = _capture("console", ("incident", {**base, "change": "escalated"}),
                   ("incident", {**base, "change": "resolved", "lasted_s": 600.0}))
    lines = out.splitlines()
    assert "00:01:00  cycle 12   ESCALATED critical crash_loop  whisper (ep1)" in lines
    assert lines[-1] == ("00:01:00  cycle 12   RESOLVED  critical crash_loop  whisper (ep1)"
                         "  (after 10 min)")
    assert sum(line.startswith("    fix") for line in lines) == 1
