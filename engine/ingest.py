"""Streaming, resumable ingest: corpus -> encoder -> ``embeddings.npy`` + Milvus.

Crash safety comes from one ordering rule: a window's vectors are written to ``vectors_path`` and
``fdatasync``-ed *before* its rows are inserted into Milvus, so every id Milvus holds has its vector on
disk. A re-run asks Milvus which ids it holds, skips them, and embeds/inserts only the rest; each id is
inserted at most once per run and never when already stored, so the collection ends with exactly N unique
ids (no reliance on upsert semantics, which differ between Milvus Lite and a server).
With ``stream`` (``--ray``: engine.distributed) the workers write Milvus first, by *upsert*, and the driver
writes the file when the block comes back; an id a worker stored whose vector never reached the file is
read back from Milvus into the file (the ``need_disk`` rows below), so the rule's outcome is the same.
A vector file that is gone altogether (deleted, or the corpus was embedded on another machine into the same
Milvus server) is rebuilt from Milvus the same way: the rows Milvus holds are never embedded twice.

Memory stays bounded: the encoder yields windows of ``insert_batch`` rows, a bounded queue (two windows)
feeds a writer thread that inserts while the model works on the next window, and rows go to the ``.npy``
file with ``pwrite`` (not through a memory map, whose touched pages would count in RSS and grow with N).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import resource
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.atomic import atomic_output, read_input, write_text
from engine.errors import EngineError

_DONE = object()
log = logging.getLogger("engine")


@dataclass
class IngestResult:
    """What one ``ingest`` call did.

    ``n_changed``: documents whose text (or model/options) changed since their vector was stored, so
    they were embedded again; ``n_vanished``: stored documents no longer in the corpus, dropped;
    ``n_from_disk``: vectors re-inserted into Milvus from ``embeddings.npy`` without embedding;
    ``n_from_milvus``: vectors Milvus held but ``embeddings.npy`` did not, read back into it.
    """

    n_total: int
    n_existing: int
    n_embedded: int
    seconds: float
    docs_per_s: float
    peak_rss_mb: float
    n_changed: int = 0
    n_vanished: int = 0
    n_from_disk: int = 0
    n_from_milvus: int = 0


# --------------------------------------------------------------------------------------------- fingerprints
def fingerprints(texts: list[str], key: str) -> np.ndarray:
    """One uint64 per document: blake2b of ``key`` (model and options) and the text.

    Why: ids default to row numbers, so an edited corpus, or another file with as many rows, has
    the same ids as the stored vectors; only the content tells whether a stored vector is current.
    """
    prefix = hashlib.blake2b(key.encode("utf-8"), digest_size=16).digest()
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(prefix + t.encode("utf-8"), digest_size=8).digest(), "big")
            for t in texts
        ),
        dtype=np.uint64,
        count=len(texts),
    )


def fingerprints_path(vectors_path: str | Path) -> Path:
    """Where the fingerprints of the rows of ``vectors_path`` are kept (row order = vector order)."""
    path = Path(vectors_path)
    return path.with_name(path.stem + ".fingerprints.npz")


def load_fingerprints(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(ids, fingerprints) in vector-file row order, or None when absent or unreadable."""
    try:
        with np.load(path) as data:
            return data["ids"].astype(np.int64), data["fingerprints"].astype(np.uint64)
    except (OSError, ValueError, KeyError):
        return None


def save_fingerprints(path: Path, ids: np.ndarray, fps: np.ndarray) -> None:
    with atomic_output(path) as tmp:
        np.savez(tmp, ids=ids, fingerprints=fps)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())


