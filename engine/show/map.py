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

from engine.atomic import atomic_output
from engine.errors import EngineError

NOISE_COLOR = "#b0b0b0"
#: Fixed figure geometry of map.html (pixels), so label boxes can be placed in screen space.
MAP_WIDTH, MAP_HEIGHT = 1200, 800
MAP_MARGIN = {"l": 20, "r": 20, "t": 90, "b": 20}
_PAD = 0.03  # axis range padding, a share of the data's extent


def text_box(text: str, font_px: float) -> tuple[float, float]:
    """Estimated (width, height) in pixels of a one-line label: wide glyphs (CJK) count double.

    Deliberately generous (sans-serif averages ~0.55 em per Latin glyph) so estimated boxes
    contain the drawn ones.
    """
    import unicodedata

    ems = sum(1.0 if unicodedata.east_asian_width(ch) in "WF" else 0.62 for ch in text)
    return ems * font_px + 8.0, 1.35 * font_px + 6.0


def place_labels(
    anchors: np.ndarray,
    sizes: np.ndarray,
    area: tuple[float, float, float, float],
    gap: float = 4.0,
    rings: int = 12,
) -> list[tuple[float, float] | None]:
    """Collision-free label positions, in priority order (first = most important): greedy search.

    ``anchors`` (n, 2) and ``sizes`` (n, 2, width/height) in screen pixels (y down); ``area``
    (left, top, right, bottom). Each label tries its anchor first, then rings of 16 directions at
    growing distance; the first position whose box stays inside ``area`` and keeps ``gap`` pixels
    from every label already placed wins. Returns the box centre's offset (dx, dy) from its
    anchor, or None when no position is free (the label is not drawn: a crowded map shows its
    most important names, none on top of another).
    """
    placed: list[tuple[float, float, float, float]] = []
    out: list[tuple[float, float] | None] = []
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    left, top, right, bottom = area
    for (ax, ay), (w, h) in zip(np.asarray(anchors, float), np.asarray(sizes, float), strict=True):
        step = h + gap
        candidates = [(0.0, 0.0)] + [
            (r * step * 1.6 * np.cos(a), r * step * np.sin(a)) for r in range(1, rings + 1) for a in angles
        ]
        found = None
        for dx, dy in candidates:
            x0, y0 = ax + dx - w / 2, ay + dy - h / 2
            x1, y1 = x0 + w, y0 + h
            if x0 < left or y0 < top or x1 > right or y1 > bottom:
                continue
            if any(
                x0 < b[2] + gap and b[0] < x1 + gap and y0 < b[3] + gap and b[1] < y1 + gap for b in placed
            ):
                continue
            found = (float(dx), float(dy))
            placed.append((x0, y0, x1, y1))
            break
        out.append(found)
    return out


def _axis_ranges(xs: np.ndarray, ys: np.ndarray) -> tuple[list[float], list[float]]:
    """Axis ranges fitted to the data's extent (robust to a few far points), so the map fills the figure."""
    if len(xs) == 0:
        return [-1.0, 1.0], [-1.0, 1.0]
    ranges = []
    for v in (xs, ys):
        lo, hi = (float(q) for q in np.quantile(v, [0.0, 1.0]))
        span = hi - lo or 1.0
        ranges.append([lo - _PAD * span, hi + _PAD * span])
    return ranges[0], ranges[1]


