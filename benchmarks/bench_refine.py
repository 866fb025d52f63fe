"""kNN graph quality vs cost: Milvus HNSW search alone vs search + NN-descent refinement.

For one vector set: insert into the engine-run Milvus server (LocalMilvusServer, as ``engine run``
uses above the Lite limit), build each HNSW configuration (timed), then per search ``ef``: the full
graph's search seconds and recall@k on an exact sample (cached under benchmarks/out/), and for each
refinement pass its seconds and recall. Peak RSS counts this process and the server.

Usage:
  nice -n 10 python benchmarks/bench_refine.py --vectors benchmarks/out/synth_100k/vectors.npy \
      --builds M=16,efConstruction=200 --efs 64,248 --out benchmarks/results/refine_synth100k.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_graph import RssSampler  # noqa: E402

from engine.graph import build_knn_graph, exact_knn  # noqa: E402
from engine.graph.knn import KnnGraph  # noqa: E402
from engine.graph.refine import refine_graph  # noqa: E402
from engine.graph.tune import sample_rows  # noqa: E402
from engine.milvus.store import MilvusStore  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def exact_sample(vectors: np.ndarray, k: int, rows: np.ndarray, cache: str) -> KnnGraph:
    """Exact neighbours of ``rows``, computed once and cached (``cache`` .npz)."""
    if os.path.exists(cache):
        with np.load(cache) as z:
            if np.array_equal(z["rows"], rows) and z["indices"].shape[1] >= k:
                return KnnGraph(z["indices"][:, :k], z["distances"][:, :k])
    g = exact_knn(vectors, k, rows=rows, device="cpu")
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    np.savez(cache, rows=rows, indices=g.indices, distances=g.distances)
    return g


def parse_build(text: str) -> dict[str, int]:
    return {kv.split("=")[0]: int(kv.split("=")[1]) for kv in text.split(",") if kv}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vectors", required=True, help=".npy of float32 unit vectors (N, dim)")
    p.add_argument("--n", type=int, default=None, help="first N rows only")
    p.add_argument("--k", type=int, default=30)
    p.add_argument("--sample", type=int, default=2000, help="exact queries for recall")
    p.add_argument("--builds", nargs="+", default=["M=16,efConstruction=200"], help="HNSW build params")
    p.add_argument("--efs", default="64,248", help="search ef values")
    p.add_argument("--passes", type=int, default=6, help="refinement passes (max)")
    p.add_argument("--target", type=float, default=None, help="stop at / widen the join towards this recall")
    p.add_argument("--width", type=int, default=None, help="neighbours kept per row while joining (> k)")
    p.add_argument("--work", default=os.path.join(HERE, "out", "refine_work"))
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from engine.milvus.server import LocalMilvusServer

    vectors = np.load(args.vectors, mmap_mode="r")
    if args.n:
        vectors = vectors[: args.n]
    n, dim = vectors.shape
    ids = np.arange(n, dtype=np.int64)
    rows = sample_rows(n, args.sample, seed=12345)
    tag = os.path.basename(os.path.dirname(os.path.abspath(args.vectors)))
    cache = os.path.join(HERE, "out", f"exact_{tag}_{n}_{args.sample}_k{args.k}.npz")
    rss = RssSampler()
    out: dict = {
        "vectors": args.vectors,
        "n": n,
        "dim": dim,
        "k": args.k,
        "sample": len(rows),
        "target": args.target,
        "width": args.width,
        "load_at_start": os.getloadavg(),
        "results": [],
    }

    def dump() -> None:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1, default=str)

    t = time.perf_counter()
    with rss.phase("exact"):
        exact = exact_sample(vectors, args.k, rows, cache)
    out["exact_sample_seconds"] = round(time.perf_counter() - t, 1)
    sdir = os.path.join(args.work, f"server_{n}")
    shutil.rmtree(sdir, ignore_errors=True)
    with LocalMilvusServer(sdir, port=0) as srv:
        if srv.pid_:
            rss.pids.append(srv.pid_)
        for b, build in enumerate(args.builds):
            params = parse_build(build)
            with MilvusStore(srv.uri, index_type="HNSW", index_params=params, collection=f"refine_{b}") as st:
                st.ensure_collection(dim)
                t = time.perf_counter()
                for s in range(0, n, 20000):
                    st.insert(ids[s : s + 20000], np.ascontiguousarray(vectors[s : s + 20000]))
                insert_s = time.perf_counter() - t
                t = time.perf_counter()
                with rss.phase(f"build_{b}"):
                    st.build_index()
                build_s = time.perf_counter() - t
                for ef in [int(v) for v in args.efs.split(",")]:
                    row: dict = {
                        "build": params,
                        "insert_s": round(insert_s, 1),
                        "build_s": round(build_s, 1),
                        "ef": ef,
                        "load": os.getloadavg(),
                    }
                    t = time.perf_counter()
                    with rss.phase(f"search_{b}_{ef}"):
                        g = build_knn_graph(st, vectors, ids, k=args.k, search_params={"ef": ef})
                    row["search_s"] = round(time.perf_counter() - t, 1)
                    row["search_recall"] = round(g.recall_against(exact, rows=rows), 4)
                    with rss.phase(f"refine_{b}_{ef}"):
                        r = refine_graph(
                            vectors,
                            g,
                            max_passes=args.passes,
                            rows=rows,
                            exact=exact,
                            target_recall=args.target,
                            width=args.width,
                        )
                    row["refine"] = r.to_dict()
                    row["refined_recall"] = round(r.graph.recall_against(exact, rows=rows), 4)
                    row["peak_rss_mb"] = max(rss.peaks[f"search_{b}_{ef}"], rss.peaks[f"refine_{b}_{ef}"])
                    print(json.dumps(row), flush=True)
                    out["results"].append(row)
                    dump()
                st.drop()
    out["load_at_end"] = os.getloadavg()
    out["peaks_mb"] = rss.peaks
    dump()
    rss.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
