"""engine.cluster.edges: graph inputs become flat edge arrays without losing zero distances."""

import numpy as np
import pytest
import scipy.sparse as sp

from engine.cluster.edges import as_edge_arrays, from_knn_arrays, from_sparse
from engine.errors import EngineError


def test_knn_arrays_are_viewed_and_missing_become_inf():
    idx = np.array([[1, -1], [0, 2], [1, 0]], dtype=np.int32)
    dist = np.array([[0.0, 7.0], [0.0, 0.5], [0.5, 0.9]], dtype=np.float32)
    e = from_knn_arrays(idx, dist)
    assert e.n == 3 and e.max_degree == 2
    assert e.indptr.tolist() == [0, 2, 4, 6]
    assert np.isinf(e.distances[1])  # the -1 entry reads as +inf whatever was stored
    assert e.distances[0] == 0.0  # duplicate pair kept
    assert e.rows_sorted


def test_sparse_keeps_explicit_zeros():
    # scipy drops explicit zeros in G.maximum(G.T); we read the stored entries as they are
    g = sp.csr_matrix((np.array([0.0, 0.0, 1.0]), np.array([1, 0, 0]), np.array([0, 1, 2, 3])), shape=(3, 3))
    assert g.nnz == 3
    e = from_sparse(g)
    assert e.indices.tolist() == [1, 0, 0]
    assert e.distances.tolist() == [0.0, 0.0, 1.0]
    assert not e.rows_sorted


class _Graph:
    def __init__(self, indices, distances):
        self.indices = indices
        self.distances = distances


def test_duck_typed_knn_graph_and_tuple_agree():
    idx = np.array([[1], [0]], dtype=np.int32)
    dist = np.array([[0.3], [0.3]], dtype=np.float32)
    a = as_edge_arrays(_Graph(idx, dist))
    b = as_edge_arrays((idx, dist))
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.distances, b.distances)


@pytest.mark.parametrize(
    "graph, message",
    [
        ((np.zeros((3, 2), np.int32), np.zeros((3, 3), np.float32)), "must be two"),
        ((np.full((2, 1), 5, np.int32), np.zeros((2, 1), np.float32)), "positions"),
        ((np.zeros((2, 1), np.int32), np.full((2, 1), np.nan, np.float32)), "NaN"),
        ((np.zeros((2, 1), np.int32), np.full((2, 1), -1.0, np.float32)), "negative"),
        (sp.csr_matrix((2, 3)), "square"),
        ("not a graph", "expected a KnnGraph"),
    ],
)
def test_bad_graphs_raise_engine_error(graph, message):
    with pytest.raises(EngineError, match=message):
        as_edge_arrays(graph)