def name_annotations(
    xs: np.ndarray,
    ys: np.ndarray,
    labels: np.ndarray,
    clusters: Sequence[tuple[int, str, int]],
    x_range: Sequence[float],
    y_range: Sequence[float],
    max_names: int = 40,
) -> list[dict[str, Any]]:
    """Plotly annotations naming clusters (largest first) at their median point, none overlapping.

    ``clusters``: (cluster, name, size), largest first. A name that cannot sit on its cluster's
    centre is moved to the nearest free spot with a leader line to the centre (see
    :func:`place_labels`); a name with no free spot is left out.
    """
    n_total = max(len(labels), 1)
    pw = MAP_WIDTH - MAP_MARGIN["l"] - MAP_MARGIN["r"]
    ph = MAP_HEIGHT - MAP_MARGIN["t"] - MAP_MARGIN["b"]
    (x0, x1), (y0, y1) = x_range, y_range
    items = []
    for c, name, size in list(clusters)[:max_names]:
        m = labels == c
        if not m.any():
            continue
        cx, cy = float(np.median(xs[m])), float(np.median(ys[m]))
        font = 12 if size >= n_total / 50 else 10
        text = name or str(c)
        px = MAP_MARGIN["l"] + (cx - x0) / (x1 - x0) * pw
        py = MAP_MARGIN["t"] + (y1 - cy) / (y1 - y0) * ph
        items.append((cx, cy, px, py, font, text))
    if not items:
        return []
    anchors = np.array([(px, py) for _, _, px, py, _, _ in items])
    sizes = np.array([text_box(t, f) for *_, f, t in items])
    area = (MAP_MARGIN["l"], MAP_MARGIN["t"], MAP_MARGIN["l"] + pw, MAP_MARGIN["t"] + ph)
    out = []
    for (cx, cy, _, _, font, text), spot in zip(items, place_labels(anchors, sizes, area), strict=True):
        if spot is None:
            continue
        dx, dy = spot
        moved = abs(dx) > 0.5 or abs(dy) > 0.5
        out.append(
            {
                "x": cx,
                "y": cy,
                "text": html.escape(text, quote=False),
                "showarrow": moved,
                "ax": dx,
                "ay": dy,
                "axref": "pixel",
                "ayref": "pixel",
                "arrowhead": 0,
                "arrowwidth": 1,
                "arrowcolor": "#555",
                "standoff": 0,
                "xanchor": "center",
                "yanchor": "middle",
                "font": {"size": font, "color": "#111"},
                "bgcolor": "rgba(255,255,255,0.8)",
                "borderpad": 2,
                "captureevents": False,
            }
        )
    return out


