"""A BERTopic-style estimator over the engine's stages: ``TopicModel().fit(docs).get_topic_info()``.

A thin layer: ``fit`` runs the :class:`engine.pipeline.Pipeline` (every stage of engine.stages, in
a run directory, with Milvus) on the given documents; everything else reads or edits that run.
``transform`` is the ``engine assign`` path (nearest stored neighbours vote, no re-clustering);
``merge_topics`` and ``set_topic_labels`` are saved in the run's ``topics.json`` and re-run the
report stage, so ``clusters.json``, ``report.html``, the map, ``labels.parquet`` and the labels
stored in Milvus all agree, and ``engine report --out DIR`` keeps them. The run directory *is* the
saved model: ``TopicModel.load(dir)`` reopens it (``save(dir)`` copies it elsewhere).

scikit-learn conventions: parameters in ``__init__`` (any engine option by its flat name, e.g.
``min_cluster_size=10``), learned state in ``name_`` attributes (``topics_``, ``topic_info_`` ...).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from engine.atomic import write_text
from engine.errors import EngineError

__all__ = ["TopicModel"]

_INPUT = "api_input.parquet"
_INPUT_VECTORS = "api_input_embeddings.npy"


class TopicModel:
    """Topics of a corpus by meaning: embed -> Milvus -> kNN graph -> cluster layers -> c-TF-IDF names.

    ``out``: the run directory (the saved model); ``model``: the embedding model (also embeds
    queries and new documents); ``milvus_uri``: None = embedded Milvus in ``out``; ``options``:
    any other engine option by its flat name (``k``, ``min_cluster_size``, ``n_keywords`` ...).
    """

    def __init__(
        self,
        out: str | os.PathLike = "topics",
        model: str = "BAAI/bge-m3",
        milvus_uri: str | None = None,
        progress: bool = False,
        **options: Any,
    ) -> None:
        self.out = out
        self.model = model
        self.milvus_uri = milvus_uri
        self.progress = progress
        self.options = options

    # ---- fitting ------------------------------------------------------------------------------
    def _config(self, **extra: Any) -> Any:
        from engine.config import EngineConfig

        flat = {"out": os.fspath(self.out), "model": self.model, **self.options, **extra}
        if self.milvus_uri is not None:
            flat["milvus_uri"] = self.milvus_uri
        return EngineConfig.from_flat(**flat)

    def fit(
        self, documents: Any, embeddings: np.ndarray | None = None, text_column: str = "text"
    ) -> TopicModel:
        """Cluster ``documents`` (a list of texts, or a DataFrame with ``text_column`` and any other
        columns, kept in labels.parquet); ``embeddings`` (N, dim): use these vectors instead of embedding."""
        from engine.pipeline import Pipeline

        frame = _as_frame(documents, text_column)
        root = Path(self.out)
        root.mkdir(parents=True, exist_ok=True)
        corpus = root / _INPUT
        frame.to_parquet(corpus, index=False)
        extra: dict[str, Any] = {"corpus": str(corpus), "text_column": text_column}
        if embeddings is not None:
            vectors = np.asarray(embeddings)
            if vectors.ndim != 2 or len(vectors) != len(frame):
                raise EngineError(
                    f"embeddings: shape {vectors.shape}, expected ({len(frame)}, dim): one row per document"
                )
            np.save(root / _INPUT_VECTORS, vectors)
            extra["embeddings"] = str(root / _INPUT_VECTORS)
        (root / "topics.json").unlink(missing_ok=True)  # a new fit starts without old merges and names
        pipe = Pipeline(self._config(**extra), progress=self.progress)
        pipe.run()
        return self._attach(pipe)

    def fit_transform(self, documents: Any, embeddings: np.ndarray | None = None, **kw: Any) -> np.ndarray:
        """``fit``, then the documents' topic ids (-1: noise)."""
        return self.fit(documents, embeddings, **kw).topics_

    def _attach(self, pipe: Any) -> TopicModel:
        self.pipeline_ = pipe
        self.labels_ = pipe.labels_ if pipe.labels_ is not None else pipe.labels()
        self.topics_ = self.labels_["cluster"].to_numpy(dtype=np.int64)
        self.probabilities_ = self.labels_["probability"].to_numpy(dtype=np.float32)
        self._load_report()
        return self

    def _load_report(self) -> None:
        import json

        self.report_ = json.loads(self.pipeline_.paths.clusters_json.read_text(encoding="utf-8"))
        self.topic_info_ = _topic_info(self.report_)

    def _check_fitted(self) -> None:
        if not hasattr(self, "pipeline_"):
            raise EngineError(
                "this TopicModel is not fitted yet: call fit(documents) or TopicModel.load(dir)"
            )

    # ---- reading the topics -------------------------------------------------------------------
    def get_topic_info(self) -> pd.DataFrame:
        """One row per topic, largest first, noise (-1) last: topic, count, name, keywords, representatives."""
        self._check_fitted()
        return self.topic_info_.copy()

    def get_topic(self, topic: int) -> list[tuple[str, float]]:
        """The topic's keywords with their c-TF-IDF scores, best first (KeyError for an unknown id)."""
        self._check_fitted()
        row = self.topic_info_.loc[self.topic_info_["topic"] == int(topic)]
        if row.empty:
            raise KeyError(f"no topic {topic}")
        return list(row.iloc[0]["keyword_scores"])

    def topics_over_time(self, timestamps: Any, period: str = "auto") -> pd.DataFrame:
        """Documents per topic per period (day/week/month by span): topic, name, timestamp, frequency."""
        from engine.timeline import parse_times, topics_over_time

        self._check_fitted()
        times = parse_times(_as_series(timestamps, len(self.topics_), "timestamps"), "timestamps")
        data = topics_over_time(self.topics_, times, "timestamps", period)
        names = self._names()
        rows = [
            {"topic": int(c), "name": names.get(int(c), ""), "timestamp": pd.Timestamp(p), "frequency": n}
            for c, counts in data["clusters"].items()
            for p, n in zip(data["periods"], counts, strict=True)
        ]
        return pd.DataFrame(rows, columns=["topic", "name", "timestamp", "frequency"])

    def topics_per_class(self, classes: Any) -> pd.DataFrame:
        """Documents per topic and class: topic, name, class, frequency (non-zero rows)."""
        from engine.report import topics_per_class

        self._check_fitted()
        data = topics_per_class(self.topics_, _as_series(classes, len(self.topics_), "classes"), "class")
        names = self._names()
        rows = [
            {"topic": int(c), "name": names.get(int(c), ""), "class": cls, "frequency": n}
            for c, counts in data["clusters"].items()
            for cls, n in zip(data["classes"], counts, strict=True)
            if n
        ]
        return pd.DataFrame(rows, columns=["topic", "name", "class", "frequency"])

    def find_topics(self, query: str, k: int = 5) -> tuple[list[int], list[float]]:
        """The k topics whose centroid is closest (cosine) to the query's embedding, with similarities."""
        from engine.report import topic_centroids

        self._check_fitted()
        if not isinstance(query, str) or not query.strip():
            raise EngineError("find_topics: query must be a non-empty string")
        ids = [int(t) for t in self.topic_info_["topic"] if t >= 0]
        if not ids:
            return [], []
        centroids = topic_centroids(self.topics_, self.pipeline_.vectors(), ids)
        q = self.pipeline_._encoder().encode([query])[0]
        sims = centroids @ q
        order = np.argsort(-sims)[: max(int(k), 0)]
        return [ids[i] for i in order], [float(sims[i]) for i in order]

    def _names(self) -> dict[int, str]:
        return dict(zip(self.topic_info_["topic"].astype(int), self.topic_info_["name"], strict=True))

    # ---- new documents ------------------------------------------------------------------------
    def transform(self, documents: Any, text_column: str = "text") -> np.ndarray:
        """Topic ids of new documents from their nearest stored neighbours (``engine assign``; -1: noise)."""
        self._check_fitted()
        frame = _as_frame(documents, text_column)
        out = self.pipeline_.assign(frame.rename(columns={text_column: "text"}))
        return out["cluster"].to_numpy(dtype=np.int64)

    # ---- editing the topics -------------------------------------------------------------------
    def merge_topics(self, groups: list[list[int]]) -> TopicModel:
        """Merge each group of topics into its first id; keywords, names and stored labels follow."""
        from engine import stages

        self._check_fitted()
        known = set(int(t) for t in self.topics_ if t >= 0)
        for group in groups:
            bad = [t for t in group if int(t) not in known]
            if bad or len(group) < 2:
                raise EngineError(
                    f"merge_topics: {group} must list two or more existing topics ({bad} unknown)"
                )
        edits = stages.load_topic_edits(self.pipeline_.paths)
        edits["merges"] = stages.merge_map([[int(t) for t in g] for g in groups], edits["merges"])
        for old in edits["merges"]:
            edits["names"].pop(old, None)
        stages.save_topic_edits(self.pipeline_.paths, edits)
        return self._rereport()

    def set_topic_labels(self, labels: dict[int, str]) -> TopicModel:
        """Custom names for topics ({topic: name}); shown in clusters.json, report.html and the map."""
        from engine import stages

        self._check_fitted()
        known = set(int(t) for t in self.topics_ if t >= 0)
        unknown = [t for t in labels if int(t) not in known]
        if unknown:
            raise EngineError(f"set_topic_labels: no topic {unknown[0]}")
        edits = stages.load_topic_edits(self.pipeline_.paths)
        edits["names"].update({int(t): str(name) for t, name in labels.items()})
        stages.save_topic_edits(self.pipeline_.paths, edits)
        return self._rereport()

    def _rereport(self) -> TopicModel:
        pipe = self.pipeline_
        pipe.labels_ = None
        try:
            pipe.report()
            pipe.store_labels()
        finally:
            pipe.close()
        return self._attach(pipe)

    # ---- persistence --------------------------------------------------------------------------
    def save(self, path: str | os.PathLike | None = None) -> Path:
        """The run directory is the model; with ``path``, copy it there (Milvus Lite's file included)."""
        self._check_fitted()
        self.pipeline_.close()
        src = Path(self.out).resolve()
        if path is None or Path(path).resolve() == src:
            return src
        dst = Path(path)
        if dst.exists() and any(dst.iterdir()):
            raise EngineError(f"save: {dst} exists and is not empty")
        shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("milvus_server"))
        _repoint_run_config(dst)
        return dst

    @classmethod
    def load(cls, path: str | os.PathLike, progress: bool = False) -> TopicModel:
        """Reopen a run directory (``fit``'s ``out``, a ``save`` copy, or an ``engine run --out DIR``)."""
        from engine.config import RUN_CONFIG_NAME, resolve_config
        from engine.pipeline import Pipeline

        if not (Path(path) / RUN_CONFIG_NAME).is_file():
            raise EngineError(f"load: {path} is not a run directory (no {RUN_CONFIG_NAME})")
        config = resolve_config({"out": os.fspath(path)}, environ=False)
        model = cls(out=path, model=config.embed.model, progress=progress)
        return model._attach(Pipeline(config, progress=progress))


