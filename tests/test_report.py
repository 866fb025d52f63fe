"""Report stage: c-TF-IDF keywords (BERTopic's formula), representatives, JSON and HTML output."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from engine.errors import EngineError
from engine.keywords import class_tfidf, name_from_terms
from engine.report import build_layers_report, build_report

SPORTS = [
    "The football team won the championship match after a late goal",
    "Star striker scores twice as the football club wins the league match",
    "Tennis champion wins the final match in straight sets",
    "Coach praises team defence after the league match victory",
    "Basketball team wins the championship after overtime match",
    "Football league fixtures announced for the new season",
]
FINANCE = [
    "Stocks fall as investors fear higher interest rates from the central bank",
    "The central bank raises interest rates to fight inflation",
    "Bond yields climb as inflation data surprises investors",
    "Shares of the bank drop after weak quarterly earnings",
    "Investors buy stocks as inflation cools and rates steady",
    "Earnings season: bank stocks rally on strong profits",
]


def make_frame(texts, labels, prob=None, seed=0):
    rng = np.random.default_rng(seed)
    n = len(texts)
    return pd.DataFrame(
        {
            "id": np.arange(n, dtype=np.int64) * 10,
            "text": texts,
            "cluster": np.asarray(labels, dtype=np.int64),
            "probability": np.ones(n, np.float32) if prob is None else np.asarray(prob, np.float32),
            "outlier_score": rng.random(n).astype(np.float32),
            "x": rng.normal(size=n),
            "y": rng.normal(size=n),
        }
    )


def test_keywords_make_sense_on_sports_vs_finance():
    texts = SPORTS + FINANCE + ["Weather: sunny with light wind", "A new recipe for apple pie"]
    labels = [0] * 6 + [1] * 6 + [-1, -1]
    report = build_report(make_frame(texts, labels), n_keywords=5)
    kw = report.keywords_by_cluster()
    assert {"match", "team"} & set(kw[0][:3]), kw[0]
    assert {"bank", "stocks", "inflation", "rates", "investors"} & set(kw[1][:3]), kw[1]
    assert not set(kw[0]) & {"bank", "stocks", "inflation"}
    assert "the" not in kw[0] + kw[1]  # English stop words removed
    assert report.clusters["size"].tolist() == [6, 6]
    assert report.noise_size == 2 and report.noise_share == pytest.approx(2 / 14)
    assert report.clusters["share"].sum() + report.noise_share == pytest.approx(1.0)


def test_class_tfidf_matches_bertopic_formula():
    docs = ["apple apple banana", "banana cherry cherry cherry"]
    scores, vocab = class_tfidf(docs)
    vocab = list(vocab)
    counts = np.array([[2, 1, 0], [0, 1, 3]], float)  # apple, banana, cherry
    a = counts.sum(1).mean()
    expected = counts / counts.sum(1, keepdims=True) * np.log(1 + a / counts.sum(0))
    got = scores.toarray()[:, [vocab.index(t) for t in ("apple", "banana", "cherry")]]
    assert np.allclose(got, expected)


def test_representatives_by_probability_then_centroid():
    texts = [f"sports story number {i} about the match" for i in range(8)]
    prob = [0.5, 1, 1, 1, 0.9, 1, 0.2, 1]
    rng = np.random.default_rng(0)
    base = rng.normal(size=16)
    vectors = np.stack([base + rng.normal(scale=0.1 * (i + 1), size=16) for i in range(8)])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rep = build_report(make_frame(texts, [0] * 8, prob), n_representatives=5, vectors=vectors)
    chosen = [d["id"] // 10 for d in rep.clusters.loc[0, "representatives"]]
    assert set(chosen) == {1, 2, 3, 5, 7}  # every p=1 document beats p=0.9 and lower
    # Ties at p=1 are ordered by closeness to the centroid (smaller noise => closer, here index order).
    tied = [c for c in chosen if prob[c] == 1]
    sims = vectors[tied] @ vectors.mean(0)
    assert list(sims) == sorted(sims, reverse=True)


def test_duplicate_texts_shown_once():
    texts = ["Same headline here"] * 4 + ["Other headline", "Third headline"]
    rep = build_report(make_frame(texts, [0] * 6), n_representatives=5)
    shown = [d["text"] for d in rep.clusters.loc[0, "representatives"]]
    assert shown.count("Same headline here") == 1 and len(shown) == 3


@pytest.mark.parametrize(
    "texts, labels",
    [
        (["only one document"], [0]),
        (["a", "b", "c"], [-1, -1, -1]),  # all noise, no usable words
        (["the and of", "it is the", "to be or"], [0, 0, 1]),  # only stop words
        (["", None, "x"], [0, 0, 0]),  # empty / missing texts
        (["北京今天天气很好", "上海股市大涨", "北京举行马拉松比赛"], [0, 1, 0]),  # Chinese
    ],
)
def test_degenerate_inputs_do_not_raise(tmp_path, texts, labels):
    rep = build_report(make_frame(texts, labels))
    data = rep.to_dict()
    assert data["n_documents"] == len(texts)
    assert data["n_clusters"] == len({c for c in labels if c >= 0})
    assert sum(c["size"] for c in data["clusters"]) + data["noise"]["size"] == len(texts)
    paths = rep.write(tmp_path)
    assert json.load(open(paths["json"], encoding="utf-8")) == json.loads(json.dumps(data))
    assert os.path.getsize(paths["html"]) > 200


def test_chinese_keywords_are_words_not_whole_runs():
    rep = build_report(
        make_frame(["北京今天天气很好", "上海股市大涨", "北京今天天气很好"], [0, 1, 0]), ngrams=1
    )
    assert rep.keywords_by_cluster()[0] == ["今天天气", "北京"]  # jieba words (很 and 好 are single chars)
    assert rep.keywords_by_cluster()[1] == ["上海", "大涨", "股市"]


def test_write_json_and_escaped_html(tmp_path):
    texts = SPORTS + FINANCE
    texts[0] = "<script>alert('x')</script> Team & <b>match</b>"
    rep = build_report(make_frame(texts, [0] * 6 + [1] * 6), n_representatives=6)
    (tmp_path / "map.html").write_text("<html></html>")
    paths = rep.write(tmp_path, title="Report <of> news")
    page = open(paths["html"], encoding="utf-8").read()
    assert "<script>alert" not in page and "<script" in page  # plotly.js for the charts, text escaped
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page and "&amp;" in page
    assert "Report &lt;of&gt; news" in page and 'href="map.html"' in page
    data = json.load(open(paths["json"], encoding="utf-8"))
    assert data["clusters"][0]["representatives"][0]["text"]  # raw text kept in JSON
    assert set(data["clusters"][0]) == {
        "cluster",
        "name",
        "size",
        "share",
        "mean_probability",
        "keywords",
        "keyword_scores",
        "representatives",
    }


def test_clusters_sorted_by_size_and_validation():
    texts = [f"t{i} word{i % 3}" for i in range(10)]
    rep = build_report(make_frame(texts, [2, 2, 2, 2, 2, 0, 0, 1, 1, 1]))
    assert rep.clusters["cluster"].tolist() == [2, 1, 0]
    assert rep.clusters["size"].tolist() == [5, 3, 2]
    with pytest.raises(EngineError, match="outlier_score"):
        build_report(make_frame(texts, [0] * 10).drop(columns=["outlier_score"]))
    with pytest.raises(EngineError, match="vectors"):
        build_report(make_frame(texts, [0] * 10), vectors=np.zeros((3, 4)))


def test_layers_report_tree_json_and_html(tmp_path):
    texts = SPORTS + FINANCE + ["Weather: sunny with light wind", "A new recipe for apple pie"]
    fine = np.array([0, 0, 0, 2, 2, 2, 1, 1, 1, 3, 3, -1, -1, -1])
    coarse = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, -1, -1])
    frame = make_frame(texts, coarse)
    rep = build_layers_report(frame, np.stack([fine, coarse]), primary=1, n_keywords=5)
    data = rep.to_dict()
    assert data["primary_layer"] == 1 and len(data["layers"]) == 2
    low, top = data["layers"]
    assert low["primary"] is False and top["primary"] is True
    assert [c["parent"] for c in low["clusters"]] == [0, 1, 0, 1]
    assert sorted(top["clusters"][0]["children"]) == [0, 2]
    for layer in data["layers"]:
        for c in layer["clusters"]:
            assert c["name"] == name_from_terms(c["keywords"]) and c["size"] > 0
            assert len(c["keyword_scores"]) == len(c["keywords"])
    assert {"match", "team", "football", "league"} & set(top["clusters"][0]["name"].split(", "))
    paths = rep.write(tmp_path)
    page = open(paths["html"], encoding="utf-8").read()
    assert "Topic tree" in page and page.count("<details>") == 6  # 2 coarse + 4 fine topics
    assert json.load(open(paths["json"], encoding="utf-8"))["layers"][0]["clusters"][0]["parent"] == 0


def test_report_html_has_the_charts_built_from_the_run_data(tmp_path):
    from engine.report import topics_per_class
    from engine.show.charts import report_figures
    from engine.timeline import topics_over_time

    texts = (
        SPORTS
        + FINANCE
        + ["Weather: sunny with light wind and warm weather", "Rain and wind: weather warning"]
    )
    labels = np.array([0] * 6 + [1] * 6 + [2] * 2)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3, 8))[labels] + 0.1 * rng.normal(size=(14, 8))
    rep = build_report(make_frame(texts, labels), n_keywords=5, vectors=vectors)
    times = pd.Series(pd.to_datetime(["2024-01-01", "2024-01-02"] * 7, utc=True))
    rep.over_time = topics_over_time(labels, times, "date")
    rep.per_class = topics_per_class(labels, pd.Series(["a", "b"] * 7), "source")
    page = open(rep.write(tmp_path)["html"], encoding="utf-8").read()
    figures = {cid: fig for cid, _, fig in report_figures(rep)}
    ids = ["chart-top-words", "chart-similarity", "chart-hierarchy", "chart-over-time", "chart-per-class"]
    assert list(figures) == ids
    for cid in ids:
        assert f'id="{cid}"' in page
    data = rep.to_dict()
    bars = figures["chart-top-words"].data
    assert [list(b.x) for b in bars] == [c["keyword_scores"][::-1] for c in data["clusters"]]
    assert [list(b.y) for b in bars] == [c["keywords"][::-1] for c in data["clusters"]]
    heat = figures["chart-similarity"].data[0]
    centroids = np.stack([vectors[labels == c].mean(axis=0) for c in (0, 1, 2)])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    assert np.allclose(np.asarray(heat.z), centroids @ centroids.T, atol=1e-3)
    assert sorted(figures["chart-hierarchy"].layout.yaxis.ticktext) == sorted(
        f"{c['cluster']}: {c['name']}" for c in data["clusters"]
    )
    lines = figures["chart-over-time"].data
    assert [list(t.y) for t in lines] == [data["over_time"]["clusters"][str(c)] for c in (0, 1, 2)]
    assert list(lines[0].y) == [3, 3]
    per_class = figures["chart-per-class"].data
    assert [t.name for t in per_class] == ["a", "b"]
    assert sum(sum(t.x) for t in per_class) == 14
