"""engine.cluster.gpu: cuML HDBSCAN on raw unit vectors (skipped without cuML and a CUDA GPU)."""

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from engine import hardware
from engine.cluster import cluster_graph
from engine.cluster.gpu import CUML_MODULE


@pytest.mark.gpu
def test_cuml_backend_clusters_unit_vectors():
    if not hardware.cuml_usable(CUML_MODULE):
        pytest.skip("cuML or a CUDA GPU is not available")
    x, y = make_blobs(3000, n_features=32, centers=5, cluster_std=0.5, random_state=0)
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    auto = cluster_graph(None, min_cluster_size=20, min_samples=5, backend="auto", vectors=x)
    assert auto.backend == "cuml"
    assert adjusted_rand_score(y, auto.labels) > 0.95
    assert ((auto.probabilities >= 0) & (auto.probabilities <= 1)).all()
    assert ((auto.outlier_scores >= 0) & (auto.outlier_scores <= 1)).all()
