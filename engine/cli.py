"""Command line: ``engine run CORPUS --out DIR`` and one subcommand per stage.

Options come from the settings model in engine.config (flags, help, choices and types are derived from
it). Precedence: built-in defaults < the run directory's saved ``run.toml`` (stage subcommands only) <
``--config FILE.toml`` < ``ENGINE_<FIELD>`` / ``MILVUS_URI`` / ``MILVUS_TOKEN`` < flags on the command line.
User errors print one ``error: ...`` line and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from engine import __version__
from engine.atomic import atomic_output
from engine.config import (
    DICT_FIELDS,
    NONE_WORDS,
    RUN_CONFIG_NAME,
    SECTIONS,
    EngineConfig,
    choices_of,
    field_info,
    flag_of,
    parse_json_option,
    resolve_config,
)
from engine.errors import EngineError
from engine.logs import quiet_libraries
from engine.rundir import RunLock

log = logging.getLogger("engine")


def _int_or_none(value: str) -> int | None:
    return None if value.lower() in NONE_WORDS else int(value)


def _columns(value: str) -> list[str]:
    return [c.strip() for c in value.split(",") if c.strip()]


def _argparse_kwargs(name: str) -> dict[str, Any]:
    """argparse settings of one model field: its help, choices and parser from the field's type."""
    info = field_info(name)
    annotation = str(info.annotation)
    kwargs: dict[str, Any] = {"help": info.description, "dest": name, "default": argparse.SUPPRESS}
    choices = choices_of(name)
    if choices:
        kwargs["choices"] = choices
    elif info.annotation is bool:
        kwargs["action"] = "store_true"
    elif "int" in annotation:
        kwargs["type"] = _int_or_none if "None" in annotation else int
    elif "float" in annotation:
        kwargs["type"] = float
    elif "list" in annotation:
        kwargs["type"] = _columns
    return kwargs


def stage_options(stage: str) -> list[tuple[str, list[tuple[tuple[str, ...], dict[str, Any]]]]]:
    """(group title, [(flags, argparse kwargs)]) of the model's sections this subcommand shows.

    Derived from the settings model: a field ``min_cluster_size`` is ``--min-cluster-size``, with the
    aliases in its ``flags`` metadata; the corpus file itself is a positional argument.
    """
    groups = []
    for section, model in SECTIONS.items():
        if stage not in model.STAGES:
            continue
        options = []
        for name, info in model.model_fields.items():
            if name == "corpus":
                continue
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            flags = (flag_of(name), *extra.get("flags", ()))  # type: ignore[misc]
            options.append((flags, _argparse_kwargs(name)))
        groups.append((f"{section} options", options))
    if stage in EngineConfig.SEED_STAGES:
        groups.append(("seed options", [((flag_of("seed"),), _argparse_kwargs("seed"))]))
    return groups


