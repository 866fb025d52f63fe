"""kNN graph by a partitioned exact join: k-means lists, every row against the lists it probes.

Why: at a million 1024-d vectors on a few CPU cores, a Milvus HNSW build takes ~22 min and its
search stops near recall@30 0.73-0.84 (RESULTS.md sections 3 and 10), and brute force is N^2. An
IVF index searched one query at a time reads every probed list from memory once per query. Here the
work is turned around, as in IVF batch search: the vectors are split into ~sqrt(N) k-means lists,
each row is assigned to its ``probes`` nearest list centres, and then each list is met *once* by all
the rows that probe it, in one BLAS matrix product (rows x list members). The cost is
N * probes * list size * dim multiply-adds, all at matmul speed, and memory O(N * probes * k).

Candidates are ranked by the matmul form of the distance and the best ``k + RERANK_MARGIN`` of each
row re-ranked by explicit float32 differences, so distances are true Euclidean (duplicates exactly
0), as every other graph source gives. The rows whose true neighbours sit in lists they did not
probe are what NN-descent refinement (:mod:`engine.graph.refine`) repairs afterwards.
"""

from __future__ import annotations

import logging
import math
import time

import numba
import numpy as np
from tqdm.auto import tqdm

from engine.errors import EngineError
from engine.graph.knn import KnnGraph
from engine.graph.rows import finish_rows

log = logging.getLogger(__name__)

#: Candidates per row re-ranked by explicit differences beyond the k kept.
RERANK_MARGIN = 8
#: Rows per block when assigning rows to list centres (a block x lists score matrix).
ASSIGN_BLOCK = 16384
#: A list takes at most this times the mean list size of rows as its own (see ``capped_owners``).
LIST_CAP = 1.5
#: Bytes of one (rows probing a list) x (list members) score block.
SCORE_BLOCK = 256 * 1024**2
#: Training sample per list and Lloyd iterations of the k-means that makes the lists.
TRAIN_PER_LIST = 40
KMEANS_ITERATIONS = 10


