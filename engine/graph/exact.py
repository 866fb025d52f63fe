"""Exact kNN by blocked brute force: the ground truth for recall, and ``--graph exact``.

Why blocked: a block of B query rows against all N vectors needs B*N floats, never N*N.
Candidates come from a matmul (BLAS on CPU; fp16/bf16 tensor cores on CUDA) and are then
re-ranked in float32 by explicit differences, so duplicates get distance exactly 0 and the
low-precision GPU matmul only has to get the candidate *set* right (margin of extra
candidates covers its error).
"""

from __future__ import annotations

import logging
import time

import numpy as np
from tqdm.auto import tqdm

from engine import hardware
from engine.errors import EngineError
from engine.graph.distances import pairwise_euclidean
from engine.graph.knn import KnnGraph
from engine.graph.rows import finish_rows

log = logging.getLogger(__name__)

#: Bytes of the (block, N) score matrix per block on CPU.
CPU_BLOCK_BUDGET = 256 * 1024**2
#: Extra candidates taken from the matmul before the float32 re-rank.
CANDIDATE_MARGIN = 16


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``."""
    d = str(device).lower()
    if d == "auto":
        return "cuda" if hardware.cuda_available() else "cpu"
    if d not in ("cpu", "cuda"):
        raise EngineError(f"unknown device {device!r} (parameter device); expected auto, cpu or cuda")
    if d == "cuda" and not hardware.cuda_available():
        raise EngineError("device='cuda' but torch sees no CUDA GPU (parameter device)")
    return d


def exact_knn(
    vectors: np.ndarray,
    k: int,
    block_size: int | None = None,
    device: str = "auto",
    rows: np.ndarray | None = None,
    progress: bool = True,
    precision: str = "auto",
) -> KnnGraph:
    """Exact k nearest neighbours (Euclidean) of ``vectors[rows]`` (default: all) among all vectors.

    Self is excluded by position; duplicates keep distance 0. Memory O(block*N + N*k).
    ``precision`` (CUDA only): ``fp32``, ``fp16``, ``bf16`` or ``auto`` (fp16: 10 mantissa bits,
    and unit-vector dot products cannot overflow it) for the candidate matmul; the final
    distances are always float32.
    """
    x = vectors
    if x.ndim != 2:
        raise EngineError(f"exact_knn: vectors must be (N, dim), got {x.shape} (parameter vectors)")
    n = int(x.shape[0])
    if not 1 <= k < n:
        raise EngineError(f"exact_knn: k must be in 1..{n - 1}, got {k} (parameter k)")
    q_rows = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
    if q_rows.size and (q_rows.min() < 0 or q_rows.max() >= n):
        raise EngineError(f"exact_knn: rows must be positions in 0..{n - 1} (parameter rows)")
    dev = resolve_device(device)
    t0 = time.perf_counter()
    if dev == "cuda":
        idx, dist = _exact_cuda(x, k, q_rows, block_size, progress, precision)
    else:
        idx, dist = _exact_cpu(x, k, q_rows, block_size, progress)
    meta = {"source": "exact", "k": k, "device": dev, "seconds": round(time.perf_counter() - t0, 3)}
    return KnnGraph(idx, dist, meta)


def _topk_candidates(scores: np.ndarray, c: int) -> np.ndarray:
    """Column indices of the ``c`` largest scores per row (unordered)."""
    if c >= scores.shape[1]:
        return np.broadcast_to(np.arange(scores.shape[1]), scores.shape).copy()
    return np.argpartition(scores, -c, axis=1)[:, -c:]


def _exact_cpu(
    x: np.ndarray, k: int, q_rows: np.ndarray, block_size: int | None, progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    n, dim = x.shape
    xf = np.asarray(x, dtype=np.float32)  # a memmap stays a memmap (no copy) when already float32
    sq = np.einsum("ij,ij->i", xf, xf, dtype=np.float32) if n <= 2_000_000 else None
    if sq is None:  # pragma: no cover - huge N: norms blockwise
        sq = np.concatenate(
            [np.einsum("ij,ij->i", xf[s : s + 65536], xf[s : s + 65536]) for s in range(0, n, 65536)]
        )
    c = min(n, k + 1 + CANDIDATE_MARGIN)
    # Budget both the (block, N) scores and the (block, c, dim) candidate gather + differences.
    bs = int(block_size or max(16, min(4096, CPU_BLOCK_BUDGET // (4 * n), CPU_BLOCK_BUDGET // (8 * c * dim))))
    m = q_rows.shape[0]
    out_i = np.empty((m, k), dtype=np.int32)
    out_d = np.empty((m, k), dtype=np.float32)
    with tqdm(total=m, desc=f"exact kNN (k={k}, cpu)", unit="doc", disable=not progress) as bar:
        for s in range(0, m, bs):
            rows = q_rows[s : s + bs]
            q = np.asarray(xf[rows], dtype=np.float32)
            # Largest (2 q.x - |x|^2) == smallest |q - x|^2.
            scores = q @ xf.T
            scores *= 2.0
            scores -= sq[None, :]
            cand = _topk_candidates(scores, c).astype(np.int64)
            del scores
            dist = pairwise_euclidean(q, xf[cand.reshape(-1)].reshape(cand.shape[0], cand.shape[1], dim))
            ci, cd = finish_rows(cand, dist, rows, k)
            out_i[s : s + len(rows)] = ci
            out_d[s : s + len(rows)] = cd
            bar.update(len(rows))
    return out_i, out_d


def _exact_cuda(
    x: np.ndarray, k: int, q_rows: np.ndarray, block_size: int | None, progress: bool, precision: str
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - needs a GPU
    import torch

    n, dim = x.shape
    p = precision.lower()
    if p == "auto":
        p = "fp16"
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if p not in dtypes:
        raise EngineError(
            f"unknown precision {precision!r} (parameter precision); expected auto, fp32, fp16, bf16"
        )
    dt = dtypes[p]
    dev = torch.device("cuda")
    # Low-precision copy of all vectors on the GPU, filled in chunks (no full fp32 host copy).
    xg = torch.empty((n, dim), dtype=dt, device=dev)
    sq = torch.empty(n, dtype=torch.float32, device=dev)
    for s in range(0, n, 65536):
        chunk = torch.from_numpy(np.ascontiguousarray(x[s : s + 65536], dtype=np.float32)).to(dev)
        xg[s : s + chunk.shape[0]] = chunk.to(dt)
        sq[s : s + chunk.shape[0]] = (chunk * chunk).sum(1)
    free, _ = torch.cuda.mem_get_info()
    bs = int(block_size or max(64, min(16384, (free // 4) // (4 * n))))
    # Wider margin for low precision (fp16 ~3 significant digits, bf16 ~2).
    c = min(n, k + 1 + (CANDIDATE_MARGIN if p == "fp32" else 4 * CANDIDATE_MARGIN))
    m = q_rows.shape[0]
    out_i = np.empty((m, k), dtype=np.int32)
    out_d = np.empty((m, k), dtype=np.float32)
    rows_t = torch.from_numpy(q_rows).to(dev)
    rerank_rows = max(1, (256 * 1024**2) // (4 * c * dim))  # host gather <= 256 MiB
    desc = f"exact kNN (k={k}, cuda {p})"
    with torch.inference_mode(), tqdm(total=m, desc=desc, unit="doc", disable=not progress) as bar:
        for s in range(0, m, bs):
            r = rows_t[s : s + bs]
            scores = (xg[r] @ xg.T).float()
            scores.mul_(2.0).sub_(sq[None, :])
            cand_all = torch.topk(scores, c, dim=1, sorted=False).indices.cpu().numpy().astype(np.int64)
            del scores
            # float32 re-rank from the host vectors by explicit differences (duplicates -> 0).
            for s2 in range(0, cand_all.shape[0], rerank_rows):
                cand = cand_all[s2 : s2 + rerank_rows]
                rows = q_rows[s + s2 : s + s2 + cand.shape[0]]
                qf = torch.from_numpy(np.ascontiguousarray(x[rows], dtype=np.float32)).to(dev)
                cv = torch.from_numpy(
                    np.ascontiguousarray(x[cand.reshape(-1)], dtype=np.float32).reshape(*cand.shape, dim)
                ).to(dev)
                dist = torch.linalg.vector_norm(cv - qf[:, None, :], dim=2).cpu().numpy()
                ci, cd = finish_rows(cand, dist, rows, k)
                out_i[s + s2 : s + s2 + len(ci)] = ci
                out_d[s + s2 : s + s2 + len(ci)] = cd
            bar.update(len(cand_all))
    return out_i, out_d
