"""The report's charts (plotly, as the map): the views BERTopic users look for, drawn from the run's data.

* top words per topic: c-TF-IDF score bars of the largest clusters' keywords;
* topic similarity: heatmap of the cosine similarity of cluster centroids (the run's embeddings);
* hierarchy: dendrogram of the same centroids (average linkage on cosine distance), how topics group;
* topics over time (``--time-column``): documents per period and each topic's share of the period;
* topics per class (``--class-column``): documents per class and topic.

Each chart is a plotly figure; :func:`charts_html` gives their ``<div>`` blocks, and report.html
inlines plotly.js once (it opens offline, like map.html).
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np

#: Charts (and their element ids in report.html) in page order.
CHART_IDS = ("chart-top-words", "chart-similarity", "chart-hierarchy", "chart-over-time", "chart-per-class")
MAX_BAR_TOPICS = 12
MAX_TOPICS = 40


def _label(name: str, cluster: int, limit: int = 40) -> str:
    text = f"{cluster}: {name}" if name else str(cluster)
    return html.escape(text if len(text) <= limit else text[: limit - 1] + "…", quote=False)


def top_words_figure(report: Any, n_topics: int = MAX_BAR_TOPICS, n_words: int = 8) -> Any:
    """Horizontal bars of each of the largest clusters' top keywords, length = c-TF-IDF score."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = list(report.clusters.itertuples())[:n_topics]
    if not rows:
        return None
    names = report.names()
    cols = 3
    n_rows = math.ceil(len(rows) / cols)
    fig = make_subplots(
        rows=n_rows,
        cols=cols,
        subplot_titles=[_label(names[int(r.cluster)], int(r.cluster), 34) for r in rows],
        horizontal_spacing=0.12,
        vertical_spacing=min(0.3 / max(n_rows - 1, 1), 0.12),
    )
    for i, r in enumerate(rows):
        words = [html.escape(str(w), quote=False) for w in list(r.keywords)[:n_words]][::-1]
        scores = [float(v) for v in list(r.keyword_scores)[:n_words]][::-1]
        fig.add_trace(
            go.Bar(x=scores, y=words, orientation="h", name=str(int(r.cluster)), showlegend=False),
            row=i // cols + 1,
            col=i % cols + 1,
        )
    fig.update_layout(
        height=max(260 * n_rows, 300),
        template="plotly_white",
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        font={"size": 11},
    )
    fig.update_annotations(font_size=12)
    return fig


def similarity_figure(report: Any, n_topics: int = MAX_TOPICS) -> Any:
    """Heatmap of the cosine similarity of the largest clusters' centroids."""
    import plotly.graph_objects as go

    sim = report.similarity
    if not sim or len(sim["clusters"]) < 2:
        return None
    names = report.names()
    ids = sim["clusters"][:n_topics]
    labels = [_label(names.get(c, ""), c) for c in ids]
    matrix = np.asarray(sim["matrix"])[: len(ids), : len(ids)]
    fig = go.Figure(
        go.Heatmap(
            z=matrix,
            x=labels,
            y=labels,
            colorscale="Blues",
            zmin=float(np.min(matrix)),
            zmax=1.0,
            hovertemplate="%{y}<br>%{x}<br>cosine %{z:.3f}<extra></extra>",
        )
    )
    size = 320 + 18 * len(ids)
    fig.update_layout(height=size, width=size + 250, template="plotly_white", yaxis={"autorange": "reversed"})
    return fig


