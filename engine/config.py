"""Run configuration: one flat dataclass, filled from defaults < TOML file < saved run < command line.

Why flat: every option has one name, the same as its command-line flag with ``_`` for ``-``,
so a TOML file may use plain keys or group them in tables (``[embed]``, ``[cluster]`` ...)
purely for readability; tables are flattened on load.
"""

from __future__ import annotations

import codecs
import json
import math
import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from engine.errors import EngineError

RUN_CONFIG_NAME = "run.toml"
#: min_samples defaults per cluster space: the raw-graph HDBSCAN* keeps its measured 3; in the node
#: embedding EVoC's 5 gave the better layers (benchmarks/quality.py).
GRAPH_MIN_SAMPLES = 3
EMBEDDING_MIN_SAMPLES = 5


@dataclass
class EngineConfig:
    """Every option of a run. Field names equal the CLI flags (``--min-cluster-size`` -> ``min_cluster_size``)."""

    # where outputs go
    out: str = "out"
    # corpus
    corpus: str | None = None
    text_template: str = "{title}\n{description}"
    text_column: str | None = None
    id_column: str | None = None
    empty: str = "drop"
    duplicates: str = "keep"
    format: str | None = None
    encoding: str = "utf-8"
    columns: list[str] | None = None
    limit: int | None = None
    # embed
    model: str = "BAAI/bge-m3"
    device: str = "auto"
    precision: str = "auto"
    batch_size: int | None = None
    max_length: int = 512
    # store
    milvus_uri: str | None = None  # None -> Lite file <out>/milvus.db, or local-server past 50k docs
    milvus_token: str | None = field(default=None, repr=False)
    db_name: str | None = None
    collection: str = "engine_docs"
    metric: str = "COSINE"
    index: str = "auto"  # auto -> FLAT up to 50k documents, HNSW above
    index_params: dict[str, Any] | None = None
    search_params: dict[str, Any] | None = None
    restart: bool = False
    # graph
    graph_source: str = "milvus"  # milvus | exact
    k: int = 30
    workers: int | None = None  # None -> measured best per backend (Lite 2, server 4)
    search_batch: int | None = None  # None -> 256 query vectors per request
    target_recall: float = 0.95  # tune ef/nprobe on a sample until recall@k reaches this
    recall_sample: int = 1000  # queries with exact neighbours for measuring/tuning recall; 0 = skip
    # cluster
    cluster_space: str = "embedding"  # embedding (node embedding of the graph, layers) | graph (raw HDBSCAN*)
    n_clusters: int | None = None  # ask for a primary layer of about this many clusters
    assign_noise: bool = False  # give noise documents their neighbours' cluster (labels.parquet `assigned`)
    min_cluster_size: int = 5
    min_samples: int | None = None  # None: 3 on the raw graph, 5 in the embedding (EVoC's default)
    cluster_selection_method: str = "eom"
    cluster_selection_epsilon: float = 0.0
    cluster_backend: str = "auto"
    # map
    n_neighbors: int = 15
    min_dist: float = 0.1
    map_backend: str = "auto"
    map_method: str = "auto"  # auto: from the cluster embedding when there is one, else UMAP
    seed: int | None = 42  # None ("none" on the command line): every core, not reproducible
    # report
    n_keywords: int = 10
    n_representatives: int = 5
    time_column: str | None = None  # dates -> per-cluster counts per day/week/month (topics over time)

    # ---- derived -------------------------------------------------------------------------
    @property
    def out_dir(self) -> Path:
        return Path(self.out)

    @property
    def explicit_milvus_uri(self) -> str | None:
        """--milvus-uri, else $MILVUS_URI; None means the embedded default (chosen by the Pipeline by corpus size)."""
        uri = self.milvus_uri or os.environ.get("MILVUS_URI") or None
        return _strip_credentials(uri)[0] if uri else None

    @property
    def resolved_milvus_uri(self) -> str:
        """The explicit URI, else the Milvus Lite file in the run directory (before the corpus size is known)."""
        return self.explicit_milvus_uri or str(self.out_dir / "milvus.db")

    @property
    def effective_min_samples(self) -> int:
        """--min-samples, else the default of the cluster space (graph 3, embedding 5)."""
        if self.min_samples is not None:
            return int(self.min_samples)
        return GRAPH_MIN_SAMPLES if self.cluster_space == "graph" else EMBEDDING_MIN_SAMPLES

    @property
    def resolved_milvus_token(self) -> str | None:
        uri = self.milvus_uri or os.environ.get("MILVUS_URI") or ""
        return self.milvus_token or os.environ.get("MILVUS_TOKEN") or _strip_credentials(uri)[1] or None

    def validate(self) -> None:
        """Cheap checks that catch a bad option before any expensive stage runs."""
        choices = {
            "empty": ("drop", "error"),
            "duplicates": ("keep", "drop"),
            "metric": ("COSINE", "IP", "L2"),
            "graph_source": ("milvus", "exact"),
            "cluster_selection_method": ("eom", "leaf"),
            "cluster_space": ("embedding", "graph"),
            "cluster_backend": ("auto", "cpu", "cuml"),
            "map_backend": ("auto", "cpu", "cuml"),
            "map_method": ("auto", "embedding", "umap"),
            "device": None,
            "precision": ("auto", "fp32", "bf16", "fp16"),
        }
        for name, allowed in choices.items():
            value = getattr(self, name)
            if allowed is not None and value not in allowed:
                raise EngineError(
                    f"--{name.replace('_', '-')} must be one of {', '.join(allowed)}, got {value!r}"
                )
        positive = (
            "k",
            "workers",
            "search_batch",
            "n_neighbors",
            "max_length",
            "n_keywords",
        )
        for name in positive:
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise EngineError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.min_cluster_size < 2:
            raise EngineError(f"--min-cluster-size must be >= 2, got {self.min_cluster_size}")
        if self.min_samples is not None and self.min_samples < 1:
            raise EngineError(f"--min-samples must be >= 1, got {self.min_samples}")
        if self.effective_min_samples > self.k:
            raise EngineError(
                f"--min-samples ({self.effective_min_samples}) must not exceed --k ({self.k}): core distances need "
                "that many neighbours in the graph"
            )
        if self.n_clusters is not None and self.n_clusters < 1:
            raise EngineError(f"--n-clusters must be >= 1, got {self.n_clusters}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise EngineError(
                f"--seed must be an integer or 'none', got {self.seed!r}"
            )  # range: _validate_limits
        if not 0 < self.target_recall <= 1:
            raise EngineError(f"--target-recall must be within (0, 1], got {self.target_recall}")
        if self.recall_sample < 0:
            raise EngineError(f"--recall-sample must be >= 0, got {self.recall_sample}")
        if self.cluster_selection_epsilon < 0:
            raise EngineError(
                f"--cluster-selection-epsilon must be >= 0, got {self.cluster_selection_epsilon}"
            )
        if not 0 <= self.min_dist <= 1:
            raise EngineError(f"--min-dist must be within [0, 1], got {self.min_dist}")
        self._validate_limits()

    def _validate_limits(self) -> None:
        """Upper bounds, encodings and Milvus names/parameters: what would otherwise fail minutes later."""
        from engine.milvus.client import check_collection_name
        from engine.milvus.indexes import LITE_INDEX_TYPES, SERVER_INDEX_TYPES, check_index_params

        ranges = {
            "limit": (1, None),
            "batch_size": (1, 65536),
            "max_length": (2, 8192),
            "workers": (1, 256),
            "search_batch": (1, 16384),
            "n_neighbors": (2, None),
            "seed": (0, 2**32 - 1),
            "n_keywords": (1, 1000),
            "n_representatives": (0, 1000),
        }
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if value is None:
                continue
            if value < low or (high is not None and value > high):
                span = f"within {low}..{high}" if high is not None else f">= {low}"
                raise EngineError(f"--{name.replace('_', '-')} must be {span}, got {value}")
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise EngineError(
                f"--encoding {self.encoding!r} is not a known text encoding (e.g. utf-8, latin-1, gbk)"
            ) from None
        index = self.index.upper()
        known = ("auto", *dict.fromkeys(LITE_INDEX_TYPES + SERVER_INDEX_TYPES))
        if index != "AUTO" and index not in known:
            raise EngineError(f"--index must be one of {', '.join(known)}, got {self.index!r}")
        check_collection_name(self.collection)
        check_index_params(self.index_params, "--index-params", index)
        check_index_params(self.search_params, "--search-params", index)

    # ---- persistence ---------------------------------------------------------------------
    def to_dict(self, include_secrets: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not include_secrets:
            data.pop("milvus_token", None)
            if data.get("milvus_uri"):  # user:password@ in the URI travels as the token, never to disk
                data["milvus_uri"] = _strip_credentials(data["milvus_uri"])[0]
        if data.get("seed") is None:
            data["seed"] = "none"  # TOML has no null; "none" reads back as None
        return data

    def save(self, path: Path) -> None:
        """Write the resolved configuration (never the token) so stage re-runs reuse it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps_toml(self.to_dict()), encoding="utf-8")

    def updated(self, overrides: dict[str, Any], source: str | None = None) -> EngineConfig:
        """A copy with the non-None overrides applied (unknown keys and wrong types rejected).

        ``source`` (a TOML file) is named in the error, so a bad value is traced to where it was set.
        """
        known = {f.name for f in fields(self)}
        data = asdict(self)
        where = f"{source}: " if source else ""
        for key, value in overrides.items():
            if key not in known:
                raise EngineError(f"{where}unknown option {key!r} (known: {', '.join(sorted(known))})")
            if key == "seed" and isinstance(value, str) and value.lower() in ("none", "auto"):
                data[key] = None
            elif value is not None:
                data[key] = _check_type(key, value, where)
        return EngineConfig(**data)


def _strip_credentials(uri: str) -> tuple[str, str | None]:
    from engine.milvus.client import strip_uri_credentials

    return strip_uri_credentials(uri)


def _check_type(name: str, value: Any, where: str) -> Any:
    """The option's value if its type fits the field (an int is accepted for a float), else EngineError."""
    hint = str(_FIELD_TYPES[name])
    flag = f"--{name.replace('_', '-')}"
    expected: tuple[type, ...]
    if "dict" in hint:
        expected, word = (dict,), "a table / JSON object"
    elif "list" in hint:
        expected, word = (list,), "a list of strings"
    elif "bool" in hint:
        expected, word = (bool,), "true or false"
    elif "float" in hint:
        expected, word = (int, float), "a number"
    elif "int" in hint:
        expected, word = (int,), "an integer"
    else:
        expected, word = (str,), "a string"
    if isinstance(value, bool) and bool not in expected:
        ok = False
    else:
        ok = isinstance(value, expected)
    if isinstance(value, float) and not math.isfinite(value):
        raise EngineError(f"{where}{flag} must be a finite number, got {value!r}")
    if not ok:
        raise EngineError(f"{where}{flag} must be {word}, got {value!r} ({type(value).__name__})")
    if isinstance(value, list) and not all(isinstance(v, str) for v in value):
        raise EngineError(f"{where}{flag} must be {word}, got {value!r}")
    return value


def flatten_toml(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Accept plain keys and one level of tables; dict-valued options stay dicts."""
    dict_options = {"index_params", "search_params"}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        key = key.replace("-", "_")
        if isinstance(value, dict) and key not in dict_options:
            for inner, inner_value in value.items():
                flat[inner.replace("-", "_")] = inner_value
        else:
            flat[key] = value
    known = {f.name for f in fields(EngineConfig)}
    unknown = sorted(set(flat) - known)
    if unknown:
        raise EngineError(f"{source}: unknown option {unknown[0]!r} (known: {', '.join(sorted(known))})")
    return flat


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise EngineError(f"config file not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise EngineError(f"{path}: invalid TOML: {exc}") from None
    return flatten_toml(data, str(path))


def _field_types() -> dict[str, Any]:
    import typing

    return typing.get_type_hints(EngineConfig)


_FIELD_TYPES = _field_types()


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


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dumps_toml(data: dict[str, Any]) -> str:
    """Minimal TOML writer for flat configs (None values are omitted: TOML has no null)."""
    lines = ["# engine run configuration (resolved); re-used by per-stage commands"]
    for key, value in data.items():
        if value is None:
            continue
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"
