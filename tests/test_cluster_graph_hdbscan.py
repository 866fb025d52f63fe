"""engine.cluster.graph_hdbscan: cluster_graph / GraphHDBSCAN end to end on real and synthetic graphs."""

import hdbscan
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from engine import hardware
from engine.cluster import ClusterResult, GraphHDBSCAN, cluster_graph
from engine.cluster.gpu import CUML_MODULE
from engine.errors import EngineError
from engine.graph import exact_knn
from tests.fixtures.data import exact_knn_arrays


@pytest.fixture(scope="module")
def agnews_reference(agnews_minilm):
    """hdbscan on the full vectors (= the full distance matrix), min_samples=5, min_cluster_size=10."""
    vectors, _ = agnews_minilm
    ref = hdbscan.HDBSCAN(min_cluster_size=10, min_samples=5, metric="euclidean").fit(
        vectors.astype(np.float64)
    )
    return vectors, ref.labels_


@pytest.mark.parametrize("k", [15, 30])
def test_agrees_with_full_matrix_hdbscan_on_real_embeddings(agnews_reference, k):
    vectors, ref = agnews_reference
    idx, dist = exact_knn_arrays(vectors, k)
    result = cluster_graph((idx, dist), min_cluster_size=10, min_samples=5, backend="cpu")
    assert ref.max() >= 3  # a real clustering, not all noise
    assert adjusted_rand_score(ref, result.labels) >= 0.99


def test_sparse_matrix_input_gives_the_same_labels(agnews_minilm):
    vectors, _ = agnews_minilm
    idx, dist = exact_knn_arrays(vectors, 15)
    n, k = idx.shape
    g = sp.csr_matrix((dist.ravel(), idx.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))
    a = cluster_graph((idx, dist), min_cluster_size=10, min_samples=5)
    b = cluster_graph(g, min_cluster_size=10, min_samples=5)
    assert adjusted_rand_score(a.labels, b.labels) == 1.0


def _blobs(n=900, centers=6, seed=0):
    x, y = make_blobs(
        n, n_features=5, centers=centers, cluster_std=0.3, center_box=(-50, 50), random_state=seed
    )
    return x.astype(np.float32), y


def _knn(x, k):
    """Exact kNN of arbitrary (not unit) points, for synthetic tests."""
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    idx = np.argsort(d2, axis=1, kind="stable")[:, :k].astype(np.int32)
    return idx, np.sqrt(np.take_along_axis(d2, idx, 1)).astype(np.float32)


def test_disconnected_graph_labels_each_blob():
    x, y = _blobs()
    idx, dist = _knn(x, 5)  # far-apart blobs with k=5: the graph has (at least) 6 pieces
    result = cluster_graph((idx, dist), min_cluster_size=20, min_samples=3)
    assert result.n_components >= 6
    assert result.n_clusters == 6
    assert adjusted_rand_score(y, result.labels) == 1.0


def test_components_smaller_than_min_cluster_size_are_noise():
    x, _ = _blobs(n=300, centers=2)
    idx, dist = _knn(x, 4)
    # a separate pair that only sees itself (rows padded with -1/+inf): a 2-point component
    pair_idx = np.array([[301, -1, -1, -1], [300, -1, -1, -1]], dtype=np.int32)
    pair_dist = np.array([[0.1, np.inf, np.inf, np.inf]] * 2, dtype=np.float32)
    result = cluster_graph(
        (np.vstack([idx, pair_idx]), np.vstack([dist, pair_dist])), min_cluster_size=10, min_samples=1
    )
    assert result.n_components >= 3
    assert (result.labels[-2:] == -1).all() and result.n_clusters == 2


def test_far_piece_of_a_disconnected_graph_keeps_the_clusters_of_the_rest():
    # Regression: an IVF_FLAT kNN graph (100k synthetic, 198 exact clusters) had a few small pieces
    # cut off (IVF never probed the cells between them); joined at lambda 0 the big piece won EOM:
    # 2 clusters, no noise, ARI 0.0007. Here: two uniform 1-d lattices 1.5 apart + one far lattice.
    x = np.concatenate([np.arange(30.0), 30.5 + np.arange(30.0), 1000 + np.arange(30.0)])[:, None]
    idx, dist = _knn(x.astype(np.float32), 4)
    result = cluster_graph((idx, dist), min_cluster_size=10, min_samples=1)
    assert result.n_components == 2
    assert result.n_clusters == 3
    assert adjusted_rand_score(np.repeat([0, 1, 2], 30), result.labels) == 1.0


def test_duplicates_survive_and_share_a_cluster():
    x, _ = _blobs(n=400, centers=3)
    x = np.vstack([x, x[:50]])  # 50 exact duplicates: zero distances in the graph
    idx, dist = _knn(x, 10)
    assert (dist == 0).sum() >= 100
    n, k = idx.shape
    g = sp.csr_matrix((dist.ravel(), idx.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))
    assert g.nnz == n * k  # explicit zeros are stored
    for graph in ((idx, dist), g):
        result = cluster_graph(graph, min_cluster_size=15, min_samples=5)
        assert result.n_clusters == 3
        np.testing.assert_array_equal(result.labels[:50], result.labels[400:])
        assert np.isfinite(result.probabilities).all() and np.isfinite(result.outlier_scores).all()