def _reconcile(
    ids: np.ndarray,
    fps: np.ndarray,
    dim: int,
    vectors_path: Path,
    store,
    existing: np.ndarray,
) -> tuple[np.ndarray, int, int]:
    """Bring Milvus and the vector file in line with this corpus's content before embedding.

    Stored rows whose fingerprint changed, and stored ids no longer in the corpus, are deleted from
    Milvus; their vectors are zeroed (or not carried over when the row layout changed), so they get
    embedded again. The fingerprint file is removed while this happens and written last: a crash in
    between leaves no fingerprints, and the next run re-embeds everything rather than trust stale rows.
    Returns (ids still in Milvus, n_changed, n_vanished).
    """
    fp_path = fingerprints_path(vectors_path)
    old = load_fingerprints(fp_path)
    n = len(ids)
    if old is None:
        if len(existing):  # stored by a run that kept no fingerprints: nothing can be verified
            log.info("ingest: no fingerprints of the stored vectors: embedding all %d documents again", n)
            store.ensure_collection(dim, drop_existing=True)
            with contextlib.suppress(OSError):
                vectors_path.unlink()
        save_fingerprints(fp_path, ids, fps)
        return np.empty(0, dtype=np.int64), int(len(existing)), 0
    old_ids, old_fps = old
    same_layout = len(old_ids) == n and np.array_equal(old_ids, ids)
    order = np.argsort(old_ids, kind="stable")
    pos = np.searchsorted(old_ids[order], ids)
    pos_c = np.minimum(pos, max(len(old_ids) - 1, 0))
    known = (pos < len(old_ids)) & (old_ids[order][pos_c] == ids) if len(old_ids) else np.zeros(n, bool)
    old_pos = np.where(known, order[pos_c], -1)
    unchanged = known & (old_fps[np.maximum(old_pos, 0)] == fps)
    changed = known & ~unchanged
    stray = existing[~np.isin(existing, ids)]  # stored, but not in this corpus
    n_vanished = int((~np.isin(old_ids, ids)).sum())
    stale = np.concatenate([ids[changed & np.isin(ids, existing)], stray])
    if not len(stale) and same_layout:
        return existing, 0, 0
    fp_path.unlink(missing_ok=True)
    if len(stale):
        store.delete(stale)
    found = VectorFile.shape_of(vectors_path)
    if found is not None and found[0][1:] == (dim,) and found[1] == np.float32:
        if same_layout:
            if changed.any():
                vf = VectorFile(vectors_path, n, dim, create=False)
                try:
                    vf.write(np.flatnonzero(changed), np.zeros((int(changed.sum()), dim), np.float32))
                finally:
                    vf.close()
        else:
            _carry_over(vectors_path, n, dim, np.flatnonzero(unchanged), old_pos[unchanged])
    save_fingerprints(fp_path, ids, fps)
    kept = existing[~np.isin(existing, stale)]
    return kept, int(changed.sum()), max(n_vanished, len(stray))


def _carry_over(vectors_path: Path, n: int, dim: int, new_rows: np.ndarray, old_rows: np.ndarray) -> None:
    """A new vector file in the new row order holding the still-valid vectors (others zero)."""
    old = np.load(vectors_path, mmap_mode="r")
    tmp = vectors_path.with_name(vectors_path.name + ".remap")
    new = VectorFile(tmp, n, dim, create=True)
    try:
        for start in range(0, len(new_rows), 65536):
            sel = slice(start, start + 65536)
            dst, src = new_rows[sel], old_rows[sel]
            o = np.argsort(dst, kind="stable")
            new.write(dst[o], np.asarray(old[src[o]], dtype=np.float32))
    finally:
        new.close()
        del old
    os.replace(tmp, vectors_path)


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
            with atomic_output(self.path) as tmp:
                mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(self.n, self.dim))
                self.offset = int(mm.offset)
                del mm
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

    def read(self, positions: np.ndarray) -> np.ndarray:
        """Rows at ``positions`` (sorted or not), read with ``pread``."""
        positions = np.asarray(positions, dtype=np.int64)
        row_bytes = self.dim * 4
        out = np.empty((len(positions), self.dim), dtype=np.float32)
        breaks = np.flatnonzero(np.diff(positions) != 1) + 1
        for run in np.split(np.arange(len(positions)), breaks):
            if len(run) == 0:
                continue
            size = len(run) * row_bytes
            buf = os.pread(self.fd, size, self.offset + int(positions[run[0]]) * row_bytes)
            out[run[0] : run[-1] + 1] = np.frombuffer(buf, dtype=np.float32).reshape(len(run), self.dim)
        return out

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


# ----------------------------------------------------------------------------------- completeness
def meta_path(vectors_path: str | Path) -> Path:
    """``embeddings.json`` beside ``embeddings.npy``: model, dim, n and whether ingest finished."""
    return Path(vectors_path).with_suffix(".json")


