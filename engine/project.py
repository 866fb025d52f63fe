"""Map stage: a 2-D layout of the kNN graph (UMAP) and the interactive / static maps.

UMAP is fed the kNN graph that Milvus already built (``precomputed_knn``), so it never runs its
own neighbour search (NNDescent): at 1M documents that search would cost more than the layout.

Conventions (see docs/ARCHITECTURE.md): the graph holds *positions*, Euclidean distances between
unit vectors, rows ascending, self excluded, missing neighbours as index -1 / distance +inf.
"""

from __future__ import annotations

import html
import logging
import math
import os
import textwrap
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from engine.errors import EngineError

log = logging.getLogger(__name__)

NOISE_COLOR = "#b0b0b0"
#: Below this many documents UMAP is not meaningful (and its spectral init breaks): we fall back.
MIN_UMAP_POINTS = 8


# --------------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------------
def prepare_precomputed_knn(
    indices: np.ndarray, distances: np.ndarray, n_neighbors: int
) -> tuple[np.ndarray, np.ndarray]:
    """Turn an engine kNN graph (self excluded, -1/+inf missing) into umap-learn's precomputed form.

    umap-learn wants every point as its own first neighbour at distance 0 and exactly
    ``n_neighbors`` columns (for N < 4096 it does not prune extra columns itself, which would
    silently change the neighbourhood size). Missing entries keep index -1 (umap skips those edges)
    but get a *finite* distance (the row's largest real distance): an ``inf`` would make umap's
    per-point bandwidth infinite and flatten every weight in that row to 1.
    Self entries that a graph may still contain are dropped so self never appears twice.
    """
    idx = np.asarray(indices)
    dist = np.asarray(distances, dtype=np.float32)
    if idx.ndim != 2 or idx.shape != dist.shape:
        raise EngineError(
            f"graph: indices {idx.shape} and distances {dist.shape} must be 2-D arrays of the same shape"
        )
    n, k = idx.shape
    idx = idx.astype(np.int64, copy=True)
    dist = dist.copy()
    rows = np.arange(n, dtype=np.int64)[:, None]
    bad = (idx < 0) | (idx >= n) | (idx == rows) | ~np.isfinite(dist)
    idx[bad] = -1
    dist[bad] = np.inf
    # Keep rows ascending with missing entries last (stable, so ties keep the graph's order).
    order = np.argsort(dist, axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, axis=1)
    dist = np.take_along_axis(dist, order, axis=1)
    m = max(1, min(int(n_neighbors), k + 1)) - 1  # real neighbours kept per row
    idx = idx[:, :m]
    dist = dist[:, :m]
    finite = np.isfinite(dist)
    row_max = np.where(finite, dist, -np.inf).max(axis=1, initial=-np.inf)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0).astype(np.float32)
    dist = np.where(finite, dist, row_max[:, None]).astype(np.float32)
    out_idx = np.concatenate([rows, idx], axis=1)
    out_dist = np.concatenate([np.zeros((n, 1), np.float32), dist], axis=1)
    return np.ascontiguousarray(out_idx), np.ascontiguousarray(out_dist)


def _cuml_available() -> bool:
    """True when cuML imports and CUDA reports at least one GPU."""
    try:
        import cuml  # noqa: F401
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, or a CUDA runtime that fails to initialise
        return False


def resolve_backend(backend: str, vectors: np.ndarray | None) -> str:
    """'auto' -> 'cuml' when cuML and a GPU are present and vectors are given, else 'cpu'."""
    if backend not in {"auto", "cpu", "umap", "cuml"}:
        raise EngineError(f"backend={backend!r}: expected one of auto, cpu, cuml")
    if backend == "umap":
        return "cpu"
    if backend == "cuml":
        if not _cuml_available():
            raise EngineError("backend='cuml': cuML or a CUDA GPU is not available here; use backend='cpu'")
        if vectors is None:
            raise EngineError("backend='cuml' needs vectors= (cuML UMAP takes the raw vectors)")
        return "cuml"
    if backend == "auto" and vectors is not None and _cuml_available():
        return "cuml"
    return "cpu"


