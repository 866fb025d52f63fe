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
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from engine.atomic import atomic_output, write_text
from engine.errors import EngineError
from engine.rundir import RunPaths

log = logging.getLogger("engine")

#: Fewest documents a run takes: each needs a neighbour (up to 4 documents make one all-noise layer).
MIN_DOCUMENTS = 2
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
    with atomic_output(paths.corpus) as tmp:
        frame.to_parquet(tmp, index=False)
    write_text(paths.corpus_stats, json.dumps(corpus.stats, indent=2))
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
    frame = paths.read(paths.corpus, "embed CORPUS", pd.read_parquet)
    stats = paths.read(paths.corpus_stats, "embed CORPUS", _read_json) if paths.corpus_stats.exists() else {}
    return CorpusData(frame, stats)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def check_k(k: int, n_documents: int) -> None:
    """The graph needs ``k`` other documents per document (checked before the model loads)."""
    if n_documents < MIN_DOCUMENTS:
        raise EngineError(
            f"the corpus has {n_documents} document{'' if n_documents == 1 else 's'} (after dropping empty "
            f"texts): a kNN graph and clusters need at least {MIN_DOCUMENTS}"
        )
    if k >= n_documents:
        raise EngineError(
            f"--k ({k}) must be smaller than the number of documents ({n_documents}): pass --k "
            f"{max(1, n_documents - 1)} or less (and --min-samples no larger)"
        )


def source_column(corpus: CorpusData, column: str, option: str) -> pd.Series:
    """A column of the corpus file by its name; EngineError naming the option when absent."""
    from engine.corpus import source_columns

    stored = {v: k for k, v in source_columns(corpus.frame, corpus.stats).items()}
    if column not in stored:
        raise EngineError(f"{option} {column!r} is not a column of the corpus (columns: {', '.join(stored)})")
    return corpus.frame[stored[column]]


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


#: Model name prefix of a run whose vectors were given (--embeddings): "precomputed:FILE:MODEL".
PRECOMPUTED = "precomputed:"


@dataclass
class PrecomputedVectors:
    """Stands in for the encoder when the vectors were given: names them, embeds nothing."""

    name: str
    dim: int
    device: str = "given"


def load_precomputed(path: str, n_documents: int) -> np.ndarray:
    """--embeddings FILE as float32 unit rows; one EngineError line for a wrong shape, dtype or value."""
    flag = f"--embeddings {path}"
    try:
        vectors = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise EngineError(f"{flag}: no such file") from None
    except (OSError, ValueError) as exc:
        raise EngineError(f"{flag}: not a .npy array ({exc})") from None
    if vectors.ndim != 2 or vectors.shape[0] != n_documents or vectors.shape[1] < 2:
        raise EngineError(
            f"{flag}: shape {tuple(vectors.shape)}, expected ({n_documents}, dim): one row per document, in "
            "corpus order"
        )
    if not np.issubdtype(vectors.dtype, np.floating):
        raise EngineError(f"{flag}: dtype {vectors.dtype}, expected float32 or float64")
    out = np.asarray(vectors, dtype=np.float32)
    finite = np.isfinite(out).all(axis=1)
    if not finite.all():
        raise EngineError(f"{flag}: row {int(np.flatnonzero(~finite)[0])} has a NaN or infinite value")
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    if (norms == 0).any():
        raise EngineError(f"{flag}: row {int(np.flatnonzero(norms.ravel() == 0)[0])} is all zeros")
    return out / norms


