"""engine.cluster.tree: from hdbscan's own MST, labels/probabilities/GLOSH equal the hdbscan library's."""

import hdbscan
import numpy as np
import pytest
from sklearn.datasets import make_blobs

from engine.cluster.tree import glosh_scores, hierarchy_from_mst


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


def test_single_point_and_empty():
    h = hierarchy_from_mst(np.zeros((0, 3)), 5)
    assert h.labels.tolist() == [-1]
