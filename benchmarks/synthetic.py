"""Seeded generator of embedding-like unit vectors at any N, written to disk in chunks.

Why not uniform random vectors: approximate indexes get meaningless recall on data without
structure, and HDBSCAN has nothing to find. Real sentence embeddings are clusters of very
unequal sizes, with low intrinsic dimension, different spreads, and a shared mean direction
(anisotropy), plus off-topic background documents. This generator models exactly that:

* cluster sizes ~ Zipf(a) over ``n_clusters`` topics (a few huge, a long tail of small ones);
* each cluster = centre + spread * (a random ``intrinsic_dim``-d subspace) + small isotropic noise;
* centres share a common direction (cosine between random centres ~0.3, like real models);
* ``noise_frac`` of the points are uniform on the sphere (label -1).

Vectors go to ``OUT/vectors.npy`` (``open_memmap``, float32) chunk by chunk and labels to
``OUT/labels.npy``; peak memory is one chunk, never two copies of the data.

CLI: ``python benchmarks/synthetic.py --n 100000 --out benchmarks/out/synth_100k``
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from numpy.lib.format import open_memmap

VECTORS_FILE = "vectors.npy"
LABELS_FILE = "labels.npy"


def cluster_sizes(n_points: int, n_clusters: int, zipf_a: float) -> np.ndarray:
    """Zipf-distributed cluster sizes summing to ``n_points`` (each at least 2)."""
    w = 1.0 / np.arange(1, n_clusters + 1) ** zipf_a
    sizes = np.maximum(2, np.floor(w / w.sum() * n_points)).astype(np.int64)
    diff = n_points - int(sizes.sum())
    sizes[0] += diff  # the largest cluster absorbs rounding
    if sizes[0] < 2:
        raise ValueError(f"too many clusters ({n_clusters}) for {n_points} points")
    return sizes


def generate(
    n: int,
    out_dir: str,
    dim: int = 1024,
    n_clusters: int | None = None,
    zipf_a: float = 1.1,
    noise_frac: float = 0.05,
    intrinsic_dim: int = 24,
    spread: tuple[float, float] = (0.5, 1.0),
    anisotropy: float = 0.6,
    seed: int = 0,
    chunk_size: int = 50_000,
) -> tuple[np.ndarray, np.ndarray]:
    """Write ``n`` unit vectors and their labels (-1 = background noise) under ``out_dir``.

    Returns the (read-only memmap) vectors and labels. Deterministic for a given argument set.
    """
    if n < 2:
        raise ValueError("n must be >= 2")
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_clusters = int(n_clusters or max(5, min(2000, n // 500)))
    n_noise = int(round(noise_frac * n))
    sizes = cluster_sizes(n - n_noise, n_clusters, zipf_a)
    labels = np.concatenate([np.repeat(np.arange(n_clusters), sizes), np.full(n_noise, -1)])
    labels = labels[rng.permutation(n)].astype(np.int64)

    mean_dir = rng.standard_normal(dim).astype(np.float32)
    mean_dir /= np.linalg.norm(mean_dir)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    centres = anisotropy * mean_dir + (1 - anisotropy) * centres
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    spreads = rng.uniform(spread[0], spread[1], n_clusters).astype(np.float32)
    # One seed per cluster: its subspace basis is regenerated when needed (no n_clusters x r x dim array).
    basis_seeds = rng.integers(0, 2**63 - 1, n_clusters)

    vec_path = os.path.join(out_dir, VECTORS_FILE)
    vecs = open_memmap(vec_path, mode="w+", dtype=np.float32, shape=(n, dim))
    basis_cache: dict[int, np.ndarray] = {}
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        lab = labels[start:stop]
        crng = np.random.default_rng([seed, start])
        block = crng.standard_normal((stop - start, dim)).astype(np.float32)
        block *= np.float32(1.0 / np.sqrt(dim))
        inl = lab >= 0
        if inl.any():
            # Small isotropic jitter around the low-dimensional structure.
            block[inl] *= np.float32(0.25)
            for c in np.unique(lab[inl]):
                rows = np.where(lab == c)[0]
                b = basis_cache.get(int(c))
                if b is None:
                    b = (
                        np.random.default_rng(int(basis_seeds[c]))
                        .standard_normal((intrinsic_dim, dim))
                        .astype(np.float32)
                    )
                    b /= np.linalg.norm(b, axis=1, keepdims=True)
                    if len(basis_cache) < 4096:
                        basis_cache[int(c)] = b
                z = crng.standard_normal((rows.size, intrinsic_dim)).astype(np.float32)
                z *= np.float32(spreads[c] / np.sqrt(intrinsic_dim))
                block[rows] += centres[c] + z @ b
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        vecs[start:stop] = block
    vecs.flush()
    del vecs
    np.save(os.path.join(out_dir, LABELS_FILE), labels)
    meta = {
        "n": n,
        "dim": dim,
        "n_clusters": n_clusters,
        "zipf_a": zipf_a,
        "noise_frac": noise_frac,
        "intrinsic_dim": intrinsic_dim,
        "spread": list(spread),
        "anisotropy": anisotropy,
        "seed": seed,
        "largest_cluster": int(sizes.max()),
        "smallest_cluster": int(sizes.min()),
    }
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    return load_vectors(vec_path), np.load(os.path.join(out_dir, LABELS_FILE))


def load_vectors(
    path: str, column: str = "vector", out: str | None = None, normalize: bool = False
) -> np.ndarray:
    """Real vectors from ``.npy`` (memory-mapped, no copy) or Parquet (streamed into a ``.npy``).

    Parquet: ``column`` holds a list/fixed-size-list of floats per row; row groups are written
    one by one into ``out`` (default: the Parquet path with ``.npy``) so RAM holds one batch.
    ``normalize`` L2-normalises Parquet rows on the way (``.npy`` files are returned as they are).
    """
    if path.endswith(".npy"):
        return np.load(path, mmap_mode="r")
    if not path.endswith((".parquet", ".pq")):
        raise ValueError(f"unsupported vector file {path!r}: expected .npy or .parquet")
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    n = pf.metadata.num_rows
    out = out or os.path.splitext(path)[0] + ".npy"
    arr = None
    pos = 0
    for batch in pf.iter_batches(columns=[column], batch_size=16_384):
        col = batch.column(0)
        flat = np.asarray(col.flatten() if hasattr(col, "flatten") else col.values, dtype=np.float32)
        block = flat.reshape(len(col), -1)
        if normalize:
            block = block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
        if arr is None:
            arr = open_memmap(out, mode="w+", dtype=np.float32, shape=(n, block.shape[1]))
        arr[pos : pos + len(block)] = block
        pos += len(block)
    if arr is None:
        raise ValueError(f"{path} holds no rows")
    arr.flush()
    del arr
    return np.load(out, mmap_mode="r")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--clusters", type=int, default=None)
    p.add_argument("--zipf", type=float, default=1.1)
    p.add_argument("--noise", type=float, default=0.05)
    p.add_argument("--intrinsic-dim", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk", type=int, default=50_000)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    generate(
        a.n,
        a.out,
        dim=a.dim,
        n_clusters=a.clusters,
        zipf_a=a.zipf,
        noise_frac=a.noise,
        intrinsic_dim=a.intrinsic_dim,
        seed=a.seed,
        chunk_size=a.chunk,
    )
    print(f"wrote {a.n} x {a.dim} to {a.out} in {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