def embed_corpus(
    frame: pd.DataFrame,
    settings: Any,
    open_store: Any,
    paths: RunPaths,
    progress: bool = True,
    remote_encoder: Any = None,
) -> EmbedResult:
    """Embed every document into ``embeddings.npy`` and Milvus, resuming what is already stored.

    ``open_store(dim)``: a context manager giving the run's store (the caller owns the connection).
    ``remote_encoder(settings)``: an encoder that embeds elsewhere and stores the rows itself
    (``engine.distributed.embed.RayEncoder``, --ray); ingest still decides what to embed and resumes.
    """
    from engine.ingest import check_model, ingest

    precomputed = None
    if settings.embeddings:
        precomputed = load_precomputed(settings.embeddings, len(frame))
        encoder: Any = PrecomputedVectors(
            f"{PRECOMPUTED}{Path(settings.embeddings).name}:{settings.model}", precomputed.shape[1]
        )
    elif remote_encoder is not None:
        encoder = remote_encoder(settings)
    else:
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
            precomputed=precomputed,
            stream=encoder.stream if remote_encoder is not None and precomputed is None else None,
        )
    return EmbedResult(result, encoder.name, f"{encoder.name} ({encoder.dim}-d, {encoder.device})")


def restore_vectors(frame: pd.DataFrame, open_store: Any, paths: RunPaths, progress: bool = True) -> bool:
    """``embeddings.npy`` rebuilt from the run's Milvus collection when the file is absent.

    Why: the later stages read the vectors from the file (NN-descent refinement, node embedding,
    keywords), and a run may not have it: deleted to save disk, or embedded on another machine (a Ray
    cluster, another box) into the user's own Milvus server. Milvus holds every vector as inserted, so
    reading them back gives the same graph as the file did, without loading a model. Nothing happens
    (False) when the file exists, when the embed stage is recorded as interrupted, or when the
    collection does not exist; a collection that lacks some of the corpus is one EngineError.
    ``open_store()``: a context manager giving the run's store. Written atomically, in corpus order.
    """
    from engine.ingest import VectorFile, read_meta

    path = paths.embeddings
    meta = read_meta(path)
    if path.exists() or (meta and not meta.get("complete", False)):
        return False
    ids = frame["id"].to_numpy(dtype=np.int64)
    rebuild = f"engine embed CORPUS --out {paths.root}"
    try:
        with open_store() as store:
            dim = store.vector_dim()
            if dim is None:
                return False
            if meta.get("dim") not in (None, dim):
                raise EngineError(
                    f"collection {store.collection!r} holds {dim}-d vectors, not the run's {meta['dim']}-d ones"
                )
            log.info(
                "%s not found: reading the run's %d vectors back from Milvus collection %r (no re-embedding)",
                path.name,
                len(ids),
                store.collection,
            )
            with atomic_output(path) as tmp:
                vf = VectorFile(tmp, len(ids), dim, create=True)
                try:
                    store.read_vectors(ids, write=vf.write, progress=progress)
                finally:
                    vf.close()
    except EngineError as exc:
        raise EngineError(
            f"{path} not found, and Milvus cannot stand in for it: {exc}; run `{rebuild}`"
        ) from None
    return True


# ------------------------------------------------------------------------------------------ graph
#: From this many documents ``--graph-source auto`` joins partitions instead of searching Milvus: at 100k
#: x 1024 the join + refinement reached recall@30 0.963 in 115 s where HNSW build + search + refinement
#: took ~320 s for 0.96; at 1M 0.974 in 17.6 min where HNSW gave 0.73 in 41 min (RESULTS.md sections 3, 10).
PARTITION_FROM = 100_000


#: Refinement passes are bounded by --refine-budget, the target and convergence; this only stops a
#: graph that keeps changing a little forever (1M x 1024, 16 probes: 0.89 -> 0.974 in 6 passes, 318 s).
REFINE_MAX_PASSES = 100


def graph_source(setting: str, n: int) -> str:
    """The graph source ``--graph-source`` means for ``n`` documents (``auto`` resolved).

    ``auto``: with a CUDA GPU from ``PARTITION_FROM`` documents, exact search on it (a tensor-core
    matmul per block of queries, re-ranked in float32: the whole graph is exact); on CPUs the
    partitioned join there; Milvus search below.
    """
    if setting != "auto":
        return setting
    if n < PARTITION_FROM:
        return "milvus"
    from engine import hardware

    return "exact" if hardware.cuda_available() else "partition"


