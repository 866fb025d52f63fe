"""MST -> single linkage -> condensed tree -> EOM/leaf selection (+ epsilon), probabilities, GLOSH.

The hierarchy steps reuse fast_hdbscan's numba functions (``fast_hdbscan.cluster_trees``), which
``tests/test_cluster_tree.py`` checks against the ``hdbscan`` library on the same MST. Membership
probabilities and GLOSH outlier scores are computed here, following ``hdbscan``'s definitions,
except that infinite lambdas (zero mutual-reachability distance: duplicate documents) are left
out of each cluster's "death" lambda so that one pair of duplicates does not push every other
member of its cluster to probability 0 / outlier score 1 (``hdbscan`` would give inf/inf = NaN).

Pieces of a disconnected graph (the MST's +inf bridges) are joined just above the largest finite MST
weight (:func:`finite_bridges`), not at lambda = 0: born at zero density, every piece's excess of mass was
measured from 0, so EOM picked the pieces themselves over the clusters inside them (an IVF_FLAT
kNN graph of 100k points with 35 stray small components gave 36 clusters instead of 198).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from fast_hdbscan import cluster_trees as ct


@dataclass(frozen=True)
class CondensedTree:
    """hdbscan's condensed tree as parallel arrays; points are 0..N-1, clusters N.. (root = N)."""

    parent: np.ndarray
    child: np.ndarray
    lambda_val: np.ndarray
    child_size: np.ndarray


@dataclass(frozen=True)
class Hierarchy:
    labels: np.ndarray
    probabilities: np.ndarray
    outlier_scores: np.ndarray
    condensed_tree: CondensedTree
    selected: np.ndarray


@numba.njit(cache=True)
def _finite_deaths(parent, lambda_val, n_nodes):
    """Per cluster: the largest finite lambda among its direct children rows (0 if none)."""
    deaths = np.zeros(n_nodes, dtype=np.float64)
    for r in range(parent.shape[0]):
        lam = lambda_val[r]
        if np.isfinite(lam) and lam > deaths[parent[r]]:
            deaths[parent[r]] = lam
    return deaths


@numba.njit(cache=True)
def glosh_scores(parent, child, lambda_val, n_points):
    """GLOSH: 1 - lambda_point / lambda_max(subtree of the point's cluster), in [0, 1]."""
    if parent.shape[0] == 0:
        return np.zeros(n_points, dtype=np.float32)
    n_nodes = max(parent.max(), child.max()) + 1
    deaths = _finite_deaths(parent, lambda_val, n_nodes)
    # Rows are in BFS order (a cluster's row comes after its parent's), so a reverse sweep over
    # the cluster rows propagates subtree maxima bottom-up, as hdbscan's loop does.
    for r in range(parent.shape[0] - 1, -1, -1):
        c = child[r]
        if c >= n_points and deaths[c] > deaths[parent[r]]:
            deaths[parent[r]] = deaths[c]
    out = np.zeros(n_points, dtype=np.float32)
    for r in range(parent.shape[0]):
        p = child[r]
        if p >= n_points:
            continue
        lam_max = deaths[parent[r]]
        lam = lambda_val[r]
        if lam_max == 0.0 or not np.isfinite(lam):
            out[p] = 0.0
        else:
            out[p] = min(max((lam_max - lam) / lam_max, 0.0), 1.0)
    return out


@numba.njit(cache=True)
def membership_probabilities(parent, child, lambda_val, labels, selected_sorted, n_points):
    """hdbscan's probability: min(lambda_point, lambda_max(cluster)) / lambda_max(cluster)."""
    out = np.zeros(n_points, dtype=np.float32)
    if parent.shape[0] == 0:
        return out
    n_nodes = max(parent.max(), child.max()) + 1
    deaths = _finite_deaths(parent, lambda_val, n_nodes)
    for r in range(parent.shape[0]):
        p = child[r]
        if p >= n_points or labels[p] < 0:
            continue
        lam_max = deaths[selected_sorted[labels[p]]]
        lam = lambda_val[r]
        if lam_max == 0.0 or not np.isfinite(lam):
            out[p] = 1.0
        else:
            out[p] = min(lam, lam_max) / lam_max
    return out


BRIDGE_MARGIN = 1.001


