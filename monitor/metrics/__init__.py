"""The Prometheus exposition of spec/metrics.md: `collectors` (the families and the
snapshot gauges), `renderer` (the fast text, byte-identical to generate_latest), `recorder`
(`MonitorMetrics`, the event API the pipeline and the outbox call) and `http` (the `/metrics`
route's gzip).
"""

from monitor.metrics.collectors import (
    CYCLE_BUCKETS,
    ENDPOINT_JOB_STATES,
    ERROR_REASONS,
    EXTENSIONS,
    JOB_BUCKETS,
    PROBE_BUCKETS,
    SEEN_JOBS_MAX,
    BudgetCollector,
    BudgetSnapshot,
    EndpointState,
    Snapshot,
    SnapshotCollector,
    error_reason,
)
from monitor.metrics.recorder import (
    BudgetView,
    BudgetWindowView,
    CycleFacts,
    MonitorMetrics,
    ProbeTiming,
)

__all__ = [
    "CYCLE_BUCKETS",
    "ENDPOINT_JOB_STATES",
    "ERROR_REASONS",
    "EXTENSIONS",
    "JOB_BUCKETS",
    "PROBE_BUCKETS",
    "SEEN_JOBS_MAX",
    "BudgetCollector",
    "BudgetSnapshot",
    "BudgetView",
    "BudgetWindowView",
    "CycleFacts",
    "EndpointState",
    "MonitorMetrics",
    "ProbeTiming",
    "Snapshot",
    "SnapshotCollector",
    "error_reason",
]
