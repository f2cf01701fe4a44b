"""The fast `/metrics` text: what generate_latest writes for the per-endpoint families (the
snapshot gauges, the job histograms), byte for byte, without its per-sample cost, re-rendering
only what changed (benchmarks/README.md: a scrape of N = 1000 in 18 ms instead of 845).
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from model.observation import WORKER_STATES
from monitor.metrics.collectors import (
    ENDPOINT_JOB_STATES,
    BudgetCollector,
    BudgetSnapshot,
    EndpointState,
    Snapshot,
    SnapshotCollector,
)


def _esc(value: str) -> str:
    """A label value escaped as client_python's text format escapes it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


def _go(value: float) -> str:
    """A sample value as client_python writes it."""
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


_INT_TEXT: dict[int, str] = {}


def _num(value: float) -> str:
    """`_go`, memoized for ints (worker and job counts, statuses)."""
    if type(value) is not int:
        return _go(value)
    text = _INT_TEXT.get(value)
    if text is None:
        text = _go(value)
        if len(_INT_TEXT) < 4096:
            _INT_TEXT[value] = text
    return text


def _header(family: Metric) -> str:
    """`# HELP` and `# TYPE` of a family, as generate_latest writes them (a counter's name
    with `_total`)."""
    doc = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
    name = f"{family.name}_total" if family.type == "counter" else family.name
    return f"# HELP {name} {doc}\n# TYPE {name} {family.type}\n"


class SnapshotText:
    """The snapshot families' text without generate_latest's per-sample cost.

    Rendered once per snapshot; an endpoint whose state did not change since the last
    render reuses its lines. Byte for byte the same text.
    """

    def __init__(self) -> None:
        self._headers = [_header(f) for f in SnapshotCollector.families(Snapshot())]
        # the text of the last snapshot rendered, and each endpoint's lines by state
        self._text: tuple[Snapshot, str] | None = None
        self._lines: dict[EndpointState, tuple[str, ...]] = {}

    def render(self, snap: Snapshot) -> str:
        """What generate_latest writes for a SnapshotCollector holding `snap`."""
        if self._text is not None and self._text[0] is snap:
            return self._text[1]
        h = self._headers
        out = [h[0]]
        account = snap.account
        if account is not None:
            out.append(f"runpod_account_balance_usd {_num(account.balance)}\n")
        out.append(h[1])
        if account is not None:
            out.append(f"runpod_account_spend_usd_per_hour {_num(account.spend_per_hr)}\n")
        out.append(h[2])
        if account is not None and account.spend_per_hr > 0:
            runway = account.balance / account.spend_per_hr * 3600
            out.append(f"runpod_account_runway_seconds {_num(runway)}\n")
        lines: dict[EndpointState, tuple[str, ...]] = {}
        columns: list[list[str]] = [[] for _ in range(8)]
        for e in snap.endpoints:
            per = lines.get(e) or self._lines.get(e) or _endpoint_lines(e)
            lines[e] = per
            for column, text in zip(columns, per, strict=True):
                column.append(text)
        self._lines = lines
        for header, column in zip(h[3:11], columns, strict=True):
            out.append(header)
            out.append("".join(column))
        out.append(h[11])
        for eid, name, code, severity in snap.diagnoses:
            out.append(
                f'runpod_diagnosis_active{{code="{_esc(code)}",endpoint="{_esc(name)}",'
                f'endpoint_id="{_esc(eid)}",severity="{_esc(severity)}"}} 1.0\n'
            )
        text = "".join(out)
        self._text = (snap, text)
        return text



class BudgetText:
    """The REST v2 budget families' text (`BudgetCollector`), as generate_latest writes it;
    an endpoint's freshness line is reused while its time and name stay the same."""

    def __init__(self) -> None:
        self._headers = [_header(f) for f in BudgetCollector.families(None)]
        self._text: tuple[BudgetSnapshot | None, bytes] | None = None
        self._seen: dict[tuple[str, str, float], str] = {}

    def render(self, snap: BudgetSnapshot | None) -> bytes:
        """What generate_latest writes for a BudgetCollector holding `snap`, UTF-8."""
        if self._text is not None and self._text[0] is snap:
            return self._text[1]
        h = self._headers
        v2 = "runpod_monitor_v2_budget"
        out: list[str] = []
        if snap is not None:  # no family before the first reading, as the collector
            columns: tuple[list[str], list[str], list[str]] = ([h[0]], [h[1]], [h[2]])
            for name, quota, remaining, spent in snap.windows:
                label = f'{{window="{_esc(name)}"}}'
                columns[0].append(f"{v2}_quota{label} {_num(quota)}\n")
                columns[1].append(f"{v2}_remaining{label} {_num(remaining)}\n")
                columns[2].append(f"{v2}_spent{label} {_num(spent)}\n")
            for column in columns:
                out.extend(column)
            out.append(h[3])
            out.append(f"{v2}_allowance {_num(snap.allowance)}\n")
            out.append(h[4])
            out.append(f"{v2}_exempt {'1.0' if snap.exempt else '0.0'}\n")
            out.append(h[5])
            out.extend(
                f'{v2}_calls_total{{kind="{_esc(kind)}"}} {_num(n)}\n' for kind, n in snap.calls
            )
            out.append(h[6])
            out.append(f"{v2}_throttled_total {_num(snap.throttled)}\n")
            out.append(h[7])
            out.append(f"{v2}_malformed_headers_total {_num(snap.malformed_headers)}\n")
            out.append(h[8])
            seen: dict[tuple[str, str, float], str] = {}
            for key in snap.workers_seen:
                line = self._seen.get(key)
                if line is None:
                    eid, name, t = key
                    line = (
                        "runpod_endpoint_workers_seen_timestamp_seconds"
                        f'{{endpoint="{_esc(name)}",endpoint_id="{_esc(eid)}"}} {_num(t)}\n'
                    )
                seen[key] = line
                out.append(line)
            self._seen = seen
        data = "".join(out).encode()
        self._text = (snap, data)
        return data


