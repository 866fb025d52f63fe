"""Pareto plots of an index sweep: recall vs QPS, point size = build time, colour = ARI.

HTML via plotly (self-contained, opens offline) and PNG via matplotlib (for notes and CI).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd


def _sizes(build_s: pd.Series, lo: float, hi: float) -> np.ndarray:
    b = np.asarray(build_s.fillna(0.0), dtype=float)
    b = np.sqrt(np.maximum(b, 0.0))
    span = b.max() - b.min()
    return lo + (hi - lo) * ((b - b.min()) / span if span > 0 else np.zeros_like(b) + 0.5)


def _colour(df: pd.DataFrame) -> tuple[np.ndarray, str]:
    if "ari" in df and not df["ari"].isna().all():
        return np.asarray(df["ari"].fillna(0.0), dtype=float), "ARI vs exact graph"
    return np.asarray(df["recall"], dtype=float), "recall"


def short_label(label: str) -> str:
    """Compact point labels: 'HNSW M=16 efConstruction=200 | ef=32' -> 'HNSW M16 efC200 ef32'."""
    out = label.replace("efConstruction", "efC").replace(" | ", " ").replace("sq_type=", "")
    return out.replace("=", "")


def _front(df: pd.DataFrame) -> pd.DataFrame:
    if "pareto" in df:
        front = df[df["pareto"].astype(bool)]
    else:
        from engine.bench.index_bench import pareto_front

        front = df[pareto_front(df)]
    return front.sort_values("qps")


def pareto_html(df: pd.DataFrame, path: str | os.PathLike, title: str = "") -> str:
    """Interactive scatter with the Pareto front; plotly.js is embedded (works offline)."""
    import plotly.graph_objects as go

    colour, cname = _colour(df)
    hover = [
        f"{r.config}<br>recall {r.recall:.4f}<br>{r.qps:.0f} q/s<br>build {r.build_s:.2f} s"
        + (f"<br>ARI {r.ari:.4f}" if "ari" in df and pd.notna(r.ari) else "")
        for r in df.itertuples()
    ]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=df["qps"],
            y=df["recall"],
            mode="markers",
            text=hover,
            hoverinfo="text",
            name="configs",
            marker={
                "size": _sizes(df["build_s"], 8, 40),
                "color": colour,
                "colorscale": "Viridis",
                "showscale": True,
                "colorbar": {"title": cname},
                "line": {"width": 1, "color": "black"},
            },
        )
    )
    front = _front(df)
    fig.add_trace(
        go.Scatter(x=front["qps"], y=front["recall"], mode="lines", name="Pareto front", line={"dash": "dot"})
    )
    fig.update_layout(
        title=title or "Index sweep: recall vs QPS (size = build time)",
        xaxis={"title": "batched queries per second", "type": "log"},
        yaxis={"title": "recall@k"},
        template="plotly_white",
    )
    fig.write_html(str(path), include_plotlyjs=True, full_html=True)
    return str(path)


def pareto_png(df: pd.DataFrame, path: str | os.PathLike, title: str = "") -> str:
    """Static PNG of the same plot (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colour, cname = _colour(df)
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    sc = ax.scatter(
        df["qps"],
        df["recall"],
        s=_sizes(df["build_s"], 20, 400),
        c=colour,
        cmap="viridis",
        edgecolors="black",
        linewidths=0.6,
    )
    front = _front(df)
    ax.plot(front["qps"], front["recall"], ":", color="grey", label="Pareto front")
    for r in df.itertuples():
        ax.annotate(
            short_label(str(r.config)),
            (r.qps, r.recall),
            fontsize=6,
            xytext=(4, 3),
            textcoords="offset points",
        )
    ax.set_xscale("log")
    ax.margins(x=0.2, y=0.05)
    ax.set_xlabel("batched queries per second (log)")
    ax.set_ylabel("recall@k")
    ax.set_title(title or "Index sweep: recall vs QPS (size = build time)", fontsize=9)
    fig.colorbar(sc, ax=ax, label=cname)
    ax.legend(loc="lower left", fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path))
    plt.close(fig)
    return str(path)
