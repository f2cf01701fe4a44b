"""The Grafana dashboard of runpod-monitor, generated from plain Python.

    python dashboards/generate.py            # writes dashboards/runpod-serverless.json
    python dashboards/generate.py --check    # exit 1 when the committed file is stale

The output is provisionable (fixed `uid`, no `id`, the data source chosen by a template
variable) and deterministic (sorted keys, panel ids in layout order, trailing newline),
so the committed JSON is reviewed like code and a test proves it is up to date.

Metric names follow spec/metrics.md. Every query filters endpoint series with
`endpoint=~"$endpoint"`; the per-endpoint row also repeats by `$endpoint`, so each of its
panels shows one endpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

UID = "runpod-serverless"
TITLE = "RunPod Serverless"
SCHEMA_VERSION = 39
OUTPUT = Path(__file__).resolve().parent / "runpod-serverless.json"

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
EP = 'endpoint=~"$endpoint"'
EP_SELECTOR = "{" + EP + "}"

Panel = dict[str, Any]


# -- building blocks -------------------------------------------------------------------


def _target(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False) -> Panel:
    target: Panel = {
        "datasource": DATASOURCE,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "refId": ref,
    }
    if instant:
        target.update({"format": "table", "instant": True, "range": False})
    else:
        target.update({"instant": False, "range": True})
    return target


def _targets(*queries: tuple[str, str]) -> list[Panel]:
    return [_target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(queries)]


def _thresholds(*steps: tuple[str, float | None]) -> Panel:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


def _panel(
    kind: str, title: str, description: str, targets: list[Panel], *, unit: str = "short",
    thresholds: Panel | None = None, custom: Panel | None = None, options: Panel | None = None,
    mappings: list[Panel] | None = None, overrides: list[Panel] | None = None,
    extra: Panel | None = None,
) -> Panel:
    defaults: Panel = {
        "color": {"mode": "thresholds" if kind == "stat" else "palette-classic"},
        "mappings": mappings or [],
        "thresholds": thresholds or _thresholds(("green", None)),
        "unit": unit,
    }
    if custom is not None:
        defaults["custom"] = custom
    panel: Panel = {
        "datasource": DATASOURCE,
        "description": description,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": options or {},
        "targets": targets,
        "title": title,
        "type": kind,
    }
    panel.update(extra or {})
    return panel


def _stat(
    title: str, description: str, targets: list[Panel], *, unit: str = "short",
    thresholds: Panel | None = None, mappings: list[Panel] | None = None,
    no_value: str | None = None, decimals: int | None = None, text_mode: str = "auto",
) -> Panel:
    panel = _panel(
        "stat", title, description, targets, unit=unit, thresholds=thresholds,
        mappings=mappings,
        options={
            "colorMode": "background",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": text_mode,
        },
    )
    if no_value is not None:
        panel["fieldConfig"]["defaults"]["noValue"] = no_value
    if decimals is not None:
        panel["fieldConfig"]["defaults"]["decimals"] = decimals
    return panel


def _timeseries(
    title: str, description: str, targets: list[Panel], *, unit: str = "short",
    stacked: bool = False, axis_label: str = "", overrides: list[Panel] | None = None,
    thresholds: Panel | None = None, threshold_style: str = "off",
) -> Panel:
    custom: Panel = {
        "axisLabel": axis_label,
        "drawStyle": "line",
        "fillOpacity": 30 if stacked else 10,
        "lineInterpolation": "stepAfter",
        "lineWidth": 1,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"group": "A", "mode": "normal" if stacked else "none"},
        "thresholdsStyle": {"mode": threshold_style},
    }
    return _panel(
        "timeseries", title, description, targets, unit=unit, custom=custom,
        thresholds=thresholds, overrides=overrides,
        options={
            "legend": {"calcs": ["lastNotNull", "max"], "displayMode": "table",
                       "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    )


def _row(title: str, *, repeat: str | None = None) -> Panel:
    row: Panel = {"collapsed": False, "panels": [], "title": title, "type": "row"}
    if repeat is not None:
        row["repeat"] = repeat
    return row


def _quantiles(metric: str, by: str, selector: str, *qs: float) -> list[tuple[str, str]]:
    """histogram_quantile queries of `metric` (a histogram), one per quantile in `qs`."""
    return [
        (
            f"histogram_quantile({q}, sum by ({by}) "
            f"(rate({metric}_bucket{selector}[$__rate_interval])))",
            f"p{round(q * 100)}",
        )
        for q in qs
    ]


def _severity_mappings() -> list[Panel]:
    colors = {"critical": "red", "warning": "orange", "info": "blue"}
    return [{
        "options": {
            sev: {"color": color, "index": i, "text": sev}
            for i, (sev, color) in enumerate(colors.items())
        },
        "type": "value",
    }]


def _override(name: str, *props: tuple[str, Any]) -> Panel:
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [{"id": k, "value": v} for k, v in props],
    }


# -- rows ------------------------------------------------------------------------------


def account_row() -> list[Panel]:
    stats = [
        _stat(
            "Balance",
            "clientBalance in USD: the last value the monitor read from RunPod's GraphQL API. "
            "low_balance is raised under 5 USD.",
            [_target("runpod_account_balance_usd")],
            unit="currencyUSD", decimals=2,
            thresholds=_thresholds(("red", None), ("orange", 5), ("green", 20)),
        ),
        _stat(
            "Spend per hour",
            "currentSpendPerHr in USD per hour: every running worker and every network "
            "volume bills.",
            [_target("runpod_account_spend_usd_per_hour")],
            unit="currencyUSD", decimals=3,
            thresholds=_thresholds(("blue", None)),
        ),
        _stat(
            "Runway",
            "Time until the balance runs out at the current spend (balance / spend). Red "
            "under 2 h (low_balance is critical), orange under 24 h (low_balance warning). "
            "Absent while nothing is spending.",
            [_target("runpod_account_runway_seconds")],
            unit="s", decimals=1, no_value="no spend",
            thresholds=_thresholds(("red", None), ("orange", 2 * 3600), ("green", 24 * 3600)),
        ),
    ]
    return [
        _row("Account"),
        *(_sized(stat, 4, 8) for stat in stats),
        _timeseries(
            "Spend per hour over time",
            "currentSpendPerHr as the monitor sampled it (a step per probe cycle).",
            [_target("runpod_account_spend_usd_per_hour", "USD/h")],
            unit="currencyUSD",
        ),
    ]


def diagnoses_row() -> list[Panel]:
    table = _panel(
        "table",
        "Active diagnoses",
        "Diagnoses active now, one per row (account-scope diagnoses have no endpoint). "
        "Prometheus holds only the labels: when each was first raised (`since`), its "
        "summary, evidence and remedy (with the mutation or API call to run) are served "
        "by the monitor at /api/v1/diagnoses.",
        [_target(
            'sum by (severity, code, endpoint, endpoint_id) '
            '(runpod_diagnosis_active{endpoint=~"$endpoint|"})',
            instant=True,
        )],
        custom={"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False},
        options={
            "cellHeight": "sm",
            "footer": {"show": False},
            "showHeader": True,
            "sortBy": [{"desc": False, "displayName": "severity"}],
        },
        overrides=[
            _override("severity", ("mappings", _severity_mappings()),
                      ("custom.cellOptions", {"type": "color-text"})),
            _override("endpoint", ("mappings", [{
                "options": {"match": "empty", "result": {"index": 0, "text": "(account)"}},
                "type": "special",
            }])),
        ],
        extra={"transformations": [{
            "id": "organize",
            "options": {
                "excludeByName": {"Time": True, "Value": True},
                "indexByName": {"severity": 0, "code": 1, "endpoint": 2, "endpoint_id": 3},
                "renameByName": {},
            },
        }]},
    )
    raised = _timeseries(
        "Diagnoses raised",
        "New diagnoses per code (increase of runpod_diagnoses_raised_total per interval): "
        "a code that keeps reappearing is flapping.",
        [_target(
            "sum by (code, severity) "
            "(increase(runpod_diagnoses_raised_total[$__rate_interval]))",
            "{{code}} ({{severity}})",
        )],
        unit="short",
    )
    return [_row("Diagnoses"), _sized(table, 14, 8), _sized(raised, 10, 8)]


def endpoint_row() -> list[Panel]:
    queue_states = 'state=~"in_queue|in_progress"'
    done_states = 'state=~"completed|failed"'
    return [
        _row("Endpoint $endpoint", repeat="endpoint"),
        _timeseries(
            "Workers by state",
            "Workers by state from /health, stacked; the dashed line is workersMax, the cap "
            "RunPod may lower on its own (workers_max_zero).",
            _targets(
                (f"sum by (state) (runpod_endpoint_workers{{{EP}}})", "{{state}}"),
                (f"max(runpod_endpoint_workers_max{{{EP}}})", "workersMax"),
            ),
            stacked=True,
            overrides=[_override(
                "workersMax",
                ("custom.stacking", {"group": "A", "mode": "none"}),
                ("custom.fillOpacity", 0),
                ("custom.lineStyle", {"dash": [10, 10], "fill": "dash"}),
                ("color", {"fixedColor": "red", "mode": "fixed"}),
            )],
        ),
        _timeseries(
            "Queue depth",
            "Jobs waiting (in_queue) and running (in_progress). A queue with nothing in "
            "progress is the start of no_gpu_capacity, not_scheduling or crash_loop.",
            [_target(
                f"sum by (state) (runpod_endpoint_jobs{{{EP}, {queue_states}}})", "{{state}}"
            )],
        ),
        _timeseries(
            "Oldest queued job wait",
            "How long the oldest queued job has waited (0 with none queued).",
            [_target(f"max(runpod_endpoint_queue_delay_seconds{{{EP}}})", "oldest job")],
            unit="s",
        ),
        _timeseries(
            "Job delay (queue wait incl. cold start)",
            "delayTime of jobs as they leave the queue: p50, p90 and p98 over the interval.",
            _targets(*_quantiles(
                "runpod_job_delay_seconds", "le, endpoint", EP_SELECTOR, 0.5, 0.9, 0.98
            )),
            unit="s",
        ),
        _timeseries(
            "Job execution time",
            "executionTime of finished jobs: p50, p90 and p98 over the interval.",
            _targets(*_quantiles(
                "runpod_job_execution_seconds", "le, endpoint", EP_SELECTOR, 0.5, 0.9, 0.98
            )),
            unit="s",
        ),
        _timeseries(
            "Completed vs failed",
            "Jobs completed and failed per minute. runpod_endpoint_jobs re-exports RunPod's "
            "own counts as gauges, and RunPod does not promise they only grow, so the query "
            "uses deriv() (the per-second slope of a gauge) rather than rate()/increase(): "
            "those read any drop as a counter reset and would count the whole remaining "
            "total again as a spike. Drops are clamped at 0.",
            [_target(
                f"sum by (state) (clamp_min(deriv(runpod_endpoint_jobs{{{EP}, {done_states}}}"
                f"[$__rate_interval]), 0)) * 60",
                "{{state}}",
            )],
            axis_label="jobs per minute",
            overrides=[
                _override("failed", ("color", {"fixedColor": "red", "mode": "fixed"})),
                _override("completed", ("color", {"fixedColor": "green", "mode": "fixed"})),
            ],
        ),
        _stat(
            "Endpoint up",
            "Whether the last /health probe got a valid answer.",
            [_target(f"min(runpod_endpoint_up{{{EP}}})")],
            thresholds=_thresholds(("red", None), ("green", 1)),
            mappings=[{"options": {
                "0": {"color": "red", "index": 0, "text": "DOWN"},
                "1": {"color": "green", "index": 1, "text": "UP"},
            }, "type": "value"}],
        ),
        _stat(
            "/health HTTP status",
            "Last HTTP status of /health (0: no answer). A 404 while GraphQL lists the "
            "endpoint means balance_exhausted, endpoint_disabled or never_started.",
            [_target(f"max(runpod_endpoint_http_status{{{EP}}})")],
            thresholds=_thresholds(("red", None), ("green", 200), ("red", 300)),
            mappings=[{"options": {
                "0": {"color": "red", "index": 0, "text": "no answer"},
            }, "type": "value"}],
        ),
        _sized(_panel(
            "table",
            "Configuration",
            "GPU tiers, network volume and its datacenter (runpod_endpoint_info).",
            [_target(f"max by (endpoint_id, gpu_ids, network_volume_id, datacenter) "
                     f"(runpod_endpoint_info{{{EP}}})", instant=True)],
            custom={"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False},
            options={"cellHeight": "sm", "footer": {"show": False}, "showHeader": True},
            extra={"transformations": [{
                "id": "organize",
                "options": {"excludeByName": {"Time": True, "Value": True},
                            "indexByName": {}, "renameByName": {}},
            }]},
        ), 12, 5),
    ]


def monitor_row() -> list[Panel]:
    return [
        _row("Monitor health"),
        _sized(_stat(
            "Monitor up",
            "Whether Prometheus can scrape the monitor (job runpod-monitor).",
            [_target('min(up{job="runpod-monitor"})')],
            thresholds=_thresholds(("red", None), ("green", 1)),
            mappings=[{"options": {
                "0": {"color": "red", "index": 0, "text": "DOWN"},
                "1": {"color": "green", "index": 1, "text": "UP"},
            }, "type": "value"}],
        ), 6, 8),
        _sized(_stat(
            "Last good answer, age",
            "Seconds since each probe last got a good answer from RunPod: how fresh the data "
            "is. RunPodMonitorStaleData fires past 5 minutes for GraphQL. The status probe "
            "runs only while registered jobs are followed, so its age may grow legitimately.",
            [_target("time() - runpod_probe_last_success_timestamp_seconds", "{{probe}}")],
            unit="s", decimals=0,
            thresholds=_thresholds(("green", None), ("orange", 90), ("red", 300)),
            text_mode="value_and_name",
        ), 6, 8),
        _timeseries(
            "Probe errors by reason",
            "Failed calls to RunPod per second, by probe and reason. auth means 401/403 "
            "(auth_invalid); http_429 means RunPod is rate limiting the monitor.",
            [_target(
                "sum by (probe, reason) (rate(runpod_probe_errors_total[$__rate_interval]))",
                "{{probe}} {{reason}}",
            )],
            unit="short", axis_label="errors per second",
        ),
        _timeseries(
            "Probe latency p90",
            "90th percentile latency of the calls to RunPod, by probe.",
            [_target(
                "histogram_quantile(0.9, sum by (le, probe) "
                "(rate(runpod_probe_duration_seconds_bucket[$__rate_interval])))",
                "{{probe}}",
            )],
            unit="s",
        ),
        _timeseries(
            "Cycle duration",
            "Duration of one whole probe cycle (probes, rules, alerts): p50 and p90. A cycle "
            "that nears the polling interval delays every diagnosis.",
            _targets(*_quantiles("runpod_monitor_cycle_duration_seconds", "le", "", 0.5, 0.9)),
            unit="s",
        ),
        _timeseries(
            "Alerts sent and failed",
            "Notifications per minute: delivered by sink and kind (firing, resolved, "
            "reminder), and failed deliveries (retried from the outbox).",
            _targets(
                ("sum by (sink, kind) (rate(runpod_alerts_sent_total[$__rate_interval])) * 60",
                 "{{sink}} {{kind}}"),
                ("sum by (sink) (rate(runpod_alerts_failed_total[$__rate_interval])) * 60",
                 "{{sink}} failed"),
            ),
            axis_label="notifications per minute",
        ),
        _timeseries(
            "Alerts pending",
            "Notifications waiting in each sink's outbox; a number that keeps growing means "
            "a sink is failing.",
            [_target("sum by (sink) (runpod_alerts_pending)", "{{sink}}")],
        ),
    ]


# -- layout ----------------------------------------------------------------------------

# (width, height) by panel type; rows take the full width.
_SIZES = {"stat": (6, 5), "timeseries": (12, 8), "table": (24, 8)}
_GRID_WIDTH = 24


def _sized(panel: Panel, w: int, h: int) -> Panel:
    """`panel` with a size other than its type's default."""
    return {**panel, "gridPos": {"h": h, "w": w}}


