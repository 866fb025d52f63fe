"""Zero-shot topics: parsing --topics and matching cluster centroids to embedded topic names."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import EngineError
from engine.zeroshot import parse_topics, zero_shot_edits


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


def test_clusters_close_to_a_name_take_it_and_merge():
    rng = np.random.default_rng(0)
    axes = np.eye(6, dtype=np.float32)
    # clusters 0 and 2 lie along axis 0 ("sport"), cluster 1 along axis 1 ("politics"), cluster 3 off both
    labels = np.array([0] * 8 + [1] * 6 + [2] * 4 + [3] * 3 + [-1] * 2)
    direction = {0: 0, 1: 1, 2: 0, 3: 4, -1: 5}
    vectors = np.stack([axes[direction[c]] for c in labels]) + 0.05 * rng.normal(size=(len(labels), 6))
    groups, named, rows = zero_shot_edits(labels, vectors, ["sport", "politics"], axes[:2], threshold=0.5)
    assert groups == [[0, 2]]  # both sport clusters, into the larger one's id
    assert named == {0: "sport", 1: "politics"}
    assert [r["topic"] for r in rows] == ["sport", "politics", "sport", None]  # cluster 3 keeps its own
    assert rows[3]["similarity"] < 0.5 <= min(r["similarity"] for r in rows[:3])
