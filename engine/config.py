"""Run configuration: one nested, validated settings model (pydantic), built once per command.

Layout: ``out`` and ``seed`` at the top (the seed is shared by the cluster and map stages), then one
section per stage: ``corpus``, ``embed``, ``store``, ``graph``, ``cluster``, ``map``, ``report``. Every
field's name is its command-line flag (``--min-cluster-size`` -> ``cluster.min_cluster_size``); field
names are unique across sections, so a flat key (``k = 20``, ``ENGINE_K=20``) still names one field.

Precedence (lowest first), see :func:`resolve_config`:

1. built-in defaults (this module);
2. the run directory's saved ``run.toml`` (stage subcommands: ``engine cluster --out DIR`` ...);
3. ``--config FILE.toml``;
4. the environment: ``ENGINE_<FIELD>`` (``ENGINE_K=20``, ``ENGINE_MIN_SAMPLES=none``) and ``MILVUS_URI`` /
   ``MILVUS_TOKEN``;
5. command-line flags.

A layer overrides the ones below for every field it really gives, including an explicit ``none`` /
``auto`` (None): ``--min-samples none`` resets a saved ``min_samples = 8`` to the per-space default.
Every check lives in the model; a bad value is one line, ``--flag must be ..., got X`` (prefixed by the
file's path when a TOML file set it), raised as :class:`EngineError`.
"""

from __future__ import annotations

import codecs
import json
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args, get_origin

import tomli_w
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from engine.atomic import write_text
from engine.errors import EngineError
from engine.milvus.indexes import Metric

RUN_CONFIG_NAME = "run.toml"
#: min_samples defaults per cluster space: the raw-graph HDBSCAN* keeps its measured 3; in the node
#: embedding EVoC's 5 gave the better layers (benchmarks/quality.py).
GRAPH_MIN_SAMPLES = 3
#: Default --consensus-runs per cluster space (engine.cluster.communities / engine.cluster.consensus).
COMMUNITY_RUNS = 8
EMBEDDING_RUNS = 16
EMBEDDING_MIN_SAMPLES = 5
#: Words that mean None (the default / automatic choice) on the command line, in TOML and the environment.
NONE_WORDS = ("none", "auto")


def _none_word(value: Any) -> Any:
    """``"none"``/``"auto"`` -> None, so a layer can reset an optional number to its automatic default."""
    if isinstance(value, str) and value.strip().lower() in NONE_WORDS:
        return None
    return value


def _no_bool(value: Any) -> Any:
    """pydantic reads True as 1; a boolean is never a count or a ratio here."""
    if isinstance(value, bool):
        raise ValueError("bool")
    return value


Int = Annotated[int, BeforeValidator(_no_bool)]
OptInt = Annotated[int | None, BeforeValidator(_no_bool), BeforeValidator(_none_word)]
Float = Annotated[float, BeforeValidator(_no_bool)]
Backend = Literal["auto", "cpu", "cuml"]


def opt(default: Any, help: str, *, flags: tuple[str, ...] = (), **constraints: Any) -> Any:
    """A field whose description is its ``--help`` text; ``flags`` adds aliases to ``--field-name``."""
    extra = {"flags": list(flags)} if flags else None
    return Field(default, description=help, json_schema_extra=extra, **constraints)


