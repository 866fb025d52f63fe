"""Drawing the map: the interactive ``map.html`` (plotly, WebGL) and the static ``map.png`` (matplotlib).

Why apart from the layout (engine.project): the layout is numeric work of the map stage; drawing
is done by the report stage, once keywords and cluster names are known.
"""

from __future__ import annotations

import html
import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from engine.errors import EngineError

NOISE_COLOR = "#b0b0b0"


def cluster_palette() -> list[str]:
    """A long qualitative palette (plotly Alphabet + Dark24 + Light24 without greys, ~65 colours)."""
    from plotly.colors import qualitative as q

    seen: list[str] = []
    for c in list(q.Alphabet) + list(q.Dark24) + list(q.Light24):
        c = c.upper()
        rgb = [int(c[i : i + 2], 16) for i in (1, 3, 5)]
        if c not in seen and max(rgb) - min(rgb) > 40:  # drop greys: grey means noise
            seen.append(c)
    return seen


def hover_text(text: Any, max_chars: int = 300, width: int = 80) -> str:
    """Document text for a plotly hover label: truncated, wrapped with <br>, HTML-escaped."""
    s = "" if text is None or (isinstance(text, float) and math.isnan(text)) else str(text)
    head, _, rest = s.partition("\n")  # title line, then the body as one paragraph
    s = head + ("\n" + " ".join(rest.split()) if rest.strip() else "")
    if len(s) > max_chars:
        s = s[: max_chars - 1].rstrip() + "…"
    lines: list[str] = []
    for para in s.split("\n"):
        lines.extend(textwrap.wrap(para, width=width) or [""])
    return "<br>".join(html.escape(line, quote=False) for line in lines)


def _cluster_order(labels: np.ndarray) -> list[tuple[int, int]]:
    """(cluster, size) pairs of non-noise clusters, largest first."""
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    order = sorted(zip(ids.tolist(), counts.tolist(), strict=True), key=lambda t: (-t[1], t[0]))
    return order


def _check_frame(frame: pd.DataFrame) -> None:
    missing = [c for c in ("text", "cluster", "x", "y") if c not in frame.columns]
    if missing:
        raise EngineError(f"map frame: missing column(s) {', '.join(missing)}")


def write_map(
    frame: pd.DataFrame,
    html_path: str | os.PathLike | None,
    png_path: str | os.PathLike | None,
    title: str = "Document map",
    keywords: Mapping[int, Sequence[str]] | None = None,
    max_legend: int = 60,
    max_hover_chars: int = 300,
    max_points: int | None = 300_000,
    random_state: int = 0,
    layers: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, str]:
    """Write the interactive HTML map and the static PNG of ``frame`` (text, cluster, x, y; id optional).

    HTML: one ``Scattergl`` trace per cluster (largest first) plus a grey noise trace with a
    Show/Hide-noise button; hover shows the escaped text, cluster id and its keywords. Past
    ``max_legend`` clusters the smaller ones share one legend entry ("smaller clusters") so the
    legend stays usable. plotly.js is inlined (~4.7 MB) so the file opens offline. Past ``max_points``
    documents the HTML shows a uniform random sample (stated in the title); the PNG always shows all.
    Returns the paths written.
    """
    _check_frame(frame)
    out: dict[str, str] = {}
    if html_path is not None and layers:
        out["html"] = _write_layered_html(
            frame, html_path, title, layers, max_hover_chars, max_points, random_state
        )
    elif html_path is not None:
        out["html"] = _write_html(
            frame, html_path, title, keywords, max_legend, max_hover_chars, max_points, random_state
        )
    if png_path is not None:
        out["png"] = _write_png(frame, png_path, title)
    return out


