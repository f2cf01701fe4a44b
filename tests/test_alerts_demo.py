"""`runpod-monitor demo` with SLACK_WEBHOOK_URL set delivers its alerts to that webhook."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from slack_standin import SlackStandIn

REPO = Path(__file__).resolve().parent.parent
DEMO_TOKEN = "hf_DemoOnlyNotARealTokenXyZ0123456789abcd"  # in the demo's template


@pytest.mark.integration
def test_demo_delivers_to_the_slack_webhook(tmp_path: Path) -> None:
    """The demo subprocess, pointed at a loopback Slack stand-in through SLACK_WEBHOOK_URL,
    posts Block Kit messages there (grouped per endpoint), leaks neither the webhook URL
    into its output nor the template's token into Slack, and stops cleanly on SIGINT."""
    standin = SlackStandIn().start_in_thread()
    env = {k: v for k, v in os.environ.items()
           if k not in ("RUNPOD_API_KEY", "SLACK_BOT_TOKEN", "HTTP_PROXY", "HTTPS_PROXY",
                        "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")}
    env.update(SLACK_WEBHOOK_URL=standin.webhook_url, NO_PROXY="127.0.0.1",
               PYTHONUNBUFFERED="1")
    out, err = tmp_path / "demo.stdout", tmp_path / "demo.stderr"
    with out.open("wb") as fout, err.open("wb") as ferr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "monitor", "demo", "--port", "0"],
            cwd=REPO, env=env, stdout=fout, stderr=ferr,
        )
    try:
        deadline = time.monotonic() + 35
        # the llm endpoint's two audit findings at once, then sdxl's capacity alert
        while len(standin.delivered()) < 2 and time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        # the daemon serves the silences API
        match = re.search(r"metrics\s+(http://\S+)/metrics", out.read_text())
        assert match, out.read_text()
        silences = httpx.get(f"{match[1]}/api/v1/silences", timeout=5)
        proc.send_signal(signal.SIGINT)
        status = proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        standin.stop_thread()
    stderr = err.read_text()
    delivered = standin.delivered()
    assert len(delivered) >= 2, stderr[-3000:]
    assert status == 0
    assert silences.status_code == 200
    assert silences.json() == {"silences": []}
    first = delivered[0].body
    assert first["blocks"][0]["type"] == "header"
    assert "2 problems on llm-chat" in first["blocks"][0]["text"]["text"]
    assert "secret_in_template" in first["text"]
    assert "volume_path_mismatch" in first["text"]
    assert "no_gpu_capacity on sdxl-images" in delivered[1].body["text"]
    everything = "".join(str(r.body) for r in standin.requests)
    assert DEMO_TOKEN not in everything
    logs = stderr + out.read_text()
    assert "standinWebhookSecret" not in logs
    assert "runpod-monitor demo" in out.read_text()