class Section(BaseModel):
    """One stage's options. ``STAGES``: the subcommands whose ``--help`` shows this section."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)
    STAGES: ClassVar[tuple[str, ...]] = ()


class CorpusSettings(Section):
    STAGES = ("run", "embed")
    corpus: str | None = opt(None, "CSV, TSV, Parquet or JSON-lines file")
    text_template: str = opt(
        "{title}\n{description}", 'text built per row, default "{title}\\n{description}"'
    )
    text_column: str | None = opt(None, "use this single column as the text (instead of --text-template)")
    id_column: str | None = opt(
        None, "stable document ids from this column (default: row number in the file)"
    )
    empty: Literal["drop", "error"] = opt("drop", "rows with empty text: drop (default) or error")
    duplicates: Literal["keep", "drop"] = opt("keep", "identical texts: keep (default) or drop repeats")
    format: Literal["csv", "tsv", "parquet", "jsonl"] | None = opt(
        None, "input format (default: by extension)"
    )
    encoding: str = opt("utf-8", "text encoding of CSV/TSV/JSON-lines input (default utf-8)")
    columns: list[str] | None = opt(None, "comma-separated column names for a file without header row")
    limit: OptInt = opt(None, "use only the first N rows", ge=1)

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(
                f"--encoding {value!r} is not a known text encoding (e.g. utf-8, latin-1, gbk)"
            ) from None
        return value


class EmbedSettings(Section):
    STAGES = ("run", "embed")
    model: str = opt(
        "BAAI/bge-m3", "BAAI/bge-m3 (default), a local directory, or a sentence-transformers model id"
    )
    embeddings: str | None = opt(
        None,
        "precomputed document vectors (.npy, one row per document in corpus order, float, finite) used instead "
        "of embedding; --model must be the model that made them (it embeds queries and new documents)",
    )
    device: str = opt("auto", "auto (default), cpu, cuda, cuda:1 ...")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = opt("auto", "model precision (default auto)")
    batch_size: OptInt = opt(None, "documents per batch (default: by token budget)", ge=1, le=65536)
    max_length: Int = opt(512, "max tokens per document (default 512)", ge=2, le=8192)
    restart: bool = opt(
        False,
        "drop the stored collection and vectors and re-embed (default: resume what is stored)",
        flags=("--drop-existing",),
    )


class StoreSettings(Section):
    STAGES = ("run", "embed", "graph")
    milvus_uri: str | None = opt(
        None,
        "Milvus URI: a local file for Milvus Lite, http://host:19530, or local-server (the engine runs a "
        "standalone Milvus in DIR/milvus_server). Default: DIR/milvus.db (Lite) up to 50k documents, "
        "local-server above",
    )
    milvus_token: SecretStr | None = Field(
        None,
        exclude=True,
        description="Milvus token (user:password or API key); or set MILVUS_TOKEN. Never printed.",
    )
    db_name: str | None = opt(None, "Milvus database name (servers only)")
    collection: str = opt("engine_docs", "Milvus collection name (default engine_docs)")
    metric: Metric = opt("COSINE", "Milvus metric (default COSINE)")
    index: str = opt("auto", "auto (FLAT up to 50k docs, else HNSW), FLAT, IVF_FLAT, IVF_SQ8, HNSW, ...")
    index_params: dict[str, Any] | None = opt(
        None, 'index build parameters as JSON, e.g. \'{"M": 16, "efConstruction": 200}\''
    )
    search_params: dict[str, Any] | None = opt(
        None, "search parameters as JSON, e.g. '{\"ef\": 64}' or '{\"nprobe\": 32}'"
    )

    @field_validator("index")
    @classmethod
    def _known_index(cls, value: str) -> str:
        from engine.milvus.indexes import LITE_INDEX_TYPES, SERVER_INDEX_TYPES

        known = ("auto", *dict.fromkeys(LITE_INDEX_TYPES + SERVER_INDEX_TYPES))
        if value.upper() != "AUTO" and value.upper() not in known:
            raise ValueError(f"--index must be one of {', '.join(known)}, got {value!r}")
        return value

    @field_validator("milvus_uri")
    @classmethod
    def _uri_scheme(cls, value: str | None) -> str | None:
        from engine.milvus.client import check_uri

        if value:
            _as_value_error(check_uri, value)
        return value

    @field_validator("collection")
    @classmethod
    def _collection_name(cls, value: str) -> str:
        from engine.milvus.client import check_collection_name

        _as_value_error(check_collection_name, value)
        return value

    @model_validator(mode="after")
    def _params_in_range(self) -> StoreSettings:
        from engine.milvus.indexes import check_index_params

        index = self.index.upper()
        _as_value_error(check_index_params, self.index_params, "--index-params", index)
        _as_value_error(check_index_params, self.search_params, "--search-params", index)
        return self

    # ---- derived -------------------------------------------------------------------------
    @property
    def explicit_milvus_uri(self) -> str | None:
        """The given URI without credentials; None means the embedded default (chosen by corpus size)."""
        from engine.milvus.client import strip_uri_credentials

        return strip_uri_credentials(self.milvus_uri)[0] if self.milvus_uri else None

    def resolved_milvus_uri(self, out_dir: Path) -> str:
        """The explicit URI, else the Milvus Lite file in the run directory (before the corpus size is known)."""
        return self.explicit_milvus_uri or str(out_dir / "milvus.db")

    @property
    def resolved_milvus_token(self) -> str | None:
        """The token, else the user:password part of the URI."""
        from engine.milvus.client import strip_uri_credentials

        if self.milvus_token is not None and self.milvus_token.get_secret_value():
            return self.milvus_token.get_secret_value()
        return strip_uri_credentials(self.milvus_uri or "")[1] or None


class DistributedSettings(Section):
    """``--ray ADDRESS``: the embed and graph stages on a Ray cluster (:mod:`engine.distributed`)."""

    STAGES = ("run", "embed", "graph")
    ray: str | None = opt(
        None,
        "run the embed and graph stages on a Ray cluster: auto (the cluster at $RAY_ADDRESS), local (start one "
        "on this machine with its GPUs and CPUs), ray://HOST:10001 or HOST:6379. Needs a Milvus that many "
        "processes write: --milvus-uri local-server or a server URI (default: off, one process)",
    )
    ray_block: Int = opt(
        2000,
        "documents per Ray Data block with --ray: the unit of work, of retry after a lost worker and of resume; "
        "a multiple of 2000 (the single process's sorting window) embeds in the same batches, so the vectors "
        "equal one process's bit for bit (default 2000; on GPUs take e.g. 16000)",
        ge=1,
        le=1_000_000,
    )
    ray_workers: OptInt = opt(
        None,
        "model replicas with --ray (default: one per GPU of the cluster, else one per CPU)",
        ge=1,
        le=4096,
    )

    @field_validator("ray")
    @classmethod
    def _ray_address(cls, value: str | None) -> str | None:
        from engine.distributed.address import check_address

        return None if value is None else _as_value_error(check_address, value)


class GraphSettings(Section):
    STAGES = ("run", "graph", "cluster")
    graph_source: Literal["auto", "milvus", "partition", "exact"] = opt(
        "auto",
        "where the neighbours come from: milvus (search of the run's Milvus index), partition (the stored "
        "vectors joined list by list: k-means lists, each document against the members of its "
        "--partition-probes nearest lists, BLAS products), exact (brute force), or auto (default: milvus "
        "below 100,000 documents, partition from there; RESULTS.md section 10)",
    )
    partition_probes: Int = opt(
        16, "lists each document is joined with by --graph-source partition (default 16)", ge=1
    )
    k: Int = opt(30, "neighbours per document in the graph (default 30)", ge=1)
    workers: OptInt = opt(
        None, "parallel search workers (default: 2 on Milvus Lite, 4 on a server)", ge=1, le=256
    )
    search_batch: OptInt = opt(None, "query vectors per search request (default 256)", ge=1, le=16384)
    # 0.97 (issue 22): on 59k real short texts (MiniLM, local server, HNSW M=16) 0.95 stopped at ef 32 with
    # recall@30 0.967 over all documents; 0.97 takes ef 48 (0.982) in the same graph-stage time (RESULTS §10)
    target_recall: Float = opt(
        0.97,
        "raise the search knob (HNSW ef, IVF nprobe) until recall@k on a sample reaches this (default 0.97); "
        "a knob set in --search-params is kept and only measured",
        gt=0,
        le=1,
    )
    recall_sample: Int = opt(
        1000, "queries checked against exact neighbours to measure recall (default 1000; 0 = off)", ge=0
    )
    refine_budget: Float = opt(
        600.0,
        "seconds of NN-descent refinement (neighbours of neighbours, exact distances from the stored vectors) "
        "allowed after the Milvus search when its sampled recall@k is below --target-recall (default 600; 0 = off)",
        ge=0,
    )


class ClusterSettings(Section):
    STAGES = ("run", "cluster")
    cluster_space: Literal["communities", "embedding", "graph"] = opt(
        "communities",
        "communities (default): Leiden communities of the kNN graph in layers (a topic tree); embedding: "
        "density clusters of a few-dimensional node embedding of the graph (EVoC's stages); graph: HDBSCAN* "
        "directly on the raw kNN graph (one layer)",
    )
    n_clusters: OptInt = opt(
        None, "primary layer of about N clusters (default: the layer the cluster space's rule picks)", ge=1
    )
    resolution: Float = opt(
        1.0,
        "Leiden modularity resolution of the primary layer (communities space; default 1; higher gives more, "
        "smaller topics)",
        gt=0,
    )
    consensus_runs: OptInt = opt(
        None,
        "independent runs behind the primary (default: 8 Leiden runs voting in the labels of the one agreeing "
        "most with the others, in the communities space; 16 node-embedding runs voting in the embedding space; "
        "1: one run, faster and seed-dependent)",
        ge=1,
        le=256,
    )
    assign_noise: bool = opt(
        False,
        "give each noise document the cluster most of its graph neighbours hold (labels.parquet column "
        "`assigned` marks them)",
    )
    min_cluster_size: Int = opt(5, "HDBSCAN min_cluster_size (default 5; finest layer)", ge=2)
    min_samples: OptInt = opt(
        None, "HDBSCAN min_samples (default: 5 in the embedding space, 3 on the graph)", ge=1
    )
    cluster_selection_method: Literal["eom", "leaf"] = opt("eom", "HDBSCAN selection (default eom)")
    cluster_selection_epsilon: Float = opt(0.0, "HDBSCAN cluster_selection_epsilon (default 0)", ge=0)
    cluster_backend: Backend = opt("auto", "auto: cuML with a GPU, else CPU")

    @property
    def effective_consensus_runs(self) -> int:
        """--consensus-runs, else the default of the cluster space (communities 8, embedding 16)."""
        if self.consensus_runs is not None:
            return int(self.consensus_runs)
        return COMMUNITY_RUNS if self.cluster_space == "communities" else EMBEDDING_RUNS

    @property
    def effective_min_samples(self) -> int:
        """--min-samples, else the default of the cluster space (graph 3, embedding 5)."""
        if self.min_samples is not None:
            return int(self.min_samples)
        return GRAPH_MIN_SAMPLES if self.cluster_space == "graph" else EMBEDDING_MIN_SAMPLES


class MapSettings(Section):
    STAGES = ("run", "map")
    map_method: Literal["auto", "embedding", "umap"] = opt(
        "auto",
        "embedding (auto's choice on the CPU): a node embedding of the graph (the cluster stage's with "
        "--cluster-space embedding, else the map's own) refined to 2-D; minutes at 1M; umap: umap-learn/cuML "
        "UMAP of the graph",
    )
    n_neighbors: Int = opt(15, "UMAP n_neighbors (default 15, at most --k)", ge=2)
    min_dist: Float = opt(0.1, "UMAP min_dist (default 0.1)", ge=0, le=1)
    map_backend: Backend = opt("auto", "auto: cuML UMAP with a GPU, else umap-learn")


class ReportSettings(Section):
    STAGES = ("run", "report")
    n_keywords: Int = opt(10, "keywords per cluster (default 10)", ge=1, le=1000)
    n_representatives: Int = opt(5, "representative documents per cluster (default 5)", ge=0, le=1000)
    time_column: str | None = opt(
        None, "column of dates: per-cluster counts per period and a topics-over-time chart"
    )
    time_period: Literal["auto", "day", "week", "month", "quarter", "year"] = opt(
        "auto", "period of --time-column counts (default auto: the finest giving at most 200 periods)"
    )
    keyword_ngrams: Int = opt(
        2,
        "2 (default): two-word phrases compete with single words on c-TF-IDF score; 1: words only",
        ge=1,
        le=2,
    )
    keyword_min_lift: Float = opt(
        1.5,
        "filler rule: a keyword must be used this many times as often in its cluster as in the rest of the corpus "
        "(default 1.5; 0 = off)",
        ge=0,
        le=100,
    )
    keyword_rerank: bool = opt(
        False,
        "re-rank each cluster's c-TF-IDF candidates by closeness of the word's embedding (the run's model) to the "
        "cluster centroid, KeyBERT-like (default off: loads the model in the report stage)",
    )
    keyword_diversity: Float = opt(
        0.0,
        "MMR diversity of the re-ranked keywords, 0 (default, off) to 1; needs --keyword-rerank",
        ge=0,
        le=1,
    )
    class_column: str | None = opt(None, "column of classes (a source, a section): a topics-per-class chart")
    topics: str | None = opt(
        None,
        "zero-shot topics: comma-separated names or a file with one per line; clusters whose centroid is close to "
        "a topic's embedding take the name most of their documents vote for (mixed ones split by the votes), and "
        "noise documents close to a topic join it (see --topic-threshold)",
    )
    topic_threshold: Float = opt(
        0.15,
        "cosine similarity a cluster centroid needs to its closest named topic to be named, and a noise document "
        "(averaged with its kNN neighbours) to join a topic (default 0.15)",
        ge=-1,
        le=1,
    )


class ServeSettings(Section):
    """``engine serve``: where the HTTP server listens (loopback by default: it has no authentication)."""

    STAGES = ("serve",)
    host: str = opt("127.0.0.1", "address to listen on (default 127.0.0.1, this machine only)")
    port: Int = opt(8765, "TCP port (default 8765; 0 picks a free one)", ge=0, le=65535)


class EngineConfig(BaseSettings):
    """Every option of a run, by stage. Build it with :func:`resolve_config` (layers) or directly (defaults)."""

    model_config = SettingsConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True)

    out: str = opt("out", "run directory (default ./out)", flags=("-o",))
    seed: OptInt = opt(
        42,
        "random seed of the cluster embedding and the map (default 42: identical labels every run); none = use "
        "every core, results vary",
        ge=0,
        le=2**32 - 1,
    )
    corpus: CorpusSettings = Field(default_factory=CorpusSettings)
    embed: EmbedSettings = Field(default_factory=EmbedSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    distributed: DistributedSettings = Field(default_factory=DistributedSettings)
    graph: GraphSettings = Field(default_factory=GraphSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    map: MapSettings = Field(default_factory=MapSettings)
    report: ReportSettings = Field(default_factory=ReportSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)

    #: subcommands that show the top-level ``--seed``
    SEED_STAGES: ClassVar[tuple[str, ...]] = ("run", "cluster", "map")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only the given values: the layers (files, environment, flags) are merged by resolve_config."""
        return (init_settings,)

    @field_validator("out")
    @classmethod
    def _out_not_blank(cls, value: str) -> str:
        # an empty --out would silently write the run into the current directory
        if not value.strip():
            raise ValueError("--out must name a run directory, got an empty path")
        return value

    @model_validator(mode="after")
    def _min_samples_within_k(self) -> EngineConfig:
        if self.cluster.effective_min_samples > self.graph.k:
            raise ValueError(
                f"--min-samples ({self.cluster.effective_min_samples}) must not exceed --k ({self.graph.k}): "
                "core distances need that many neighbours in the graph"
            )
        return self

    @model_validator(mode="after")
    def _ray_needs_a_server(self) -> EngineConfig:
        from engine.distributed.address import check_milvus_for_ray

        if self.distributed.ray is not None:
            _as_value_error(check_milvus_for_ray, self.store.explicit_milvus_uri)
        return self

    @property
    def out_dir(self) -> Path:
        return Path(self.out)

    @classmethod
    def from_flat(cls, **options: Any) -> EngineConfig:
        """Defaults with some fields (flat names: ``k=20``) changed, validated; for code and tests."""
        return build_config([(options, None)])

    def copy_with(self, **changes: Any) -> EngineConfig:
        """A validated copy with some fields (flat names) changed."""
        return build_config([(self.as_flat(), None), (changes, None)])

    def as_flat(self) -> dict[str, Any]:
        """Every field, flat, with the token (for copies in memory; never written)."""
        flat: dict[str, Any] = {"out": self.out, "seed": self.seed}
        for name in SECTIONS:
            flat.update(getattr(self, name).model_dump())
        token = self.store.milvus_token
        flat["milvus_token"] = token.get_secret_value() if token is not None else None
        return flat

    # ---- persistence ---------------------------------------------------------------------
    def to_toml_dict(self) -> dict[str, Any]:
        """Nested by section, never the token, no credentials in the URI, None omitted, seed None -> "none"."""
        data: dict[str, Any] = {"out": self.out, "seed": "none" if self.seed is None else self.seed}
        for name in SECTIONS:
            section = {k: v for k, v in getattr(self, name).model_dump().items() if v is not None}
            if name == "store" and section.get("milvus_uri"):
                section["milvus_uri"] = self.store.explicit_milvus_uri
            data[name] = section
        return data

    def save(self, path: Path) -> None:
        """Write the resolved configuration (never the token) so stage re-runs reuse it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "# engine run configuration (resolved); re-used by per-stage commands\n"
        write_text(path, text + tomli_w.dumps(self.to_toml_dict()))


SECTIONS: dict[str, type[Section]] = {
    name: info.annotation  # type: ignore[misc]
    for name, info in EngineConfig.model_fields.items()
    if isinstance(info.annotation, type) and issubclass(info.annotation, Section)
}
#: flat field name -> its section (None: top level)
FIELD_SECTION: dict[str, str | None] = {
    **{name: None for name in EngineConfig.model_fields if name not in SECTIONS},
    **{field: section for section, model in SECTIONS.items() for field in model.model_fields},
}
#: dict-valued fields: a TOML table under these names is the value, not a section
DICT_FIELDS = ("index_params", "search_params")
ENV_PREFIX = "ENGINE_"
#: the environment names the Milvus client tools share
ENV_ALIASES = {"MILVUS_URI": "milvus_uri", "MILVUS_TOKEN": "milvus_token"}


def field_info(name: str) -> FieldInfo:
    section = FIELD_SECTION[name]
    model = EngineConfig if section is None else SECTIONS[section]
    return model.model_fields[name]


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def _as_value_error(check: Any, *args: Any) -> Any:
    """Run a store.py check (EngineError) inside a validator, where pydantic expects ValueError."""
    try:
        return check(*args)
    except EngineError as exc:
        raise ValueError(str(exc)) from None


class FlatEnvSource(PydanticBaseSettingsSource):
    """``ENGINE_<FIELD>`` (flat: field names are unique across sections) plus MILVUS_URI / MILVUS_TOKEN."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def flat(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for env_name, name in ENV_ALIASES.items():
            if os.environ.get(env_name):
                found[name] = os.environ[env_name]
        for name in FIELD_SECTION:
            value = os.environ.get(ENV_PREFIX + name.upper())
            if value is not None:
                found[name] = _parse_text(name, value)
        return found

    def __call__(self) -> dict[str, Any]:
        return nest(self.flat())


