"""Whether this installation has compiled its clustering kernels yet, so the first run can say so.

Why: the clustering stage is numba code (the engine's and EVoC's); compiling it takes minutes on a
2-core machine the first time, and a newcomer saw 4-8 silent minutes. numba caches every compiled
function on disk (``cache=True``), so later runs load it in seconds. numba has no public "is this
cached" query (and packages define kernels no run ever calls), so a marker file is written beside
numba's cache once a clustering succeeded; its name keys on everything that invalidates the cache
(Python, numba, EVoC, and the engine's cluster sources).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from importlib import metadata
from pathlib import Path

log = logging.getLogger("engine")

#: What the first clustering costs on the 2-core reference machine (benchmarks/RESULTS.md, issue 20):
#: 173 s for the cluster stage of a first 200-document run, 2.2 s for the second.
COMPILE_NOTE = "about 3 min on 2 cores"


def _cache_dir() -> Path:
    """Where numba caches (``NUMBA_CACHE_DIR`` if set, else beside the sources: ``__pycache__``)."""
    configured = os.environ.get("NUMBA_CACHE_DIR")
    return Path(configured) if configured else Path(__file__).parent / "__pycache__"


def _key(space: str) -> str:
    parts = [space, sys.version, _version("numba"), _version("evoc")]
    for source in sorted(Path(__file__).parent.glob("*.py")):
        stat = source.stat()
        parts.append(f"{source.name}:{stat.st_mtime_ns}:{stat.st_size}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def marker(space: str) -> Path:
    return _cache_dir() / f"engine-kernels-{space}-{_key(space)}.ok"


def announce_compile(space: str, stage: str = "cluster", what: str = "clustering") -> bool:
    """Log one line if the kernels of ``space`` ("embedding" or "graph") are not compiled yet."""
    if marker(space).exists():
        return False
    log.info(
        "%s: compiling the %s kernels (first run after installing only, %s; later runs reuse them)",
        stage,
        what,
        COMPILE_NOTE,
    )
    return True


def mark_compiled(space: str) -> None:
    """Record that a clustering of ``space`` finished, so its kernels are in numba's cache."""
    path = marker(space)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError:  # a read-only install: numba then caches elsewhere too; the line just repeats
        pass
