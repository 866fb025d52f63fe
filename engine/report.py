"""Report stage: per-cluster size, c-TF-IDF keywords and representative documents.

Keywords: BERTopic's class-based TF-IDF over clean, language-aware tokens (engine.keywords).

Representative documents: within a cluster, highest HDBSCAN membership probability first; ties
(HDBSCAN gives probability 1.0 to the whole core of a cluster) are broken by cosine similarity to
the cluster centroid when ``vectors`` are given, else by lowest GLOSH outlier score, then position.
Exact duplicate texts are shown once. (BERTopic ranks a sample of documents by c-TF-IDF similarity;
membership + centroid is cheaper, deterministic and uses what HDBSCAN already measured.)
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from engine.errors import EngineError
from engine.keywords import class_tfidf, top_terms

__all__ = ["ClusterReport", "build_report", "class_tfidf", "render_html", "representatives", "top_terms"]

REQUIRED_COLUMNS = ("id", "text", "cluster", "probability", "outlier_score")


# --------------------------------------------------------------------------------------------------
# Representatives
# --------------------------------------------------------------------------------------------------
def representatives(
    positions: np.ndarray,
    probability: np.ndarray,
    outlier_score: np.ndarray,
    texts: np.ndarray,
    n: int,
    vectors: np.ndarray | None = None,
) -> list[int]:
    """Positions of up to n representative documents of one cluster (see module doc for the order)."""
    if n <= 0 or len(positions) == 0:
        return []
    prob = np.nan_to_num(probability[positions].astype(np.float64), nan=0.0)
    if vectors is not None:
        v = np.asarray(vectors[np.sort(positions)], dtype=np.float32)
        v = v[
            np.argsort(np.argsort(positions))
        ]  # back to `positions` order (sorted read is faster on memmaps)
        centroid = v.mean(axis=0)
        norm = float(np.linalg.norm(centroid))
        closeness = v @ (centroid / norm) if norm > 0 else np.zeros(len(positions), np.float32)
        tie = -closeness.astype(np.float64)
    else:
        tie = np.nan_to_num(outlier_score[positions].astype(np.float64), nan=np.inf)
    order = np.lexsort((positions, tie, -prob))
    chosen: list[int] = []
    seen: set[str] = set()
    for j in order:
        text = str(texts[positions[j]])
        key = " ".join(text.split()).lower()
        if key in seen:
            continue
        seen.add(key)
        chosen.append(int(positions[j]))
        if len(chosen) == n:
            break
    return chosen


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------
@dataclass
class ClusterReport:
    """Per-cluster summary. ``clusters``: one row per cluster, largest first."""

    clusters: pd.DataFrame
    n_documents: int
    noise_size: int
    noise_keywords: list[str] = field(default_factory=list)
    # Topic tree (cluster space "embedding"): one JSON-ready dict per layer, finest first; see build_layers_report.
    layers: list[dict[str, Any]] | None = None
    primary_layer: int | None = None
    warnings: list[str] = field(default_factory=list)
    over_time: dict | None = None  # engine.timeline.topics_over_time (--time-column)

    @property
    def n_clusters(self) -> int:
        return len(self.clusters)

    @property
    def noise_share(self) -> float:
        return self.noise_size / self.n_documents if self.n_documents else 0.0

    def keywords_by_cluster(self) -> dict[int, list[str]]:
        """{cluster: keywords}, e.g. for ``engine.project.write_map(keywords=...)``."""
        return {int(r.cluster): list(r.keywords) for r in self.clusters.itertuples()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (what ``clusters.json`` holds)."""
        clusters = []
        for r in self.clusters.itertuples():
            clusters.append(
                {
                    "cluster": int(r.cluster),
                    "name": cluster_name(r.keywords),
                    "size": int(r.size),
                    "share": float(r.share),
                    "mean_probability": float(r.mean_probability),
                    "keywords": [str(k) for k in r.keywords],
                    **(
                        {"over_time": self.over_time["clusters"].get(str(int(r.cluster)), [])}
                        if self.over_time
                        else {}
                    ),
                    "representatives": [
                        {"id": _py(d["id"]), "text": str(d["text"]), "probability": float(d["probability"])}
                        for d in r.representatives
                    ],
                }
            )
        out = {
            "n_documents": int(self.n_documents),
            "n_clusters": int(self.n_clusters),
            "noise": {
                "size": int(self.noise_size),
                "share": float(self.noise_share),
                "keywords": list(self.noise_keywords),
            },
            "clusters": clusters,
            "warnings": list(self.warnings),
            **({"over_time": self.over_time} if self.over_time else {}),
        }
        if self.layers is not None:
            out["primary_layer"] = self.primary_layer
            out["layers"] = self.layers
        return out

    def write(self, out_dir: str | os.PathLike, title: str = "Cluster report") -> dict[str, str]:
        """Write ``clusters.json`` and a self-contained ``report.html`` into out_dir; return their paths."""
        out = os.fspath(out_dir)
        os.makedirs(out, exist_ok=True)
        json_path = os.path.join(out, "clusters.json")
        with open(json_path, "w", encoding="utf-8") as fh:
            json.dump(self.to_dict(), fh, ensure_ascii=False, indent=2)
        html_path = os.path.join(out, "report.html")
        has_map = os.path.exists(os.path.join(out, "map.html"))
        with open(html_path, "w", encoding="utf-8") as fh:
            fh.write(render_html(self, title=title, map_href="map.html" if has_map else None))
        return {"json": json_path, "html": html_path}


