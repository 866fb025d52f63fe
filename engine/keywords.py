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
here (English: scikit-learn's list; Chinese: the common function words below), and so are
:data:`FILLER_WORDS` (reporting verbs, honorifics, contraction fragments, markup leftovers).
English contractions are cut before splitting ("didn't" -> "did not", "Trump's" -> "Trump").

Phrases: with ``ngrams=2`` adjacent kept words within one clause (no punctuation between them)
also count as a two-word term ("prime minister", "white house"); a pair seen only once in the
whole corpus is dropped. Unigrams and pairs compete on the same c-TF-IDF score, so a phrase is
a keyword only where it scores higher than the words around it.

Corpus-aware filler rule (``min_lift``): a term is a keyword of a class only when that class uses
it at least ``min_lift`` times as often (per word) as the rest of the corpus does. Words used at
about the same rate everywhere ("year", "new", "reuters" in AG News, "said" in BBC) are fillers of
this corpus whatever their language, so the rule works for every language tokenised here.
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


#: Words frequent in news and social text that never name a topic: reporting verbs, honorifics,
#: social-media markers, wire-agency datelines and the fragments contractions leave when an apostrophe
#: was lost.
FILLER_WORDS = frozenset(
    """said says say saying told tell tells according added adds reportedly did does mr mrs ms dr rt via
    didn doesn isn wasn aren weren hasn haven hadn wouldn couldn shouldn mustn needn don ain ll ve re
    br div span img src px nofollow target ticker fullquote quickinfo aspx php
    reuters afp ap upi""".split()  # wire-agency datelines ("LONDON (Reuters) -"): a source, not a topic
)

_CANT = re.compile(r"\b(ca|wo|sha)n['\u2019]t\b", re.IGNORECASE)
_NOT = re.compile(r"n['\u2019]t\b", re.IGNORECASE)
_CLITIC = re.compile(r"['\u2019](?:s|ll|re|ve|d|m)\b", re.IGNORECASE)
# Clause breaks: a two-word phrase never spans one.
_CLAUSE = re.compile(r"[\n\r.!?;:,|()\[\]{}\"\u201c\u201d\u2014\u2013/]+|\s-\s")


def default_stop_words() -> frozenset[str]:
    """Stop lists of every language handled here, plus markup leftovers and :data:`FILLER_WORDS`."""
    return english_stop_words() | CHINESE_STOP_WORDS | WEB_STOP_WORDS | FILLER_WORDS


def expand_contractions(text: str) -> str:
    """ "didn't" -> "did not", "won't" -> "will not", "Trump's"/"we'll" -> "Trump"/"we" (English clitics)."""
    text = _CANT.sub(lambda m: {"ca": "can", "wo": "will", "sha": "shall"}[m.group(1).lower()] + " not", text)
    return _CLITIC.sub("", _NOT.sub(" not", text))


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


def make_analyzer(stop_words: frozenset[str] | None = None, ngrams: int = 1) -> Callable[[str], list[str]]:
    """The ``CountVectorizer`` analyzer: clean, tokenise, drop stop words; ``ngrams=2`` adds in-clause pairs."""
    stops = stop_words if stop_words is not None else default_stop_words()
    pairs: set[str] = set()  # every two-word term emitted (a Han pair has no space to tell it by)

    def analyze(doc: str) -> list[str]:
        text = expand_contractions(clean_text(doc))
        if ngrams < 2:
            return tokenize(text, stops)
        terms: list[str] = []
        for clause in _CLAUSE.split(text):
            words = tokenize(clause, stops)
            terms.extend(words)
            two = [_pair(a, b) for a, b in zip(words, words[1:], strict=False) if a != b]
            pairs.update(two)
            terms.extend(two)
        return terms

    analyze.pairs = pairs  # type: ignore[attr-defined]
    return analyze


def _pair(a: str, b: str) -> str:
    """A two-word term: Han words join without a space, as Chinese is written; others with one."""
    return a + b if _HAN.search(a[-1]) and _HAN.search(b[0]) else f"{a} {b}"


def class_tfidf(
    class_docs: list[str],
    max_features: int | None = 200_000,
    ngrams: int = 1,
    min_lift: float = 0.0,
) -> tuple[sp.csr_matrix, np.ndarray]:
    """BERTopic's c-TF-IDF of one concatenated document per class -> (scores (C, V) csr, vocabulary).

    Returns an empty (C, 0) matrix when no term survives (all stop words, empty texts).
    ``max_features`` keeps the vocabulary bounded on huge corpora (the most frequent terms).
    ``ngrams`` (1 or 2) and ``min_lift`` (the filler rule; 0 = off): see the module doc. A term
    a rule removes from a class scores 0 there (absent from that row).
    """
    from sklearn.feature_extraction.text import CountVectorizer

    analyzer = make_analyzer(ngrams=ngrams)
    vectorizer = CountVectorizer(analyzer=analyzer, min_df=1, max_features=max_features)
    try:
        counts = vectorizer.fit_transform(class_docs)
    except ValueError:  # "empty vocabulary; perhaps the documents only contain stop words"
        return sp.csr_matrix((len(class_docs), 0), dtype=np.float64), np.array([], dtype=object)
    vocab = vectorizer.get_feature_names_out()
    counts = sp.csr_matrix(counts, dtype=np.float64)
    counts.sum_duplicates()
    counts.sort_indices()
    f_t = np.asarray(counts.sum(axis=0)).ravel()
    words = np.asarray(counts.sum(axis=1)).ravel()
    avg_words = float(words.mean())
    idf = np.log(1.0 + avg_words / np.maximum(f_t, 1.0))
    coo = counts.tocoo()
    data = coo.data / np.maximum(words[coo.row], 1.0) * idf[coo.col]  # tf (l1 per class) * idf
    keep = np.ones(coo.nnz, dtype=bool)
    if ngrams >= 2:  # a pair met once in the whole corpus is chance, not a phrase
        pairs = analyzer.pairs  # type: ignore[attr-defined]
        is_pair = np.fromiter((str(t) in pairs for t in vocab), dtype=bool, count=len(vocab))
        keep &= ~(is_pair[coo.col] & (f_t[coo.col] < 2))
    if min_lift > 0 and len(class_docs) > 1:
        rate_in = coo.data / np.maximum(words[coo.row], 1.0)
        rest_words = words.sum() - words[coo.row]
        rate_out = (f_t[coo.col] - coo.data) / np.maximum(rest_words, 1.0)
        keep &= (rate_out == 0) | (rate_in >= min_lift * rate_out)
    scores = sp.csr_matrix((data[keep], (coo.row[keep], coo.col[keep])), shape=counts.shape, dtype=np.float64)
    return scores, vocab


def top_terms(scores: sp.csr_matrix, vocab: np.ndarray, row: int, n: int) -> list[str]:
    """The n highest-scoring terms of one class (only terms that occur in it)."""
    return [t for t, _ in top_terms_scored(scores, vocab, row, n)]


def top_terms_scored(scores: sp.csr_matrix, vocab: np.ndarray, row: int, n: int) -> list[tuple[str, float]]:
    """(term, c-TF-IDF score) of the n highest-scoring terms of one class, best first."""
    if scores.shape[1] == 0 or n <= 0:
        return []
    r = scores.getrow(row)
    if r.nnz == 0:
        return []
    order = np.lexsort((r.indices, -r.data))[:n]  # score desc, then alphabetical index for ties
    return [(str(vocab[r.indices[i]]), float(r.data[i])) for i in order]


def _stems(term: str) -> set[str]:
    """Crude per-word stems, only to tell near-duplicates apart ("trump"/"trumps", "election"/"elections")."""
    out = set()
    for w in str(term).lower().split():
        for suffix in ("ies", "es", "s"):
            if len(w) > len(suffix) + 3 and w.endswith(suffix):
                w = w[: -len(suffix)] + ("y" if suffix == "ies" else "")
                break
        out.add(w)
    return out


def distinct_terms(terms: list[str], n: int = 3) -> list[str]:
    """Up to n terms, best first, none sharing a word (stem) with another.

    A later phrase that contains an earlier chosen word replaces it ("minister" then "prime minister"
    -> "prime minister"), so names read as phrases where the corpus has them.
    """
    chosen: list[str] = []
    for term in terms:
        if len(chosen) == n:
            break
        stems = _stems(term)
        hits = [i for i, c in enumerate(chosen) if _stems(c) & stems]
        if not hits:
            chosen.append(term)
        elif len(hits) == 1 and _stems(chosen[hits[0]]) < stems:
            chosen[hits[0]] = term
    return chosen


def name_from_terms(terms: list[str], n: int = 3) -> str:
    """A cluster name: its top n distinct terms joined by ", " ("" when it has none)."""
    return ", ".join(distinct_terms([str(t) for t in terms], n))


def embedding_reranker(
    embed: Callable[[list[str]], np.ndarray], vectors: np.ndarray, diversity: float = 0.0
) -> Callable[[list[str], np.ndarray, np.ndarray], list[tuple[str, float]]]:
    """KeyBERT-like re-ranking of a cluster's c-TF-IDF candidates, with optional MMR diversity.

    ``embed``: the run's model on a list of words (rows need not be normalised); ``vectors``: the
    documents' embeddings. A candidate's relevance is the cosine of its embedding to the cluster's
    centroid; MMR picks, one at a time, the candidate maximising
    ``(1 - diversity) * relevance - diversity * max cosine to those already picked``. The returned
    scores stay the candidates' c-TF-IDF scores (only the order changes), so scores mean one thing.
    Word embeddings are cached across clusters and layers.
    """
    cache: dict[str, np.ndarray] = {}

    def rerank(terms: list[str], scores: np.ndarray, members: np.ndarray) -> list[tuple[str, float]]:
        need = [t for t in dict.fromkeys(terms) if t not in cache]
        if need:
            emb = np.asarray(embed(need), dtype=np.float32)
            emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
            cache.update(zip(need, emb, strict=True))
        words = np.stack([cache[t] for t in terms])
        centroid = np.asarray(vectors[np.sort(members)], dtype=np.float32).mean(axis=0)
        centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
        relevance = words @ centroid
        picked: list[int] = []
        left = list(range(len(terms)))
        while left:
            if picked and diversity > 0:
                redundancy = (words[left] @ words[picked].T).max(axis=1)
                gain = (1 - diversity) * relevance[left] - diversity * redundancy
            else:
                gain = relevance[left]
            best = left[int(np.argmax(gain))]
            picked.append(best)
            left.remove(best)
        return [(terms[i], float(scores[i])) for i in picked]

    return rerank
