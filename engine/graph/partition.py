"""kNN graph by a partitioned exact join: k-means lists, every row against the lists it probes.

Why: at a million 1024-d vectors on a few CPU cores, a Milvus HNSW build takes ~22 min and its
search stops near recall@30 0.73-0.84 (RESULTS.md sections 3 and 10), and brute force is N^2. An
IVF index searched one query at a time reads every probed list from memory once per query. Here the
work is turned around, as in IVF batch search: the vectors are split into ~sqrt(N) k-means lists,
each row is assigned to its ``probes`` nearest list centres, and then each list is met *once* by all
the rows that probe it, in one BLAS matrix product (rows x list members). The cost is
N * probes * list size * dim multiply-adds, all at matmul speed, and memory O(N * k): one pool of
candidates per row, filled list after list.

Two things keep the cost and the misses down on real-sized data (RESULTS.md section 10): lists still
over twice the mean size are split again for up to three rounds (hub centres in large clusters), and
the *far* rows, far from every centre (off-topic documents), are also joined with each other, all
pairs, since their neighbours are mostly each other and sit in lists they do not probe.

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
#: Rounds of splitting the lists over twice the mean size (see ``split_large_lists``).
SPLIT_ROUNDS = 3
#: A row is *far* when its best list centre's cosine lies this many robust standard deviations
#: (1.4826 x MAD) below the median row's (see ``far_rows``).
FAR_MADS = 3.0
#: At most this many far rows (the farthest first): they are joined with each other, all pairs.
FAR_MAX = 65_536


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
    """Centres with every list over twice the mean size split by k-means inside it, for up to
    ``SPLIT_ROUNDS`` rounds (a split list's parts can still be hubs).

    Why: the join costs sum(list size x rows probing it). In a large cluster the centres nearest its
    middle are among the nearest centres of almost all its rows (hubness); on the 1M synthetic set one
    list held 20k rows probed by 400k, and the join cost 5.9x the balanced N * probes * N / lists
    with one round; three rounds brought it to ~3x at twice the probes (RESULTS section 10).
    """
    target = x.shape[0] / centres.shape[0]
    for round_ in range(SPLIT_ROUNDS):
        own = assign_lists(x, centres, 1, progress=False)[0][:, 0]
        sizes = np.bincount(own, minlength=centres.shape[0])
        keep, added = [], []
        for j, size in enumerate(sizes):
            parts = int(math.ceil(size / target))
            if size <= 2 * target or parts < 2:
                keep.append(j)
                continue
            members = np.flatnonzero(own == j)
            added.append(
                train_lists(
                    np.asarray(x[members], dtype=np.float32), parts, None if seed is None else seed + round_
                )
            )
        if not added:
            break
        centres = np.concatenate([centres[keep], *added])
    return centres


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
            if probes == 1:  # the split rounds' own-list question: argmax, not a partition
                part = scores.argmax(axis=1)[:, None]
            elif probes < scores.shape[1]:
                part = np.argpartition(scores, scores.shape[1] - probes, axis=1)[:, -probes:]
            else:
                part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape).copy()
            top = np.take_along_axis(scores, part, 1)
            order = np.argsort(-top, axis=1, kind="stable")
            out[s : s + b.shape[0]] = np.take_along_axis(part, order, 1)
            out_s[s : s + b.shape[0]] = np.take_along_axis(top, order, 1)
            bar.update(b.shape[0])
    return out, out_s


def far_rows(best: np.ndarray) -> np.ndarray:
    """Rows far from every list centre: ``best`` (each row's cosine to its nearest centre) an outlier
    below the median by ``FAR_MADS`` robust standard deviations; the ``FAR_MAX`` farthest at most.

    Why: off-topic rows (the synthetic sets' uniform background) have their nearest neighbours at
    almost equal distance all over the corpus, in lists they never probe (join recall 0.12 at 1M), and
    those neighbours are mostly other far rows; joined with each other they reach 0.79 (RESULTS
    section 10). The rule is a plain robust-outlier cut, not a fraction: a corpus without such rows
    gets few or none.
    """
    med = float(np.median(best))
    mad = float(np.median(np.abs(best - med)))
    far = np.flatnonzero(best < med - FAR_MADS * 1.4826 * mad)
    if len(far) > FAR_MAX:
        far = np.sort(far[np.argsort(best[far], kind="stable")[:FAR_MAX]])
    return far


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
    mem_sq: np.ndarray,
    mem: np.ndarray,
    q_rows: np.ndarray,
    cand: np.ndarray,
    score: np.ndarray,
    dedup: bool,
) -> None:
    """Each row of the product block ``s`` (2 q.m, one row per distinct ``q_rows``) offers its members
    to that row's candidate pool, ranked by 2 q.m - |m|^2 (largest == nearest).

    One pool per row, kept sorted best first, for all the lists it probes: the pool's worst score
    tightens list after list, so most members are turned away by one comparison. ``dedup``: a member
    may already be in the pool (the far rows' join meets rows already met in their lists).
    """
    c = cand.shape[1]
    for r in numba.prange(s.shape[0]):
        bi = cand[q_rows[r]]
        bs = score[q_rows[r]]
        for j in range(s.shape[1]):
            v = s[r, j] - mem_sq[j]
            if v <= bs[c - 1]:
                continue
            if dedup:
                seen = False
                for t in range(c):
                    if bi[t] == mem[j]:
                        seen = True
                        break
                if seen:
                    continue
            t = c - 1
            while t > 0 and bs[t - 1] < v:
                bs[t] = bs[t - 1]
                bi[t] = bi[t - 1]
                t -= 1
            bs[t] = v
            bi[t] = mem[j]


class _Scratch:
    """The join's gather and product buffers, allocated once and reused for every block.

    Why: a fresh 256 MB block per product is page-faulted in on first touch; on this 2-core VM that
    cost as much as the product itself (RESULTS section 10, "third round").
    """

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        self.max_rows = max(1, SCORE_BLOCK // (4 * x.shape[1]))
        self.q = np.empty((self.max_rows, x.shape[1]), dtype=np.float32)
        self.s = np.empty(SCORE_BLOCK // 4, dtype=np.float32)

    def rows_per_block(self, members: int) -> int:
        return max(1, min(self.max_rows, SCORE_BLOCK // (4 * members)))

    def doubled(self, rows: np.ndarray) -> np.ndarray:
        """2 x the vectors of ``rows`` as a new float32 array (a list's members, the right operand)."""
        m = np.asarray(self.x[rows], dtype=np.float32)
        m *= 2.0
        return m

    def products(self, rows: np.ndarray, doubled: np.ndarray) -> np.ndarray:
        """(rows x members) 2 q.m in the reused buffers."""
        q = self.q[: len(rows)]
        if self.x.dtype == np.float32:
            np.take(self.x, rows, axis=0, out=q, mode="clip")  # "raise" would buffer a copy
        else:
            q[...] = self.x[rows]
        size = len(rows) * doubled.shape[0]
        if size > self.s.size:
            self.s = np.empty(size, dtype=np.float32)
        s = self.s[:size].reshape(len(rows), doubled.shape[0])
        np.matmul(q, doubled.T, out=s)
        return s


def _join_far_rows(
    scratch: _Scratch,
    far: np.ndarray,
    sq: np.ndarray,
    cand: np.ndarray,
    score: np.ndarray,
    progress: bool,
) -> None:
    """Every far row against every far row (see ``far_rows``), into their candidate pools."""
    if len(far) < 2:
        return
    far2 = scratch.doubled(far)
    far_sq = sq[far]
    far32 = far.astype(np.int32)
    step = scratch.rows_per_block(len(far))
    with tqdm(total=len(far), desc="graph: joining far rows", unit="doc", disable=not progress) as bar:
        for b in range(0, len(far), step):
            blk = far[b : b + step]
            s = scratch.products(blk, far2)
            _keep_best(s, far_sq, far32, blk, cand, score, True)
            bar.update(len(blk))


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
    O(N * k) for the candidate pools plus one reused score block of ``SCORE_BLOCK`` bytes.
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
    far = far_rows(list_scores[:, 0])
    del list_scores
    t_assign = time.perf_counter() - t0 - t_train
    sq = _squared_norms(x)
    # Members of each list (its own rows), and the (row, probe) pairs that probe it.
    members_order = np.argsort(own, kind="stable")
    members_ptr = np.searchsorted(own[members_order], np.arange(n_lists + 1))
    flat = lists.reshape(-1)
    probe_order = np.argsort(flat, kind="stable")
    probe_ptr = np.searchsorted(flat[probe_order], np.arange(n_lists + 1))
    # One candidate pool per row, best first: its k neighbours, itself (met in its own list) and
    # RERANK_MARGIN more for the re-rank.
    c = min(n, k + 1 + RERANK_MARGIN)
    cand = np.full((n, c), -1, dtype=np.int32)
    score = np.full((n, c), -np.inf, dtype=np.float32)
    scratch = _Scratch(x)
    with tqdm(total=n * probes, desc="graph: joining lists", unit="pair", disable=not progress) as bar:
        for j in range(n_lists):
            mem = members_order[members_ptr[j] : members_ptr[j + 1]]
            probing = probe_order[probe_ptr[j] : probe_ptr[j + 1]] // probes  # distinct rows
            if not len(probing):
                continue
            if not len(mem):
                bar.update(len(probing))
                continue
            mem2 = scratch.doubled(mem)
            mem_sq = sq[mem]
            mem32 = mem.astype(np.int32)
            step = scratch.rows_per_block(len(mem))
            for b in range(0, len(probing), step):
                q_rows = probing[b : b + step]
                s = scratch.products(q_rows, mem2)
                _keep_best(s, mem_sq, mem32, q_rows, cand, score, False)
                bar.update(len(q_rows))
    _join_far_rows(scratch, far, sq, cand, score, progress)
    del scratch, score
    t_join = time.perf_counter() - t0 - t_train - t_assign
    # Explicit distances to each row's pool, then the engine's row order.
    idx_i = np.empty((n, k), dtype=np.int32)
    idx_d = np.empty((n, k), dtype=np.float32)
    xf = np.asarray(x, dtype=np.float32)
    for s0 in range(0, n, 65536):
        kc = cand[s0 : s0 + 65536]
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
        "far_rows": len(far),
        "seconds": round(secs, 3),
        "timings": {
            "train": round(t_train, 3),
            "assign": round(t_assign, 3),
            "join": round(t_join, 3),
            "rerank": round(secs - t_train - t_assign - t_join, 3),
        },
    }
    return KnnGraph(idx_i, idx_d, meta)
