"""A faithful re-implementation of the Milvus "HDBSCAN Clustering with Milvus" tutorial, on given vectors.

What the tutorial does (and this module repeats, stage by stage, minus the BGE-M3 embedding which
both sides of the benchmark skip because they get the same vectors):

1. insert: ORM ``Collection`` (auto-id int64, FLOAT_VECTOR, VARCHAR text), ``collection.insert({...})``
   ONE ROW PER CALL, then ``create_index(FLAT, L2)`` and ``flush()``.
2. search: ``collection.load()``; ``query_iterator(batch_size=10, expr="id > 0",
   output_fields=["id", "embedding"])``; for each batch of 10 stored vectors
   ``collection.search(data=batch, limit=50, param={"metric_type": "L2", "params": {"nprobe": 10}})``,
   hits kept in a dict of Python lists.
3. matrix: ``np.full((N, N), np.inf)`` float64 filled with the returned distances (Milvus L2, i.e.
   *squared* Euclidean: the tutorial feeds those to HDBSCAN as they are).
4. hdbscan: ``hdbscan.HDBSCAN(min_samples=3, min_cluster_size=3, metric="precomputed").fit(matrix)``.
5. umap: ``UMAP(n_components=2, random_state=42, n_neighbors=80, min_dist=0.1).fit_transform(vectors)``
   on the vectors the iterator returned (its own NNDescent neighbour search).

Milvus Lite 3.x's L2 brute force allocates an (nq, n, dim) float32 array per search; with the
tutorial's batches of 10 that is 10*n*dim*4 bytes (0.8 GB at n=20k, dim=1024).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

TUTORIAL_SEARCH_LIMIT = 50
TUTORIAL_BATCH = 10
TUTORIAL_UMAP_NEIGHBORS = 80


def tutorial_insert(
    uri: str, vectors: np.ndarray, texts: Sequence[str], collection_name: str = "news_data"
) -> Any:
    """Create the tutorial's collection and insert one row per call; FLAT/L2 index; flush."""
    from pymilvus import Collection, CollectionSchema, DataType, FieldSchema, connections, utility

    warnings.filterwarnings("ignore", message=".*ORM-style PyMilvus API.*")
    connections.connect(uri=uri)
    if utility.has_collection(collection_name):
        utility.drop_collection(collection_name)
    fields = [
        FieldSchema(name="id", dtype=DataType.INT64, is_primary=True, auto_id=True),
        FieldSchema(name="embedding", dtype=DataType.FLOAT_VECTOR, dim=int(vectors.shape[1])),
        FieldSchema(name="text", dtype=DataType.VARCHAR, max_length=65535),
    ]
    schema = CollectionSchema(fields=fields, description="Embedding collection")
    collection = Collection(name=collection_name, schema=schema)
    for doc, embedding in zip(texts, vectors, strict=True):
        collection.insert({"text": doc[:16000], "embedding": embedding})
    index_params = {"index_type": "FLAT", "metric_type": "L2", "params": {}}
    collection.create_index(field_name="embedding", index_params=index_params)
    collection.flush()
    return collection


def tutorial_search(
    collection: Any,
) -> tuple[list[int], dict[int, list[tuple[int, float]]], list[list[float]]]:
    """query_iterator in batches of 10, each batch searched for its 50 nearest stored vectors (L2)."""
    collection.load()
    iterator = collection.query_iterator(
        batch_size=TUTORIAL_BATCH, expr="id > 0", output_fields=["id", "embedding"]
    )
    search_params = {"metric_type": "L2", "params": {"nprobe": 10}}
    ids: list[int] = []
    dist: dict[int, list[tuple[int, float]]] = {}
    embeddings: list[list[float]] = []
    while True:
        batch = iterator.next()
        if len(batch) == 0:  # the tutorial checks this after searching; an empty search is a no-op
            iterator.close()
            break
        batch_ids = [data["id"] for data in batch]
        ids.extend(batch_ids)
        query_vectors = [data["embedding"] for data in batch]
        embeddings.extend(query_vectors)
        results = collection.search(
            data=query_vectors,
            limit=TUTORIAL_SEARCH_LIMIT,
            anns_field="embedding",
            param=search_params,
            output_fields=["id"],
        )
        for i, batch_id in enumerate(batch_ids):
            dist[batch_id] = []
            for result in results[i]:
                dist[batch_id].append((result.id, result.distance))
    return ids, dist, embeddings


def tutorial_matrix(ids: list[int], dist: dict[int, list[tuple[int, float]]]) -> np.ndarray:
    """The dense N x N float64 matrix, inf everywhere but the returned (squared L2) distances."""
    ids2index: dict[int, int] = {}
    for id_ in dist:
        ids2index[id_] = len(ids2index)
    dist_metric = np.full((len(ids), len(ids)), np.inf, dtype=np.float64)
    for id_ in dist:
        for result in dist[id_]:
            dist_metric[ids2index[id_]][ids2index[result[0]]] = result[1]
    return dist_metric


def tutorial_hdbscan(dist_metric: np.ndarray) -> np.ndarray:
    import hdbscan

    h = hdbscan.HDBSCAN(min_samples=3, min_cluster_size=3, metric="precomputed")
    hdb = h.fit(dist_metric)
    return np.asarray(hdb.labels_)


def tutorial_umap(embeddings: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    from umap import UMAP

    umap = UMAP(n_components=2, random_state=42, n_neighbors=TUTORIAL_UMAP_NEIGHBORS, min_dist=0.1)
    return umap.fit_transform(np.array(embeddings))


def run_tutorial(
    uri: str,
    vectors: np.ndarray,
    texts: Sequence[str],
    on_stage: Callable[[str, float], None] | None = None,
) -> dict[str, Any]:
    """Run every stage, timing each; ``on_stage(name, seconds)`` is called as each one finishes
    (so a run killed by a time or memory cap still reports the stages it completed)."""
    times: dict[str, float] = {}

    def done(name: str, t0: float) -> None:
        times[name] = time.perf_counter() - t0
        if on_stage is not None:
            on_stage(name, times[name])

    t0 = time.perf_counter()
    collection = tutorial_insert(uri, vectors, texts)
    done("insert", t0)
    t0 = time.perf_counter()
    ids, dist, embeddings = tutorial_search(collection)
    done("search", t0)
    t0 = time.perf_counter()
    matrix = tutorial_matrix(ids, dist)
    del dist
    done("graph", t0)
    t0 = time.perf_counter()
    labels = tutorial_hdbscan(matrix)
    del matrix
    done("cluster", t0)
    t0 = time.perf_counter()
    coords = tutorial_umap(embeddings)
    done("umap", t0)
    from pymilvus import connections

    connections.disconnect("default")
    return {
        "times": times,
        "labels": labels,
        "coords": coords,
        "ids": np.asarray(ids, dtype=np.int64),
        "n_clusters": int(labels.max() + 1) if labels.size else 0,
        "noise_share": float((labels < 0).mean()) if labels.size else 0.0,
    }
