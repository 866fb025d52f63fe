"""Segment layout of the engine-managed Milvus server: the engine's settings vs Milvus 2.3's defaults.

Why: a Milvus query searches every sealed segment's index and merges the results, so the number of
segments multiplies the search cost. With the 2.3 defaults a 1024-d collection is cut into ~35k-row
segments (3 at 100k, ~29 at 1M); ``engine.milvus.server.SERVER_SETTINGS`` keeps ~1M+ rows per segment. For
each layout: segments, insert and HNSW build time, then recall@k (against exact search on a query
sample) and QPS per ``ef``, with the CPU seconds of this client and of the server process.

    python benchmarks/bench_segments.py --n 100000 --out benchmarks/results/segments_100k.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.graph import build_knn_graph, exact_knn  # noqa: E402
from engine.graph.tune import sample_rows  # noqa: E402
from engine.milvus.server import SERVER_SETTINGS, LocalMilvusServer  # noqa: E402
from engine.milvus.store import MilvusStore  # noqa: E402

# Milvus 2.3.5's own values of the keys the engine changes (its milvus.yaml template).
MILVUS_DEFAULTS = {
    "dataCoord.segment.maxSize": 512,
    "dataCoord.segment.sealProportion": 0.23,
    "dataCoord.segment.maxBinlogFileNumber": 32,
    "dataNode.segment.insertBufSize": 16777216,
}


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def segment_rows(uri: str, collection: str) -> list[int]:
    from pymilvus import connections, utility

    alias = f"seg{os.getpid()}"
    connections.connect(alias=alias, uri=uri)
    try:
        return sorted(int(s.num_rows) for s in utility.get_query_segment_info(collection, using=alias))
    finally:
        connections.disconnect(alias)


def run_layout(
    name: str, settings: dict, vectors: np.ndarray, args: argparse.Namespace, rows: np.ndarray, exact
) -> dict:
    n, dim = vectors.shape
    ids = np.arange(n, dtype=np.int64)
    with tempfile.TemporaryDirectory(prefix=f"segments-{name}-") as tmp:
        with LocalMilvusServer(tmp, port=0, settings=settings) as server:
            server_proc = psutil.Process(server.pid_)
            store = MilvusStore(
                server.uri,
                collection="segments",
                dim=dim,
                index_type="HNSW",
                index_params={"M": args.m, "efConstruction": args.ef_construction},
            )
            with store:
                store.ensure_collection(dim, drop_existing=True)
                t = time.perf_counter()
                for start in range(0, n, args.insert_batch):
                    stop = min(n, start + args.insert_batch)
                    store.insert(ids[start:stop], np.ascontiguousarray(vectors[start:stop]))
                store.flush()
                insert_s = time.perf_counter() - t
                t = time.perf_counter()
                store.build_index()
                build_s = time.perf_counter() - t
                store.load()
                segments = segment_rows(server.uri, "segments")
                searches = []
                me = psutil.Process()
                for ef in args.ef:
                    c0, s0, t0 = cpu_seconds(me), cpu_seconds(server_proc), time.perf_counter()
                    graph = build_knn_graph(
                        store, vectors, ids, k=args.k, search_params={"ef": ef}, rows=rows, progress=False
                    )
                    wall = time.perf_counter() - t0
                    searches.append(
                        {
                            "ef": ef,
                            f"recall@{args.k}": round(graph.recall_against(exact), 4),
                            "qps": round(len(rows) / wall, 1),
                            "client_cpu_s": round(cpu_seconds(me) - c0, 2),
                            "server_cpu_s": round(cpu_seconds(server_proc) - s0, 2),
                        }
                    )
                    print(name, searches[-1], flush=True)
    return {
        "layout": name,
        "settings": settings,
        "segments": len(segments),
        "segment_rows": segments,
        "insert_seconds": round(insert_s, 1),
        "build_seconds": round(build_s, 1),
        "searches": searches,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--data-dir", default="benchmarks/out")
    p.add_argument("--k", type=int, default=30)
    p.add_argument("--m", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--ef", type=int, nargs="+", default=[64, 128, 192, 256])
    p.add_argument("--queries", type=int, default=4000, help="query sample (exact ground truth)")
    p.add_argument("--insert-batch", type=int, default=10_000)
    p.add_argument("--layouts", nargs="+", default=["milvus-defaults", "engine"])
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    from synthetic import generate

    data_dir = Path(args.data_dir) / f"synth_{args.n}"
    if (data_dir / "vectors.npy").exists():
        vectors = np.load(data_dir / "vectors.npy", mmap_mode="r")
    else:
        vectors, _ = generate(args.n, str(data_dir), dim=args.dim, seed=0)
    rows = sample_rows(len(vectors), args.queries, seed=1)
    exact = exact_knn(vectors, args.k, rows=rows, progress=False)
    layouts = {"milvus-defaults": MILVUS_DEFAULTS, "engine": SERVER_SETTINGS}
    results = [run_layout(name, layouts[name], vectors, args, rows, exact) for name in args.layouts]
    out = {
        "command": "python benchmarks/bench_segments.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_at_end": os.getloadavg()},
        "n": int(len(vectors)),
        "dim": int(vectors.shape[1]),
        "k": args.k,
        "queries": int(len(rows)),
        "layouts": results,
    }
    print(json.dumps(out, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