def _repoint_run_config(root: Path) -> None:
    """A copied run's run.toml names its own directory (out, and the API's input files)."""
    import tomllib

    import tomli_w

    cfg_path = root / "run.toml"
    if not cfg_path.exists():
        return
    data = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
    data["out"] = str(root)
    corpus = data.get("corpus", {})
    if corpus.get("corpus") and Path(corpus["corpus"]).name == _INPUT:
        corpus["corpus"] = str(root / _INPUT)
    embed = data.get("embed", {})
    if embed.get("embeddings") and Path(embed["embeddings"]).name == _INPUT_VECTORS:
        embed["embeddings"] = str(root / _INPUT_VECTORS)
    write_text(cfg_path, tomli_w.dumps(data))


def _as_frame(documents: Any, text_column: str) -> pd.DataFrame:
    if isinstance(documents, pd.DataFrame):
        if text_column not in documents.columns:
            raise EngineError(
                f"documents: no column {text_column!r} (columns: {', '.join(map(str, documents))})"
            )
        return documents.reset_index(drop=True)
    if isinstance(documents, str):
        raise EngineError("documents must be a list of texts or a DataFrame, not one string")
    texts = list(documents)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise EngineError(f"documents[{bad}] is {type(texts[bad]).__name__}, expected str")
    return pd.DataFrame({text_column: texts})


def _as_series(values: Any, n: int, what: str) -> pd.Series:
    series = pd.Series(list(values)) if not isinstance(values, pd.Series) else values.reset_index(drop=True)
    if len(series) != n:
        raise EngineError(f"{what}: {len(series)} values for {n} documents")
    return series


def _topic_info(report: dict[str, Any]) -> pd.DataFrame:
    rows = [
        {
            "topic": int(c["cluster"]),
            "count": int(c["size"]),
            "name": c["name"],
            "keywords": list(c["keywords"]),
            "keyword_scores": list(zip(c["keywords"], c.get("keyword_scores", []), strict=False)),
            "representatives": [d["text"] for d in c["representatives"]],
        }
        for c in report["clusters"]
    ]
    noise = report["noise"]
    if noise["size"]:
        rows.append(
            {
                "topic": -1,
                "count": int(noise["size"]),
                "name": "noise",
                "keywords": list(noise["keywords"]),
                "keyword_scores": list(zip(noise["keywords"], noise.get("keyword_scores", []), strict=False)),
                "representatives": [],
            }
        )
    return pd.DataFrame(
        rows, columns=["topic", "count", "name", "keywords", "keyword_scores", "representatives"]
    )
