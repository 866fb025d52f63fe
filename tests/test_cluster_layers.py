"""Cluster space "embedding": graph -> EVoC distance scale -> node embedding -> layers -> noise assignment."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from engine.cluster.embedding import evoc_knn_arrays
from engine.cluster.layers import choose_primary, parent_links, relabel_by_size
from engine.cluster.noise import assign_noise
from engine.cluster.space import cluster_embedding_space
from engine.graph import KnnGraph, exact_knn


def test_evoc_distance_scale_self_first_and_missing():
    # unit vectors at cosine 0.8 and 0.5 from point 0: Euclidean d = sqrt(2 - 2 cos)
    d08, d05 = np.sqrt(2 - 2 * 0.8), np.sqrt(2 - 2 * 0.5)
    idx = np.array([[1, 2, -1], [0, 2, 3], [0, 1, 3], [2, 1, 0]], dtype=np.int32)
    dist = np.array([[d08, d05, np.inf], [d08, 0.3, 0.4], [d05, 0.3, 0.5], [0.5, 0.4, 0.6]], dtype=np.float32)
    out_idx, out_dist = evoc_knn_arrays(idx, dist, n_neighbors=4)
    assert out_idx.shape == (4, 4)
    assert (out_idx[:, 0] == np.arange(4)).all() and (out_dist[:, 0] == 0).all()
    assert out_dist[0, 1] == pytest.approx(-np.log2(0.8), rel=1e-5)
    assert out_dist[0, 2] == pytest.approx(1.0, rel=1e-5)  # -log2(0.5)
    assert out_idx[0, 3] == -1 and np.isfinite(out_dist).all()
    # n_neighbors counts self: 2 -> one real neighbour kept
    assert evoc_knn_arrays(idx, dist, n_neighbors=2)[0].shape == (4, 2)


def test_relabel_by_size_and_parent_links():
    lab = np.array([5, 5, 2, 2, 2, -1, 7])
    assert relabel_by_size(lab).tolist() == [1, 1, 0, 0, 0, -1, 2]
    fine = np.array([0, 0, 1, 1, 2, 2, -1, 3])
    coarse = np.array([0, 0, 0, 0, 1, -1, 1, -1])
    assert parent_links(fine, coarse).tolist() == [0, 0, 1, -1]


def test_choose_primary_rule():
    layers = [np.array([0, 1, 2, -1, -1, -1]), np.array([0, 0, 1, 1, -1, 0]), np.array([0, 0, 0, 0, 0, 0])]
    # layer 0 has 50 % noise: not eligible; of the others the higher persistence wins
    assert choose_primary(layers, [0.0, 5.0, 2.0])[0] == 1
    assert choose_primary(layers, [0.0, 1.0, 2.0])[0] == 2
    assert choose_primary(layers, [9.0, 1.0, 2.0], n_clusters=3)[0] == 0
    all_noisy = [np.array([0, -1, -1]), np.array([0, 0, -1])]
    assert choose_primary(all_noisy, [1.0, 0.0])[0] == 1  # least noise when none qualifies


def test_assign_noise_follows_neighbours_and_reaches_islands():
    labels = np.array([0, 0, 1, 1, -1, -1, -1])
    # 4 -> near 0,1 (cluster 0); 5 -> only neighbour is 4 (reached in round 2); 6 -> near cluster 1
    idx = np.array([[1, 4], [0, 4], [3, 6], [2, 6], [0, 1], [4, -1], [2, 3]], dtype=np.int32)
    dist = np.full(idx.shape, 0.2, dtype=np.float32)
    new, assigned = assign_noise(labels, idx, dist)
    assert new.tolist() == [0, 0, 1, 1, 0, 0, 1]
    assert assigned.tolist() == [False] * 4 + [True] * 3
    # an isolated point goes to the nearest centre in the given space
    idx2 = np.array([[1], [0], [3], [2], [4]], dtype=np.int32)
    lab2 = np.array([0, 0, 1, 1, -1])
    space = np.array([[0.0], [0.1], [5.0], [5.1], [4.0]])
    new2, _ = assign_noise(lab2, idx2, np.zeros((5, 1), np.float32), space=space)
    assert new2[4] == 1


@pytest.fixture(scope="module")
def ag_graph(agnews_minilm):
    vectors, classes = agnews_minilm
    return vectors, classes, exact_knn(vectors, 30)


def test_embedding_space_layers_on_real_news(ag_graph):
    vectors, classes, graph = ag_graph
    result = cluster_embedding_space(graph, vectors=vectors, seed=7)
    layers = result.layers
    assert layers.n_layers >= 2
    counts = [layers.n_clusters(i) for i in range(layers.n_layers)]
    assert counts == sorted(counts, reverse=True)  # finest first
    for lab in layers.labels:  # ids by size, 0 = largest
        sizes = np.bincount(lab[lab >= 0])
        assert (np.diff(sizes) <= 0).all()
    for i in range(layers.n_layers - 1):  # each fine cluster's parent holds most of its members
        fine, coarse = layers.labels[i], layers.labels[i + 1]
        for c, p in enumerate(layers.parents[i]):
            if p >= 0:
                inside = coarse[fine == c]
                assert (inside == p).sum() >= (inside >= 0).sum() / 2
    # the primary layer: 4 news classes, NMI well above the raw-graph HDBSCAN* (0.21 on full AG), and
    # a noise share far below its ~70 %
    assert result.noise_fraction <= 0.3
    assert normalized_mutual_info_score(classes, result.labels) > 0.35
    assert result.embedding.shape == (len(vectors), 4)


def test_same_seed_same_labels_and_n_clusters(ag_graph):
    vectors, _, graph = ag_graph
    a = cluster_embedding_space(graph, vectors=vectors, seed=3)
    b = cluster_embedding_space(graph, vectors=vectors, seed=3)
    assert np.array_equal(a.labels, b.labels)
    assert all(np.array_equal(x, y) for x, y in zip(a.layers.labels, b.layers.labels, strict=True))
    asked = cluster_embedding_space(graph, vectors=vectors, seed=3, n_clusters=6)
    assert abs(asked.n_clusters - 6) <= 2
    assigned = cluster_embedding_space(graph, vectors=vectors, seed=3, assign=True)
    assert assigned.noise_fraction == 0.0
    assert assigned.noise_before == pytest.approx(a.noise_fraction)
    assert np.array_equal(assigned.assigned, a.labels < 0)
    kept = a.labels >= 0
    # documents that had a cluster keep their cluster-mates; ids are renumbered by size (0 = largest)
    pairs = np.unique(np.stack([a.labels[kept], assigned.labels[kept]]), axis=1)
    assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]
    sizes = np.bincount(assigned.labels)
    assert np.all(np.diff(sizes) <= 0)


def test_consensus_gives_a_stability_per_document_and_one_run_has_none(ag_graph):
    vectors, _, graph = ag_graph
    many = cluster_embedding_space(graph, vectors=vectors, seed=3, consensus_runs=4)
    assert many.stability is not None and many.stability.shape == many.labels.shape
    assert many.stability.min() >= 0.0 and many.stability.max() <= 1.0
    assert "consensus of 4 runs" in many.layers.rule
    # consensus layers are nested: every finer cluster lies inside one coarser cluster
    for fine, coarse in zip(many.layers.labels[:-1], many.layers.labels[1:], strict=True):
        m = fine >= 0
        pairs = np.unique(np.stack([fine[m], coarse[m]]), axis=1)
        assert len(np.unique(pairs[0])) == pairs.shape[1]
    one = cluster_embedding_space(graph, vectors=vectors, seed=3, consensus_runs=1)
    assert one.stability is None and "consensus" not in one.layers.rule


def test_embedding_space_tiny_and_disconnected_graphs():
    rng = np.random.default_rng(0)
    # two far-apart blobs, k small: the graph has two components
    x = np.concatenate([rng.normal(size=(40, 8)) * 0.05 + 1, rng.normal(size=(40, 8)) * 0.05 - 1])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    graph = exact_knn(x.astype(np.float32), 5)
    result = cluster_embedding_space(graph, vectors=x, seed=0)
    assert result.labels.shape == (80,)
    tiny = KnnGraph(np.array([[1], [0]]), np.array([[0.1], [0.1]], np.float32))
    assert cluster_embedding_space(tiny, seed=0).labels.shape == (2,)


@pytest.mark.parametrize("n", [2, 3])
def test_two_or_three_documents_are_all_noise_not_a_traceback(n):
    # issue 20 defect 6: a 4-d node embedding of a 2-node graph raised inside EVoC's PCA start
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    result = cluster_embedding_space(exact_knn(x, n - 1), vectors=x, seed=42)
    assert result.labels.tolist() == [-1] * n
    assert "too few documents" in result.layers.rule


def test_one_document_is_one_clear_error():
    from engine.errors import EngineError
    from engine.stages import check_k

    with pytest.raises(EngineError, match="the corpus has 1 document .*at least 2"):
        check_k(30, 1)