STAGES = ("run", "embed", "graph", "cluster", "map", "report")
STAGE_HELP = {
    "run": "run every stage: corpus -> embed -> Milvus -> kNN graph -> cluster layers -> map -> report",
    "embed": "read the corpus and embed it into Milvus and DIR/embeddings.npy (resumable)",
    "graph": "build the kNN graph DIR/knn_graph.npz (Milvus search, or the partitioned join from 100k documents)",
    "cluster": "cluster layers on a node embedding of the saved kNN graph (or HDBSCAN* on the graph) -> DIR/clusters.npz",
    "map": "UMAP 2-D coordinates from the saved kNN graph -> DIR/coords.npy",
    "report": "labels.parquet, clusters.json, report.html, map.html, map.png from saved stages",
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one ``error: ...`` line (exit 2) like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="engine",
        description="Cluster a text corpus by meaning: embeddings -> Milvus -> kNN graph -> node embedding + "
        "cluster layers -> map + report.",
    )
    parser.add_argument("--version", action="version", version=f"engine {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for stage in STAGES:
        p = sub.add_parser(stage, help=STAGE_HELP[stage], description=STAGE_HELP[stage])
        if stage in ("run", "embed"):
            p.add_argument(
                "corpus", nargs="?", default=argparse.SUPPRESS, help=field_info("corpus").description
            )
        p.add_argument("--out", "-o", default=argparse.SUPPRESS, help=field_info("out").description)
        p.add_argument(
            "--config", default=argparse.SUPPRESS, help="TOML file with options (flags override it)"
        )
        p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or stage logs")
        p.add_argument(
            "--verbose",
            "-v",
            action="store_true",
            help="also the libraries' own messages (Milvus, Faiss, gRPC)",
        )
        for title, options in stage_options(stage):
            g = p.add_argument_group(title)
            for flags, kwargs in options:
                g.add_argument(*flags, **kwargs)
    _add_tool_parsers(sub)
    _add_use_parsers(sub)
    return parser


def _add_use_parsers(sub: argparse._SubParsersAction) -> None:
    """Commands that use a finished run: place new documents, search within clusters."""
    help_ = "place new documents in a finished run's clusters (DIR/assigned/NAME.parquet)"
    p = sub.add_parser("assign", help=help_, description=help_)
    p.add_argument("corpus", help="CSV, TSV, Parquet or JSON-lines file, read with the run's corpus options")
    p.add_argument("--out", "-o", default="out", help="the run directory (default ./out)")
    p.add_argument("--k", type=int, default=15, help="stored neighbours that vote per document (default 15)")
    p.add_argument(
        "--store",
        action="store_true",
        help="also insert them (with their labels) into the run's Milvus collection",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress or stage logs")
    help_ = "nearest documents to a query, optionally within one cluster (a Milvus filter)"
    p = sub.add_parser("search", help=help_, description=help_)
    p.add_argument("query", help="the query text")
    p.add_argument("--out", "-o", default="out", help="the run directory (default ./out)")
    p.add_argument("--k", type=int, default=10, help="documents to return (default 10)")
    p.add_argument("--cluster", type=int, default=None, help="only documents of this cluster")
    p.add_argument("--filter", default="", help="any Milvus boolean expression, e.g. 'layer_1 == 2'")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    p.add_argument("--quiet", "-q", action="store_true", help="no stage logs")
    help_ = "HTTP server on a finished run: search and assign with the model loaded once (JSON in/out)"
    p = sub.add_parser("serve", help=help_, description=help_)
    p.add_argument("--out", "-o", default="out", help="the run directory (default ./out)")
    p.add_argument("--config", default=None, help="TOML file with options (flags override it)")
    p.add_argument("--quiet", "-q", action="store_true", help="no stage logs")
    for title, options in stage_options("serve"):
        g = p.add_argument_group(title)
        for flags, kwargs in options:
            g.add_argument(*flags, **kwargs)


def _run_serve(args: argparse.Namespace) -> int:
    """``engine serve``: load once, answer until Ctrl+C / SIGTERM (engine.serve)."""
    from engine.pipeline import Pipeline
    from engine.rundir import reading
    from engine.serve import Service, make_server

    given = {k: v for k, v in vars(args).items() if k in ("host", "port")}
    config = _saved_config(args.out, given, config_file=args.config)
    uri = _configured_milvus_uri(config)
    with reading(config.out_dir, "serve", uri) as use_uri, Pipeline(config, progress=False) as pipe:
        if use_uri != uri:
            pipe.use_milvus_uri = use_uri
        service = Service(pipe)
        server = make_server(service, config.serve.host, config.serve.port)
        host, port = server.server_address[:2]
        print(
            f"engine serve: model and collection loaded in {service.load_s:.1f} s; listening on "
            f"http://{host}:{port} (GET /health, POST /search, POST /assign); Ctrl+C stops",
            file=sys.stderr,
            flush=True,
        )
        try:
            server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            print("engine serve: stopped", file=sys.stderr)
        finally:
            server.server_close()
            service.close()
    return 0


def _saved_config(
    out: str, flags: dict[str, Any] | None = None, config_file: str | None = None
) -> EngineConfig:
    """The finished run's configuration (+ ``flags``); the options are checked first (cheap, no run needed)."""
    config = resolve_config({"out": out, **(flags or {})}, config_file=config_file)
    saved = Path(out) / RUN_CONFIG_NAME
    if not saved.exists():
        raise EngineError(f"{saved} not found: `engine run CORPUS --out {out}` first")
    return config


def _run_use(args: argparse.Namespace) -> int:
    """``engine assign`` and ``engine search`` on a finished run."""
    import json

    from engine.pipeline import Pipeline
    from engine.rundir import reading

    config = _saved_config(args.out)
    if args.command == "search":
        from engine.stages import check_search

        check_search(args.query, args.k)
    uri = _configured_milvus_uri(config)
    writes = args.command == "assign" and args.store
    with (
        reading(config.out_dir, args.command, uri, writes=writes) as use_uri,
        Pipeline(config, progress=not args.quiet) as pipe,
    ):
        if use_uri != uri:
            pipe.use_milvus_uri = use_uri
        if args.command == "search":
            hits = pipe.search(args.query, k=args.k, cluster=args.cluster, filter=args.filter)
            if not args.quiet:
                _print_cost(pipe, "search", args.out)
            if args.json:
                for row in hits.to_dict(orient="records"):
                    print(json.dumps(row, ensure_ascii=False, default=str))
            else:
                for row in hits.itertuples(index=False):
                    text = " ".join(str(row.text).split())
                    print(f"{row.score:7.3f}  cluster {row.cluster:>4}  id {row.id:<20} {text[:100]}")
                where = f" in cluster {args.cluster}" if args.cluster is not None else ""
                print(f"{len(hits)} documents{where}", file=sys.stderr)
            return 0
        from engine.corpus import load_corpus, with_source_columns

        corpus = load_corpus(
            args.corpus,
            text_template=config.corpus.text_template,
            text_column=config.corpus.text_column,
            id_column=config.corpus.id_column,
            empty=config.corpus.empty,
            fmt=config.corpus.format,
            encoding=config.corpus.encoding,
            column_names=config.corpus.columns,
        )
        name = Path(args.corpus).name.split(".")[0] or "new"
        out = pipe.assign(corpus.frame, k=args.k, store=args.store, source=Path(args.corpus).name)
        if not args.quiet:
            _print_cost(pipe, "assign", args.out)
        out = with_source_columns(out, corpus.frame, corpus.stats)
        path = Path(args.out) / "assigned" / f"{name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:
            out.to_parquet(tmp, index=False)
        placed = int((out["cluster"] >= 0).sum()) if "cluster" in out else 0
        reasons = out["cluster_reason"].value_counts().to_dict() if "cluster_reason" in out else {}
        print(
            f"engine assign: {len(out)} documents, {placed} placed in clusters, {len(out) - placed} noise "
            f"({', '.join(f'{k} {v}' for k, v in reasons.items())}){'; stored in Milvus' if args.store else ''}\n"
            f"  {path}"
        )
    return 0


def _configured_milvus_uri(config: EngineConfig) -> str:
    """The finished run's Milvus (the embedded choice is the store already in the directory)."""
    from engine.milvus.embedded import choose_embedded_milvus

    return config.store.explicit_milvus_uri or choose_embedded_milvus(config.out_dir, 0)


def _print_cost(pipe: Any, what: str, out: str) -> None:
    """What one call cost: most of it is loading the model, which `engine serve` does once."""
    load, call = pipe.timings_.get("model load", 0.0), pipe.timings_.get(what, 0.0)
    print(
        f"engine {what}: model load {load:.1f} s, {what} {call:.1f} s "
        f"(`engine serve --out {out}` loads the model once for many calls)",
        file=sys.stderr,
    )


def _add_tool_parsers(sub: argparse._SubParsersAction) -> None:
    """Subcommands owned by other modules, which parse their own arguments."""
    p = sub.add_parser("bench-index", help="benchmark Milvus index types on your own vectors", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p = sub.add_parser("doctor", help="what this machine offers and what 'auto' will choose", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)


def config_from_args(args: argparse.Namespace) -> EngineConfig:
    """Defaults < saved run.toml (stage re-runs) < --config < environment < command-line flags."""
    given = {k: v for k, v in vars(args).items() if k not in ("command", "quiet", "verbose", "config")}
    for name in DICT_FIELDS:
        if name in given:
            given[name] = parse_json_option(given[name], name.replace("_", "-"))
    return resolve_config(given, config_file=getattr(args, "config", None), saved_run=args.command != "run")


def _setup_logging(quiet: bool, verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet and not verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    quiet_libraries(not verbose)


def _run_stage(args: argparse.Namespace) -> int:
    from engine.pipeline import Pipeline

    config = config_from_args(args)
    pipe = Pipeline(config, progress=not args.quiet)
    steps: dict[str, list[Callable[[], Any]]] = {
        "run": [pipe.run],
        "embed": [pipe.load_corpus, pipe.embed],
        "graph": [pipe.build_graph],
        "cluster": [pipe.cluster, pipe.store_cluster_labels],
        "map": [pipe.project],
        "report": [pipe.report, pipe.store_labels],
    }
    if args.command == "embed" and config.corpus.corpus is None:
        raise EngineError("engine embed needs the corpus file: engine embed CORPUS --out DIR")
    if args.command == "run" and config.corpus.corpus is None:
        raise EngineError("engine run needs the corpus file: engine run CORPUS --out DIR")
    with RunLock(config.out_dir, args.command), pipe:
        if args.command != "run":
            config.save(config.out_dir / RUN_CONFIG_NAME)
        for step in steps[args.command]:
            step()
    if args.command in ("run", "report"):
        print(pipe.summary().format())
        if args.command == "run" or pipe.paths.map_html.exists():
            print(f"\nopen the map: {pipe.paths.map_html.resolve()}")
    else:
        done = ", ".join(f"{k} {v:.1f} s" for k, v in pipe.timings_.items())
        print(f"engine {args.command}: done ({done}); outputs in {config.out_dir}")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Tools with their own argument parsers get the rest of the command line untouched.
    if argv[0] == "bench-index":
        from engine.bench.index_bench import main as bench_main

        _setup_logging(False)
        return bench_main(argv[1:])
    if argv[0] == "doctor":
        from engine.doctor import main as doctor_main

        return doctor_main(argv[1:])
    args = parser.parse_args(argv)
    _setup_logging(getattr(args, "quiet", False), getattr(args, "verbose", False))
    # SIGTERM (kill, a scheduler's timeout) ends the command like Ctrl+C: stages stop, the run directory
    # lock and the engine-run Milvus server are released on the way out.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        if args.command in ("assign", "search"):
            return _run_use(args)
        if args.command == "serve":
            return _run_serve(args)
        return _run_stage(args)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: re-run the same command to resume where it stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