def finite_bridges(mst: np.ndarray, epsilon: float = 0.0) -> np.ndarray:
    """The MST with its +inf bridge edges set just above its largest finite weight and ``epsilon``.

    Why: an approximate or short kNN graph is often disconnected only because the edges between
    its pieces were never searched (an IVF query does not probe far cells), not because the pieces
    are infinitely far apart. Joined at lambda = 0, each piece is a child of the root with birth
    lambda 0, and its stability sum(lambda_p - 0) dwarfs its sub-clusters', so EOM returns the
    pieces (one giant "cluster", no noise). Joined just above the largest known weight instead, the
    pieces merge last, as in a connected graph, and a piece is its own cluster only when it is one
    (noise when smaller than min_cluster_size). Staying above ``cluster_selection_epsilon`` keeps
    the epsilon merge from crossing a bridge (an unknown distance is not known to be < epsilon).
    Returns a copy, or ``mst`` itself when it has no bridge or no positive weight to anchor on.
    """
    weights = mst[:, 2]
    finite = np.isfinite(weights)
    if finite.all():
        return mst
    floor = max(float(weights[finite].max()) if finite.any() else 0.0, float(epsilon))
    if not floor > 0.0:
        return mst
    out = mst.copy()
    # 0.1% above: strictly above after the condensed tree's float32 lambda = 1/d round trip
    out[~finite, 2] = floor * BRIDGE_MARGIN
    return out


def _select(mst, min_cluster_size, method, epsilon, allow_single_cluster):
    """fast_hdbscan's ``clusters_from_spanning_tree`` body, kept here to get the selected node ids."""
    n_points = mst.shape[0] + 1
    # stable sort by weight only, as hdbscan does: equal weights merge in the MST's own order
    sorted_mst = mst[np.argsort(mst[:, 2], kind="stable")]
    linkage = ct.mst_to_linkage_tree(sorted_mst)
    condensed = ct.condense_tree(linkage, min_cluster_size=min_cluster_size)
    cluster_tree = ct.cluster_tree_from_condensed_tree(condensed)
    if method == "eom":
        selected = ct.extract_eom_clusters(
            condensed, cluster_tree, max_cluster_size=np.inf, allow_single_cluster=allow_single_cluster
        )
    elif cluster_tree.parent.shape[0] == 0:
        selected = np.empty(0, dtype=np.int64)
    else:
        selected = ct.cluster_tree_leaves(cluster_tree, n_points)
    if len(selected) > 1 and epsilon > 0.0:
        selected = ct.cluster_epsilon_search(selected, cluster_tree, min_epsilon=epsilon)
    selected = np.asarray(selected, dtype=np.int64)
    labels = ct.get_cluster_label_vector(condensed, selected, epsilon, n_samples=n_points)
    return np.asarray(labels, dtype=np.int64), np.sort(selected), condensed


def hierarchy_from_mst(
    mst: np.ndarray,
    min_cluster_size: int,
    cluster_selection_method: str = "eom",
    cluster_selection_epsilon: float = 0.0,
    allow_single_cluster: bool = False,
) -> Hierarchy:
    """Everything after the MST: labels (-1 noise), probabilities, GLOSH scores, the condensed tree."""
    n_points = mst.shape[0] + 1
    if n_points < 2:
        zeros = np.zeros(n_points, dtype=np.float32)
        empty = np.zeros(0, dtype=np.int64)
        tree = CondensedTree(empty, empty, np.zeros(0), empty)
        return Hierarchy(np.full(n_points, -1, dtype=np.int64), zeros, zeros, tree, empty)
    labels, selected, ctree = _select(
        finite_bridges(mst, cluster_selection_epsilon),
        int(min_cluster_size),
        cluster_selection_method,
        float(cluster_selection_epsilon),
        allow_single_cluster,
    )
    tree = CondensedTree(
        np.asarray(ctree.parent, dtype=np.int64),
        np.asarray(ctree.child, dtype=np.int64),
        np.asarray(ctree.lambda_val, dtype=np.float64),
        np.asarray(ctree.child_size, dtype=np.int64),
    )
    probs = membership_probabilities(tree.parent, tree.child, tree.lambda_val, labels, selected, n_points)
    scores = glosh_scores(tree.parent, tree.child, tree.lambda_val, n_points)
    return Hierarchy(labels, probs, scores, tree, selected)
