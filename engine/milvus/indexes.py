"""Every Milvus index type the engine knows: the one place index type names are defined.

One small frozen dataclass per type (as in VectorDBBench). Its fields are the parameters a
benchmark config sets; ``BUILD`` / ``SEARCH`` say which go to ``create_index`` and which to
``search``; ``SWEEP`` holds ``engine bench-index``'s sweep ranges. Class-level facts say where the
type is built (``LITE``, ``SERVER``, ``GPU``), which search knob trades speed for recall (``KNOB``,
tuned along ``LADDERS``), and the build/search parameters ``engine run`` uses when the user gives
none (``default_build_params``, ``default_search_params``). The integer ranges that guard
parameters before they reach Faiss/Knowhere (``PARAM_RANGES``) and the ``--index auto`` policy
(``choose_index``) live here too.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

from engine.errors import EngineError

ParamValue = int | float | str


#: Milvus metrics the engine stores with (engine.graph.distances converts each to Euclidean distance).
Metric = Literal["COSINE", "IP", "L2"]
METRICS: tuple[str, ...] = get_args(Metric)


@dataclass(frozen=True)
class IndexConfig:
    """Base class: one index type with concrete build and search parameters."""

    index_type: ClassVar[str] = ""
    BUILD: ClassVar[tuple[str, ...]] = ()
    SEARCH: ClassVar[tuple[str, ...]] = ()
    SWEEP: ClassVar[dict[str, tuple[ParamValue, ...]]] = {}
    GPU: ClassVar[bool] = False
    #: Built by Milvus Lite 3.x (it refuses IVF_PQ, DISKANN, SCANN; FIELD-NOTES).
    LITE: ClassVar[bool] = False
    #: Built by a (CPU or, with GPU=True, GPU-image) Milvus server.
    SERVER: ClassVar[bool] = True
    #: Brute force: recall 1.0 by construction, nothing to measure or tune.
    EXACT: ClassVar[bool] = False
    #: The one search parameter that trades speed for recall (tuned along ``LADDERS[KNOB]``).
    KNOB: ClassVar[str | None] = None
    #: Server versions (prefix) that accept ``create_index`` but whose build then loops forever
    #: (measured by benchmarks/server_index_support.py; results/server_index_support.json).
    BUILD_HANGS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def default_build_params(cls, n_rows: int) -> dict[str, Any]:
        """Build parameters for ``engine run`` (recall >= 0.95 on clustered 1024-d data at k <= 50)."""
        return {}

    @classmethod
    def default_search_params(cls, limit: int, index_params: dict[str, Any]) -> dict[str, Any]:
        """Search parameters for ``engine run`` derived from ``limit`` and the build parameters."""
        return {}

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
    LITE: ClassVar[bool] = True
    EXACT: ClassVar[bool] = True


@dataclass(frozen=True)
class IVF_FLAT(IndexConfig):
    """Inverted lists of raw vectors; nprobe of nlist lists are scanned."""

    index_type: ClassVar[str] = "IVF_FLAT"
    LITE: ClassVar[bool] = True
    KNOB: ClassVar[str | None] = "nprobe"
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

    @classmethod
    def default_build_params(cls, n_rows: int) -> dict[str, Any]:
        return {"nlist": _auto_nlist(n_rows)}

    @classmethod
    def default_search_params(cls, limit: int, index_params: dict[str, Any]) -> dict[str, Any]:
        return _auto_nprobe(index_params)


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
    KNOB: ClassVar[str | None] = "nprobe"
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

    @classmethod
    def default_build_params(cls, n_rows: int) -> dict[str, Any]:
        return {"nlist": _auto_nlist(n_rows), "m": 64, "nbits": 8}

    @classmethod
    def default_search_params(cls, limit: int, index_params: dict[str, Any]) -> dict[str, Any]:
        return _auto_nprobe(index_params)


@dataclass(frozen=True)
class HNSW(IndexConfig):
    """Hierarchical navigable small-world graph; ef >= limit is required at search time."""

    index_type: ClassVar[str] = "HNSW"
    LITE: ClassVar[bool] = True
    KNOB: ClassVar[str | None] = "ef"
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

    @classmethod
    def default_build_params(cls, n_rows: int) -> dict[str, Any]:
        return {"M": 16, "efConstruction": 200}

    @classmethod
    def default_search_params(cls, limit: int, index_params: dict[str, Any]) -> dict[str, Any]:
        return _auto_ef(limit)


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
class HNSW_PQ(HNSW):
    """HNSW over product-quantised vectors (m sub-vectors of nbits; server only)."""

    index_type: ClassVar[str] = "HNSW_PQ"
    LITE: ClassVar[bool] = False
    BUILD: ClassVar[tuple[str, ...]] = ("M", "efConstruction", "m", "nbits")
    SWEEP: ClassVar[dict[str, tuple[ParamValue, ...]]] = {
        "M": (16, 32),
        "efConstruction": (200,),
        "m": (16, 32),
        "ef": (32, 64, 128, 256),
    }
    m: int = 16
    nbits: int = 8

    def validate(self, *, k=None, n=None, dim=None) -> None:
        super().validate(k=k, n=n, dim=dim)
        if dim is not None and dim % self.m:
            raise EngineError(f"{self.index_type}: m={self.m} must divide the vector dimension {dim}")

    def estimate_bytes(self, n: int, dim: int) -> int:
        return n * self.m * self.nbits // 8 + n * self.M * 2 * 4


@dataclass(frozen=True)
class HNSW_PRQ(HNSW_PQ):
    """HNSW over product residual quantisation (nrq residual PQ passes; server only)."""

    index_type: ClassVar[str] = "HNSW_PRQ"
    BUILD: ClassVar[tuple[str, ...]] = ("M", "efConstruction", "m", "nbits", "nrq")
    nrq: int = 2

    def estimate_bytes(self, n: int, dim: int) -> int:
        return n * self.m * self.nbits * self.nrq // 8 + n * self.M * 2 * 4


@dataclass(frozen=True)
class DISKANN(IndexConfig):
    """Vamana graph on disk (server only; create_index hangs on milvus 2.3.5-lite)."""

    index_type: ClassVar[str] = "DISKANN"
    KNOB: ClassVar[str | None] = "search_list"
    BUILD_HANGS: ClassVar[tuple[str, ...]] = ("v2.3.5",)
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
    KNOB: ClassVar[str | None] = "nprobe"
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

    @classmethod
    def default_build_params(cls, n_rows: int) -> dict[str, Any]:
        return {"nlist": _auto_nlist(n_rows)}

    @classmethod
    def default_search_params(cls, limit: int, index_params: dict[str, Any]) -> dict[str, Any]:
        return _auto_nprobe(index_params)


@dataclass(frozen=True)
class AUTOINDEX(IndexConfig):
    """Let Milvus choose (HNSW on Lite 3.x and on 2.3.5)."""

    index_type: ClassVar[str] = "AUTOINDEX"
    LITE: ClassVar[bool] = True

    def estimate_bytes(self, n: int, dim: int) -> int:
        return HNSW().estimate_bytes(n, dim)

    @classmethod
    def default_search_params(cls, limit: int, index_params: dict[str, Any]) -> dict[str, Any]:
        return _auto_ef(limit)  # Milvus builds HNSW for it (Lite 3.x and 2.3.5)


@dataclass(frozen=True)
class BRUTE_FORCE(IndexConfig):
    """Milvus Lite's name for exact search."""

    index_type: ClassVar[str] = "BRUTE_FORCE"
    LITE: ClassVar[bool] = True
    SERVER: ClassVar[bool] = False
    EXACT: ClassVar[bool] = True