def env_variable(name: str) -> str:
    """The environment variable that set option ``name`` (ENGINE_<FIELD> wins over MILVUS_URI/TOKEN)."""
    own = ENV_PREFIX + name.upper()
    if os.environ.get(own) is not None:
        return own
    return next((env for env, field in ENV_ALIASES.items() if field == name), own)


def _parse_text(name: str, value: str) -> Any:
    """A value given as text (environment): JSON tables, comma lists, booleans; numbers are pydantic's."""
    annotation = str(field_info(name).annotation)
    if "dict" in annotation:
        return parse_json_option(value, flag_of(name)[2:])
    if "list" in annotation:
        return [c.strip() for c in value.split(",") if c.strip()]
    if "bool" in annotation and value.strip().lower() in ("1", "true", "yes", "0", "false", "no"):
        return value.strip().lower() in ("1", "true", "yes")
    return value


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """Flat field names -> the model's nested layout."""
    nested: dict[str, Any] = {}
    for name, value in flat.items():
        section = FIELD_SECTION[name]
        if section is None:
            nested[name] = value
        else:
            nested.setdefault(section, {})[name] = value
    return nested


def build_config(layers: list[tuple[dict[str, Any], str | None]]) -> EngineConfig:
    """Merge flat layers (lowest first; a present key overrides, even with None) and validate once.

    Each layer is (values, source); ``source`` (a TOML file) prefixes an error about a value it set.
    """
    merged: dict[str, Any] = {}
    source_of: dict[str, str | None] = {}
    for values, source in layers:
        for name, value in values.items():
            if name not in FIELD_SECTION:
                where = f"{source}: " if source else ""
                raise EngineError(
                    f"{where}unknown option {name!r} (known: {', '.join(sorted(FIELD_SECTION))})"
                )
            merged[name] = value
            source_of[name] = source
    try:
        return EngineConfig(**nest(merged))
    except ValidationError as exc:
        raise EngineError(_one_line(exc, merged, source_of)) from None


