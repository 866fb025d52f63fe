"""Exact kNN graph of a synthetic set (benchmarks/synthetic.py) in a fraction of brute force, certified.

Issue 22 asks for the ARI of the clustering of the engine's 1M graph against the clustering of the *exact*
graph; brute force at 1M x 1024 is ~3.2 h on 2 cores (2e15 flops at ~180 GFLOPS). This computes the same
graph as ``engine.graph.exact_knn`` (checked identical at 20k and 100k: every index and distance) while skipping
products that provably cannot enter a row's top k+1, using the generator's blobs as groups (any grouping is
valid: the bounds are computed on the data, the generator's geometry only makes them tight).

The rows are first reordered by blob (background first), so that every blob is a contiguous slice and
every product below is a plain BLAS call on views, never a gather of the corpus.

* per blob B an orthonormal basis U_B of r=25 columns (randomized range finder), ``R_B = max |U_B^T x|``
  and ``E_B = max |x_perp|`` over x in B (x_perp: the part of x outside U_B);
* every row's own blob and the background rows (label -1) are searched by brute force; every row's best
  background dot product comes from the same products;
* t_q, a lower bound on q's final k-th best dot product (self excluded): by default q's (k+1)-th best in
  its own blob (self included); with ``--seed-graph`` (any kNN graph of the same vectors, e.g. the
  engine's) the dot product with that graph's k-th neighbour, a real point, so tighter where the own blob
  is small, and then every search keeps only the products >= t_q (no top-k selection over wide rows);
* for q and x in B, ``q.x = (U^T q).(U^T x) + q_perp.x_perp``, so B is skipped for q when
  ``|U^T q| R_B + |q_perp| E_B`` is below t_q; then each remaining pair is screened by
  ``(U^T q).(U^T x) + |q_perp| |x_perp|`` (25 multiplies instead of 1,024, as a BLAS product), and q is
  searched by brute force against B when any pair passes, keeping only the products >= t_q; rows whose
  best background dot product passes are searched against the whole background again. (A bound on the
  blob's mean direction alone, tried first, pruned no pair at 20k: the blobs are wide.)
* candidates are finished as ``engine.graph.exact`` does (exact Euclidean on the k+1+16 best dot products,
  self removed, sorted by distance then position). ``EPS`` covers float32 rounding in the bounds.

    OMP_NUM_THREADS=2 python benchmarks/exact_certified.py SYNTH_DIR OUT.npz   # + OUT.json (timings)
    python benchmarks/exact_certified.py SYNTH_DIR OUT.npz --check             # + brute force, compared
    python benchmarks/exact_certified.py SYNTH_DIR OUT.npz --seed-graph GRAPH.npz   # t_q from GRAPH
    ... --brute-below 700   # rows of blobs under 700 rows by brute force (at 1M the bounds pass too much there)
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.graph.distances import pairwise_euclidean  # noqa: E402
from engine.graph.exact import CANDIDATE_MARGIN  # noqa: E402
from engine.graph.rows import finish_rows  # noqa: E402

K = 30
C = K + 1 + CANDIDATE_MARGIN
R = 25
EPS = 2e-3  # float32 slack on the certified bounds
QUERY_BLOCK = 2048
COLUMN_BLOCK = 32768


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def kth_best(scores: np.ndarray, k: int) -> np.ndarray:
    """The k-th largest value of each row (-inf where a row has fewer than k finite values)."""
    return np.partition(scores, scores.shape[1] - k, axis=1)[:, scores.shape[1] - k]


def any_pair_passes(ab, qp, thr, p_own, e_own):
    """Per query i: does some x of the blob have (U^T q_i).(U^T x) + |q_i perp| |x perp| >= thr_i?"""
    out = np.zeros(ab.shape[0], dtype=bool)
    for c0 in range(0, p_own.shape[0], COLUMN_BLOCK):
        pb = ab @ p_own[c0 : c0 + COLUMN_BLOCK].T
        pb += qp[:, None] * e_own[None, c0 : c0 + COLUMN_BLOCK]
        out |= (pb >= thr[:, None]).any(axis=1)
    return out


def merge_hits(cand_i, cand_s, rows, hit_r, hit_c, hit_s):
    """Add the hits (query ``rows[hit_r]``, column, score) to the C best candidates of those rows."""
    if not hit_r.size:
        return
    order = np.argsort(hit_r, kind="stable")
    hit_r, hit_c, hit_s = hit_r[order], hit_c[order], hit_s[order]
    starts = np.flatnonzero(np.r_[True, hit_r[1:] != hit_r[:-1]])
    for a, b in zip(starts, np.r_[starts[1:], hit_r.size], strict=True):
        r = rows[hit_r[a]]
        ai = np.concatenate([cand_i[r], hit_c[a:b]])
        as_ = np.concatenate([cand_s[r], hit_s[a:b]])
        ai, keep = np.unique(ai, return_index=True)  # a column found twice counts once
        as_ = as_[keep]
        top = np.argsort(-as_, kind="stable")[:C]
        cand_i[r], cand_s[r] = -1, -np.inf
        cand_i[r, : top.size], cand_s[r, : top.size] = ai[top], as_[top]


def search_slice(xs, rows, s, e, thr, cand_i, cand_s, col_max=None):
    """Products of the queries ``rows`` with xs[s:e]; those >= thr (per query) join the candidates.
    ``col_max`` (length n), when given, keeps each column's best product seen."""
    q = xs[rows]
    hits_r, hits_c, hits_s = [], [], []
    for c0 in range(s, e, COLUMN_BLOCK):
        c1 = min(e, c0 + COLUMN_BLOCK)
        sc = q @ xs[c0:c1].T
        if col_max is not None:
            np.maximum(col_max[c0:c1], sc.max(axis=0), out=col_max[c0:c1])
        r, c = np.nonzero(sc >= thr[:, None])
        hits_r.append(r)
        hits_c.append(c + c0)
        hits_s.append(sc[r, c])
    merge_hits(cand_i, cand_s, rows, np.concatenate(hits_r), np.concatenate(hits_c), np.concatenate(hits_s))
    return int(rows.size * (e - s))