def _fixed_layout(x_range: Sequence[float], y_range: Sequence[float]) -> dict[str, Any]:
    """Figure size, margins and axis ranges fixed: the screen positions name placement assumed."""
    return {
        "width": MAP_WIDTH,
        "height": MAP_HEIGHT,
        "autosize": False,
        "margin": dict(MAP_MARGIN),
        "xaxis": {"showticklabels": False, "title": "", "range": list(x_range), "zeroline": False},
        "yaxis": {"showticklabels": False, "title": "", "range": list(y_range), "zeroline": False},
    }


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
        if layers:
            primary = next((d for d in layers if d.get("primary")), layers[-1])
            names = {int(c["cluster"]): str(c.get("name") or "") for c in primary["clusters"]}
        else:
            names = {int(c): ", ".join(str(w) for w in list(k)[:3]) for c, k in (keywords or {}).items()}
        out["png"] = _write_png(frame, png_path, title, names)
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
    all_x = frame["x"].to_numpy(dtype=np.float32)
    all_y = frame["y"].to_numpy(dtype=np.float32)
    x_range, y_range = _axis_ranges(all_x, all_y)
    names = [(c, ", ".join(str(w) for w in list(keywords.get(c, []))[:3]), size) for c, size in all_order]
    annotations = name_annotations(
        all_x, all_y, frame["cluster"].to_numpy(dtype=np.int64), names, x_range, y_range
    )
    subtitle = f"{n_total} documents, {n_clusters} clusters, noise {n_noise_total}"
    if len(shown) < n_total:
        subtitle += f" (showing a random {len(shown)})"
    fig = go.Figure(data=traces)
    layout: dict[str, Any] = {
        "title": {"text": f"{html.escape(title, quote=False)}<br><sup>{subtitle}</sup>"},
        "template": "plotly_white",
        "hovermode": "closest",
        "legend": {"itemsizing": "constant", "font": {"size": 10 if n_clusters > 30 else 12}},
        "annotations": annotations,
        **_fixed_layout(x_range, y_range),
    }
    layout["width"] = MAP_WIDTH + 300  # the legend sits right of the plot area
    layout["margin"] = {**MAP_MARGIN, "r": MAP_MARGIN["r"] + 300}
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
    with atomic_output(path) as tmp:
        fig.write_html(tmp, include_plotlyjs=True, full_html=True, config={"scrollZoom": True})
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
    x_range, y_range = _axis_ranges(all_x, all_y)

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
        annotations = name_annotations(
            all_x,
            all_y,
            full,
            [(int(c["cluster"]), names.get(int(c["cluster"]), ""), int(c["size"])) for c in d["clusters"]],
            x_range,
            y_range,
            max_names,
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
        annotations=annotations,
        **_fixed_layout(x_range, y_range),
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
    with atomic_output(path) as tmp:
        fig.write_html(tmp, include_plotlyjs=True, full_html=True, config={"scrollZoom": True})
    return path


def _write_png(
    frame: pd.DataFrame, png_path: str | os.PathLike, title: str, names: Mapping[int, str] | None = None
) -> str:
    """The static map: every document, the largest clusters named (no two names overlapping)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = frame["cluster"].to_numpy(dtype=np.int64)
    xs = frame["x"].to_numpy(dtype=np.float32)
    ys = frame["y"].to_numpy(dtype=np.float32)
    palette = cluster_palette()
    order = _cluster_order(labels)
    n = len(frame)
    pt = float(np.clip(30000.0 / max(n, 1), 0.3, 12.0))  # marker area shrinks as N grows
    names = names or {}

    fig = Figure(figsize=(10, 8), dpi=150)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.01, 0.01, 0.98, 0.91))
    noise = labels < 0
    if noise.any():
        ax.scatter(xs[noise], ys[noise], s=pt * 0.5, c=NOISE_COLOR, alpha=0.35, linewidths=0, rasterized=True)
    for i, (c, _) in enumerate(order):
        m = labels == c
        ax.scatter(xs[m], ys[m], s=pt, c=palette[i % len(palette)], alpha=0.8, linewidths=0, rasterized=True)
    x_range, y_range = _axis_ranges(xs, ys)
    ax.set_xlim(*x_range)
    ax.set_ylim(*y_range)
    ax.set_title(f"{title}\n{n} documents, {len(order)} clusters, noise {int(noise.sum())}", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    _png_names(ax, canvas, xs, ys, labels, [(c, names.get(c) or str(c)) for c, _ in order[:30]])
    path = os.fspath(png_path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _png_names(ax: Any, canvas: Any, xs: np.ndarray, ys: np.ndarray, labels: np.ndarray, named: list) -> None:
    """Cluster names on the PNG, placed like map.html's (measured text boxes, leader lines when moved)."""
    renderer = canvas.get_renderer()
    height = canvas.figure.bbox.height
    items = []
    for c, name in named:
        m = labels == c
        cx, cy = float(np.median(xs[m])), float(np.median(ys[m]))
        probe = ax.text(0, 0, name, fontsize=7, bbox={"boxstyle": "round,pad=0.2", "lw": 0})
        box = probe.get_window_extent(renderer)
        probe.remove()
        px, py = ax.transData.transform((cx, cy))
        items.append((cx, cy, px, height - py, box.width + 4, box.height + 2, name))
    if not items:
        return
    frame_box = ax.get_window_extent(renderer)
    area = (frame_box.x0, height - frame_box.y1, frame_box.x1, height - frame_box.y0)
    spots = place_labels(np.array([i[2:4] for i in items]), np.array([i[4:6] for i in items]), area)
    for (cx, cy, *_rest, name), spot in zip(items, spots, strict=True):
        if spot is None:
            continue
        dx, dy = spot
        moved = abs(dx) > 0.5 or abs(dy) > 0.5
        ax.annotate(
            name,
            (cx, cy),
            xytext=(dx, -dy),
            textcoords="offset pixels",
            fontsize=7,
            ha="center",
            va="center",
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.8, "lw": 0},
            arrowprops={"arrowstyle": "-", "color": "#555", "lw": 0.6} if moved else None,
        )
