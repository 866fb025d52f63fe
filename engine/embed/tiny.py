"""A BGE-M3-shaped model built offline, for tests and benchmarks.

BGE-M3 is an ``XLMRobertaModel`` plus a SentencePiece-Unigram tokenizer. Tests need a model of the
same *shape* (so FlagEmbedding loads it exactly as it loads the real one) without the 2.2 GB download;
benchmarks need the full architecture with random weights (throughput does not depend on weight values).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

#: BGE-M3's real architecture (XLM-RoBERTa-large with an 8k position table).
BGE_M3_CONFIG = {
    "hidden": 1024,
    "layers": 24,
    "heads": 16,
    "intermediate": 4096,
    "vocab_size": 250002,
    "max_position": 8194,
}

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0, 1, 2, 3 as in XLM-RoBERTa

_WORDS = (
    "market stocks shares rally fall bank rates inflation economy growth jobs report election vote senate "
    "president court ruling law police city fire storm flood weather climate energy oil gas prices power "
    "team game season win loss coach player league final match goal score cup football basketball tennis "
    "film music star show award festival album movie series actor singer book art museum theatre fashion "
    "health virus vaccine hospital doctor study research science space rocket moon planet launch robot "
    "computer software phone apple google chip data cloud security hack privacy network startup deal "
    "school students teachers university campus war peace talks border troops attack missile ship army "
    "travel airline flight airport train road car electric battery factory workers strike union wages "
    "food restaurant farm crop water river ocean forest wildlife animal bird dog cat children family home"
).split()


def synthetic_corpus(n: int = 3000, seed: int = 0) -> list[str]:
    """Deterministic pseudo-headlines so the trained vocabulary has varied word pieces."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(3, 14)
        words = [rng.choice(_WORDS) for _ in range(k)]
        if rng.random() < 0.3:
            words.append(str(rng.randint(1, 2030)))
        out.append(" ".join(words).capitalize() + rng.choice([".", "!", "?", ""]))
    return out


def build_tokenizer(texts: Sequence[str] | None = None, vocab_size: int = 2000):
    """Train a Unigram + Metaspace tokenizer shaped like XLM-RoBERTa's (``<s> $A </s>``)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        unk_token="<unk>",
        show_progress=False,
    )
    tok.train_from_iterator(list(texts) if texts is not None else synthetic_corpus(), trainer=trainer)
    tok.add_special_tokens(["<mask>"])
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, f"special token {t} must have id {i}"
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    return tok


def build_tiny_bge_m3(
    path: str | Path,
    hidden: int = 64,
    layers: int = 2,
    heads: int | None = None,
    intermediate: int | None = None,
    vocab_size: int | None = None,
    max_position: int = 514,
    texts: Sequence[str] | None = None,
    tokenizer_vocab: int = 2000,
    seed: int = 0,
) -> Path:
    """Write a random-initialised XLM-RoBERTa + tokenizer at ``path`` that loads like BGE-M3.

    ``build_tiny_bge_m3(p, **BGE_M3_CONFIG)`` gives the full BGE-M3 architecture (for benchmarks).
    ``texts`` trains the tokenizer (pass real headlines to get realistic token counts).
    """
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(texts, vocab_size=tokenizer_vocab)
    tok.save(str(path / "tokenizer.json"))
    n_vocab = max(vocab_size or 0, tok.get_vocab_size())
    heads = heads or max(1, hidden // 64)
    config = XLMRobertaConfig(
        vocab_size=n_vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate or 4 * hidden,
        max_position_embeddings=max_position,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        layer_norm_eps=1e-5,
    )
    torch.manual_seed(seed)
    model = XLMRobertaModel(config, add_pooling_layer=True).eval()
    model.save_pretrained(str(path), safe_serialization=True)
    tok_config = {
        "tokenizer_class": "XLMRobertaTokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "cls_token": "<s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "mask_token": "<mask>",
        "add_prefix_space": True,
        "model_max_length": max_position - 2,
    }
    (path / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2))
    special = {k: v for k, v in tok_config.items() if k.endswith("_token")}
    (path / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return path
