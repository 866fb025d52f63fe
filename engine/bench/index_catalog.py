"""Catalogue of Milvus index types: build/search parameters, defaults, sweep ranges, support probing.

One small frozen dataclass per index type (as in VectorDBBench): its fields are the
parameters, ``BUILD`` / ``SEARCH`` say which go to ``create_index`` and which to ``search``,
``SWEEP`` holds the catalogue's sweep ranges. A sweep spec such as
``HNSW:M=16,32:efConstruction=200:ef=32,64,128`` expands to the cartesian product of configs.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import threading
import time
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from engine.errors import EngineError

ParamValue = int | float | str


@dataclass(frozen=True)
class IndexConfig:
    """Base class: one index type with concrete build and search parameters."""

    index_type: ClassVar[str] = ""
    BUILD: ClassVar[tuple[str, ...]] = ()
    SEARCH: ClassVar[tuple[str, ...]] = ()
    SWEEP: ClassVar[dict[str, tuple[ParamValue, ...]]] = {}
    GPU: ClassVar[bool] = False
    # Rough index memory per vector, used only when Milvus reports no size (labelled "estimate").
    DOC: ClassVar[str] = ""

    def index_params(self) -> dict[str, ParamValue]:
        """Parameters for ``create_index`` (``params=``)."""
        return {name: getattr(self, name) for name in self.BUILD}

    def search_params(self) -> dict[str, ParamValue]:
        """Parameters for ``search`` (``search_params={"params": ...}``)."""
        return {name: getattr(self, name) for name in self.SEARCH}

    def build_key(self) -> tuple:
        """Configs with the same build key share one index build."""
        return (self.index_type, tuple(sorted(self.index_params().items())))

    @property
    def label(self) -> str:
        """Short human label, e.g. ``HNSW M=16 efConstruction=200 | ef=64``."""
        build = " ".join(f"{k}={v}" for k, v in self.index_params().items())
        search = " ".join(f"{k}={v}" for k, v in self.search_params().items())
        parts = [self.index_type] + ([build] if build else [])
        return " ".join(parts) + (f" | {search}" if search else "")

    def validate(self, *, k: int | None = None, n: int | None = None, dim: int | None = None) -> None:
        """Check the parameters against each other and the data; raise EngineError naming the culprit."""
        for name in self.BUILD + self.SEARCH:
            value = getattr(self, name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
                raise EngineError(f"{self.index_type}: parameter {name}={value} must be positive")

    def estimate_bytes(self, n: int, dim: int) -> int:
        """Estimated index memory in bytes (raw float32 vectors by default)."""
        return n * dim * 4

    def engine_run_options(self) -> str:
        """The ``engine run`` options that select this config."""
        opts = f"--index {self.index_type}"
        if self.index_params():
            opts += f" --index-params '{json.dumps(self.index_params())}'"
        if self.search_params():
            opts += f" --search-params '{json.dumps(self.search_params())}'"
        return opts

    def to_dict(self) -> dict[str, Any]:
        return {
            "index_type": self.index_type,
            "index_params": self.index_params(),
            "search_params": self.search_params(),
        }


def _check_nprobe(cfg: Any, n: int | None) -> None:
    if cfg.nprobe > cfg.nlist:
        raise EngineError(f"{cfg.index_type}: nprobe={cfg.nprobe} must not exceed nlist={cfg.nlist}")
    if n is not None and cfg.nlist > n:
        raise EngineError(f"{cfg.index_type}: nlist={cfg.nlist} exceeds the number of vectors ({n})")


@dataclass(frozen=True)
class FLAT(IndexConfig):
    """Exact search: the recall ceiling and the QPS floor."""

    index_type: ClassVar[str] = "FLAT"


@dataclass(frozen=True)
class IVF_FLAT(IndexConfig):
    """Inverted lists of raw vectors; nprobe of nlist lists are scanned."""

    index_type: ClassVar[str] = "IVF_FLAT"
    BUILD: ClassVar[tuple[str, ...]] = ("nlist",)
    SEARCH: ClassVar[tuple[str, ...]] = ("nprobe",)
    SWEEP: ClassVar[dict[str, tuple[ParamValue, ...]]] = {
        "nlist": (128, 1024),
        "nprobe": (8, 16, 32, 64, 128),
    }
    nlist: int = 128
    nprobe: int = 16

    def validate(self, *, k=None, n=None, dim=None) -> None:
        super().validate(k=k, n=n, dim=dim)
        _check_nprobe(self, n)

    def estimate_bytes(self, n: int, dim: int) -> int:
        return n * dim * 4 + self.nlist * dim * 4 + n * 8


@dataclass(frozen=True)
class IVF_SQ8(IVF_FLAT):
    """IVF with 8-bit scalar-quantised vectors (4x smaller)."""

    index_type: ClassVar[str] = "IVF_SQ8"

    def estimate_bytes(self, n: int, dim: int) -> int:
        return n * dim + self.nlist * dim * 4 + n * 8


@dataclass(frozen=True)
class IVF_PQ(IndexConfig):
    """IVF with product quantisation: m sub-vectors of nbits codes each."""

    index_type: ClassVar[str] = "IVF_PQ"
    BUILD: ClassVar[tuple[str, ...]] = ("nlist", "m", "nbits")
    SEARCH: ClassVar[tuple[str, ...]] = ("nprobe",)
    SWEEP: ClassVar[dict[str, tuple[ParamValue, ...]]] = {
        "nlist": (128, 1024),
        "m": (16, 32),
        "nbits": (8,),
        "nprobe": (8, 32, 128),
    }
    nlist: int = 128
    m: int = 16
    nbits: int = 8
    nprobe: int = 16

    def validate(self, *, k=None, n=None, dim=None) -> None:
        super().validate(k=k, n=n, dim=dim)
        _check_nprobe(self, n)
        if dim is not None and dim % self.m:
            raise EngineError(f"IVF_PQ: m={self.m} must divide the vector dimension {dim}")

    def estimate_bytes(self, n: int, dim: int) -> int:
        return n * self.m * self.nbits // 8 + self.nlist * dim * 4 + n * 8


@dataclass(frozen=True)
class HNSW(IndexConfig):
    """Hierarchical navigable small-world graph; ef >= limit is required at search time."""

    index_type: ClassVar[str] = "HNSW"
    BUILD: ClassVar[tuple[str, ...]] = ("M", "efConstruction")
    SEARCH: ClassVar[tuple[str, ...]] = ("ef",)
    SWEEP: ClassVar[dict[str, tuple[ParamValue, ...]]] = {
        "M": (8, 16, 32),
        "efConstruction": (200,),
        "ef": (32, 64, 128, 256),
    }
    M: int = 16
    efConstruction: int = 200
    ef: int = 64

    def validate(self, *, k=None, n=None, dim=None) -> None:
        super().validate(k=k, n=n, dim=dim)
        if k is not None and self.ef < k:
            raise EngineError(f"{self.index_type}: ef={self.ef} must be >= the search limit k={k}")

    def estimate_bytes(self, n: int, dim: int) -> int:
        return n * dim * 4 + n * self.M * 2 * 4


@dataclass(frozen=True)
class HNSW_SQ(HNSW):
    """HNSW over scalar-quantised vectors (sq_type SQ8/SQ6/FP16/BF16)."""

    index_type: ClassVar[str] = "HNSW_SQ"
    BUILD: ClassVar[tuple[str, ...]] = ("M", "efConstruction", "sq_type")
    SWEEP: ClassVar[dict[str, tuple[ParamValue, ...]]] = {
        "M": (16, 32),
        "efConstruction": (200,),
        "sq_type": ("SQ8",),
        "ef": (32, 64, 128, 256),
    }
    sq_type: str = "SQ8"

    def estimate_bytes(self, n: int, dim: int) -> int:
        per = {"SQ6": 0.75, "SQ8": 1, "FP16": 2, "BF16": 2}.get(str(self.sq_type).upper(), 1)
        return int(n * dim * per) + n * self.M * 2 * 4


@dataclass(frozen=True)
class DISKANN(IndexConfig):
    """Vamana graph on disk (server only; create_index hangs on milvus 2.3.5-lite)."""

    index_type: ClassVar[str] = "DISKANN"
    SEARCH: ClassVar[tuple[str, ...]] = ("search_list",)
    SWEEP: ClassVar[dict[str, tuple[ParamValue, ...]]] = {"search_list": (32, 64, 128)}
    search_list: int = 64

    def validate(self, *, k=None, n=None, dim=None) -> None:
        super().validate(k=k, n=n, dim=dim)
        if k is not None and self.search_list < k:
            raise EngineError(f"DISKANN: search_list={self.search_list} must be >= the search limit k={k}")


@dataclass(frozen=True)
class SCANN(IndexConfig):
    """IVF with 4-bit fast-scan PQ and optional raw-vector reordering."""

    index_type: ClassVar[str] = "SCANN"
    BUILD: ClassVar[tuple[str, ...]] = ("nlist", "with_raw_data")
    SEARCH: ClassVar[tuple[str, ...]] = ("nprobe", "reorder_k")
    SWEEP: ClassVar[dict[str, tuple[ParamValue, ...]]] = {
        "nlist": (128, 1024),
        "with_raw_data": ("true",),
        "nprobe": (8, 32, 128),
        "reorder_k": (100, 200),
    }
    nlist: int = 128
    with_raw_data: str = "true"
    nprobe: int = 16
    reorder_k: int = 100

    def validate(self, *, k=None, n=None, dim=None) -> None:
        super().validate(k=k, n=n, dim=dim)
        _check_nprobe(self, n)
        if k is not None and self.reorder_k < k:
            raise EngineError(f"SCANN: reorder_k={self.reorder_k} must be >= the search limit k={k}")

    def estimate_bytes(self, n: int, dim: int) -> int:
        return n * dim // 2 + n * dim * 4 + self.nlist * dim * 4


@dataclass(frozen=True)
class AUTOINDEX(IndexConfig):
    """Let Milvus choose (HNSW on Lite 3.x and on 2.3.5)."""

    index_type: ClassVar[str] = "AUTOINDEX"

    def estimate_bytes(self, n: int, dim: int) -> int:
        return HNSW().estimate_bytes(n, dim)


@dataclass(frozen=True)
class GPU_BRUTE_FORCE(IndexConfig):
    """Exact search on the GPU (GPU Milvus only)."""

    index_type: ClassVar[str] = "GPU_BRUTE_FORCE"
    GPU: ClassVar[bool] = True


@dataclass(frozen=True)
class GPU_IVF_FLAT(IVF_FLAT):
    """IVF_FLAT held in GPU memory (GPU Milvus only)."""

    index_type: ClassVar[str] = "GPU_IVF_FLAT"
    GPU: ClassVar[bool] = True


@dataclass(frozen=True)
class GPU_IVF_PQ(IVF_PQ):
    """IVF_PQ held in GPU memory (GPU Milvus only)."""

    index_type: ClassVar[str] = "GPU_IVF_PQ"
    GPU: ClassVar[bool] = True


@dataclass(frozen=True)
class GPU_CAGRA(IndexConfig):
    """CAGRA graph index in GPU memory (about 1.8x the raw data)."""

    index_type: ClassVar[str] = "GPU_CAGRA"
    BUILD: ClassVar[tuple[str, ...]] = ("intermediate_graph_degree", "graph_degree")
    SEARCH: ClassVar[tuple[str, ...]] = ("itopk_size", "search_width")
    SWEEP: ClassVar[dict[str, tuple[ParamValue, ...]]] = {
        "intermediate_graph_degree": (64, 128),
        "graph_degree": (32, 64),
        "itopk_size": (64, 128, 256),
        "search_width": (1, 4),
    }
    GPU: ClassVar[bool] = True
    intermediate_graph_degree: int = 64
    graph_degree: int = 32
    itopk_size: int = 128
    search_width: int = 4

    def validate(self, *, k=None, n=None, dim=None) -> None:
        super().validate(k=k, n=n, dim=dim)
        if self.graph_degree > self.intermediate_graph_degree:
            raise EngineError(
                f"GPU_CAGRA: graph_degree={self.graph_degree} must not exceed "
                f"intermediate_graph_degree={self.intermediate_graph_degree}"
            )
        if k is not None and self.itopk_size < k:
            raise EngineError(f"GPU_CAGRA: itopk_size={self.itopk_size} must be >= the search limit k={k}")

    def estimate_bytes(self, n: int, dim: int) -> int:
        return n * dim * 4 + n * self.graph_degree * 4


CATALOG: dict[str, type[IndexConfig]] = {
    cls.index_type: cls
    for cls in (
        FLAT,
        IVF_FLAT,
        IVF_SQ8,
        IVF_PQ,
        HNSW,
        HNSW_SQ,
        DISKANN,
        SCANN,
        AUTOINDEX,
        GPU_BRUTE_FORCE,
        GPU_IVF_FLAT,
        GPU_IVF_PQ,
        GPU_CAGRA,
    )
}
CPU_TYPES: tuple[str, ...] = tuple(name for name, cls in CATALOG.items() if not cls.GPU)
GPU_TYPES: tuple[str, ...] = tuple(name for name, cls in CATALOG.items() if cls.GPU)


def get_index_class(index_type: str) -> type[IndexConfig]:
    """Look an index type up by name (case-insensitive)."""
    cls = CATALOG.get(str(index_type).strip().upper())
    if cls is None:
        raise EngineError(f"unknown index type {index_type!r}; known: {', '.join(CATALOG)}")
    return cls


def _param_names(cls: type[IndexConfig]) -> tuple[str, ...]:
    return cls.BUILD + cls.SEARCH


def _coerce(cls: type[IndexConfig], name: str, raw: Any) -> ParamValue:
    """Convert one raw value (str from the CLI, or a TOML scalar) to the field's type."""
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    default = field.default
    try:
        if isinstance(default, bool):
            return str(raw).lower() in ("1", "true", "yes")
        if isinstance(default, int):
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError(raw)
            return int(str(raw).strip()) if isinstance(raw, str) else int(raw)
        if isinstance(default, float):
            return float(raw)
        return str(raw).strip().lower() if str(default).lower() in ("true", "false") else str(raw).strip()
    except (TypeError, ValueError):
        raise EngineError(
            f"{cls.index_type}: parameter {name}={raw!r} is not a valid {type(default).__name__}"
        ) from None


