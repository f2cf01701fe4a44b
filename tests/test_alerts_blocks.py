"""The Slack messages are valid Block Kit within Slack's limits, whatever the diagnosis."""

from __future__ import annotations

import re
from typing import Any

import pytest
from alertkit import T0, diag
from remedykit import queries
from slack_sdk.models.blocks import Block

from monitor.alerts.message import LOCK_SCREEN_LIMIT, TRUNCATED, message_text
from monitor.alerts.model import Message, Notification
from monitor.alerts.slack import (
    FIELD_LIMIT,
    HEADER_LIMIT,
    MAX_BLOCKS,
    SECTION_TEXT_LIMIT,
    remedy_mrkdwn,
    render,
)
from monitor.state.incidents import Incident
from rules.diagnosis import Diagnosis

ALLOWED = {"header", "context", "section", "divider"}


def message(kind: str, diagnoses: list[Diagnosis], t: float = T0 + 600) -> Message:
    notes = [
        Notification(kind, Incident(d, T0, 1, resolved_at=t if kind == "resolved" else None),
                     t, 21, n=1 if kind == "reminder" else 0)
        for d in diagnoses
    ]
    text = message_text(kind, notes, t)
    return Message(kind, "slack", "b1", t, 21, tuple(notes), text)


def all_blocks(body: dict[str, Any]) -> list[dict[str, Any]]:
    return list(body.get("blocks", [])) + [
        b for a in body.get("attachments", []) for b in a["blocks"]
    ]


def check_body(body: dict[str, Any]) -> None:
    """Slack's rules for one message body; every block parses with slack_sdk."""
    assert isinstance(body["text"], str)
    assert body["text"].strip()
    assert len(body["text"]) <= 4000
    blocks = all_blocks(body)
    assert 0 < len(blocks) <= MAX_BLOCKS
    for raw in blocks:
        assert raw["type"] in ALLOWED, raw["type"]
        parsed = Block.parse(raw)
        assert parsed is not None
        assert parsed.type == raw["type"]
        parsed.validate_json()  # slack_sdk's own length and count checks
        if raw["type"] == "header":
            assert raw["text"]["type"] == "plain_text"
            assert len(raw["text"]["text"]) <= HEADER_LIMIT
        if raw["type"] == "section":
            if "text" in raw:
                assert len(raw["text"]["text"]) <= SECTION_TEXT_LIMIT
            fields = raw.get("fields", [])
            assert len(fields) <= 10
            assert all(len(f["text"]) <= FIELD_LIMIT for f in fields)
            assert "text" in raw or fields
        if raw["type"] == "context":
            assert 0 < len(raw["elements"]) <= 10
        text = raw.get("text", {}).get("text", "")
        assert text.count("```") % 2 == 0, "an unclosed code block"


def test_firing_message_layout() -> None:
    """A firing message: header with severity and endpoint, context with name and id,
    the summary, the evidence as fields, the remedy with its mutation and curl in code
    blocks, and the plain-text fallback."""
    body = render(message("firing", [diag("crash_loop", in_queue=3, restarts=2)]))
    check_body(body)
    blocks = body["blocks"]
    assert blocks[0]["type"] == "header"
    assert blocks[0]["text"]["text"] == ":rotating_light: CRITICAL · crash_loop on sdxl-images"
    assert "*sdxl-images*" in blocks[1]["elements"][0]["text"]
    assert "`ep1`" in blocks[1]["elements"][0]["text"]
    assert "crash_loop on sdxl-images: 3 jobs wait." in blocks[2]["text"]["text"]
    fields = [f["text"] for f in blocks[3]["fields"]]
    assert fields == ["*in_queue*\n3", "*restarts*\n2"]
    fix = blocks[4]["text"]["text"]
    assert fix.startswith("*Fix*\nDo the thing for crash_loop:")
    # the command once, whole, in a code block
    assert "```curl -s https://api.runpod.io/graphql " in fix
    assert fix.count("saveEndpoint") == 1
    (code,) = re.findall(r"```(.*?)```", fix, re.S)
    assert queries(code) == [
        'mutation { saveEndpoint(input: { id: "ep1", workersMax: 2 }) { id } }'
    ]
    # the fallback is the lock-screen line: what and where; the fix is in the blocks
    assert body["text"] == ("[CRITICAL] crash_loop on sdxl-images (ep1): "
                            "crash_loop on sdxl-images: 3 jobs wait.")
    assert len(body["text"]) <= LOCK_SCREEN_LIMIT


