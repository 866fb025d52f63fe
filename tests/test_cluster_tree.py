"""engine.cluster.tree: from hdbscan's own MST, labels/probabilities/GLOSH equal the hdbscan library's."""

import hdbscan
import numpy as np
import pytest
from sklearn.datasets import make_blobs

from engine.cluster.tree import finite_bridges, glosh_scores, hierarchy_from_mst


@pytest.fixture(scope="module")
def blobs_with_noise():
    x, _ = make_blobs(
        600, n_features=4, centers=6, cluster_std=[0.4, 0.8, 1.2, 0.5, 1.0, 2.0], random_state=3
    )
    noise = np.random.default_rng(0).uniform(x.min(0), x.max(0), size=(60, 4))
    return np.vstack([x, noise])


@pytest.mark.parametrize(
    "method, epsilon, mcs",
    [
        ("eom", 0.0, 10),
        ("leaf", 0.0, 10),
        ("eom", 0.0, 25),
        ("leaf", 0.0, 5),
        ("eom", 1.5, 10),
        ("leaf", 1.0, 10),
    ],
)
def test_same_as_hdbscan_on_the_same_mst(blobs_with_noise, method, epsilon, mcs):
    ref = hdbscan.HDBSCAN(
        min_cluster_size=mcs,
        min_samples=5,
        cluster_selection_method=method,
        cluster_selection_epsilon=epsilon,
        gen_min_span_tree=True,
        algorithm="prims_kdtree",
    ).fit(blobs_with_noise)
    mst = ref.minimum_spanning_tree_._mst.copy()
    mine = hierarchy_from_mst(mst, mcs, method, epsilon)
    assert ref.labels_.max() >= 1
    # same partition and same noise (cluster numbering may differ)
    np.testing.assert_array_equal(mine.labels < 0, ref.labels_ < 0)
    pairs = set(zip(mine.labels.tolist(), ref.labels_.tolist(), strict=True))
    assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})
    np.testing.assert_allclose(mine.probabilities, ref.probabilities_, atol=1e-5)
    np.testing.assert_allclose(mine.outlier_scores, ref.outlier_scores_, atol=1e-5)


def test_glosh_ignores_infinite_lambdas():
    # cluster 3 (root) holds points 0..2; point 0 fell out at lambda inf (a duplicate), 1 and 2 at 2 and 4
    parent = np.array([3, 3, 3], dtype=np.int64)
    child = np.array([0, 1, 2], dtype=np.int64)
    lam = np.array([np.inf, 2.0, 4.0])
    scores = glosh_scores(parent, child, lam, 3)
    np.testing.assert_allclose(scores, [0.0, 0.5, 0.0])


def test_finite_bridges_join_pieces_just_above_the_largest_finite_weight_and_epsilon():
    mst = np.array([[0, 1, 0.5], [1, 2, 1.5], [3, 4, 0.25], [0, 3, np.inf], [3, 5, np.inf]])
    out = finite_bridges(mst)
    np.testing.assert_array_equal(out[:3, 2], mst[:3, 2])
    assert (out[3:, 2] > 1.5).all() and np.allclose(out[3:, 2], 1.5, rtol=0.01)
    assert (finite_bridges(mst, epsilon=3.0)[3:, 2] > 3.0).all()  # epsilon never merges across
    assert np.isinf(mst[3:, 2]).all()  # the input is not modified
    connected = mst[:3]
    assert finite_bridges(connected) is connected
    duplicates_only = np.array([[0, 1, 0.0], [1, 2, np.inf]])
    assert np.isinf(finite_bridges(duplicates_only)[1, 2])  # no positive weight: bridges kept


def test_a_separate_piece_does_not_swallow_the_clusters_of_the_rest():
    # Regression (IVF_FLAT graph, 100k points, 2-36 pieces -> 2-36 clusters, no noise, ARI ~0):
    # pieces A|B (uniform lattices 1.5 apart, one MST component) and a far piece C (+inf bridge).
    # Joined at lambda 0, piece A+B had stability 60 * (1/1.5) = 40 > A's + B's 2 * 30 * (1 - 1/1.5)
    # = 20, so EOM returned {A+B, C}; without C the root is not selectable and A, B are clusters.
    chain = [[i, i + 1, 1.0] for i in range(29)] + [[30 + i, 31 + i, 1.0] for i in range(29)]
    with_c = chain + [[29, 30, 1.5]] + [[60 + i, 61 + i, 1.0] for i in range(29)] + [[0, 60, np.inf]]
    alone = hierarchy_from_mst(np.array(chain + [[29, 30, 1.5]]), 10)
    h = hierarchy_from_mst(np.array(with_c), 10)
    assert alone.labels.max() + 1 == 2
    assert h.labels.max() + 1 == 3
    assert len(set(zip(h.labels[:60].tolist(), alone.labels.tolist(), strict=True))) == 2
    assert len(set(h.labels[60:].tolist())) == 1 and h.labels[60] not in h.labels[:60]


def test_single_point_and_empty():
    h = hierarchy_from_mst(np.zeros((0, 3)), 5)
    assert h.labels.tolist() == [-1]
