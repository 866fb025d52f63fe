"""Quality AND stability of the default clustering vs peers, on the same MiniLM vectors and graph.

Corpora (labelled, /work/shared/data): BBC News (2,225, 5 classes), AG News test (7,600, 4),
StackOverflow titles (16,407, 20), search snippets (12,295, 8). Per method: NMI over all documents
(noise = its own label), noise share, clusters, seconds; seed ARI of seeds 1, 2, 3 against seed 42;
and the ARI between the full run and a run on a random 90 % of the corpus, on the shared documents.
The engine's graph is the exact k=30 kNN graph (what `engine run` builds below 50k documents: a FLAT
Milvus index). Methods: ``engine`` (the default: Leiden communities, medoid of 8 runs),
``engine_true_k`` (--n-clusters = the class count), ``engine_embedding`` (--cluster-space embedding:
consensus of 16 node-embedding runs, the previous default), ``engine_1run`` (one node-embedding run),
``umap_hdbscan`` (UMAP 5-d -> HDBSCAN 15), ``evoc`` (EVoC defaults) and ``kmeans`` (the true k).

    OMP_NUM_THREADS=2 python benchmarks/stability.py          # -> benchmarks/results/stability.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings

import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from engine.cluster.space import cluster_community_space, cluster_embedding_space  # noqa: E402
from engine.config import EMBEDDING_RUNS, EngineConfig  # noqa: E402
from engine.graph import exact_knn  # noqa: E402

SHARED = os.path.abspath(os.path.join(HERE, "..", "..", "shared", "data"))
CACHE = os.path.join(HERE, "out")
RESULTS = os.path.join(HERE, "results", "stability.json")
SEEDS = (1, 2, 3)
BASE_SEED = 42


def load(name: str) -> tuple[list[str], np.ndarray]:
    from tests.fixtures.data import load_agnews, load_bbc, load_short_text

    if name == "bbc":
        return load_bbc(SHARED)
    if name == "ag":
        return load_agnews(SHARED)
    if name in ("stackoverflow", "searchsnippets"):
        return load_short_text(SHARED, name)
    raise SystemExit(f"error: unknown dataset {name!r} (bbc, ag, stackoverflow, searchsnippets)")


def method_fn(name: str, k_true: int):
    """fn(vectors, seed) -> labels for each method."""
    cfg = EngineConfig()
    kw = {"min_cluster_size": cfg.cluster.min_cluster_size, "min_samples": cfg.cluster.effective_min_samples}

    def engine(x, seed, **extra):
        """The default cluster space (Leiden communities) through the cluster stage's own function."""
        return cluster_community_space(
            exact_knn(x, cfg.graph.k, progress=False),
            min_cluster_size=cfg.cluster.min_cluster_size,
            seed=seed,
            consensus_runs=cfg.cluster.effective_consensus_runs,
            resolution=cfg.cluster.resolution,
            **extra,
        )

    def embedding_space(x, seed, **extra):
        runs = extra.pop("consensus_runs", EMBEDDING_RUNS)
        return cluster_embedding_space(
            exact_knn(x, cfg.graph.k, progress=False),
            seed=seed,
            vectors=x,
            consensus_runs=runs,
            **kw,
            **extra,
        )

    def umap_hdbscan(x, seed):
        import hdbscan
        import umap

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            low = umap.UMAP(n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine", random_state=seed)
            return hdbscan.HDBSCAN(min_cluster_size=15).fit_predict(low.fit_transform(x))

    def evoc_fn(x, seed):
        import evoc

        return evoc.EVoC(random_state=seed).fit_predict(x)

    def kmeans(x, seed):
        from sklearn.cluster import KMeans

        return KMeans(n_clusters=k_true, n_init=10, random_state=seed).fit_predict(x)

    return {
        "engine": lambda x, s: engine(x, s).labels,
        "engine_true_k": lambda x, s: engine(x, s, n_clusters=k_true).labels,
        "engine_embedding": lambda x, s: embedding_space(x, s).labels,
        "engine_1run": lambda x, s: embedding_space(x, s, consensus_runs=1).labels,
        "umap_hdbscan": umap_hdbscan,
        "evoc": evoc_fn,
        "kmeans": kmeans,
    }[name]


def measure(name: str, vectors: np.ndarray, classes: np.ndarray, method: str) -> dict:
    fn = method_fn(method, int(len(np.unique(classes))))
    t0 = time.perf_counter()
    base = np.asarray(fn(vectors, BASE_SEED))
    secs = time.perf_counter() - t0
    out = {
        "nmi": round(float(normalized_mutual_info_score(classes, base)), 4),
        "noise_share": round(float((base < 0).mean()), 4),
        "clusters": int(len(np.unique(base[base >= 0]))),
        "seconds": round(secs, 2),
        "seed_ari": [round(float(adjusted_rand_score(base, fn(vectors, s))), 4) for s in SEEDS],
    }
    sub = np.sort(np.random.default_rng(0).choice(len(vectors), int(0.9 * len(vectors)), replace=False))
    sub_labels = np.asarray(fn(np.ascontiguousarray(vectors[sub]), BASE_SEED))
    out["subsample_ari"] = round(float(adjusted_rand_score(base[sub], sub_labels)), 4)
    print(f"{name:15s} {method:14s} {json.dumps(out)}", flush=True)
    return out


def markdown(report: dict) -> str:
    """The RESULTS.md table: one row per corpus and method."""
    rows = [
        "| corpus | method | NMI | noise | clusters | seed ARI (1, 2, 3 vs 42) | 90 % subsample ARI | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, ds in report["datasets"].items():
        for method, r in ds["methods"].items():
            seeds = ", ".join(f"{a:.2f}" for a in r["seed_ari"])
            rows.append(
                f"| {name} | {method} | {r['nmi']:.3f} | {r['noise_share']:.1%} | {r['clusters']} | {seeds} | "
                f"{r['subsample_ari']:.2f} | {r['seconds']:.1f} |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="bbc,ag,stackoverflow,searchsnippets")
    parser.add_argument(
        "--methods", default="engine,engine_true_k,engine_embedding,engine_1run,umap_hdbscan,evoc,kmeans"
    )
    parser.add_argument("--out", default=RESULTS)
    parser.add_argument("--markdown", help="print the markdown table of this result JSON (no runs)")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(json.load(open(args.markdown))))
        return 0
    from tests.fixtures.data import minilm_embed

    report: dict = {
        "what": "NMI, seed ARI (1,2,3 vs 42) and 90 % subsample ARI; MiniLM vectors, exact k=30 graph",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "loadavg_start": open("/proc/loadavg").read().split()[:3],
        "datasets": {},
    }
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        texts, classes = load(name)
        vectors = minilm_embed(texts, CACHE)
        report["datasets"][name] = {
            "n": len(texts),
            "classes": int(len(np.unique(classes))),
            "methods": {m: measure(name, vectors, classes, m) for m in args.methods.split(",")},
        }
    report["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