@dataclass(frozen=True)
class GPU_BRUTE_FORCE(IndexConfig):
    """Exact search on the GPU (GPU Milvus only)."""

    index_type: ClassVar[str] = "GPU_BRUTE_FORCE"
    GPU: ClassVar[bool] = True
    EXACT: ClassVar[bool] = True


@dataclass(frozen=True)
class GPU_IVF_FLAT(IVF_FLAT):
    """IVF_FLAT held in GPU memory (GPU Milvus only)."""

    index_type: ClassVar[str] = "GPU_IVF_FLAT"
    GPU: ClassVar[bool] = True
    LITE: ClassVar[bool] = False
    BUILD_HANGS: ClassVar[tuple[str, ...]] = ("v2.3.5",)


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
    KNOB: ClassVar[str | None] = "itopk_size"
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

    @classmethod
    def default_build_params(cls, n_rows: int) -> dict[str, Any]:
        return {"intermediate_graph_degree": 64, "graph_degree": 32}

    @classmethod
    def default_search_params(cls, limit: int, index_params: dict[str, Any]) -> dict[str, Any]:
        return {"itopk_size": max(64, 2 * limit), "search_width": 4}


CATALOG: dict[str, type[IndexConfig]] = {
    cls.index_type: cls
    for cls in (
        AUTOINDEX,
        FLAT,
        BRUTE_FORCE,
        IVF_FLAT,
        IVF_SQ8,
        IVF_PQ,
        HNSW,
        HNSW_SQ,
        HNSW_PQ,
        HNSW_PRQ,
        SCANN,
        DISKANN,
        GPU_BRUTE_FORCE,
        GPU_IVF_FLAT,
        GPU_IVF_PQ,
        GPU_CAGRA,
    )
}
CPU_TYPES: tuple[str, ...] = tuple(name for name, cls in CATALOG.items() if not cls.GPU)
GPU_TYPES: tuple[str, ...] = tuple(name for name, cls in CATALOG.items() if cls.GPU)
#: Index types Milvus Lite 3.x accepts.
LITE_INDEX_TYPES: tuple[str, ...] = tuple(name for name, cls in CATALOG.items() if cls.LITE)
#: Index types a Milvus server accepts for FLOAT_VECTOR (GPU_* need the GPU image).
SERVER_INDEX_TYPES: tuple[str, ...] = tuple(name for name, cls in CATALOG.items() if cls.SERVER)
#: Brute-force indexes: recall 1.0 by construction, nothing to measure or tune.
EXACT_INDEXES: tuple[str, ...] = tuple(name for name, cls in CATALOG.items() if cls.EXACT)
#: The search knob per index type (types without one are searched as configured and only measured).
SEARCH_KNOBS: dict[str, str] = {name: cls.KNOB for name, cls in CATALOG.items() if cls.KNOB}
#: Values tried per knob when tuning (ascending cost).
LADDERS: dict[str, tuple[int, ...]] = {
    "ef": (32, 48, 64, 96, 128, 192, 256, 384, 512, 768),
    "nprobe": (8, 16, 32, 64, 128, 256, 512),
    "search_list": (32, 64, 128, 256, 512),
    "itopk_size": (32, 64, 128, 256, 512),
}
#: Knobs Milvus requires to be >= the search limit.
LIMIT_BOUND_KNOBS = ("ef", "itopk_size")


