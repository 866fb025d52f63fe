"""How the communities default was chosen: variants of the primary clustering on the same graphs (issue 19).

For each labelled corpus (MiniLM vectors, exact k=30 graph, as benchmarks/stability.py) and each variant: NMI,
seed ARI (seeds 1, 2, 3 vs 42) and 90 %-subsample ARI. Variants:

* Leiden on the kNN graph (engine.cluster.communities functions): edge weights ``ones`` (the default), ``cos``
  (cosine similarity) or ``fuzzy`` (EVoC's UMAP weights); k=15 instead of 30; the primary picked as the medoid of
  R = 4, 8 (default), 16 runs, or as the run of highest modularity; or the consensus of the 8 runs
  (Lancichinetti & Fortunato, 2012): keep the edges more than ``agree`` of the runs keep inside one community,
  weighted by that share, run Leiden on them (2 runs a round) until the runs agree; or ECG (Poulin &
  Theberge, 2019): every kNN edge weighted by the share of 16 first-level Louvain partitions keeping its ends
  together (at least 0.05), then the medoid of 8 Leiden runs on that weighted graph; or the consensus of 16 runs,
  or of 8 with 8 Leiden runs (not 2) in each later round; or bagging (Dudoit & Fridlyand, 2003): each of 8 (16)
  runs sees a random 90 % (80 %) of the documents, each kNN edge is weighted by the share of the runs that saw
  both ends and kept them together, and the consensus rounds go on from there.
  Or a vote (Dimitriadou et al., 2002) of 8 (16) runs in the medoid's label space: each run's clusters mapped to
  the medoid cluster holding most of their members, each document to the label most runs give it.
* The §12 consensus of 16 node-embedding runs with other final steps: connected components of the edges agreed
  by > 30 % (the §12 default), the same on mutual kNN edges only, and Leiden on the co-association-weighted graph.

    OMP_NUM_THREADS=2 python benchmarks/communities_variants.py  # -> benchmarks/results/communities_variants.json

``--variants`` picks variants by label prefix; ``--subsamples N`` scores N random 90 % subsamples (rng 0..N-1)
instead of one and reports each ARI, their mean and minimum.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from stability import BASE_SEED, CACHE, SEEDS, load  # noqa: E402

from engine.cluster import communities as C  # noqa: E402
from engine.cluster.consensus import coassociation, majority_clusters, run_seeds, vote  # noqa: E402
from engine.graph import exact_knn  # noqa: E402

MCS = 5


def _weighted_graph(idx: np.ndarray, w: np.ndarray):
    import igraph as ig

    n, k = idx.shape
    ok = idx >= 0
    rows = np.repeat(np.arange(n), k)[ok.ravel()]
    a = sp.coo_matrix((w[ok].astype(np.float64), (rows, idx[ok])), shape=(n, n)).tocsr()
    a = sp.triu(a.maximum(a.T), k=1).tocoo()
    g = ig.Graph(n=n, edges=np.column_stack([a.row, a.col]).tolist())
    g.es["weight"] = a.data.tolist()
    return g


def consensus_rounds(
    n: int,
    rows: np.ndarray,
    cols: np.ndarray,
    parts: list[np.ndarray],
    seed: int,
    agree: float,
    max_rounds: int = 4,
    per_round: int = 2,
) -> list[np.ndarray]:
    """Lancichinetti & Fortunato's consensus clustering of raw Leiden partitions; the last round's runs."""
    r, c = rows, cols
    for rnd in range(max_rounds):
        if all(np.array_equal(parts[0], p) for p in parts[1:]):
            break
        share = np.zeros(r.size)
        for p in parts:
            share += p[r] == p[c]
        share /= len(parts)
        keep = share > agree
        r, c, w = r[keep], c[keep], share[keep]
        if np.all(w == 1.0):
            break
        g = C.igraph_from_edges(n, r, c)
        g.es["weight"] = w.tolist()
        parts = [C.leiden(g, 1.0, s, weights="weight") for s in run_seeds(seed + rnd + 1, per_round)]
    return parts


def bagged_parts(idx: np.ndarray, seed: int, runs: int, frac: float) -> list[np.ndarray]:
    """Bagging (Dudoit & Fridlyand, 2003) of Leiden runs: run i sees a random ``frac`` of the documents
    (the kNN edges among them) and gives the others no vote (-1)."""
    n = idx.shape[0]
    rows, cols = C.undirected_edges(idx)
    parts = []
    for s in run_seeds(seed, runs):
        keep = np.random.default_rng(s).random(n) < frac
        m = keep[rows] & keep[cols]
        p = C.leiden(C.igraph_from_edges(n, rows[m], cols[m]), 1.0, s)
        parts.append(np.where(keep, p, -1))
    return parts


def bagged_consensus(idx: np.ndarray, seed: int, runs: int, frac: float, agree: float) -> list[np.ndarray]:
    """Every kNN edge weighted by the share of the runs that saw both ends and kept them together; the edges
    above ``agree`` go on to the consensus rounds (Leiden on the weighted graph until the runs agree)."""
    n = idx.shape[0]
    rows, cols = C.undirected_edges(idx)
    parts = bagged_parts(idx, seed, runs, frac)
    together = np.zeros(rows.size)
    both = np.zeros(rows.size)
    for p in parts:
        seen = (p[rows] >= 0) & (p[cols] >= 0)
        both += seen
        together += seen & (p[rows] == p[cols])
    share = np.where(both > 0, together / np.maximum(both, 1), 0.0)
    keep = share > agree
    g = C.igraph_from_edges(n, rows[keep], cols[keep])
    g.es["weight"] = share[keep].tolist()
    first = [C.leiden(g, 1.0, s, weights="weight") for s in run_seeds(seed + 1, 2)]
    return consensus_rounds(n, rows[keep], cols[keep], first, seed + 1, agree)


def ecg_graph(idx: np.ndarray, seed: int, ensemble: int = 16, w_min: float = 0.05):
    """Poulin & Theberge's ECG (2019): the kNN graph with every edge weighted by the share of ``ensemble``
    first-level Louvain partitions (many small communities) that keep its ends together, floored at ``w_min``."""
    import random

    import igraph as ig

    n = idx.shape[0]
    rows, cols = C.undirected_edges(idx)
    g = C.igraph_from_edges(n, rows, cols)
    share = np.zeros(rows.size)
    for s in run_seeds(seed + 1, ensemble):
        ig.set_random_number_generator(random.Random(s))
        level1 = np.asarray(g.community_multilevel(return_levels=True)[0].membership)
        share += level1[rows] == level1[cols]
    g.es["weight"] = (w_min + (1 - w_min) * share / ensemble).tolist()
    return g


def leiden_variant(
    graph,
    seed: int,
    weights: str = "ones",
    k: int = 30,
    runs: int = 8,
    pick: str = "medoid",
    agree: float = 0.5,
    per_round: int = 2,
):
    idx = np.asarray(graph.indices)[:, :k].astype(np.int64)
    if weights == "ones":
        rows, cols = C.undirected_edges(idx)
        g, attr = C.igraph_from_edges(idx.shape[0], rows, cols), None
    elif weights == "cos":
        g, attr = (
            _weighted_graph(idx, np.clip(1 - np.asarray(graph.distances)[:, :k] ** 2 / 2, 0, 1)),
            "weight",
        )
    else:  # fuzzy: EVoC's symmetric UMAP weights
        from engine.cluster.embedding import fuzzy_graph

        f = sp.triu(fuzzy_graph(graph, 15), k=1).tocoo()
        import igraph as ig

        g = ig.Graph(n=idx.shape[0], edges=np.column_stack([f.row, f.col]).tolist())
        g.es["weight"] = f.data.astype(np.float64).tolist()
        attr = "weight"
    if pick == "ecg":
        g, attr = ecg_graph(idx, seed), "weight"
    if pick.startswith("bagged"):
        frac = float(pick.split(":")[1]) if ":" in pick else 0.9
        parts = bagged_consensus(idx, seed, runs, frac, agree)
        return C.small_to_noise(parts[C.medoid([C.small_to_noise(p, MCS) for p in parts])], MCS)
    parts = [C.leiden(g, 1.0, s, weights=attr) for s in run_seeds(seed, runs)]
    if pick == "consensus":
        rows, cols = C.undirected_edges(idx)
        parts = consensus_rounds(idx.shape[0], rows, cols, parts, seed, agree, per_round=per_round)
    if pick == "vote":
        small = [C.small_to_noise(p, MCS) for p in parts]
        return C.small_to_noise(vote(small, small[C.medoid(small)]), MCS)
    if pick == "modularity":
        best = int(np.argmax([g.modularity(p.tolist(), weights=attr) for p in parts]))
    else:
        best = C.medoid([C.small_to_noise(p, MCS) for p in parts])
    return C.small_to_noise(parts[best], MCS)


def embedding_runs(graph, x: np.ndarray, seed: int) -> list[list[np.ndarray]]:
    from engine.cluster.embedding import embed_graph, fuzzy_graph
    from engine.cluster.layers import build_layers
    from engine.cluster.space import _init_vectors

    fz, init = fuzzy_graph(graph, 15), _init_vectors(x)
    out = []
    for s in run_seeds(seed, 16):
        emb = embed_graph(graph, seed=s, vectors=init, fuzzy=fz).embedding
        out.append(build_layers(emb, min_cluster_size=MCS, min_samples=5, seed=s).labels)
    return out


def consensus_variant(graph, runs: list[list[np.ndarray]], final: str) -> np.ndarray:
    idx = np.asarray(graph.indices).astype(np.int64)
    w = coassociation(idx, [lab for layers in runs for lab in layers])
    if final == "components":
        return majority_clusters(idx, w, MCS, 0.3)
    if final == "mutual_components":
        n, k = idx.shape
        ok = idx >= 0
        rows = np.repeat(np.arange(n), k)[ok.ravel()]
        cols = idx[ok]
        adj = sp.coo_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n)).tocsr()
        mutual = np.zeros(idx.shape, dtype=bool)
        mutual[ok] = np.asarray(adj[cols, rows]).ravel() > 0
        return majority_clusters(np.where(mutual, idx, -1), w, MCS, 0.3)
    g = _weighted_graph(idx, w)  # leiden on the co-association graph
    return C.small_to_noise(C.leiden(g, 1.0, 0, weights="weight"), MCS)


def corpus_rows(name: str, leiden: dict[str, dict], consensus: tuple[str, ...], subsamples: int = 1) -> dict:
    """Every variant's NMI, seed ARI and subsample ARI on one corpus."""
    from tests.fixtures.data import minilm_embed

    texts, classes = load(name)
    x = minilm_embed(texts, CACHE)
    subs = [
        np.sort(np.random.default_rng(r).choice(len(x), int(0.9 * len(x)), replace=False))
        for r in range(subsamples)
    ]
    graph = exact_knn(x, 30, progress=False)
    sub_graphs = [exact_knn(np.ascontiguousarray(x[sub]), 30, progress=False) for sub in subs]
    rows = {}

    def score(fn, label):
        base = fn(graph, x, BASE_SEED)
        sub_ari = [
            round(float(adjusted_rand_score(base[sub], fn(sg, x[sub], BASE_SEED))), 4)
            for sub, sg in zip(subs, sub_graphs, strict=True)
        ]
        r = {
            "nmi": round(float(normalized_mutual_info_score(classes, base)), 4),
            "clusters": int(base.max()) + 1,
            "seed_ari": [round(float(adjusted_rand_score(base, fn(graph, x, s))), 4) for s in SEEDS],
            "subsample_ari": sub_ari[0] if subsamples == 1 else sub_ari,
        }
        if subsamples > 1:
            r["subsample_ari_mean"] = round(float(np.mean(sub_ari)), 4)
            r["subsample_ari_min"] = float(min(sub_ari))
        print(f"{name:15s} {label:36s} {json.dumps(r)}", flush=True)
        rows[label] = r

    for label, kw in leiden.items():
        score(lambda g, _x, s, kw=kw: leiden_variant(g, s, **kw), label)
    cache: dict = {}

    def runs_of(g, xx, s):
        key = (id(g), s)
        if key not in cache:
            cache[key] = embedding_runs(g, xx, s)
        return cache[key]

    for final in consensus:
        score(
            lambda g, xx, s, final=final: consensus_variant(g, runs_of(g, xx, s), final),
            f"consensus16 {final}",
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="bbc,ag,stackoverflow,searchsnippets")
    parser.add_argument("--out", default=str(HERE / "results" / "communities_variants.json"))
    parser.add_argument("--variants", default="", help="comma-separated label prefixes (default: all)")
    parser.add_argument(
        "--subsamples", type=int, default=1, help="random 90 %% subsamples scored (rng 0..N-1)"
    )
    args = parser.parse_args(argv)
    if args.subsamples < 1:
        raise SystemExit(f"error: --subsamples must be >= 1, got {args.subsamples}")
    leiden = {
        "leiden ones k30 medoid8 (default until Dec 8)": {},
        "leiden cos": {"weights": "cos"},
        "leiden fuzzy": {"weights": "fuzzy"},
        "leiden k15": {"k": 15},
        "leiden medoid4": {"runs": 4},
        "leiden medoid16": {"runs": 16},
        "leiden best-modularity8": {"pick": "modularity"},
        "leiden consensus8 agree>0.5": {"pick": "consensus"},
        "leiden consensus8 agree>0": {"pick": "consensus", "agree": 0.0},
        "leiden ecg16 medoid8": {"pick": "ecg"},
        "leiden vote8 (default)": {"pick": "vote"},
        "leiden vote16": {"pick": "vote", "runs": 16},
        "leiden consensus16 agree>0": {"pick": "consensus", "agree": 0.0, "runs": 16},
        "leiden consensus8x8 agree>0": {"pick": "consensus", "agree": 0.0, "per_round": 8},
        "leiden bagged8 90% agree>0.5": {"pick": "bagged:0.9"},
        "leiden bagged8 90% agree>0": {"pick": "bagged:0.9", "agree": 0.0},
        "leiden bagged16 90% agree>0.5": {"pick": "bagged:0.9", "runs": 16},
        "leiden bagged8 80% agree>0.5": {"pick": "bagged:0.8"},
    }
    consensus = ("components", "mutual_components", "leiden_on_coassociation")
    wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
    if wanted:
        leiden = {label: kw for label, kw in leiden.items() if any(label.startswith(w) for w in wanted)}
        consensus = tuple(f for f in consensus if any(f"consensus16 {f}".startswith(w) for w in wanted))
    report: dict = {
        "what": __doc__.splitlines()[0],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "subsamples": args.subsamples,
        "loadavg_start": os.getloadavg(),
    }
    report["datasets"] = {}
    for name in [d for d in args.datasets.split(",") if d]:
        report["datasets"][name] = corpus_rows(name, leiden, consensus, args.subsamples)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
