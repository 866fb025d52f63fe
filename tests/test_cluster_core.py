"""engine.cluster.core: core distances follow hdbscan's convention (min_samples-th other point)."""

import numpy as np
from hdbscan._hdbscan_reachability import mutual_reachability
from sklearn.neighbors import NearestNeighbors

from engine.cluster.core import core_distances, mutual_reachability_weights
from engine.cluster.edges import from_knn_arrays, from_sparse
from tests.fixtures.data import exact_knn_arrays


def _unit(n=300, d=16, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_core_distance_matches_hdbscan_convention():
    x = _unit()
    idx, dist = exact_knn_arrays(x, 12)
    e = from_knn_arrays(idx, dist)
    for ms in (1, 5, 10):
        # hdbscan's tree algorithms: query k = min_samples + 1 (self included), take the last column
        ref, _ = (
            NearestNeighbors(n_neighbors=ms + 1).fit(x.astype(np.float64)).kneighbors(x.astype(np.float64))
        )
        np.testing.assert_allclose(core_distances(e, ms), ref[:, ms], atol=1e-5)


def test_unsorted_csr_rows_give_the_same_core_distances():
    x = _unit(200)
    idx, dist = exact_knn_arrays(x, 10)
    rng = np.random.default_rng(1)
    perm = np.argsort(rng.random(idx.shape), axis=1)  # shuffle each row
    idx_s, dist_s = np.take_along_axis(idx, perm, 1), np.take_along_axis(dist, perm, 1)
    import scipy.sparse as sp

    n, k = idx.shape
    g = sp.csr_matrix((dist_s.ravel(), idx_s.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))
    np.testing.assert_array_equal(
        core_distances(from_sparse(g), 6), core_distances(from_knn_arrays(idx, dist), 6)
    )


def test_too_few_neighbours_gives_inf():
    idx = np.array([[1, 2], [0, -1], [0, -1]], dtype=np.int32)
    dist = np.array([[0.1, 0.2], [0.1, np.inf], [0.2, np.inf]], dtype=np.float32)
    core = core_distances(from_knn_arrays(idx, dist), 2)
    assert core[0] == np.float32(0.2) and np.isinf(core[1:]).all()


def test_mutual_reachability_matches_hdbscan_dense():
    x = _unit(150).astype(np.float64)
    full = np.sqrt(np.maximum(((x[:, None] - x[None]) ** 2).sum(-1), 0))
    ref = mutual_reachability(full, min_points=5)
    idx, dist = exact_knn_arrays(x.astype(np.float32), 20)
    e = from_knn_arrays(idx, dist)
    w = mutual_reachability_weights(e.indptr, e.indices, e.distances, core_distances(e, 5))
    rows = np.repeat(np.arange(len(x)), 20)
    np.testing.assert_allclose(w, ref[rows, e.indices], atol=1e-5)
