"""The REST v2 facts beyond spec/metrics.md (docs/metrics.md): per endpoint the worker
restarts counted from consecutive `/workers` records, the stale workers and the endpoint
version; per GPU type, pool and datacenter the catalog's availability.

One collector for generate_latest and one text writer for the fast path, byte-identical; a
family appears with its first sample (a GraphQL-only monitor shows none of them).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from model.observation import GpuStock, Workers
from monitor.metrics.renderer import _esc, _header, _num
from rules.worker_records import RestartTrack, restart_step, stale_workers

# The catalog's availability words as a number, for thresholds and colours.
AVAILABILITY_LEVELS = {"NONE": 0, "LOW": 1, "MEDIUM": 2, "HIGH": 3}
# At most this many availability series: RunPod's catalog lists a few dozen GPU types in a
# few dozen datacenters; an answer listing more is cut (the watched endpoints' pools first).
MAX_GPU_SERIES = 1000

_POLLED = "Polled in the background; a scrape never calls RunPod."


@dataclass(frozen=True, slots=True)
class EndpointFacts:
    """One watched endpoint's v2 worker facts, as the families show them."""

    endpoint_id: str
    endpoint: str
    restarts: int  # since the monitor started (the counter)
    stale: int  # workers serving an older release in the newest record
    version: int | None  # endpointVersion of the newest record


@dataclass(frozen=True, slots=True)
class V2Snapshot:
    endpoints: tuple[EndpointFacts, ...] = ()
    # (gpu_type, pool, datacenter, level); datacenter "" : the type over every datacenter
    gpus: tuple[tuple[str, str, str, int], ...] = ()


def _families() -> tuple[CounterMetricFamily, GaugeMetricFamily, GaugeMetricFamily,
                        GaugeMetricFamily]:
    ep = ["endpoint_id", "endpoint"]
    return (
        CounterMetricFamily(
            "runpod_endpoint_worker_restarts",
            "Worker restarts counted from consecutive REST v2 worker records (an id "
            "replaced, or startedAt / uptime reset), each once, since the monitor started. "
            f"An addition beyond spec/metrics.md. {_POLLED}",
            labels=ep,
        ),
        GaugeMetricFamily(
            "runpod_endpoint_workers_stale",
            "Running or idle workers that serve an older release than the endpoint's "
            f"(isStale), in the newest worker record. An addition beyond spec/metrics.md. "
            f"{_POLLED}",
            labels=ep,
        ),
        GaugeMetricFamily(
            "runpod_endpoint_version",
            "The endpoint's current release (endpointVersion) in the newest worker record. "
            f"An addition beyond spec/metrics.md. {_POLLED}",
            labels=ep,
        ),
        GaugeMetricFamily(
            "runpod_gpu_availability",
            "GPU stock from the REST v2 catalog: 0 NONE, 1 LOW, 2 MEDIUM, 3 HIGH; "
            "datacenter=\"\" is the type over every datacenter. An addition beyond "
            f"spec/metrics.md. {_POLLED}",
            labels=["gpu_type", "pool", "datacenter"],
        ),
    )


class V2FactsCollector:
    """The families of the latest `V2Snapshot`; each family only once it has a sample."""

    def __init__(self) -> None:
        self.snapshot = V2Snapshot()

    def describe(self) -> Iterable[Metric]:
        return list(_families())

    def collect(self) -> Iterable[Metric]:
        restarts, stale, version, gpus = _families()
        for e in self.snapshot.endpoints:
            ids = [e.endpoint_id, e.endpoint]
            restarts.add_metric(ids, e.restarts)
            stale.add_metric(ids, e.stale)
            if e.version is not None:
                version.add_metric(ids, e.version)
        for gpu_type, pool, dc, level in self.snapshot.gpus:
            gpus.add_metric([gpu_type, pool, dc], level)
        return [f for f in (restarts, stale, version, gpus) if f.samples]


