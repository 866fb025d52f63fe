"""The stages of a run: each a function with explicit inputs and outputs that owns its files.

corpus -> embed -> graph -> cluster -> layout -> report -> labels. Each function takes the arrays it
needs, its own settings section (:mod:`engine.config`) and the run directory's :class:`RunPaths`;
it writes its own files there and returns its result with a one-line ``detail`` for the run summary.
Each decides its own policy (the graph stage whether to tune the search, the cluster stage which
space, the layout stage which method) and reads no other stage's settings. A ``load_*`` function
next to each stage reads back what it saved, so any stage can re-run on saved outputs.
:class:`engine.pipeline.Pipeline` only sequences these and caches results; benchmarks time the
same functions.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from engine.errors import EngineError
from engine.rundir import RunPaths

log = logging.getLogger("engine")

#: Scalar field on every stored row: 0 for the run's corpus, 1 for documents added by `engine assign --store`.
ASSIGNED_FIELD = "assigned"


# ----------------------------------------------------------------------------------------- corpus
@dataclass
class CorpusData:
    """The documents (``id``, ``text``, source columns) and what reading them found."""

    frame: pd.DataFrame
    stats: dict[str, Any] = field(default_factory=dict)

    def detail(self) -> str:
        s = self.stats
        return (
            f"{s.get('rows_read')} rows read; {s.get('empty_texts')} empty texts "
            f"({'dropped' if s.get('empty_policy') == 'drop' else 'error'}); "
            f"{s.get('duplicate_texts')} duplicate texts ({s.get('duplicate_policy')})"
        )


def read_corpus(settings: Any, paths: RunPaths) -> CorpusData:
    """Read the corpus file, build texts and ids; writes ``corpus.parquet`` and ``corpus_stats.json``."""
    from engine.corpus import load_corpus, parquet_safe

    corpus = load_corpus(
        settings.corpus,
        text_template=settings.text_template,
        text_column=settings.text_column,
        id_column=settings.id_column,
        empty=settings.empty,
        duplicates=settings.duplicates,
        fmt=settings.format,
        encoding=settings.encoding,
        column_names=settings.columns,
        limit=settings.limit,
    )
    paths.root.mkdir(parents=True, exist_ok=True)
    frame = parquet_safe(corpus.frame)
    frame.to_parquet(paths.corpus, index=False)
    paths.corpus_stats.write_text(json.dumps(corpus.stats, indent=2))
    stats = corpus.stats
    log.info(
        "corpus: %d documents (%d rows read, %d empty texts %s, %d duplicate texts %s)",
        stats["documents"],
        stats["rows_read"],
        stats["empty_texts"],
        "dropped" if settings.empty == "drop" else "",
        stats["duplicate_texts"],
        "dropped" if settings.duplicates == "drop" else "kept",
    )
    return CorpusData(frame, stats)


def load_corpus_data(paths: RunPaths) -> CorpusData:
    """What :func:`read_corpus` saved."""
    frame = pd.read_parquet(paths.require(paths.corpus, "embed CORPUS"))
    stats = json.loads(paths.corpus_stats.read_text()) if paths.corpus_stats.exists() else {}
    return CorpusData(frame, stats)


def check_k(k: int, n_documents: int) -> None:
    """The graph needs ``k`` other documents per document (checked before the model loads)."""
    if k >= n_documents:
        raise EngineError(
            f"--k ({k}) must be smaller than the number of documents ({n_documents}): pass --k "
            f"{max(1, n_documents - 1)} or less"
        )


def time_values(corpus: CorpusData, column: str | None) -> pd.Series | None:
    """--time-column parsed to timestamps; EngineError naming the column when absent or not dates."""
    from engine.corpus import source_columns
    from engine.timeline import parse_times

    if not column:
        return None
    stored = {v: k for k, v in source_columns(corpus.frame, corpus.stats).items()}
    if column not in stored:
        raise EngineError(
            f"--time-column {column!r} is not a column of the corpus (columns: {', '.join(stored)})"
        )
    return parse_times(corpus.frame[stored[column]], column)


def language_warning(frame: pd.DataFrame, model_name: str) -> str | None:
    """A warning when an English-only model meets a mostly non-Latin corpus (log, summary, report)."""
    from engine.language import model_language_warning

    return model_language_warning(model_name, frame["text"].tolist())


# ------------------------------------------------------------------------------------------ store
def open_store(settings: Any, uri: str, n_documents: int, dim: int | None = None) -> Any:
    """The run's MilvusStore on ``uri``; ``--index auto`` is chosen from the corpus size."""
    from engine.milvus.indexes import choose_index
    from engine.milvus.store import MilvusStore

    index_type, index_params = choose_index(settings.index, n_documents, settings.index_params)
    return MilvusStore(
        uri=uri,
        token=settings.resolved_milvus_token,
        collection=settings.collection,
        dim=dim,
        metric=settings.metric,
        index_type=index_type,
        index_params=index_params,
        search_params=settings.search_params,
        db_name=settings.db_name,
    )