_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
    "list": "a list of strings",
    "dict": "a table / JSON object",
}


def _one_line(exc: ValidationError, merged: dict[str, Any], source_of: dict[str, str | None]) -> str:
    """The first problem as today's one line: ``[FILE: ]--flag must be ..., got X``."""
    error = exc.errors(include_url=False)[0]
    loc = [part for part in error["loc"] if isinstance(part, str)]
    name = next((part for part in reversed(loc) if part in FIELD_SECTION), None)
    message = str(error.get("ctx", {}).get("error", error["msg"]))
    if name is None and message.startswith("--"):  # a section check names its flag first
        name = message[2:].split()[0].rstrip(":").replace("-", "_")
        name = name if name in FIELD_SECTION else None
    source = source_of.get(name) if name else None
    where = f"{source}: " if source else ""
    kind = error["type"]
    if kind == "value_error":
        if message == "bool" and name:
            value = merged.get(name)
            word = "a number" if "float" in str(field_info(name).annotation) else "an integer"
            return f"{where}{flag_of(name)} must be {word}, got {value!r}"
        return f"{where}{message}"
    if name is None:
        return f"{where}{error['msg']}"
    flag = flag_of(name)
    info = field_info(name)
    value = error.get("input", merged.get(name))
    if kind == "literal_error":
        allowed = [a for a in _literal_args(info.annotation)]
        return f"{where}{flag} must be one of {', '.join(map(str, allowed))}, got {value!r}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        return f"{where}{flag} must be {_span(info)}, got {value}"
    if kind == "finite_number":
        return f"{where}{flag} must be a finite number, got {value!r}"
    if kind == "extra_forbidden":
        return f"{where}unknown option {name!r}"
    if any(isinstance(part, int) for part in error["loc"]):
        return f"{where}{flag} must be {_TYPE_WORDS['list']}, got {merged.get(name)!r}"
    for key, word in _TYPE_WORDS.items():
        if kind.startswith(key):
            if key == "int" and "None" in str(info.annotation):
                word = "an integer or 'none'"
            return f"{where}{flag} must be {word}, got {value!r} ({type(value).__name__})"
    return f"{where}{flag}: {error['msg']}, got {value!r}"


