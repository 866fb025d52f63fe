"""The user's own columns reach labels.parquet under their own names; id/text/row columns are accepted."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from engine.corpus import engine_id_column, load_corpus, with_source_columns


def bbc(shared_data_dir: str) -> str:
    return os.path.join(shared_data_dir, "bbc_news", "bbc_news.csv")


def test_bbc_with_its_own_id_and_text_columns_loads(shared_data_dir):
    corpus = load_corpus(bbc(shared_data_dir), text_template="{title}\n{text}", limit=50)
    frame = corpus.frame
    # the engine's columns, then the source's, the clashing ones under reserved names
    assert list(frame.columns) == ["id", "text", "row", "source_id", "category", "title", "source_text"]
    assert frame["id"].tolist() == list(range(50))
    assert frame["source_id"].iloc[0] == "business/001"
    assert frame["text"].iloc[0].startswith("Ad sales boost Time Warner profit\nQuarterly profits")
    assert corpus.stats["renamed_columns"] == {"source_id": "id", "source_text": "text"}


def test_labels_keep_source_columns_under_their_names(shared_data_dir):
    corpus = load_corpus(bbc(shared_data_dir), text_template="{title}\n{text}", limit=20)
    frame = corpus.frame
    results = pd.DataFrame(
        {"id": frame["id"], "text": frame["text"], "cluster": np.zeros(20, dtype=np.int64)}
    )
    labels = with_source_columns(results, frame, corpus.stats)
    assert list(labels.columns) == ["engine_id", "engine_text", "cluster", "id", "category", "title", "text"]
    raw = pd.read_csv(bbc(shared_data_dir), nrows=20)
    assert labels["id"].tolist() == raw["id"].tolist()  # as given, not hashed
    assert labels["category"].tolist() == raw["category"].tolist()
    assert labels["text"].tolist() == raw["text"].tolist()
    assert engine_id_column(labels) == "engine_id"


def test_id_column_from_source_and_result_name_clash(tmp_path):
    path = tmp_path / "c.csv"
    pd.DataFrame(
        {
            "row": ["r1", "r2"],
            "cluster": ["a", "b"],
            "title": ["one", "two"],
            "date": ["2024-01-01", "2024-02-01"],
        }
    ).to_csv(path, index=False)
    corpus = load_corpus(path, text_template="{title}", id_column="row")
    results = corpus.frame[["id", "text"]].assign(cluster=[0, -1])
    labels = with_source_columns(results, corpus.frame, corpus.stats)
    assert labels["row"].tolist() == ["r1", "r2"]
    assert labels["source_cluster"].tolist() == ["a", "b"] and labels["cluster"].tolist() == [0, -1]
    assert labels["date"].tolist() == ["2024-01-01", "2024-02-01"]
    assert engine_id_column(labels) == "id" and labels["id"].dtype == np.int64
