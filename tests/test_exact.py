"""exact_knn (blocked brute force) against a naive full distance matrix on small data."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import EngineError
from engine.graph import exact_knn
from engine.graph.exact import resolve_device


def naive_knn(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Full N x N float64 distances (fine at a few hundred rows), self excluded by position."""
    x64 = x.astype(np.float64)
    d = np.sqrt(np.maximum(((x64[:, None, :] - x64[None, :, :]) ** 2).sum(-1), 0))
    np.fill_diagonal(d, np.inf)
    order = np.lexsort((np.broadcast_to(np.arange(len(x)), d.shape), d), axis=1)[:, :k]
    return order, np.take_along_axis(d, order, axis=1)


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    rng = np.random.default_rng(11)
    centres = rng.standard_normal((6, 24))
    v = (centres[rng.integers(0, 6, 300)] + 0.4 * rng.standard_normal((300, 24))).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    v[7] = v[8]  # a duplicate pair
    return v


@pytest.mark.parametrize("block_size", [7, 64, None])
def test_matches_naive(x, block_size) -> None:
    g = exact_knn(x, 12, block_size=block_size, device="cpu", progress=False)
    ni, nd = naive_knn(x, 12)
    np.testing.assert_allclose(g.distances, nd, atol=1e-5)
    # Same neighbour sets except members tied at the k-th distance.
    for i in range(len(x)):
        diff = set(g.indices[i]) ^ set(ni[i])
        for j in diff:
            assert abs(np.linalg.norm(x[i] - x[j]) - nd[i, -1]) < 1e-5
    assert not (g.indices == np.arange(len(x))[:, None]).any()
    assert g.meta["source"] == "exact"


def test_duplicates_at_exact_zero(x) -> None:
    g = exact_knn(x, 3, device="cpu", progress=False)
    assert g.indices[7, 0] == 8 and g.distances[7, 0] == 0.0
    assert g.indices[8, 0] == 7 and g.distances[8, 0] == 0.0
    assert g.to_csr()[7, 8] == 0.0 and g.to_csr().nnz == 300 * 3


def test_rows_subset_equals_full_rows(x) -> None:
    full = exact_knn(x, 5, device="cpu", progress=False)
    rows = np.array([299, 0, 150, 7])
    sub = exact_knn(x, 5, rows=rows, block_size=3, device="cpu", progress=False)
    np.testing.assert_array_equal(sub.indices, full.indices[rows])
    np.testing.assert_allclose(sub.distances, full.distances[rows])


def test_non_unit_vectors_and_memmap(tmp_path, x) -> None:
    from numpy.lib.format import open_memmap

    scaled = x * np.linspace(0.5, 2.0, len(x), dtype=np.float32)[:, None]
    mm = open_memmap(tmp_path / "v.npy", mode="w+", dtype=np.float32, shape=scaled.shape)
    mm[:] = scaled
    mm.flush()
    g = exact_knn(np.load(tmp_path / "v.npy", mmap_mode="r"), 4, device="cpu", progress=False)
    _, nd = naive_knn(scaled, 4)
    np.testing.assert_allclose(g.distances, nd, rtol=1e-5, atol=1e-5)


def test_bad_arguments(x) -> None:
    with pytest.raises(EngineError, match="k"):
        exact_knn(x, 0, progress=False)
    with pytest.raises(EngineError, match="k"):
        exact_knn(x, len(x), progress=False)
    with pytest.raises(EngineError, match="rows"):
        exact_knn(x, 3, rows=np.array([400]), progress=False)
    with pytest.raises(EngineError, match="device"):
        exact_knn(x, 3, device="tpu", progress=False)


def test_cuda_path_matches_cpu(x) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="CUDA"):
            resolve_device("cuda")
        assert resolve_device("auto") == "cpu"
        pytest.skip("no CUDA GPU: the fp16/bf16 path is exercised only on a GPU machine")
    cpu = exact_knn(x, 10, device="cpu", progress=False)
    for precision in ("fp32", "fp16", "bf16"):
        gpu = exact_knn(x, 10, device="cuda", precision=precision, progress=False)
        np.testing.assert_allclose(gpu.distances, cpu.distances, atol=1e-5)
        assert gpu.recall_against(cpu) == 1.0