def layout_features(vectors: np.ndarray, dim: int = 64, block: int = 65536, seed: int = 0) -> np.ndarray:
    """A (N, dim) Gaussian random projection of the vectors, computed block by block.

    umap-learn only needs X to place the centroids of disconnected components, and it copies X
    (``X[index]``): at 1M x 1024 that is 4 GB. Centroid distances survive a random projection
    (Johnson-Lindenstrauss), so 64 columns do the job at 1/16 of the memory.
    """
    n, d = vectors.shape
    if d <= dim:
        return np.ascontiguousarray(vectors, dtype=np.float32)
    proj = np.random.default_rng(seed).normal(size=(d, dim)).astype(np.float32) / np.sqrt(dim)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, block):
        out[start : start + block] = np.asarray(vectors[start : start + block], dtype=np.float32) @ proj
    return out


def fallback_layout(n: int, vectors: np.ndarray | None = None) -> np.ndarray:
    """Layout for corpora too small for UMAP: PCA of the vectors when given, else points on a circle."""
    if n == 0:
        return np.zeros((0, 2), np.float32)
    if n == 1:
        return np.zeros((1, 2), np.float32)
    if vectors is not None:
        x = np.asarray(vectors, dtype=np.float64)[:n]
        x = x - x.mean(axis=0, keepdims=True)
        if np.abs(x).max() > 0:
            u, s, _ = np.linalg.svd(x, full_matrices=False)
            coords = np.zeros((n, 2))
            r = min(2, u.shape[1])
            coords[:, :r] = u[:, :r] * s[:r]
            return coords.astype(np.float32)
    angle = 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(angle), np.sin(angle)], axis=1).astype(np.float32)


def layout_from_embedding(
    graph: Any,
    cluster_embedding: np.ndarray,
    random_state: int | None = 42,
    n_epochs: int = 200,
    n_neighbors: int = 15,
) -> np.ndarray:
    """2-D layout that reuses the cluster stage: PCA of its node embedding, refined on the same fuzzy graph.

    EVoC's node-embedding optimiser (UMAP's objective, numba) in 2 dimensions, started from the
    2 leading principal axes of the cluster embedding, so the map shows the clusters the cluster
    stage found and needs no spectral initialisation. With a seed it runs EVoC's reproducible
    (still multi-threaded) update; ``random_state=None`` uses its faster lock-free update.
    """
    from evoc.node_embedding import node_embedding

    from engine.cluster.embedding import fuzzy_graph

    emb = np.asarray(cluster_embedding, dtype=np.float64)
    n = emb.shape[0]
    if n < MIN_UMAP_POINTS:
        return fallback_layout(n, emb)
    centred = emb - emb.mean(axis=0)
    # 2 leading principal axes from the small (d x d) covariance: O(N d^2), fine at 1M x 4
    _, vecs = np.linalg.eigh(centred.T @ centred)
    init = centred @ vecs[:, ::-1][:, :2]
    span = float(np.abs(init).max()) or 1.0
    init = np.ascontiguousarray(init / span * 10.0, dtype=np.float32)
    fuzzy = fuzzy_graph(graph, n_neighbors)
    rng = np.random.RandomState(random_state) if random_state is not None else np.random.RandomState()
    out = node_embedding(
        fuzzy,
        n_components=2,
        n_epochs=n_epochs,
        initial_embedding=init,
        negative_sample_rate=1.0,
        noise_level=0.5,
        random_state=rng,
        verbose=False,
        reproducible_flag=random_state is not None,
        initial_alpha=0.1,
    )
    return np.ascontiguousarray(np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0), dtype=np.float32)