def _resolve_name(cls: type[IndexConfig], name: str) -> str:
    names = _param_names(cls)
    lookup = {n.lower(): n for n in names}
    real = lookup.get(name.strip().lower())
    if real is None:
        known = ", ".join(names) or "none"
        raise EngineError(f"{cls.index_type}: unknown parameter {name.strip()!r} (known: {known})")
    return real


def expand(
    index_type: str, values: dict[str, Sequence[Any]] | None = None, *, use_sweep: bool = False
) -> list[IndexConfig]:
    """Cartesian product of parameter values for one type; missing params use defaults (or SWEEP ranges)."""
    cls = get_index_class(index_type)
    grid: dict[str, list[ParamValue]] = {}
    if use_sweep:
        grid.update({name: list(vals) for name, vals in cls.SWEEP.items()})
    for name, vals in (values or {}).items():
        real = _resolve_name(cls, name)
        vals = list(vals) if isinstance(vals, list | tuple) else [vals]
        if not vals:
            raise EngineError(f"{cls.index_type}: parameter {real} has no values")
        grid[real] = [_coerce(cls, real, v) for v in vals]
    names = list(grid)
    configs = []
    seen = set()
    for combo in itertools.product(*(grid[n] for n in names)):
        cfg = cls(**dict(zip(names, combo, strict=True)))
        key = (cfg.build_key(), tuple(sorted(cfg.search_params().items())))
        if key not in seen:
            seen.add(key)
            configs.append(cfg)
    return configs


