"""Rebuilding ``embeddings.npy`` from Milvus vs embedding the corpus again (issue 22, item 3).

Why: a run without ``embeddings.npy`` (deleted, or embedded on another machine into the user's own Milvus)
gets its vectors back with :meth:`engine.milvus.store.MilvusStore.read_vectors`; before, ``engine embed``/``run``
embedded every such row again. This measures the read-back (rows/s, MB/s, peak RSS growth, bitwise equality)
on the engine-run standalone server and Milvus Lite, and, as the baseline in the same run, embedding real
headlines with all-MiniLM-L6-v2 on this machine's CPU (the cheapest model the engine runs).

    python benchmarks/read_vectors.py --n 50000 --dims 384,1024 --out benchmarks/results/read_vectors.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.ingest import VectorFile  # noqa: E402
from engine.milvus.store import MilvusStore  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def one(uri: str, n: int, dim: int, work: Path) -> dict:
    """Insert n unit vectors (chunks, so the process never holds them all), then read them back into a .npy."""
    ids = np.random.default_rng(dim).permutation(n).astype(np.int64) * 3 + 17
    chunk = 5000
    with MilvusStore(uri, collection=f"bench_read_{dim}", insert_batch_size=chunk) as store:
        store.ensure_collection(dim, drop_existing=True)
        t = time.perf_counter()
        for s in range(0, n, chunk):
            store.insert(ids[s : s + chunk], unit_rows(np.random.default_rng(s), min(chunk, n - s), dim))
        store.flush()
        insert_s = time.perf_counter() - t
        store.load_for_query()  # a server builds its default index here; not part of the read
        path = work / f"v{dim}.npy"
        rss0 = rss_mb()
        t = time.perf_counter()
        vf = VectorFile(path, n, dim, create=True)
        try:
            store.read_vectors(ids, write=vf.write)
        finally:
            vf.close()
        read_s = time.perf_counter() - t
        grew = rss_mb() - rss0
        store.drop()
    got = np.load(path, mmap_mode="r")
    same = all(
        np.array_equal(
            np.asarray(got[s : s + chunk]).view(np.uint32),
            unit_rows(np.random.default_rng(s), min(chunk, n - s), dim).view(np.uint32),
        )
        for s in range(0, n, chunk)
    )
    del got
    path.unlink()
    return {
        "n": n,
        "dim": dim,
        "insert_s": round(insert_s, 2),
        "read_s": round(read_s, 2),
        "read_rows_per_s": round(n / read_s, 1),
        "read_mb_per_s": round(n * dim * 4 / read_s / 2**20, 1),
        "peak_rss_growth_mb": round(grew, 1),
        "vector_file_mb": round(n * dim * 4 / 2**20, 1),
        "bitwise_equal": bool(same),
    }


def embed_baseline(n_docs: int) -> dict:
    """all-MiniLM-L6-v2 on the 870 headlines (repeated up to n_docs), this machine, the engine's encoder."""
    import pandas as pd

    from engine.embed import load_encoder

    frame = pd.read_csv(DATA / "news_headlines_2024" / "news_data_dedup.csv")
    texts = (frame["title"].astype(str) + "\n" + frame["description"].astype(str)).tolist()
    texts = (texts * (n_docs // len(texts) + 1))[:n_docs]
    encoder = load_encoder("all-MiniLM-L6-v2", device="cpu", precision="fp32")
    encoder.encode(texts[:32])  # warm-up
    t = time.perf_counter()
    encoder.encode(texts)
    s = time.perf_counter() - t
    return {"model": encoder.name, "docs": n_docs, "seconds": round(s, 2), "docs_per_s": round(n_docs / s, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dims", default="384,1024")
    parser.add_argument("--backends", default="server,lite")
    parser.add_argument("--embed-docs", type=int, default=1000)
    parser.add_argument("--out", default="benchmarks/results/read_vectors.json")
    args = parser.parse_args()
    dims = [int(d) for d in args.dims.split(",")]
    out: dict = {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg(), "read_back": {}}
    out["baseline_embed"] = embed_baseline(args.embed_docs)
    print(json.dumps(out["baseline_embed"]), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_read_") as tmp:
        work = Path(tmp)
        for backend in args.backends.split(","):
            if backend == "server":
                from engine.milvus.server import LocalMilvusServer

                server = LocalMilvusServer(work / "server", port=0, start_timeout=180).start()
                uri = server.uri
            else:
                server, uri = None, str(work / "lite.db")
            try:
                for dim in dims:
                    row = one(uri, args.n, dim, work)
                    row["vs_embedding_minilm"] = round(
                        row["read_rows_per_s"] / out["baseline_embed"]["docs_per_s"], 1
                    )
                    out["read_back"][f"{backend}_{dim}"] = row
                    print(backend, json.dumps(row), flush=True)
            finally:
                if server is not None:
                    server.stop()
    out["load_average_at_end"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(out, indent=2))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