def check_index(settings: Any, uri: str, n_documents: int) -> None:
    """The index ``--index`` resolves to must exist on that Milvus (checked before the model loads)."""
    from engine.milvus.client import is_lite_uri
    from engine.milvus.embedded import LOCAL_SERVER_URI
    from engine.milvus.indexes import check_available, choose_index

    index_type, _ = choose_index(settings.index, n_documents, settings.index_params)
    check_available(index_type, lite=uri != LOCAL_SERVER_URI and is_lite_uri(uri))


# ------------------------------------------------------------------------------------------ embed
@dataclass
class EmbedResult:
    ingest: Any  # engine.ingest.IngestResult
    model: str
    detail: str


def load_encoder(settings: Any) -> Any:
    """The embed section's model (FlagEmbedding or sentence-transformers, engine fast loop)."""
    from engine.embed import load_encoder as load

    return load(
        settings.model,
        device=settings.device,
        precision=settings.precision,
        max_length=settings.max_length,
        batch_size=settings.batch_size,
    )


def embed_corpus(
    frame: pd.DataFrame, settings: Any, open_store: Any, paths: RunPaths, progress: bool = True
) -> EmbedResult:
    """Embed every document into ``embeddings.npy`` and Milvus, resuming what is already stored.

    ``open_store(dim)``: a context manager giving the run's store (the caller owns the connection).
    """
    from engine.ingest import check_model, ingest

    encoder = load_encoder(settings)
    check_model(paths.embeddings, encoder.name, restart=settings.restart)
    with open_store(encoder.dim) as store:
        result = ingest(
            frame,
            encoder,
            store,
            paths.embeddings,
            restart=settings.restart,
            progress=progress,
            fingerprint_key=f"{encoder.name}|{encoder.dim}|max_length={settings.max_length}",
        )
    return EmbedResult(result, encoder.name, f"{encoder.name} ({encoder.dim}-d, {encoder.device})")