def parse_spec(spec: str) -> list[IndexConfig]:
    """Parse one sweep spec: ``TYPE[:sweep][:param=v1,v2]...``.

    ``TYPE`` alone is the default config; ``TYPE:sweep`` uses the catalogue's sweep ranges,
    explicit ``param=...`` items override them.
    """
    parts = [p for p in spec.strip().split(":")]
    if not parts or not parts[0].strip():
        raise EngineError(f"empty index spec {spec!r}")
    index_type = parts[0]
    cls = get_index_class(index_type)
    use_sweep = False
    values: dict[str, list[str]] = {}
    for item in parts[1:]:
        item = item.strip()
        if not item:
            continue
        if item.lower() == "sweep":
            use_sweep = True
            continue
        if "=" not in item:
            raise EngineError(f"{cls.index_type}: expected param=value in index spec, got {item!r}")
        name, _, raw = item.partition("=")
        real = _resolve_name(cls, name)
        vals = [v.strip() for v in raw.split(",") if v.strip()]
        if not vals:
            raise EngineError(f"{cls.index_type}: parameter {real} has no values in {spec!r}")
        values[real] = vals
    return expand(cls.index_type, values, use_sweep=use_sweep)


def parse_specs(specs: Iterable[str]) -> list[IndexConfig]:
    """Parse several specs (each may also hold several specs separated by whitespace)."""
    configs: list[IndexConfig] = []
    for spec in specs:
        for one in str(spec).split():
            configs.extend(parse_spec(one))
    if not configs:
        raise EngineError("no index configs given (--index)")
    return _dedupe(configs)


