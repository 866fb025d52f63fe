"""Writing the report: the report model, ``clusters.json`` and the self-contained ``report.html``.

Why apart from engine.report (the analysis: keywords, representatives, layer links): what the
clusters are is computed once; how a person or a program reads it is decided here.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from engine.atomic import write_text


@dataclass
class ClusterReport:
    """Per-cluster summary. ``clusters``: one row per cluster, largest first."""

    clusters: pd.DataFrame
    n_documents: int
    noise_size: int
    noise_keywords: list[str] = field(default_factory=list)
    noise_keyword_scores: list[float] = field(default_factory=list)
    # Topic tree (cluster space "embedding"): one JSON-ready dict per layer, finest first; see build_layers_report.
    layers: list[dict[str, Any]] | None = None
    primary_layer: int | None = None
    warnings: list[str] = field(default_factory=list)
    over_time: dict | None = None  # engine.timeline.topics_over_time (--time-column)
    custom_names: dict[int, str] = field(default_factory=dict)  # set_topic_labels / zero-shot topic names
    similarity: dict[str, Any] | None = None  # engine.report.topic_similarity of the largest clusters
    per_class: dict[str, Any] | None = None  # engine.report.topics_per_class (--class-column)

    def name_of(self, cluster: int, keywords: Any) -> str:
        """The cluster's custom name when one was set, else its top distinct keywords."""
        return self.custom_names.get(int(cluster)) or cluster_name(keywords)

    def names(self) -> dict[int, str]:
        """{cluster: name} of the primary layer."""
        return {int(r.cluster): self.name_of(r.cluster, r.keywords) for r in self.clusters.itertuples()}

    @property
    def n_clusters(self) -> int:
        return len(self.clusters)

    @property
    def noise_share(self) -> float:
        return self.noise_size / self.n_documents if self.n_documents else 0.0

    def keywords_by_cluster(self) -> dict[int, list[str]]:
        """{cluster: keywords}, e.g. for ``engine.show.map.write_map(keywords=...)``."""
        return {int(r.cluster): list(r.keywords) for r in self.clusters.itertuples()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (what ``clusters.json`` holds)."""
        clusters = []
        for r in self.clusters.itertuples():
            clusters.append(
                {
                    "cluster": int(r.cluster),
                    "name": self.name_of(r.cluster, r.keywords),
                    "size": int(r.size),
                    "share": float(r.share),
                    "mean_probability": float(r.mean_probability),
                    "keywords": [str(k) for k in r.keywords],
                    "keyword_scores": [float(v) for v in r.keyword_scores],
                    **(
                        {"over_time": self.over_time["clusters"].get(str(int(r.cluster)), [])}
                        if self.over_time
                        else {}
                    ),
                    "representatives": [
                        {
                            "id": to_python(d["id"]),
                            "text": str(d["text"]),
                            "probability": float(d["probability"]),
                        }
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
                "keyword_scores": list(self.noise_keyword_scores),
            },
            "clusters": clusters,
            "warnings": list(self.warnings),
            **({"over_time": self.over_time} if self.over_time else {}),
            **({"per_class": self.per_class} if self.per_class else {}),
            **({"similarity": self.similarity} if self.similarity else {}),
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
        write_text(json_path, json.dumps(self.to_dict(), ensure_ascii=False, indent=2))
        html_path = os.path.join(out, "report.html")
        has_map = os.path.exists(os.path.join(out, "map.html"))
        write_text(html_path, render_html(self, title=title, map_href="map.html" if has_map else None))
        return {"json": json_path, "html": html_path}


def cluster_name(keywords: Any, n: int = 3) -> str:
    """A short cluster name: its top ``n`` distinct keywords joined by ", " ("" when it has none)."""
    from engine.keywords import name_from_terms

    return name_from_terms(list(keywords), n)


def to_python(value: Any) -> Any:
    """numpy scalar -> Python scalar (for JSON)."""
    return value.item() if hasattr(value, "item") else value


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
    """A readable, self-contained HTML page; every text is HTML-escaped.

    The charts (engine.show.charts) are plotly figures; plotly.js is inlined once, so the page opens
    offline like map.html. A report with no chart (no clusters) has no script at all.
    """
    from engine.show.charts import charts_html

    charts = charts_html(report) if report.n_clusters else ""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_esc(title)}</title><style>{_CSS}</style>",
        _plotly_js() if charts else "",
        "</head><body>",
        f"<h1>{_esc(title)}</h1>",
        f'<div class="summary">{report.n_documents} documents &middot; {report.n_clusters} clusters &middot; '
        f"noise {report.noise_size} ({report.noise_share:.1%})",
    ]
    if map_href:
        parts.append(f' &middot; <a href="{_esc(map_href)}">open the map</a>')
    parts.append("</div>")
    for warning in report.warnings:
        parts.append(f'<p class="warn"><b>Warning:</b> {_esc(warning)}</p>')
    if charts:
        parts.append(charts)
    if report.layers:
        parts.append(render_tree_html(report.layers))
        parts.append(f"<h2>Primary layer {report.primary_layer}: clusters</h2>")
    if report.noise_keywords:
        kws = "".join(f"<span>{_esc(k)}</span>" for k in report.noise_keywords)
        parts.append(f'<p class="kw">Noise keywords: {kws}</p>')
    over_time = report.over_time
    if over_time:
        from engine.timeline import chart_svg

        names = report.names()
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
        kws = "".join(
            f'<span>{_esc(k)} <small class="p">{v:.3f}</small></span>'
            for k, v in zip(r.keywords, r.keyword_scores, strict=False)
        )
        kws = f"<b>{_esc(report.name_of(r.cluster, r.keywords))}</b><br>{kws or '<em>none</em>'}"
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


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return f'<script type="text/javascript">{get_plotlyjs()}</script>'


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
