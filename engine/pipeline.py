"""The pipeline object: sequences the stages of :mod:`engine.stages` in one run directory.

It decides nothing a stage owns. It keeps each stage's result in memory for the next one (and
reads it back from the run directory when a stage runs on its own, e.g. ``engine cluster --out DIR``
after changing ``--min-cluster-size``), opens the run's Milvus store (starting the engine-managed
server when the store says so), times the stages and writes the summary. Results are exposed
scikit-learn style as ``name_`` attributes.
"""

from __future__ import annotations

import contextlib
import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from engine import stages
from engine.config import EngineConfig
from engine.errors import EngineError
from engine.milvus.client import mask_uri
from engine.milvus.embedded import LOCAL_SERVER_URI, choose_embedded_milvus
from engine.rundir import RunPaths
from engine.summary import RunSummary

log = logging.getLogger("engine")


class Pipeline:
    """corpus -> embed -> store -> graph -> cluster -> layout -> report, in one run directory.

    >>> pipe = Pipeline(EngineConfig.from_flat(corpus="news.csv", out="out", model="all-MiniLM-L6-v2"))
    >>> summary = pipe.run()
    >>> pipe.labels_.head()          # pandas DataFrame: id, text, cluster, probability, ...
    """

    def __init__(self, config: EngineConfig, progress: bool = True) -> None:
        self.config = config
        self.progress = progress
        self.paths = RunPaths(config.out_dir)
        self.timings_: dict[str, float] = {}
        self.details_: dict[str, Any] = {}
        self.corpus_: stages.CorpusData | None = None
        self.ingest_: Any = None
        self.graph_: Any = None
        self.clusters_: Any = None
        self.coords_: np.ndarray | None = None
        self.report_: Any = None
        self.labels_: pd.DataFrame | None = None
        self._server: Any = None
        #: Set by a reader while another command holds the run (engine.rundir.reading): use this Milvus.
        self.use_milvus_uri: str | None = None
        self._encoder_cache: Any = None
        self._ray: contextlib.ExitStack | None = None
        self._ray_info: Any = None

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Leave the Ray cluster (stop it when local), stop the engine-managed Milvus server."""
        if self._ray is not None:
            self._ray.close()
            self._ray = self._ray_info = None
        if self._server is not None:
            self._server.stop()
            self._server = None

    # ---- what earlier stages produced (this process, else the run directory) --------------
    @property
    def corpus(self) -> stages.CorpusData:
        if self.corpus_ is None:
            self.corpus_ = stages.load_corpus_data(self.paths)
        return self.corpus_

    @property
    def frame(self) -> pd.DataFrame:
        return self.corpus.frame

    def vectors(self) -> np.ndarray:
        """The embeddings as a read-only memory map, corpus order; checks the embed stage finished.

        Without ``embeddings.npy`` (deleted, or embedded on another machine into the same Milvus), the
        file is first rebuilt from the run's Milvus collection (:func:`engine.stages.restore_vectors`).
        """
        from engine.ingest import load_vectors

        if not self.paths.embeddings.exists() and self.paths.corpus.exists() and self._milvus_may_hold_run():
            stages.restore_vectors(self.frame, self.open_store, self.paths, progress=self.progress)
        return load_vectors(self.paths.require(self.paths.embeddings, "embed CORPUS"), len(self.frame))

    def graph(self) -> Any:
        if self.graph_ is None:
            self.graph_ = stages.load_graph(self.paths)
        return self.graph_

    def clusters(self) -> dict[str, np.ndarray]:
        if self.clusters_ is not None:
            return stages.cluster_arrays(self.clusters_)
        return stages.load_clusters(self.paths)

    def coords(self) -> np.ndarray:
        return self.coords_ if self.coords_ is not None else stages.load_coords(self.paths)

    def labels(self) -> pd.DataFrame:
        if self.labels_ is None:
            self.labels_ = stages.load_labels(self.paths)
        return self.labels_

    # ---- Milvus -----------------------------------------------------------------------------
    def resolved_milvus_uri(self) -> str:
        """--milvus-uri, else $MILVUS_URI, else the embedded default for this corpus size."""
        if self.use_milvus_uri:
            return self.use_milvus_uri
        return self.config.store.explicit_milvus_uri or choose_embedded_milvus(
            self.paths.root, len(self.frame)
        )

    def _milvus_may_hold_run(self) -> bool:
        """Whether the run's Milvus can exist: a server, or the run directory's Lite file / local server
        (asking an embedded Milvus that was never created would create an empty one)."""
        from engine.milvus.client import is_lite_uri

        uri = self.resolved_milvus_uri()
        if uri == LOCAL_SERVER_URI:
            return self.paths.milvus_server.exists()
        return not is_lite_uri(uri) or Path(uri).exists()

    def milvus_uri(self) -> str:
        """The URI to connect to; starts the engine-managed local server for ``local-server``."""
        uri = self.resolved_milvus_uri()
        if uri != LOCAL_SERVER_URI:
            return uri
        if self._server is None:
            from engine.milvus.server import LocalMilvusServer

            log.info("milvus: starting a local standalone server in %s", self.paths.milvus_server)
            self._server = LocalMilvusServer(self.paths.milvus_server, port=0).start()
        return self._server.uri

    def open_store(self, dim: int | None = None):
        """The run's MilvusStore (:func:`engine.stages.open_store`: the index follows the corpus size)."""
        store = stages.open_store(self.config.store, self.milvus_uri(), len(self.frame), dim)
        self.details_["index"] = store.index_type
        if self._server is not None:
            server = self._server
            store.alive = lambda: server.running
        return store

    # ---- Ray (--ray) ------------------------------------------------------------------------
    def ray_cluster(self) -> Any:
        """The Ray cluster of ``--ray`` (connected once per pipeline), None without --ray."""
        address = self.config.distributed.ray
        if address is None:
            return None
        if self._ray is None:
            from engine.distributed.cluster import ray_cluster

            stack = contextlib.ExitStack()
            self._ray_info = stack.enter_context(ray_cluster(address))
            self._ray = stack
            plan = self._ray_info.plan(self.config.distributed.ray_workers)
            self.details_["ray"] = f"{address}: {len(self._ray_info.nodes)} node(s); {plan}"
            if address != "local" and self.resolved_milvus_uri() == LOCAL_SERVER_URI:
                log.warning(
                    "ray: --milvus-uri local-server listens on this machine only; workers on other nodes "
                    "cannot reach it (use a Milvus server URI they can reach)"
                )
        return self._ray_info

    def _remote_encoder(self) -> Any:
        """--ray: the RayEncoder factory for :func:`engine.stages.embed_corpus` (None without --ray)."""
        info = self.ray_cluster()
        if info is None:
            return None
        from engine.distributed.embed import RayEncoder

        d = self.config.distributed
        return lambda settings: RayEncoder(
            settings,
            info.gpus,
            info.replicas(d.ray_workers),
            d.ray_block,
            self.paths.ray_blocks,
            self.progress,
        )

    # ---- sequencing -------------------------------------------------------------------------
    @contextmanager
    def _stage(self, name: str):
        log.info("[%s] started", name)
        start = time.perf_counter()
        try:
            yield
        except Exception:
            server = self._server
            if server is not None and not server.running:
                code = server.exit_code
                raise EngineError(
                    f"the engine's Milvus server (pid {server.pid_}) stopped during the {name} stage"
                    f"{f' (exit code {code})' if code is not None else ''}; nothing is lost: re-run the same "
                    f"command to resume (server logs in {server.log_dir})"
                ) from None
            raise
        seconds = time.perf_counter() - start
        self.timings_[name] = self.timings_.get(name, 0.0) + seconds
        log.info("[%s] done in %.1f s", name, seconds)

    def _warn_language(self, model_name: str) -> str | None:
        warning = stages.language_warning(self.frame, model_name)
        if warning:
            if "warning" not in self.details_:
                log.warning("warning: %s", warning)
            self.details_["warning"] = warning
        return warning

    def load_corpus(self) -> pd.DataFrame:
        """Read the corpus file (``corpus.parquet``); without a corpus option, the saved one."""
        if self.config.corpus.corpus is None:
            return self.frame
        with self._stage("corpus"):
            self.corpus_ = stages.read_corpus(self.config.corpus, self.paths)
            self.config.save(self.paths.config)
        return self.frame

    def check_before_embed(self, graph: bool = False) -> None:
        """What can be checked once the corpus is read and before the model loads (minutes of work).

        ``graph``: also the graph stage's needs (``--k`` below the number of documents).
        """
        cfg = self.config
        n = len(self.frame)
        if graph:
            stages.check_k(cfg.graph.k, n)
        stages.check_index(cfg.store, self.resolved_milvus_uri(), n)
        stages.time_values(self.corpus, cfg.report.time_column)  # a bad --time-column fails before the model
        if cfg.report.class_column:
            stages.source_column(self.corpus, cfg.report.class_column, "--class-column")
        if cfg.report.topics:
            from engine.zeroshot import parse_topics

            parse_topics(cfg.report.topics)
        self.ray_cluster()  # --ray: an address that does not answer fails here, before the model loads

    def embed(self):
        """Embed every document into ``embeddings.npy`` and Milvus, resuming what is already stored."""
        self.check_before_embed()
        # the corpus tells the language before any model loads; the resolved name is checked again after
        self._warn_language(self.config.embed.model)
        with self._stage("embed"):
            result = stages.embed_corpus(
                self.frame,
                self.config.embed,
                self.open_store,
                self.paths,
                progress=self.progress,
                remote_encoder=self._remote_encoder(),
            )
        self._warn_language(result.model)
        self.ingest_ = result.ingest
        self.details_["model"] = result.detail
        return result.ingest

    def build_graph(self):
        """The k-nearest-neighbour graph (CSR, true Euclidean distances) from Milvus or exact search."""
        cfg = self.config
        vectors = self.vectors()
        stages.check_k(cfg.graph.k, len(vectors))
        with self._stage("graph"):
            if stages.graph_source(cfg.graph.graph_source, len(vectors)) in ("exact", "partition"):
                graph = stages.build_graph(vectors, None, cfg.graph, None, self.paths)
            else:
                ids = self.frame["id"].to_numpy(dtype=np.int64)
                knn = None
                if self.ray_cluster() is not None:
                    from engine.distributed.graph import ray_knn_graph as knn
                with self.open_store(dim=vectors.shape[1]) as store:
                    graph = stages.build_graph(
                        vectors,
                        ids,
                        cfg.graph,
                        store,
                        self.paths,
                        seed=cfg.seed,
                        progress=self.progress,
                        knn=knn,
                    )
        self.details_["graph"] = graph.meta["detail"]
        self.graph_ = graph
        return graph

    def cluster(self):
        """Cluster layers on a node embedding of the kNN graph (default), or HDBSCAN* on the raw graph."""
        cfg = self.config
        graph = self.graph()
        with self._stage("cluster"):
            result = stages.cluster(graph, self.vectors, cfg.cluster, seed=cfg.seed, paths=self.paths)
        self.details_["cluster"] = result.detail
        if cfg.cluster.assign_noise:
            self.details_["noise"] = (
                f"{result.noise_before:.1%} before --assign-noise, {result.noise_fraction:.1%} after"
            )
        self.clusters_ = result
        return result

    def project(self) -> np.ndarray:
        """2-D coordinates from the same kNN graph (:func:`engine.stages.layout`)."""
        cfg = self.config
        graph = self.graph()
        with self._stage("map"):
            coords, detail = stages.layout(
                graph, cfg.map, seed=cfg.seed, paths=self.paths, vectors=self.vectors
            )
        self.details_["map"] = detail
        self.coords_ = coords
        return coords

    def report(self):
        """labels.parquet, clusters.json, report.html, map.html and map.png."""
        from engine.ingest import read_meta

        cfg = self.config
        clusters, coords = self.clusters(), self.coords()
        with self._stage("report"):
            warning = self._warn_language(read_meta(self.paths.embeddings).get("model") or cfg.embed.model)
            source = Path(cfg.corpus.corpus).name if cfg.corpus.corpus else self.paths.root.name
            labels, report = stages.report(
                self.corpus,
                clusters,
                coords,
                self.vectors(),
                cfg.report,
                self.paths,
                title=f"Document map: {source}",
                warnings=[warning] if warning else [],
                encoder=self._encoder,
                graph=self.graph,
            )
        self.labels_ = labels
        self.report_ = report
        return report

    def store_labels(self, labels: pd.DataFrame | None = None) -> int:
        """Write every label column onto the Milvus rows (:func:`engine.stages.store_labels`)."""
        labels = self.labels() if labels is None else labels
        vectors = self.vectors()
        with self._stage("labels"):
            with self.open_store(dim=vectors.shape[1]) as store:
                n, columns = stages.store_labels(
                    labels, self.corpus, vectors, store, self.paths, progress=self.progress
                )
        if n:
            self.details_["labels"] = f"{', '.join(columns)} stored in Milvus ({n:,} rows)"
        return n

    def store_cluster_labels(self) -> int:
        """After ``engine cluster``: Milvus gets the new clustering's fields, and loses layers it no longer has.

        Upserting whole rows replaces their dynamic fields, so a ``layer_N`` of the old clustering is
        gone; only when labels were stored before (a run that never reached that step has none).
        """
        if not self.paths.labels_stored.exists():
            return 0
        return self.store_labels(stages.cluster_label_frame(self.corpus, self.clusters()))

    # ---- using the clusters ----------------------------------------------------------------
    def _encoder(self):
        """The run's model, loaded once per pipeline (``engine serve`` answers many calls with it)."""
        from engine.ingest import read_meta

        if self._encoder_cache is not None:
            return self._encoder_cache
        t = time.perf_counter()
        encoder = stages.load_encoder(self.config.embed)
        meta = read_meta(self.paths.embeddings)
        stored = meta.get("model")
        if stored and str(stored).startswith(stages.PRECOMPUTED):  # given vectors: the model must match them
            if meta.get("dim") not in (None, encoder.dim):
                raise EngineError(
                    f"the run's given vectors are {meta['dim']}-d but {encoder.name!r} makes {encoder.dim}-d "
                    "ones (option model)"
                )
        elif stored not in (None, encoder.name):
            raise EngineError(f"the run was embedded with {stored!r}, not {encoder.name!r} (option model)")
        self.timings_["model load"] = time.perf_counter() - t
        self._encoder_cache = encoder
        return encoder

    def search_columns(self) -> list[str]:
        """Label fields that searches return and filters may name: those Milvus holds (recorded when
        stored, so a layer an ``engine cluster`` removed is not offered), else labels.parquet's."""
        stored = stages.stored_label_columns(self.paths)
        return stored if stored is not None else stages.label_columns_of(self.labels(), self.corpus)

    def search(
        self, query: str, k: int = 10, cluster: int | None = None, filter: str = "", store: Any = None
    ) -> pd.DataFrame:
        """Nearest stored documents to ``query``; ``cluster`` adds the Milvus filter ``cluster == N``.

        ``store``: an open store to reuse (``engine serve``); else one is opened for this call.
        """
        from engine.milvus.filters import check_filter

        stages.check_search(query, k)
        columns = self.search_columns()
        user = check_filter(filter, stages.search_fields(columns))  # before the model loads
        with contextlib.ExitStack() as stack:
            if store is None:
                store = stack.enter_context(self.open_store())
                if user:
                    store.check_filter(user)  # Milvus parses it, still before the model loads
            encoder = self._encoder()
            t = time.perf_counter()
            out = stages.search(query, encoder, store, columns, k=k, cluster=cluster, filter=filter)
        self.timings_["search"] = time.perf_counter() - t
        return out

    def assign(
        self,
        frame: pd.DataFrame,
        k: int = 15,
        store: bool = False,
        source: str = "new",
        open_store: Any = None,
    ) -> pd.DataFrame:
        """Place new documents in the run's clusters (:func:`engine.stages.assign`).

        ``open_store``: an open store to reuse (``engine serve``); else one is opened for this call.
        """
        stages.check_assign(frame, k)
        labels = self.labels()
        columns = stages.label_columns_of(labels, self.corpus)
        graph = self.graph()
        cfg = self.config.cluster
        encoder = self._encoder()

        def place(st: Any) -> pd.DataFrame:
            return stages.assign(
                frame,
                encoder,
                st,
                labels,
                columns,
                graph,
                min_samples=cfg.min_samples or cfg.min_cluster_size,
                k=k,
                only_run=self.paths.labels_stored.exists(),
                keep=store,
                source=source,
            )

        with self._stage("assign"):
            if open_store is not None:
                return place(open_store)
            with self.open_store(dim=encoder.dim) as st:
                return place(st)

    # ---- whole run -----------------------------------------------------------------------
    def run(self) -> RunSummary:
        """Every stage in order; returns (and saves) the summary."""
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
        """The run summary (counts, noise, layers, stage times, outputs), saved as summary.json."""
        if self.paths.corpus.exists():
            _ = self.corpus  # its stats go into the summary
            uri = self.resolved_milvus_uri()
        else:
            uri = self.config.store.resolved_milvus_uri(self.paths.root)
        milvus = f"local server ({self.paths.milvus_server})" if uri == LOCAL_SERVER_URI else mask_uri(uri)
        summary = RunSummary.of(
            self.labels(),
            stage_seconds=self.timings_,
            details=self.details_,
            min_cluster_size=self.config.cluster.min_cluster_size,
            corpus=self.corpus_.detail() if self.corpus_ is not None and self.corpus_.stats else None,
            ingest=self.ingest_,
            milvus=milvus,
        )
        summary.write(self.paths)
        return summary
