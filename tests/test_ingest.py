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
from engine.embed.tiny import synthetic_corpus
from engine.errors import EngineError
from engine.ingest import IngestResult, ingest
from engine.store import MilvusStore

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
        vec_path.unlink()  # vectors lost, Milvus intact: re-embed into the file, insert nothing twice
        res = ingest(frame, encoder, store, vec_path, insert_batch=100, progress=False)
        assert (res.n_existing, res.n_embedded) == (300, 300)
        assert store.count_rows() == 300
        assert len(np.unique(store.existing_ids())) == 300
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
        other["id"] += 5  # other ids: the stored collection is not this corpus
        with pytest.raises(EngineError, match="not in this corpus"):
            ingest(other, encoder, store, vec_path, progress=False)


class _CrashAfter:
    """A real encoder whose stream stops with an error after ``k`` windows (fault injection, no mock)."""

    def __init__(self, encoder, k: int):
        self.encoder, self.k, self.dim = encoder, k, encoder.dim

    def iter_encode(self, texts, window=4096):
        for i, item in enumerate(self.encoder.iter_encode(texts, window=window)):
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
        assert res.n_existing == len(stored) and res.n_existing + res.n_embedded == 1000
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
from engine.store import MilvusStore
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
    assert result["n_total"] == n and result["n_existing"] + result["n_embedded"] == n
    assert result["n_existing"] == partial_states[-1]
    ids, count = _stored_ids(db)
    assert count == n
    np.testing.assert_array_equal(ids, expected)  # none missing, none twice
    np.testing.assert_allclose(np.load(vec_path), clean, atol=1e-5)
    assert any(0 < k < n for k in partial_states), f"no kill landed mid-ingest: {partial_states}, {t_clean=}"
