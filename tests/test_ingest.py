"""Ingest: corpus -> encoder -> embeddings.npy + Milvus Lite (real), resumable after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from engine.embed import load_encoder
from engine.errors import EngineError
from engine.ingest import IngestResult, ingest
from engine.milvus.store import MilvusStore
from tests.fixtures.tiny_bge_m3 import synthetic_corpus

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


def make_frame(n: int, seed: int = 3) -> pd.DataFrame:
    """Short documents with non-contiguous, shuffled int64 ids (ids are not positions)."""
    ids = np.random.default_rng(seed).permutation(n).astype(np.int64) * 11 + 1_000_000_007
    return pd.DataFrame({"id": ids, "text": synthetic_corpus(n, seed=seed)})


@pytest.fixture(scope="module")
def encoder(tiny_bge_m3_path):
    return load_encoder(str(tiny_bge_m3_path), device="cpu", precision="fp32", max_length=64)


def _stored_ids(db: Path) -> tuple[np.ndarray, int]:
    with MilvusStore(str(db)) as store:
        if not store.has_collection():
            return np.empty(0, dtype=np.int64), 0
        return store.existing_ids(), store.count_rows()


def test_ingest_round_trip_and_resume(tmp_path, encoder):
    frame = make_frame(700)
    db, vec_path = tmp_path / "milvus.db", tmp_path / "embeddings.npy"
    with MilvusStore(str(db)) as store:
        res = ingest(frame, encoder, store, vec_path, insert_batch=128, progress=False)
        assert isinstance(res, IngestResult)
        assert (res.n_total, res.n_existing, res.n_embedded) == (700, 0, 700)
        assert res.docs_per_s > 0 and res.peak_rss_mb > 0
        np.testing.assert_array_equal(store.existing_ids(), np.sort(frame["id"].to_numpy()))
        again = ingest(frame, encoder, store, vec_path, insert_batch=128, progress=False)
        assert (again.n_existing, again.n_embedded) == (700, 0)
        assert store.count_rows() == 700
        hits, _ = store.search(encoder.encode(frame["text"].tolist()[:3]), limit=1)
        assert hits[:, 0].tolist() == frame["id"].tolist()[:3]
    vec = np.load(vec_path)
    assert vec.dtype == np.float32 and vec.shape == (700, 64)
    np.testing.assert_allclose(vec, encoder.encode(frame["text"].tolist()), atol=1e-5)


def test_restart_rebuilds_and_missing_file_is_refilled(tmp_path, encoder):
    frame = make_frame(300)
    db, vec_path = tmp_path / "milvus.db", tmp_path / "embeddings.npy"
    with MilvusStore(str(db)) as store:
        ingest(frame, encoder, store, vec_path, insert_batch=100, progress=False)
        res = ingest(frame, encoder, store, vec_path, restart=True, insert_batch=100, progress=False)
        assert (res.n_existing, res.n_embedded) == (0, 300)
        assert store.count_rows() == 300
        before = np.load(vec_path)
        vec_path.unlink()  # vectors lost, Milvus intact: read back into the file, nothing embedded or inserted
        res = ingest(frame, encoder, store, vec_path, insert_batch=100, progress=False)
        assert (res.n_existing, res.n_embedded, res.n_from_milvus) == (300, 0, 300)
        assert store.count_rows() == 300
        assert len(np.unique(store.existing_ids())) == 300
    np.testing.assert_array_equal(np.load(vec_path).view(np.uint32), before.view(np.uint32))  # bitwise
    np.testing.assert_allclose(np.load(vec_path), encoder.encode(frame["text"].tolist()), atol=1e-5)


def test_bad_inputs_raise_engine_errors(tmp_path, encoder):
    db, vec_path = tmp_path / "milvus.db", tmp_path / "embeddings.npy"
    with MilvusStore(str(db)) as store:
        dup = pd.DataFrame({"id": [1, 2, 2], "text": ["a", "b", "c"]})
        with pytest.raises(EngineError, match="id 2 appears more than once"):
            ingest(dup, encoder, store, vec_path, progress=False)
        with pytest.raises(EngineError, match="no 'text' column"):
            ingest(pd.DataFrame({"id": [1]}), encoder, store, vec_path, progress=False)
        ingest(make_frame(50), encoder, store, vec_path, progress=False)
        other = make_frame(40, seed=9)
        other["id"] += 5  # other ids: the stored rows vanish from the corpus and are dropped
        res = ingest(other, encoder, store, vec_path, progress=False)
        assert (res.n_vanished, res.n_embedded, res.n_existing) == (50, 40, 0)
        np.testing.assert_array_equal(store.existing_ids(), np.sort(other["id"].to_numpy()))


class _CrashAfter:
    """A real encoder whose stream stops with an error after ``k`` windows (fault injection, no mock)."""

    def __init__(self, encoder, k: int):
        self.encoder, self.k, self.dim, self.name = encoder, k, encoder.dim, encoder.name

    def iter_encode(self, texts, window=4096, on_batch=None):
        for i, item in enumerate(self.encoder.iter_encode(texts, window=window, on_batch=on_batch)):
            if i == self.k:
                raise RuntimeError("simulated crash")
            yield item


def test_interrupted_ingest_resumes_where_it_stopped(tmp_path, encoder):
    frame = make_frame(1000)
    db, vec_path = tmp_path / "milvus.db", tmp_path / "embeddings.npy"
    with MilvusStore(str(db)) as store:
        with pytest.raises(RuntimeError, match="simulated crash"):
            ingest(frame, _CrashAfter(encoder, 3), store, vec_path, insert_batch=100, progress=False)
        stored = store.existing_ids()
        assert 0 < len(stored) <= 300
        res = ingest(frame, encoder, store, vec_path, insert_batch=100, progress=False)
        assert res.n_existing == len(stored) and res.n_existing + res.n_embedded + res.n_from_disk == 1000
        np.testing.assert_array_equal(store.existing_ids(), np.sort(frame["id"].to_numpy()))
        assert store.count_rows() == 1000
    np.testing.assert_allclose(np.load(vec_path), encoder.encode(frame["text"].tolist()), atol=1e-5)


CHILD = r"""
import dataclasses, json, sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
from tests.test_ingest import make_frame
from engine.embed import load_encoder
from engine.ingest import ingest
from engine.milvus.store import MilvusStore
model, db, vec_path, n, batch = sys.argv[2:7]
frame = make_frame(int(n))
enc = load_encoder(model, device="cpu", precision="fp32", max_length=64)
with MilvusStore(db) as store:
    store.ensure_collection(enc.dim)
    print("START", flush=True)
    res = ingest(frame, enc, store, vec_path, insert_batch=int(batch), progress=False)