# ------------------------------------------------------------------------------------------ graph
def build_graph(
    vectors: np.ndarray,
    ids: np.ndarray,
    settings: Any,
    store: Any = None,
    paths: RunPaths | None = None,
    seed: int | None = 0,
    progress: bool = True,
    rebuild_index: bool = True,
) -> Any:
    """The k-nearest-neighbour graph (CSR, true Euclidean distances) from Milvus or exact search.

    With a store: (re)build its index (the stored one may come from other --index settings;
    ``rebuild_index=False`` keeps a loaded one), check and tune recall@k on a sample
    (:mod:`engine.graph.tune` decides), then search every vector. ``graph.meta`` gets ``detail`` (for
    the summary) and ``seconds`` per step. Saved as ``knn_graph.npz`` when ``paths``.
    """
    from engine.graph import build_knn_graph, exact_knn
    from engine.graph.tune import check_recall

    k = settings.k
    check_k(k, len(vectors))
    if settings.graph_source == "exact" or store is None:
        graph = exact_knn(vectors, k)
        graph.meta["detail"] = f"exact k={k}"
    else:
        t = time.perf_counter()
        if rebuild_index:
            params = store.build_index()
            log.info("graph: %s index built with %s", store.index_type, params or "defaults")
        seconds = {"index": time.perf_counter() - t}
        t = time.perf_counter()
        tuning = check_recall(
            store,
            vectors,
            ids,
            k=k,
            target_recall=settings.target_recall,
            sample=settings.recall_sample,
            search_params=store.search_params,
            workers=settings.workers,
            batch_size=settings.search_batch,
            seed=seed,
            warn=False,  # one line about the final graph below, after refinement
        )
        seconds["recall_check"] = time.perf_counter() - t
        t = time.perf_counter()
        graph = build_knn_graph(
            store,
            vectors,
            ids,
            k=k,
            workers=settings.workers,
            batch_size=settings.search_batch,
            progress=progress,
            search_params=tuning.search_params if tuning else None,
        )
        seconds["search"] = time.perf_counter() - t
        detail = f"milvus {store.index_type} k={k}"
        if tuning is not None:
            graph, refined = _refine_to_target(vectors, graph, tuning, settings, progress)
            if refined is not None:
                seconds["refine"] = refined.seconds
            graph.meta["recall_check"] = tuning.to_dict()
            detail += _recall_detail(k, tuning, refined, settings)
        graph.meta["seconds"] = {name: round(v, 3) for name, v in seconds.items()}
        graph.meta["detail"] = detail
    if paths is not None:
        graph.save(paths.root)
    return graph


def _refine_to_target(
    vectors: np.ndarray, graph: Any, tuning: Any, settings: Any, progress: bool
) -> tuple[Any, Any]:
    """NN-descent refinement of a Milvus graph whose sampled recall is below the target (within
    ``settings.refine_budget`` seconds); ``(graph, RefineResult or None)``. Warns in one line when the
    final sampled recall is still below the target."""
    from engine.graph.refine import refine_graph

    refined = None
    if tuning.recall < settings.target_recall and settings.refine_budget > 0:
        refined = refine_graph(
            vectors,
            graph,
            budget_s=settings.refine_budget,
            target_recall=settings.target_recall,
            rows=tuning.rows,
            exact=tuning.exact,
            progress=progress,
        )
        graph = refined.graph
        graph.meta["refine"] = refined.to_dict()
    final = tuning.recall if refined is None or refined.recall is None else refined.recall
    graph.meta["recall"] = round(float(final), 4)
    graph.meta["recall_met"] = bool(final >= settings.target_recall)
    if final < settings.target_recall:
        tried = f"search {tuning.search_params} (best of {len(tuning.trials)}) gave {tuning.recall:.3f}"
        if refined is not None:
            tried += f", {len(refined.passes)} refinement passes in {refined.seconds:.0f} s ({refined.stop})"
        else:
            tried += ", refinement off (--refine-budget 0)"
        log.warning(
            "graph: recall@%d %.3f is below the target %.3f on %d sampled queries; %s. Raise --refine-budget "
            "or the index build parameters (HNSW M / efConstruction), or use --graph-source exact",
            graph.k,
            final,
            settings.target_recall,
            tuning.sample,
            tried,
        )
    return graph, refined


def _recall_detail(k: int, tuning: Any, refined: Any, settings: Any) -> str:
    """The summary's words on the graph's recall: final sampled recall, and how it was reached."""
    final = tuning.recall if refined is None or refined.recall is None else refined.recall
    how = f"search {tuning.search_params} {tuning.recall:.3f}"
    if refined is not None:
        how += f" + {len(refined.passes)} refinement passes"
    below = "" if final >= settings.target_recall else f", BELOW target {settings.target_recall}"
    return f", recall@{k} {final:.3f} on {tuning.sample:,} sampled queries ({how}{below})"


def load_graph(paths: RunPaths) -> Any:
    from engine.graph import KnnGraph

    paths.require(paths.knn_graph, "graph")
    return KnnGraph.load(paths.root)