def build_graph(
    vectors: np.ndarray,
    ids: np.ndarray,
    settings: Any,
    store: Any = None,
    paths: RunPaths | None = None,
    seed: int | None = 0,
    progress: bool = True,
    rebuild_index: bool = True,
    knn: Any = None,
) -> Any:
    """The k-nearest-neighbour graph (CSR, true Euclidean distances) from Milvus or exact search.

    With a store: (re)build its index (the stored one may come from other --index settings;
    ``rebuild_index=False`` keeps a loaded one), check and tune recall@k on a sample
    (:mod:`engine.graph.tune` decides), then search every vector. ``graph.meta`` gets ``detail`` (for
    the summary) and ``seconds`` per step. Saved as ``knn_graph.npz`` when ``paths``.
    ``knn``: the function that runs the full search (default :func:`engine.graph.build_knn_graph`;
    --ray: ``engine.distributed.graph.ray_knn_graph``, same arguments and result).
    """
    from engine.graph import build_knn_graph, exact_knn
    from engine.graph.tune import check_recall

    k = settings.k
    check_k(k, len(vectors))
    source = graph_source(settings.graph_source, len(vectors))
    if source == "partition":
        graph = _partition_graph(vectors, settings, seed, progress)
    elif source == "exact" or store is None:
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
        graph = (knn or build_knn_graph)(
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


def _partition_graph(vectors: np.ndarray, settings: Any, seed: int | None, progress: bool) -> Any:
    """The partitioned join (:mod:`engine.graph.partition`), its recall@k measured on a sample of exact
    queries, then NN-descent refinement to the target like a Milvus graph."""
    from engine.graph import exact_knn
    from engine.graph.partition import partition_knn
    from engine.graph.tune import TuneResult, sample_rows

    k = settings.k
    t = time.perf_counter()
    graph = partition_knn(vectors, k, probes=settings.partition_probes, seed=seed, progress=progress)
    seconds = {"join": time.perf_counter() - t}
    knob = {"lists": graph.meta["lists"], "probes": graph.meta["probes"]}
    detail = f"partition join k={k} ({knob['lists']} lists, {knob['probes']} probes)"
    if settings.recall_sample:
        t = time.perf_counter()
        rows = sample_rows(len(vectors), settings.recall_sample, seed=seed or 0)
        exact = exact_knn(vectors, k, rows=rows, progress=False)
        recall = graph.recall_against(exact, rows)
        seconds["recall_check"] = time.perf_counter() - t
        log.info("graph: recall@%d %.3f on %d sampled queries after the join", k, recall, len(rows))
        tuning = TuneResult(
            knob,
            recall,
            0.0,
            recall >= settings.target_recall,
            settings.target_recall,
            len(rows),
            seconds["recall_check"],
            [{**knob, "recall": round(recall, 4)}],
            rows,
            exact,
        )
        join_meta = dict(graph.meta)
        graph, refined = _refine_to_target(vectors, graph, tuning, settings, progress)
        graph.meta.update({key: v for key, v in join_meta.items() if key not in graph.meta})
        if refined is not None:
            seconds["refine"] = refined.seconds
        graph.meta["recall_check"] = tuning.to_dict()
        detail += _recall_detail(k, tuning, refined, settings).replace("search ", "join ", 1)
    graph.meta["seconds"] = {name: round(v, 3) for name, v in seconds.items()}
    graph.meta["detail"] = detail
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
            max_passes=REFINE_MAX_PASSES,
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
        joined = "probes" in tuning.search_params
        first = "join" if joined else f"search (best of {len(tuning.trials)})"
        tried = f"{first} {tuning.search_params} gave {tuning.recall:.3f}"
        if refined is not None:
            tried += f", {len(refined.passes)} refinement passes in {refined.seconds:.0f} s ({refined.stop})"
        else:
            tried += ", refinement off (--refine-budget 0)"
        log.warning(
            "graph: recall@%d %s is below the target %.3f on %d sampled queries; %s. Raise --refine-budget "
            "or %s, or use --graph-source exact",
            graph.k,
            recall_shown(final, settings.target_recall),
            settings.target_recall,
            tuning.sample,
            tried,
            "--partition-probes" if joined else "the index build parameters (HNSW M / efConstruction)",
        )
    return graph, refined


def _recall_detail(k: int, tuning: Any, refined: Any, settings: Any) -> str:
    """The summary's words on the graph's recall: final sampled recall, and how it was reached."""
    final = tuning.recall if refined is None or refined.recall is None else refined.recall
    how = f"search {tuning.search_params} {tuning.recall:.3f}"
    if refined is not None:
        how += f" + {len(refined.passes)} refinement passes"
    below = "" if final >= settings.target_recall else f", BELOW target {settings.target_recall}"
    return f", recall@{k} {recall_shown(final, settings.target_recall)} on {tuning.sample:,} sampled queries ({how}{below})"


def recall_shown(recall: float, target: float) -> str:
    """``recall`` with 3 decimals, more when 3 would round a recall below ``target`` up to it (0.9698 vs 0.97)."""
    digits = 3
    while digits < 6 and recall < target and round(recall, digits) >= target:
        digits += 1
    return f"{recall:.{digits}f}"


def load_graph(paths: RunPaths) -> Any:
    from engine.graph import KnnGraph
    from engine.graph.knn import ARRAYS_FILE

    paths.require(paths.knn_graph, "graph")
    return paths.read(paths.root / ARRAYS_FILE, "graph", lambda _: KnnGraph.load(paths.root))


# ---------------------------------------------------------------------------------------- cluster
def cluster(
    graph: Any, vectors: Any, settings: Any, seed: int | None = 42, paths: RunPaths | None = None
) -> Any:
    """Cluster layers: Leiden communities of the kNN graph (default), density clusters of its node
    embedding, or HDBSCAN* on the raw graph.

    ``vectors``: the embeddings (or a function returning them: only the embedding space and the
    GPU backends read them). Returns a ClusterResult whose ``detail`` describes it; saves
    ``clusters.npz`` (and ``cluster_embedding.npy``, which the layout stage starts from).
    """
    from engine.cluster import cluster_graph
    from engine.cluster.kernels import announce_compile, mark_compiled
    from engine.cluster.layers import relabel_by_size
    from engine.cluster.noise import assign_noise
    from engine.cluster.space import cluster_community_space, cluster_embedding_space

    get_vectors = vectors if callable(vectors) else (lambda: vectors)
    numba_space = settings.cluster_space != "communities"  # Leiden is igraph's C code: nothing to compile
    if numba_space:
        announce_compile(settings.cluster_space)
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
            result.labels = relabel_by_size(result.labels)  # ids stay ordered by size (0 = largest)
        result.detail = f"HDBSCAN* on the kNN graph ({result.backend})"
    elif settings.cluster_space == "communities":
        result = cluster_community_space(
            graph,
            min_cluster_size=settings.min_cluster_size,
            n_clusters=settings.n_clusters,
            assign=settings.assign_noise,
            seed=seed,
            consensus_runs=settings.effective_consensus_runs,
            resolution=settings.resolution,
        )
        layers = result.layers
        result.detail = (
            f"{layers.n_layers} layers of communities of the kNN graph "
            f"({', '.join(str(layers.n_clusters(i)) for i in range(layers.n_layers))} clusters); "
            f"primary layer {layers.primary}: {layers.rule}"
        )
    else:
        result = cluster_embedding_space(
            graph,
            min_cluster_size=settings.min_cluster_size,
            min_samples=settings.effective_min_samples,
            n_clusters=settings.n_clusters,
            assign=settings.assign_noise,
            seed=seed,
            vectors=get_vectors(),
            consensus_runs=settings.effective_consensus_runs,
        )
        layers = result.layers
        result.detail = (
            f"{layers.n_layers} layers on a {result.embedding.shape[1]}-d node embedding of the graph "
            f"({', '.join(str(layers.n_clusters(i)) for i in range(layers.n_layers))} clusters); "
            f"primary layer {layers.primary}: {layers.rule}"
        )
    if getattr(result, "stability", None) is not None:
        result.detail += f"; mean document stability {float(np.mean(result.stability)):.2f}"
    if numba_space:
        mark_compiled(settings.cluster_space)
    if not settings.assign_noise:
        result.assigned = None  # labels.parquet has an `assigned` column only when --assign-noise ran
    if paths is not None:
        save_clusters(result, paths)
    return result


def save_clusters(result: Any, paths: RunPaths) -> None:
    if result.embedding is not None:
        with atomic_output(paths.cluster_embedding) as tmp:
            np.save(tmp, result.embedding)
    else:
        paths.cluster_embedding.unlink(missing_ok=True)
    with atomic_output(paths.clusters_npz) as tmp:
        np.savez(tmp, **cluster_arrays(result))


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
    if getattr(result, "stability", None) is not None:
        out["stability"] = np.asarray(result.stability, dtype=np.float32)
    if result.layers is not None:
        out["layers"] = np.stack(result.layers.labels).astype(np.int32)
        out["layer_strengths"] = np.stack(result.layers.strengths).astype(np.float32)
        out["persistence"] = np.asarray(result.layers.persistence, dtype=np.float64)
        out["primary"] = np.int64(result.layers.primary)
    return out


def load_clusters(paths: RunPaths) -> dict[str, np.ndarray]:
    def read(path: Path) -> dict[str, np.ndarray]:
        with np.load(path) as data:
            return {key: data[key] for key in data.files}

    return paths.read(paths.clusters_npz, "cluster", read)


# ----------------------------------------------------------------------------------------- layout
def layout(
    graph: Any, settings: Any, seed: int | None = 42, paths: RunPaths | None = None, vectors: Any = None
) -> tuple[np.ndarray, str]:
    """2-D coordinates from the same kNN graph (no second neighbour search), and how they were made.

    ``embedding`` (auto's choice, except with the cuML backend): a few-dimensional node embedding of
    the graph -- the cluster stage's when it left one, else made here -- refined to 2-D on the graph
    (fast at 1M on 2 cores); ``umap``: umap-learn (or cuML) on the graph. ``vectors`` (or a function
    returning them): the node embedding's PCA start, and the GPU backends. Saves ``coords.npy``.
    """
    from engine.project import layout_from_embedding, project_2d

    have_embedding = paths is not None and paths.cluster_embedding.exists()
    use_embedding = settings.map_method == "embedding" or (
        settings.map_method == "auto" and settings.map_backend != "cuml"
    )
    if use_embedding:
        from engine.cluster.kernels import announce_compile, mark_compiled

        announce_compile("layout", stage="map", what="layout")
        if have_embedding:
            emb = paths.read(paths.cluster_embedding, "cluster", np.load)
            if len(emb) != graph.n:
                raise EngineError("cluster_embedding.npy does not match the graph: re-run `engine cluster`")
            detail = "node embedding of the graph, started from the cluster embedding"
        elif paths is not None and paths.clusters_npz.exists():
            from engine.project import community_start

            emb = community_start(graph, load_clusters(paths)["labels"], seed=seed)
            detail = "graph layout started from the topics' places"
        else:
            emb = _node_embedding(graph, vectors, seed)
            detail = "node embedding of the graph"
        coords = layout_from_embedding(graph, emb, random_state=seed)
        mark_compiled("layout")
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
        with atomic_output(paths.coords) as tmp:
            np.save(tmp, coords)
    return coords, detail


def _node_embedding(graph: Any, vectors: Any, seed: int | None) -> np.ndarray:
    """A few-dimensional node embedding of the graph (EVoC's stages, one seeded run) for a map made
    without the cluster stage's outputs."""
    from engine.cluster.embedding import embed_graph
    from engine.cluster.space import _init_vectors

    get_vectors = vectors if callable(vectors) else (lambda: vectors)
    return embed_graph(graph, seed=seed, vectors=_init_vectors(get_vectors())).embedding


def load_coords(paths: RunPaths) -> np.ndarray:
    return paths.read(paths.coords, "map", np.load)


# ----------------------------------------------------------------------------------------- report
def label_frame(corpus: CorpusData, clusters: dict[str, np.ndarray], coords: np.ndarray) -> pd.DataFrame:
    """The engine's columns of labels.parquet: id, text, cluster, probability, outlier_score, x, y,
    ``layer_N``, ``assigned`` (when --assign-noise labelled some documents) and ``stability`` (the
    share of the consensus runs agreeing with the document's cluster)."""
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
    if "stability" in clusters:
        columns["stability"] = clusters["stability"].astype(np.float32)
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
    encoder: Any = None,
    graph: Any = None,
) -> tuple[pd.DataFrame, Any]:
    """labels.parquet (with the corpus's own columns), clusters.json, report.html, map.html and map.png.

    ``encoder``: a no-argument callable giving the run's model, called only when an option needs
    to embed words (--keyword-rerank, --topics). ``graph``: a no-argument callable giving the run's
    kNN graph (--topics averages each document's scores over its neighbours; without it, none).
    Returns (labels.parquet's frame, the report).
    """
    from engine.corpus import with_source_columns
    from engine.report import build_layers_report, build_report
    from engine.show.map import write_map

    edits = load_topic_edits(paths)
    clusters = apply_merges(clusters, edits["merges"])
    named: dict[int, str] = {}
    if settings.topics:
        clusters, named = _zero_shot(clusters, vectors, settings, encoder, graph)
    labels = label_frame(corpus, clusters, coords)
    output = with_source_columns(labels, corpus.frame, corpus.stats)
    with atomic_output(paths.labels) as tmp:
        output.to_parquet(tmp, index=False)
    layers = clusters.get("layers")
    options = keyword_options(settings, vectors, encoder)
    if layers is not None:
        result = build_layers_report(
            labels,
            layers,
            int(clusters["primary"]),
            strengths=clusters.get("layer_strengths"),
            n_keywords=settings.n_keywords,
            n_representatives=settings.n_representatives,
            vectors=vectors,
            **options,
        )
    else:
        result = build_report(
            labels,
            n_keywords=settings.n_keywords,
            n_representatives=settings.n_representatives,
            vectors=vectors,
            **options,
        )
    times = time_values(corpus, settings.time_column)
    result.over_time = None if times is None else _over_time(labels["cluster"].to_numpy(), times, settings)
    if settings.class_column:
        from engine.report import topics_per_class

        result.per_class = topics_per_class(
            labels["cluster"].to_numpy(),
            source_column(corpus, settings.class_column, "--class-column"),
            settings.class_column,
        )
    result.warnings = list(warnings or [])
    set_names(result, {**named, **edits["names"]})  # a name the user set wins over a zero-shot one
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


