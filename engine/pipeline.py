"""The pipeline object: runs the stages in order and keeps every output in one run directory.

Each stage method reads what it needs from memory if an earlier method produced it in this
process, and from the run directory otherwise, so any stage can be re-run on saved outputs
(``engine cluster --out DIR`` after changing ``--min-cluster-size``) without redoing the rest.
Results are exposed scikit-learn style as ``name_`` attributes and returned as pandas objects.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from engine.config import RUN_CONFIG_NAME, EngineConfig
from engine.errors import EngineError
from engine.store import mask_uri

log = logging.getLogger("engine")

# Below this many documents an exact FLAT index is cheap and gives recall 1.0.
AUTO_FLAT_MAX_DOCS = 50_000
AUTO_HNSW_PARAMS = {"M": 16, "efConstruction": 200}
# --milvus-uri local-server: the engine runs a standalone Milvus (PyPI `milvus`) in DIR/milvus_server
# for the duration of the command. Measured 4.3x faster than Milvus Lite for the whole 20k graph
# (benchmarks/results/graph_20k*.json), so it is the better embedded choice past ~50k documents.
LOCAL_SERVER_URI = "local-server"
# The embedded default (no --milvus-uri, no $MILVUS_URI): a Milvus Lite file up to this many documents
# (no process to start, one file), the engine-managed local server above it. Lite 3.x searches at
# ~110-200 q/s (Python per hit) -> ~2 h for a 1M graph; the server does the 100k graph at >1,000 q/s.
AUTO_SERVER_MIN_DOCS = 50_000
# Scalar field on every stored row: 0 for the run's corpus, 1 for documents added by `engine assign --store`.
ASSIGNED_FIELD = "assigned"


def local_server_available() -> bool:
    """True when the PyPI ``milvus`` package (a bundled standalone server, Linux/macOS) is importable."""
    import importlib.util

    return sys.platform != "win32" and importlib.util.find_spec("milvus") is not None


def choose_embedded_milvus(root: Path, n_documents: int) -> str:
    """Milvus Lite for small corpora, the engine-managed server past ``AUTO_SERVER_MIN_DOCS``.

    A store already in the run directory wins, so later stage commands and resumed runs find
    their data whatever the corpus size.
    """
    lite = root / "milvus.db"
    if lite.exists():
        return str(lite)
    if (root / "milvus_server").exists():
        return LOCAL_SERVER_URI
    if n_documents > AUTO_SERVER_MIN_DOCS:
        if local_server_available():
            return LOCAL_SERVER_URI
        log.warning(
            "milvus: %d documents on Milvus Lite will be slow (the graph search runs at ~150 q/s); "
            "install the `milvus` package or pass --milvus-uri of a server",
            n_documents,
        )
    return str(lite)


@dataclass
class RunPaths:
    """Where each stage writes, relative to the run directory."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    corpus = property(lambda self: self.root / "corpus.parquet")
    corpus_stats = property(lambda self: self.root / "corpus_stats.json")
    embeddings = property(lambda self: self.root / "embeddings.npy")
    embeddings_meta = property(lambda self: self.root / "embeddings.json")
    clusters_npz = property(lambda self: self.root / "clusters.npz")
    cluster_embedding = property(lambda self: self.root / "cluster_embedding.npy")
    coords = property(lambda self: self.root / "coords.npy")
    labels = property(lambda self: self.root / "labels.parquet")
    clusters_json = property(lambda self: self.root / "clusters.json")
    report_html = property(lambda self: self.root / "report.html")
    map_html = property(lambda self: self.root / "map.html")
    map_png = property(lambda self: self.root / "map.png")
    summary = property(lambda self: self.root / "summary.json")
    config = property(lambda self: self.root / RUN_CONFIG_NAME)
    knn_graph = property(lambda self: self.root / "knn_graph.npz")
    labels_stored = property(lambda self: self.root / "labels_stored.json")


@dataclass
class RunSummary:
    """What a run did, printed at the end and saved as summary.json."""

    documents: int = 0
    clusters: int = 0
    noise: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def noise_share(self) -> float:
        return self.noise / self.documents if self.documents else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "documents": self.documents,
            "clusters": self.clusters,
            "noise": self.noise,
            "noise_share": round(self.noise_share, 4),
            "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
            "total_seconds": round(sum(self.stage_seconds.values()), 3),
            "outputs": self.outputs,
            "details": self.details,
        }

    def format(self) -> str:
        lines = [
            "",
            "== engine summary ==",
            f"documents     {self.documents:,}",
            f"clusters      {self.clusters:,}",
            f"noise         {self.noise:,} ({self.noise_share:.1%})",
        ]
        for key, value in self.details.items():
            lines.append(f"{key:<13} {value}")
        if self.stage_seconds:
            lines.append("time per stage")
            for stage, seconds in self.stage_seconds.items():
                lines.append(f"  {stage:<11} {seconds:8.1f} s")
            lines.append(f"  {'total':<11} {sum(self.stage_seconds.values()):8.1f} s")
        if self.outputs:
            lines.append("outputs")
            for name, path in self.outputs.items():
                lines.append(f"  {name:<15} {path}")
        return "\n".join(lines)


