"""Sweeps of index configs for ``engine bench-index``: specs, TOML files, support checks.

The index types themselves (parameters, defaults, sweep ranges) are in :mod:`engine.milvus.indexes`.
A sweep spec such as ``HNSW:M=16,32:efConstruction=200:ef=32,64,128`` expands to the cartesian
product of configs.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from engine.errors import EngineError
from engine.milvus.indexes import IndexConfig, ParamValue, get_index_class


def _param_names(cls: type[IndexConfig]) -> tuple[str, ...]:
    return cls.BUILD + cls.SEARCH


def _coerce(cls: type[IndexConfig], name: str, raw: Any) -> ParamValue:
    """Convert one raw value (str from the CLI, or a TOML scalar) to the field's type."""
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    default = field.default
    try:
        if isinstance(default, bool):
            return str(raw).lower() in ("1", "true", "yes")
        if isinstance(default, int):
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError(raw)
            return int(str(raw).strip()) if isinstance(raw, str) else int(raw)
        if isinstance(default, float):
            return float(raw)
        return str(raw).strip().lower() if str(default).lower() in ("true", "false") else str(raw).strip()
    except (TypeError, ValueError):
        raise EngineError(
            f"{cls.index_type}: parameter {name}={raw!r} is not a valid {type(default).__name__}"
        ) from None


def _resolve_name(cls: type[IndexConfig], name: str) -> str:
    names = _param_names(cls)
    lookup = {n.lower(): n for n in names}
    real = lookup.get(name.strip().lower())
    if real is None:
        known = ", ".join(names) or "none"
        raise EngineError(f"{cls.index_type}: unknown parameter {name.strip()!r} (known: {known})")
    return real


def expand(
    index_type: str, values: dict[str, Sequence[Any]] | None = None, *, use_sweep: bool = False
) -> list[IndexConfig]:
    """Cartesian product of parameter values for one type; missing params use defaults (or SWEEP ranges)."""
    cls = get_index_class(index_type)
    grid: dict[str, list[ParamValue]] = {}
    if use_sweep:
        grid.update({name: list(vals) for name, vals in cls.SWEEP.items()})
    for name, vals in (values or {}).items():
        real = _resolve_name(cls, name)
        vals = list(vals) if isinstance(vals, list | tuple) else [vals]
        if not vals:
            raise EngineError(f"{cls.index_type}: parameter {real} has no values")
        grid[real] = [_coerce(cls, real, v) for v in vals]
    names = list(grid)
    configs = []
    seen = set()
    for combo in itertools.product(*(grid[n] for n in names)):
        cfg = cls(**dict(zip(names, combo, strict=True)))
        key = (cfg.build_key(), tuple(sorted(cfg.search_params().items())))
        if key not in seen:
            seen.add(key)
            configs.append(cfg)
    return configs


def parse_spec(spec: str) -> list[IndexConfig]:
    """Parse one sweep spec: ``TYPE[:sweep][:param=v1,v2]...``.

    ``TYPE`` alone is the default config; ``TYPE:sweep`` uses the catalogue's sweep ranges,
    explicit ``param=...`` items override them.
    """
    parts = [p for p in spec.strip().split(":")]
    if not parts or not parts[0].strip():
        raise EngineError(f"empty index spec {spec!r}")
    index_type = parts[0]
    cls = get_index_class(index_type)
    use_sweep = False
    values: dict[str, list[str]] = {}
    for item in parts[1:]:
        item = item.strip()
        if not item:
            continue
        if item.lower() == "sweep":
            use_sweep = True
            continue
        if "=" not in item:
            raise EngineError(f"{cls.index_type}: expected param=value in index spec, got {item!r}")
        name, _, raw = item.partition("=")
        real = _resolve_name(cls, name)
        vals = [v.strip() for v in raw.split(",") if v.strip()]
        if not vals:
            raise EngineError(f"{cls.index_type}: parameter {real} has no values in {spec!r}")
        values[real] = vals
    return expand(cls.index_type, values, use_sweep=use_sweep)


def parse_specs(specs: Iterable[str]) -> list[IndexConfig]:
    """Parse several specs (each may also hold several specs separated by whitespace)."""
    configs: list[IndexConfig] = []
    for spec in specs:
        for one in str(spec).split():
            configs.extend(parse_spec(one))
    if not configs:
        raise EngineError("no index configs given (--index)")
    return _dedupe(configs)


def load_sweep_toml(path: str | os.PathLike) -> list[IndexConfig]:
    """Load a sweep from TOML.

    Either an array of tables ``[[index]]`` with ``type = "HNSW"`` (plus ``sweep = true`` and
    params as scalars or lists), or one table per type: ``[HNSW]`` ``M = [16, 32]``.
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EngineError(f"index sweep file not found: {p}") from None
    except tomllib.TOMLDecodeError as exc:
        raise EngineError(f"{p}: invalid TOML: {exc}") from None
    entries: list[tuple[str, dict[str, Any]]] = []
    for key, value in data.items():
        if key == "index":
            if not isinstance(value, list):
                raise EngineError(f"{p}: 'index' must be an array of tables ([[index]])")
            for i, table in enumerate(value):
                table = dict(table)
                if "type" not in table:
                    raise EngineError(f"{p}: [[index]] entry {i + 1} has no 'type'")
                entries.append((str(table.pop("type")), table))
        elif isinstance(value, dict):
            entries.append((key, dict(value)))
        else:
            raise EngineError(f"{p}: unexpected top-level key {key!r}")
    configs: list[IndexConfig] = []
    for index_type, table in entries:
        use_sweep = bool(table.pop("sweep", False))
        configs.extend(expand(index_type, table, use_sweep=use_sweep))
    if not configs:
        raise EngineError(f"{p}: no index configs")
    return _dedupe(configs)


def _dedupe(configs: list[IndexConfig]) -> list[IndexConfig]:
    out, seen = [], set()
    for cfg in configs:
        key = (cfg.build_key(), tuple(sorted(cfg.search_params().items())))
        if key not in seen:
            seen.add(key)
            out.append(cfg)
    return out


def check_supported(
    configs: list[IndexConfig], support: dict[str, str | None], *, skip_unsupported: bool = False
) -> tuple[list[IndexConfig], dict[str, str]]:
    """Drop (skip_unsupported) or refuse configs whose type this Milvus does not accept."""
    refused = {
        c.index_type: support.get(c.index_type) or "not probed"
        for c in configs
        if c.index_type not in support or support[c.index_type] is not None
    }
    if refused and not skip_unsupported:
        lines = "; ".join(f"{t}: {why}" for t, why in refused.items())
        raise EngineError(f"index type(s) not supported by this Milvus ({lines}); use --skip-unsupported")
    return [c for c in configs if c.index_type not in refused], refused