def default_lists(n: int) -> int:
    """~sqrt(N) lists: list size and list count grow alike, the join costs N^1.5 * probes * dim."""
    return int(max(1, min(n // 8, round(math.sqrt(n)))))


def _squared_norms(x: np.ndarray) -> np.ndarray:
    out = np.empty(x.shape[0], dtype=np.float32)
    for s in range(0, x.shape[0], ASSIGN_BLOCK):
        b = np.asarray(x[s : s + ASSIGN_BLOCK], dtype=np.float32)
        out[s : s + b.shape[0]] = np.einsum("ij,ij->i", b, b)
    return out


def _unit(c: np.ndarray) -> np.ndarray:
    return c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), np.float32(1e-12))


def train_lists(x: np.ndarray, n_lists: int, seed: int | None) -> np.ndarray:
    """Unit list centres: spherical k-means (Lloyd, cosine) on a sample of ``TRAIN_PER_LIST`` rows per list.

    Why spherical: a plain k-means centre of scattered rows lies near the origin and is then the
    nearest centre of half the corpus (a hub list every row probes); unit centres have no such pull.
    """
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    m = min(n, n_lists * TRAIN_PER_LIST)
    sample = np.asarray(x[np.sort(rng.choice(n, m, replace=False))], dtype=np.float32)
    centres = _unit(sample[rng.choice(m, n_lists, replace=False)].copy())
    for _ in range(KMEANS_ITERATIONS):
        scores = sample @ centres.T
        nearest = scores.argmax(axis=1)
        counts = np.bincount(nearest, minlength=n_lists)
        sums = np.zeros_like(centres)
        np.add.at(sums, nearest, sample)
        empty = counts == 0
        centres[~empty] = _unit(sums[~empty])
        if empty.any():  # re-seed an empty list with the sample rows least like their centre
            far = np.argsort(scores[np.arange(m), nearest])[: int(empty.sum())]
            centres[empty] = _unit(sample[far])
    return centres


def split_large_lists(x: np.ndarray, centres: np.ndarray, seed: int | None) -> np.ndarray:
    """Centres with every list over twice the mean size split by k-means inside it.

    Why: the join costs sum(list size x rows probing it), and on real embeddings a few lists near the
    corpus' mean direction are both large and probed by many rows (hubs); splitting them keeps the
    cost near the balanced N * probes * N / lists.
    """
    own = assign_lists(x, centres, 1, progress=False)[0][:, 0]
    sizes = np.bincount(own, minlength=centres.shape[0])
    target = x.shape[0] / centres.shape[0]
    keep, added = [], []
    for j, size in enumerate(sizes):
        parts = int(math.ceil(size / target))
        if size <= 2 * target or parts < 2:
            keep.append(j)
            continue
        members = np.flatnonzero(own == j)
        added.append(train_lists(np.asarray(x[members], dtype=np.float32), parts, seed))
    return np.concatenate([centres[keep], *added]) if added else centres


def assign_lists(
    x: np.ndarray, centres: np.ndarray, probes: int, progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``(lists, scores)``, both (N, probes): each row's most similar list centres, best first, and
    the cosine to each."""
    n = x.shape[0]
    out = np.empty((n, probes), dtype=np.int32)
    out_s = np.empty((n, probes), dtype=np.float32)
    with tqdm(total=n, desc="graph: assigning lists", unit="doc", disable=not progress) as bar:
        for s in range(0, n, ASSIGN_BLOCK):
            b = np.asarray(x[s : s + ASSIGN_BLOCK], dtype=np.float32)
            scores = b @ centres.T
            if probes < scores.shape[1]:
                part = np.argpartition(scores, scores.shape[1] - probes, axis=1)[:, -probes:]
            else:
                part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape).copy()
            top = np.take_along_axis(scores, part, 1)
            order = np.argsort(-top, axis=1, kind="stable")
            out[s : s + b.shape[0]] = np.take_along_axis(part, order, 1)
            out_s[s : s + b.shape[0]] = np.take_along_axis(top, order, 1)
            bar.update(b.shape[0])
    return out, out_s


@numba.njit(cache=True)
def capped_owners(lists: np.ndarray, scores: np.ndarray, n_lists: int, cap: int) -> np.ndarray:
    """Each row's own list: the best of its probed lists with room left (rows closest to their best
    centre choose first), its best list when all are full.

    Why: in high dimensions a few centres are the nearest of very many rows (hubs); a list of
    unbounded size met by unbounded rows makes one matmul of N^2 scale. A row is still found by every
    row probing the list it joined, and it joins one it is close to.
    """
    n, p = lists.shape
    order = np.argsort(-scores[:, 0])
    fill = np.zeros(n_lists, dtype=np.int64)
    own = np.empty(n, dtype=np.int32)
    for i in order:
        j = lists[i, 0]
        for t in range(p):
            if fill[lists[i, t]] < cap:
                j = lists[i, t]
                break
        own[i] = j
        fill[j] += 1
    return own


@numba.njit(parallel=True, cache=True, fastmath=False)
def _rerank(x: np.ndarray, rows: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Explicit-difference float32 distances of each row to its candidates (inf for -1)."""
    m, c = cand.shape
    out = np.empty((m, c), dtype=np.float32)
    for r in numba.prange(m):
        a = rows[r]
        for j in range(c):
            b = cand[r, j]
            if b < 0:
                out[r, j] = np.inf
                continue
            acc = np.float32(0.0)
            for t in range(x.shape[1]):
                d = x[a, t] - x[b, t]
                acc += d * d
            out[r, j] = np.sqrt(acc)
    return out


@numba.njit(parallel=True, cache=True)
def _keep_best(
    s: np.ndarray,
    mem: np.ndarray,
    q_rows: np.ndarray,
    q_slot: np.ndarray,
    cand: np.ndarray,
    score: np.ndarray,
) -> None:
    """For each row of the score block, its best ``c`` members (largest scores) into its probe slot."""
    c = cand.shape[2]
    for r in numba.prange(s.shape[0]):
        bi = cand[q_rows[r], q_slot[r]]
        bs = score[q_rows[r], q_slot[r]]
        # bs is kept sorted descending; a member enters when it beats the worst kept score.
        for j in range(s.shape[1]):
            v = s[r, j]
            if v <= bs[c - 1]:
                continue
            t = c - 1
            while t > 0 and bs[t - 1] < v:
                bs[t] = bs[t - 1]
                bi[t] = bi[t - 1]
                t -= 1
            bs[t] = v
            bi[t] = mem[j]


def partition_knn(
    vectors: np.ndarray,
    k: int,
    probes: int,
    n_lists: int | None = None,
    seed: int | None = 0,
    progress: bool = True,
) -> KnnGraph:
    """The k nearest neighbours of every row among the members of its ``probes`` nearest lists.

    Exact within the probed lists (recall grows with ``probes``; all lists = brute force). Memory
    O(N * probes * k) for the candidates plus one (rows probing a list) x (list size) score block.
    """
    x = vectors
    n = int(x.shape[0])
    if not 1 <= k < n:
        raise EngineError(f"partition_knn: k must be in 1..{n - 1}, got {k} (parameter k)")
    n_lists = int(n_lists or default_lists(n))
    probes = int(max(1, min(probes, n_lists)))
    t0 = time.perf_counter()
    centres = split_large_lists(x, train_lists(x, n_lists, seed), seed)
    n_lists = centres.shape[0]
    t_train = time.perf_counter() - t0
    lists, list_scores = assign_lists(x, centres, probes, progress)
    own = capped_owners(lists, list_scores, n_lists, int(math.ceil(LIST_CAP * n / n_lists)))
    del list_scores
    t_assign = time.perf_counter() - t0 - t_train
    sq = _squared_norms(x)
    # Members of each list (its own rows), and the (row, slot) pairs that probe it.
    members_order = np.argsort(own, kind="stable")
    members_ptr = np.searchsorted(own[members_order], np.arange(n_lists + 1))
    flat = lists.reshape(-1)
    probe_order = np.argsort(flat, kind="stable")
    probe_ptr = np.searchsorted(flat[probe_order], np.arange(n_lists + 1))
    c = min(k + 1, n)  # +1: a row meets itself in its own list
    cand = np.full((n, probes, c), -1, dtype=np.int32)
    score = np.full((n, probes, c), -np.inf, dtype=np.float32)
    with tqdm(total=n * probes, desc="graph: joining lists", unit="pair", disable=not progress) as bar:
        for j in range(n_lists):
            mem = members_order[members_ptr[j] : members_ptr[j + 1]]
            pairs = probe_order[probe_ptr[j] : probe_ptr[j + 1]]
            if not len(pairs):
                continue
            if not len(mem):
                bar.update(len(pairs))
                continue
            xm = np.asarray(x[mem], dtype=np.float32)
            mem_sq = sq[mem][None, :]
            mem32 = mem.astype(np.int32)
            step = max(1, SCORE_BLOCK // (4 * len(mem)))  # rows per score block
            for b in range(0, len(pairs), step):
                blk = pairs[b : b + step]
                q_rows, q_slot = blk // probes, blk % probes
                s = np.asarray(x[q_rows], dtype=np.float32) @ xm.T
                s *= 2.0
                s -= mem_sq  # largest 2 q.m - |m|^2 == nearest
                _keep_best(s, mem32, q_rows, q_slot, cand, score)
                bar.update(len(blk))
    t_join = time.perf_counter() - t0 - t_train - t_assign
    # Best k + margin per row by the matmul score, then explicit distances and the engine's row order.
    cand = cand.reshape(n, -1)
    score = score.reshape(n, -1)
    keep = min(cand.shape[1], k + 1 + RERANK_MARGIN)
    idx_i = np.empty((n, k), dtype=np.int32)
    idx_d = np.empty((n, k), dtype=np.float32)
    xf = np.asarray(x, dtype=np.float32)
    for s0 in range(0, n, 65536):
        blk_s = score[s0 : s0 + 65536]
        blk_c = cand[s0 : s0 + 65536]
        top = np.argpartition(blk_s, blk_s.shape[1] - keep, axis=1)[:, -keep:]
        kc = np.take_along_axis(blk_c, top, 1)
        rows = np.arange(s0, s0 + kc.shape[0], dtype=np.int64)
        d = _rerank(xf, rows, kc)
        ri, rd = finish_rows(kc.astype(np.int64), d, rows, k)
        idx_i[s0 : s0 + len(rows)] = ri
        idx_d[s0 : s0 + len(rows)] = rd
    secs = time.perf_counter() - t0
    meta = {
        "source": "partition",
        "k": k,
        "lists": n_lists,
        "probes": probes,
        "seconds": round(secs, 3),
        "timings": {
            "train": round(t_train, 3),
            "assign": round(t_assign, 3),
            "join": round(t_join, 3),
            "rerank": round(secs - t_train - t_assign - t_join, 3),
        },
    }
    return KnnGraph(idx_i, idx_d, meta)