def load_sweep_toml(path: str | os.PathLike) -> list[IndexConfig]:
    """Load a sweep from TOML.

    Either an array of tables ``[[index]]`` with ``type = "HNSW"`` (plus ``sweep = true`` and
    params as scalars or lists), or one table per type: ``[HNSW]`` ``M = [16, 32]``.
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EngineError(f"index sweep file not found: {p}") from None
    except tomllib.TOMLDecodeError as exc:
        raise EngineError(f"{p}: invalid TOML: {exc}") from None
    entries: list[tuple[str, dict[str, Any]]] = []
    for key, value in data.items():
        if key == "index":
            if not isinstance(value, list):
                raise EngineError(f"{p}: 'index' must be an array of tables ([[index]])")
            for i, table in enumerate(value):
                table = dict(table)
                if "type" not in table:
                    raise EngineError(f"{p}: [[index]] entry {i + 1} has no 'type'")
                entries.append((str(table.pop("type")), table))
        elif isinstance(value, dict):
            entries.append((key, dict(value)))
        else:
            raise EngineError(f"{p}: unexpected top-level key {key!r}")
    configs: list[IndexConfig] = []
    for index_type, table in entries:
        use_sweep = bool(table.pop("sweep", False))
        configs.extend(expand(index_type, table, use_sweep=use_sweep))
    if not configs:
        raise EngineError(f"{p}: no index configs")
    return _dedupe(configs)


def _dedupe(configs: list[IndexConfig]) -> list[IndexConfig]:
    out, seen = [], set()
    for cfg in configs:
        key = (cfg.build_key(), tuple(sorted(cfg.search_params().items())))
        if key not in seen:
            seen.add(key)
            out.append(cfg)
    return out


# --------------------------------------------------------------------------- support probe

PROBE_DIM = 16
#: create_index never returns for these on milvus 2.3.5 (FIELD-NOTES): probed last.
HANG_PRONE = ("DISKANN",)
#: Above Milvus 2.3's minSegmentNumRowsToEnableIndex (1,024): a smaller sealed segment gets no real
#: index (describe_index says Finished, search brute-forces), so a GPU type would look supported.
PROBE_ROWS = 2048


def _probe_config(index_type: str) -> IndexConfig:
    """A config small enough for the probe collection (nlist <= rows, m divides PROBE_DIM)."""
    cls = get_index_class(index_type)
    kwargs: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    if "nlist" in names:
        kwargs.update(nlist=8, nprobe=4)
    if "m" in names:
        kwargs["m"] = 4
    if "M" in names:
        kwargs.update(M=8, efConstruction=32, ef=16)
    return cls(**kwargs)


def _run_with_timeout(fn, timeout: float) -> tuple[bool, BaseException | None]:
    """Run fn in a daemon thread; (finished, exception). A hung call is abandoned, not killed."""
    box: dict[str, BaseException | None] = {"exc": None}

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            box["exc"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    return (not thread.is_alive()), box["exc"]


def wire_index_params(params: dict[str, Any], lite: bool) -> dict[str, Any]:
    """Build params as the client must send them.

    pymilvus 3.x flattens ``params`` into top-level key/value pairs, but Milvus Lite 3.2.x reads
    only a JSON ``params`` key and silently ignores the rest (nlist, M, efConstruction fell back
    to its defaults; measured). Sending the nested copy too makes Lite honour them.
    """
    params = dict(params)
    if lite and params:
        params["params"] = dict(params)
    return params


def is_lite_version(version: str) -> bool:
    return "lite" in version.lower() and not version.lower().startswith("v2")


def server_version(client: Any) -> str:
    """The connected Milvus's version string ('unknown' when it does not say)."""
    try:
        return str(client.get_server_version())
    except Exception:  # noqa: BLE001 - some builds do not implement it
        return "unknown"