print("RESULT " + json.dumps(dataclasses.asdict(res)), flush=True)
"""


def _run_child(args: list[str], kill_after: float | None) -> dict | None:
    """Run one ingest process; SIGKILL it ``kill_after`` s after it starts ingesting. Returns its result."""
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=str(REPO),
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == "START", f"child failed before ingesting: {line!r}"
        if kill_after is not None:
            time.sleep(kill_after)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            return None
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    return json.loads(out.split("RESULT ", 1)[1])


@pytest.mark.slow  # five fresh Python processes (torch + FlagEmbedding + Milvus Lite imports): ~1 min on 2 cores
def test_kill_minus_nine_then_resume_gives_exactly_n_unique_ids(tmp_path, tiny_bge_m3_path, encoder):
    n = 3000
    frame = make_frame(n)
    expected = np.sort(frame["id"].to_numpy())
    clean = encoder.encode(frame["text"].tolist())
    with MilvusStore(str(tmp_path / "clean.db")) as store:  # a clean run times the kill points
        t_clean = ingest(
            frame, encoder, store, tmp_path / "clean.npy", insert_batch=150, progress=False
        ).seconds
    db, vec_path = tmp_path / "milvus.db", tmp_path / "embeddings.npy"
    args = [str(REPO), str(tiny_bge_m3_path), str(db), str(vec_path), str(n), "150"]
    partial_states = []
    for frac in (0.1, 0.2, 0.3):  # kills land at ~10%, ~30%, ~60% of the work (load varies: approximate)
        delay = max(0.05, frac * t_clean)
        _run_child(args, kill_after=delay)
        ids, count = _stored_ids(db)
        assert count == len(ids) == len(np.unique(ids)), "duplicate ids after a kill"
        assert np.isin(ids, expected).all()
        if len(ids):  # every id Milvus holds has its final vector on disk already
            pos = np.flatnonzero(np.isin(frame["id"].to_numpy(), ids))
            np.testing.assert_allclose(np.load(vec_path)[pos], clean[pos], atol=1e-5)
        partial_states.append(len(ids))
    print(f"kill points: {partial_states} of {n} stored (clean run {t_clean:.2f}s)")
    result = _run_child(args, kill_after=None)
    assert result["n_total"] == n
    assert result["n_existing"] + result["n_embedded"] + result["n_from_disk"] == n
    assert result["n_existing"] == partial_states[-1]
    ids, count = _stored_ids(db)
    assert count == n
    np.testing.assert_array_equal(ids, expected)  # none missing, none twice
    np.testing.assert_allclose(np.load(vec_path), clean, atol=1e-5)
    assert any(0 < k < n for k in partial_states), f"no kill landed mid-ingest: {partial_states}, {t_clean=}"


def test_edited_rows_are_embedded_again_and_only_those(tmp_path, encoder):
    """Ids are row numbers by default: only the content can tell that a stored vector is stale."""
    frame = make_frame(200)
    db, vec_path = tmp_path / "milvus.db", tmp_path / "embeddings.npy"
    with MilvusStore(str(db)) as store:
        ingest(frame, encoder, store, vec_path, insert_batch=64, progress=False)
        before = np.load(vec_path)
        edited = frame.copy()
        rows = np.random.default_rng(1).choice(200, size=10, replace=False)
        edited.loc[rows, "text"] = [f"an edited document number {i} about something else" for i in rows]
        res = ingest(edited, encoder, store, vec_path, insert_batch=64, progress=False)
        assert (res.n_changed, res.n_embedded, res.n_existing, res.n_vanished) == (10, 10, 190, 0)
        after = np.load(vec_path)
        untouched = np.setdiff1d(np.arange(200), rows)
        np.testing.assert_array_equal(after[untouched], before[untouched])
        np.testing.assert_allclose(after[rows], encoder.encode(edited["text"].iloc[rows].tolist()), atol=1e-5)
        ids = store.existing_ids()
        assert len(ids) == 200 and len(np.unique(ids)) == 200
        # Milvus holds the new vectors, not the stale ones
        got = store.client.get(
            store.collection, ids=[int(i) for i in frame["id"].iloc[rows]], output_fields=["vector"]
        )
        by_id = {r["id"]: np.asarray(r["vector"], dtype=np.float32) for r in got}
        for row in rows:
            np.testing.assert_allclose(by_id[int(frame["id"].iloc[row])], after[row], atol=1e-6)
        # A different corpus with as many rows and the same (row-number) ids: everything is detected.
        other = frame.copy()
        other["text"] = [f"a different file, line {i}" for i in range(200)]
        res = ingest(other, encoder, store, vec_path, insert_batch=64, progress=False)
        assert (res.n_changed, res.n_embedded) == (200, 200)
        np.testing.assert_allclose(np.load(vec_path), encoder.encode(other["text"].tolist()), atol=1e-5)


def test_reordered_and_shrunk_corpus_keeps_valid_vectors(tmp_path, encoder):
    frame = make_frame(120)
    db, vec_path = tmp_path / "milvus.db", tmp_path / "embeddings.npy"
    with MilvusStore(str(db)) as store:
        ingest(frame, encoder, store, vec_path, insert_batch=50, progress=False)
        smaller = frame.iloc[::-1].iloc[:100].reset_index(drop=True)  # reversed, 20 rows gone
        res = ingest(smaller, encoder, store, vec_path, insert_batch=50, progress=False)
        assert (res.n_vanished, res.n_embedded, res.n_existing) == (20, 0, 100)
        np.testing.assert_allclose(np.load(vec_path), encoder.encode(smaller["text"].tolist()), atol=1e-5)
        np.testing.assert_array_equal(store.existing_ids(), np.sort(smaller["id"].to_numpy()))


def test_vectors_lost_by_milvus_are_reinserted_from_the_file(tmp_path, encoder):
    frame = make_frame(150)
    db, vec_path = tmp_path / "milvus.db", tmp_path / "embeddings.npy"
    with MilvusStore(str(db)) as store:
        ingest(frame, encoder, store, vec_path, insert_batch=50, progress=False)
        store.delete(frame["id"].to_numpy()[:40])  # as if the server lost them
        res = ingest(frame, encoder, store, vec_path, insert_batch=50, progress=False)
        assert (res.n_from_disk, res.n_embedded, res.n_existing) == (40, 0, 110)
        np.testing.assert_array_equal(store.existing_ids(), np.sort(frame["id"].to_numpy()))
