"""The MCP server: tools over the running daemon's JSON API, on the SDK's MCPServer.

The data source is the running daemon's HTTP API, not its SQLite file: the daemon holds the
live state (the incidents tracked this cycle, the silences in force, the incidents resolved
since it started, which the file does not keep), its write routes check the write credential
in one place, and an agent on a laptop reaches a daemon in a container or a cluster over
HTTP where it could not open the file. `check` alone runs a probe cycle in this process
(monitor/commands/check.py, as `runpod-monitor check` does), so it needs the RunPod API key here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import structlog
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from monitor import __version__
from monitor.config import ConfigError, Settings
from monitor.logs import Redactor
from monitor.mcp import answers
from monitor.mcp.daemon_api import DaemonAPI, DaemonError, Target

log = structlog.get_logger("monitor.mcp")

SeverityArg = Annotated[
    Literal["critical", "warning", "info"] | None,
    Field(description="Only diagnoses at least this severe: critical, warning or info "
                      "(default: all)."),
]
EndpointArg = Annotated[
    str | None,
    Field(description="Only this endpoint: its RunPod id or its name (default: all)."),
]
WindowArg = Annotated[
    int, Field(ge=1, le=7 * 24 * 60, description="How far back, in minutes (default 60).")
]

INSTRUCTIONS = """\
runpod-monitor watches RunPod Serverless endpoints and names what is wrong with them
(diagnoses with evidence and a remedy). Start with list_diagnoses; for one endpoint ask
explain_endpoint (config, workers, queue, the last hour, job errors); incident_history says
what was raised and resolved; check probes RunPod now. silence mutes alerts and needs the
operator's write token. Secrets are masked in every answer."""

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                            open_world_hint=False)


