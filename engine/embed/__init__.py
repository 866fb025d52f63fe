"""Embed stage: texts -> float32 L2-normalised vectors in input order.

``load_encoder("BAAI/bge-m3")`` finds the model through FlagEmbedding (or sentence-transformers) and runs the
engine's fast loop on it; see :mod:`engine.embed.fastloop` for why and how.
"""

from engine.embed.fastloop import FastLoop, token_budget_batches
from engine.embed.models import (
    BGE_M3_ID,
    MINILM_ID,
    Encoder,
    ModelSpec,
    load_encoder,
    load_flag_model,
    resolve_model,
)

__all__ = [
    "BGE_M3_ID",
    "MINILM_ID",
    "Encoder",
    "FastLoop",
    "ModelSpec",
    "load_encoder",
    "load_flag_model",
    "resolve_model",
    "token_budget_batches",
]
