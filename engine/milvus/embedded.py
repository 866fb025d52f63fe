"""Which Milvus to use when the user names none: a Lite file for small corpora, the engine's own server above.

Why here and not in the pipeline: ``engine doctor`` reports the same choice, and both must agree.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger("engine")

# --milvus-uri local-server: the engine runs a standalone Milvus (PyPI `milvus`) in DIR/milvus_server
# for the duration of the command. Measured 4.3x faster than Milvus Lite for the whole 20k graph
# (benchmarks/results/graph_20k*.json), so it is the better embedded choice past ~50k documents.
LOCAL_SERVER_URI = "local-server"
# The embedded default (no --milvus-uri, no $MILVUS_URI): a Milvus Lite file up to this many documents
# (no process to start, one file), the engine-managed local server above it. Lite 3.x searches at
# ~110-200 q/s (Python per hit) -> ~2 h for a 1M graph; the server does the 100k graph at >1,000 q/s.
AUTO_SERVER_MIN_DOCS = 50_000


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
