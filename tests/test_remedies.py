"""Every remedy the scenarios raise quotes each command once, as one ready-to-paste curl
with the API key from the environment."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from remedykit import curls

from monitor.replay import replay
from monitor.simulator import load_scenario

SCENARIOS = sorted((Path(__file__).parent / "scenarios").glob("*.yaml"))
BARE = re.compile(r"(?:^|[\s(:])(mutation \{|query \{)")


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
async def test_each_command_is_quoted_once(path: Path) -> None:
    """No GraphQL document stands beside its curl; each curl splits as a shell splits it,
    carries `Authorization: Bearer $RUNPOD_API_KEY` and never a key, and its -d is JSON."""
    result = await replay(load_scenario(path), env={})
    if not result.incidents:
        pytest.skip("the scenario raises nothing (a false-alarm trap)")
    for inc in result.incidents:
        remedy = inc.diagnosis.remedy
        outside = re.sub(r"curl\s+-.*$", "", remedy, flags=re.M)
        assert not BARE.search(outside), (inc.diagnosis.code, remedy)
        for argv in curls(remedy):
            assert "Authorization: Bearer $RUNPOD_API_KEY" in argv, argv
            if "-d" in argv:
                posted = json.loads(argv[argv.index("-d") + 1])["query"]
                assert remedy.count(json.dumps(posted)[1:-1]) == 1, posted
