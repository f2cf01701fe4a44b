"""Every rule's threshold, validated: the schema of `config.yaml`'s `rules:` section."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# an endpoint id or name, as `endpoints:` takes them
EndpointRef = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                               max_length=200)]


class Thresholds(BaseModel):
    """Every rule threshold; `config.yaml` `rules:` sets them (same keys)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # capacity
    throttled_cycles: int = Field(2, ge=1, description="no_gpu_capacity: consecutive cycles")
    not_scheduling_s: float = Field(300, gt=0, description="not_scheduling: seconds")
    queue_backlog_jobs: int = Field(10, ge=1, description="queue_backlog: inQueue at least")
    queue_backlog_s: float = Field(300, gt=0, description="queue_backlog: seconds")
    # worker lifecycle
    crash_loop_s: float = Field(300, gt=0, description="crash_loop with restarts: seconds")
    crash_loop_restarts: int = Field(2, ge=1, description="crash_loop: restarts seen")
    crash_loop_no_restart_s: float = Field(900, gt=0, description="crash_loop, none seen")
    crash_loop_cold_start_factor: float = Field(2.0, gt=0, description="x longest cold start")
    crash_loop_records_s: float = Field(
        120, gt=0, description="crash_loop with restarts counted from worker records: seconds"
    )
    idle_workers_queued_s: float = Field(300, gt=0, description="idle_workers_queued: s")
    # releases (REST v2)
    stale_release_s: float = Field(
        1800, gt=0, description="stale_release: stale workers this long after a release"
    )
    template_drift_s: float = Field(
        600, gt=0, description="stale_release: config and current workers' image differ"
    )
    release_window_s: float = Field(
        1800, gt=0, description="a diagnosis beginning this soon after a release names it"
    )
    # jobs
    job_failures_window_s: float = Field(600, gt=0, description="job_failures: window")
    job_failures_min: int = Field(3, ge=1, description="job_failures: failed rise at least")
    job_failures_ratio: float = Field(0.5, gt=0, le=1, description="job_failures: share")
    # spend: jobs that cost money without results
    job_overrun_factor: float = Field(3.0, gt=1, description="job_overrun: x p95")
    job_overrun_floor_s: float = Field(600, gt=0, description="job_overrun: at least")
    job_overrun_min_jobs: int = Field(5, ge=1, description="job_overrun: jobs for a p95")
    job_overrun_grace_s: float = Field(60, ge=0, description="job_overrun: past timeout")
    empty_output_window_s: float = Field(1800, gt=0, description="empty_output: window")
    empty_output_min: int = Field(3, ge=1, description="empty_output: empty jobs at least")
    empty_output_ratio: float = Field(0.5, gt=0, le=1, description="empty_output: share")
    empty_output_expected: tuple[EndpointRef, ...] = Field(
        (), description="empty_output: endpoints (ids or names) that return nothing"
    )
    cold_start_factor: float = Field(2.0, gt=1, description="cold_start_regression: x")
    cold_start_margin_s: float = Field(30, ge=0, description="...and this much slower")
    cold_start_baseline_min: int = Field(3, ge=1, description="cold starts in the baseline")
    cold_start_recent: int = Field(2, ge=1, description="recent cold starts all slower")
    # endpoint state
    not_found_cycles: int = Field(2, ge=1, description="REST 404: consecutive cycles")
    # account
    auth_cycles: int = Field(2, ge=1, description="auth_invalid: consecutive cycles")
    api_error_cycles: int = Field(3, ge=1, description="runpod_api_errors: cycles")
    low_balance_runway_h: float = Field(24, gt=0, description="low_balance: runway hours")
    low_balance_critical_runway_h: float = Field(2, ge=0, description="critical under")
    low_balance_usd: float = Field(5, ge=0, description="low_balance: balance under")
    idle_spend_s: float = Field(1800, gt=0, description="idle_spend: seconds")
    volume_usd_per_gb_month: float = Field(0.07, ge=0, description="network volume price")
    volume_usd_per_gb_month_over_1tb: float = Field(0.05, ge=0, description="from 1 TB")
    pod_disk_usd_per_gb_month: float = Field(0.20, ge=0, description="a stopped pod's disk")
    # template audit
    container_disk_min_gb: int = Field(20, ge=0, description="container_disk_small")
    container_disk_no_volume_min_gb: int = Field(50, ge=0, description="without a volume")

    @property
    def longest_window_s(self) -> float:
        """The longest time any rule looks back, to size the history."""
        return max(
            self.not_scheduling_s,
            self.queue_backlog_s,
            self.crash_loop_no_restart_s,
            self.idle_workers_queued_s,
            self.job_failures_window_s,
            self.idle_spend_s,
            self.stale_release_s,
            self.template_drift_s,
            self.empty_output_window_s,
        )