def default_probe_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "engine" / "index_support.json"


def create_vector_collection(client: Any, name: str, dim: int) -> None:
    """A fresh (id INT64 primary key, vector FLOAT_VECTOR) collection, replacing one of that name."""
    from pymilvus import DataType

    if client.has_collection(name):
        client.drop_collection(name)
    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    client.create_collection(name, schema=schema)


def drop_all_indexes(client: Any, name: str) -> None:
    """Release the collection (if loaded) and drop its indexes, so another index type can be built."""
    try:
        client.release_collection(name)
    except Exception:  # noqa: BLE001 - not loaded
        pass
    for idx in client.list_indexes(name) or []:
        client.drop_index(name, idx)


def probe_support(
    client: Any,
    index_types: Iterable[str] | None = None,
    *,
    metric: str = "COSINE",
    timeout: float = 30.0,
    cache_path: str | os.PathLike | None = None,
    use_cache: bool = True,
    collection_prefix: str = "engine_probe",
) -> dict[str, str | None]:
    """Which index types does this Milvus accept? Returns {type: None if supported else reason}.

    Each type is tried on a small *flushed* collection (Milvus Lite accepts unknown types on
    unflushed data and silently brute-forces), ``describe_index`` must report the type back,
    and a search must succeed. ``create_index`` runs in a thread with a timeout (DISKANN never
    returns on milvus 2.3.5). Results are cached per server version.
    """
    import numpy as np

    types = [get_index_class(t).index_type for t in (index_types or CATALOG)]
    version = server_version(client)
    cache_file = Path(cache_path) if cache_path else default_probe_cache()
    cache_key = f"{version}|{metric.upper()}"
    cache: dict[str, dict[str, str | None]] = {}
    if use_cache and cache_file.exists():
        try:
            cache = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            cache = {}
    known = cache.get(cache_key, {}) if version != "unknown" else {}
    result: dict[str, str | None] = {t: known[t] for t in types if t in known}
    # Types known to hang a server's create_index go last, so a hang costs only themselves.
    todo = sorted((t for t in types if t not in result), key=lambda t: t in HANG_PRONE)
    if not todo:
        return result

    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((PROBE_ROWS, PROBE_DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    rows = [{"id": i, "vector": vecs[i].tolist()} for i in range(PROBE_ROWS)]
    hung = False
    lite = is_lite_version(version)
    for index_type in todo:
        if hung:
            result[index_type] = "not probed: an earlier create_index hung this connection"
            continue
        name = f"{collection_prefix}_{index_type.lower()}_{os.getpid()}_{int(time.time() * 1000) % 100000}"
        cfg = _probe_config(index_type)
        try:
            create_vector_collection(client, name, PROBE_DIM)
            client.insert(name, rows)
            client.flush(name)
            params = client.prepare_index_params()
            params.add_index(
                "vector",
                index_type=index_type,
                metric_type=metric.upper(),
                params=wire_index_params(cfg.index_params(), lite),
            )
            done, exc = _run_with_timeout(
                lambda p=params, n=name: client.create_index(n, p, timeout=timeout), timeout + 15
            )
            if not done:
                result[index_type] = f"create_index did not return within {timeout:g} s"
                hung = True
                continue
            if exc is not None:
                msg = _short(exc)
                if "timeout" in msg.lower():
                    msg = f"index accepted but not built within {timeout:g} s ({msg[:80]})"
                result[index_type] = msg
                continue
            desc = client.describe_index(name, "vector") or {}
            if str(desc.get("state", "")).lower() == "failed":
                result[index_type] = f"index build failed: {desc.get('index_state_fail_reason')}"
                continue
            reported = str(desc.get("index_type", "")).upper()
            if reported and reported != index_type:
                result[index_type] = f"Milvus built {reported} instead"
                continue
            client.load_collection(name)
            client.search(
                name,
                [vecs[0].tolist()],
                limit=3,
                search_params={"metric_type": metric.upper(), "params": cfg.search_params()},
                output_fields=[],
            )
            result[index_type] = None
        except Exception as exc:  # noqa: BLE001 - any refusal means unsupported
            result[index_type] = _short(exc)
        finally:
            _run_with_timeout(lambda n=name: client.drop_collection(n), timeout)
    if version != "unknown" and use_cache:
        probed = {t: r for t, r in result.items() if not (r or "").startswith("not probed")}
        cache[cache_key] = {**known, **probed}
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            cache_file.write_text(json.dumps(cache, indent=1, sort_keys=True))
        except OSError:
            pass
    return result


def _short(exc: BaseException) -> str:
    msg = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(msg).split())[:200]


def check_supported(
    configs: list[IndexConfig], support: dict[str, str | None], *, skip_unsupported: bool = False
) -> tuple[list[IndexConfig], dict[str, str]]:
    """Drop (skip_unsupported) or refuse configs whose type this Milvus does not accept."""
    refused = {
        c.index_type: support.get(c.index_type) or "not probed"
        for c in configs
        if c.index_type not in support or support[c.index_type] is not None
    }
    if refused and not skip_unsupported:
        lines = "; ".join(f"{t}: {why}" for t, why in refused.items())
        raise EngineError(f"index type(s) not supported by this Milvus ({lines}); use --skip-unsupported")
    return [c for c in configs if c.index_type not in refused], refused