def _literal_args(annotation: Any) -> list[Any]:
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    return [a for arg in get_args(annotation) for a in _literal_args(arg)]


def choices_of(name: str) -> list[Any] | None:
    """The allowed values of a Literal field, for argparse."""
    return _literal_args(field_info(name).annotation) or None


def _span(info: FieldInfo) -> str:
    """``within 1..256`` / ``>= 2`` / ``within (0, 1]`` from the field's constraints."""
    bounds = {
        attr: getattr(m, attr) for m in info.metadata for attr in ("ge", "gt", "le") if hasattr(m, attr)
    }
    low = bounds.get("ge", bounds.get("gt"))
    high = bounds.get("le")
    is_float = "float" in str(info.annotation)
    if high is None:
        return f">= {low}" if "ge" in bounds else f"> {low}"
    if is_float:
        return f"within {'[' if 'ge' in bounds else '('}{low}, {high}]"
    return f"within {low}..{high}"


# ---- TOML ----------------------------------------------------------------------------------
def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file as flat options: nested ``[section]`` tables and the old flat keys both read."""
    path = Path(path)
    if not path.exists():
        raise EngineError(f"config file not found: {path}")
    if path.is_dir():
        raise EngineError(f"config file {path} is a directory, not a TOML file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise EngineError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise EngineError(f"{path}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8") from None
    except OSError as exc:
        raise EngineError(f"{path}: cannot read the config file ({exc.strerror})") from None
    return flatten_toml(data, str(path))


def flatten_toml(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Tables group fields for readability; dict-valued options (index_params ...) stay dicts."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        key = key.replace("-", "_")
        if isinstance(value, dict) and key not in DICT_FIELDS:
            if key not in SECTIONS:
                raise EngineError(f"{source}: unknown section [{key}] (known: {', '.join(SECTIONS)})")
            for inner, inner_value in value.items():
                flat[inner.replace("-", "_")] = inner_value
        else:
            flat[key] = value
    unknown = sorted(set(flat) - set(FIELD_SECTION))
    if unknown:
        raise EngineError(
            f"{source}: unknown option {unknown[0]!r} (known: {', '.join(sorted(FIELD_SECTION))})"
        )
    return flat


def parse_json_option(value: str | None, name: str) -> dict[str, Any] | None:
    """``--index-params '{"M": 16}'`` -> dict, with an error naming the flag."""
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise EngineError(f"--{name} is not valid JSON ({exc.msg}): {value!r}") from None
    if not isinstance(parsed, dict):
        raise EngineError(f"--{name} must be a JSON object like '{{\"M\": 16}}', got {value!r}")
    return parsed


def resolve_config(
    flags: dict[str, Any],
    *,
    config_file: str | None = None,
    saved_run: bool = True,
    environ: bool = True,
) -> EngineConfig:
    """defaults < DIR/run.toml (when ``saved_run``) < ``config_file`` < environment < ``flags``.

    ``flags`` holds only the options really given (flat names); ``out`` picks the run directory.
    """
    layers: list[tuple[dict[str, Any], str | None]] = []
    file_options = read_toml(config_file) if config_file else {}
    env_options = FlatEnvSource(EngineConfig).flat() if environ else {}
    out = flags.get(
        "out", env_options.get("out", file_options.get("out", EngineConfig.model_fields["out"].default))
    )
    saved = Path(out) / RUN_CONFIG_NAME
    if saved_run and str(out).strip() and saved.is_file():
        saved_options = read_toml(saved)
        saved_options.pop("restart", None)  # a restart is never implied by an earlier run
        saved_options.pop("out", None)  # the directory it was found in, wherever it was written
        layers.append((saved_options, str(saved)))
    layers.append((file_options, config_file))
    # One layer per variable, so an error names it (ENGINE_K=abc -> "ENGINE_K: --k must be an integer").
    layers += [({name: value}, env_variable(name)) for name, value in env_options.items()]
    layers.append((flags, None))
    return build_config(layers)
