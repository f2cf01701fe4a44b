"""The Grafana dashboard of runpod-monitor, built with Grafana's Foundation SDK.

    python dashboards/generate.py            # writes dashboards/runpod-serverless.json
    python dashboards/generate.py --check    # exit 1 when the committed file is stale

Panels, queries, variables and the dashboard itself are made with the builders of
`grafana-foundation-sdk` (types generated from Grafana 11.6's own schema), so a field
Grafana does not know, or a value of the wrong kind, does not type-check or build. The
output is provisionable (fixed `uid`, no `id`, the data source chosen by a template
variable) and deterministic (sorted keys, panel ids in layout order, trailing newline),
so the committed JSON is reviewed like code and a test proves it is up to date.

Metric names follow spec/metrics.md. Every query filters endpoint series with
`endpoint=~"$endpoint"`; the per-endpoint row also repeats by `$endpoint`, so each of its
panels shows one endpoint. Its REST v2 panels (worker restarts, stale workers, billed spend,
worker data age) and the "REST v2 and GPUs" row (the call budget, GPU availability) read
the extensions of docs/metrics.md, which a monitor in GraphQL mode does not export: there
they show no data. A panel here must select a series the monitor exports
(tests/test_dashboard.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TypeVar

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.variants import Dataquery
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

UID = "runpod-serverless"
TITLE = "RunPod Serverless"
OUTPUT = Path(__file__).resolve().parent / "runpod-serverless.json"

DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
EP = 'endpoint=~"$endpoint"'
EP_SELECTOR = "{" + EP + "}"

# Panels are builders until the dashboard places them; values of overrides, options and
# transformation settings Grafana types as free-form JSON stay plain dicts.
P = TypeVar("P", stat.Panel, timeseries.Panel, table.Panel)
Item = db.Row | stat.Panel | timeseries.Panel | table.Panel
Targets = list[Builder[Dataquery]]
Json = dict[str, Any]


# -- building blocks -------------------------------------------------------------------


def _target(
    expr: str, legend: str = "", ref: str = "A", *, instant: bool = False
) -> prometheus.Dataquery:
    query = (
        prometheus.Dataquery()
        .datasource(DATASOURCE)
        .expr(expr)
        .legend_format(legend or "__auto")
        .ref_id(ref)
    )
    return query.instant().format(PromQueryFormat.TABLE) if instant else query.range()


def _targets(*queries: tuple[str, str]) -> Targets:
    return [_target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(queries)]


def _thresholds(*steps: tuple[str, float | None]) -> db.ThresholdsConfig:
    return db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
        [dm.Threshold(color=c, value=v) for c, v in steps]
    )


def _value_map(texts: dict[str, tuple[str, str]]) -> dm.ValueMap:
    """A value mapping: each value shown as (color, text)."""
    return dm.ValueMap(options={
        value: dm.ValueMappingResult(color=color, index=i, text=text)
        for i, (value, (color, text)) in enumerate(texts.items())
    })


def _override(name: str, *props: tuple[str, Any]) -> tuple[str, list[dm.DynamicConfigValue]]:
    return name, [dm.DynamicConfigValue(id_val=k, value=v) for k, v in props]


def _common(
    panel: P, title: str, description: str, targets: Targets, *,
    unit: str, thresholds: db.ThresholdsConfig | None, color: dm.FieldColorModeId,
    mappings: list[dm.ValueMapping] | None,
    overrides: list[tuple[str, list[dm.DynamicConfigValue]]] | None,
) -> P:
    """The settings every panel kind shares: title, queries, unit, colors, overrides."""
    panel = (
        panel.title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(targets)
        .unit(unit)
        .color_scheme(db.FieldColor().mode(color))
        .thresholds(thresholds or _thresholds(("green", None)))
        .mappings(mappings or [])
    )
    for name, props in overrides or []:
        panel = panel.override_by_name(name, props)
    return panel


def _stat(
    title: str, description: str, targets: Targets, *, unit: str = "short",
    thresholds: db.ThresholdsConfig | None = None, mappings: list[dm.ValueMapping] | None = None,
    no_value: str | None = None, decimals: int | None = None,
    text_mode: cm.BigValueTextMode = cm.BigValueTextMode.AUTO,
) -> stat.Panel:
    panel = _common(
        stat.Panel(), title, description, targets, unit=unit, thresholds=thresholds,
        color=dm.FieldColorModeId.THRESHOLDS, mappings=mappings, overrides=None,
    )
    panel = (
        panel.color_mode(cm.BigValueColorMode.BACKGROUND)
        .graph_mode(cm.BigValueGraphMode.NONE)
        .justify_mode(cm.BigValueJustifyMode.AUTO)
        .orientation(cm.VizOrientation.AUTO)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))
        .text_mode(text_mode)
    )
    if no_value is not None:
        panel = panel.no_value(no_value)
    if decimals is not None:
        panel = panel.decimals(decimals)
    return _sized(panel, 6, 5)


def _timeseries(
    title: str, description: str, targets: Targets, *, unit: str = "short",
    stacked: bool = False, axis_label: str = "",
    overrides: list[tuple[str, list[dm.DynamicConfigValue]]] | None = None,
) -> timeseries.Panel:
    panel = _common(
        timeseries.Panel(), title, description, targets, unit=unit, thresholds=None,
        color=dm.FieldColorModeId.PALETTE_CLASSIC, mappings=None, overrides=overrides,
    )
    panel = (
        panel.axis_label(axis_label)
        .draw_style(cm.GraphDrawStyle.LINE)
        .fill_opacity(30 if stacked else 10)
        .line_interpolation(cm.LineInterpolation.STEP_AFTER)
        .line_width(1)
        .show_points(cm.VisibilityMode.NEVER)
        .span_nulls(False)
        .stacking(cb.StackingConfig().group("A").mode(
            cm.StackingMode.NORMAL if stacked else cm.StackingMode.NONE))
        .thresholds_style(cb.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.OFF))
        .legend(cb.VizLegendOptions().calcs(["lastNotNull", "max"])
                .display_mode(cm.LegendDisplayMode.TABLE)
                .placement(cm.LegendPlacement.BOTTOM).show_legend(True))
        .tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI)
                 .sort(cm.SortOrder.DESCENDING))
    )
    return _sized(panel, 12, 8)


def _table(
    title: str, description: str, targets: Targets, *,
    organize: Json, sort_by: str | None = None,
    overrides: list[tuple[str, list[dm.DynamicConfigValue]]] | None = None,
) -> table.Panel:
    panel = _common(
        table.Panel(), title, description, targets, unit="short", thresholds=None,
        color=dm.FieldColorModeId.PALETTE_CLASSIC, mappings=None, overrides=overrides,
    )
    panel = (
        panel.align(cm.FieldTextAlignment.AUTO)
        .cell_options(cm.TableAutoCellOptions())
        .inspect(False)
        .cell_height(cm.TableCellHeight.SM)
        .footer(cb.TableFooterOptions().show(False))
        .show_header(True)
        .with_transformation(dm.DataTransformerConfig(id_val="organize", options=organize))
    )
    if sort_by is not None:
        panel = panel.sort_by([cb.TableSortByFieldState().display_name(sort_by).desc(False)])
    return _sized(panel, 24, 8)


def _row(title: str, *, repeat: str | None = None) -> db.Row:
    row = db.Row(title).collapsed(False)
    return row.repeat(repeat) if repeat is not None else row


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


def _severity_mappings() -> list[dm.ValueMapping]:
    colors = {"critical": "red", "warning": "orange", "info": "blue"}
    return [_value_map({sev: (color, sev) for sev, color in colors.items()})]


UP_DOWN: list[dm.ValueMapping] = [_value_map({"0": ("red", "DOWN"), "1": ("green", "UP")})]
# runpod_gpu_availability's levels (docs/metrics.md)
STOCK: list[dm.ValueMapping] = [_value_map({
    "0": ("red", "NONE"), "1": ("orange", "LOW"), "2": ("yellow", "MEDIUM"),
    "3": ("green", "HIGH"),
})]


# -- rows ------------------------------------------------------------------------------


def account_row() -> list[Item]:
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


def diagnoses_row() -> list[Item]:
    table = _table(
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
        sort_by="severity",
        overrides=[
            _override("severity", ("mappings", _severity_mappings()),
                      ("custom.cellOptions", {"type": "color-text"})),
            _override("endpoint", ("mappings", [dm.SpecialValueMap(
                options=dm.DashboardSpecialValueMapOptions(
                    match=dm.SpecialValueMatch.EMPTY,
                    result=dm.ValueMappingResult(index=0, text="(account)"),
                ),
            )])),
        ],
        organize={
            "excludeByName": {"Time": True, "Value": True},
            "indexByName": {"severity": 0, "code": 1, "endpoint": 2, "endpoint_id": 3},
            "renameByName": {},
        },
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


def endpoint_row() -> list[Item]:
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
            mappings=UP_DOWN,
        ),
        _stat(
            "/health HTTP status",
            "Last HTTP status of /health (0: no answer). A 404 while GraphQL lists the "
            "endpoint means balance_exhausted, endpoint_disabled or never_started.",
            [_target(f"max(runpod_endpoint_http_status{{{EP}}})")],
            thresholds=_thresholds(("red", None), ("green", 200), ("red", 300)),
            mappings=[_value_map({"0": ("red", "no answer")})],
        ),
        _timeseries(
            "Worker restarts",
            "Worker restarts per interval, read from consecutive REST v2 worker records (a "
            "worker id replaced, or startedAt reset), each counted once. A steady rise with "
            "jobs queued is crash_loop.",
            [_target(
                f"sum(increase(runpod_endpoint_worker_restarts_total{{{EP}}}"
                f"[$__rate_interval]))", "restarts",
            )],
        ),
        _timeseries(
            "Stale workers",
            "Running or idle workers that serve an older release than the endpoint's "
            "(isStale), and the release (endpointVersion). Stale workers that stay after a "
            "release are a stuck rollout (stale_release).",
            _targets(
                (f"max(runpod_endpoint_workers_stale{{{EP}}})", "stale workers"),
                (f"max(runpod_endpoint_version{{{EP}}})", "release"),
            ),
        ),
        _timeseries(
            "Billed spend per hour",
            "What REST v2 billing charged the endpoint in its last complete hour (USD/h), "
            "beside the estimated cost of the jobs the monitor saw finish in the last hour.",
            _targets(
                (f"max(runpod_endpoint_billed_usd_per_hour{{{EP}}})", "billed USD/h"),
                (f"sum(increase(runpod_job_cost_estimated_usd_sum{{{EP}}}[1h]))",
                 "estimated jobs, last hour"),
            ),
            unit="currencyUSD",
        ),
        _stat(
            "Worker data age",
            "Seconds since the endpoint's freshest REST v2 worker record (the v2 budget reads "
            "endpoints in trouble first). Orange past 90 s, red past 5 min.",
            [_target(f"time() - max(runpod_endpoint_workers_seen_timestamp_seconds{{{EP}}})")],
            unit="s", decimals=0,
            thresholds=_thresholds(("green", None), ("orange", 90), ("red", 300)),
        ),
        _sized(_table(
            "Configuration",
            "GPU tiers, network volume and its datacenter (runpod_endpoint_info).",
            [_target(f"max by (endpoint_id, gpu_ids, network_volume_id, datacenter) "
                     f"(runpod_endpoint_info{{{EP}}})", instant=True)],
            organize={"excludeByName": {"Time": True, "Value": True},
                      "indexByName": {}, "renameByName": {}},
        ), 12, 5),
    ]


def monitor_row() -> list[Item]:
    return [
        _row("Monitor health"),
        _sized(_stat(
            "Monitor up",
            "Whether Prometheus can scrape the monitor (job runpod-monitor).",
            [_target('min(up{job="runpod-monitor"})')],
            thresholds=_thresholds(("red", None), ("green", 1)),
            mappings=UP_DOWN,
        ), 6, 8),
        _sized(_stat(
            "Last good answer, age",
            "Seconds since each probe last got a good answer from RunPod: how fresh the data "
            "is. RunPodMonitorStaleData fires past 5 minutes for GraphQL. The status probe "
            "runs only while registered jobs are followed, so its age may grow legitimately.",
            [_target("time() - runpod_probe_last_success_timestamp_seconds", "{{probe}}")],
            unit="s", decimals=0,
            thresholds=_thresholds(("green", None), ("orange", 90), ("red", 300)),
            text_mode=cm.BigValueTextMode.VALUE_AND_NAME,
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


def v2_row() -> list[Item]:
    return [
        _row("REST v2 and GPUs"),
        _timeseries(
            "REST v2 call budget",
            "RunPod's per-window quota of REST v2 calls (RateLimit-Policy), what the monitor "
            "may still spend in the current window and what it spent. Remaining near 0 "
            "means the budget, not RunPod, decides which endpoints' workers are read.",
            _targets(
                ("max by (window) (runpod_monitor_v2_budget_quota)", "{{window}} quota"),
                ("min by (window) (runpod_monitor_v2_budget_remaining)",
                 "{{window}} remaining"),
                ("max by (window) (runpod_monitor_v2_budget_spent)", "{{window}} spent"),
            ),
            axis_label="calls",
        ),
        _timeseries(
            "REST v2 calls and 429s",
            "REST v2 calls per minute by kind, and the answers 429 (the per-user quota).",
            _targets(
                ("sum by (kind) (rate(runpod_monitor_v2_budget_calls_total"
                 "[$__rate_interval])) * 60", "{{kind}}"),
                ("sum(rate(runpod_monitor_v2_budget_throttled_total[$__rate_interval])) * 60",
                 "429"),
            ),
            axis_label="calls per minute",
        ),
        _table(
            "GPU availability",
            "GPU stock by type, pool and datacenter from the REST v2 catalog (NONE, LOW, "
            "MEDIUM, HIGH). A pool with NONE in the datacenter a network volume pins is "
            "no_gpu_capacity waiting to happen.",
            [_target(
                'max by (pool, gpu_type, datacenter) '
                '(runpod_gpu_availability{datacenter!=""})', instant=True,
            )],
            sort_by="pool",
            overrides=[_override("Value", ("mappings", STOCK),
                                 ("custom.cellOptions", {"type": "color-background"}),
                                 ("displayName", "stock"))],
            organize={
                "excludeByName": {"Time": True},
                "indexByName": {"pool": 0, "gpu_type": 1, "datacenter": 2, "Value": 3},
                "renameByName": {},
            },
        ),
    ]


# -- layout ----------------------------------------------------------------------------

_GRID_WIDTH = 24


def _sized(panel: P, w: int, h: int) -> P:
    """`panel` with a size other than its kind's default."""
    return panel.span(w).height(h)


