"""The default cluster space: Leiden communities of the kNN graph (engine.cluster.communities)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from engine.cluster.communities import (
    cluster_communities,
    igraph_from_edges,
    medoid,
    small_to_noise,
    undirected_edges,
)
from engine.cluster.consensus import mapped_labels, run_agreement, vote
from engine.cluster.space import cluster_community_space
from engine.graph import exact_knn


def _blobs(groups: int, per_group: int, sub: int = 1, dim: int = 16, seed: int = 0):
    """Unit vectors in ``groups`` well-separated directions, each split into ``sub`` closer sub-groups."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(groups, dim)) * 4
    offsets = rng.normal(size=(groups, sub, dim)) * 1.2
    x, top, fine = [], [], []
    for g in range(groups):
        for s in range(sub):
            x.append(centres[g] + offsets[g, s] + rng.normal(scale=0.25, size=(per_group // sub, dim)))
            top += [g] * (per_group // sub)
            fine += [g * sub + s] * (per_group // sub)
    x = np.vstack(x).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, np.array(top), np.array(fine)


def test_undirected_edges_keep_each_pair_once_and_skip_missing_and_self():
    idx = np.array([[1, 2], [0, -1], [0, 2], [3, 3]])
    rows, cols = undirected_edges(idx)
    assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == [(0, 1), (0, 2)]


def test_igraph_keeps_isolated_trailing_nodes():
    g = igraph_from_edges(5, np.array([0]), np.array([1]))
    assert (g.vcount(), g.ecount()) == (5, 1)


def test_igraph_gets_exactly_the_edges_given_whatever_the_digits():
    rng = np.random.default_rng(3)
    rows = rng.integers(0, 12_345, 5_000)
    cols = rng.integers(0, 12_345, 5_000)
    g = igraph_from_edges(12_345, rows, cols)
    assert g.vcount() == 12_345
    assert g.get_edgelist() == [tuple(sorted(e)) for e in zip(rows.tolist(), cols.tolist(), strict=True)]


def test_planted_communities_are_found_and_layers_are_nested():
    x, top, fine = _blobs(groups=4, per_group=120, sub=3)
    layers = cluster_communities(exact_knn(x, 15, progress=False), min_cluster_size=5, seed=42, runs=4)
    counts = [layers.n_clusters(i) for i in range(layers.n_layers)]
    assert counts == sorted(counts, reverse=True)  # finest first
    primary = layers.labels[layers.primary]
    assert adjusted_rand_score(top, primary) > 0.95 or adjusted_rand_score(fine, primary) > 0.95
    for i in range(layers.n_layers - 1):  # each cluster lies inside exactly one cluster of the next layer
        lo, hi = layers.labels[i], layers.labels[i + 1]
        for c in range(layers.n_clusters(i)):
            parents = np.unique(hi[(lo == c) & (hi >= 0)])
            assert parents.size <= 1
            assert parents.size == 0 or layers.parents[i][c] == parents[0]
    sizes = np.bincount(primary[primary >= 0])
    assert list(sizes) == sorted(sizes, reverse=True)  # ids ordered by size
    assert np.all((layers.strengths[layers.primary] >= 0) & (layers.strengths[layers.primary] <= 1))


def _planted_graph(pairs: int = 3, size: int = 40, k: int = 16, seed: int = 0):
    """A kNN-like graph of 2 * ``pairs`` groups: 12 neighbours in the own group, 3 in the paired group,
    1 anywhere (so the graph is connected); returns (graph, pair label, group label)."""
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(2 * pairs), size)
    n = group.size
    members = [np.flatnonzero(group == g) for g in range(2 * pairs)]
    idx = np.empty((n, k), dtype=np.int64)
    for i in range(n):
        own = members[group[i]][members[group[i]] != i]
        twin = members[group[i] ^ 1]
        idx[i] = np.concatenate(
            [rng.choice(own, 12, replace=False), rng.choice(twin, 3, replace=False), rng.choice(n, 1)]
        )
    return SimpleNamespace(indices=idx), group // 2, group


def test_same_seed_same_labels_and_n_clusters_is_met():
    graph, pair, group = _planted_graph()
    a = cluster_communities(graph, seed=7, runs=3)
    b = cluster_communities(graph, seed=7, runs=3)
    assert all(np.array_equal(p, q) for p, q in zip(a.labels, b.labels, strict=True))
    for k, truth in ((3, pair), (6, group)):
        got = cluster_communities(graph, seed=7, runs=3, n_clusters=k)
        assert got.n_clusters(got.primary) == k
        assert adjusted_rand_score(truth, got.labels[got.primary]) > 0.9
        assert f"--n-clusters {k}" in got.rule


def test_small_communities_become_noise():
    lab = small_to_noise(np.array([0, 0, 0, 1, 2, 2, 2, 2]), min_cluster_size=3)
    assert lab.tolist() == [1, 1, 1, -1, 0, 0, 0, 0]


def test_medoid_is_the_partition_the_others_agree_with():
    a = np.array([0, 0, 1, 1, 2, 2])
    odd = np.array([0, 1, 0, 1, 0, 1])
    assert medoid([odd, a, a.copy(), a + 3]) == 1


def test_a_run_is_read_in_the_target_labels_whatever_its_own_numbering():
    target = np.array([0, 0, 0, 1, 1, 1, -1])
    run = np.array([7, 7, 3, 3, 3, 3, -1])  # cluster 7 mostly target 0, cluster 3 mostly target 1
    assert mapped_labels(target, run).tolist() == [0, 0, 1, 1, 1, 1, -1]
    assert mapped_labels(target, np.full(7, -1)).tolist() == [-1] * 7  # run noise stays noise


def test_vote_moves_a_block_to_where_most_runs_put_it():
    # documents 4-5 are a block: the base (itself one of the runs) and one other run put it with 6-9,
    # three runs with 0-3
    base = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    with_first = np.array([5, 5, 5, 5, 5, 5, 2, 2, 2, 2])
    with_second = np.array([1, 1, 1, 1, 2, 2, 2, 2, 2, 2])
    runs = [base, with_first, with_first + 10, with_first + 20, with_second]
    assert vote(runs, base).tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
    # share of runs agreeing with the voted labels: 3 of 5 on the block, all on the rest
    agree = run_agreement(vote(runs, base), runs)
    assert np.allclose(agree, [1, 1, 1, 1, 0.6, 0.6, 1, 1, 1, 1])


def test_vote_keeps_the_base_label_on_a_tie_and_agrees_with_unanimous_runs():
    base = np.array([0, 0, 1, 1, 1, 1])
    other = np.array([0, 0, 0, 1, 1, 1])
    assert vote([base, other], base).tolist() == base.tolist()  # 1 against 1: the base's
    assert vote([other, other, other + 4], base).tolist() == [0, 0, 0, 1, 1, 1]
    assert vote([], base).tolist() == base.tolist()


def test_community_space_result_carries_stability_and_assign_keeps_size_order():
    x, _, _ = _blobs(groups=3, per_group=80)
    graph = exact_knn(x, 10, progress=False)
    res = cluster_community_space(graph, min_cluster_size=5, seed=1, consensus_runs=3, assign=True)
    assert res.embedding is None  # the map stage makes its own layout
    assert res.stability is not None and res.stability.shape == (len(x),)
    assert res.n_clusters == 3 and (res.labels >= 0).all()
    sizes = np.bincount(res.labels)
    assert list(sizes) == sorted(sizes, reverse=True)


@pytest.mark.parametrize("bad", [{"runs": 0}, {"resolution": 0.0}])
def test_bad_parameters_are_named(bad):
    x, _, _ = _blobs(groups=2, per_group=20)
    with pytest.raises(Exception, match="consensus_runs|resolution"):
        cluster_communities(exact_knn(x, 5, progress=False), **bad)


def test_map_start_places_topics_apart_and_documents_near_their_topic():
    from engine.project import community_start

    graph, pair, group = _planted_graph()
    start = community_start(graph, group, seed=0)
    assert start.shape == (group.size, 2) and np.isfinite(start).all()
    centres = np.array([start[group == g].mean(axis=0) for g in range(group.max() + 1)])
    spread = max(
        np.linalg.norm(start[group == g] - centres[g], axis=1).mean() for g in range(group.max() + 1)
    )
    gaps = [np.linalg.norm(centres[a] - centres[b]) for a in range(len(centres)) for b in range(a)]
    assert (
        min(gaps) > spread
    )  # every topic's documents sit closer to their own place than topics to each other
    noisy = group.copy()
    noisy[:3] = -1  # noise documents start among their neighbours' topics
    assert np.isfinite(community_start(graph, noisy, seed=0)).all()
