"""Minimum spanning tree of the mutual-reachability graph by Borůvka with a numba union-find.

Why Borůvka on the raw kNN rows rather than Kruskal: Kruskal needs every edge weight
materialised and globally sorted (N*k float32 + an int64 permutation: 360 MB more at 1M x 30),
while Borůvka computes ``max(core_i, core_j, d_ij)`` on the fly while it scans the rows, and drops
rows whose neighbours all sit in the point's own component, so later rounds touch few edges.
Ties are broken by (weight, edge position), a total order, so the chosen edges never form a cycle.

A disconnected graph (or a point whose core distance is +inf) leaves several trees; HDBSCAN*
defines their mutual reachability as infinite, so the forest is completed with +inf edges. The
hierarchy step (``tree.finite_bridges``) then joins the pieces just above the largest finite MST
weight (and epsilon) rather than at lambda = 0, so that a piece cut off by an approximate graph does not win EOM.
"""

from __future__ import annotations

import numba
import numpy as np

from engine.cluster.edges import EdgeArrays
from engine.errors import EngineError


@numba.njit(cache=True)
def uf_find(parent, x):
    """Root of ``x`` with path compression."""
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:
        nxt = parent[x]
        parent[x] = root
        x = nxt
    return root


@numba.njit(cache=True)
def uf_union(parent, rank, a, b):
    """Union by rank of two roots; returns the new root."""
    if rank[a] < rank[b]:
        a, b = b, a
    parent[b] = a
    if rank[a] == rank[b]:
        rank[a] += 1
    return a


NO_EDGE = np.uint64(0xFFFFFFFFFFFFFFFF)
NEG_ZERO = np.uint64(0x80000000)
INF_BITS = np.uint64(0x7F800000)


SHIFT = np.uint64(32)
LOW = np.uint64(0xFFFFFFFF)


@numba.njit(parallel=True, cache=True)
def _scan(indptr, indices, dist_bits, packed, active, n_active, best_t, counts):
    """One Borůvka round's edge scan, split over threads; each thread has its own ``best`` row.

    ``packed[i]`` = (component << 32) | core-distance bits, so one random read per neighbour.
    Rows with no finite crossing edge are dropped from ``active`` (compacted in place per chunk).
    """
    n_threads = best_t.shape[0]
    chunk = (n_active + n_threads - 1) // n_threads
    for t in numba.prange(n_threads):
        lo = t * chunk
        hi = min(n_active, lo + chunk)
        best = best_t[t]
        cnt = 0
        for q in range(lo, hi):
            i = active[q]
            pi = packed[i]
            ci = np.int64(pi >> SHIFT)
            cbi = pi & LOW
            if cbi >= INF_BITS:
                continue  # every edge of i is infinite: i joins at the bridge step
            crossing = False
            for p in range(indptr[i], indptr[i + 1]):
                j = indices[p]
                if j < 0 or j == i:
                    continue
                pj = packed[j]
                cj = np.int64(pj >> SHIFT)
                if cj == ci:
                    continue
                w = max(cbi, pj & LOW)
                db = np.uint64(dist_bits[p])
                if db != NEG_ZERO and db > w:
                    w = db
                if w >= INF_BITS:
                    continue
                crossing = True
                key = (w << SHIFT) | np.uint64(p)
                if key < best[ci]:
                    best[ci] = key
                if key < best[cj]:
                    best[cj] = key
            if crossing:
                active[lo + cnt] = i
                cnt += 1
        counts[t] = cnt


@numba.njit(parallel=True, cache=True)
def _reduce_best(best_t, best):
    n = best.shape[0]
    for c in numba.prange(n):
        m = NO_EDGE
        for t in range(best_t.shape[0]):
            if best_t[t, c] < m:
                m = best_t[t, c]
            best_t[t, c] = NO_EDGE
        best[c] = m


