"""Building the alerting parts from the settings: sinks, outbox, silences, router."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from monitor.alerts.alertmanager import AlertmanagerSink
from monitor.alerts.model import Sink
from monitor.alerts.outbox import AlertMetrics, Outbox, OutboxStore
from monitor.alerts.router import AlertRouter, LogSink
from monitor.alerts.silences import SilenceBook
from monitor.alerts.slack import SlackSink
from monitor.config import Settings


def build_sinks(settings: Settings) -> list[Sink]:
    """Slack when a webhook URL or a bot token is set; Alertmanager when its URL is set;
    the log otherwise."""
    alerts = settings.alerts
    slack = alerts.slack
    sinks: list[Sink] = []
    if slack.webhook_url is not None:
        sinks.append(SlackSink(
            webhook_url=slack.webhook_url.get_secret_value(),
            min_severity=slack.min_severity, max_per_second=slack.max_per_second,
        ))
    elif slack.bot_token is not None:
        sinks.append(SlackSink(
            bot_token=slack.bot_token.get_secret_value(), channel=slack.channel,
            min_severity=slack.min_severity, max_per_second=slack.max_per_second,
        ))
    if alerts.alertmanager.url is not None:
        sinks.append(AlertmanagerSink(
            alerts.alertmanager.url, interval_s=settings.interval_s,
            min_severity=alerts.alertmanager.min_severity,
        ))
    if not sinks:
        sinks.append(LogSink())
    return sinks


def silences_path(settings: Settings) -> Path:
    """Where API silences are kept: beside the state database."""
    db = Path(settings.state.path)
    return db.with_name(db.name + ".silences.json")


def build_router(
    settings: Settings,
    store: OutboxStore,
    sinks: Sequence[Sink],
    *,
    metrics: AlertMetrics | None = None,
    silences_file: Path | None = None,
) -> AlertRouter:
    """The router with its outbox over `store` and the configured silences."""
    alerts = settings.alerts
    outbox = Outbox(store, sinks, metrics=metrics)
    return AlertRouter(
        outbox=outbox,
        group_wait_s=alerts.group_wait_s,
        repeat_interval_s=alerts.repeat_interval_s,
        silences=SilenceBook(alerts.silences, silences_file),
    )