#: The run's topic edits (merges, custom names): applied by every report, so `engine report` keeps them.
TOPIC_EDITS = "topics.json"


def load_topic_edits(paths: RunPaths) -> dict[str, dict[int, Any]]:
    """``{"merges": {old: new}, "names": {cluster: name}}`` from the run's topics.json (empty when absent)."""
    path = paths.root / TOPIC_EDITS
    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    return {
        "merges": {int(k): int(v) for k, v in data.get("merges", {}).items()},
        "names": {int(k): str(v) for k, v in data.get("names", {}).items()},
    }


def save_topic_edits(paths: RunPaths, edits: dict[str, dict[int, Any]]) -> None:
    data = {key: {str(k): v for k, v in sorted(edits.get(key, {}).items())} for key in ("merges", "names")}
    write_text(paths.root / TOPIC_EDITS, json.dumps(data, ensure_ascii=False, indent=2))


def merge_map(groups: list[list[int]], merges: dict[int, int] | None = None) -> dict[int, int]:
    """Add merge groups to a {old: new} map: every id of a group becomes the group's first id.

    Ids already merged away are followed to where they went, so merging twice composes.
    """
    out = dict(merges or {})

    def final(c: int) -> int:
        while c in out and out[c] != c:
            c = out[c]
        return c

    for group in groups:
        ids = [final(int(c)) for c in group]
        for c in ids[1:]:
            if c != ids[0]:
                out[c] = ids[0]
    return {c: final(c) for c in out}