def hierarchy_figure(report: Any, n_topics: int = MAX_TOPICS) -> Any:
    """Dendrogram of the largest clusters: average linkage on the cosine distance of their centroids."""
    import plotly.figure_factory as ff
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    sim = report.similarity
    if not sim or len(sim["clusters"]) < 3:
        return None
    names = report.names()
    ids = sim["clusters"][:n_topics]
    dist = np.clip(1.0 - np.asarray(sim["matrix"], dtype=np.float64)[: len(ids), : len(ids)], 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    condensed = squareform((dist + dist.T) / 2, checks=False)
    fig = ff.create_dendrogram(
        np.arange(len(ids), dtype=np.float64)[:, None],
        orientation="left",
        labels=[_label(names.get(c, ""), c) for c in ids],
        distfun=lambda _x: condensed,
        linkagefun=lambda d: linkage(d, method="average"),
    )
    fig.update_layout(
        height=200 + 22 * len(ids),
        template="plotly_white",
        xaxis={"title": "cosine distance"},
        margin={"l": 280},
    )
    return fig


def _stacked_lines(periods: list[str], series: list[tuple[str, list[int]]], totals: np.ndarray) -> Any:
    """Counts per period, with buttons switching to each topic's share of the period's documents."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, counts in series:
        fig.add_trace(go.Scatter(x=periods, y=counts, mode="lines+markers", name=name))
    shares = [
        (np.asarray(counts, dtype=np.float64) / np.maximum(totals, 1)).round(4).tolist()
        for _, counts in series
    ]
    counts_only = [list(c) for _, c in series]
    fig.update_layout(
        template="plotly_white",
        height=450,
        yaxis={"title": "documents"},
        updatemenus=[
            {
                "type": "buttons",
                "direction": "left",
                "x": 0.0,
                "y": 1.12,
                "xanchor": "left",
                "buttons": [
                    {
                        "label": "Counts",
                        "method": "update",
                        "args": [{"y": counts_only}, {"yaxis.title": "documents"}],
                    },
                    {
                        "label": "Shares",
                        "method": "update",
                        "args": [{"y": shares}, {"yaxis.title": "share of the period's documents"}],
                    },
                ],
            }
        ],
    )
    return fig


def over_time_figure(report: Any, n_topics: int = 10) -> Any:
    """Documents per period of the largest clusters; a button switches to shares of each period."""
    data = report.over_time
    if not data or not data["periods"]:
        return None
    names = report.names()
    ids = [int(r.cluster) for r in report.clusters.itertuples()]
    totals = np.asarray(data["noise"], dtype=np.float64)
    for counts in data["clusters"].values():
        totals = totals + np.asarray(counts, dtype=np.float64)
    series = [(_label(names[c], c), data["clusters"].get(str(c), [])) for c in ids[:n_topics]]
    return _stacked_lines(data["periods"], series, totals)


def per_class_figure(report: Any, n_topics: int = 20) -> Any:
    """Stacked bars: documents of each class per topic (the largest clusters)."""
    import plotly.graph_objects as go

    data = report.per_class
    if not data or not data["classes"]:
        return None
    names = report.names()
    ids = [int(r.cluster) for r in report.clusters.itertuples()][:n_topics]
    labels = [_label(names[c], c) for c in ids]
    fig = go.Figure()
    for j, cls in enumerate(data["classes"]):
        fig.add_trace(
            go.Bar(
                y=labels,
                x=[data["clusters"].get(str(c), [0] * len(data["classes"]))[j] for c in ids],
                name=html.escape(str(cls), quote=False),
                orientation="h",
            )
        )
    fig.update_layout(
        barmode="stack",
        template="plotly_white",
        height=200 + 24 * len(ids),
        yaxis={"autorange": "reversed"},
        xaxis={"title": "documents"},
        legend={"title": {"text": html.escape(str(data["column"]), quote=False)}},
    )
    return fig


def report_figures(report: Any) -> list[tuple[str, str, Any]]:
    """(element id, heading, figure) of every chart the report's data allows, in page order."""
    charts = [
        ("chart-top-words", "Top words per topic (c-TF-IDF score)", top_words_figure(report)),
        ("chart-similarity", "Topic similarity (cosine of cluster centroids)", similarity_figure(report)),
        ("chart-hierarchy", "Topic hierarchy (average linkage of centroids)", hierarchy_figure(report)),
        ("chart-over-time", "Topics over time", over_time_figure(report)),
        ("chart-per-class", "Topics per class", per_class_figure(report)),
    ]
    return [(cid, title, fig) for cid, title, fig in charts if fig is not None]


def charts_html(report: Any) -> str:
    """The charts' HTML blocks (plotly.js itself is inlined once by the page, see report.render_html)."""
    parts = []
    for cid, title, fig in report_figures(report):
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append(
            fig.to_html(full_html=False, include_plotlyjs=False, div_id=cid, config={"responsive": True})
        )
    return "\n".join(parts)
