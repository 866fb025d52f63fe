"""Embed stage: texts -> float32 L2-normalised vectors in input order.

``load_encoder("BAAI/bge-m3")`` finds the model through FlagEmbedding (or sentence-transformers) and runs the
engine's fast loop on it; see :mod:`engine.embed.fastloop` for why and how.
"""

from engine.embed.fastloop import FastLoop, cpu_supports_bf16, token_budget_batches
from engine.embed.models import (
    BGE_M3_ID,
    MINILM_ID,
    Encoder,
    ModelSpec,
    load_encoder,
    load_flag_model,
    resolve_model,
)
from engine.embed.tiny import BGE_M3_CONFIG, build_tiny_bge_m3

__all__ = [
    "BGE_M3_CONFIG",
    "BGE_M3_ID",
    "MINILM_ID",
    "Encoder",
    "FastLoop",
    "ModelSpec",
    "build_tiny_bge_m3",
    "cpu_supports_bf16",
    "load_encoder",
    "load_flag_model",
    "resolve_model",
    "token_budget_batches",
]
