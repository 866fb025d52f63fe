"""Drawing the map (engine.show.map): escaped hover text, legend, noise toggle, layer switch, PNG."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from engine.errors import EngineError
from engine.show.map import cluster_palette, hover_text, write_map


def test_hover_text_escapes_wraps_truncates():
    h = hover_text("<script>alert('x')</script> & more\nbody " + "word " * 200, max_chars=120, width=40)
    assert "<script>" not in h and "&lt;script&gt;" in h and "&amp;" in h
    assert "<br>" in h and h.endswith("…")
    assert max(len(part) for part in h.split("<br>")) <= 60  # escaped lines stay short


def _map_frame(n_clusters: int, per: int = 5, noise: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    labels = np.concatenate([np.repeat(np.arange(n_clusters), per), -np.ones(noise, int)])
    n = len(labels)
    texts = [f"doc {i} about topic {c}" for i, c in enumerate(labels)]
    texts[0] = "<script>alert('pwned')</script> Tom & Jerry </textarea>"
    return pd.DataFrame(
        {
            "id": np.arange(n, dtype=np.int64) + 1000,
            "text": texts,
            "cluster": labels,
            "x": rng.normal(size=n).astype(np.float32),
            "y": rng.normal(size=n).astype(np.float32),
        }
    )


def test_write_map_html_and_png(tmp_path):
    frame = _map_frame(3)
    paths = write_map(
        frame, tmp_path / "map.html", tmp_path / "map.png", title="News <map>", keywords={0: ["alpha", "<b>"]}
    )
    page = (tmp_path / "map.html").read_text(encoding="utf-8")
    assert paths["html"].endswith("map.html")
    assert "<script>alert" not in page  # document text is escaped in the hover
    assert "&lt;script&gt;alert" in page
    assert "scattergl" in page and "Hide noise" in page and "noise (4)" in page
    assert "&lt;b&gt;" in page  # keywords escaped too
    assert "News &lt;map&gt;" in page
    assert len(page) > 3_000_000  # plotly.js inlined: opens offline
    assert not re.search(r'<script[^>]+src="https?://', page)
    png = (tmp_path / "map.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000


def test_write_map_many_clusters_keeps_legend_short(tmp_path):
    frame = _map_frame(90, per=3)
    write_map(frame, tmp_path / "m.html", None, max_legend=50)
    page = (tmp_path / "m.html").read_text(encoding="utf-8")
    assert "40 smaller clusters" in page
    assert len(cluster_palette()) >= 60


def test_write_map_all_noise_and_sampling(tmp_path):
    frame = _map_frame(0, noise=30)
    paths = write_map(frame, tmp_path / "a.html", tmp_path / "a.png", max_points=10)
    page = open(paths["html"], encoding="utf-8").read()
    assert "showing a random 10" in page
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(EngineError, match="cluster"):
        write_map(frame.drop(columns=["cluster"]), tmp_path / "b.html", None)


def test_write_map_layer_switch_and_names(tmp_path):
    frame = _map_frame(4, per=6, noise=4)
    frame["layer_0"] = frame["cluster"]
    frame["layer_1"] = np.where(frame["cluster"] >= 0, frame["cluster"] // 2, -1)
    layers = [
        {
            "layer": 0,
            "primary": False,
            "n_clusters": 4,
            "clusters": [{"cluster": c, "size": 6, "name": f"fine{c}, word"} for c in range(4)],
        },
        {
            "layer": 1,
            "primary": True,
            "n_clusters": 2,
            "clusters": [{"cluster": c, "size": 12, "name": f"coarse{c} <i>"} for c in range(2)],
        },
    ]
    write_map(frame, tmp_path / "m.html", None, title="T", layers=layers)
    page = (tmp_path / "m.html").read_text(encoding="utf-8")
    assert "layer 0: 4 clusters" in page and "layer 1: 2 clusters *" in page  # the switch
    assert "coarse0 &lt;i&gt;" in page and "fine3, word" in page  # names at centres, escaped
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page
    assert page.count("doc 5 about topic 0") == 1  # hover text stored once, not per layer
    with pytest.raises(EngineError, match="layer_2"):
        write_map(frame, tmp_path / "x.html", None, layers=layers + [{"layer": 2, "clusters": []}])


def _corpus_map(texts: list[str], vectors: np.ndarray, n_clusters: int) -> tuple[pd.DataFrame, list[dict]]:
    """A map frame and its layer dict from real texts and MiniLM vectors: k-means clusters (ids by size),
    a 2-D PCA layout (crowded: a hard case for names), c-TF-IDF names from engine.report."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    from engine.report import build_report

    raw = KMeans(n_clusters=n_clusters, n_init=1, random_state=0).fit_predict(vectors)
    by_size = np.argsort(-np.bincount(raw), kind="stable")
    labels = np.argsort(by_size)[raw]
    xy = PCA(n_components=2, random_state=0).fit_transform(vectors)
    frame = pd.DataFrame(
        {
            "id": np.arange(len(texts)),
            "text": texts,
            "cluster": labels,
            "probability": np.ones(len(texts), np.float32),
            "outlier_score": np.zeros(len(texts), np.float32),
            "x": xy[:, 0],
            "y": xy[:, 1],
            "layer_0": labels,
        }
    )
    data = build_report(frame, n_keywords=5, n_representatives=0).to_dict()
    return frame, [
        {"layer": 0, "primary": True, "n_clusters": data["n_clusters"], "clusters": data["clusters"]}
    ]


@pytest.mark.slow
@pytest.mark.parametrize("corpus", ["news_headlines", "bbc", "ag_news"])
def test_drawn_names_do_not_overlap_in_chromium(tmp_path, corpus, shared_data_dir, embeddings_cache_dir):
    import os

    from tests.fixtures.browser import chromium_available, drawn_label_boxes, overlapping_pairs
    from tests.fixtures.data import load_agnews, load_bbc, minilm_embed

    if not chromium_available():
        pytest.skip("needs /usr/bin/chromium, /usr/bin/chromedriver and selenium (the test extra)")
    if corpus == "news_headlines":
        news = pd.read_csv(os.path.join(shared_data_dir, "news_headlines_2024", "news_data_dedup.csv"))
        texts = (news["title"] + "\n" + news["description"].fillna("")).tolist()
    elif corpus == "bbc":
        texts, _ = load_bbc(shared_data_dir)
    else:
        texts, _ = load_agnews(shared_data_dir, n=2000, seed=0)
    frame, layers = _corpus_map(texts, minilm_embed(texts, embeddings_cache_dir), n_clusters=40)
    write_map(frame, tmp_path / "map.html", tmp_path / "map.png", layers=layers)
    boxes = drawn_label_boxes(tmp_path / "map.html")
    names = {html_unescape(c["name"]) for c in layers[0]["clusters"]}
    assert len(boxes) >= 20, boxes  # most of the 40 names find a free spot
    assert {b["text"] for b in boxes} <= names
    assert overlapping_pairs(boxes) == []
    width = max(b["right"] for b in boxes) - min(b["left"] for b in boxes)
    height = max(b["bottom"] for b in boxes) - min(b["top"] for b in boxes)
    assert width > 600 and height > 400  # names spread over the figure, fitted to the data


def html_unescape(text: str) -> str:
    import html

    return html.unescape(text)