def zero_cluster_hint(n_documents: int, n_distinct: int, min_cluster_size: int) -> str:
    """Why a run found no cluster, and what to change (shown in the summary instead of a bare 0)."""
    if n_distinct <= 1:
        return (
            f"0 clusters: all {n_documents} documents have the same text, so there is nothing to tell apart; "
            "check --text-template / --text-column"
        )
    if n_documents < 2 * min_cluster_size:
        return (
            f"0 clusters: {n_documents} documents cannot form two groups of --min-cluster-size {min_cluster_size} "
            f"(HDBSCAN needs at least {2 * min_cluster_size}); lower --min-cluster-size (minimum 2) or add documents"
        )
    if n_distinct < 2 * min_cluster_size:
        return (
            f"0 clusters: only {n_distinct} distinct texts among {n_documents} documents; identical texts "
            "fall together, so there is little to split: check the corpus or --text-template"
        )
    return (
        f"0 clusters: no group of {min_cluster_size}+ documents is dense enough; try a smaller "
        "--min-cluster-size or --min-samples, or --cluster-selection-method leaf"
    )


def resolve_index(index: str, n_documents: int, index_params: dict | None) -> tuple[str, dict | None]:
    """``auto``: exact FLAT for small corpora, HNSW beyond (recall >= 0.95 at far higher QPS)."""
    if index.lower() != "auto":
        return index.upper(), index_params
    if n_documents <= AUTO_FLAT_MAX_DOCS:
        return "FLAT", index_params
    return "HNSW", index_params or dict(AUTO_HNSW_PARAMS)