def main(folder, out, check=False, seed_graph=None, brute_below=0):
    lab0 = np.load(f"{folder}/labels.npy")
    x0 = np.load(f"{folder}/vectors.npy", mmap_mode="r")
    n, d = x0.shape
    t0 = time.time()
    order = np.argsort(lab0, kind="stable")  # background (-1) first, then blob 0, 1, ...
    xs = np.empty((n, d), np.float32)
    for s in range(0, n, 65536):
        xs[s : s + 65536] = x0[order[s : s + 65536]]
    lab = lab0[order]
    nb = int(lab.max()) + 1
    edges = np.searchsorted(lab, np.arange(-1, nb + 1))  # blob b = edges[b+1]:edges[b+2]
    nbg = int(edges[1])
    sizes = np.diff(edges[1:])
    cand_i = np.full((n, C), -1, np.int64)
    cand_s = np.full((n, C), -np.inf, np.float32)
    stats = {"n": n, "blobs": nb, "background": nbg, "r": R, "largest_blob": int(sizes.max())}
    log("reordered", round(time.time() - t0, 1), "s", stats)
    rng = np.random.default_rng(0)
    # 1. bounds per blob: a 25-column basis (R, E, per-row projections and residuals)
    t = time.time()
    U = np.empty((d, nb, R), np.float32)
    Rb, Eb = np.empty(nb, np.float32), np.empty(nb, np.float32)
    P_own, E_own = [], []
    for b in range(nb):
        xb = xs[edges[b + 1] : edges[b + 2]]
        nrm2 = np.einsum("ij,ij->i", xb, xb)
        if xb.shape[0] > 4 * R:  # randomized range finder (Halko et al.), 2 power iterations
            y = xb @ rng.standard_normal((d, R + 10)).astype(np.float32)
            for _ in range(2):
                y = np.linalg.qr(y)[0]
                y = xb @ (xb.T @ y)
            y = np.linalg.qr(y)[0]
            ub = np.linalg.svd(y.T @ xb, full_matrices=False)[2][:R].T.astype(np.float32)
        else:
            ub = np.linalg.svd(xb, full_matrices=False)[2][:R].T.astype(np.float32)
        ub = np.linalg.qr(ub)[0].astype(np.float32)
        if ub.shape[1] < R:
            ub = np.pad(ub, ((0, 0), (0, R - ub.shape[1])))
        U[:, b] = ub
        p = xb @ ub
        pn = np.sqrt(np.einsum("ij,ij->i", p, p))
        resid = np.sqrt(np.maximum(0, nrm2 - pn**2))
        Rb[b], Eb[b] = pn.max(), resid.max()
        P_own.append(np.ascontiguousarray(p))
        E_own.append(resid + EPS)
    stats["bases_s"] = round(time.time() - t, 1)
    stats["E_b_median_max"] = [float(np.median(Eb)), float(Eb.max())]
    log("bases", stats["bases_s"], "s; E_B median/max", stats["E_b_median_max"])
    thr_all = None
    if seed_graph is not None:  # t_q from a given graph: its k-th neighbour's dot product (a real point)
        t = time.time()
        inv = np.empty(n, np.int64)
        inv[order] = np.arange(n)
        gi = np.load(seed_graph)["indices"]
        thr_all = np.full(n, -np.inf, np.float32)
        for q0 in range(0, n, 4096):
            p = np.arange(q0, min(n, q0 + 4096))
            nbr = gi[order[p]].astype(np.int64)
            ok = nbr >= 0
            nbr = np.where(ok, inv[np.where(ok, nbr, 0)], p[:, None])
            dots = np.einsum("id,ikd->ik", xs[p], xs[nbr.reshape(-1)].reshape(p.size, -1, d))
            dots[~ok] = np.inf
            full = ok.all(axis=1)  # a row with fewer than k neighbours keeps t_q = -inf
            thr_all[p[full]] = dots[full].min(axis=1) - EPS
            cand_i[p, : nbr.shape[1]] = np.where(ok, nbr, -1)
            cand_s[p, : nbr.shape[1]] = np.where(ok, dots, -np.inf)
        stats["seed_graph_s"] = round(time.time() - t, 1)
        log("thresholds from", seed_graph, stats["seed_graph_s"], "s")
    # 2. own blob, brute force
    t = time.time()
    for b in range(nb):
        s, e = edges[b + 1], edges[b + 2]
        c = min(C, e - s)
        for q0 in range(s, e, QUERY_BLOCK):
            q1 = min(e, q0 + QUERY_BLOCK)
            if thr_all is not None:
                search_slice(xs, np.arange(q0, q1), s, e, thr_all[q0:q1], cand_i, cand_s)
                continue
            sc = xs[q0:q1] @ xs[s:e].T
            p = np.argpartition(sc, -c, axis=1)[:, -c:]
            cand_i[q0:q1, :c], cand_s[q0:q1, :c] = p + s, np.take_along_axis(sc, p, 1)
    stats["own_blob_s"] = round(time.time() - t, 1)
    log("own blob", stats["own_blob_s"], "s")
    # 3. background rows against everything; every row's best background dot product
    t = time.time()
    bg_best = np.full(n, -np.inf, np.float32)
    for q0 in range(0, nbg, 256):
        q1 = min(nbg, q0 + 256)
        if thr_all is not None:
            search_slice(xs, np.arange(q0, q1), 0, n, thr_all[q0:q1], cand_i, cand_s, col_max=bg_best)
        else:
            sc = xs[q0:q1] @ xs.T
            np.maximum(bg_best, sc.max(axis=0), out=bg_best)
            p = np.argpartition(sc, -C, axis=1)[:, -C:]
            cand_i[q0:q1], cand_s[q0:q1] = p, np.take_along_axis(sc, p, 1)
        if q0 % (256 * 40) == 0:
            log(f"background {q0}/{nbg}")
    stats["background_s"] = round(time.time() - t, 1)
    log("background", stats["background_s"], "s")
    # 4. clustered rows: other blobs that pass the bounds; background where its best could matter
    t = time.time()
    counts = dict(pairs_basis_bound=0, pairs_searched=0, products=0, screened=0, redo=0)
    u_flat = U.reshape(d, nb * R)
    for q0 in range(nbg, n, QUERY_BLOCK):
        q1 = min(n, q0 + QUERY_BLOCK)
        xq = xs[q0:q1]
        qn2 = np.einsum("ij,ij->i", xq, xq)
        thr = kth_best(cand_s[q0:q1], K + 1) - EPS if thr_all is None else thr_all[q0:q1]
        qa = (xq @ u_flat).reshape(q1 - q0, nb, R)
        an2 = np.einsum("ibr,ibr->ib", qa, qa)
        bound = np.sqrt(an2) * Rb + np.sqrt(np.maximum(0, qn2[:, None] - an2)) * Eb
        need = bound >= thr[:, None]
        need[np.arange(q1 - q0), lab[q0:q1]] = False
        small = sizes[lab[q0:q1]] < brute_below  # searched by brute force below
        need[small] = False
        counts["pairs_basis_bound"] += int(need.sum())
        for b in np.flatnonzero(need.any(axis=0)):
            qi = np.flatnonzero(need[:, b])
            qp = np.sqrt(np.maximum(0, qn2[qi] - an2[qi, b]))
            counts["screened"] += int(qi.size * sizes[b])
            qi = qi[any_pair_passes(np.ascontiguousarray(qa[qi, b]), qp, thr[qi], P_own[b], E_own[b])]
            if not qi.size:
                continue
            counts["pairs_searched"] += int(qi.size)
            counts["products"] += search_slice(
                xs, q0 + qi, edges[b + 1], edges[b + 2], thr[qi], cand_i, cand_s
            )
        thr_now = kth_best(cand_s[q0:q1], K + 1) - EPS if thr_all is None else thr_all[q0:q1]
        redo = np.flatnonzero((bg_best[q0:q1] >= thr_now) & ~small)
        if redo.size:
            counts["redo"] += int(redo.size)
            thr2 = thr_now[redo]
            counts["products"] += search_slice(xs, q0 + redo, 0, nbg, thr2, cand_i, cand_s)
        if (q0 - nbg) % (QUERY_BLOCK * 25) == 0:
            done = q1 - nbg
            log(f"clustered {done}/{n - nbg} ({time.time() - t:.0f} s): {counts}")
    stats.update(cross_blob_s=round(time.time() - t, 1), **{f"cross_{k}": v for k, v in counts.items()})
    log("cross", stats["cross_blob_s"], "s", counts)
    # 4b. rows of blobs under --brute-below rows: brute force against everything (the bounds pass too much)
    t = time.time()
    brute = np.flatnonzero((lab >= 0) & (sizes[np.maximum(lab, 0)] < brute_below))
    for i in range(0, brute.size, 256):
        rows = brute[i : i + 256]
        if thr_all is not None:
            search_slice(xs, rows, 0, n, thr_all[rows], cand_i, cand_s)
        else:
            sc = xs[rows] @ xs.T
            p = np.argpartition(sc, -C, axis=1)[:, -C:]
            cand_i[rows], cand_s[rows] = p, np.take_along_axis(sc, p, 1)
        if i % (256 * 40) == 0:
            log(f"brute force {i}/{brute.size}")
    stats.update(brute_rows=int(brute.size), brute_s=round(time.time() - t, 1))
    log("brute force rows", brute.size, stats["brute_s"], "s")
    # 5. finish as engine.graph.exact: exact Euclidean on the candidates, self removed, sorted
    t = time.time()
    out_i = np.empty((n, K), np.int32)
    out_d = np.empty((n, K), np.float32)
    for s in range(0, n, 4096):
        rows = np.arange(s, min(n, s + 4096))
        cand = cand_i[rows]
        dist = pairwise_euclidean(xs[rows], xs[cand.reshape(-1)].reshape(cand.shape[0], C, d))
        ci, cd = finish_rows(np.where(cand >= 0, order[cand], -1), dist, order[rows], K)
        out_i[order[rows]], out_d[order[rows]] = ci, cd
    stats["finish_s"] = round(time.time() - t, 1)
    stats["total_s"] = round(time.time() - t0, 1)
    own_products = float((sizes.astype(np.float64) ** 2).sum())
    stats["products_vs_brute_force"] = round(
        (
            own_products
            + (nbg + brute.size) * n
            + counts["products"]
            + n * nb * R / d
            + counts["screened"] * R / d
        )
        / n
        / n,
        4,
    )
    np.savez(out, indices=out_i, distances=out_d)
    log("done", json.dumps(stats))
    if check:
        from engine.graph import exact_knn

        t = time.time()
        ref = exact_knn(x0, K, progress=False)
        stats["check"] = {
            "brute_force_s": round(time.time() - t, 1),
            "indices_identical_share": float((ref.indices == out_i).mean()),
            "max_abs_distance_difference": float(np.abs(ref.distances - out_d).max()),
        }
        log("check", stats["check"])
    json.dump(stats, open(out.replace(".npz", ".json"), "w"), indent=2)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("out")
    ap.add_argument("--check", action="store_true", help="also run exact_knn's brute force and compare")
    ap.add_argument(
        "--seed-graph",
        help="a kNN graph of the same vectors (.npz, indices): t_q from its k-th neighbour (tighter), hits >= t_q",
    )
    ap.add_argument(
        "--brute-below",
        type=int,
        default=0,
        help="rows of blobs smaller than this are searched by brute force (default 0: none)",
    )
    args = ap.parse_args()
    main(args.folder, args.out, args.check, args.seed_graph, args.brute_below)
