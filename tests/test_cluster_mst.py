"""engine.cluster.mst: Borůvka MST of the mutual-reachability graph, +inf bridges between pieces."""

import numpy as np
from scipy.sparse.csgraph import minimum_spanning_tree as scipy_mst

from engine.cluster.core import core_distances, mutual_reachability_weights
from engine.cluster.edges import from_knn_arrays
from engine.cluster.mst import minimum_spanning_tree, uf_find, uf_union
from tests.fixtures.data import exact_knn_arrays


def test_union_find():
    parent = np.arange(6, dtype=np.int32)
    rank = np.zeros(6, dtype=np.uint8)
    uf_union(parent, rank, uf_find(parent, 0), uf_find(parent, 1))
    uf_union(parent, rank, uf_find(parent, 2), uf_find(parent, 1))
    assert uf_find(parent, 0) == uf_find(parent, 2) != uf_find(parent, 3)


def test_total_weight_equals_scipy_mst():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    idx, dist = exact_knn_arrays(x, 15)
    e = from_knn_arrays(idx, dist)
    core = core_distances(e, 5)
    mst, n_comp = minimum_spanning_tree(e, core)
    assert mst.shape == (499, 3) and n_comp == 1
    # scipy on the same mutual-reachability edges (symmetric weights, so maximum() just fills the
    # missing direction); +1 keeps scipy from dropping zero weights
    import scipy.sparse as sp

    w = mutual_reachability_weights(e.indptr, e.indices, e.distances, core).astype(np.float64) + 1.0
    g = sp.coo_matrix((w, (np.repeat(np.arange(500), 15), e.indices)), shape=(500, 500)).tocsr()
    g = g.maximum(g.T)
    ref = scipy_mst(g).sum() - 499
    assert np.isclose(mst[:, 2].sum(), ref, rtol=1e-6)


def test_disconnected_graph_is_bridged_with_inf():
    # two triangles that never see each other
    idx = np.array([[1, 2], [0, 2], [0, 1], [4, 5], [3, 5], [3, 4]], dtype=np.int32)
    dist = np.full((6, 2), 0.1, dtype=np.float32)
    e = from_knn_arrays(idx, dist)
    mst, n_comp = minimum_spanning_tree(e, core_distances(e, 1))
    assert n_comp == 2 and mst.shape == (5, 3)
    assert np.isinf(mst[:, 2]).sum() == 1 and np.isfinite(mst[:, 2]).sum() == 4


def test_zero_distance_duplicates_stay_in_the_tree():
    idx = np.array([[1, 2], [0, 2], [0, 1]], dtype=np.int32)
    dist = np.array([[0.0, 0.5], [0.0, 0.5], [0.5, 0.5]], dtype=np.float32)
    e = from_knn_arrays(idx, dist)
    mst, _ = minimum_spanning_tree(e, core_distances(e, 1))
    assert sorted(mst[:, 2].tolist()) == [0.0, 0.5]
