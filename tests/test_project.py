"""Map stage layout: UMAP / node embedding on the precomputed kNN graph, fallbacks (drawing: test_show_map)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from engine.errors import EngineError
from engine.graph import exact_knn
from engine.project import (
    fallback_layout,
    layout_features,
    prepare_precomputed_knn,
    project_2d,
)


def brute_force_graph(vectors: np.ndarray, k: int) -> SimpleNamespace:
    """Exact kNN with the engine's conventions: Euclidean, ascending, self excluded."""
    d = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * vectors @ vectors.T))
    np.fill_diagonal(d, np.inf)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return SimpleNamespace(
        indices=idx.astype(np.int32), distances=np.take_along_axis(d, idx, 1).astype(np.float32)
    )


def blobs(n: int, n_centers: int = 4, dim: int = 32, noise: float = 0.08, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_centers, dim))
    labels = rng.integers(0, n_centers, n)
    v = centers[labels] + noise * rng.normal(size=(n, dim)) * np.linalg.norm(centers[labels], axis=1)[:, None]
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v.astype(np.float32), labels


def test_prepare_precomputed_knn_prepends_self_and_handles_missing():
    idx = np.array([[1, 2, -1], [0, -1, -1], [0, 1, 2]], dtype=np.int32)  # row 2 lists itself
    dist = np.array([[0.1, 0.3, np.inf], [0.1, np.inf, np.inf], [0.3, 0.4, 0.0]], dtype=np.float32)
    ki, kd = prepare_precomputed_knn(idx, dist, n_neighbors=3)
    assert ki.shape == kd.shape == (3, 3)
    assert (ki[:, 0] == np.arange(3)).all() and (kd[:, 0] == 0).all()
    assert ki[0].tolist() == [0, 1, 2] and kd[0].tolist() == pytest.approx([0.0, 0.1, 0.3])
    assert ki[1].tolist() == [1, 0, -1]
    assert np.isfinite(kd).all()  # missing entries get a finite distance, index -1
    assert ki[2].tolist() == [2, 0, 1]  # the listed self entry was dropped, not duplicated


def test_project_2d_uses_graph_without_second_neighbour_search(monkeypatch):
    import umap.umap_ as umap_mod

    def forbidden(*args, **kwargs):
        raise AssertionError("UMAP ran its own nearest-neighbour search")

    monkeypatch.setattr(umap_mod, "nearest_neighbors", forbidden)
    v, labels = blobs(300)
    graph = brute_force_graph(v, 15)
    emb = project_2d(graph, n_neighbors=15, vectors=v, random_state=42)
    assert emb.shape == (300, 2) and emb.dtype == np.float32 and np.isfinite(emb).all()
    # The layout keeps blobs apart: each point's 2-D nearest neighbour shares its blob.
    d2 = ((emb[:, None, :] - emb[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    assert (labels[d2.argmin(1)] == labels).mean() > 0.95
    # Deterministic with a fixed random_state.
    assert np.allclose(emb, project_2d(graph, n_neighbors=15, vectors=v, random_state=42))


def test_project_2d_duck_typed_graph_without_vectors_and_with_gaps():
    v, _ = blobs(120, seed=1)
    graph = brute_force_graph(v, 10)
    graph.indices[::7, 6:] = -1  # some rows lost neighbours
    graph.distances[::7, 6:] = np.inf
    emb = project_2d(graph, n_neighbors=15)  # capped to k + 1 = 11, no recomputation
    assert emb.shape == (120, 2) and np.isfinite(emb).all()


def test_project_2d_duplicates_survive():
    v, _ = blobs(60, seed=2)
    v = np.concatenate([v, v[:20]])  # 20 exact duplicates: zero distances
    emb = project_2d(brute_force_graph(v, 10), n_neighbors=10, vectors=v)
    assert emb.shape == (80, 2) and np.isfinite(emb).all()
    spread = np.ptp(emb, axis=0).max()
    assert np.linalg.norm(emb[:20] - emb[60:], axis=1).max() < 0.2 * spread


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5])
def test_project_2d_small_corpora_fall_back(n):
    v, _ = blobs(max(n, 1), seed=3)
    v = v[:n]
    k = max(n - 1, 1)
    graph = (
        brute_force_graph(v, k)
        if n > 1
        else SimpleNamespace(
            indices=-np.ones((n, 1), np.int32), distances=np.full((n, 1), np.inf, np.float32)
        )
    )
    for vectors in (v, None):
        emb = project_2d(graph, vectors=vectors)
        assert emb.shape == (n, 2) and emb.dtype == np.float32 and np.isfinite(emb).all()
    if n >= 3:
        assert len({tuple(p) for p in fallback_layout(n).round(6).tolist()}) == n  # distinct points


def test_project_2d_validates_inputs():
    with pytest.raises(EngineError, match="indices"):
        project_2d(object())
    v, _ = blobs(20)
    with pytest.raises(EngineError, match="vectors"):
        project_2d(brute_force_graph(v, 5), vectors=v[:5])
    with pytest.raises(EngineError, match="backend"):
        project_2d(brute_force_graph(v, 5), backend="gpu-magic")


def test_project_2d_cuml_backend():
    pytest.importorskip("cuml")
    cupy = pytest.importorskip("cupy")
    if cupy.cuda.runtime.getDeviceCount() == 0:
        pytest.skip("no CUDA GPU")
    v, _ = blobs(500)
    emb = project_2d(brute_force_graph(v, 15), vectors=v, backend="cuml")
    assert emb.shape == (500, 2) and np.isfinite(emb).all()


def test_cuml_backend_refused_without_gpu():
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            pytest.skip("a GPU is present")
    except Exception:
        pass
    v, _ = blobs(50)
    with pytest.raises(EngineError, match="cuml"):
        project_2d(brute_force_graph(v, 10), vectors=v, backend="cuml")


def test_project_2d_on_engine_knngraph():
    v, labels = blobs(200, seed=5)
    graph = exact_knn(v, k=15, device="cpu", progress=False)
    emb = project_2d(graph, n_neighbors=15, vectors=v, backend="cpu")
    assert emb.shape == (200, 2) and np.isfinite(emb).all()
    d2 = ((emb[:, None, :] - emb[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    assert (labels[d2.argmin(1)] == labels).mean() > 0.95


def test_layout_features_is_a_small_projection():
    v, _ = blobs(50, dim=200)
    f = layout_features(v, dim=16, block=7)
    assert f.shape == (50, 16) and f.dtype == np.float32
    assert np.allclose(
        f, v @ (np.random.default_rng(0).normal(size=(200, 16)).astype(np.float32) / 4.0), atol=1e-4
    )
    assert layout_features(v[:, :8]).shape == (50, 8)  # small dims pass through
