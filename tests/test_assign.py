"""The assignment rule (engine.assign) and topics-over-time binning (engine.timeline) on plain arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engine.assign import assigned_ids, label_columns, lookup_labels, neighbour_radius, vote
from engine.timeline import choose_period, topics_over_time

MISSING = np.iinfo(np.int64).min


def test_vote_duplicate_far_vote_disagree_noise():
    labels = np.array(
        [
            [4, 1, 1, 1],  # duplicate of a cluster-4 document
            [2, 2, 2, 2],  # all agree but far
            [3, 3, 3, 5],  # clear vote
            [1, 2, 3, -1],  # disagree
            [-1, -1, -1, 2],  # noise wins
        ]
    )
    dist = np.array(
        [[0.01, 0.3, 0.3, 0.3], [0.9, 0.95, 1.0, 1.0], [0.2, 0.2, 0.3, 0.3], [0.2] * 4, [0.2] * 4]
    )
    result = vote(labels, dist, radius=0.5, m=3)
    assert result.label.tolist() == [4, -1, 3, -1, -1]
    assert result.reason.tolist() == ["duplicate", "far", "vote", "disagree", "noise"]
    assert result.confidence[0] == 1.0 and result.confidence[1] == 0.0
    assert 0.7 < result.confidence[2] < 0.8 and result.confidence[3] == pytest.approx(0.25)


def test_unknown_neighbours_do_not_vote():
    labels = np.array([[MISSING, 6, 6, 6]])
    dist = np.array([[0.0, 0.2, 0.2, np.inf]])
    result = vote(labels, dist, radius=0.5, m=2)
    assert result.label.tolist() == [6] and result.reason.tolist() == ["vote"]


def test_lookup_radius_ids_and_label_columns():
    got = lookup_labels(np.array([[30, 10, 99, -1]]), np.array([10, 20, 30]), np.array([1, 2, 3]))
    assert got.tolist() == [[3, 1, MISSING, MISSING]]
    d = np.tile(np.linspace(0.1, 1.0, 10), (100, 1)) * np.linspace(1, 2, 100)[:, None]
    labels = np.r_[np.zeros(50, int), -np.ones(50, int)]
    assert neighbour_radius(d, labels, 3) == pytest.approx(np.quantile(d[:50, 2], 0.95))
    a = assigned_ids(pd.Series(["x", "y"]), "new.csv")
    assert (a == assigned_ids(pd.Series(["x", "y"]), "new.csv")).all() and a[0] != a[1] and (a >= 0).all()
    frame = pd.DataFrame(
        {"layer_10": [3], "layer_2": [1], "cluster": [0], "layer_0": [2], "cluster_name": ["a"], "x": [0]}
    )
    assert label_columns(frame) == ["cluster", "layer_0", "layer_2", "layer_10"]


def test_period_by_span_and_counts():
    days = pd.Series(pd.to_datetime(["2024-04-01", "2024-04-02", "2024-04-02", "2024-04-05"], utc=True))
    assert choose_period(days) == "day"
    assert choose_period(pd.Series(pd.date_range("2023-01-01", periods=50, freq="7D", tz="UTC"))) == "week"
    assert choose_period(pd.Series(pd.date_range("2015-01-01", periods=50, freq="90D", tz="UTC"))) == "month"
    result = topics_over_time(np.array([0, 0, 1, -1]), days, "date")
    assert result["periods"] == ["2024-04-01", "2024-04-02", "2024-04-03", "2024-04-04", "2024-04-05"]
    assert result["clusters"] == {"0": [1, 1, 0, 0, 0], "1": [0, 1, 0, 0, 0]}
    assert result["noise"] == [0, 0, 0, 0, 1]
