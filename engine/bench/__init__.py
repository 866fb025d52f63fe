"""Benchmarks users run on their own data: ``engine bench-index`` (Milvus index sweep).

``index_catalog``: one declarative config class per Milvus index type, sweep parsing, support probe.
``index_bench``: the benchmark (:class:`IndexBench`) and its CLI (``main``/``add_arguments``/``run``).
``plot``: Pareto plots (HTML via plotly, PNG via matplotlib).
"""
