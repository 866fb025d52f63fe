"""kNN graph stage: a CSR graph of true Euclidean distances between corpus positions.

Sources: Milvus (``build_knn_graph``, approximate or FLAT), blocked brute force (``exact_knn``, the
ground truth and ``--graph-source exact``) and the partitioned join of the stored vectors
(``engine.graph.partition``, ``--graph-source partition``). All return a :class:`KnnGraph`.
"""

from engine.graph.distances import to_euclidean
from engine.graph.exact import exact_knn
from engine.graph.knn import KnnGraph
from engine.graph.milvus_knn import build_knn_graph, suggest_search_shape
from engine.graph.tune import TuneResult, tune_search_params

__all__ = [
    "KnnGraph",
    "TuneResult",
    "build_knn_graph",
    "exact_knn",
    "suggest_search_shape",
    "to_euclidean",
    "tune_search_params",
]
