"""Time and peak RSS of the cluster stage from k=30 kNN graphs, for each CPU path considered.

Paths (each run in its own subprocess, so every peak RSS is that path's alone):
  engine                 engine.cluster.cluster_graph (own core distances + Borůvka MST + tree)
  fast_hdbscan_boruvka   fast_hdbscan's precomputed sparse path (symmetrise, CoreGraph, Borůvka)
  fast_hdbscan_kruskal   the same with its Kruskal MST
  hdbscan_generic        hdbscan.HDBSCAN(metric="precomputed") on the CSR graph (sparse generic path)

Graphs: a base graph of N0 points drawn from a mixture of Gaussian clusters of very unequal sizes
and spreads in 10-d plus 10% uniform background, with its exact k=30 kNN (sklearn KD-tree); cached
under benchmarks/out/. A 1M graph is made WITHOUT a 1M neighbour search: ``copies`` independent
copies of the base graph, each with its distances scaled by a different factor, their point ids
shuffled by one random permutation of all positions (so memory access is as scattered as in a
real graph). It has N*k edges with real kNN structure; it is disconnected (>= ``copies`` pieces).

    nice -n 10 python benchmarks/bench_cluster.py --sizes 100000 1000000
writes benchmarks/results/cluster_scale.json (seconds, peak RSS, ARI vs the engine path, ratios).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out", "cluster")
RESULTS = os.path.join(HERE, "results", "cluster_scale.json")
PATHS = ("engine", "fast_hdbscan_boruvka", "fast_hdbscan_kruskal", "hdbscan_generic")


def base_graph(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Exact kNN of clustered 10-d points (cached)."""
    path = os.path.join(OUT, f"base_{n}_{k}_{seed}.npz")
    if os.path.exists(path):
        z = np.load(path)
        return z["indices"], z["distances"]
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(seed)
    dim, n_centers = 10, max(20, n // 2000)
    weights = rng.pareto(1.2, n_centers) + 1
    n_noise = n // 10
    counts = rng.multinomial(n - n_noise, weights / weights.sum())
    centers = rng.uniform(-10, 10, (n_centers, dim))
    spreads = rng.uniform(0.2, 1.0, n_centers)
    parts = [rng.normal(c, s, (m, dim)) for c, s, m in zip(centers, spreads, counts, strict=True)]
    x = np.concatenate(parts + [rng.uniform(-12, 12, (n_noise, dim))]).astype(np.float32)
    x = x[rng.permutation(n)]
    dist, idx = NearestNeighbors(n_neighbors=k + 1, algorithm="kd_tree").fit(x).kneighbors(x)
    indices, distances = idx[:, 1:].astype(np.int32), dist[:, 1:].astype(np.float32)
    os.makedirs(OUT, exist_ok=True)
    np.savez(path, indices=indices, distances=distances)
    return indices, distances


def tiled_graph(
    indices: np.ndarray, distances: np.ndarray, copies: int, seed: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """``copies`` copies of a graph, distances scaled per copy, positions shuffled globally."""
    n0, k = indices.shape
    n = n0 * copies
    perm = np.random.default_rng(seed).permutation(n).astype(np.int32)
    out_idx = np.empty((n, k), dtype=np.int32)
    out_dist = np.empty((n, k), dtype=np.float32)
    for c in range(copies):
        rows = perm[c * n0 : (c + 1) * n0]
        out_idx[rows] = perm[indices + c * n0]
        out_dist[rows] = distances * np.float32(1.0 + 0.01 * c)
    return out_idx, out_dist


def graph_for(n: int, k: int, base_n: int) -> tuple[np.ndarray, np.ndarray, str]:
    if n <= base_n:
        idx, dist = base_graph(n, k)
        return idx, dist, f"exact kNN of {n} clustered 10-d points"
    copies = n // base_n
    idx, dist = base_graph(base_n, k)
    return (
        *tiled_graph(idx, dist, copies),
        f"{copies} shuffled copies of the exact kNN of {base_n} clustered 10-d points",
    )


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


STAGES: dict[str, float] = {}


def _run_path(path: str, idx: np.ndarray, dist: np.ndarray, mcs: int, ms: int) -> np.ndarray:
    n, k = idx.shape
    if path == "engine":
        from engine.cluster import cluster_graph

        result = cluster_graph((idx, dist), min_cluster_size=mcs, min_samples=ms, backend="cpu")
        STAGES.clear()
        STAGES.update({name: round(sec, 3) for name, sec in result.timings.items()})
        return result.labels
    import scipy.sparse as sp

    graph = sp.csr_matrix((dist.ravel(), idx.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))
    if path.startswith("fast_hdbscan"):
        from fast_hdbscan.hdbscan import clusters_from_spanning_tree
        from fast_hdbscan.precomputed import (
            compute_mst_from_precomputed_sparse,
            compute_mst_from_precomputed_sparse_kruskal,
        )

        build = (
            compute_mst_from_precomputed_sparse
            if path.endswith("boruvka")
            else compute_mst_from_precomputed_sparse_kruskal
        )
        mst, _, _ = build(graph, ms)
        return clusters_from_spanning_tree(mst, min_cluster_size=mcs)[0]
    if path == "hdbscan_generic":
        import hdbscan

        return hdbscan.HDBSCAN(min_cluster_size=mcs, min_samples=ms, metric="precomputed").fit(graph).labels_
    raise ValueError(path)


def worker(path: str, n: int, k: int, base_n: int, mcs: int, ms: int) -> None:
    """One path, one size, in a fresh process: warm the JIT on a small graph, then time the real one."""
    small_idx, small_dist = base_graph(2000, k)
    _run_path(path, small_idx, small_dist, mcs, ms)  # numba compile / cache load, not timed
    idx, dist, how = graph_for(n, k, base_n)
    rss_before = _rss_mb()
    t0 = time.perf_counter()
    error = None
    labels = None
    try:
        labels = _run_path(path, idx, dist, mcs, ms)
    except Exception as exc:  # a library path that refuses the graph is a result too
        error = f"{type(exc).__name__}: {str(exc)[:200]}"
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if labels is not None:
        np.save(os.path.join(OUT, f"labels_{path}_{n}.npy"), np.asarray(labels, dtype=np.int64))
    print(
        json.dumps(
            {
                "path": path,
                "n": n,
                "k": k,
                "graph": how,
                "seconds": round(seconds, 3),
                "peak_rss_mb": round(peak, 1),
                "rss_before_mb": round(rss_before, 1),
                "n_clusters": None if labels is None else int(np.max(labels)) + 1,
                "noise_fraction": None
                if labels is None
                else round(float((np.asarray(labels) < 0).mean()), 4),
                "error": error,
                "stage_seconds": dict(STAGES) or None,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    ap.add_argument("--k", type=int, default=30)
    ap.add_argument("--base-n", type=int, default=100_000)
    ap.add_argument("--min-cluster-size", type=int, default=10)
    ap.add_argument("--min-samples", type=int, default=10)
    ap.add_argument("--timeout", type=int, default=900, help="seconds per path and size")
    ap.add_argument("--skip-hdbscan-above", type=int, default=200_000)
    ap.add_argument("--out", default=RESULTS)
    ap.add_argument("--worker", nargs=2, metavar=("PATH", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    if args.worker:
        worker(
            args.worker[0], int(args.worker[1]), args.k, args.base_n, args.min_cluster_size, args.min_samples
        )
        return
    base_graph(args.base_n, args.k)
    rows = []
    for n in args.sizes:
        for path in args.paths:
            if path == "hdbscan_generic" and n > args.skip_hdbscan_above:
                rows.append(
                    {"path": path, "n": n, "error": f"skipped above {args.skip_hdbscan_above} points"}
                )
                continue
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                path,
                str(n),
                "--k",
                str(args.k),
                "--base-n",
                str(args.base_n),
                "--min-cluster-size",
                str(args.min_cluster_size),
                "--min-samples",
                str(args.min_samples),
            ]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                line = [s for s in proc.stdout.splitlines() if s.startswith("{")]
                row = json.loads(line[-1]) if line else {"path": path, "n": n, "error": proc.stderr[-500:]}
            except subprocess.TimeoutExpired:
                row = {"path": path, "n": n, "error": f"timeout after {args.timeout} s"}
            print(json.dumps(row), flush=True)
            rows.append(row)
        _compare(rows, n)
    result = {
        "command": "nice -n 10 python benchmarks/bench_cluster.py " + " ".join(sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_at_end": os.getloadavg(),
        },
        "params": {"k": args.k, "min_cluster_size": args.min_cluster_size, "min_samples": args.min_samples},
        "rows": rows,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2)
    print("wrote", args.out)


def _compare(rows: list[dict], n: int) -> None:
    """ARI of each path's labels vs the engine's, and time/RSS ratios vs the engine, same run."""
    from sklearn.metrics import adjusted_rand_score

    mine = next(
        (r for r in rows if r.get("n") == n and r.get("path") == "engine" and not r.get("error")), None
    )
    if mine is None:
        return
    ref = np.load(os.path.join(OUT, f"labels_engine_{n}.npy"))
    for r in rows:
        if r.get("n") != n or r.get("error") or r.get("path") == "engine":
            continue
        other = np.load(os.path.join(OUT, f"labels_{r['path']}_{n}.npy"))
        r["ari_vs_engine"] = round(float(adjusted_rand_score(ref, other)), 4)
        r["seconds_ratio_vs_engine"] = round(r["seconds"] / max(mine["seconds"], 1e-9), 2)
        r["peak_rss_ratio_vs_engine"] = round(r["peak_rss_mb"] / mine["peak_rss_mb"], 2)
        r["stage_rss_ratio_vs_engine"] = round(
            (r["peak_rss_mb"] - r["rss_before_mb"]) / max(mine["peak_rss_mb"] - mine["rss_before_mb"], 1.0), 2
        )


if __name__ == "__main__":
    main()
