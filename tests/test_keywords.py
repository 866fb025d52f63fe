"""Keywords in any language and clean, on the real corpora (true classes stand in for clusters)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from engine.keywords import clean_text, english_stop_words, tokenize
from engine.language import document_scripts, is_english_only_model, model_language_warning
from engine.report import build_report

JUNK = {"nbsp", "39", "36", "quot", "gt", "lt", "amp", "href", "continue", "reading", "com"}


def frame(texts, labels) -> pd.DataFrame:
    n = len(texts)
    return pd.DataFrame(
        {
            "id": range(n),
            "text": list(texts),
            "cluster": list(labels),
            "probability": 1.0,
            "outlier_score": 0.0,
        }
    )


def chinese_titles(shared_data_dir: str) -> pd.DataFrame:
    path = os.path.join(shared_data_dir, "thucnews_titles_zh", "test.txt")
    data = pd.read_csv(path, sep="\t", header=None, names=["title", "label"], quoting=3)
    return data.groupby("label").head(150).reset_index(drop=True)  # every class, 1,500 titles


def test_clean_text_decodes_entities_and_drops_markup_and_boilerplate():
    raw = "He said #39;no#39; &lt;b&gt;bold&lt;/b&gt; &amp;nbsp;x #36;10m. Continue reading... http://x.io/a"
    assert clean_text(raw).split() == ["He", "said", "'no'", "bold", "x", "$10m."]
    assert tokenize(clean_text(raw), english_stop_words()) == ["said", "bold", "10m"]


def test_chinese_keywords_are_words(shared_data_dir):
    titles = chinese_titles(shared_data_dir)
    report = build_report(frame(titles["title"], titles["label"]), n_keywords=10)
    keywords = report.keywords_by_cluster()
    assert len(keywords) == 10
    whole = set(titles["title"])
    for kws in keywords.values():
        assert len(kws) == 10
        assert not set(kws) & whole  # no whole headline
        assert max(len(k) for k in kws) <= 6, kws  # words, not headline fragments like 10日内或被引渡至瑞典
        assert sum(len(k) >= 2 for k in kws) == 10
    sports = keywords[7]  # class.txt line 8: sports
    assert {"比赛", "球员", "nba", "火箭", "皇马", "联赛", "决赛", "队"} & set(sports), sports


def test_english_web_text_keywords_have_no_markup_leftovers(shared_data_dir):
    ag = pd.read_csv(
        os.path.join(shared_data_dir, "ag_news", "test.csv"), header=None, names=["label", "title", "desc"]
    )
    report = build_report(frame(ag["title"] + "\n" + ag["desc"], ag["label"]), n_keywords=15)
    for kws in report.keywords_by_cluster().values():
        assert not set(kws) & JUNK, kws
    news = pd.read_csv(os.path.join(shared_data_dir, "news_headlines_2024", "news_data_dedup.csv"))
    assert news["description"].str.contains("Continue reading").sum() > 100  # the Guardian's feed text
    venue = news["venue"].astype("category").cat.codes
    report = build_report(frame(news["title"] + "\n" + news["description"].fillna(""), venue), n_keywords=15)
    for kws in report.keywords_by_cluster().values():
        assert not set(kws) & JUNK, kws


def test_english_only_model_warning(shared_data_dir):
    titles = chinese_titles(shared_data_dir)["title"].tolist()
    assert document_scripts(titles)["han"] > 0.95
    warning = model_language_warning("all-MiniLM-L6-v2", titles)
    assert warning and "English-only" in warning and "han" in warning
    assert model_language_warning("BAAI/bge-m3", titles) is None
    ag = pd.read_csv(os.path.join(shared_data_dir, "ag_news", "test.csv"), header=None)[1].tolist()
    assert model_language_warning("all-MiniLM-L6-v2", ag) is None


@pytest.mark.parametrize(
    "name,english",
    [
        ("all-MiniLM-L6-v2", True),
        ("sentence-transformers/all-mpnet-base-v2", True),
        ("BAAI/bge-small-en-v1.5", True),
        ("intfloat/e5-base-v2", True),
        ("BAAI/bge-m3", False),
        ("intfloat/multilingual-e5-large", False),
        ("sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2", False),
        ("/models/my-own-model", False),
    ],
)
def test_english_only_model_names(name, english):
    assert is_english_only_model(name) is english


def test_fillers_contractions_and_phrases():
    from engine.keywords import make_analyzer

    terms = make_analyzer(ngrams=2)(
        "Mr Trump didn't say it, he said. RT: the Prime Minister's plan &lt;br&gt; doesn t matter"
    )
    assert {"mr", "said", "say", "did", "didn", "doesn", "rt", "br", "ll"}.isdisjoint(terms), terms
    assert "prime minister" in terms and "trump" in terms
    assert "trump prime" not in terms  # no phrase across a clause break (the comma)


def test_filler_rule_drops_words_used_at_the_same_rate_everywhere():
    from engine.keywords import class_tfidf, top_terms

    docs = [
        "year football goals match year league",
        "year election vote party year parliament",
        "year bank shares profit year market",
    ]
    off, vocab = class_tfidf(docs, ngrams=1, min_lift=0)
    year = list(vocab).index("year")
    assert off[:, year].nnz == 3  # a candidate keyword of every class without the rule
    on, vocab = class_tfidf(docs, ngrams=1, min_lift=1.5)
    assert on[:, year].nnz == 0
    for row in range(3):
        assert "year" not in top_terms(on, vocab, row, 10) and len(top_terms(on, vocab, row, 10)) == 4


def test_names_are_distinct_terms():
    from engine.keywords import distinct_terms, name_from_terms

    assert distinct_terms(["trump", "trumps", "minister", "prime minister", "election"]) == [
        "trump",
        "prime minister",
        "election",
    ]
    assert name_from_terms(["elections", "election", "vote"]) == "elections, vote"
    assert name_from_terms([]) == ""


def test_every_keyword_has_a_score_and_names_have_no_filler(shared_data_dir):
    from engine.keywords import default_stop_words

    news = pd.read_csv(os.path.join(shared_data_dir, "news_headlines_2024", "news_data_dedup.csv"))
    venue = news["venue"].astype("category").cat.codes
    data = build_report(frame(news["title"] + "\n" + news["description"].fillna(""), venue)).to_dict()
    stops = default_stop_words()
    for c in data["clusters"]:
        assert len(c["keyword_scores"]) == len(c["keywords"]) > 0
        assert c["keyword_scores"] == sorted(c["keyword_scores"], reverse=True)
        words = {w for term in c["name"].split(", ") for w in term.split()}
        assert not words & stops, c["name"]


def test_embedding_reranker_orders_by_centroid_and_mmr_diversifies(minilm_path):
    from engine.embed import load_encoder
    from engine.keywords import embedding_reranker

    encoder = load_encoder("all-MiniLM-L6-v2", device="cpu")
    docs = [
        "The striker scored twice and the club won the league match",
        "Football fans cheer the cup final goal",
    ]
    vectors = encoder.encode(docs)
    terms = ["inflation", "football", "soccer", "goal"]
    scores = np.array([0.9, 0.5, 0.4, 0.3])  # c-TF-IDF order puts the off-topic word first
    plain = embedding_reranker(encoder.encode, vectors)(terms, scores, np.arange(2))
    assert plain[-1][0] == "inflation" and plain[0][0] in {"football", "soccer", "goal"}
    assert dict(plain) == dict(zip(terms, scores.tolist(), strict=True))  # scores stay c-TF-IDF scores
    diverse = embedding_reranker(encoder.encode, vectors, diversity=0.9)(terms, scores, np.arange(2))
    assert diverse[0][0] == plain[0][0]  # the first pick is the most relevant either way
    emb = dict(zip(terms, encoder.encode(terms), strict=True))
    first = emb[plain[0][0]]
    assert float(emb[diverse[1][0]] @ first) <= float(emb[plain[1][0]] @ first)  # MMR: less redundant second
