"""Cheap script detection, and a warning when an English-only model meets text that is not English.

Why scripts, not languages: the two decisions that depend on the language, how to cut text into
words (spaces, a CJK segmenter, character n-grams) and whether an English-only embedding model
can read the corpus, are already settled by the writing system. Counting the Unicode script of
the letters in a sample costs milliseconds and needs no language-identification model.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence

#: Scripts written without spaces between words: they need a segmenter or character n-grams.
UNSPACED_SCRIPTS = ("han", "hiragana", "katakana", "thai", "lao", "khmer", "myanmar", "tibetan")
_SCRIPT_PREFIXES = {
    "CJK": "han",
    "LATIN": "latin",
    "CYRILLIC": "cyrillic",
    "GREEK": "greek",
    "ARABIC": "arabic",
    "HEBREW": "hebrew",
    "HIRAGANA": "hiragana",
    "KATAKANA": "katakana",
    "HANGUL": "hangul",
    "THAI": "thai",
    "LAO": "lao",
    "KHMER": "khmer",
    "MYANMAR": "myanmar",
    "TIBETAN": "tibetan",
    "DEVANAGARI": "devanagari",
    "BENGALI": "bengali",
    "TAMIL": "tamil",
    "GEORGIAN": "georgian",
    "ARMENIAN": "armenian",
    "ETHIOPIC": "ethiopic",
}

# Models trained on English text only (lower-case substrings of the model name or path).
_ENGLISH_ONLY = re.compile(
    r"all-minilm|all_minilm|all-mpnet|all-distilroberta|paraphrase-minilm|paraphrase-mpnet|msmarco|"
    r"multi-qa-|bge-(small|base|large)-en|gte-(small|base|large)\b|nomic-embed-text|"
    r"(^|[/_-])e5-(small|base|large)(-v2)?$|-en(-v\d(\.\d)?)?$"
)
_MULTILINGUAL = re.compile(r"multilingual|bge-m3|xlm|labse|distiluse|-m3\b|multi-e5|paraphrase-multilingual")


def char_script(ch: str) -> str | None:
    """The Unicode script of one letter ("latin", "han", ...), None for digits, punctuation, spaces."""
    if not ch.isalpha():
        return None
    name = unicodedata.name(ch, "")
    head = name.split(" ", 1)[0]
    return _SCRIPT_PREFIXES.get(head, head.lower() or None)


def script_shares(texts: Iterable[str], sample: int = 2000, chars: int = 200) -> dict[str, float]:
    """Share of letters per script over the first ``chars`` characters of up to ``sample`` texts."""
    counts: Counter[str] = Counter()
    for i, text in enumerate(texts):
        if i >= sample:
            break
        for ch in str(text)[:chars]:
            script = char_script(ch)
            if script is not None:
                counts[script] += 1
    total = sum(counts.values())
    return {s: n / total for s, n in counts.most_common()} if total else {}


def document_scripts(texts: Sequence[str], sample: int = 2000, chars: int = 200) -> dict[str, float]:
    """Share of documents (of a sample) whose letters are mostly in each script."""
    counts: Counter[str] = Counter()
    n = 0
    for text in list(texts)[:sample]:
        shares = script_shares([text], sample=1, chars=chars)
        if shares:
            counts[next(iter(shares))] += 1
            n += 1
    return {s: c / n for s, c in counts.most_common()} if n else {}


def is_english_only_model(name: str) -> bool:
    """True for models known to be trained on English only (all-MiniLM-L6-v2, bge-*-en, e5-base ...)."""
    low = str(name).lower().rstrip("/")
    if _MULTILINGUAL.search(low):
        return False
    return bool(_ENGLISH_ONLY.search(low))


def model_language_warning(model_name: str, texts: Sequence[str]) -> str | None:
    """A warning when an English-only model embeds a corpus mostly not in Latin script, else None."""
    if not is_english_only_model(model_name):
        return None
    shares = document_scripts(texts)
    latin = shares.get("latin", 0.0)
    if not shares or latin >= 0.5:
        return None
    main = next(iter(shares))
    return (
        f"model {model_name} is English-only but {1 - latin:.0%} of the documents are not in Latin script "
        f"(mostly {main}): clusters will follow surface characters, not meaning; use a multilingual model "
        "such as BAAI/bge-m3 (the default)"
    )