# ---------------------------------------------------------------------------------------- cluster
def cluster(
    graph: Any, vectors: Any, settings: Any, seed: int | None = 42, paths: RunPaths | None = None
) -> Any:
    """Cluster layers on a node embedding of the kNN graph (default), or HDBSCAN* on the raw graph.

    ``vectors``: the embeddings (or a function returning them: only the embedding space and the
    GPU backends read them). Returns a ClusterResult whose ``detail`` describes it; saves
    ``clusters.npz`` (and ``cluster_embedding.npy``, which the layout stage starts from).
    """
    from engine.cluster import cluster_graph
    from engine.cluster.noise import assign_noise
    from engine.cluster.space import cluster_embedding_space

    get_vectors = vectors if callable(vectors) else (lambda: vectors)
    if settings.cluster_space == "graph":
        result = cluster_graph(
            graph,
            min_cluster_size=settings.min_cluster_size,
            min_samples=settings.effective_min_samples,
            cluster_selection_method=settings.cluster_selection_method,
            cluster_selection_epsilon=settings.cluster_selection_epsilon,
            backend=settings.cluster_backend,
            vectors=get_vectors() if settings.cluster_backend != "cpu" else None,
        )
        result.noise_before = result.noise_fraction
        if settings.assign_noise:
            result.labels, result.assigned = assign_noise(result.labels, graph.indices, graph.distances)
        result.detail = f"HDBSCAN* on the kNN graph ({result.backend})"
    else:
        result = cluster_embedding_space(
            graph,
            min_cluster_size=settings.min_cluster_size,
            min_samples=settings.effective_min_samples,
            n_clusters=settings.n_clusters,
            assign=settings.assign_noise,
            seed=seed,
            vectors=get_vectors(),
        )
        layers = result.layers
        result.detail = (
            f"{layers.n_layers} layers on a {result.embedding.shape[1]}-d node embedding of the graph "
            f"({', '.join(str(layers.n_clusters(i)) for i in range(layers.n_layers))} clusters); "
            f"primary layer {layers.primary}: {layers.rule}"
        )
    if not settings.assign_noise:
        result.assigned = None  # labels.parquet has an `assigned` column only when --assign-noise ran
    if paths is not None:
        save_clusters(result, paths)
    return result


def save_clusters(result: Any, paths: RunPaths) -> None:
    if result.embedding is not None:
        np.save(paths.cluster_embedding, result.embedding)
    else:
        paths.cluster_embedding.unlink(missing_ok=True)
    np.savez(paths.clusters_npz, **cluster_arrays(result))


def cluster_arrays(result: Any) -> dict[str, np.ndarray]:
    """A ClusterResult as the arrays ``clusters.npz`` holds (what :func:`load_clusters` returns)."""
    out = {
        "labels": result.labels,
        "probabilities": result.probabilities,
        "outlier_scores": result.outlier_scores,
        "noise_before": np.float64(result.noise_before),
    }
    if result.assigned is not None:
        out["assigned"] = result.assigned
    if result.layers is not None:
        out["layers"] = np.stack(result.layers.labels).astype(np.int32)
        out["layer_strengths"] = np.stack(result.layers.strengths).astype(np.float32)
        out["persistence"] = np.asarray(result.layers.persistence, dtype=np.float64)
        out["primary"] = np.int64(result.layers.primary)
    return out


def load_clusters(paths: RunPaths) -> dict[str, np.ndarray]:
    with np.load(paths.require(paths.clusters_npz, "cluster")) as data:
        return {key: data[key] for key in data.files}