def test_probabilities_and_outlier_scores_in_unit_interval(agnews_minilm):
    vectors, _ = agnews_minilm
    idx, dist = exact_knn_arrays(vectors, 15)
    r = cluster_graph((idx, dist), min_cluster_size=10, min_samples=5)
    assert isinstance(r, ClusterResult) and r.backend == "cpu"
    assert (
        r.labels.dtype == np.int64
        and r.probabilities.dtype == np.float32
        and r.outlier_scores.dtype == np.float32
    )
    assert ((r.probabilities >= 0) & (r.probabilities <= 1)).all()
    assert ((r.outlier_scores >= 0) & (r.outlier_scores <= 1)).all()
    assert (r.probabilities[r.labels < 0] == 0).all() and (r.probabilities[r.labels >= 0] > 0).all()
    assert r.outlier_scores[r.labels < 0].mean() > r.outlier_scores[r.labels >= 0].mean()


def test_leaf_gives_more_finer_clusters_than_eom(agnews_minilm):
    vectors, _ = agnews_minilm
    idx, dist = exact_knn_arrays(vectors, 15)
    eom = cluster_graph((idx, dist), min_cluster_size=10, min_samples=3, cluster_selection_method="eom")
    leaf = cluster_graph((idx, dist), min_cluster_size=10, min_samples=3, cluster_selection_method="leaf")
    assert leaf.n_clusters > eom.n_clusters


def test_epsilon_merges_clusters_like_hdbscan():
    centers = [[0, 0, 0], [1.6, 0, 0], [20, 0, 0]]
    x, _ = make_blobs(600, n_features=3, centers=centers, cluster_std=0.4, random_state=1)
    idx, dist = _knn(x.astype(np.float32), 30)
    kw = {"min_cluster_size": 20, "min_samples": 5, "cluster_selection_method": "leaf"}
    plain = cluster_graph((idx, dist), **kw)
    merged = cluster_graph((idx, dist), cluster_selection_epsilon=3.0, **kw)
    ref = hdbscan.HDBSCAN(cluster_selection_epsilon=3.0, **kw).fit(x)
    assert plain.n_clusters > merged.n_clusters == ref.labels_.max() + 1
    assert adjusted_rand_score(ref.labels_, merged.labels) >= 0.99


@pytest.mark.parametrize(
    "params, name",
    [
        ({"min_cluster_size": 1}, "min_cluster_size"),
        ({"min_cluster_size": 5.5}, "min_cluster_size"),
        ({"min_samples": 0}, "min_samples"),
        ({"min_samples": True}, "min_samples"),
        ({"cluster_selection_method": "dbscan"}, "cluster_selection_method"),
        ({"cluster_selection_epsilon": -1.0}, "cluster_selection_epsilon"),
        ({"cluster_selection_epsilon": float("nan")}, "cluster_selection_epsilon"),
        ({"backend": "gpu"}, "backend"),
        ({"min_samples": 40}, "min_samples=40"),
    ],
)
def test_bad_parameters_raise_engine_error_naming_them(params, name):
    idx, dist = _knn(_blobs(n=100)[0], 10)
    with pytest.raises(EngineError, match=name):
        GraphHDBSCAN(**params).fit((idx, dist))


def test_estimator_api_and_auto_backend():
    x, y = _blobs(n=300, centers=3)
    idx, dist = _knn(x, 10)
    model = GraphHDBSCAN(min_cluster_size=15, min_samples=5)
    labels = model.fit_predict((idx, dist))
    assert adjusted_rand_score(y, labels) == 1.0
    assert (
        model.labels_ is labels
        and model.probabilities_.shape == (300,)
        and model.outlier_scores_.shape == (300,)
    )
    assert model.backend_ == "cpu"  # auto picks cuML only when given the raw vectors
    with pytest.raises(EngineError, match="no parameter"):
        model.set_params(alpha=2)


def test_cuml_backend_without_cuml_is_a_clear_error():
    if hardware.cuml_usable(CUML_MODULE):
        pytest.skip("cuML and a GPU are present; see test_cluster_gpu.py")
    idx, dist = _knn(_blobs(n=100)[0], 10)
    with pytest.raises(EngineError, match="cuML"):
        cluster_graph((idx, dist), backend="cuml", vectors=np.zeros((100, 5), np.float32))


def test_engine_knn_graph_and_its_csr_are_accepted(agnews_minilm):
    """The graph stage's own KnnGraph (and its CSR form) go straight in."""
    vectors, _ = agnews_minilm
    graph = exact_knn(vectors[:800], 15, device="cpu", progress=False)
    a = cluster_graph(graph, min_cluster_size=10, min_samples=5)
    b = cluster_graph(graph.to_csr(), min_cluster_size=10, min_samples=5)
    idx, dist = exact_knn_arrays(vectors[:800], 15)
    c = cluster_graph((idx, dist), min_cluster_size=10, min_samples=5)
    assert a.n_clusters >= 2
    assert adjusted_rand_score(a.labels, b.labels) == 1.0
    assert adjusted_rand_score(a.labels, c.labels) >= 0.99
