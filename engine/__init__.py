"""engine: cluster large text corpora by meaning.

Data flow, one module (or sub-package) per stage::

    corpus  ->  embed  ->  store (Milvus)  ->  graph (CSR kNN)  ->  cluster (HDBSCAN)
            ->  project (UMAP map)  ->  report
"""

__version__ = "0.1.0"