# ----------------------------------------------------------------------------------------- layout
def layout(
    graph: Any, settings: Any, seed: int | None = 42, paths: RunPaths | None = None, vectors: Any = None
) -> tuple[np.ndarray, str]:
    """2-D coordinates from the same kNN graph (no second neighbour search), and how they were made.

    ``embedding`` (auto's choice when the cluster stage left its node embedding): start from that
    embedding and refine on the graph (fast at 1M on 2 cores); ``umap``: umap-learn (or cuML) on the
    graph. ``vectors`` (or a function returning them) only for a GPU backend. Saves ``coords.npy``.
    """
    from engine.project import layout_from_embedding, project_2d

    have_embedding = paths is not None and paths.cluster_embedding.exists()
    use_embedding = settings.map_method == "embedding" or (
        settings.map_method == "auto" and have_embedding and settings.map_backend != "cuml"
    )
    if use_embedding:
        if paths is None:
            raise EngineError("--map-method embedding needs the cluster stage's embedding (a run directory)")
        emb = np.load(paths.require(paths.cluster_embedding, "cluster"))
        if len(emb) != graph.n:
            raise EngineError("cluster_embedding.npy does not match the graph: re-run `engine cluster`")
        coords = layout_from_embedding(graph, emb, random_state=seed)
        detail = "node embedding of the graph, started from the cluster embedding"
    else:
        get_vectors = vectors if callable(vectors) else (lambda: vectors)
        coords = project_2d(
            graph,
            n_neighbors=min(settings.n_neighbors, graph.indices.shape[1]),
            min_dist=settings.min_dist,
            random_state=seed,
            backend=settings.map_backend,
            vectors=get_vectors() if settings.map_backend != "cpu" else None,
        )
        detail = "UMAP of the graph"
    if paths is not None:
        np.save(paths.coords, coords)
    return coords, detail


def load_coords(paths: RunPaths) -> np.ndarray:
    return np.load(paths.require(paths.coords, "map"))


# ----------------------------------------------------------------------------------------- report
def label_frame(corpus: CorpusData, clusters: dict[str, np.ndarray], coords: np.ndarray) -> pd.DataFrame:
    """The engine's columns of labels.parquet: id, text, cluster, probability, outlier_score, x, y,
    ``layer_N`` and ``assigned`` (when --assign-noise labelled some documents)."""
    frame = corpus.frame
    if len(clusters["labels"]) != len(frame) or len(coords) != len(frame):
        raise EngineError(
            "saved clusters/map do not match the corpus size: re-run `engine graph`, `cluster` and `map`"
        )
    columns = {
        "id": frame["id"].to_numpy(),
        "text": frame["text"].to_numpy(),
        "cluster": clusters["labels"].astype(np.int64),
        "probability": clusters["probabilities"].astype(np.float32),
        "outlier_score": clusters["outlier_scores"].astype(np.float32),
        "x": coords[:, 0].astype(np.float32),
        "y": coords[:, 1].astype(np.float32),
    }
    for i, layer in enumerate(clusters.get("layers", ())):
        columns[f"layer_{i}"] = layer.astype(np.int64)
    if "assigned" in clusters:
        columns["assigned"] = clusters["assigned"].astype(bool)
    return pd.DataFrame(columns)


def report(
    corpus: CorpusData,
    clusters: dict[str, np.ndarray],
    coords: np.ndarray,
    vectors: np.ndarray,
    settings: Any,
    paths: RunPaths,
    title: str,
    warnings: list[str] | None = None,
) -> tuple[pd.DataFrame, Any]:
    """labels.parquet (with the corpus's own columns), clusters.json, report.html, map.html and map.png.

    Returns (labels.parquet's frame, the report).
    """
    from engine.corpus import with_source_columns
    from engine.report import build_layers_report, build_report
    from engine.show.map import write_map

    labels = label_frame(corpus, clusters, coords)
    output = with_source_columns(labels, corpus.frame, corpus.stats)
    output.to_parquet(paths.labels, index=False)
    layers = clusters.get("layers")
    if layers is not None:
        result = build_layers_report(
            labels,
            layers,
            int(clusters["primary"]),
            strengths=clusters.get("layer_strengths"),
            n_keywords=settings.n_keywords,
            n_representatives=settings.n_representatives,
            vectors=vectors,
        )
    else:
        result = build_report(
            labels,
            n_keywords=settings.n_keywords,
            n_representatives=settings.n_representatives,
            vectors=vectors,
        )
    times = time_values(corpus, settings.time_column)
    result.over_time = None if times is None else _over_time(labels["cluster"].to_numpy(), times, settings)
    result.warnings = list(warnings or [])
    write_map(  # first: report.html links to the map only when map.html exists
        labels,
        paths.map_html,
        paths.map_png,
        title=title,
        keywords=result.keywords_by_cluster(),
        layers=result.layers,
    )
    result.write(paths.root)
    return output, result


