"""Keywords in any language and clean, on the real corpora (true classes stand in for clusters)."""

from __future__ import annotations

import os

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