def get_index_class(index_type: str) -> type[IndexConfig]:
    """Look an index type up by name (case-insensitive)."""
    cls = CATALOG.get(str(index_type).strip().upper())
    if cls is None:
        raise EngineError(f"unknown index type {index_type!r}; known: {', '.join(CATALOG)}")
    return cls


def search_ladder(index_type: str, k: int) -> tuple[str | None, list[int]]:
    """The knob for ``index_type`` and the values to try at search limit ``k + 1``.

    A value below the limit is pointless where Milvus needs knob >= limit.
    """
    knob = SEARCH_KNOBS.get(str(index_type).upper())
    if knob is None:
        return None, []
    return knob, sorted({max(v, k + 1) if knob in LIMIT_BOUND_KNOBS else v for v in LADDERS[knob]})


def build_hangs(server_version: str) -> list[str]:
    """Index types this server version accepts but never finishes building (measured)."""
    return [
        name
        for name, cls in CATALOG.items()
        if any(str(server_version).startswith(prefix) for prefix in cls.BUILD_HANGS)
    ]


# --------------------------------------------------------------------------- parameter checks

#: Integer ranges of the index build / search parameters Milvus documents, per parameter name.
#: Values outside them reach Faiss/Knowhere unchecked: measured, HNSW M=-5 grew the process to 21 GB
#: and M=0 aborted with a Faiss assertion. Parameters not listed here are passed through unchecked.
PARAM_RANGES: dict[str, tuple[int, int]] = {
    "M": (2, 2048),
    "efConstruction": (1, 2**31 - 1),
    "ef": (1, 32768),
    "nlist": (1, 65536),
    "nprobe": (1, 65536),
    "m": (1, 65536),
    "nbits": (1, 16),
    "reorder_k": (1, 2**31 - 1),
    "search_list": (1, 65535),
    "intermediate_graph_degree": (1, 1024),
    "graph_degree": (1, 1024),
    "itopk_size": (1, 65536),
    "search_width": (1, 65536),
    "level": (1, 5),
}