def build_server(settings: Settings, target: Target) -> MCPServer[Any]:
    """The MCP server for the daemon at `target`; `check` probes with `settings`."""
    secrets = [*settings.secrets(), *(s for s in (target.write_token,) if s)]
    if target.basic_auth is not None:
        secrets.append(target.basic_auth[1])
    redactor = Redactor(secrets)
    check_lock = asyncio.Lock()  # one cycle at a time: an eager agent must not flood RunPod
    server: MCPServer[Any] = MCPServer(
        "runpod-monitor", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING",
    )

    async def answer(
        work: Callable[[DaemonAPI], Awaitable[dict[str, Any]]],
    ) -> dict[str, Any]:
        """Run one tool's work (with a client of the daemon): its answer masked and bounded,
        or an error the agent can act on, masked too; nothing escapes unscrubbed."""
        try:
            async with DaemonAPI(target) as api:
                return answers.finish(await work(api), redactor)
        except (DaemonError, ConfigError, ToolError) as exc:
            raise ToolError(redactor.scrub(str(exc))) from None
        except Exception as exc:
            log.warning("tool failed", error=type(exc).__name__)
            raise ToolError(redactor.scrub(
                f"internal error ({type(exc).__name__}): {exc}")) from None

    async def endpoint_id(api: DaemonAPI, endpoint: str) -> str:
        rows = (await api.get("/api/v1/endpoints")).get("endpoints") or []
        found = answers.resolve_endpoint(rows, endpoint)
        if found is None:
            known = ", ".join(answers.known_endpoints(rows)) or "none yet"
            raise DaemonError(f"no watched endpoint has the id or name {endpoint[:80]!r}; "
                              f"watched: {known}")
        return found

    @server.tool(
        annotations=READ_ONLY,
        description=(
            "The problems the monitor sees now on your RunPod Serverless endpoints and account: "
            "each diagnosis has a code, a severity, a one-line summary, the evidence (the "
            "numbers that raised it), the remedy (what to change, with the command), and since "
            "when. Filter by endpoint (id or name) and minimum severity. An empty list means "
            "nothing is wrong as of the daemon's last probe cycle."
        ),
    )
    async def list_diagnoses(
        endpoint: EndpointArg = None, severity: SeverityArg = None
    ) -> dict[str, Any]:
        async def work(api: DaemonAPI) -> dict[str, Any]:
            body = await api.get("/api/v1/diagnoses")
            return answers.list_diagnoses(body.get("diagnoses") or [], endpoint, severity)

        return await answer(work)

    @server.tool(
        annotations=READ_ONLY,
        description=(
            "Everything the monitor knows about one endpoint (its id or name): the config "
            "(GPU pools, workers min/max, template image and docker args with secrets masked, "
            "env variable names), the workers by state and the queue now, its active "
            "diagnoses and the account's, its incidents and its history over the window "
            "(at most 60 points, each the highest queue and worker counts of its cycles, "
            "worker states with no worker left out), "
            "and the error texts of recently failed jobs. Use it to answer 'why is this "
            "endpoint stuck / not starting / failing?'. Releases and worker logs are not "
            "collected yet (given as unavailable)."
        ),
    )
    async def explain_endpoint(
        endpoint: Annotated[str, Field(description="The endpoint's RunPod id or its name.")],
        window_minutes: WindowArg = 60,
    ) -> dict[str, Any]:
        window_s = window_minutes * 60.0

        async def work(api: DaemonAPI) -> dict[str, Any]:
            report = await api.endpoint(endpoint, window_s)
            if report is None:
                report = await api.endpoint(await endpoint_id(api, endpoint), window_s)
            if report is None:
                raise DaemonError(f"the daemon has no data on {endpoint[:80]!r} yet")
            diagnoses = (await api.get("/api/v1/diagnoses")).get("diagnoses") or []
            incidents = (await api.get("/api/v1/incidents", window_s=window_s)).get(
                "incidents") or []
            return answers.explain(report, diagnoses, incidents)

        return await answer(work)

    @server.tool(
        annotations=READ_ONLY,
        description=(
            "What went wrong and what recovered over a window: each incident raised or "
            "resolved in the last N minutes as an event (raised / resolved, when, the "
            "diagnosis code, severity, endpoint, summary; resolved ones with how long they "
            "lasted), newest first, and how many are still active. Filter by endpoint (id or "
            "name) and minimum severity."
        ),
    )
    async def incident_history(
        window_minutes: WindowArg = 60, endpoint: EndpointArg = None,
        severity: SeverityArg = None,
    ) -> dict[str, Any]:
        async def work(api: DaemonAPI) -> dict[str, Any]:
            body = await api.get("/api/v1/incidents", window_s=window_minutes * 60.0)
            return answers.incident_events(body, endpoint, severity)

        return await answer(work)

    @server.tool(
        annotations=ToolAnnotations(read_only_hint=True, destructive_hint=False,
                                    idempotent_hint=False, open_world_hint=True),
        description=(
            "Probe RunPod now (one cycle: GraphQL, every endpoint's /health, queued jobs) and "
            "return the diagnoses, on top of the daemon's stored history when its state file "
            "is on this machine; probe_failures lists what could not be read. Slower than "
            "list_diagnoses (seconds) and it calls RunPod's API: use it to confirm a fix took "
            "effect, not to poll."
        ),
    )
    async def check() -> dict[str, Any]:
        async def work(_: DaemonAPI) -> dict[str, Any]:
            async with check_lock:
                return await _check_cycle(settings, time.time())

        return await answer(work)

    @server.tool(
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False,
                                    idempotent_hint=False, open_world_hint=False),
        description=(
            "Mute the monitor's alerts (Slack, Alertmanager) for a diagnosis code, an endpoint "
            "(id or name), or both, for N minutes; the diagnosis itself stays visible here. "
            "Only for a problem someone is already handling. Needs the operator's write "
            "token (RUNPOD_MONITOR_WRITE_TOKEN in this server's environment)."
        ),
    )
    async def silence(
        code: Annotated[str | None, Field(
            description="The diagnosis code to mute, e.g. crash_loop (default: every code).",
            max_length=64)] = None,
        endpoint: Annotated[str | None, Field(
            description="The endpoint to mute: its id or name (default: every endpoint).",
            max_length=200)] = None,
        minutes: Annotated[int, Field(ge=1, le=7 * 24 * 60,
                                      description="How long, in minutes (default 60).")] = 60,
    ) -> dict[str, Any]:
        if code is None and endpoint is None:
            raise ToolError("give a code, an endpoint or both: muting everything is not offered")
        if not target.can_write:
            raise ToolError("silence needs a write credential: the operator sets "
                            "RUNPOD_MONITOR_WRITE_TOKEN (the daemon's api.write_token) in this "
                            "MCP server's environment")
        until = datetime.now(UTC) + timedelta(minutes=minutes)

        async def work(api: DaemonAPI) -> dict[str, Any]:
            eid = None if endpoint is None else await endpoint_id(api, endpoint)
            body = {"code": code, "endpoint_id": eid,
                    "until": until.isoformat().replace("+00:00", "Z")}
            rule = await api.post("/api/v1/silences", body)
            active = (await api.get("/api/v1/silences")).get("silences") or []
            return {"silence": rule, "active_silences": len(active)}

        return await answer(work)

    return server


async def _check_cycle(settings: Settings, now: float) -> dict[str, Any]:
    """One cycle of monitor.commands.check on top of the stored history, as its JSON output."""
    from monitor.commands.check import check_once, probe_failures
    from monitor.http.web import diagnosis_json

    result, incidents = await check_once(settings, now)
    return {
        "checked_at": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
        "endpoints_probed": len(result.observation.endpoints),
        "diagnoses": [diagnosis_json(i) for i in incidents],
        "probe_failures": probe_failures(result),
    }


def serve_stdio(settings: Settings, target: Target) -> int:
    """Serve MCP on stdin/stdout until the client closes them; exit status 0."""
    server = build_server(settings, target)
    asyncio.run(server.run_stdio_async())
    return 0
