"""The embedding stream on a Ray cluster: Ray Data ``map_batches`` over an actor pool of model replicas.

:func:`engine.ingest.ingest` on the driver keeps everything it owns (which documents still need a vector:
Milvus ids, fingerprints of the text, rows already on disk; ``embeddings.npy`` in corpus order; the
``complete`` flag). It hands the documents to embed to :meth:`RayEncoder.stream`, which

1. splits them in blocks of ``--ray-block`` documents (``ray.data.from_pandas``: the corpus was read by
   the engine's own reader, so formats, template, dedupe and validation are the single-process ones);
2. runs :class:`EmbedWorker` on each block in an actor pool (one replica per GPU, or per CPU): the
   engine's encoder (length-sorted, token-budgeted batches within each sorting window of the block, as
   on the single-process path: blocks of a multiple of ``SORT_WINDOW`` give bit-identical vectors), then an *upsert* of the
   block's rows into Milvus from the worker, so a block Ray retries after a lost worker rewrites its rows
   and never duplicates them;
3. yields each finished block to the driver, which writes its vectors to ``embeddings.npy`` (fsync) and
   then appends one line to ``ray_blocks.jsonl``.

A driver killed mid-run loses no finished block: a re-run asks Milvus which ids it holds and which rows
are on disk (ingest's rule), so only unfinished blocks are embedded again; a row a worker stored but the
driver never wrote is read back from Milvus into the file (neither embedded nor written to Milvus twice).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger("engine")


#: What one model replica of the embedding actor pool asks Ray for (engine doctor --ray says it).
EMBED_RESOURCES_NOTE = "1 GPU + 1 CPU per model replica on a cluster with GPUs, else 1 CPU"


def _resources(gpus: float) -> dict[str, Any]:
    """One model replica per GPU when the cluster has GPUs, else per CPU."""
    return {"num_gpus": 1, "num_cpus": 1} if gpus >= 1 else {"num_cpus": 1}


def _use_assigned_cpus() -> None:
    """Torch intra-op threads = the CPUs Ray gave this worker (not every core of the node)."""
    import ray
    import torch

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))


def _identify(settings: Any) -> tuple[str, int, str]:
    """(model name, dim, device) as a worker loads it: the model must be reachable from the workers."""
    from engine.stages import load_encoder

    _use_assigned_cpus()
    encoder = load_encoder(settings)
    return str(encoder.name), int(encoder.dim), str(encoder.device)


class EmbedWorker:
    """A Ray Data actor: one model replica; embeds a block, upserts its rows into Milvus, returns the vectors."""

    def __init__(self, settings: Any, store_kwargs: dict[str, Any], window: int) -> None:
        from engine.milvus.store import MilvusStore
        from engine.stages import load_encoder

        _use_assigned_cpus()
        self.encoder = load_encoder(settings)
        self.store = MilvusStore(**store_kwargs)
        self.window = int(window)
        self.pid = os.getpid()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch["text"]]
        t = time.perf_counter()
        vectors = np.empty((len(texts), self.encoder.dim), dtype=np.float32)
        for start, vec in self.encoder.iter_encode(texts, window=self.window):
            vectors[start : start + len(vec)] = vec
        insert = np.asarray(batch["insert"], dtype=bool)
        if insert.any():
            rows = np.flatnonzero(insert)
            self.store.upsert(np.asarray(batch["id"])[rows], vectors[rows], [texts[i] for i in rows])
        n = len(texts)
        return {
            "row": np.asarray(batch["row"], dtype=np.int64),
            "vector": vectors,
            "worker": np.full(n, self.pid, dtype=np.int64),
            "seconds": np.full(n, time.perf_counter() - t, dtype=np.float64),
        }


class RayEncoder:
    """Stands in for the encoder in :func:`engine.ingest.ingest`: names the model, embeds on the cluster.

    ``replicas`` model replicas (default one per GPU, else per CPU of the cluster), blocks of ``block``
    documents, one line per finished block in ``ledger``.
    """

    def __init__(
        self,
        settings: Any,
        gpus: float,
        replicas: int,
        block: int,
        ledger: Path,
        progress: bool = True,
    ) -> None:
        from engine.distributed.cluster import import_ray

        self.ray = import_ray()
        self.settings = settings
        self.resources = _resources(gpus)
        self.replicas = int(replicas)
        self.block = int(block)
        self.ledger = Path(ledger)
        self.progress = progress
        ident = self.ray.remote(**self.resources)(_identify)
        self.name, self.dim, worker_device = self.ray.get(ident.remote(settings))
        per = "GPU" if "num_gpus" in self.resources else "CPU"
        self.device = f"ray: {self.replicas} replica(s) x 1 {per}, {worker_device}"
        self.blocks_done = 0
        self.seconds_in_workers = 0.0

    def stream(
        self, store: Any, ids: np.ndarray, texts: list[str], insert: np.ndarray, window: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(rows, vectors)`` block by block (any order); rows index ``ids``/``texts``.

        ``window``: the documents length-sorted together, counted from each block's start (ingest's).

        Rows where ``insert`` is set are upserted into Milvus by the worker before the block is yielded.
        """
        n = len(ids)
        n_blocks = -(-n // self.block)
        # one header line per run, also when there is nothing to embed
        with open(self.ledger, "a", encoding="utf-8") as ledger:
            ledger.write(json.dumps({"start": time.time(), "documents": n, "blocks": n_blocks}) + "\n")
        if n == 0:
            return
        import ray.data

        frame = pd.DataFrame(
            {
                "row": np.arange(n, dtype=np.int64),
                "id": np.asarray(ids, dtype=np.int64),
                "text": list(texts),
                "insert": np.asarray(insert, dtype=bool),
            }
        )
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        # one DataFrame per block: the block is the unit of work, retry and resume
        ds = ray.data.from_pandas([frame.iloc[s : s + self.block] for s in range(0, n, self.block)])
        out = ds.map_batches(
            EmbedWorker,
            fn_constructor_kwargs={
                "settings": self.settings,
                "store_kwargs": store.connection_kwargs(),
                "window": window,
            },
            batch_size=self.block,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=min(self.replicas, n_blocks)),
            # A lost worker: Ray Data's actor pool restarts the actor and runs its block again (its defaults,
            # max_restarts=-1 and max_task_retries=-1, in Ray 2.60); the upsert makes the rerun safe.
            **self.resources,
        )
        with open(self.ledger, "a", encoding="utf-8") as ledger:
            # (ingest's progress bar counts the rows)
            for batch in out.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
                rows = np.asarray(batch["row"], dtype=np.int64)
                if not len(rows):
                    continue
                yield rows, np.asarray(batch["vector"], dtype=np.float32)
                # back here once the driver wrote the block's vectors to disk (fsync)
                seconds = float(batch["seconds"][0])
                self.blocks_done += 1
                self.seconds_in_workers += seconds
                ledger.write(
                    json.dumps(
                        {
                            "rows": [int(rows.min()), int(rows.max())],
                            "documents": len(rows),
                            "worker": int(batch["worker"][0]),
                            "seconds": round(seconds, 3),
                            "t": round(time.time(), 3),
                        }
                    )
                    + "\n"
                )
                ledger.flush()