def apply_merges(clusters: dict[str, np.ndarray], merges: dict[int, int]) -> dict[str, np.ndarray]:
    """The primary labels (and the primary layer, the same clusters) with merged ids replaced."""
    if not merges:
        return clusters
    out = dict(clusters)

    def relabel(values: np.ndarray) -> np.ndarray:
        values = np.asarray(values).copy()
        for old, new in merges.items():
            values[values == old] = new
        return values

    out["labels"] = relabel(clusters["labels"])
    if clusters.get("layers") is not None and "primary" in clusters:
        layers = np.array(clusters["layers"], copy=True)
        layers[int(clusters["primary"])] = relabel(layers[int(clusters["primary"])])
        out["layers"] = layers
    return out


def set_names(report: Any, names: dict[int, str]) -> None:
    """Custom topic names (set_topic_labels, zero-shot topics) on the report and its primary layer."""
    report.custom_names.update(names)
    for layer in report.layers or []:
        if layer.get("primary"):
            for c in layer["clusters"]:
                if int(c["cluster"]) in report.custom_names:
                    c["name"] = report.custom_names[int(c["cluster"])]


def _zero_shot(
    clusters: dict[str, np.ndarray], vectors: np.ndarray, settings: Any, encoder: Any, graph: Any = None
) -> tuple[dict[str, np.ndarray], dict[int, str]]:
    """--topics: clusters and documents close to a named topic take its name; see engine.zeroshot."""
    from engine.zeroshot import parse_topics, zero_shot_labels

    names = parse_topics(settings.topics)
    if encoder is None:
        raise EngineError("--topics needs the run's model to embed the topic names")
    neighbours = graph().indices if graph is not None else None
    before = np.asarray(clusters["labels"])
    labels, named, rows = zero_shot_labels(
        before, vectors, names, encoder().encode(names), settings.topic_threshold, neighbours
    )
    joined = (before < 0) & (labels >= 0)
    log.info(
        "report: zero-shot topics (threshold %.2f): of %d clusters %d took one of %d names whole, %d mixed ones "
        "split by their documents' votes; %d noise documents joined a named topic",
        settings.topic_threshold,
        len(rows),
        sum(r["topic"] is not None for r in rows),
        len(names),
        sum("split" in r for r in rows),
        int(joined.sum()),
    )
    out = dict(clusters)
    out["labels"] = labels
    if clusters.get("layers") is not None and "primary" in clusters:
        layers = np.array(clusters["layers"], copy=True)
        layers[int(clusters["primary"])] = labels
        out["layers"] = layers
    return out, named