def read_meta(vectors_path: str | Path) -> dict:
    path = meta_path(vectors_path)
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (OSError, ValueError):
        return {"complete": False}  # unreadable: treated as an interrupted embed, which resumes


def _write_meta(vectors_path: Path, model: str, dim: int, n: int, complete: bool) -> None:
    """``complete`` flips to true only after ingest returns, so later stages refuse a half-embedded run."""
    meta = {"model": model, "dim": dim, "n": n, "complete": complete}
    write_text(meta_path(vectors_path), json.dumps(meta))


def check_model(vectors_path: str | Path, model: str, restart: bool = False) -> None:
    """Vectors of another model are never mixed in: re-embed (--restart) or use another run directory."""
    stored = read_meta(vectors_path).get("model")
    if stored and not restart and stored != model:
        raise EngineError(
            f"{vectors_path} holds vectors of model {stored!r}, not {model!r}: "
            "add --restart to re-embed, or use another --out"
        )


def load_vectors(vectors_path: str | Path, n: int) -> np.ndarray:
    """The embeddings as a read-only memory map, corpus order, once ingest of all ``n`` finished."""
    vectors = read_input(
        vectors_path,
        lambda p: np.load(p, mmap_mode="r"),
        f"engine embed CORPUS --out {Path(vectors_path).parent}",
    )
    if len(vectors) != n:
        raise EngineError(
            f"{vectors_path} holds {len(vectors)} vectors but the corpus has {n} documents: "
            f"re-run `engine embed` (add --restart if the corpus changed)"
        )
    meta = read_meta(vectors_path)
    if meta and not meta.get("complete", False):
        raise EngineError(
            f"{vectors_path} is incomplete (the embed stage was interrupted): re-run `engine embed` to resume"
        )
    return vectors


#: Documents the encoder length-sorts and batches together (one window) on the single-process path. The Ray
#: workers window their blocks the same way, so a block that starts at a multiple of it is embedded in the
#: same batches and its vectors are bit-identical to one process's (other batchings differ by ~1e-7).
SORT_WINDOW = 2000