def project_2d(
    graph: Any,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    random_state: int | None = 42,
    backend: str = "auto",
    vectors: np.ndarray | None = None,
    n_epochs: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """2-D UMAP layout of a kNN graph, reusing the graph (no second neighbour search).

    ``graph`` is an ``engine.graph.KnnGraph`` or any object with ``.indices``/``.distances``.
    ``n_neighbors`` counts the point itself (umap-learn's convention); it is capped at the graph's
    k + 1. ``vectors`` (optional, (N, dim)) only serve umap's layout of *disconnected* components
    (it places component centroids) and the small-N PCA fallback; without them components are placed
    at random. With fewer than ``MIN_UMAP_POINTS`` documents (or n_neighbors < 2 available) we return
    :func:`fallback_layout`. ``random_state`` makes the layout reproducible but single-threaded;
    pass ``None`` for a parallel, non-deterministic run. Returns float32 (N, 2).
    """
    try:
        indices, distances = graph.indices, graph.distances
    except AttributeError as exc:
        raise EngineError("graph: expected an object with .indices and .distances (a KnnGraph)") from exc
    indices = np.asarray(indices)
    n = int(indices.shape[0]) if indices.ndim == 2 else 0
    if indices.ndim != 2:
        raise EngineError(f"graph: indices must be 2-D (N, k), got shape {indices.shape}")
    if vectors is not None and len(vectors) != n:
        raise EngineError(f"vectors: {len(vectors)} rows but the graph has {n}")
    if n_neighbors < 2:
        raise EngineError(f"n_neighbors={n_neighbors}: must be >= 2")
    if not 0.0 <= min_dist:
        raise EngineError(f"min_dist={min_dist}: must be >= 0")
    k_eff = min(int(n_neighbors), indices.shape[1] + 1, n - 1)
    if n < MIN_UMAP_POINTS or k_eff < 2:
        log.info("project_2d: %d documents, graph k=%d: fallback layout, not UMAP", n, indices.shape[1])
        return fallback_layout(n, vectors)
    knn_idx, knn_dist = prepare_precomputed_knn(indices, distances, k_eff)
    which = resolve_backend(backend, vectors)
    if which == "cuml":
        return _project_cuml(knn_idx, knn_dist, k_eff, min_dist, random_state, vectors, n_epochs, progress)
    return _project_umap(knn_idx, knn_dist, k_eff, min_dist, random_state, vectors, n_epochs, progress)


def _project_umap(
    knn_idx: np.ndarray,
    knn_dist: np.ndarray,
    n_neighbors: int,
    min_dist: float,
    random_state: int | None,
    vectors: np.ndarray | None,
    n_epochs: int | None,
    progress: bool,
) -> np.ndarray:
    import umap

    n = knn_idx.shape[0]
    # X is only used by umap for N and for centroids of disconnected components; a (N, 1) zero
    # placeholder is enough when no vectors are given (components are then placed at random).
    x = layout_features(vectors) if vectors is not None else np.zeros((n, 1), np.float32)
    reducer = umap.UMAP(
        n_neighbors=n_neighbors,
        n_components=2,
        min_dist=min_dist,
        metric="euclidean",
        random_state=random_state,
        n_epochs=n_epochs,
        precomputed_knn=(knn_idx, knn_dist),
        verbose=progress,
        tqdm_kwds={"disable": not progress, "desc": "UMAP epochs"},
    )
    with warnings.catch_warnings():
        # Expected and harmless here: no NNDescent index (so no transform()), n_jobs forced to 1
        # by random_state, and spectral-init complaints on tiny/disconnected graphs.
        warnings.filterwarnings("ignore", message=".*knn_search_index.*")
        warnings.filterwarnings("ignore", message=".*n_jobs value.*")
        warnings.filterwarnings("ignore", message=".*disconnected.*")
        warnings.filterwarnings("ignore", message=".*Spectral initialisation failed.*")
        warnings.filterwarnings("ignore", category=UserWarning, module="umap")
        emb = reducer.fit_transform(x)
    if getattr(reducer, "_knn_search_index", None) is not None:  # pragma: no cover - guard
        log.warning("project_2d: umap built its own neighbour index; the precomputed graph was ignored")
    emb = np.asarray(emb, dtype=np.float32)
    if not np.all(np.isfinite(emb)):
        emb = np.nan_to_num(emb, nan=0.0, posinf=0.0, neginf=0.0)
    return emb


def _project_cuml(
    knn_idx: np.ndarray,
    knn_dist: np.ndarray,
    n_neighbors: int,
    min_dist: float,
    random_state: int | None,
    vectors: np.ndarray,
    n_epochs: int | None,
    progress: bool,
) -> np.ndarray:  # pragma: no cover - needs a GPU
    from cuml.manifold import UMAP as CumlUMAP

    # cuML has no "-1 = missing" convention: point missing entries at self (a self-loop is ignored).
    rows = np.broadcast_to(np.arange(knn_idx.shape[0])[:, None], knn_idx.shape)
    idx = np.where(knn_idx < 0, rows, knn_idx).astype(np.int64)
    dist = np.where(knn_idx < 0, 0.0, knn_dist).astype(np.float32)
    reducer = CumlUMAP(
        n_neighbors=n_neighbors,
        n_components=2,
        min_dist=min_dist,
        metric="euclidean",
        random_state=random_state,
        n_epochs=n_epochs,
        precomputed_knn=(idx, dist),
        verbose=progress,
        output_type="numpy",
    )
    emb = reducer.fit_transform(np.asarray(vectors, dtype=np.float32))
    return np.asarray(emb, dtype=np.float32)


# --------------------------------------------------------------------------------------------------
# Maps
# --------------------------------------------------------------------------------------------------
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