def keyword_options(settings: Any, vectors: np.ndarray, encoder: Any = None) -> dict[str, Any]:
    """build_report's keyword options from the [report] section (the re-ranker loads the run's model)."""
    options: dict[str, Any] = {"ngrams": settings.keyword_ngrams, "min_lift": settings.keyword_min_lift}
    if settings.keyword_rerank:
        if encoder is None:
            raise EngineError("--keyword-rerank needs the run's model to embed candidate words")
        from engine.keywords import embedding_reranker

        model = encoder()
        options["rerank"] = embedding_reranker(
            lambda words: model.encode(words), vectors, settings.keyword_diversity
        )
    return options


def _over_time(labels: np.ndarray, times: pd.Series, settings: Any) -> dict:
    from engine.timeline import topics_over_time

    result = topics_over_time(labels, times, settings.time_column, settings.time_period)
    log.info(
        "report: topics over time by %s, %d periods of a %s",
        settings.time_column,
        len(result["periods"]),
        result["period"],
    )
    return result


def cluster_label_frame(corpus: CorpusData, clusters: dict[str, np.ndarray]) -> pd.DataFrame:
    """``id``, ``cluster`` and ``layer_N`` of the current clustering (what Milvus must hold after it)."""
    if len(clusters["labels"]) != len(corpus.frame):
        raise EngineError("saved clusters do not match the corpus size: re-run `engine graph` and `cluster`")
    columns = {
        "id": corpus.frame["id"].to_numpy(dtype=np.int64),
        "cluster": clusters["labels"].astype(np.int64),
    }
    for i, layer in enumerate(clusters.get("layers", ())):
        columns[f"layer_{i}"] = layer.astype(np.int64)
    return pd.DataFrame(columns)