def _write_html(
    frame: pd.DataFrame,
    html_path: str | os.PathLike,
    title: str,
    keywords: Mapping[int, Sequence[str]] | None,
    max_legend: int,
    max_hover_chars: int,
    max_points: int | None,
    random_state: int,
) -> str:
    import plotly.graph_objects as go

    n_total = len(frame)
    shown = frame
    if max_points is not None and n_total > max_points:
        shown = frame.sample(n=max_points, random_state=random_state).sort_index()
    labels = shown["cluster"].to_numpy(dtype=np.int64)
    xs = shown["x"].to_numpy(dtype=np.float32)
    ys = shown["y"].to_numpy(dtype=np.float32)
    texts = shown["text"].tolist()
    ids = shown["id"].tolist() if "id" in shown.columns else list(range(len(shown)))
    keywords = keywords or {}
    palette = cluster_palette()
    all_order = _cluster_order(frame["cluster"].to_numpy(dtype=np.int64))
    colour = {c: palette[i % len(palette)] for i, (c, _) in enumerate(all_order)}
    size_of = dict(all_order)

    def hovers(mask: np.ndarray, header: str) -> list[str]:
        return [
            f"{header}<br>id {html.escape(str(ids[i]))}<br><br>{hover_text(texts[i], max_hover_chars)}"
            for i in np.flatnonzero(mask)
        ]

    traces = []
    noise = labels < 0
    n_noise_total = int((frame["cluster"].to_numpy() < 0).sum())
    if noise.any():
        traces.append(
            go.Scattergl(
                x=xs[noise],
                y=ys[noise],
                mode="markers",
                name=f"noise ({n_noise_total})",
                marker={"color": NOISE_COLOR, "size": 3, "opacity": 0.4},
                hovertext=hovers(noise, "<b>noise</b>"),
                hoverinfo="text",
                legendrank=0,
            )
        )
    present = set(np.unique(labels[labels >= 0]).tolist())
    grouped = 0
    for rank, (c, size) in enumerate(all_order):
        if c not in present:
            continue
        mask = labels == c
        kw = ", ".join(str(w) for w in list(keywords.get(c, []))[:6])
        header = f"<b>cluster {c}</b> ({size} docs)"
        if kw:
            header += f"<br><i>{html.escape(kw, quote=False)}</i>"
        name = f"{c} ({size_of[c]})" + (f" {kw[:40]}" if kw else "")
        in_legend = rank < max_legend
        trace: dict[str, Any] = {
            "x": xs[mask],
            "y": ys[mask],
            "mode": "markers",
            "name": html.escape(name, quote=False),
            "marker": {"color": colour[c], "size": 5, "opacity": 0.8},
            "hovertext": hovers(mask, header),
            "hoverinfo": "text",
            "legendrank": 1 + rank,
        }
        if not in_legend:
            trace["legendgroup"] = "small"
            trace["showlegend"] = grouped == 0
            trace["name"] = f"{len(all_order) - max_legend} smaller clusters"
            grouped += 1
        traces.append(go.Scattergl(**trace))

    n_clusters = len(all_order)
    subtitle = f"{n_total} documents, {n_clusters} clusters, noise {n_noise_total}"
    if len(shown) < n_total:
        subtitle += f" (showing a random {len(shown)})"
    fig = go.Figure(data=traces)
    layout: dict[str, Any] = {
        "title": {"text": f"{html.escape(title, quote=False)}<br><sup>{subtitle}</sup>"},
        "template": "plotly_white",
        "hovermode": "closest",
        "xaxis": {"showticklabels": False, "title": ""},
        "yaxis": {"showticklabels": False, "title": ""},
        "legend": {"itemsizing": "constant", "font": {"size": 10 if n_clusters > 30 else 12}},
        "height": 800,
    }
    if noise.any():
        layout["updatemenus"] = [
            {
                "type": "buttons",
                "direction": "left",
                "x": 0.0,
                "y": 1.06,
                "xanchor": "left",
                "yanchor": "bottom",
                "buttons": [
                    {"label": "Show noise", "method": "restyle", "args": [{"visible": True}, [0]]},
                    {"label": "Hide noise", "method": "restyle", "args": [{"visible": False}, [0]]},
                ],
            }
        ]
    fig.update_layout(**layout)
    path = os.fspath(html_path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.write_html(path, include_plotlyjs=True, full_html=True, config={"scrollZoom": True})
    return path


def _discrete_colorscale(colours: Sequence[str]) -> list[list[Any]]:
    """A plotly colorscale with one flat band per colour; value v + 0.5 (cmin 0, cmax len) picks colour v."""
    m = len(colours)
    scale: list[list[Any]] = []
    for i, c in enumerate(colours):
        scale.append([i / m, c])
        scale.append([(i + 1) / m, c])
    return scale


def _write_layered_html(
    frame: pd.DataFrame,
    html_path: str | os.PathLike,
    title: str,
    layers: Sequence[Mapping[str, Any]],
    max_hover_chars: int,
    max_points: int | None,
    random_state: int,
    max_names: int = 40,
) -> str:
    """One WebGL trace of every document; a drop-down switches layer (colours, hover, names at centres).

    Hover text is stored once (the document); per layer only small arrays change (a colour code and
    the cluster label), so the file grows little per layer. Cluster names (top keywords) are drawn at
    the median position of each of the ``max_names`` largest clusters of the chosen layer.
    """
    import plotly.graph_objects as go

    cols = [f"layer_{int(d['layer'])}" for d in layers]
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise EngineError(f"map frame: missing layer column(s) {', '.join(missing)}")
    primary = next((i for i, d in enumerate(layers) if d.get("primary")), len(layers) - 1)
    n_total = len(frame)
    shown = frame
    if max_points is not None and n_total > max_points:
        shown = frame.sample(n=max_points, random_state=random_state).sort_index()
    xs = shown["x"].to_numpy(dtype=np.float32)
    ys = shown["y"].to_numpy(dtype=np.float32)
    ids = shown["id"].tolist() if "id" in shown.columns else list(range(len(shown)))
    hover = [
        f"id {html.escape(str(i))}<br><br>{hover_text(t, max_hover_chars)}"
        for i, t in zip(ids, shown["text"].tolist(), strict=True)
    ]
    palette = cluster_palette()
    colours = [NOISE_COLOR] + palette
    with_names = len(shown) * len(layers) <= 2_000_000
    all_x = frame["x"].to_numpy(dtype=np.float32)
    all_y = frame["y"].to_numpy(dtype=np.float32)

    per_layer = []
    for d, col in zip(layers, cols, strict=True):
        names = {int(c["cluster"]): str(c.get("name") or "") for c in d["clusters"]}
        lab = shown[col].to_numpy(dtype=np.int64)
        code = np.where(lab >= 0, lab % len(palette) + 1, 0).astype(np.float32) + 0.5
        if with_names:
            label = [
                f"cluster {c}: {html.escape(names.get(c, ''), quote=False)}" if c >= 0 else "noise"
                for c in lab
            ]
        else:
            label = [f"cluster {c}" if c >= 0 else "noise" for c in lab]
        full = frame[col].to_numpy(dtype=np.int64)
        annotations = []
        for c in d["clusters"][:max_names]:
            m = full == int(c["cluster"])
            if not m.any():
                continue
            annotations.append(
                {
                    "x": float(np.median(all_x[m])),
                    "y": float(np.median(all_y[m])),
                    "text": html.escape(names.get(int(c["cluster"])) or str(c["cluster"]), quote=False),
                    "showarrow": False,
                    "font": {"size": 11 if int(c["size"]) >= n_total / 50 else 9, "color": "#111"},
                    "bgcolor": "rgba(255,255,255,0.7)",
                }
            )
        noise = int((full < 0).sum())
        subtitle = (
            f"layer {d['layer']}{' (primary)' if d.get('primary') else ''}: {int(d['n_clusters'])} clusters, "
            f"noise {noise} of {n_total} documents"
        )
        if len(shown) < n_total:
            subtitle += f" (showing a random {len(shown)})"
        per_layer.append((code, label, annotations, subtitle))

    code, label, annotations, subtitle = per_layer[primary]
    trace = go.Scattergl(
        x=xs,
        y=ys,
        mode="markers",
        marker={
            "color": code,
            "colorscale": _discrete_colorscale(colours),
            "cmin": 0,
            "cmax": len(colours),
            "size": 4,
            "opacity": 0.75,
            "showscale": False,
        },
        customdata=label,
        hovertext=hover,
        hovertemplate="<b>%{customdata}</b><br>%{hovertext}<extra></extra>",
        showlegend=False,
    )
    head = html.escape(title, quote=False)
    buttons = [
        {
            "label": f"layer {d['layer']}: {int(d['n_clusters'])} clusters{' *' if d.get('primary') else ''}",
            "method": "update",
            "args": [
                {"marker.color": [c], "customdata": [lab_]},
                {"annotations": ann, "title.text": f"{head}<br><sup>{sub}</sup>"},
            ],
        }
        for d, (c, lab_, ann, sub) in zip(layers, per_layer, strict=True)
    ]
    fig = go.Figure(data=[trace])
    fig.update_layout(
        title={"text": f"{head}<br><sup>{subtitle}</sup>"},
        template="plotly_white",
        hovermode="closest",
        xaxis={"showticklabels": False, "title": ""},
        yaxis={"showticklabels": False, "title": ""},
        height=800,
        annotations=annotations,
        updatemenus=[
            {
                "type": "dropdown",
                "direction": "down",
                "x": 1.0,
                "y": 1.08,
                "xanchor": "right",
                "yanchor": "bottom",
                "active": primary,
                "buttons": buttons,
                "showactive": True,
            }
        ],
    )
    path = os.fspath(html_path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.write_html(path, include_plotlyjs=True, full_html=True, config={"scrollZoom": True})
    return path


def _write_png(frame: pd.DataFrame, png_path: str | os.PathLike, title: str) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = frame["cluster"].to_numpy(dtype=np.int64)
    xs = frame["x"].to_numpy(dtype=np.float32)
    ys = frame["y"].to_numpy(dtype=np.float32)
    palette = cluster_palette()
    order = _cluster_order(labels)
    n = len(frame)
    pt = float(np.clip(30000.0 / max(n, 1), 0.3, 12.0))  # marker area shrinks as N grows

    fig = Figure(figsize=(10, 8), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    noise = labels < 0
    if noise.any():
        ax.scatter(xs[noise], ys[noise], s=pt * 0.5, c=NOISE_COLOR, alpha=0.35, linewidths=0, rasterized=True)
    for i, (c, _) in enumerate(order):
        m = labels == c
        ax.scatter(xs[m], ys[m], s=pt, c=palette[i % len(palette)], alpha=0.8, linewidths=0, rasterized=True)
    for c, _ in order[:30]:  # label the largest clusters at their median position
        m = labels == c
        ax.annotate(
            str(c),
            (float(np.median(xs[m])), float(np.median(ys[m]))),
            fontsize=7,
            ha="center",
            va="center",
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.6, "lw": 0},
        )
    ax.set_title(f"{title}\n{n} documents, {len(order)} clusters, noise {int(noise.sum())}", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    path = os.fspath(png_path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path
