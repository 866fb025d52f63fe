"""The fast loop's machinery: windows, several workers, error propagation, hardware detection."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from engine import hardware
from engine.embed.fastloop import FastLoop, resolve_devices, resolve_dtype
from engine.errors import EngineError
from engine.hardware import cpu_supports_bf16

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def hf_model_and_tokenizer(tiny_bge_m3_path):
    from transformers import AutoModel, AutoTokenizer

    return AutoModel.from_pretrained(str(tiny_bge_m3_path)), AutoTokenizer.from_pretrained(
        str(tiny_bge_m3_path)
    )


@pytest.fixture(scope="module")
def reference(hf_model_and_tokenizer, sample_texts) -> np.ndarray:
    model, tok = hf_model_and_tokenizer
    return FastLoop(model, tok, devices=["cpu"], max_length=128, token_budget=100_000).encode(sample_texts)


def test_windows_come_in_order_and_cover_input(hf_model_and_tokenizer, sample_texts, reference):
    model, tok = hf_model_and_tokenizer
    loop = FastLoop(model, tok, devices=["cpu"], max_length=128, token_budget=256, window=17)
    starts, parts = [], []
    for start, vec in loop.iter_encode(sample_texts):
        starts.append(start)
        parts.append(vec)
    assert starts == list(range(0, len(sample_texts), 17))
    np.testing.assert_allclose(np.concatenate(parts), reference, atol=1e-5)


def test_progress_moves_per_batch_not_per_window(hf_model_and_tokenizer, sample_texts, reference):
    """Issue 20: the embed bar moved only every window (2,000 documents); ``on_batch`` reports each batch."""
    model, tok = hf_model_and_tokenizer
    texts = sample_texts[:120]
    loop = FastLoop(model, tok, devices=["cpu"], max_length=128, token_budget=256, window=len(texts))
    reports: list[int] = []
    out = [vec for _, vec in loop.iter_encode(texts, on_batch=reports.append)]
    assert len(out) == 1  # one window...
    assert len(reports) > 1 and sum(reports) == len(texts)  # ...reported in several steps
    np.testing.assert_allclose(out[0], reference[:120], atol=1e-5)


def test_two_workers_give_the_same_vectors(hf_model_and_tokenizer, sample_texts, reference):
    """One worker per device: exercised with two CPU 'devices' (the multi-GPU code path)."""
    model, tok = hf_model_and_tokenizer
    loop = FastLoop(model, tok, devices=["cpu", "cpu"], max_length=128, token_budget=200, window=40)
    assert len(loop.models_) == 2 and loop.models_[0] is not loop.models_[1]
    np.testing.assert_allclose(loop.encode(sample_texts), reference, atol=1e-5)


def test_one_document_per_batch(hf_model_and_tokenizer, sample_texts, reference):
    model, tok = hf_model_and_tokenizer
    loop = FastLoop(model, tok, devices=["cpu"], max_length=128, token_budget=1, max_batch=1)
    np.testing.assert_allclose(loop.encode(sample_texts[:20]), reference[:20], atol=1e-5)


def test_worker_error_surfaces_instead_of_hanging(hf_model_and_tokenizer):
    model, tok = hf_model_and_tokenizer
    # positions beyond the model's 514-entry table make the forward pass fail inside the worker thread
    loop = FastLoop(model, tok, devices=["cpu"], max_length=4000, token_budget=100_000)
    with pytest.raises((IndexError, RuntimeError)):
        loop.encode(["word " * 3000])


def test_early_stop_does_not_hang(hf_model_and_tokenizer, sample_texts):
    model, tok = hf_model_and_tokenizer
    loop = FastLoop(model, tok, devices=["cpu"], max_length=128, token_budget=64, window=8, prefetch=1)
    it = loop.iter_encode(sample_texts)
    start, vec = next(it)
    assert start == 0 and vec.shape == (8, 64)
    it.close()  # joins the tokenizer and worker threads


def test_mean_pooling_ignores_padding(hf_model_and_tokenizer):
    model, tok = hf_model_and_tokenizer
    loop = FastLoop(model, tok, pooling="mean", devices=["cpu"], max_length=128, token_budget=100_000)
    texts = ["short", "a much longer text with many more word pieces in it than the first"]
    together = loop.encode(texts)
    alone = np.concatenate([loop.encode([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_hardware_detection():
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    assert isinstance(cpu_supports_bf16(), bool)
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        assert cpu_supports_bf16()
    expected = torch.bfloat16 if cpu_supports_bf16() else torch.float32
    assert resolve_dtype("auto", "cpu") == expected
    assert resolve_dtype("fp16", "cpu") == torch.float16
    assert resolve_devices("cpu") == ["cpu"]
    assert resolve_devices(["cpu", "cpu"]) == ["cpu", "cpu"]
    if not torch.cuda.is_available():
        assert resolve_devices("auto") == ["cpu"]
        with pytest.raises(EngineError):
            resolve_devices("cuda:0")
    with pytest.raises(EngineError):
        FastLoop(object(), object(), pooling="max")


def _record_padding(monkeypatch) -> list[tuple[bool, bool, bool]]:
    """Spy on FastLoop._pad: (pin asked, ids pinned, mask pinned) for every batch the producer makes."""
    seen: list[tuple[bool, bool, bool]] = []
    real_pad = FastLoop._pad

    def pad(self, seqs, pin):
        ids, mask = real_pad(self, seqs, pin)
        seen.append((pin, ids.is_pinned(), mask.is_pinned()))
        return ids, mask

    monkeypatch.setattr(FastLoop, "_pad", pad)
    return seen


def test_cpu_batches_are_not_pinned(hf_model_and_tokenizer, sample_texts, monkeypatch):
    """Pinning costs page-locked memory and only pays off for host-to-GPU copies."""
    seen = _record_padding(monkeypatch)
    model, tok = hf_model_and_tokenizer
    FastLoop(model, tok, devices=["cpu"], max_length=64, token_budget=2000).encode(sample_texts[:40])
    assert seen and all(s == (False, False, False) for s in seen), seen


@pytest.mark.gpu
def test_cuda_batches_are_pinned_for_non_blocking_copies(
    hf_model_and_tokenizer, sample_texts, reference, monkeypatch
):
    if not hardware.cuda_available():
        pytest.skip("no CUDA GPU")
    seen = _record_padding(monkeypatch)
    model, tok = hf_model_and_tokenizer
    import copy

    loop = FastLoop(
        copy.deepcopy(model), tok, devices=resolve_devices("cuda"), dtype=torch.bfloat16, max_length=128
    )
    vec = loop.encode(sample_texts)
    assert seen and all(s == (True, True, True) for s in seen), seen  # every batch page-locked
    assert ((vec * reference).sum(1)).min() >= 0.99