def test_long_fields_are_cut_with_a_visible_marker() -> None:
    """A summary, evidence values and a remedy far over Slack's limits are cut within them,
    and each cut says '(truncated)'."""
    huge = diag(
        "job_failures", severity="warning",
        **{f"error_{i}": "Traceback: " + "x" * 5000 for i in range(25)},
    )
    huge = Diagnosis(huge.code, huge.scope, huge.severity, "S" * 5000,
                     "Step one.\n" + "curl -s https://example.invalid/" + "y" * 9000,
                     huge.evidence, huge.endpoint_id, "n" * 400)
    body = render(message("firing", [huge]))
    check_body(body)
    texts = [b["text"]["text"] for b in body["blocks"] if "text" in b and b["type"] == "section"]
    assert any(t.endswith(TRUNCATED) for t in texts)  # the summary
    fields = [f["text"] for b in body["blocks"] for f in b.get("fields", [])]
    assert len(fields) == 25
    assert all(f.endswith(TRUNCATED) for f in fields)
    assert any(TRUNCATED + "```" in t for t in texts)  # the code block, closed after the cut
    assert body["blocks"][0]["text"]["text"].endswith(TRUNCATED)  # the long name
    assert body["text"].endswith("…")
    assert len(body["text"]) <= LOCK_SCREEN_LIMIT


def test_many_incidents_stay_within_fifty_blocks() -> None:
    """Fifteen incidents of one endpoint are cut to Slack's 50 blocks; those left out are
    counted in a closing note."""
    many = [diag(f"code_{i}", severity="critical" if i % 2 else "warning") for i in range(15)]
    body = render(message("firing", many))
    check_body(body)
    assert len(body["blocks"]) <= MAX_BLOCKS
    last = body["blocks"][-1]
    assert last["type"] == "context"
    assert "more diagnoses not shown" in last["elements"][0]["text"]
    assert TRUNCATED in last["elements"][0]["text"]
    assert "3 more diagnoses not shown" in last["elements"][0]["text"]
    header = body["blocks"][0]["text"]["text"]
    assert header == ":rotating_light: CRITICAL · 15 problems on sdxl-images"
    # as many codes as a lock screen shows, and how many more
    assert body["text"].startswith("[CRITICAL] 15 problems on sdxl-images (ep1): code_0, code_1,")
    assert body["text"].endswith(" more")
    assert len(body["text"]) <= LOCK_SCREEN_LIMIT


def test_one_incident_with_huge_evidence_is_cut_at_fifty_blocks() -> None:
    """Even one incident whose evidence alone would need more than 50 sections is cut to
    50 blocks with the note."""
    d = diag("crash_loop", **{f"k{i}": i for i in range(600)})
    body = render(message("firing", [d]))
    check_body(body)
    assert len(body["blocks"]) == MAX_BLOCKS
    assert TRUNCATED in body["blocks"][-1]["elements"][0]["text"]


def test_resolved_message_is_short_and_green() -> None:
    """A resolved message is one section in a green-barred attachment, per incident one
    line with how long it lasted."""
    body = render(message("resolved", [diag("crash_loop"), diag("job_failures")]))
    check_body(body)
    assert "blocks" not in body
    (att,) = body["attachments"]
    assert att["color"] == "#2EB67D"
    assert len(att["blocks"]) == 1
    text = att["blocks"][0]["text"]["text"]
    assert text.count(":white_check_mark:") == 2
    assert "after 10 min" in text
    assert body["text"] == ("[RESOLVED] 2 problems on sdxl-images (ep1): "
                            "crash_loop after 10 min, job_failures after 10 min")