class V2FactsText:
    """What generate_latest writes for a `V2FactsCollector`, each line kept while its
    labels and value stay the same (at N = 1,000 most lines repeat from the last cycle)."""

    def __init__(self) -> None:
        self._headers = [_header(f) for f in _families()]
        self._text: tuple[V2Snapshot, bytes] | None = None
        self._lines: dict[tuple[int, str, str, float], str] = {}

    def render(self, snap: V2Snapshot) -> bytes:
        if self._text is not None and self._text[0] is snap:
            return self._text[1]
        lines: dict[tuple[int, str, str, float], str] = {}
        columns: list[list[str]] = [[], [], [], []]
        names = ("runpod_endpoint_worker_restarts_total", "runpod_endpoint_workers_stale",
                 "runpod_endpoint_version")
        for e in snap.endpoints:
            for k, value in enumerate((e.restarts, e.stale, e.version)):
                if value is None:
                    continue
                key = (k, e.endpoint_id, e.endpoint, value)
                line = self._lines.get(key) or lines.get(key)
                if line is None:
                    line = (f'{names[k]}{{endpoint="{_esc(e.endpoint)}",'
                            f'endpoint_id="{_esc(e.endpoint_id)}"}} {_num(value)}\n')
                lines[key] = line
                columns[k].append(line)
        for gpu_type, pool, dc, level in snap.gpus:
            columns[3].append(
                f'runpod_gpu_availability{{datacenter="{_esc(dc)}",gpu_type="{_esc(gpu_type)}",'
                f'pool="{_esc(pool)}"}} {_num(level)}\n'
            )
        self._lines = lines
        out = [h + "".join(c) for h, c in zip(self._headers, columns, strict=True) if c]
        data = "".join(out).encode()
        self._text = (snap, data)
        return data


class V2Facts:
    """What the recorder keeps between cycles for these families: per endpoint the restart
    detection's track, its count and the newest record; the catalog's series."""

    def __init__(self) -> None:
        self.collector = V2FactsCollector()
        self.text = V2FactsText()
        self._tracks: dict[str, RestartTrack] = {}
        self._restarts: dict[str, int] = {}
        self._latest: dict[str, Workers] = {}
        self._gpus: tuple[tuple[str, str, str, int], ...] = ()
        self._stock_t: float | None = None  # when the catalog was last read

    def observe(self, t: float, workers: dict[str, Workers], names: dict[str, str],
                stock: Sequence[GpuStock] | None, pools: Iterable[str]) -> None:
        """Take one cycle: this cycle's `/workers` answers by endpoint, the watched
        endpoints' labels (`names`: every watched one), the catalog (None: unknown now)."""
        for eid, record in workers.items():
            found, self._tracks[eid] = restart_step(
                self._tracks.get(eid, RestartTrack()), (t, record))
            self._restarts[eid] = self._restarts.get(eid, 0) + len(found)
            self._latest[eid] = record
        for table in (self._tracks, self._restarts, self._latest):
            for eid in [e for e in table if e not in names]:
                del table[eid]
        # the catalog rides only on the cycle that read it (every catalog period, 15 min by
        # default): the gauges show the last read until the next, and go once it is older
        # than STOCK_KEEP_S (unknown is not the last value)
        if stock is not None:
            self._gpus = gpu_series(stock, set(pools))
            self._stock_t = t
        elif self._stock_t is None or t - self._stock_t > STOCK_KEEP_S:
            self._gpus = ()
        endpoints = tuple(
            EndpointFacts(eid, names[eid], self._restarts[eid],
                          len(stale_workers(w)), w.endpoint_version)
            for eid, w in self._latest.items()
        )
        self.collector.snapshot = V2Snapshot(endpoints, self._gpus)

    def data(self) -> bytes:
        return self.text.render(self.collector.snapshot)


STOCK_KEEP_S = 1800.0  # two default catalog periods


def gpu_series(stock: Sequence[GpuStock], pools: set[str]) -> tuple[tuple[str, str, str, int],
                                                                     ...]:
    """The availability series of a catalog: per type its overall level (datacenter "")
    and one per datacenter it lists; words other than NONE..HIGH are left out. The types of
    the watched endpoints' `pools` come first, and at most MAX_GPU_SERIES are kept."""
    ordered = sorted(stock, key=lambda g: g.pool not in pools)  # stable: catalog order kept
    out: list[tuple[str, str, str, int]] = []
    seen: set[tuple[str, str]] = set()
    for g in ordered:
        pool = g.pool or ""
        pairs = [("", g.availability or ""), *g.datacenters]
        for dc, word in pairs:
            level = AVAILABILITY_LEVELS.get(word)
            if level is None or (g.gpu_type, dc) in seen:
                continue
            seen.add((g.gpu_type, dc))
            out.append((g.gpu_type, pool, dc, level))
            if len(out) >= MAX_GPU_SERIES:
                return tuple(out)
    return tuple(out)