def cluster_name(keywords: Any, n: int = 3) -> str:
    """A short cluster name: its top ``n`` keywords joined by ", " ("" when it has none)."""
    return ", ".join(str(k) for k in list(keywords)[:n])


def _py(value: Any) -> Any:
    """numpy scalar -> Python scalar (for JSON)."""
    return value.item() if hasattr(value, "item") else value


def _check_frame(frame: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise EngineError(f"report frame: missing column(s) {', '.join(missing)}")


def build_report(
    frame: pd.DataFrame,
    n_keywords: int = 10,
    n_representatives: int = 5,
    vectors: np.ndarray | None = None,
    max_features: int | None = 200_000,
) -> ClusterReport:
    """Summarise clusters of ``frame`` (id, text, cluster, probability, outlier_score; x, y optional).

    ``vectors`` (N, dim) in frame order, optional: used to break representative ties by closeness to
    the cluster centroid. Never raises on degenerate input (no clusters, one document, texts with no
    usable words): keywords are then empty lists.
    """
    _check_frame(frame)
    if vectors is not None and len(vectors) != len(frame):
        raise EngineError(f"vectors: {len(vectors)} rows but the frame has {len(frame)}")
    n = len(frame)
    labels = frame["cluster"].to_numpy(dtype=np.int64)
    prob = frame["probability"].to_numpy(dtype=np.float64)
    outlier = frame["outlier_score"].to_numpy(dtype=np.float64)
    texts = frame["text"].fillna("").astype(str).to_numpy(dtype=object)
    ids = frame["id"].to_numpy()

    cluster_ids, sizes = np.unique(labels[labels >= 0], return_counts=True)
    order = sorted(zip(cluster_ids.tolist(), sizes.tolist(), strict=True), key=lambda t: (-t[1], t[0]))
    noise_mask = labels < 0
    classes = [c for c, _ in order] + ([-1] if noise_mask.any() else [])

    # One concatenated document per class, built from sorted positions (memory ~ corpus text once).
    by_class = pd.Series(texts).groupby(np.where(noise_mask, -1, labels)).agg(" ".join)
    scores, vocab = class_tfidf([by_class.get(c, "") for c in classes], max_features=max_features)

    rows = []
    pos_sorted = np.argsort(labels, kind="stable")
    sorted_labels = labels[pos_sorted]
    starts = np.searchsorted(sorted_labels, [c for c, _ in order], side="left")
    ends = np.searchsorted(sorted_labels, [c for c, _ in order], side="right")
    for row, ((c, size), lo, hi) in enumerate(zip(order, starts, ends, strict=True)):
        members = pos_sorted[lo:hi]
        reps = representatives(members, prob, outlier, texts, n_representatives, vectors)
        rows.append(
            {
                "cluster": int(c),
                "size": int(size),
                "share": size / n,
                "mean_probability": float(np.nanmean(prob[members])) if size else 0.0,
                "keywords": top_terms(scores, vocab, row, n_keywords),
                "representatives": [
                    {"id": _py(ids[p]), "text": texts[p], "probability": float(prob[p])} for p in reps
                ],
            }
        )
    columns = ["cluster", "size", "share", "mean_probability", "keywords", "representatives"]
    clusters = pd.DataFrame(rows, columns=columns)
    noise_kw = top_terms(scores, vocab, len(classes) - 1, n_keywords) if noise_mask.any() else []
    return ClusterReport(
        clusters=clusters, n_documents=n, noise_size=int(noise_mask.sum()), noise_keywords=noise_kw
    )


def build_layers_report(
    frame: pd.DataFrame,
    layers: np.ndarray,
    primary: int,
    strengths: np.ndarray | None = None,
    n_keywords: int = 10,
    n_representatives: int = 5,
    vectors: np.ndarray | None = None,
    max_features: int | None = 200_000,
) -> ClusterReport:
    """The primary layer's report plus every layer's clusters with parents, children, keywords and names.

    ``layers`` (L, N): cluster ids per layer, finest first, 0 = largest. A cluster's parent is the
    cluster of the next coarser layer that holds most of its members (-1: none). Keywords are
    computed per layer with the same c-TF-IDF (:func:`build_report` on that layer's labels).
    """
    from engine.cluster.layers import parent_links

    layers = np.asarray(layers)
    if layers.ndim != 2 or layers.shape[1] != len(frame):
        raise EngineError(f"layers: shape {layers.shape} does not match {len(frame)} documents")
    if not 0 <= primary < layers.shape[0]:
        raise EngineError(f"primary layer {primary} out of range 0..{layers.shape[0] - 1}")
    reports = []
    for i in range(layers.shape[0]):
        sub = frame.copy(deep=False)
        sub["cluster"] = layers[i].astype(np.int64)
        if strengths is not None and i != primary:
            sub["probability"] = np.asarray(strengths[i], dtype=np.float32)
        reports.append(
            build_report(sub, n_keywords, n_representatives, vectors=vectors, max_features=max_features)
        )
    parents = [parent_links(layers[i], layers[i + 1]) for i in range(layers.shape[0] - 1)]
    parents.append(np.full(int(layers[-1].max()) + 1, -1, dtype=np.int64))
    layer_dicts: list[dict[str, Any]] = []
    for i, rep in enumerate(reports):
        d = rep.to_dict()
        children: dict[int, list[int]] = {}
        if i > 0:
            for child, parent in enumerate(parents[i - 1].tolist()):
                if parent >= 0:
                    children.setdefault(parent, []).append(child)
        for c in d["clusters"]:
            cid = c["cluster"]
            c["parent"] = int(parents[i][cid]) if cid < len(parents[i]) else -1
            c["children"] = children.get(cid, [])
        layer_dicts.append(
            {
                "layer": i,
                "primary": i == primary,
                "n_clusters": d["n_clusters"],
                "noise": d["noise"],
                "clusters": d["clusters"],
            }
        )
    main = reports[primary]
    main.layers = layer_dicts
    main.primary_layer = int(primary)
    return main


# --------------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#222;max-width:1200px}
h1{margin-bottom:.2rem} .summary{color:#555;margin-bottom:1.5rem}
table{border-collapse:collapse;width:100%} th,td{border-bottom:1px solid #ddd;padding:.5rem;vertical-align:top;text-align:left}
th{background:#f4f4f4;position:sticky;top:0} td.num{text-align:right;white-space:nowrap}
.kw span{display:inline-block;background:#eef3fb;border-radius:3px;padding:0 .3rem;margin:0 .2rem .2rem 0;font-size:.9em}
.warn{background:#fff4e5;border-left:4px solid #e69500;padding:.5rem .8rem}
ol{margin:0;padding-left:1.2rem} li{margin-bottom:.3rem;font-size:.92em} .p{color:#888;font-size:.85em}
.tree details{margin:.25rem 0 .25rem 1.2rem} .tree summary{cursor:pointer} .tree .n{color:#555;font-size:.9em}
.tree .name{font-weight:600} .tree .docs{margin:.2rem 0 .4rem 1.4rem;color:#444;font-size:.88em}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _doc_html(text: str) -> str:
    """First line (the title, with the default template) in bold, the rest shortened; all escaped."""
    head, _, rest = str(text).strip().partition("\n")
    if not rest.strip():
        return _esc(_short(head))
    return f"<b>{_esc(_short(head, 200))}</b><br>{_esc(_short(rest))}"


def render_html(report: ClusterReport, title: str = "Cluster report", map_href: str | None = None) -> str:
    """A readable, self-contained HTML page (inline CSS, no scripts); every text is HTML-escaped."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        f'<div class="summary">{report.n_documents} documents &middot; {report.n_clusters} clusters &middot; '
        f"noise {report.noise_size} ({report.noise_share:.1%})",
    ]
    if map_href:
        parts.append(f' &middot; <a href="{_esc(map_href)}">open the map</a>')
    parts.append("</div>")
    for warning in report.warnings:
        parts.append(f'<p class="warn"><b>Warning:</b> {_esc(warning)}</p>')
    if report.layers:
        parts.append(render_tree_html(report.layers))
        parts.append(f"<h2>Primary layer {report.primary_layer}: clusters</h2>")
    if report.noise_keywords:
        kws = "".join(f"<span>{_esc(k)}</span>" for k in report.noise_keywords)
        parts.append(f'<p class="kw">Noise keywords: {kws}</p>')
    over_time = report.over_time
    if over_time:
        from engine.timeline import chart_svg

        names = {int(r.cluster): ", ".join(list(r.keywords)[:3]) for r in report.clusters.itertuples()}
        outside = {"before": "dated before the range", "after": "dated after it", "missing": "without a date"}
        extra = ", ".join(f"{over_time[k]} {v}" for k, v in outside.items() if over_time[k])
        parts.append(
            f'<h2>Topics over time</h2><p class="p">documents per {over_time["period"]} by '
            f"{_esc(over_time['column'])}, the 10 largest clusters{f' (not shown: {extra})' if extra else ''}</p>"
        )
        parts.append(chart_svg(over_time, names))
    parts.append(
        "<table><thead><tr><th>Cluster</th><th>Size</th><th>Share</th><th>Mean prob.</th>"
        "<th>Keywords</th><th>Representative documents</th></tr></thead><tbody>"
    )
    for r in report.clusters.itertuples():
        kws = "".join(f"<span>{_esc(k)}</span>" for k in r.keywords) or "<em>none</em>"
        reps = "".join(
            f'<li>{_doc_html(d["text"])} <span class="p">(id {_esc(d["id"])}, p={d["probability"]:.2f})</span></li>'
            for d in r.representatives
        )
        if over_time:
            from engine.timeline import sparkline_svg

            kws += "<br>" + sparkline_svg(over_time["clusters"].get(str(int(r.cluster)), []))
        parts.append(
            f'<tr id="c{int(r.cluster)}"><td class="num">{int(r.cluster)}</td><td class="num">{int(r.size)}</td>'
            f'<td class="num">{r.share:.1%}</td><td class="num">{r.mean_probability:.2f}</td>'
            f'<td class="kw">{kws}</td><td><ol>{reps}</ol></td></tr>'
        )
    if report.n_clusters == 0:
        parts.append('<tr><td colspan="6"><em>No clusters found: every document is noise.</em></td></tr>')
    parts.append("</tbody></table></body></html>")
    return "\n".join(parts)


def render_tree_html(layers: list[dict[str, Any]], max_docs: int = 3) -> str:
    """The topic tree: coarsest layer's topics, each opening onto its finer topics, down to the finest.

    Every node shows name, size, share and keywords; leaves also show a few representative titles.
    Finer clusters with no coarser parent (their documents are noise there) are listed at the top level.
    """
    if not layers:
        return ""
    top = len(layers) - 1

    def node(layer: int, cluster: dict[str, Any]) -> str:
        kws = "".join(f"<span>{_esc(k)}</span>" for k in cluster["keywords"][:8])
        primary = " &#9733;" if layers[layer].get("primary") else ""
        head = (
            f'<summary><span class="name">{_esc(cluster["name"] or "cluster " + str(cluster["cluster"]))}</span> '
            f'<span class="n">(layer {layer}{primary}, cluster {cluster["cluster"]}, {cluster["size"]} docs, '
            f'{cluster["share"]:.1%})</span> <span class="kw">{kws}</span></summary>'
        )
        inner = []
        if layer > 0:
            finer = {c["cluster"]: c for c in layers[layer - 1]["clusters"]}
            for child in cluster["children"]:
                if child in finer:
                    inner.append(node(layer - 1, finer[child]))
        if not inner:
            docs = "".join(
                f"<li>{_esc(_short(d['text'].split(chr(10))[0], 160))}</li>"
                for d in cluster["representatives"][:max_docs]
            )
            inner.append(f'<ol class="docs">{docs}</ol>')
        return f"<details>{head}{''.join(inner)}</details>"

    parts = [
        '<div class="tree"><h2>Topic tree</h2>',
        f'<p class="summary">{len(layers)} layers, finest to coarsest: '
        + ", ".join(
            f"layer {d['layer']}{' (primary &#9733;)' if d.get('primary') else ''}: {d['n_clusters']} clusters, "
            f"{d['noise']['share']:.0%} noise"
            for d in layers
        )
        + ". Open a topic to see the finer topics inside it.</p>",
    ]
    for cluster in layers[top]["clusters"]:
        parts.append(node(top, cluster))
    for layer in range(top - 1, -1, -1):
        orphans = [c for c in layers[layer]["clusters"] if c["parent"] < 0]
        for cluster in orphans:
            parts.append(node(layer, cluster))
    parts.append("</div>")
    return "\n".join(parts)