@numba.njit(cache=True)
def _boruvka(indptr, indices, dist_bits, core_bits, uniform_k, n_threads):
    """Borůvka rounds over the stored rows.

    Weights are compared as the bit patterns of non-negative float32 values (same order, integer
    max), and each component keeps one uint64 key = (weight bits << 32) | edge position: one
    compare and one store per candidate, and ties fall to the lower edge position.
    """
    n = indptr.shape[0] - 1
    parent = np.arange(n, dtype=np.int32)
    rank = np.zeros(n, dtype=np.uint8)
    packed = np.empty(n, dtype=np.uint64)
    for i in range(n):
        packed[i] = (np.uint64(i) << SHIFT) | np.uint64(core_bits[i])
    best_t = np.full((n_threads, n), NO_EDGE, dtype=np.uint64)
    best = np.full(n, NO_EDGE, dtype=np.uint64)
    counts = np.zeros(n_threads, dtype=np.int64)
    src = np.empty(max(n - 1, 0), dtype=np.int32)
    dst = np.empty(max(n - 1, 0), dtype=np.int32)
    wts = np.empty(max(n - 1, 0), dtype=np.float64)
    bits = np.empty(1, dtype=np.uint32)
    as_float = bits.view(np.float32)
    n_edges = 0
    active = np.arange(n, dtype=np.int32)
    n_active = n
    while n_active > 0 and n_edges < n - 1:
        _scan(indptr, indices, dist_bits, packed, active, n_active, best_t, counts)
        # compact the per-thread survivors of ``active``
        chunk = (n_active + n_threads - 1) // n_threads
        n_next = 0
        for t in range(n_threads):
            lo = t * chunk
            for q in range(lo, lo + counts[t]):
                active[n_next] = active[q]
                n_next += 1
        _reduce_best(best_t, best)
        added = 0
        for c in range(n):
            key = best[c]
            if key == NO_EDGE:
                continue
            p = np.int64(key & LOW)
            if uniform_k > 0:
                a = p // uniform_k
            else:
                a = np.searchsorted(indptr, p, side="right") - 1
            b = indices[p]
            ra = uf_find(parent, a)
            rb = uf_find(parent, b)
            if ra != rb:
                uf_union(parent, rank, ra, rb)
                bits[0] = np.uint32(key >> SHIFT)
                src[n_edges] = a
                dst[n_edges] = b
                wts[n_edges] = as_float[0]
                n_edges += 1
                added += 1
        if added == 0:
            break
        for i in range(n):
            packed[i] = (np.uint64(uf_find(parent, i)) << SHIFT) | np.uint64(core_bits[i])
        n_active = n_next
    roots = np.empty(n, dtype=np.int32)
    for i in range(n):
        roots[i] = uf_find(parent, i)
    return src[:n_edges], dst[:n_edges], wts[:n_edges], roots


def bridge_components(
    src: np.ndarray, dst: np.ndarray, weights: np.ndarray, roots: np.ndarray
) -> tuple[np.ndarray, int]:
    """Complete a spanning forest to an (N-1, 3) tree with +inf edges; returns (mst, n_components)."""
    n = roots.shape[0]
    reps = np.unique(roots)
    mst = np.empty((max(n - 1, 0), 3), dtype=np.float64)
    m = src.shape[0]
    mst[:m, 0] = src
    mst[:m, 1] = dst
    mst[:m, 2] = weights
    if reps.shape[0] > 1:
        mst[m:, 0] = reps[:-1]
        mst[m:, 1] = reps[1:]
        mst[m:, 2] = np.inf
    return mst, int(reps.shape[0])


def minimum_spanning_tree(edges: EdgeArrays, core: np.ndarray) -> tuple[np.ndarray, int]:
    """(N-1, 3) float64 MST rows (i, j, mutual reachability), +inf bridges; and the component count."""
    if edges.indices.shape[0] >= 2**32:
        raise EngineError(f"graph: {edges.indices.shape[0]} edges; the MST packs edge positions in 32 bits")
    degrees = np.diff(edges.indptr)
    uniform_k = int(degrees[0]) if edges.n and (degrees == degrees[0]).all() else 0
    core32 = np.maximum(np.asarray(core, dtype=np.float32), np.float32(0))  # no -0.0 bit patterns
    dist_bits = edges.distances.view(np.uint32)
    src, dst, weights, roots = _boruvka(
        edges.indptr, edges.indices, dist_bits, core32.view(np.uint32), uniform_k, numba.get_num_threads()
    )
    return bridge_components(src, dst, weights, roots)