def _layout(items: list[Item]) -> db.Dashboard:
    """A dashboard holding `items` in order: ids 1.., rows full width, panels left to right.

    The SDK places a panel only when it has no position, and lets it run past the 24-column
    grid; so every position is set here, wrapping a panel that would not fit.
    """
    dash = db.Dashboard(TITLE)
    x = y = line_h = 0
    for pid, item in enumerate(items, start=1):
        if isinstance(item, db.Row):
            if x:
                y += line_h
            dash = dash.with_row(item.id(pid).grid_pos(dm.GridPos(h=1, w=_GRID_WIDTH, x=0, y=y)))
            y += 1
            x = line_h = 0
            continue
        size = item.build().grid_pos
        assert size is not None, "every panel helper sizes its panel (_sized)"
        w, h = size.w, size.h
        if x + w > _GRID_WIDTH:
            y += line_h
            x = line_h = 0
        dash = dash.with_panel(item.id(pid).grid_pos(dm.GridPos(h=h, w=w, x=x, y=y)))
        x += w
        line_h = max(line_h, h)
    return dash


def _templating(dash: db.Dashboard) -> db.Dashboard:
    query = "label_values(runpod_endpoint_info, endpoint)"
    return dash.with_variable(
        db.DatasourceVariable("datasource").label("Data source").type("prometheus")
        .hide(dm.VariableHide.DONT_HIDE).multi(False).include_all(False).regex("")
    ).with_variable(
        db.QueryVariable("endpoint").label("Endpoint").datasource(DATASOURCE)
        .hide(dm.VariableHide.DONT_HIDE)
        .query({"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor"})
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(True).include_all(True).all_value(".*").regex("")
    )


def build() -> dm.Dashboard:
    """The whole dashboard as Grafana's model (grafana_foundation_sdk), ready for provisioning."""
    dash = _layout(account_row() + diagnoses_row() + endpoint_row() + v2_row() + monitor_row())
    dash = _templating(dash)
    return (
        dash.uid(UID)
        .description(
            "runpod-monitor: account, active diagnoses, per-endpoint workers, queue, jobs, "
            "restarts and spend, the REST v2 budget and GPU stock, and the monitor's own "
            "health. Generated by dashboards/generate.py with "
            "Grafana's Foundation SDK; edit that, not this file."
        )
        .annotation(
            db.AnnotationQuery().built_in(1).name("Annotations & Alerts")
            .datasource(dm.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .enable(True).hide(True).icon_color("rgba(0, 211, 255, 1)").type("dashboard")
        )
        .editable()
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .refresh("30s")
        .tags(["runpod", "serverless", "runpod-monitor"])
        .time("now-6h", "now")
        .timezone(cm.TimeZoneBrowser)
        .version(1)
        .build()
    )


def dashboard() -> Json:
    """The dashboard as the JSON object Grafana reads."""
    data: Json = json.loads(json.dumps(build(), cls=JSONEncoder))
    return data


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
