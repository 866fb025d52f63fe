"""Beyond one machine: the embed and graph stages on a Ray cluster (``engine run --ray ADDRESS``).

A thin layer over the single-process stages, never a second implementation of them:

- :mod:`engine.distributed.address` checks ``--ray`` and the Milvus it needs (called by engine.config);
- :mod:`engine.distributed.cluster` connects to (or starts) the cluster and describes it (``engine doctor``);
- :mod:`engine.distributed.embed` is the embedding stream: the corpus the engine's reader read, split in
  blocks, a Ray Data ``map_batches`` over an actor pool (one model replica per GPU, or per CPU slot), rows
  upserted into Milvus by the workers; :func:`engine.ingest.ingest` on the driver still owns resume,
  fingerprints and ``embeddings.npy``;
- :mod:`engine.distributed.graph` fans the kNN searches out as Ray tasks, each running
  :func:`engine.graph.milvus_knn.search_rows` on a block of queries; the driver assembles the graph.

Ray is an optional dependency (``pip install 'engine[ray]'``); nothing here imports it at module level.
"""
