"""Small server-rendered SVG charts for the status page: step lines and stacked areas over
time, with incident spans marked (a tint behind, a bar on top). No script, no asset.

The drawing is the data: inside each chart, x is seconds since the chart's `data-t0` (unix
seconds) and y is the value itself (the group is flipped, the viewBox stretched to the
box), so a path `M0 0V6H60V5H120` says "6 from t0 to t0+60 s, then 5 until t0+120 s".
A series is one `<path data-series=...>`; a gap in the data is a new subpath (`M`).
Times are rounded to the second; callers round values to 3 decimals (`num` prints 3).
Spans are `<rect data-code=...>` with x and width in the same seconds.
tests/test_status_page.py reads them back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

# Above this many samples a series is bucketed (the max of each bucket: a spike stays
# visible), so a chart's size is bounded whatever the interval and the retention.
MAX_POINTS = 360
# Samples further apart than this many intervals are not joined: the gap shows.
GAP_INTERVALS = 2.5
# Tick spacings to choose from (seconds): the smallest giving at most 4 ticks.
TICK_STEPS = (10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
              86400)

Values = Sequence[float | None]


def num(v: float) -> str:
    """A coordinate as short text: integers bare, else at most 3 decimals."""
    if v == int(v):
        return str(int(v))
    return f"{v:.3f}".rstrip("0").rstrip(".")


@dataclass(frozen=True, slots=True)
class Window:
    """The time range a set of charts shares: [t0, t1), in unix seconds; `step` the
    spacing of its samples (the probe interval, or the bucket width)."""

    t0: int
    t1: int
    step: float

    @property
    def span(self) -> int:
        return max(1, self.t1 - self.t0)

    def x(self, t: float) -> int:
        return round(t - self.t0)


def window(times: Sequence[float], interval_s: float) -> Window:
    """The window over sample `times` (oldest first): from the first to the last sample's
    end; its step is the interval, or the bucket width."""
    t0 = round(times[0])
    t1 = round(times[-1] + interval_s)
    step = interval_s
    if len(times) > MAX_POINTS:
        step = max(interval_s, (t1 - t0) / MAX_POINTS)
    return Window(t0, max(t1, t0 + 1), step)


def bucket(w: Window, times: Sequence[float], series: Sequence[Values]
           ) -> tuple[list[float], list[list[float | None]]]:
    """`times` and each of `series` on the window's step: as they are when the window is
    not bucketed, else one sample per bucket, the max of the known values in it."""
    if len(times) <= MAX_POINTS:
        return list(times), [list(s) for s in series]
    keys: list[int] = []
    out_t: list[float] = []
    out: list[list[float | None]] = [[] for _ in series]
    for i, t in enumerate(times):
        k = int((t - w.t0) / w.step)
        if not keys or keys[-1] != k:
            keys.append(k)
            out_t.append(w.t0 + k * w.step)
            for o in out:
                o.append(None)
        for s, o in zip(series, out, strict=True):
            v = s[i]
            if v is not None and (o[-1] is None or v > o[-1]):
                o[-1] = v
    return out_t, out


Run = tuple[int, int, float]  # x from, x to, value


@dataclass(frozen=True, slots=True)
class Grid:
    """Where each sample of a series sits: its x, where its step ends (the next sample's x,
    or one step on when the next is missing or too far), and whether the next joins it."""

    xs: list[int]
    ends: list[int]
    joined: list[bool]


def grid(w: Window, times: Sequence[float]) -> Grid:
    """The grid of sample `times` (oldest first) in window `w`, shared by its series."""
    xs = [w.x(t) for t in times]
    n = len(xs)
    joined = [i + 1 < n and times[i + 1] - times[i] <= GAP_INTERVALS * w.step
              for i in range(n)]
    ends = [
        max(x + 1, xs[i + 1] if joined[i] else min(w.x(times[i] + w.step), w.span))
        for i, x in enumerate(xs)
    ]
    return Grid(xs, ends, joined)


def runs(g: Grid, values: Values) -> list[list[Run]]:
    """The step function of `values` on grid `g`: runs of equal value, split into subpaths
    at gaps (no value, or samples too far apart). A sample holds until the next one."""
    out: list[list[Run]] = []
    cur: list[Run] = []
    xs, ends, joined = g.xs, g.ends, g.joined
    for i, v in enumerate(values):
        if v is None:
            if cur:
                out.append(cur)
                cur = []
            continue
        if cur and cur[-1][2] == v:
            cur[-1] = (cur[-1][0], ends[i], v)
        else:
            cur.append((xs[i], ends[i], v))
        if not joined[i]:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def line_path(parts: list[list[Run]]) -> str:
    """A step line through the runs."""
    d = []
    for part in parts:
        x0, x1, v = part[0]
        d.append(f"M{x0} {num(v)}H{x1}")
        d.extend(f"V{num(v)}H{x1}" for _, x1, v in part[1:])
    return "".join(d)


def area_path(parts: list[list[Run]], base: float) -> str:
    """The area between the step function and `base`."""
    d = []
    b = num(base)
    for part in parts:
        x0 = part[0][0]
        d.append(f"M{x0} {b}")
        d.extend(f"V{num(v)}H{x1}" for _, x1, v in part)
        d.append(f"V{b}Z")
    return "".join(d)


@dataclass(frozen=True, slots=True)
class Span:
    """A marked stretch of time behind a chart: an incident at one severity."""

    t_from: float
    t_to: float
    severity: str
    code: str
    label: str  # the tooltip: what and when


def _step(w: Window) -> int:
    return next((s for s in TICK_STEPS if w.span / s <= 4), -(-w.span // 4))


def ticks(w: Window) -> list[int]:
    """Tick times (unix seconds) on round multiples of a step giving at most 4."""
    step = _step(w)
    first = -(-w.t0 // step) * step
    return list(range(first, w.t1, step))


def axis(w: Window) -> str:
    """HTML tick labels (UTC) under a chart, placed at their share of the width."""
    fmt = "%H:%M" if _step(w) >= 60 else "%H:%M:%S"
    at = [(t, 100 * (t - w.t0) / w.span) for t in ticks(w)]
    # a label centred on a tick near either edge would be cut off: only its gridline shows
    labels = "".join(
        f'<span style="left:{pct:.1f}%">{datetime.fromtimestamp(t, UTC).strftime(fmt)}</span>'
        for t, pct in at if 6 <= pct <= 93
    )
    return f'<div class="ax" aria-hidden="true">{labels}</div>'


def chart(
    w: Window,
    name: str,
    lo: float,
    hi: float,
    paths: Sequence[tuple[str, str, str]],
    spans: Sequence[Span] = (),
    *,
    label: str = "",
) -> str:
    """One chart: `paths` are (series name, css class, path data), drawn in order over
    the `spans`, on the value range [lo, hi] (padded so a line at either end shows);
    `label` is what a screen reader says (the name by default)."""
    if hi <= lo:
        hi = lo + 1
    pad = (hi - lo) * 0.08
    bottom, top = lo - pad, hi + pad
    grid = "".join(f"M{w.x(t)} {num(bottom)}V{num(top)}" for t in ticks(w))
    rects: list[str] = []
    bars: list[str] = []
    for s in spans:
        x0, x1 = max(0, w.x(s.t_from)), min(w.span, w.x(s.t_to))
        if x1 <= x0:
            continue
        # a tint over the whole height behind the data, and a bar along the top over it
        rects.append(
            f'<rect class="sp {escape(s.severity)}" x="{x0}" y="{num(bottom)}" '
            f'width="{x1 - x0}" height="{num(top - bottom)}" data-code="{escape(s.code)}">'
            f"<title>{escape(s.label)}</title></rect>"
        )
        bars.append(f'<path class="bar {escape(s.severity)}" d="M{x0} {num(top)}H{x1}"/>')
    body = "".join(
        f'<path class="{escape(cls)}" data-series="{escape(series)}" d="{d}"/>'
        for series, cls, d in paths if d
    )
    return (
        f'<svg class="chart" viewBox="0 {num(-top)} {w.span} {num(top - bottom)}" '
        f'preserveAspectRatio="none" role="img" aria-label="{escape(label or name)}" '
        f'data-chart="{escape(name)}" data-t0="{w.t0}">'
        f'<g transform="scale(1 -1)">{"".join(rects)}'
        f'<path class="grid" d="{grid}"/>{body}{"".join(bars)}</g></svg>'
    )