def check_index_params(
    params: dict[str, Any] | None, option: str, index_type: str | None = None, dim: int | None = None
) -> None:
    """Raise EngineError naming ``option`` and the key when a known parameter is not an integer in range."""
    for key, value in (params or {}).items():
        if key not in PARAM_RANGES:
            continue
        low, high = PARAM_RANGES[key]
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise EngineError(f"{option}: {key!r} must be an integer in {low}..{high}, got {value!r}")
        if not low <= value <= high:
            raise EngineError(f"{option}: {key!r} must be an integer in {low}..{high}, got {value!r}")
    cls = CATALOG.get(str(index_type or "").upper())
    # Product quantisation splits each vector into m sub-vectors.
    if cls is not None and "m" in cls.BUILD and dim and "m" in (params or {}):
        if dim % int(params["m"]):  # type: ignore[index]
            raise EngineError(f"{option}: 'm' ({params['m']}) must divide the vector dimension ({dim})")  # type: ignore[index]


def _auto_nlist(n_rows: int) -> int:
    return int(min(65536, max(16, 4 * math.sqrt(max(n_rows, 1)))))


def _auto_nprobe(index_params: dict[str, Any]) -> dict[str, Any]:
    # IVF_SQ8 nprobe=32 of 489 lists gives recall@30 0.94 at 20k (benchmarks/results/graph_*.json).
    nlist = int(index_params.get("nlist", 128))
    return {"nprobe": int(min(nlist, max(16, nlist // 8)))}


def _auto_ef(limit: int) -> dict[str, Any]:
    # Measured on clustered 1024-d vectors, k=30 (benchmarks/results/graph_*.json): at 20k HNSW
    # ef=64 gives recall@30 0.945-0.951, ef=128 0.97; at 100k ef=128 gives 0.943-0.957 and ef=256
    # 0.961-0.965 (so k=30 -> ef=248).
    return {"ef": max(128, 8 * limit)}


def default_index_params(index_type: str, n_rows: int) -> dict[str, Any]:
    """Build parameters that give recall >= 0.95 on clustered 1024-d data at k <= 50 ({} if unknown)."""
    cls = CATALOG.get(str(index_type).upper())
    return cls.default_build_params(n_rows) if cls is not None else {}


def default_search_params(index_type: str, limit: int, index_params: dict[str, Any]) -> dict[str, Any]:
    """Search knobs derived from ``limit``: HNSW ef = max(128, 8*limit), IVF nprobe ~ nlist/8."""
    cls = CATALOG.get(str(index_type).upper())
    return cls.default_search_params(limit, index_params) if cls is not None else {}


# --------------------------------------------------------------------------- auto policy

#: ``--index auto``: below this many documents an exact FLAT index is cheap and gives recall 1.0.
AUTO_FLAT_MAX_DOCS = 50_000
AUTO_HNSW_PARAMS = {"M": 16, "efConstruction": 200}


def choose_index(index: str, n_documents: int, index_params: dict | None) -> tuple[str, dict | None]:
    """``auto``: exact FLAT for small corpora, HNSW beyond (recall >= 0.95 at far higher QPS)."""
    if index.lower() != "auto":
        return index.upper(), index_params
    if n_documents <= AUTO_FLAT_MAX_DOCS:
        return FLAT.index_type, index_params
    return HNSW.index_type, index_params or dict(AUTO_HNSW_PARAMS)


def allowed_index_types(lite: bool) -> tuple[str, ...]:
    """The index types Milvus Lite (``lite``) or a server builds."""
    return LITE_INDEX_TYPES if lite else SERVER_INDEX_TYPES


def check_available(index_type: str, lite: bool) -> None:
    """Raise EngineError unless ``index_type`` can be built on Milvus Lite (``lite``) or a server."""
    allowed = allowed_index_types(lite)
    if index_type not in allowed:
        raise EngineError(
            f"--index {index_type} is not available on {'Milvus Lite' if lite else 'a Milvus server'}; "
            f"choose one of {', '.join(allowed)}"
        )
