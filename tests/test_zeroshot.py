"""Zero-shot topics: parsing --topics, scoring documents against embedded topic names, naming and splitting clusters."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import normalized_mutual_info_score

from engine.errors import EngineError
from engine.zeroshot import name_scores, parse_topics, zero_shot_labels
from tests.test_cli import engine


def test_parse_topics_from_string_and_file(tmp_path):
    assert parse_topics(" sport, politics ,, business, sport") == ["sport", "politics", "business"]
    path = tmp_path / "topics.txt"
    path.write_text("sport\n\npolitics, elections\n", encoding="utf-8")
    assert parse_topics(str(path)) == ["sport", "politics, elections"]
    with pytest.raises(EngineError, match="--topics: no topic names"):
        parse_topics(" , ")
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(EngineError, match="--topics file"):
        parse_topics(str(path))


def _docs(directions: list[int], rng: np.random.Generator, dim: int = 8, noise: float = 0.05) -> np.ndarray:
    return np.eye(dim, dtype=np.float32)[directions] + noise * rng.normal(size=(len(directions), dim))


def test_clusters_take_names_merge_split_and_noise_joins():
    rng = np.random.default_rng(0)
    axes = np.eye(8, dtype=np.float32)
    # 0 and 2: "sport" (axis 0); 1: "politics" (axis 1); 3: half sport half politics; 4: about neither (axis 4)
    labels = np.array([0] * 10 + [1] * 8 + [2] * 6 + [3] * 6 + [4] * 5 + [-1] * 2)
    direction = [0] * 10 + [1] * 8 + [0] * 6 + [0, 1, 0, 1, 0, 1] + [4] * 5 + [1, 5]
    vectors = _docs(direction, rng)
    new, named, rows = zero_shot_labels(labels, vectors, ["sport", "politics"], axes[:2], threshold=0.3)
    assert named == {0: "sport", 1: "politics"}
    assert new[:24].tolist() == [0] * 10 + [1] * 8 + [0] * 6  # cluster 2 merged into the larger sport cluster
    assert new[24:30].tolist() == [0, 1, 0, 1, 0, 1]  # the mixed cluster split by its documents' votes
    assert new[30:35].tolist() == [4] * 5  # about neither name: keeps its own id
    assert new[35:].tolist() == [1, -1]  # a noise document near "politics" joins it, the other stays noise
    by_cluster = {r["cluster"]: r for r in rows}
    assert [r["cluster"] for r in rows] == [0, 1, 2, 3, 4]  # largest first
    assert by_cluster[3]["topic"] is None and by_cluster[3]["split"] == {"sport": 3, "politics": 3}
    assert (
        by_cluster[4]["topic"] is None and by_cluster[4]["similarity"] < 0.3 and "split" not in by_cluster[4]
    )


def test_a_name_only_noise_or_split_documents_take_gets_a_new_id():
    rng = np.random.default_rng(1)
    axes = np.eye(8, dtype=np.float32)
    labels = np.array([0] * 6 + [-1] * 3)
    vectors = _docs([0] * 6 + [2] * 3, rng)
    new, named, _ = zero_shot_labels(labels, vectors, ["sport", "weather"], axes[[0, 2]], threshold=0.3)
    assert new.tolist() == [0] * 6 + [1] * 3 and named == {0: "sport", 1: "weather"}


def test_calibration_removes_a_name_close_to_every_document():
    # every document shares a component along axis 7; "business" leans on it, so its raw cosine beats
    # "tech" even on tech documents. Minus each name's corpus-wide mean cosine, tech documents vote tech.
    rng = np.random.default_rng(2)
    vectors = _docs([0] * 20 + [1] * 20, rng) + 2.0 * np.eye(8, dtype=np.float32)[7]
    names = np.stack([np.eye(8)[0] + 3.0 * np.eye(8)[7], np.eye(8)[1]]).astype(np.float32)  # business, tech
    cos, score = name_scores(vectors, names)
    assert (cos[20:].argmax(axis=1) == 0).all()  # raw cosine: all of them "business"
    assert (score[:20].argmax(axis=1) == 0).all() and (score[20:].argmax(axis=1) == 1).all()


def test_neighbours_average_out_a_stray_document():
    rng = np.random.default_rng(3)
    # 9 sport documents, 9 politics ones, and a last one pointing at "politics" whose 4 neighbours are sport ones
    vectors = _docs([0] * 9 + [1] * 9 + [1], rng)
    names = np.eye(8, dtype=np.float32)[:2]
    neighbours = np.array(
        [[(i + j) % 9 + 9 * (i >= 9) for j in range(1, 5)] for i in range(18)] + [[0, 1, 2, 3]]
    )
    neighbours[0, 3] = -1  # a missing neighbour slot is skipped
    assert name_scores(vectors, names)[1][18].argmax() == 1
    cos, score = name_scores(vectors, names, neighbours)
    assert score[18].argmax() == 0
    assert cos[0, 0] == pytest.approx(
        np.mean(vectors[[0, 1, 2, 3]] @ names[0] / np.linalg.norm(vectors[[0, 1, 2, 3]], axis=1)), abs=1e-5
    )


@pytest.mark.slow
def test_topics_on_bbc_find_the_classes(tmp_path, shared_data_dir):
    """End to end on 250 BBC articles (50 per class): the five class names as --topics name the classes."""
    bbc = pd.read_csv(os.path.join(shared_data_dir, "bbc_news", "bbc_news.csv"))
    sample = bbc.groupby("category").head(50).reset_index(drop=True)
    corpus = tmp_path / "bbc.csv"
    sample.to_csv(corpus, index=False)
    out = tmp_path / "run"
    topics = "business, entertainment, politics, sport, tech"
    proc = engine(
        "run", str(corpus), "--text-template", "{title}\n{text}", "--out", str(out), "--model", "all-MiniLM-L6-v2",
        "--max-length", "128", "--k", "10", "--topics", topics, "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    labels = pd.read_parquet(out / "labels.parquet")
    import json

    report = json.loads((out / "clusters.json").read_text(encoding="utf-8"))
    names = {int(c["cluster"]): c["name"] for c in report["clusters"]}
    named = labels["cluster"].map(names).where(labels["cluster"] >= 0)
    assert set(named.dropna()) >= {"business", "entertainment", "politics", "sport", "tech"}
    taken = named.isin(topics.split(", "))
    assert taken.mean() >= 0.9
    assert (named[taken] == labels["category"][taken]).mean() >= 0.8
    assert normalized_mutual_info_score(labels["category"], named.fillna("noise")) >= 0.6
