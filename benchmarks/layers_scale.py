"""Scale of the default cluster space: node embedding + layers (+ the 2-D map) at 100k and 1M nodes.

* 100k: the synthetic 100k x 1024 set (benchmarks/synthetic.py, seed 0); the Milvus HNSW k=30 graph
  that ``bench_pipeline.py --n 100000`` saved in benchmarks/out/pipeline_100000/, and the exact k=30
  graph (blocked brute force, cached). Timed: embedding + layers on each graph, the ARI between the
  primary labels (and each layer pair) from the HNSW and the exact graph, ARI vs the generator's
  topics, and EVoC on the raw vectors (its own NN-descent) for comparison.
* 1M: a graph of 10 disjoint copies of the 100k HNSW graph (indices offset). It measures the time
  and peak memory of node embedding + layers + map at 1M nodes / 30M edges; NOT a quality result
  (a real 1M Milvus graph takes ~19 min to search here: benchmarks/results/pipeline_1m_graph_umap.json).

    NUMBA_NUM_THREADS=2 python benchmarks/layers_scale.py     # -> benchmarks/results/layers_scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_pipeline import PeakRSS  # noqa: E402

from engine.cluster.space import cluster_embedding_space  # noqa: E402
from engine.graph import KnnGraph, exact_knn  # noqa: E402

OUT = HERE / "out"


def timed_layers(graph: KnnGraph, vectors, rss: PeakRSS, seed: int | None = 42) -> tuple[dict, object]:
    rss.reset()
    t0 = time.perf_counter()
    res = cluster_embedding_space(graph, vectors=vectors, seed=seed)
    secs = time.perf_counter() - t0
    layers = res.layers
    return {
        "seconds": round(secs, 2),
        "timings": {k: round(v, 2) for k, v in res.timings.items()},
        "peak_rss_mb": round(rss.peak / 2**20, 1),
        "layers": layers.summary(),
        "primary": layers.primary,
    }, res


def timed_map(graph: KnnGraph, emb: np.ndarray, rss: PeakRSS, seed: int | None = 42) -> dict:
    from engine.project import layout_from_embedding

    rss.reset()
    t0 = time.perf_counter()
    coords = layout_from_embedding(graph, emb, random_state=seed)
    return {
        "seconds": round(time.perf_counter() - t0, 2),
        "peak_rss_mb": round(rss.peak / 2**20, 1),
        "finite": bool(np.isfinite(coords).all()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument(
        "--copies", type=int, default=10, help="disjoint copies of the exact graph (0 = skip)"
    )
    parser.add_argument("--no-evoc", action="store_true")
    parser.add_argument("--exact", action="store_true", help="also build the exact graph (slow) and compare")
    parser.add_argument("--out", default=str(HERE / "results" / "layers_scale.json"))
    args = parser.parse_args(argv)
    data = OUT / f"synth_{args.n}"
    vectors = np.load(data / "vectors.npy", mmap_mode="r")
    truth = np.load(data / "labels.npy")
    rss = PeakRSS()

    def save() -> None:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump(report, fh, indent=2)

    report: dict = {
        "machine": f"{os.cpu_count()} cores shared with other jobs; NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS')}",
        "data": f"benchmarks/synthetic.py n={args.n} dim={vectors.shape[1]} seed=0",
    }
    hnsw_dir = OUT / f"pipeline_{args.n}"
    if not (hnsw_dir / "knn_arrays.npz").exists():
        raise SystemExit(
            f"error: no HNSW graph in {hnsw_dir}: run benchmarks/bench_pipeline.py --n {args.n} first"
        )
    hnsw = KnnGraph.load(hnsw_dir)
    # numba compiles EVoC's and the engine's kernels on first use (cached on disk afterwards): time that apart
    t0 = time.perf_counter()
    cluster_embedding_space(exact_knn(np.asarray(vectors[:2000]), 30), vectors=np.asarray(vectors[:2000]))
    report["warmup_2k_seconds"] = round(time.perf_counter() - t0, 2)
    res_hnsw, r_hnsw = timed_layers(hnsw, vectors, rss)
    res_hnsw["ari_vs_topics"] = round(adjusted_rand_score(truth, r_hnsw.labels), 4)
    res_hnsw["graph"] = (
        "Milvus standalone HNSW (M=16, efConstruction=200, ef=128), k=30, via bench_pipeline.py"
    )
    report["hnsw_100k"] = res_hnsw
    print("hnsw", json.dumps(res_hnsw), flush=True)
    save()
    exact_path = data / "exact_k30"
    base, r_base = hnsw, r_hnsw
    if args.exact or (exact_path / "knn_arrays.npz").exists():
        if (exact_path / "knn_arrays.npz").exists():
            exact = KnnGraph.load(exact_path)
        else:
            t0 = time.perf_counter()
            exact = exact_knn(vectors, 30)
            report["exact_graph_seconds"] = round(time.perf_counter() - t0, 1)
            exact.save(exact_path)
        res_exact, r_exact = timed_layers(exact, vectors, rss)
        res_exact["ari_vs_topics"] = round(adjusted_rand_score(truth, r_exact.labels), 4)
        res_exact["hnsw_recall_at_30"] = round(hnsw.recall_against(exact), 4)
        res_exact["ari_primary_hnsw_vs_exact"] = round(adjusted_rand_score(r_exact.labels, r_hnsw.labels), 4)
        res_exact["ari_layers_hnsw_vs_exact"] = [
            [round(adjusted_rand_score(a, b), 4) for b in r_exact.layers.labels] for a in r_hnsw.layers.labels
        ]
        report["exact_100k"] = res_exact
        print("exact", json.dumps(res_exact), flush=True)
        save()
    else:
        report["exact_100k"] = (
            "not measured (pass --exact: N^2 dim flops, ~40 min at 100k on the shared 2 cores)"
        )
    report["map_100k"] = timed_map(base, r_base.embedding, rss)
    print("map", report["map_100k"], flush=True)
    save()
    if args.copies:
        n, c = base.n, args.copies
        offs = (np.arange(c, dtype=np.int64) * n)[:, None, None]
        idx = np.where(base.indices[None] >= 0, base.indices[None] + offs, -1).reshape(n * c, -1)
        big = KnnGraph(idx.astype(np.int32), np.tile(base.distances, (c, 1)))
        del idx
        res_big, r_big = timed_layers(big, None, rss)
        res_big["graph"] = f"{c} disjoint copies of the 100k HNSW graph ({big.n:,} nodes, k=30); timing only"
        report["copies_1m"] = res_big
        print("1M", json.dumps(res_big), flush=True)
        save()
        report["map_1m"] = timed_map(big, r_big.embedding, rss)
        print("map 1M", report["map_1m"], flush=True)
        save()
    if not args.no_evoc:
        import evoc

        rss.reset()
        t0 = time.perf_counter()
        model = evoc.EVoC(random_state=42)
        labels = model.fit_predict(np.asarray(vectors))
        report["evoc_raw_100k"] = {
            "seconds": round(time.perf_counter() - t0, 2),
            "peak_rss_mb": round(rss.peak / 2**20, 1),
            "clusters": int(labels.max()) + 1,
            "noise_share": round(float((labels < 0).mean()), 4),
            "ari_vs_topics": round(adjusted_rand_score(truth, labels), 4),
        }
        print("evoc", report["evoc_raw_100k"], flush=True)
        save()
    rss.stop()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
