"""Cluster keywords: BERTopic's class-based TF-IDF over clean, language-aware tokens.

The documents of each class (every cluster, and the noise as one more class, as BERTopic does with
topic -1) are concatenated, counted with scikit-learn's ``CountVectorizer``, and scored

    c-TF-IDF(t, c) = tf(t, c) / sum_t' tf(t', c)  *  log(1 + A / f_t)

with f_t the frequency of term t over all classes and A the average number of words per class.

Tokens, in order: HTML entities decoded and markup, URLs and feed boilerplate ("Continue
reading...") removed; text with Han characters cut into words by ``jieba`` (Chinese has no
spaces, so whitespace splitting returned whole headline fragments); other unspaced scripts
(kana, Thai, Khmer ...) as character bigrams; everything else as Unicode words of two or more
letters. Numbers alone are dropped; stop words are removed for the languages that have a list
here (English: scikit-learn's list; Chinese: the common function words below).
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

_TAG = re.compile(r"<[^>]{0,500}>")
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_ENTITY_LEFT = re.compile(r"&(?:#\d{1,7}|#x[0-9a-f]{1,6}|[a-z]{2,8});?", re.IGNORECASE)
_BOILERPLATE = re.compile(
    r"\b(?:continue reading|read more|click here|full story|\[\s*\+?\d+\s*chars\s*\])\W*", re.IGNORECASE
)
# Entities whose "&" a scraper dropped (AG News: "#39;", "quot;", "#36;10 million").
_BARE_ENTITY = re.compile(r"(?<![&;])(#\d{1,7};|(?:quot|amp|lt|gt|nbsp|apos);)")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# Runs of scripts written without spaces (besides Han, handled by jieba): kana, Thai, Lao, Khmer, Myanmar.
_UNSPACED_RUN = re.compile(r"[\u3040-\u30ff\u0e00-\u0eff\u1780-\u17ff\u1000-\u109f]+")
_WORD = re.compile(r"[^\W_]{2,}")  # as scikit-learn's default token_pattern; numbers-only dropped later
_HAS_LETTER = re.compile(r"[^\W\d_]")

# Common Chinese function words and news boilerplate (no list ships with scikit-learn or jieba).
CHINESE_STOP_WORDS = frozenset(
    """的 了 是 在 和 与 及 或 也 都 就 而 但 并 被 把 从 对 为 以 于 之 其 这 那 个 有 没有 不 人 我 你 他 她 它
    我们 你们 他们 一个 一些 什么 怎么 如何 为何 哪些 可以 可能 已经 还是 还有 因为 所以 如果 虽然 但是 以及 或者
    这个 那个 这些 那些 这样 那样 之后 之前 以后 以来 目前 今年 明年 去年 今日 昨日 今天 明天 昨天 将 会 要 能
    让 给 向 到 由 等 等等 中 上 下 后 前 内 外 时 年 月 日 称 说 表示 认为 进行 通过 关于 对于 记者 报道 消息
    图 组图 视频 新闻 最新 独家 曝 揭秘 回应""".split()
)


def english_stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


#: Leftovers of markup and feeds that survive as words ("nbsp" from "&amp;nbsp;", "quot" ...).
WEB_STOP_WORDS = frozenset(
    {"nbsp", "amp", "quot", "gt", "lt", "apos", "href", "http", "https", "www", "com", "html", "htm"}
)


def clean_text(text: str) -> str:
    """Decode HTML entities (twice, for double-escaped feeds), drop markup, URLs and boilerplate."""
    text = _BARE_ENTITY.sub(r"&\1", str(text))
    text = html.unescape(html.unescape(text))
    text = _TAG.sub(" ", text)
    text = _ENTITY_LEFT.sub(" ", text)
    text = _URL.sub(" ", text)
    return _BOILERPLATE.sub(" ", text)


def _jieba_cut() -> Callable[[str], list[str]]:
    import jieba

    jieba.setLogLevel(logging.WARNING)  # its dictionary-loading messages look like failures
    return jieba.lcut


def tokenize(text: str, stop_words: frozenset[str] = frozenset()) -> list[str]:
    """Words of one (clean) text, lower-cased, stop words and bare numbers removed."""
    pieces: list[str] = []
    if _HAN.search(text):
        for token in _jieba_cut()(text):
            token = token.strip()
            if _HAN.search(token):
                if len(token) >= 2:  # single characters are mostly particles
                    pieces.append(token)
            else:
                pieces.extend(_words(token))
    else:
        last = 0
        for run in _UNSPACED_RUN.finditer(text):
            pieces.extend(_words(text[last : run.start()]))
            chars = run.group()
            pieces.extend(chars[i : i + 2] for i in range(len(chars) - 1))
            last = run.end()
        pieces.extend(_words(text[last:]))
    return [p for p in (t.lower() for t in pieces) if p not in stop_words and _HAS_LETTER.search(p)]


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def make_analyzer(stop_words: frozenset[str] | None = None) -> Callable[[str], list[str]]:
    """The ``CountVectorizer`` analyzer: clean, tokenise, drop stop words."""
    stops = (
        stop_words if stop_words is not None else english_stop_words() | CHINESE_STOP_WORDS | WEB_STOP_WORDS
    )

    def analyze(doc: str) -> list[str]:
        return tokenize(clean_text(doc), stops)

    return analyze


def class_tfidf(
    class_docs: list[str], max_features: int | None = 200_000
) -> tuple[sp.csr_matrix, np.ndarray]:
    """BERTopic's c-TF-IDF of one concatenated document per class -> (scores (C, V) csr, vocabulary).

    Returns an empty (C, 0) matrix when no term survives (all stop words, empty texts).
    ``max_features`` keeps the vocabulary bounded on huge corpora (the most frequent terms).
    """
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.preprocessing import normalize

    vectorizer = CountVectorizer(analyzer=make_analyzer(), min_df=1, max_features=max_features)
    try:
        counts = vectorizer.fit_transform(class_docs)
    except ValueError:  # "empty vocabulary; perhaps the documents only contain stop words"
        return sp.csr_matrix((len(class_docs), 0), dtype=np.float64), np.array([], dtype=object)
    counts = counts.astype(np.float64)
    f_t = np.asarray(counts.sum(axis=0)).ravel()
    avg_words = float(np.asarray(counts.sum(axis=1)).mean())
    idf = np.log(1.0 + avg_words / np.maximum(f_t, 1.0))
    tf = normalize(counts, axis=1, norm="l1", copy=True)
    scores = sp.csr_matrix(tf @ sp.diags(idf))
    return scores, vectorizer.get_feature_names_out()


def top_terms(scores: sp.csr_matrix, vocab: np.ndarray, row: int, n: int) -> list[str]:
    """The n highest-scoring terms of one class (only terms that occur in it)."""
    if scores.shape[1] == 0 or n <= 0:
        return []
    r = scores.getrow(row)
    if r.nnz == 0:
        return []
    order = np.lexsort((r.indices, -r.data))[:n]  # score desc, then alphabetical index for ties
    return [str(vocab[r.indices[i]]) for i in order]
