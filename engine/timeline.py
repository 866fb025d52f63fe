"""Topics over time: per-cluster document counts per period (as BERTopic's ``topics_over_time``).

The period is chosen from the span of the dates: the finest of day, week, month, quarter and
year that gives at most ``MAX_PERIODS`` periods (a week of news -> days, a decade -> months,
a century -> years); ``--time-period`` overrides it. The span is measured between the 1st and 99th percentile, and periods cover
that range only, so a few stray dates (a 2014 article in a 2024 feed) neither force monthly bins
nor add a decade of empty periods; documents outside are counted as ``before`` / ``after``, and
values that are not dates as ``missing``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from engine.errors import EngineError

#: period name -> pandas Period frequency (weeks run Monday to Sunday)
PERIODS = {"day": "D", "week": "W-SUN", "month": "M", "quarter": "Q", "year": "Y"}
#: The automatic period gives at most this many periods (a chart of 100k points is unreadable).
MAX_PERIODS = 200


def parse_times(values: pd.Series, column: str) -> pd.Series:
    """Dates or timestamps (any pandas-readable format, epoch seconds) as UTC; NaT where unreadable."""
    if pd.api.types.is_numeric_dtype(values):
        times = pd.to_datetime(values, unit="s", errors="coerce", utc=True)
    else:
        times = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
    if times.notna().mean() < 0.5:
        sample = values.dropna().astype(str).head(3).tolist()
        raise EngineError(
            f"--time-column {column!r}: {times.isna().mean():.0%} of the values are not dates "
            f"(e.g. {sample}); give a column of dates or timestamps"
        )
    return times


def _span(times: pd.Series) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The 1st and 99th percentile of the valid dates, as naive UTC timestamps."""
    valid = times.dropna()
    lo, hi = valid.quantile(0.01, interpolation="lower"), valid.quantile(0.99, interpolation="higher")
    return tuple(pd.Timestamp(t).tz_convert("UTC").tz_localize(None) for t in (lo, hi))  # type: ignore[return-value]


def n_periods(lo: pd.Timestamp, hi: pd.Timestamp, period: str) -> int:
    """How many periods of ``period`` cover lo..hi (arithmetic on ordinals: no range is built)."""
    return int(hi.to_period(PERIODS[period]).ordinal - lo.to_period(PERIODS[period]).ordinal) + 1


def choose_period(times: pd.Series) -> str:
    """The finest period giving at most MAX_PERIODS periods over the 1st-99th percentile span."""
    lo, hi = _span(times)
    for period in PERIODS:
        if n_periods(lo, hi, period) <= MAX_PERIODS:
            return period
    return "year"


def topics_over_time(labels: np.ndarray, times: pd.Series, column: str, period: str = "auto") -> dict:
    """Counts per cluster per period -> a JSON-ready dict (``periods``, ``clusters`` {id: counts}, ``noise``)."""
    if period == "auto":
        period = choose_period(times)
    if period not in PERIODS:
        raise EngineError(f"--time-period must be auto, {', '.join(PERIODS)}; got {period!r}")
    valid = times.notna().to_numpy()
    naive = times.dt.tz_convert("UTC").dt.tz_localize(None)
    lo_p, hi_p = _span(times)
    start = lo_p.to_period(PERIODS[period]).start_time
    end = hi_p.to_period(PERIODS[period]).end_time
    inside = valid & (naive >= start).to_numpy() & (naive <= end).to_numpy()
    bins = pd.period_range(start, end, freq=PERIODS[period])
    index = np.full(len(times), -1, dtype=np.int64)
    if inside.any():
        codes = naive[inside].dt.to_period(PERIODS[period])
        index[inside] = np.searchsorted(bins.start_time.to_numpy(), codes.dt.start_time.to_numpy())
    labels = np.asarray(labels, dtype=np.int64)
    counts: dict[str, list[int]] = {}
    for c in np.unique(labels[labels >= 0]):
        sel = inside & (labels == c)
        counts[str(int(c))] = np.bincount(index[sel], minlength=len(bins)).astype(int).tolist()
    noise_sel = inside & (labels < 0)
    return {
        "column": column,
        "period": period,
        "periods": [p.start_time.strftime("%Y-%m-%d") for p in bins],
        "clusters": counts,
        "noise": np.bincount(index[noise_sel], minlength=len(bins)).astype(int).tolist(),
        "before": int((valid & (naive < start).to_numpy()).sum()),
        "after": int((valid & (naive > end).to_numpy()).sum()),
        "missing": int((~valid).sum()),
    }


def _points(values: list[int], width: float, height: float, top: float) -> str:
    n = len(values)
    step = width / max(n - 1, 1)
    return " ".join(
        f"{i * step:.1f},{height - (v / top) * height if top else height:.1f}" for i, v in enumerate(values)
    )


def sparkline_svg(values: list[int], width: int = 160, height: int = 28) -> str:
    """A small inline SVG line of one cluster's counts per period."""
    top = max(values) if values else 0
    return (
        f'<svg class="spark" width="{width}" height="{height + 2}" viewBox="0 -1 {width} {height + 2}">'
        f'<polyline fill="none" stroke="#3b6fb6" stroke-width="1.5" points="{_points(values, width, height, top)}"/>'
        "</svg>"
    )


PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def chart_svg(
    over_time: dict, names: dict[int, str], top_n: int = 10, width: int = 1000, height: int = 260
) -> str:
    """Topics over time: one line per largest cluster, periods on x, documents on y, with a legend."""
    import html

    series = sorted(over_time["clusters"].items(), key=lambda kv: -sum(kv[1]))[:top_n]
    periods = over_time["periods"]
    top = max((max(v) for _, v in series if v), default=0)
    left, plot_w, plot_h = 40, width - 260, height - 40
    parts = [f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    parts.append(f'<g transform="translate({left},10)">')
    parts.append(f'<line x1="0" y1="{plot_h}" x2="{plot_w}" y2="{plot_h}" stroke="#999"/>')
    parts.append(f'<line x1="0" y1="0" x2="0" y2="{plot_h}" stroke="#999"/>')
    parts.append(f'<text x="-6" y="8" text-anchor="end" font-size="11">{top}</text>')
    parts.append(f'<text x="-6" y="{plot_h}" text-anchor="end" font-size="11">0</text>')
    if periods:
        parts.append(f'<text x="0" y="{plot_h + 16}" font-size="11">{periods[0]}</text>')
        parts.append(
            f'<text x="{plot_w}" y="{plot_h + 16}" text-anchor="end" font-size="11">{periods[-1]}</text>'
        )
    for i, (c, values) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        parts.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{_points(values, plot_w, plot_h, top)}"/>'
        )
        label = html.escape(f"{c}: {names.get(int(c), '')}"[:30])
        y = 12 + 18 * i
        parts.append(f'<rect x="{plot_w + 20}" y="{y - 9}" width="12" height="4" fill="{color}"/>')
        parts.append(f'<text x="{plot_w + 38}" y="{y - 3}" font-size="12">{label}</text>')
    parts.append("</g></svg>")
    return "".join(parts)
