"""Cluster stage: HDBSCAN* on the sparse kNN graph (CPU, O(N*k) memory) or cuML on a GPU."""

from engine.cluster.graph_hdbscan import ClusterResult, GraphHDBSCAN, cluster_graph

__all__ = ["ClusterResult", "GraphHDBSCAN", "cluster_graph"]
