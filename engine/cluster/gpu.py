"""cuML HDBSCAN on the raw unit vectors (GPU). Import-guarded: nothing here loads cuML at import time.

cuML takes no precomputed graph; it builds its own kNN on the vectors. Unit vectors under the
Euclidean metric order neighbours like cosine, and their distances are the engine's distances.
"""

from __future__ import annotations

import numpy as np

from engine import hardware
from engine.errors import EngineError

#: The part of cuML this backend needs (engine.hardware.cuml_usable imports it to check).
CUML_MODULE = "cuml.cluster"


def cluster_cuml(
    vectors: np.ndarray,
    min_cluster_size: int,
    min_samples: int,
    cluster_selection_method: str,
    cluster_selection_epsilon: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """labels int64, probabilities float32, outlier scores float32 from cuML HDBSCAN."""
    if not hardware.cuml_usable(CUML_MODULE):
        raise EngineError(
            "backend='cuml' needs RAPIDS cuML and a CUDA GPU (pip install cuml-cu12); use backend='cpu'"
        )
    if vectors is None:
        raise EngineError("backend='cuml' needs vectors= (cuML HDBSCAN clusters the raw vectors)")
    from cuml.cluster import HDBSCAN

    model = HDBSCAN(
        min_cluster_size=int(min_cluster_size),
        # cuML counts the point itself in min_samples (like scikit-learn): +1 matches our convention
        min_samples=int(min_samples) + 1,
        cluster_selection_method=cluster_selection_method,
        cluster_selection_epsilon=float(cluster_selection_epsilon),
        metric="euclidean",
        prediction_data=True,
    )
    model.fit(np.ascontiguousarray(vectors, dtype=np.float32))

    def _host(a: object) -> np.ndarray:
        return np.asarray(a.get() if hasattr(a, "get") else a)

    labels = _host(model.labels_).astype(np.int64)
    probs = _host(model.probabilities_).astype(np.float32)
    scores = np.nan_to_num(_host(model.outlier_scores_).astype(np.float32), nan=0.0)
    return labels, probs, np.clip(scores, 0.0, 1.0)