class Pipeline:
    """corpus -> embed -> store -> graph -> cluster -> project -> report, in one run directory.

    >>> pipe = Pipeline(EngineConfig(corpus="news.csv", out="out", model="all-MiniLM-L6-v2"))
    >>> summary = pipe.run()
    >>> pipe.labels_.head()          # pandas DataFrame: id, text, cluster, probability, ...
    """

    def __init__(self, config: EngineConfig, progress: bool = True) -> None:
        self.config = config
        self.progress = progress
        self.paths = RunPaths(config.out_dir)
        self.timings_: dict[str, float] = {}
        self.corpus_stats_: dict[str, Any] = {}
        self.frame_: pd.DataFrame | None = None
        self.ingest_: Any = None
        self.graph_: Any = None
        self.clusters_: Any = None
        self.coords_: np.ndarray | None = None
        self.report_: Any = None
        self.labels_: pd.DataFrame | None = None
        self.details_: dict[str, Any] = {}
        self._server: Any = None

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the engine-managed Milvus server, if this pipeline started one."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    def resolved_milvus_uri(self) -> str:
        """--milvus-uri, else $MILVUS_URI, else the embedded default for this corpus size."""
        return self.config.explicit_milvus_uri or choose_embedded_milvus(self.paths.root, len(self.frame))

    def milvus_uri(self) -> str:
        """The URI to connect to; starts the engine-managed local server for ``local-server``."""
        uri = self.resolved_milvus_uri()
        if uri != LOCAL_SERVER_URI:
            return uri
        if self._server is None:
            from engine.server import LocalMilvusServer

            log.info("milvus: starting a local standalone server in %s", self.paths.root / "milvus_server")
            self._server = LocalMilvusServer(self.paths.root / "milvus_server", port=0).start()
        return self._server.uri

    # ---- helpers -------------------------------------------------------------------------
    @contextmanager
    def _stage(self, name: str):
        log.info("[%s] started", name)
        start = time.perf_counter()
        try:
            yield
        except Exception:
            server = self._server
            if server is not None and not server.running:
                code = getattr(server._proc, "returncode", None)
                raise EngineError(
                    f"the engine's Milvus server (pid {server.pid_}) stopped during the {name} stage"
                    f"{f' (exit code {code})' if code is not None else ''}; nothing is lost: re-run the same "
                    f"command to resume (server logs in {server.log_dir})"
                ) from None
            raise
        seconds = time.perf_counter() - start
        self.timings_[name] = self.timings_.get(name, 0.0) + seconds
        log.info("[%s] done in %.1f s", name, seconds)

    def _require(self, path: Path, stage: str) -> Path:
        if not path.exists():
            raise EngineError(f"{path} not found: run `engine {stage} --out {self.paths.root}` first")
        return path

    @property
    def frame(self) -> pd.DataFrame:
        if self.frame_ is None:
            path = self._require(self.paths.corpus, "embed CORPUS")
            self.frame_ = pd.read_parquet(path)
            if self.paths.corpus_stats.exists():
                self.corpus_stats_ = json.loads(self.paths.corpus_stats.read_text())
        return self.frame_

    def vectors(self) -> np.ndarray:
        """The embeddings as a read-only memory map, corpus order; checks the embed stage finished."""
        path = self._require(self.paths.embeddings, "embed CORPUS")
        vectors = np.load(path, mmap_mode="r")
        if len(vectors) != len(self.frame):
            raise EngineError(
                f"{path} holds {len(vectors)} vectors but the corpus has {len(self.frame)} documents: "
                f"re-run `engine embed` (add --restart if the corpus changed)"
            )
        meta = self._embeddings_meta()
        if meta and not meta.get("complete", False):
            raise EngineError(
                f"{path} is incomplete (the embed stage was interrupted): re-run `engine embed` to resume"
            )
        return vectors

    def _embeddings_meta(self) -> dict[str, Any]:
        if self.paths.embeddings_meta.exists():
            return json.loads(self.paths.embeddings_meta.read_text())
        return {}

    def _write_embeddings_meta(self, encoder: Any, complete: bool) -> None:
        """``complete`` flips to true only after ingest returns, so later stages refuse a half-embedded run."""
        meta = {"model": encoder.name, "dim": encoder.dim, "n": len(self.frame), "complete": complete}
        self.paths.embeddings_meta.write_text(json.dumps(meta))

    def open_store(self, dim: int | None = None):
        """A MilvusStore on the configured URI; the index is resolved from the corpus size."""
        from engine.store import MilvusStore

        cfg = self.config
        index_type, index_params = resolve_index(cfg.index, len(self.frame), cfg.index_params)
        self.details_["index"] = index_type
        store = MilvusStore(
            uri=self.milvus_uri(),
            token=cfg.resolved_milvus_token,
            collection=cfg.collection,
            dim=dim,
            metric=cfg.metric,
            index_type=index_type,
            index_params=index_params,
            search_params=cfg.search_params,
            db_name=cfg.db_name,
        )
        if self._server is not None:
            server = self._server
            store.alive = lambda: server.running
        return store

    # ---- stages --------------------------------------------------------------------------
    def load_corpus(self) -> pd.DataFrame:
        """Read the corpus file, build texts and ids, save ``corpus.parquet``."""
        from engine.corpus import load_corpus

        cfg = self.config
        if cfg.corpus is None:
            return self.frame
        with self._stage("corpus"):
            corpus = load_corpus(
                cfg.corpus,
                text_template=cfg.text_template,
                text_column=cfg.text_column,
                id_column=cfg.id_column,
                empty=cfg.empty,
                duplicates=cfg.duplicates,
                fmt=cfg.format,
                encoding=cfg.encoding,
                column_names=cfg.columns,
                limit=cfg.limit,
            )
            self.paths.root.mkdir(parents=True, exist_ok=True)
            frame = corpus.frame
            # Parquet needs one type per column: source columns of mixed types are kept as text.
            for column in frame.columns:
                if frame[column].dtype == object and column != "text":
                    frame[column] = frame[column].map(lambda v: None if v is None or v != v else str(v))
            frame.to_parquet(self.paths.corpus, index=False)
            self.paths.corpus_stats.write_text(json.dumps(corpus.stats, indent=2))
            self.config.save(self.paths.config)
        self.frame_ = frame
        self.corpus_stats_ = corpus.stats
        log.info(
            "corpus: %d documents (%d rows read, %d empty texts %s, %d duplicate texts %s)",
            corpus.stats["documents"],
            corpus.stats["rows_read"],
            corpus.stats["empty_texts"],
            "dropped" if cfg.empty == "drop" else "",
            corpus.stats["duplicate_texts"],
            "dropped" if cfg.duplicates == "drop" else "kept",
        )
        return frame

    def check_before_embed(self, graph: bool = False) -> None:
        """What can be checked once the corpus is read and before the model loads (minutes of work).

        ``graph``: also the graph stage's needs (``--k`` below the number of documents).
        """
        from engine.store import LITE_INDEX_TYPES, SERVER_INDEX_TYPES, is_lite_uri

        cfg = self.config
        n = len(self.frame)
        if graph and cfg.k >= n:
            raise EngineError(
                f"--k ({cfg.k}) must be smaller than the number of documents ({n}): pass --k {max(1, n - 1)} "
                "or less"
            )
        uri = self.resolved_milvus_uri()
        lite = uri != LOCAL_SERVER_URI and is_lite_uri(uri)
        index_type, _ = resolve_index(cfg.index, n, cfg.index_params)
        allowed = LITE_INDEX_TYPES if lite else SERVER_INDEX_TYPES
        if index_type not in allowed:
            raise EngineError(
                f"--index {index_type} is not available on {'Milvus Lite' if lite else 'a Milvus server'}; "
                f"choose one of {', '.join(allowed)}"
            )
        self._time_values(self.frame)  # a bad --time-column fails here, not after minutes of embedding

    def embed(self):
        """Embed every document into ``embeddings.npy`` and Milvus, resuming what is already stored."""
        from engine.embed import load_encoder
        from engine.ingest import ingest

        cfg = self.config
        frame = self.frame
        self.check_before_embed()
        meta = self._embeddings_meta()
        with self._stage("embed"):
            encoder = load_encoder(
                cfg.model,
                device=cfg.device,
                precision=cfg.precision,
                max_length=cfg.max_length,
                batch_size=cfg.batch_size,
            )
            self._warn_language(encoder.name)
            if meta and not cfg.restart and meta.get("model") != encoder.name:
                raise EngineError(
                    f"{self.paths.embeddings} holds vectors of model {meta.get('model')!r}, not {encoder.name!r}: "
                    "add --restart to re-embed, or use another --out"
                )
            self._write_embeddings_meta(encoder, complete=False)
            with self.open_store(dim=encoder.dim) as store:
                result = ingest(
                    frame,
                    encoder,
                    store,
                    self.paths.embeddings,
                    restart=cfg.restart,
                    progress=self.progress,
                    fingerprint_key=f"{encoder.name}|{encoder.dim}|max_length={cfg.max_length}",
                )
            self._write_embeddings_meta(encoder, complete=True)
        self.ingest_ = result
        self.details_["model"] = f"{encoder.name} ({encoder.dim}-d, {encoder.device})"
        return result

    def _warn_language(self, model_name: str) -> str | None:
        """Warn (log, summary, report) when an English-only model meets a mostly non-Latin corpus."""
        from engine.language import model_language_warning

        warning = model_language_warning(model_name, self.frame["text"].tolist())
        if warning:
            if "warning" not in self.details_:
                log.warning("warning: %s", warning)
            self.details_["warning"] = warning
        return warning

    def build_graph(self):
        """The k-nearest-neighbour graph (CSR, true Euclidean distances) from Milvus or exact search."""
        from engine.graph import build_knn_graph, exact_knn

        cfg = self.config
        vectors = self.vectors()
        if cfg.k >= len(vectors):
            raise EngineError(f"--k ({cfg.k}) must be smaller than the number of documents ({len(vectors)})")
        with self._stage("graph"):
            if cfg.graph_source == "exact":
                graph = exact_knn(vectors, cfg.k)
                self.details_["graph"] = f"exact k={cfg.k}"
            else:
                ids = self.frame["id"].to_numpy(dtype=np.int64)
                with self.open_store(dim=vectors.shape[1]) as store:
                    # Always (re)build: the stored index may come from other --index settings.
                    params = store.build_index()
                    log.info("graph: %s index built with %s", store.index_type, params or "defaults")
                    tuning = self._tune_search(store, vectors, ids)
                    graph = build_knn_graph(
                        store,
                        vectors,
                        ids,
                        k=cfg.k,
                        workers=cfg.workers,
                        batch_size=cfg.search_batch,
                        progress=self.progress,
                        search_params=tuning.search_params if tuning else None,
                    )
                self.details_["graph"] = f"milvus {self.details_.get('index', '')} k={cfg.k}"
                if tuning is not None:
                    graph.meta["recall_check"] = tuning.to_dict()
                    self.details_["graph"] += (
                        f", recall@{cfg.k} {tuning.recall:.3f} on {tuning.sample:,} sampled queries "
                        f"(search {tuning.search_params}{'' if tuning.met else ', BELOW target'})"
                    )
            graph.save(self.paths.root)
        self.graph_ = graph
        return graph

    def _tune_search(self, store: Any, vectors: np.ndarray, ids: np.ndarray):
        """Measure (and, unless the user fixed the knob, tune) recall@k on a sample; None for exact indexes."""
        from engine.graph.tune import EXACT_INDEXES, SEARCH_KNOBS, tune_search_params

        cfg = self.config
        if not cfg.recall_sample or store.index_type in EXACT_INDEXES:
            return None
        user_params = dict(cfg.search_params or {})
        knob = SEARCH_KNOBS.get(store.index_type)
        log.info("graph: checking recall@%d on %d sampled queries", cfg.k, min(cfg.recall_sample, len(ids)))
        return tune_search_params(
            store,
            vectors,
            ids,
            k=cfg.k,
            target_recall=cfg.target_recall,
            sample=cfg.recall_sample,
            search_params=user_params,
            tune=knob is not None and knob not in user_params,
            workers=cfg.workers,
            batch_size=cfg.search_batch,
            seed=cfg.seed,
            progress=False,
        )

    def _graph(self):
        if self.graph_ is None:
            from engine.graph import KnnGraph

            self._require(self.paths.knn_graph, "graph")
            self.graph_ = KnnGraph.load(self.paths.root)
        return self.graph_

    def cluster(self):
        """Cluster layers on a node embedding of the kNN graph (default), or HDBSCAN* on the raw graph."""
        from engine.cluster import cluster_graph
        from engine.cluster.noise import assign_noise
        from engine.cluster.space import cluster_embedding_space

        cfg = self.config
        graph = self._graph()
        with self._stage("cluster"):
            if cfg.cluster_space == "graph":
                result = cluster_graph(
                    graph,
                    min_cluster_size=cfg.min_cluster_size,
                    min_samples=cfg.effective_min_samples,
                    cluster_selection_method=cfg.cluster_selection_method,
                    cluster_selection_epsilon=cfg.cluster_selection_epsilon,
                    backend=cfg.cluster_backend,
                    vectors=self.vectors() if cfg.cluster_backend != "cpu" else None,
                )
                result.noise_before = result.noise_fraction
                if cfg.assign_noise:
                    labels, assigned = assign_noise(result.labels, graph.indices, graph.distances)
                    result.labels, result.assigned = labels, assigned
                self.details_["cluster"] = f"HDBSCAN* on the kNN graph ({result.backend})"
                self.paths.cluster_embedding.unlink(missing_ok=True)
            else:
                result = cluster_embedding_space(
                    graph,
                    min_cluster_size=cfg.min_cluster_size,
                    min_samples=cfg.effective_min_samples,
                    n_clusters=cfg.n_clusters,
                    assign=cfg.assign_noise,
                    seed=cfg.seed,
                    vectors=self.vectors(),
                )
                layers = result.layers
                self.details_["cluster"] = (
                    f"{layers.n_layers} layers on a {result.embedding.shape[1]}-d node embedding of the graph "
                    f"({', '.join(str(layers.n_clusters(i)) for i in range(layers.n_layers))} clusters); "
                    f"primary layer {layers.primary}: {layers.rule}"
                )
                np.save(self.paths.cluster_embedding, result.embedding)
            save = {
                "labels": result.labels,
                "probabilities": result.probabilities,
                "outlier_scores": result.outlier_scores,
                "noise_before": np.float64(result.noise_before),
            }
            if result.assigned is not None:
                save["assigned"] = result.assigned
            if result.layers is not None:
                save["layers"] = np.stack(result.layers.labels).astype(np.int32)
                save["layer_strengths"] = np.stack(result.layers.strengths).astype(np.float32)
                save["persistence"] = np.asarray(result.layers.persistence, dtype=np.float64)
                save["primary"] = np.int64(result.layers.primary)
            np.savez(self.paths.clusters_npz, **save)
        noise_after = result.noise_fraction
        if cfg.assign_noise:
            self.details_["noise"] = (
                f"{result.noise_before:.1%} before --assign-noise, {noise_after:.1%} after"
            )
        self.clusters_ = result
        return result

    def _clusters(self) -> dict[str, np.ndarray]:
        if self.clusters_ is not None:
            r = self.clusters_
            out = {"labels": r.labels, "probabilities": r.probabilities, "outlier_scores": r.outlier_scores}
            if r.assigned is not None:
                out["assigned"] = r.assigned
            if r.layers is not None:
                out["layers"] = np.stack(r.layers.labels)
                out["layer_strengths"] = np.stack(r.layers.strengths)
                out["primary"] = np.int64(r.layers.primary)
            return out
        with np.load(self._require(self.paths.clusters_npz, "cluster")) as data:
            return {key: data[key] for key in data.files}

    def project(self) -> np.ndarray:
        """2-D coordinates from the same kNN graph (no second neighbour search).

        ``--map-method embedding`` (default when the cluster stage left its node embedding): start
        from that embedding and refine on the graph (fast at 1M on 2 cores); ``umap``: umap-learn
        (or cuML) on the graph, as before.
        """
        from engine.project import layout_from_embedding, project_2d

        cfg = self.config
        graph = self._graph()
        use_embedding = cfg.map_method == "embedding" or (
            cfg.map_method == "auto" and self.paths.cluster_embedding.exists() and cfg.map_backend != "cuml"
        )
        if use_embedding:
            emb = np.load(self._require(self.paths.cluster_embedding, "cluster"))
            if len(emb) != graph.n:
                raise EngineError("cluster_embedding.npy does not match the graph: re-run `engine cluster`")
            with self._stage("map"):
                coords = layout_from_embedding(graph, emb, random_state=cfg.seed)
                np.save(self.paths.coords, coords)
            self.details_["map"] = "node embedding of the graph, started from the cluster embedding"
            self.coords_ = coords
            return coords
        with self._stage("map"):
            self.details_["map"] = "UMAP of the graph"
            coords = project_2d(
                graph,
                n_neighbors=min(cfg.n_neighbors, graph.indices.shape[1]),
                min_dist=cfg.min_dist,
                random_state=cfg.seed,
                backend=cfg.map_backend,
                vectors=self.vectors() if cfg.map_backend != "cpu" else None,
            )
            np.save(self.paths.coords, coords)
        self.coords_ = coords
        return coords

    def report(self):
        """labels.parquet, clusters.json, report.html, map.html and map.png."""
        from engine.corpus import with_source_columns
        from engine.report import build_layers_report, build_report
        from engine.show.map import write_map

        cfg = self.config
        frame = self.frame
        clusters = self._clusters()
        coords = (
            self.coords_ if self.coords_ is not None else np.load(self._require(self.paths.coords, "map"))
        )
        if len(clusters["labels"]) != len(frame) or len(coords) != len(frame):
            raise EngineError(
                "saved clusters/map do not match the corpus size: re-run `engine graph`, `cluster` and `map`"
            )
        with self._stage("report"):
            columns = {
                "id": frame["id"].to_numpy(),
                "text": frame["text"].to_numpy(),
                "cluster": clusters["labels"].astype(np.int64),
                "probability": clusters["probabilities"].astype(np.float32),
                "outlier_score": clusters["outlier_scores"].astype(np.float32),
                "x": coords[:, 0].astype(np.float32),
                "y": coords[:, 1].astype(np.float32),
            }
            layers = clusters.get("layers")
            layer_columns: list[str] = []
            if layers is not None:
                for i, layer in enumerate(layers):
                    layer_columns.append(f"layer_{i}")
                    columns[f"layer_{i}"] = layer.astype(np.int64)
            if cfg.assign_noise and "assigned" in clusters:
                columns["assigned"] = clusters["assigned"].astype(bool)
            labels = pd.DataFrame(columns)
            output = with_source_columns(labels, frame, self.corpus_stats_)
            output.to_parquet(self.paths.labels, index=False)
            if layers is not None:
                report = build_layers_report(
                    labels,
                    layers,
                    int(clusters["primary"]),
                    strengths=clusters.get("layer_strengths"),
                    n_keywords=cfg.n_keywords,
                    n_representatives=cfg.n_representatives,
                    vectors=self.vectors(),
                )
            else:
                report = build_report(
                    labels,
                    n_keywords=cfg.n_keywords,
                    n_representatives=cfg.n_representatives,
                    vectors=self.vectors(),
                )
            report.over_time = self._over_time(frame, labels["cluster"].to_numpy())
            warning = self._warn_language(self._embeddings_meta().get("model") or cfg.model)
            report.warnings = [warning] if warning else []
            source = Path(self.config.corpus).name if self.config.corpus else self.paths.root.name
            title = f"Document map: {source}"
            write_map(  # first: report.html links to the map only when map.html exists
                labels,
                self.paths.map_html,
                self.paths.map_png,
                title=title,
                keywords=report.keywords_by_cluster(),
                layers=report.layers,
            )
            report.write(self.paths.root)
        self.labels_ = output
        self.report_ = report
        return report

    def _time_values(self, frame: pd.DataFrame) -> pd.Series | None:
        """--time-column parsed to timestamps; EngineError naming the column when absent or not dates."""
        from engine.corpus import source_columns
        from engine.timeline import parse_times

        column = self.config.time_column
        if not column:
            return None
        stored = {v: k for k, v in source_columns(frame, self.corpus_stats_).items()}
        if column not in stored:
            raise EngineError(
                f"--time-column {column!r} is not a column of the corpus (columns: {', '.join(stored)})"
            )
        return parse_times(frame[stored[column]], column)

    def _over_time(self, frame: pd.DataFrame, labels: np.ndarray) -> dict | None:
        """--time-column: per-cluster counts per period (engine.timeline), or None."""
        from engine.timeline import topics_over_time

        times = self._time_values(frame)
        if times is None:
            return None
        column = self.config.time_column
        result = topics_over_time(labels, times, column)
        log.info(
            "report: topics over time by %s, %d periods of a %s",
            column,
            len(result["periods"]),
            result["period"],
        )
        return result

    # ---- using the clusters ----------------------------------------------------------------
    def _run_labels(self) -> pd.DataFrame:
        if self.labels_ is None:
            self.labels_ = pd.read_parquet(self._require(self.paths.labels, "report"))
        return self.labels_

    def _label_columns(self, labels: pd.DataFrame) -> list[str]:
        from engine.assign import label_columns
        from engine.corpus import source_columns

        _ = self.frame  # loads the corpus stats too
        return label_columns(labels, exclude=set(source_columns(self.frame, self.corpus_stats_).values()))

    def store_labels(self) -> int:
        """Write every label column of labels.parquet onto the Milvus rows, so searches filter by cluster.

        Re-running (after ``engine cluster`` + ``engine report``) rewrites them.
        """
        from engine.corpus import engine_id_column

        labels = self._run_labels()
        columns = self._label_columns(labels)
        frame = self.frame
        ids = labels[engine_id_column(labels)].to_numpy(dtype=np.int64)
        if len(ids) != len(frame) or not np.array_equal(ids, frame["id"].to_numpy(dtype=np.int64)):
            raise EngineError("labels.parquet does not match the corpus: re-run `engine report`")
        vectors = self.vectors()
        with self._stage("labels"):
            with self.open_store(dim=vectors.shape[1]) as store:
                if not store.has_collection():
                    log.warning(
                        "labels: Milvus holds no collection %s any more; cluster labels are not stored in Milvus "
                        "(re-run `engine embed --out DIR` to rebuild it from embeddings.npy, then `engine report`)",
                        store.collection,
                    )
                    return 0
                if not store.has_dynamic_field():
                    log.warning(
                        "labels: collection %s was created by an older engine without dynamic fields; cluster "
                        "labels are not stored in Milvus (re-run with --restart to enable `engine search --cluster`)",
                        store.collection,
                    )
                    return 0
                from tqdm.auto import tqdm

                fields = {
                    **{c: labels[c].to_numpy() for c in columns},
                    ASSIGNED_FIELD: np.zeros(len(ids), np.int64),
                }
                with tqdm(
                    total=len(ids), desc="labels->milvus", unit="doc", disable=not self.progress
                ) as bar:
                    n = store.upsert_labels(ids, vectors, frame["text"].tolist(), fields, progress=bar.update)
                store.flush()
        self.paths.labels_stored.write_text(json.dumps({"columns": columns, "rows": n}))
        log.info("labels: %s written to %d Milvus rows (filter e.g. 'cluster == 3')", ", ".join(columns), n)
        self.details_["labels"] = f"{', '.join(columns)} stored in Milvus ({n:,} rows)"
        return n

    def _encoder(self):
        from engine.embed import load_encoder

        cfg = self.config
        meta = self._embeddings_meta()
        encoder = load_encoder(
            cfg.model,
            device=cfg.device,
            precision=cfg.precision,
            max_length=cfg.max_length,
            batch_size=cfg.batch_size,
        )
        if meta and meta.get("model") not in (None, encoder.name):
            raise EngineError(
                f"the run was embedded with {meta.get('model')!r}, not {encoder.name!r} (option model)"
            )
        return encoder

    def search(self, query: str, k: int = 10, cluster: int | None = None, filter: str = "") -> pd.DataFrame:
        """Nearest stored documents to ``query``; ``cluster`` adds the Milvus filter ``cluster == N``."""
        if not str(query).strip():
            raise EngineError("search: the query text is empty")
        if k < 1:
            raise EngineError(f"--k must be >= 1, got {k}")
        expr = [f"({filter})"] if filter else []
        if cluster is not None:
            expr.append(f"cluster == {int(cluster)}")
        encoder = self._encoder()
        vector = encoder.encode([str(query)])
        labels = self._run_labels()
        columns = self._label_columns(labels)
        with self.open_store(dim=vector.shape[1]) as store:
            if cluster is not None and not store.has_dynamic_field():
                raise EngineError(
                    "this run's collection has no cluster fields: re-run `engine run --restart`"
                )
            hits = store.search_hits(vector, k, filter=" and ".join(expr), output_fields=["text", *columns])[
                0
            ]
        out = pd.DataFrame(hits, columns=["id", "distance", *columns, "text"])
        return out.rename(columns={"distance": "score"})

    def assign(
        self, frame: pd.DataFrame, k: int = 15, store: bool = False, source: str = "new"
    ) -> pd.DataFrame:
        """Place new documents (``frame`` with a ``text`` column) in the run's clusters (engine.assign rule).

        Returns one row per document: ``id`` (stable, from ``source`` and the frame's ``id`` or
        position), the label columns with ``<label>_confidence`` and ``<label>_reason``, the nearest
        stored id and its distance. ``store=True`` also upserts the documents with their labels into
        the run's collection (same ids on a re-run: no duplicates).
        """
        from engine.assign import assigned_ids, lookup_labels, neighbour_radius, vote
        from engine.corpus import engine_id_column
        from engine.graph.distances import to_euclidean

        if "text" not in frame.columns:
            raise EngineError("assign: the frame needs a 'text' column")
        if k < 1:
            raise EngineError(f"--k must be >= 1, got {k}")
        texts = frame["text"].fillna("").astype(str).tolist()
        keys = frame["id"] if "id" in frame.columns else pd.Series(np.arange(len(frame)))
        ids = assigned_ids(keys, source)
        labels = self._run_labels()
        columns = self._label_columns(labels)
        run_ids = labels[engine_id_column(labels)].to_numpy(dtype=np.int64)
        graph = self._graph()
        m = self.config.min_samples or self.config.min_cluster_size
        encoder = self._encoder()
        with self._stage("assign"):
            vectors = encoder.encode(texts) if texts else np.empty((0, encoder.dim), np.float32)
            with self.open_store(dim=encoder.dim) as st:
                # Only the run's own documents vote: rows stored by an earlier `assign --store` are skipped
                # inside Milvus, so they do not take neighbour slots (and re-runs give the same answer).
                only_run = f"{ASSIGNED_FIELD} == 0" if self.paths.labels_stored.exists() else ""
                hits = st.search_hits(vectors, k, filter=only_run) if len(vectors) else []
                hit_ids = np.full((len(vectors), k), -1, dtype=np.int64)
                raw = np.full((len(vectors), k), np.nan, dtype=np.float32)
                for i, row in enumerate(hits):
                    hit_ids[i, : len(row)] = [h["id"] for h in row]
                    raw[i, : len(row)] = [h["distance"] for h in row]
                dist = to_euclidean(raw, st.metric).astype(np.float64)
                dist[hit_ids < 0] = np.inf
                out = pd.DataFrame({"id": ids, "text": texts})
                for c in columns:
                    run_values = labels[c].to_numpy(dtype=np.int64)
                    radius = neighbour_radius(graph.distances, run_values, m)
                    result = vote(lookup_labels(hit_ids, run_ids, run_values), dist, radius, m)
                    out[c] = result.label
                    out[f"{c}_confidence"] = result.confidence
                    out[f"{c}_reason"] = result.reason.astype(str)
                out["nearest_id"] = hit_ids[:, 0] if len(out) else np.empty(0, np.int64)
                out["nearest_distance"] = (
                    dist[:, 0].astype(np.float32) if len(out) else np.empty(0, np.float32)
                )
                if store and len(out):
                    fields = {c: out[c].to_numpy() for c in columns}
                    st.upsert_labels(
                        ids, vectors, texts, {**fields, ASSIGNED_FIELD: np.ones(len(ids), np.int64)}
                    )
                    st.flush()
        return out

    # ---- whole run -----------------------------------------------------------------------
    def run(self) -> RunSummary:
        """Every stage in order; returns (and saves) the summary."""
        self.config.validate()
        try:
            self.load_corpus()
            self.check_before_embed(graph=True)
            self.embed()
            self.build_graph()
            self.cluster()
            self.project()
            self.report()
            self.store_labels()
        finally:
            self.close()
        return self.summary()

    def summary(self) -> RunSummary:
        labels = self.labels_ if self.labels_ is not None else pd.read_parquet(self.paths.labels)
        cluster_ids = labels["cluster"].to_numpy()
        summary = RunSummary(
            documents=len(labels),
            clusters=int(len(np.unique(cluster_ids[cluster_ids >= 0]))),
            noise=int((cluster_ids < 0).sum()),
            stage_seconds=dict(self.timings_),
            details=dict(self.details_),
        )
        if summary.clusters == 0:
            summary.details["hint"] = zero_cluster_hint(
                len(labels), int(labels["text"].nunique()), self.config.min_cluster_size
            )
        if "assigned" in labels.columns:
            after = summary.noise
            before = after + int(labels["assigned"].sum())
            summary.details["noise"] = (
                f"{before / max(len(labels), 1):.1%} before --assign-noise, {after / max(len(labels), 1):.1%} after"
            )
        layer_cols = [c for c in labels.columns if c.startswith("layer_")]
        if layer_cols:
            summary.details["layers"] = "; ".join(
                f"{c}: {int(labels[c].max()) + 1} clusters, {float((labels[c] < 0).mean()):.1%} noise"
                for c in layer_cols
            )
        stats = self.corpus_stats_
        if stats:
            summary.details["corpus"] = (
                f"{stats.get('rows_read')} rows read; {stats.get('empty_texts')} empty texts "
                f"({'dropped' if stats.get('empty_policy') == 'drop' else 'error'}); "
                f"{stats.get('duplicate_texts')} duplicate texts ({stats.get('duplicate_policy')})"
            )
        if self.ingest_ is not None:
            r = self.ingest_
            summary.details["ingest"] = (
                f"{r.n_embedded} embedded ({r.n_changed} of them changed since stored), {r.n_existing} already "
                f"stored, {r.n_vanished} dropped (no longer in the corpus), {r.docs_per_s:.1f} docs/s"
            )
        uri = self.resolved_milvus_uri() if self.paths.corpus.exists() else self.config.resolved_milvus_uri
        summary.details["milvus"] = (
            f"local server ({self.paths.root / 'milvus_server'})"
            if uri == LOCAL_SERVER_URI
            else mask_uri(uri)
        )
        for name in (
            "map_html",
            "map_png",
            "report_html",
            "labels",
            "clusters_json",
            "knn_graph",
            "embeddings",
        ):
            path = getattr(self.paths, name)
            if path.exists():
                summary.outputs[path.name] = str(path)
        self.paths.summary.write_text(json.dumps(summary.to_dict(), indent=2))
        summary.outputs["summary"] = str(self.paths.summary)
        return summary
