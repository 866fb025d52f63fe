"""The run summary: what a run did, printed at the end of every command and saved as summary.json."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from engine.atomic import write_text


@dataclass
class RunSummary:
    """What a run did, printed at the end and saved as summary.json."""

    documents: int = 0
    clusters: int = 0
    noise: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def noise_share(self) -> float:
        return self.noise / self.documents if self.documents else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "documents": self.documents,
            "clusters": self.clusters,
            "noise": self.noise,
            "noise_share": round(self.noise_share, 4),
            "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
            "total_seconds": round(sum(self.stage_seconds.values()), 3),
            "outputs": self.outputs,
            "details": self.details,
        }

    @classmethod
    def of(
        cls,
        labels: pd.DataFrame,
        stage_seconds: dict[str, float],
        details: dict[str, Any],
        min_cluster_size: int,
        corpus: str | None = None,
        ingest: Any = None,
        milvus: str | None = None,
    ) -> RunSummary:
        """The summary of a run from its labels.parquet frame and what its stages reported."""
        cluster_ids = labels["cluster"].to_numpy()
        summary = cls(
            documents=len(labels),
            clusters=int(len(np.unique(cluster_ids[cluster_ids >= 0]))),
            noise=int((cluster_ids < 0).sum()),
            stage_seconds=dict(stage_seconds),
            details=dict(details),
        )
        more = summary.details
        if summary.clusters == 0:
            more["hint"] = zero_cluster_hint(len(labels), int(labels["text"].nunique()), min_cluster_size)
        n = max(len(labels), 1)
        if "assigned" in labels.columns:
            before = summary.noise + int(labels["assigned"].sum())
            more["noise"] = f"{before / n:.1%} before --assign-noise, {summary.noise / n:.1%} after"
        layer_cols = [c for c in labels.columns if c.startswith("layer_")]
        if layer_cols:
            more["layers"] = "; ".join(
                f"{c}: {int(labels[c].max()) + 1} clusters, {float((labels[c] < 0).mean()):.1%} noise"
                for c in layer_cols
            )
        if corpus:
            more["corpus"] = corpus
        if ingest is not None:
            r = ingest
            more["ingest"] = (
                f"{r.n_embedded} embedded ({r.n_changed} of them changed since stored), {r.n_existing} already "
                f"stored, {r.n_vanished} dropped (no longer in the corpus), {r.docs_per_s:.1f} docs/s"
            )
            if r.n_from_milvus:
                more["ingest"] += f"; {r.n_from_milvus} vectors read back from Milvus into embeddings.npy"
        if milvus:
            more["milvus"] = milvus
        return summary

    def write(self, paths: Any) -> None:
        """List the run directory's outputs and save ``summary.json`` (paths: engine.rundir.RunPaths)."""
        for name in (
            "map_html",
            "map_png",
            "report_html",
            "labels",
            "clusters_json",
            "knn_graph",
            "embeddings",
        ):
            path = getattr(paths, name)
            if path.exists():
                self.outputs[path.name] = str(path)
        write_text(paths.summary, json.dumps(self.to_dict(), indent=2))
        self.outputs["summary"] = str(paths.summary)

    def format(self) -> str:
        lines = [
            "",
            "== engine summary ==",
            f"documents     {self.documents:,}",
            f"clusters      {self.clusters:,}",
            f"noise         {self.noise:,} ({self.noise_share:.1%})",
        ]
        for key, value in self.details.items():
            lines.append(f"{key:<13} {value}")
        if self.stage_seconds:
            lines.append("time per stage")
            for stage, seconds in self.stage_seconds.items():
                lines.append(f"  {stage:<11} {seconds:8.1f} s")
            lines.append(f"  {'total':<11} {sum(self.stage_seconds.values()):8.1f} s")
        if self.outputs:
            lines.append("outputs")
            for name, path in self.outputs.items():
                lines.append(f"  {name:<15} {path}")
        return "\n".join(lines)


def zero_cluster_hint(n_documents: int, n_distinct: int, min_cluster_size: int) -> str:
    """Why a run found no cluster, and what to change (shown in the summary instead of a bare 0)."""
    if n_distinct <= 1:
        return (
            f"0 clusters: all {n_documents} documents have the same text, so there is nothing to tell apart; "
            "check --text-template / --text-column"
        )
    if n_documents < 2 * min_cluster_size:
        return (
            f"0 clusters: {n_documents} documents cannot form two groups of --min-cluster-size {min_cluster_size} "
            f"(HDBSCAN needs at least {2 * min_cluster_size}); lower --min-cluster-size (minimum 2) or add documents"
        )
    if n_distinct < 2 * min_cluster_size:
        return (
            f"0 clusters: only {n_distinct} distinct texts among {n_documents} documents; identical texts "
            "fall together, so there is little to split: check the corpus or --text-template"
        )
    return (
        f"0 clusters: no group of {min_cluster_size}+ documents is dense enough; try a smaller "
        "--min-cluster-size or --min-samples, or --cluster-selection-method leaf"
    )