def _endpoint_lines(e: EndpointState) -> tuple[str, ...]:
    """One endpoint's lines of the 8 endpoint families, in `SnapshotCollector.families`' order."""
    ids = f'endpoint="{_esc(e.endpoint)}",endpoint_id="{_esc(e.endpoint_id)}"'
    info = (
        f'runpod_endpoint_info{{datacenter="{_esc(e.datacenter)}",{ids},'
        f'gpu_ids="{_esc(e.gpu_ids)}",network_volume_id="{_esc(e.network_volume_id)}"}} 1.0\n'
    )
    workers = jobs = ""
    if e.health is not None:
        h = e.health
        workers = "".join(
            f'runpod_endpoint_workers{{{ids},state="{state}"}} {_num(getattr(h, state))}\n'
            for state in WORKER_STATES
        )
        jobs = "".join(
            f'runpod_endpoint_jobs{{{ids},state="{state}"}} {_num(getattr(h, state))}\n'
            for state in ENDPOINT_JOB_STATES
        )
    return (
        info,
        workers,
        "" if e.workers_max is None
        else f"runpod_endpoint_workers_max{{{ids}}} {_num(e.workers_max)}\n",
        "" if e.workers_min is None
        else f"runpod_endpoint_workers_min{{{ids}}} {_num(e.workers_min)}\n",
        jobs,
        "" if e.queue_delay_s is None
        else f"runpod_endpoint_queue_delay_seconds{{{ids}}} {_num(e.queue_delay_s)}\n",
        f"runpod_endpoint_up{{{ids}}} {'1.0' if e.up else '0.0'}\n",
        f"runpod_endpoint_http_status{{{ids}}} {_num(e.http_status)}\n",
    )


class JobHistogram:
    """A job histogram (labels endpoint_id, endpoint) with its text kept beside it.

    Every change goes through here: the client_python histogram (what `collect()` and the
    registry show) and a copy of each series' counts, from which `text()` writes what
    generate_latest would, re-rendering only the series observed since the last call.
    """

    def __init__(self, histogram: Histogram, name: str, buckets: Sequence[float]) -> None:
        self.histogram = histogram
        self.name = name
        self.bounds = [*buckets, float("inf")]
        self.le = [f'le="{_go(b)}"' for b in self.bounds]
        self.header = "".join(_header(f) for f in histogram.describe())
        # (endpoint_id, endpoint) -> [count per bucket..., sum], in the histogram's order
        self.series: dict[tuple[str, str], list[float]] = {}
        self.blocks: dict[tuple[str, str], str] = {}
        self._data: bytes | None = None  # the whole family's text, until the next change

    def labels(self, eid: str, name: str) -> None:
        """Create the series (at 0) when it does not exist yet."""
        key = (str(eid), str(name))
        if key in self.series:
            return  # then so is the histogram's child: every change goes through here
        self.histogram.labels(eid, name)
        self.series[key] = [0.0] * (len(self.bounds) + 1)
        self._data = None

    def observe(self, eid: str, name: str, value: float) -> None:
        self.histogram.labels(eid, name).observe(value)
        key = (str(eid), str(name))
        counts = self.series.get(key)
        if counts is None:
            counts = self.series[key] = [0.0] * (len(self.bounds) + 1)
        counts[-1] += value  # as client_python: the sum first, then the first bucket that fits
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                counts[i] += 1
                break
        self.blocks.pop(key, None)
        self._data = None

    def remove(self, eid: str, name: str) -> None:
        self.histogram.remove(eid, name)
        self.series.pop((str(eid), str(name)), None)
        self.blocks.pop((str(eid), str(name)), None)
        self._data = None

    def data(self) -> bytes:
        """The family's exposition, UTF-8."""
        if self._data is None:
            out = [self.header]
            for key, counts in self.series.items():
                block = self.blocks.get(key)
                if block is None:
                    block = self.blocks[key] = self._block(key, counts)
                out.append(block)
            self._data = "".join(out).encode()
        return self._data

    def _block(self, key: tuple[str, str], counts: list[float]) -> str:
        ids = f'endpoint="{_esc(key[1])}",endpoint_id="{_esc(key[0])}"'
        lines = []
        total = 0.0
        for le, n in zip(self.le, counts, strict=False):
            total += n
            lines.append(f"{self.name}_bucket{{{ids},{le}}} {_go(total)}\n")
        lines.append(f"{self.name}_count{{{ids}}} {_go(total)}\n")
        lines.append(f"{self.name}_sum{{{ids}}} {_go(counts[-1])}\n")
        return "".join(lines)