def _layout(panels: list[Panel]) -> list[Panel]:
    """Give each panel an id (in order) and a gridPos, filling rows left to right."""
    x = y = line_h = 0
    out: list[Panel] = []
    for pid, panel in enumerate(panels, start=1):
        if panel["type"] == "row":
            if x:
                y += line_h
            w, h = _GRID_WIDTH, 1
            x = line_h = 0
        else:
            w, h = _SIZES[panel["type"]]
            w, h = panel.get("gridPos", {}).get("w", w), panel.get("gridPos", {}).get("h", h)
            if x + w > _GRID_WIDTH:
                y += line_h
                x = line_h = 0
        out.append({**panel, "gridPos": {"h": h, "w": w, "x": x, "y": y}, "id": pid})
        if panel["type"] == "row":
            y += 1
        else:
            x += w
            line_h = max(line_h, h)
    return out


def templating() -> list[Panel]:
    query = "label_values(runpod_endpoint_info, endpoint)"
    return [
        {
            "current": {},
            "hide": 0,
            "includeAll": False,
            "label": "Data source",
            "multi": False,
            "name": "datasource",
            "options": [],
            "query": "prometheus",
            "refresh": 1,
            "regex": "",
            "type": "datasource",
        },
        {
            "allValue": ".*",
            "current": {},
            "datasource": DATASOURCE,
            "definition": query,
            "hide": 0,
            "includeAll": True,
            "label": "Endpoint",
            "multi": True,
            "name": "endpoint",
            "options": [],
            "query": {"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor"},
            "refresh": 2,
            "regex": "",
            "sort": 1,
            "type": "query",
        },
    ]


def dashboard() -> Panel:
    """The whole dashboard model, ready for provisioning."""
    panels = account_row() + diagnoses_row() + endpoint_row() + monitor_row()
    return {
        "annotations": {"list": [{
            "builtIn": 1,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard",
        }]},
        "description": "runpod-monitor: account, active diagnoses, per-endpoint workers, "
                       "queue and jobs, and the monitor's own health. Generated by "
                       "dashboards/generate.py; edit that, not this file.",
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "links": [],
        "panels": _layout(panels),
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": ["runpod", "serverless", "runpod-monitor"],
        "templating": {"list": templating()},
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": TITLE,
        "uid": UID,
        "version": 1,
        "weekStart": "",
    }


def render() -> str:
    """The dashboard as the committed file's text: sorted keys, 2-space indent, final LF."""
    return json.dumps(dashboard(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL expr) of every query of every panel, in layout order."""
    return [
        (panel["title"], target["expr"])
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the committed JSON differs from the generated one")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run python dashboards/generate.py", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