def _over_time(labels: np.ndarray, times: pd.Series, settings: Any) -> dict:
    from engine.timeline import topics_over_time

    result = topics_over_time(labels, times, settings.time_column)
    log.info(
        "report: topics over time by %s, %d periods of a %s",
        settings.time_column,
        len(result["periods"]),
        result["period"],
    )
    return result


def load_labels(paths: RunPaths) -> pd.DataFrame:
    return pd.read_parquet(paths.require(paths.labels, "report"))


# ----------------------------------------------------------------------------------------- labels
def store_labels(
    labels: pd.DataFrame,
    corpus: CorpusData,
    vectors: np.ndarray,
    store: Any,
    paths: RunPaths,
    progress: bool = True,
) -> tuple[int, list[str]]:
    """Write every label column of labels.parquet onto the Milvus rows, so searches filter by cluster.

    Returns (rows written, columns). 0 rows, with a warning, when the collection is gone or predates
    dynamic fields. Re-running (after ``engine cluster`` + ``engine report``) rewrites them.
    """
    from tqdm.auto import tqdm

    from engine.corpus import engine_id_column

    columns = label_columns_of(labels, corpus)
    frame = corpus.frame
    ids = labels[engine_id_column(labels)].to_numpy(dtype=np.int64)
    if len(ids) != len(frame) or not np.array_equal(ids, frame["id"].to_numpy(dtype=np.int64)):
        raise EngineError("labels.parquet does not match the corpus: re-run `engine report`")
    if not store.has_collection():
        log.warning(
            "labels: Milvus holds no collection %s any more; cluster labels are not stored in Milvus "
            "(re-run `engine embed --out DIR` to rebuild it from embeddings.npy, then `engine report`)",
            store.collection,
        )
        return 0, columns
    if not store.has_dynamic_field():
        log.warning(
            "labels: collection %s was created by an older engine without dynamic fields; cluster "
            "labels are not stored in Milvus (re-run with --restart to enable `engine search --cluster`)",
            store.collection,
        )
        return 0, columns
    fields = {**{c: labels[c].to_numpy() for c in columns}, ASSIGNED_FIELD: np.zeros(len(ids), np.int64)}
    with tqdm(total=len(ids), desc="labels->milvus", unit="doc", disable=not progress) as bar:
        n = store.upsert_labels(ids, vectors, frame["text"].tolist(), fields, progress=bar.update)
    store.flush()
    paths.labels_stored.write_text(json.dumps({"columns": columns, "rows": n}))
    log.info("labels: %s written to %d Milvus rows (filter e.g. 'cluster == 3')", ", ".join(columns), n)
    return n, columns


def label_columns_of(labels: pd.DataFrame, corpus: CorpusData) -> list[str]:
    """The label columns (``cluster``, ``layer_N``) of labels.parquet, never a corpus column of that name."""
    from engine.assign import label_columns
    from engine.corpus import source_columns

    return label_columns(labels, exclude=set(source_columns(corpus.frame, corpus.stats).values()))


# ---------------------------------------------------------------------------------- search, assign
def check_search(query: str, k: int) -> None:
    """Checked before the model loads."""
    if not str(query).strip():
        raise EngineError("search: the query text is empty")
    if k < 1:
        raise EngineError(f"--k must be >= 1, got {k}")


