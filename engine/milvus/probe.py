"""Which index types can this Milvus build and search? One probe for ``engine doctor`` and ``engine bench-index``.

Each type is built on a small *flushed* collection (Milvus Lite accepts unknown types on unflushed
data and silently brute-forces) through the store's one index-build path; ``describe_index`` must
report the type back, and a search must succeed. Builds run in a thread with a timeout: a hung
``create_index`` is abandoned. Types this server version is known to accept but never finish
building are reported without trying (they would hang the connection). Results can be cached
per server version.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from engine.milvus.client import server_version, short_error
from engine.milvus.indexes import CATALOG, IndexConfig, build_hangs, get_index_class
from engine.timeouts import run_with_timeout

PROBE_DIM = 16
#: Above Milvus 2.3's minSegmentNumRowsToEnableIndex (1,024): a smaller sealed segment gets no real
#: index (describe_index says Finished, search brute-forces), so a GPU type would look supported.
PROBE_ROWS = 2048
NEVER_FINISHES = "accepted, but the build never finishes on this server version (measured)"


def probe_config(index_type: str) -> IndexConfig:
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


def default_probe_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "engine" / "index_support.json"


def probe_support(
    store: Any,
    index_types: Iterable[str] | None = None,
    *,
    metric: str = "COSINE",
    timeout: float = 30.0,
    cache_path: str | os.PathLike | None = None,
    use_cache: bool = True,
    collection_prefix: str = "engine_probe",
) -> dict[str, str | None]:
    """{type: None if this Milvus builds and searches it, else the reason}, for ``store``'s connection.

    ``store`` is an open :class:`engine.milvus.store.MilvusStore`; the probe works on its own
    throw-away collection over the same connection and drops it afterwards.
    """
    types = [get_index_class(t).index_type for t in (index_types or CATALOG)]
    version = server_version(store.client)
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
    hangs = build_hangs(version)
    result.update({t: NEVER_FINISHES for t in types if t in hangs and t not in result})
    todo = [t for t in types if t not in result]
    if not todo:
        return result

    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((PROBE_ROWS, PROBE_DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    name = f"{collection_prefix}_{os.getpid()}_{int(time.time() * 1000) % 100000}"
    # gRPC, no retries, no rebuild-on-load-failure: a refusal is the answer, not something to work around.
    probe = store.sibling(
        name,
        dim=PROBE_DIM,
        metric=metric.upper(),
        max_retries=0,
        lite_direct=False,
        rebuild_on_load_failure=False,
    )
    hung = False
    try:
        probe.ensure_collection(PROBE_DIM, drop_existing=True)
        probe.insert(np.arange(PROBE_ROWS, dtype=np.int64), vecs)
        probe.flush()
        for index_type in todo:
            if hung:
                result[index_type] = "not probed: an earlier create_index hung this connection"
                continue
            result[index_type] = _probe_one(probe, index_type, vecs[:1], timeout)
            hung = (result[index_type] or "").startswith("create_index did not return")
    finally:
        run_with_timeout(probe.drop, timeout)
        probe.close()
    if version != "unknown" and use_cache:
        probed = {t: r for t, r in result.items() if not (r or "").startswith("not probed")}
        cache[cache_key] = {**known, **probed}
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            cache_file.write_text(json.dumps(cache, indent=1, sort_keys=True))
        except OSError:
            pass
    return result


def _probe_one(probe: Any, index_type: str, query: np.ndarray, timeout: float) -> str | None:
    """None when ``index_type`` builds, reports itself back and searches; else why not."""
    cfg = probe_config(index_type)
    status, value = run_with_timeout(
        lambda: probe.create_index(index_type, cfg.index_params(), timeout=timeout), timeout + 15
    )
    if status == "timeout":
        return f"create_index did not return within {timeout:g} s"
    if status == "error":
        msg = _reason(value)  # type: ignore[arg-type]
        if "timeout" in msg.lower() or "not built after" in msg:
            msg = f"index accepted but not built within {timeout:g} s ({msg[:80]})"
        return msg
    desc = probe.describe_index()
    if str(desc.get("state", "")).lower() == "failed":
        return f"index build failed: {desc.get('index_state_fail_reason')}"
    reported = str(desc.get("index_type", "")).upper()
    if reported and reported != index_type:
        return f"Milvus built {reported} instead"
    status, value = run_with_timeout(
        lambda: probe.search(query, limit=3, search_params=cfg.search_params()), timeout + 15
    )
    if status == "timeout":
        return f"search did not return within {timeout:g} s"
    return _reason(value) if status == "error" else None  # type: ignore[arg-type]


def _reason(exc: BaseException) -> str:
    """Milvus's own words: the store's 'Milvus <call> on collection ... failed: ' prefix removed."""
    msg = str(exc)
    if msg.startswith("Milvus ") and " failed: " in msg:
        msg = msg.split(" failed: ", 1)[1]
    return short_error(msg)