def test_reminder_and_account_messages() -> None:
    """A reminder says it is still firing and for how long; an account diagnosis says
    account-wide."""
    body = render(message("reminder", [diag("crash_loop")], t=T0 + 4 * 3600))
    check_body(body)
    assert "Still firing" in body["blocks"][0]["text"]["text"]
    assert "active for 4.0 h" in body["blocks"][2]["text"]["text"]
    assert body["text"].startswith("[REMINDER] [CRITICAL] crash_loop on sdxl-images (ep1) "
                                   "still active after 4.0 h:")
    body = render(message("firing", [diag("low_balance", None, "warning")]))
    check_body(body)
    assert body["blocks"][0]["text"]["text"] == ":warning: WARNING · low_balance on the account"
    assert body["blocks"][1]["elements"][0]["text"].startswith("Account-wide")


@pytest.mark.parametrize(("line", "prose", "code"), [
    ("mutation { a }", "", "mutation { a }"),
    ("   curl -s https://x", "", "curl -s https://x"),
    ("4. Check GPU types now: curl -s https://x", "4. Check GPU types now:", "curl -s https://x"),
    ("Raise workersMax.", "Raise workersMax.", ""),
])
def test_remedy_code_detection(line: str, prose: str, code: str) -> None:
    """Mutations and curl commands in a remedy go into code blocks, prose stays text."""
    (chunk,) = remedy_mrkdwn(line)
    if code:
        assert f"```{code}```" in chunk
    if prose:
        assert prose in chunk


def test_mrkdwn_control_characters_are_escaped() -> None:
    """<, > and & in a summary cannot turn into Slack links or mentions."""
    d = diag("crash_loop")
    d = Diagnosis(d.code, d.scope, d.severity, "exit <!channel> & <http://x|y>", d.remedy,
                  {"error": "<@U123>"}, d.endpoint_id, d.endpoint_name)
    body = render(message("firing", [d]))
    check_body(body)
    flat = str(body["blocks"])
    assert "<!channel>" not in flat
    assert "<@U123>" not in flat
    assert "&lt;!channel&gt; &amp;" in flat


def _shapes() -> list[Message]:
    """Messages of every kind, with names and summaries far past a lock screen."""
    long = Diagnosis("crash_loop", "endpoint", "critical", "S " * 900, "R", {}, "ep1",
                     "n" * 400)
    account = diag("low_balance", eid=None)
    many = [diag(f"code_{i}") for i in range(15)]
    return [
        message(kind, ds)
        for kind in ("firing", "reminder", "resolved")
        for ds in ([diag("crash_loop")], [long], [account], many, many[:2])
    ]


async def test_fallback_text_fits_a_lock_screen() -> None:
    """Slack's `text` is one line of at most LOCK_SCREEN_LIMIT characters that names the
    severity (or RESOLVED), the code or how many problems, and where; for every message the
    demo replay sends and for names and summaries far past the limit. The fix is in the
    blocks only."""
    from monitor.commands.demo import demo_scenario
    from monitor.commands.replay import replay

    scenario = demo_scenario()
    monitor = {**scenario.monitor, "alerts": {"group_wait_s": 0}}
    result = await replay(scenario.model_copy(update={"monitor": monitor}), env={})
    replayed = [Message(n.kind, "slack", n.batch, n.t, n.cycle, (n,), n.text)
                for n in result.alerts]
    assert len(replayed) >= 10
    for m in [*replayed, *_shapes()]:
        text = render(m)["text"]
        assert 0 < len(text) <= LOCK_SCREEN_LIMIT, text
        assert "\n" not in text
        assert "Fix" not in text
        assert text.startswith(("[CRITICAL]", "[WARNING]", "[INFO]", "[RESOLVED]",
                                "[REMINDER]")), text
        d = m.notifications[0].incident.diagnosis
        where = f"({d.endpoint_id})" if d.endpoint_id else "(account)"
        if len(d.endpoint_name or "") < 100:
            assert where in text or "the account" in text, text
            assert d.code in text or "problems on" in text, text
