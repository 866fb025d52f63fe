"""Streaming, resumable ingest: corpus -> encoder -> ``embeddings.npy`` + Milvus.

Crash safety comes from one ordering rule: a window's vectors are written to ``vectors_path`` and
``fdatasync``-ed *before* its rows are inserted into Milvus, so every id Milvus holds has its vector on
disk. A re-run asks Milvus which ids it holds, skips them, and embeds/inserts only the rest; each id is
inserted at most once per run and never when already stored, so the collection ends with exactly N unique
ids (no reliance on upsert semantics, which differ between Milvus Lite and a server).

Memory stays bounded: the encoder yields windows of ``insert_batch`` rows, a bounded queue (two windows)
feeds a writer thread that inserts while the model works on the next window, and rows go to the ``.npy``
file with ``pwrite`` (not through a memory map, whose touched pages would count in RSS and grow with N).
"""

from __future__ import annotations

import os
import queue
import resource
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import EngineError

_DONE = object()


@dataclass
class IngestResult:
    """What one ``ingest`` call did."""

    n_total: int
    n_existing: int
    n_embedded: int
    seconds: float
    docs_per_s: float
    peak_rss_mb: float


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 1024.0**2


# --------------------------------------------------------------------------------------------- vector file
class VectorFile:
    """A float32 (N, dim) ``.npy`` file (``open_memmap`` format) written row-range by row-range.

    ``write`` uses ``os.pwrite`` + ``fdatasync`` so rows are durable before Milvus sees them and no
    mapped pages accumulate in this process.
    """

    def __init__(self, path: str | Path, n: int, dim: int, create: bool):
        self.path = Path(path)
        self.n, self.dim = int(n), int(dim)
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(self.n, self.dim))
            self.offset = int(mm.offset)
            del mm
            os.replace(tmp, self.path)
        else:
            mm = np.load(self.path, mmap_mode="r")
            self.offset = int(mm.offset)
            del mm
        self.fd = os.open(self.path, os.O_RDWR)

    @staticmethod
    def shape_of(path: str | Path) -> tuple[tuple[int, ...], np.dtype] | None:
        """(shape, dtype) of an existing ``.npy`` file, or None when absent or unreadable."""
        try:
            mm = np.load(path, mmap_mode="r")
        except (OSError, ValueError):
            return None
        shape, dtype = mm.shape, mm.dtype
        del mm
        return shape, dtype

    def write(self, positions: np.ndarray, vectors: np.ndarray) -> None:
        """Write ``vectors[i]`` to row ``positions[i]`` (contiguous runs in one call each), then sync."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        positions = np.asarray(positions, dtype=np.int64)
        row_bytes = self.dim * 4
        breaks = np.flatnonzero(np.diff(positions) != 1) + 1
        for run in np.split(np.arange(len(positions)), breaks):
            if len(run) == 0:
                continue
            buf = vectors[run[0] : run[-1] + 1].tobytes()
            os.pwrite(self.fd, buf, self.offset + int(positions[run[0]]) * row_bytes)
        os.fdatasync(self.fd)

    def row_norms(self, chunk: int = 65536) -> np.ndarray:
        """L2 norm of every row (read in chunks, not mapped), to find rows never written."""
        out = np.empty(self.n, dtype=np.float32)
        with open(self.path, "rb") as fh:
            for start in range(0, self.n, chunk):
                stop = min(start + chunk, self.n)
                fh.seek(self.offset + start * self.dim * 4)
                block = np.fromfile(fh, dtype=np.float32, count=(stop - start) * self.dim)
                out[start:stop] = np.linalg.norm(block.reshape(stop - start, self.dim), axis=1)
        return out

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# --------------------------------------------------------------------------------------------- helpers
def _validate_frame(frame) -> tuple[np.ndarray, list[str]]:
    for col in ("id", "text"):
        if col not in frame.columns:
            raise EngineError(f"ingest: frame has no {col!r} column (columns: {list(frame.columns)})")
    try:
        ids = frame["id"].to_numpy(dtype=np.int64)
    except (TypeError, ValueError):
        raise EngineError("ingest: column 'id' must be int64") from None
    if len(ids) and len(np.unique(ids)) != len(ids):
        _, first, counts = np.unique(ids, return_index=True, return_counts=True)
        dup = int(ids[first[np.argmax(counts > 1)]])
        raise EngineError(f"ingest: id {dup} appears more than once in column 'id' (ids must be unique)")
    texts = frame["text"].tolist()
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise EngineError(
                f"ingest: row {i} (id {int(ids[i])}) has a non-string text ({type(t).__name__})"
            )
    return ids, texts


class _Writer(threading.Thread):
    """Inserts queued windows into Milvus while the encoder works on the next one."""

    def __init__(self, store, q: queue.Queue, flush_every: int):
        super().__init__(name="ingest-milvus-writer", daemon=True)
        self.store, self.q, self.flush_every = store, q, flush_every
        self.error: BaseException | None = None
        self.inserted = 0

    def run(self) -> None:
        since_flush = 0
        while True:
            item = self.q.get()
            if item is _DONE:
                return
            if self.error is not None:
                continue  # drain so the producer never blocks
            ids, vectors, texts = item
            try:
                self.store.insert(ids, vectors, texts)
                self.inserted += len(ids)
                since_flush += len(ids)
                if self.flush_every and since_flush >= self.flush_every:
                    self.store.flush()
                    since_flush = 0
            except BaseException as exc:
                self.error = exc


# --------------------------------------------------------------------------------------------- ingest
def ingest(
    frame,
    encoder,
    store,
    vectors_path: str | Path,
    restart: bool = False,
    insert_batch: int = 2000,
    progress: bool = True,
    flush_every: int | None = None,
    queue_size: int = 2,
) -> IngestResult:
    """Embed ``frame`` (columns ``id``, ``text``) into ``vectors_path`` and Milvus; resume what is stored.

    ``restart=True`` drops the collection and the vector file and starts over. Rows whose id is already in
    Milvus are skipped (their vectors are on disk by construction); if such a row's vector is missing from
    the file (the file was deleted), it is re-embedded into the file but not inserted again.
    ``flush_every`` rows (None: 100,000 on Milvus Lite; only at the end on a server, where each flush
    seals a segment and each sealed segment is one more index that every graph query searches).
    """
    from tqdm.auto import tqdm

    if insert_batch < 1:
        raise EngineError(f"ingest: insert_batch={insert_batch} must be >= 1")
    t0 = time.perf_counter()
    ids, texts = _validate_frame(frame)
    n, dim = len(ids), int(encoder.dim)
    vectors_path = Path(vectors_path)

    store.ensure_collection(dim, drop_existing=bool(restart))
    existing = np.empty(0, dtype=np.int64) if restart else np.asarray(store.existing_ids(), dtype=np.int64)
    in_store = np.isin(ids, existing)
    stray = len(existing) - int(in_store.sum())
    if stray > 0:
        raise EngineError(
            f"ingest: the Milvus collection holds {stray} ids that are not in this corpus "
            "(the corpus changed since the last run); use restart=True (--restart) to rebuild"
        )

    found = VectorFile.shape_of(vectors_path) if not restart else None
    create = found is None or found[0] != (n, dim) or found[1] != np.float32
    if create and found is not None and len(existing) and not restart:
        raise EngineError(
            f"ingest: {vectors_path} has shape {found[0]} but the corpus needs ({n}, {dim}); "
            "use restart=True (--restart) to rebuild"
        )
    vf = VectorFile(vectors_path, n, dim, create=create)
    try:
        need_disk = np.zeros(n, dtype=bool)
        if in_store.any():
            need_disk = in_store & (vf.row_norms() < 0.5)  # stored in Milvus, but not in this file
        todo = np.flatnonzero(~in_store | need_disk)
        insert_mask = ~in_store[todo]
        n_existing = int(in_store.sum())

        q: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        if flush_every is None:
            flush_every = 100_000 if getattr(store, "is_lite", True) else 0
        writer = _Writer(store, q, flush_every)
        writer.start()
        bar = tqdm(total=len(todo), desc="embed+ingest", unit="doc", disable=not progress)
        try:
            todo_texts = [texts[i] for i in todo]
            for start, vec in encoder.iter_encode(todo_texts, window=insert_batch):
                if writer.error is not None:
                    raise writer.error
                pos = todo[start : start + len(vec)]
                vf.write(pos, vec)  # durable before Milvus sees these ids
                ins = insert_mask[start : start + len(vec)]
                if ins.any():
                    sel_pos = pos[ins]
                    item = (ids[sel_pos], vec[ins], [texts[i] for i in sel_pos])
                    while True:
                        try:
                            q.put(item, timeout=0.5)
                            break
                        except queue.Full:
                            if writer.error is not None or not writer.is_alive():
                                raise writer.error or EngineError("ingest: Milvus writer stopped") from None
                bar.update(len(vec))
        finally:
            q.put(_DONE)
            writer.join()
            bar.close()
        if writer.error is not None:
            raise writer.error
        store.flush()
    finally:
        vf.close()
    seconds = time.perf_counter() - t0
    n_embedded = len(todo)
    return IngestResult(
        n_total=n,
        n_existing=n_existing,
        n_embedded=n_embedded,
        seconds=seconds,
        docs_per_s=n_embedded / seconds if seconds > 0 else 0.0,
        peak_rss_mb=peak_rss_mb(),
    )