def stored_label_columns(paths: RunPaths) -> list[str] | None:
    """The label fields Milvus holds (recorded by :func:`store_labels`), None when never stored."""
    try:
        return list(json.loads(paths.labels_stored.read_text())["columns"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_labels(paths: RunPaths) -> pd.DataFrame:
    return paths.read(paths.labels, "report", pd.read_parquet)


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
    stale = [c for c in stored_label_columns(paths) or [] if c not in columns]
    if stale:  # fewer layers than the stored ones: rows are rewritten whole, so no old field stays
        log.info("labels: removing %s (not in the current clustering) from Milvus", ", ".join(stale))
        _drop_assigned(store)
    fields = {**{c: labels[c].to_numpy() for c in columns}, ASSIGNED_FIELD: np.zeros(len(ids), np.int64)}
    with tqdm(total=len(ids), desc="labels->milvus", unit="doc", disable=not progress) as bar:
        n = store.upsert_labels(
            ids, vectors, frame["text"].tolist(), fields, progress=bar.update, replace=bool(stale)
        )
    store.flush()
    write_text(paths.labels_stored, json.dumps({"columns": columns, "rows": n}))
    log.info("labels: %s written to %d Milvus rows (filter e.g. 'cluster == 3')", ", ".join(columns), n)
    return n, columns


def _drop_assigned(store: Any) -> None:
    """Remove documents ``engine assign --store`` added: they carry the previous clustering's layers."""
    dropped = 0
    while True:
        rows = store.query(f"{ASSIGNED_FIELD} == 1", output_fields=["id"])
        if not rows:
            break
        dropped += store.delete([r["id"] for r in rows])
    if dropped:
        log.warning(
            "labels: removed %d documents added by `engine assign --store` (placed in the previous "
            "clustering); re-run `engine assign --store` to add them to this one",
            dropped,
        )


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


def search_fields(columns: list[str]) -> list[str]:
    """Fields a search filter may name: the stored row's ``id`` and ``text``, labels, ``assigned``."""
    return ["id", "text", *columns, ASSIGNED_FIELD]


def search(
    query: str,
    encoder: Any,
    store: Any,
    columns: list[str],
    k: int = 10,
    cluster: int | None = None,
    filter: str = "",
) -> pd.DataFrame:
    """Nearest stored documents to ``query``; ``cluster`` adds the Milvus filter ``cluster == N``.

    ``filter`` can only narrow: it must be one expression on the run's fields (``id``, ``text``, the
    label ``columns``, ``assigned``) that Milvus parses (:mod:`engine.milvus.filters`).
    """
    from engine.milvus.filters import check_filter, combine

    check_search(query, k)
    user = check_filter(filter, search_fields(columns))
    if (user or cluster is not None) and not store.has_dynamic_field():
        raise EngineError("this run's collection has no cluster fields: re-run `engine run --restart`")
    if user:
        store.check_filter(user)
    expr = combine(user, f"cluster == {int(cluster)}" if cluster is not None else "")
    vector = encoder.encode([str(query)])
    hits = store.search_hits(vector, k, filter=expr, output_fields=["text", *columns])[0]
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
    # Ids may be any int64 (negative too): a missing hit is marked by its NaN score, not its id.
    hit_ids = np.zeros((len(vectors), k), dtype=np.int64)
    raw = np.full((len(vectors), k), np.nan, dtype=np.float32)
    for i, row in enumerate(hits):
        hit_ids[i, : len(row)] = [h["id"] for h in row]
        raw[i, : len(row)] = [h["distance"] for h in row]
    found = np.isfinite(raw)
    dist = to_euclidean(raw, store.metric).astype(np.float64)
    dist[~found] = np.inf
    out = pd.DataFrame({"id": ids, "text": texts})
    for c in columns:
        run_values = labels[c].to_numpy(dtype=np.int64)
        radius = neighbour_radius(graph.distances, run_values, min_samples)
        result = vote(lookup_labels(hit_ids, run_ids, run_values, found), dist, radius, min_samples)
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
