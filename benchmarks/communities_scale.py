"""Cost of the default cluster stage (Leiden communities) at 100k and 1M nodes, against the previous default.

The graph: the exact k=30 kNN graphs of the four labelled corpora (MiniLM vectors, 38,527 documents),
copied until the size is reached, with 1 % of the neighbour slots rewired to random nodes of the whole
graph so that it is one connected graph (not disjoint copies). Its cost is what it measures (time and
peak RSS of the process during the cluster stage): a graph of copies says nothing about quality at
that size (benchmarks/stability.py measures quality on the real corpora).

Rows: ``communities`` (the default: 8 Leiden runs voting, finer and coarser layers; then the map stage
that follows it, timed apart: start from the topics' places, 2-D refinement on the graph), the
``embedding`` space with one run (the single-run cluster stage that issue 19 calls "today"; the previous
default ran 16 of them, ~16x: RESULTS.md section 12) and ``embedding_16runs`` (``--child N METHOD`` only).

    OMP_NUM_THREADS=2 python benchmarks/communities_scale.py   # -> benchmarks/results/communities_scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

CORPORA = ("bbc", "ag", "stackoverflow", "searchsnippets")
REWIRE = 0.01


def scaled_graph(n: int, seed: int = 0):
    """A connected k=30 graph of ``n`` nodes made of copies of the four corpora's exact graphs."""
    from stability import CACHE, load

    from engine.graph import KnnGraph, exact_knn
    from tests.fixtures.data import minilm_embed

    parts = []
    for name in CORPORA:
        texts, _ = load(name)
        g = exact_knn(minilm_embed(texts, CACHE), 30, progress=False)
        parts.append((np.asarray(g.indices), np.asarray(g.distances)))
    idx_blocks, dist_blocks, offset = [], [], 0
    while offset < n:
        for idx, dist in parts:
            idx_blocks.append(np.where(idx >= 0, idx + offset, -1))
            dist_blocks.append(dist)
            offset += idx.shape[0]
    idx = np.concatenate(idx_blocks)[:n]
    dist = np.concatenate(dist_blocks)[:n]
    idx = np.where(idx < n, idx, -1)
    rng = np.random.default_rng(seed)
    rewire = rng.random(idx.shape) < REWIRE
    idx[rewire] = rng.integers(0, n, int(rewire.sum()))
    order = np.argsort(dist, axis=1, kind="stable")
    return KnnGraph(np.take_along_axis(idx, order, 1), np.take_along_axis(dist, order, 1))


def child(n: int, method: str) -> dict:
    """One measurement in a fresh process: the cluster function on the scaled graph, timed, peak RSS."""
    from bench_pipeline import PeakRSS

    from engine.cluster.space import cluster_community_space, cluster_embedding_space

    graph = scaled_graph(n)
    rss = PeakRSS()
    base = rss.current()
    t0 = time.perf_counter()
    if method == "communities":
        res = cluster_community_space(graph, seed=42)
    elif method == "embedding_1run":
        res = cluster_embedding_space(graph, seed=42, consensus_runs=1)
    elif method == "embedding_16runs":
        res = cluster_embedding_space(graph, seed=42, consensus_runs=16)
    else:
        raise SystemExit(f"error: unknown method {method!r}")
    secs = time.perf_counter() - t0
    cluster_peak = rss.peak
    extra = {}
    if method == "communities":  # the map stage that follows: start from the topics' places, refine in 2-D
        from engine.project import community_start, layout_from_embedding

        rss.reset()
        t1 = time.perf_counter()
        start = community_start(graph, res.labels, seed=42)
        t2 = time.perf_counter()
        layout_from_embedding(graph, start, random_state=42)
        extra = {
            "map_seconds": round(time.perf_counter() - t1, 1),
            "map_start_seconds": round(t2 - t1, 1),
            "map_peak_rss_mb": round(rss.peak / 2**20),
        }
    rss.stop()
    layers = res.layers
    return {
        "n": n,
        "method": method,
        "seconds": round(secs, 1),
        "timings": {k: round(v, 1) for k, v in res.timings.items()},
        "peak_rss_mb": round(cluster_peak / 2**20),
        "graph_rss_mb": round(base / 2**20),
        "layers": [layers.n_clusters(i) for i in range(layers.n_layers)],
        "primary": layers.primary,
        "noise_share": round(float((res.labels < 0).mean()), 4),
        **extra,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--out", default=str(HERE / "results" / "communities_scale.json"))
    parser.add_argument("--child", nargs=2, metavar=("N", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(int(args.child[0]), args.child[1])))
        return 0
    plan = []
    for n in [int(s) for s in args.sizes.split(",")]:
        plan += [(n, "embedding_1run"), (n, "communities")]
    report = {
        "what": __doc__.splitlines()[0],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "loadavg_start": open("/proc/loadavg").read().split()[:3],
        "rows": [],
    }
    for n, method in plan:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(n), method], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            print(proc.stderr[-2000:], file=sys.stderr)
            return 1
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(row), flush=True)
        report["rows"].append(row)
    report["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