def check_assign(frame: pd.DataFrame, k: int) -> None:
    """Checked before the model loads."""
    if "text" not in frame.columns:
        raise EngineError("assign: the frame needs a 'text' column")
    if k < 1:
        raise EngineError(f"--k must be >= 1, got {k}")


def search(
    query: str,
    encoder: Any,
    store: Any,
    columns: list[str],
    k: int = 10,
    cluster: int | None = None,
    filter: str = "",
) -> pd.DataFrame:
    """Nearest stored documents to ``query``; ``cluster`` adds the Milvus filter ``cluster == N``."""
    check_search(query, k)
    expr = [f"({filter})"] if filter else []
    if cluster is not None:
        if not store.has_dynamic_field():
            raise EngineError("this run's collection has no cluster fields: re-run `engine run --restart`")
        expr.append(f"cluster == {int(cluster)}")
    vector = encoder.encode([str(query)])
    hits = store.search_hits(vector, k, filter=" and ".join(expr), output_fields=["text", *columns])[0]
    out = pd.DataFrame(hits, columns=["id", "distance", *columns, "text"])
    return out.rename(columns={"distance": "score"})


def assign(
    frame: pd.DataFrame,
    encoder: Any,
    store: Any,
    labels: pd.DataFrame,
    columns: list[str],
    graph: Any,
    min_samples: int,
    k: int = 15,
    only_run: bool = False,
    keep: bool = False,
    source: str = "new",
) -> pd.DataFrame:
    """Place new documents (``frame`` with a ``text`` column) in the run's clusters (engine.assign rule).

    Returns one row per document: ``id`` (stable, from ``source`` and the frame's ``id`` or position),
    the label columns with ``<label>_confidence`` and ``<label>_reason``, the nearest stored id and its
    distance. ``only_run``: skip rows an earlier ``assign --store`` added (they must not vote);
    ``keep=True`` upserts the documents with their labels (same ids on a re-run: no duplicates).
    """
    from engine.assign import assigned_ids, lookup_labels, neighbour_radius, vote
    from engine.corpus import engine_id_column
    from engine.graph.distances import to_euclidean

    check_assign(frame, k)
    texts = frame["text"].fillna("").astype(str).tolist()
    keys = frame["id"] if "id" in frame.columns else pd.Series(np.arange(len(frame)))
    ids = assigned_ids(keys, source)
    run_ids = labels[engine_id_column(labels)].to_numpy(dtype=np.int64)
    vectors = encoder.encode(texts) if texts else np.empty((0, encoder.dim), np.float32)
    hits = store.search_hits(vectors, k, filter=f"{ASSIGNED_FIELD} == 0" if only_run else "") if texts else []
    hit_ids = np.full((len(vectors), k), -1, dtype=np.int64)
    raw = np.full((len(vectors), k), np.nan, dtype=np.float32)
    for i, row in enumerate(hits):
        hit_ids[i, : len(row)] = [h["id"] for h in row]
        raw[i, : len(row)] = [h["distance"] for h in row]
    dist = to_euclidean(raw, store.metric).astype(np.float64)
    dist[hit_ids < 0] = np.inf
    out = pd.DataFrame({"id": ids, "text": texts})
    for c in columns:
        run_values = labels[c].to_numpy(dtype=np.int64)
        radius = neighbour_radius(graph.distances, run_values, min_samples)
        result = vote(lookup_labels(hit_ids, run_ids, run_values), dist, radius, min_samples)
        out[c] = result.label
        out[f"{c}_confidence"] = result.confidence
        out[f"{c}_reason"] = result.reason.astype(str)
    out["nearest_id"] = hit_ids[:, 0] if len(out) else np.empty(0, np.int64)
    out["nearest_distance"] = dist[:, 0].astype(np.float32) if len(out) else np.empty(0, np.float32)
    if keep and len(out):
        fields = {c: out[c].to_numpy() for c in columns}
        store.upsert_labels(ids, vectors, texts, {**fields, ASSIGNED_FIELD: np.ones(len(ids), np.int64)})
        store.flush()
    return out
