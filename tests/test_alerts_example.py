"""scripts/example_message.py renders real replay messages into valid Block Kit docs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from slack_sdk.models.blocks import Block

REPO = Path(__file__).resolve().parent.parent


def test_example_message_script(tmp_path: Path) -> None:
    """The script writes three messages (firing, grouped, resolved), each with its fallback
    text and a body whose blocks slack_sdk parses and validates."""
    out = tmp_path / "example.md"
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "example_message.py"), "--out", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    doc = out.read_text()
    bodies = [json.loads(b) for b in re.findall(r"```json\n(.*?)\n```", doc, re.S)]
    assert len(bodies) == 3
    for body in bodies:
        assert body["text"]
        blocks = body.get("blocks") or body["attachments"][0]["blocks"]
        for raw in blocks:
            Block.parse(raw).validate_json()  # type: ignore[union-attr]
    assert "2 problems on llm-chat" in doc
    assert "[RESOLVED]" in doc