# --------------------------------------------------------------------------------------------- ingest
def ingest(
    frame,
    encoder,
    store,
    vectors_path: str | Path,
    restart: bool = False,
    insert_batch: int = SORT_WINDOW,
    progress: bool = True,
    flush_every: int | None = None,
    queue_size: int = 2,
    fingerprint_key: str | None = None,
    precomputed: np.ndarray | None = None,
    stream=None,
) -> IngestResult:
    """Embed ``frame`` (columns ``id``, ``text``) into ``vectors_path`` and Milvus; resume what is stored.

    ``restart=True`` drops the collection and the vector file and starts over. Rows whose id is already in
    Milvus are skipped (their vectors are on disk by construction); if such a row's vector is missing from
    the file (the file was deleted), it is read back from Milvus into the file, neither embedded nor
    inserted again.
    ``flush_every`` rows (None: 100,000 on Milvus Lite; only at the end on a server, where each flush
    seals a segment and each sealed segment is one more index that every graph query searches).
    ``precomputed`` (n, dim): the documents' vectors given by the caller (unit rows, frame order);
    the encoder then only names the model, nothing is embedded.
    ``stream(store, ids, texts, insert, window)``: embeds elsewhere (engine.distributed, on a Ray cluster,
    length-sorting ``window`` documents at a time as here) and stores the rows where ``insert`` is set
    itself; yields ``(rows, vectors)`` (rows index its arguments,
    blocks in any order). This function still decides what to embed and writes ``vectors_path``.
    """
    from tqdm.auto import tqdm

    if insert_batch < 1:
        raise EngineError(f"ingest: insert_batch={insert_batch} must be >= 1")
    t0 = time.perf_counter()
    ids, texts = _validate_frame(frame)
    n, dim = len(ids), int(encoder.dim)
    vectors_path = Path(vectors_path)
    model = str(getattr(encoder, "name", ""))
    _write_meta(vectors_path, model, dim, n, complete=False)

    store.ensure_collection(dim, drop_existing=bool(restart))
    fps = fingerprints(texts, fingerprint_key or f"{getattr(encoder, 'name', '')}|{dim}")
    n_changed = n_vanished = 0
    if restart:
        existing = np.empty(0, dtype=np.int64)
        fingerprints_path(vectors_path).unlink(missing_ok=True)
        save_fingerprints(fingerprints_path(vectors_path), ids, fps)
    else:
        existing = np.asarray(store.existing_ids(), dtype=np.int64)
        existing, n_changed, n_vanished = _reconcile(ids, fps, dim, vectors_path, store, existing)
        if n_changed or n_vanished:
            log.info(
                "ingest: %d documents changed since they were embedded (embedding them again), %d no longer "
                "in the corpus (dropped)",
                n_changed,
                n_vanished,
            )
    in_store = np.isin(ids, existing)

    found = VectorFile.shape_of(vectors_path) if not restart else None
    create = found is None or found[0] != (n, dim) or found[1] != np.float32
    vf = VectorFile(vectors_path, n, dim, create=create)
    try:
        on_disk = vf.row_norms() > 0.5 if not create else np.zeros(n, dtype=bool)
        # Verified vectors (fingerprints match) on disk but not in Milvus (a server lost them, or a
        # crash between the file write and the insert): insert them from the file, no embedding.
        from_disk = np.flatnonzero(~in_store & on_disk)
        for start in range(0, len(from_disk), insert_batch):
            rows = from_disk[start : start + insert_batch]
            store.insert(ids[rows], vf.read(rows), [texts[i] for i in rows])
        in_store[from_disk] = True
        need_disk = np.flatnonzero(in_store & ~on_disk)  # stored in Milvus, but not in this file
        if len(need_disk):  # verified rows (fingerprints match): read back, never embedded again
            log.info(
                "ingest: %d stored vectors are not in %s: reading them back from Milvus",
                len(need_disk),
                vectors_path.name,
            )
            store.read_vectors(
                ids[need_disk], write=lambda rows, vec: vf.write(need_disk[rows], vec), progress=progress
            )
        todo = np.flatnonzero(~in_store)
        insert_mask = ~in_store[todo]
        n_existing = int(in_store.sum()) - len(from_disk)

        q: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        if flush_every is None:
            flush_every = 100_000 if getattr(store, "is_lite", True) else 0
        writer = _Writer(store, q, flush_every)
        writer.start()
        bar = tqdm(total=len(todo), desc="embed+ingest", unit="doc", disable=not progress)
        try:
            todo_texts = [texts[i] for i in todo]
            if stream is not None:  # rows come back stored (by the workers) in any order
                chunks = (
                    (rows, vec, True)
                    for rows, vec in stream(store, ids[todo], todo_texts, insert_mask, window=insert_batch)
                )
            elif precomputed is None:
                chunks = (
                    (np.arange(start, start + len(vec)), vec, False)
                    for start, vec in encoder.iter_encode(
                        todo_texts, window=insert_batch, on_batch=bar.update
                    )
                )
            else:
                chunks = (
                    (
                        np.arange(start, min(start + insert_batch, len(todo))),
                        np.asarray(precomputed[todo[start : start + insert_batch]], dtype=np.float32),
                        False,
                    )
                    for start in range(0, len(todo), insert_batch)
                )
            for rows, vec, stored in chunks:
                if writer.error is not None:
                    raise writer.error
                pos = todo[rows]
                vf.write(pos, vec)  # durable before Milvus sees these ids (stream: before they are recorded)
                ins = insert_mask[rows] & (not stored)
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
                if stream is not None or precomputed is not None:
                    bar.update(len(vec))  # rows embedded here move the bar per batch (on_batch)
        finally:
            q.put(_DONE)
            writer.join()
            bar.close()
        if writer.error is not None:
            raise writer.error
        store.flush()
    finally:
        vf.close()
    _write_meta(vectors_path, model, dim, n, complete=True)
    seconds = time.perf_counter() - t0
    n_embedded = len(todo)
    return IngestResult(
        n_total=n,
        n_existing=n_existing,
        n_embedded=n_embedded,
        seconds=seconds,
        docs_per_s=n_embedded / seconds if seconds > 0 else 0.0,
        peak_rss_mb=peak_rss_mb(),
        n_changed=n_changed,
        n_vanished=n_vanished,
        n_from_disk=len(from_disk),
        n_from_milvus=len(need_disk),
    )
