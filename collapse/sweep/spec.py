"""Sweep files: a base experiment config plus axes, expanded into runs.

A sweep file (``experiments/sweeps/*.yaml``)::

    name: tiny_grid                  # optional; default: the file's stem (also the MLflow experiment)
    base:                            # or just `base: ../tiny.yaml`
      recipe: ../tiny.yaml           # relative to the sweep file; optional
      overrides:                     # dotted keys (or nested sections), applied to the recipe
        run.generations: 2
    axes:
      grid:                          # cartesian product of every key's values
        mix.regime: [replace, accumulate]
      list:                          # explicit points, each crossed with the grid
        - {sample.temperature: 1.0}
        - {sample.temperature: 0.7, sample.top_p: 0.95}
      seeds: [0, 1]                  # the run.seed axis (an integer N means 0..N-1)
    slurm:                           # optional defaults of --executor slurm
      partition: gpu
      gpus_per_node: 1
      cpus_per_task: 8
      mem_gb: 32
      timeout_min: 240
      array_parallelism: 16
      max_num_timeout: 10            # requeues after reaching the time limit (then the run stops; launch again)
    claims:                          # optional: published findings these runs should reproduce (collapse findings)
      - name: accumulate stays bounded
        paper: Gerstgrasser et al. 2024
        metric: test_ce                # a metric key as logged
        generation: last               # or a generation number
        groups: {mix.regime: [replace, accumulate]}   # effect = mean(replace) − mean(accumulate) over seeds
        direction: greater             # expected sign of the effect: greater | less
        min_effect: 0.05               # optional: |effect| must reach this too
        where: {sample.temperature: 1.0}   # optional: fix other axes, so each group varies only in the seed

Claims are checked against the expansion (:mod:`collapse.claims`): an axis
or a value the sweep does not have, or a group whose runs differ in more
than the seed, is an error naming ``claims[i]``.

Each run is one (config, seed) with one regime: a base whose ``mix.regime``
is a list becomes a ``mix.regime`` axis. Runs live in
``<run.root>/<name>/<run name>``; the MLflow experiment is ``name``. Every
problem with the file is a one-line :class:`CollapseError`, raised before
anything is launched.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collapse.config import Config, apply_overrides, build_dataclass, parse_override, read_yaml_mapping
from collapse.errors import CollapseError, ConfigError
from collapse.claims import Claim, check_claims, parse_claims
from collapse.registries import from_dict

TOP_KEYS = ("name", "description", "base", "axes", "slurm", "claims")
AXES_KEYS = ("grid", "list", "seeds")
# Keys the sweep itself decides for every run.
RESERVED = ("run.dir", "run.root", "run.experiment", "tracking.uri", "tracking.parent_run_id", "tracking.tags",
            "tracking.enabled")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+,-]*$")


@dataclass
class SlurmSettings:
    """Resources of each run's Slurm job (the sweep file's ``slurm:``, then CLI flags)."""

    partition: str | None = None
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem_gb: float | None = None
    timeout_min: int = 60
    array_parallelism: int = 16
    max_num_timeout: int = 10  # requeues after reaching the time limit (each resumes at the last completed generation)
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: list[str] = field(default_factory=list)

    def updated(self, **flags: Any) -> "SlurmSettings":
        """A copy with the flags that are not None."""
        return dataclasses.replace(self, **{k: v for k, v in flags.items() if v is not None})


@dataclass
class SweepRun:
    """One run of a sweep: a full, validated config dict and where it lives."""

    name: str
    axes: dict[str, Any]  # axis key -> this run's value (the effective config value)
    config: dict[str, Any]
    run_dir: Path

    @property
    def regime(self) -> str:
        return self.config["mix"]["regime"]

    @property
    def seed(self) -> int:
        return self.config["run"]["seed"]

    @property
    def generations(self) -> int:
        return self.config["run"]["generations"]


@dataclass
class Sweep:
    name: str
    path: Path
    root: Path  # run.root, absolute
    axis_keys: list[str]
    runs: list[SweepRun]
    slurm: SlurmSettings
    tracking_uri: str | None  # tracking.uri of the base (None: $MLFLOW_TRACKING_URI, else sqlite in root)
    tracking_enabled: bool = True
    description: str = ""
    claims: list[Claim] = field(default_factory=list)  # the sweep file's claims: (collapse findings)
    overrides: dict[str, Any] = field(default_factory=dict)  # `collapse sweep FILE key=value ...`: every run gets them

    @property
    def dir(self) -> Path:
        """The sweep folder: run directories plus the sweep's own bookkeeping (``sweep.json``, ``_logs`` ...)."""
        return self.root / self.name

    def run(self, name: str) -> SweepRun:
        for r in self.runs:
            if r.name == name:
                return r
        raise CollapseError(f"sweep {self.name}: no run named {name!r}")


def _flatten_overrides(where: str, value: Any) -> dict[str, Any]:
    """``{a: {b: 1}}``, ``{a.b: 1}`` or ``["a.b=1"]`` → ``{"a.b": 1}``."""
    if value is None:
        return {}
    if isinstance(value, list):
        out = {}
        for item in value:
            if not isinstance(item, str):
                raise CollapseError(f"{where}: expected key=value strings or a mapping, got {item!r}")
            path, v = parse_override(item)
            out[".".join(path)] = v
        return out
    if not isinstance(value, dict):
        raise CollapseError(f"{where}: expected a mapping of config keys, got {value!r}")
    out: dict[str, Any] = {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):  # no config value is a mapping: a dict is a section
                walk(v, key + ".")
            else:
                out[key] = v

    walk(value, "")
    return out


def check_key(key: str) -> None:
    """Raise ConfigError unless ``key`` (dotted) names a value of the config tree."""
    parts = key.split(".")
    cls: Any = Config
    for i, p in enumerate(parts):
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        where = ".".join(parts[:i])
        if p not in names:
            raise ConfigError(f"{key}: unknown key (known{' in ' + where if where else ''}: {', '.join(sorted(names))})")
        tp = hints[p]
        if dataclasses.is_dataclass(tp):
            if i == len(parts) - 1:
                raise ConfigError(f"{key}: is a section; name a key inside it, e.g. {key}.{dataclasses.fields(tp)[0].name}")
            cls = tp
        elif i != len(parts) - 1:
            raise ConfigError(f"{key}: {'.'.join(parts[:i + 1])} is a value, not a section")


def _value_label(v: Any) -> str:
    if isinstance(v, list):
        s = "+".join(_value_label(x) for x in v)
    elif v is None:
        s = "null"
    else:
        s = str(v)
    s = re.sub(r"[^A-Za-z0-9_.+,=-]+", "-", s).strip("-")
    return s or "x"


def _short_names(keys: list[str]) -> dict[str, str]:
    """Shortest unambiguous suffix of each dotted key (``sample.temperature`` → ``temperature``)."""
    out = {}
    for k in keys:
        parts = k.split(".")
        for n in range(1, len(parts) + 1):
            cand = ".".join(parts[-n:])
            if sum(1 for o in keys if o == cand or o.endswith("." + cand)) == 1:
                out[k] = cand
                break
        else:
            out[k] = k
    return out


def run_name(explicit: dict[str, Any], order: list[str]) -> str:
    """Run folder name from the axis values a run sets: the regime first, the seed
    last as ``s<seed>``, other axes as ``key=value``: ``replace_temperature=0.7_s1``."""
    short = _short_names(order)
    parts = []
    if "mix.regime" in explicit:
        parts.append(_value_label(explicit["mix.regime"]))
    for k in order:
        if k in ("mix.regime", "run.seed") or k not in explicit:
            continue
        parts.append(f"{short[k]}={_value_label(explicit[k])}")
    if "run.seed" in explicit:
        parts.append(f"s{_value_label(explicit['run.seed'])}")
    return "_".join(parts) or "run"


def _get(d: dict[str, Any], key: str) -> Any:
    node: Any = d
    for p in key.split("."):
        node = node[p]
    return node


def _parse_slurm(where: str, raw: Any) -> SlurmSettings:
    if raw is None:
        return SlurmSettings()
    if not isinstance(raw, dict):
        raise CollapseError(f"{where}: expected a mapping (partition, gpus_per_node, cpus_per_task, mem_gb, timeout_min, array_parallelism ...)")
    try:
        s = build_dataclass(SlurmSettings, raw, "slurm.")
    except ConfigError as e:
        raise CollapseError(f"{where.rsplit(':', 1)[0]}: {e}") from None
    for name in ("cpus_per_task", "timeout_min", "array_parallelism"):
        if getattr(s, name) < 1:
            raise CollapseError(f"{where}.{name}: expected >= 1, got {getattr(s, name)}")
    if s.gpus_per_node < 0 or s.max_num_timeout < 0:
        raise CollapseError(f"{where}: gpus_per_node and max_num_timeout: expected >= 0")
    if s.mem_gb is not None and s.mem_gb <= 0:
        raise CollapseError(f"{where}.mem_gb: expected > 0 or null, got {s.mem_gb}")
    return s


def _axis_values(where: str, key: str, values: Any) -> list[Any]:
    if not isinstance(values, list) or not values:
        raise CollapseError(f"{where}: {key}: expected a non-empty list of values, got {values!r}")
    return values


def load_sweep(path: str | Path, overrides: list[str] | dict[str, Any] | None = None) -> Sweep:
    """Parse, expand and validate a sweep file (every run's config is checked).
    ``overrides`` (``["run.generations=4"]`` or ``{"run.generations": 4}``) apply to
    every run, after the file's ``base.overrides``; they may not name an axis."""
    overrides_arg = overrides
    path = Path(path)
    raw = read_yaml_mapping(path)
    f = str(path)
    sections = {fl.name for fl in dataclasses.fields(Config)}
    if raw and not set(raw) & set(TOP_KEYS) and set(raw) & sections:
        raise CollapseError(f"{f} is an experiment recipe, not a sweep file (no base: or axes:); run it with "
                            f"`collapse run {f}`, or sweep it from a file with `base: {f}` and axes:")
    for k in raw:
        if k not in TOP_KEYS:
            raise CollapseError(f"{f}: unknown key {k!r} (known: {', '.join(TOP_KEYS)})")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise CollapseError(f"{f}: name: expected letters, digits and _.=+,- (no '/' or spaces), got {name!r}")
    claims = parse_claims(raw.get("claims"), f)

    # -- base config
    base = raw.get("base")
    if isinstance(base, str):
        base = {"recipe": base}
    if base is None:
        base = {}
    if not isinstance(base, dict):
        raise CollapseError(f"{f}: base: expected a recipe path or a mapping with recipe and/or overrides")
    for k in base:
        if k not in ("recipe", "overrides"):
            raise CollapseError(f"{f}: base: unknown key {k!r} (known: recipe, overrides)")
    data: dict[str, Any] = {}
    if base.get("recipe") is not None:
        recipe = Path(str(base["recipe"])).expanduser()
        if not recipe.is_absolute():
            recipe = path.parent / recipe
        data = read_yaml_mapping(recipe)
    overrides = _flatten_overrides(f"{f}: base.overrides", base.get("overrides"))
    for key in overrides:
        if key in RESERVED and key not in ("run.root", "tracking.uri", "tracking.enabled"):
            raise CollapseError(f"{f}: base.overrides: {key} is set by the sweep for each run")
    given = _command_line_overrides(f, overrides_arg)
    overrides.update(given)
    apply_overrides(data, overrides)
    try:
        base_cfg = from_dict(copy.deepcopy(data))
    except ConfigError as e:
        raise CollapseError(f"{f}: base: {e}") from None

    # -- axes
    axes = raw.get("axes") or {}
    if not isinstance(axes, dict):
        raise CollapseError(f"{f}: axes: expected a mapping with grid, list and/or seeds")
    for k in axes:
        if k not in AXES_KEYS:
            raise CollapseError(f"{f}: axes: unknown key {k!r} (known: {', '.join(AXES_KEYS)}; config keys go under axes.grid)")
    grid = axes.get("grid") or {}
    if not isinstance(grid, dict):
        raise CollapseError(f"{f}: axes.grid: expected a mapping of config key -> list of values")
    grid = {k: _axis_values(f"{f}: axes.grid", k, v) for k, v in _flatten_grid(f, grid).items()}
    points = axes.get("list")
    if points is None:
        points = [{}]
    if not isinstance(points, list) or not points:
        raise CollapseError(f"{f}: axes.list: expected a non-empty list of mappings of config key -> value")
    points = [_flatten_overrides(f"{f}: axes.list[{i}]", p) for i, p in enumerate(points)]
    seeds = axes.get("seeds")
    if seeds is not None:
        if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds > 0:
            seeds = list(range(seeds))
        seeds = _axis_values(f"{f}: axes", "seeds", seeds)
        if "run.seed" in grid or any("run.seed" in p for p in points):
            raise CollapseError(f"{f}: axes: run.seed given both as seeds and as an axis")
        grid["run.seed"] = seeds
    if base_cfg.regimes != [base_cfg.mix.regime] and "mix.regime" not in grid and not any("mix.regime" in p for p in points):
        grid = {"mix.regime": base_cfg.regimes, **grid}  # a list of regimes in the base: one run per regime

    order: list[str] = []
    for k in [k for p in points for k in p] + list(grid):
        if k not in order:
            order.append(k)
    if "mix.regime" in order:  # the regime names the run first, the seed last
        order.remove("mix.regime")
        order.insert(0, "mix.regime")
    if "run.seed" in order:
        order.remove("run.seed")
        order.append("run.seed")
    clash = [k for k in given if k in order]
    if clash:
        raise CollapseError(f"{clash[0]}: an axis of sweep {name} (values in {f}); an override applies to every "
                            "run, so edit the axis in the sweep file instead")
    for k in order:
        if k in RESERVED:
            raise CollapseError(f"{f}: axes: {k} is set by the sweep for each run and cannot be an axis")
        try:
            check_key(k)
        except ConfigError as e:
            raise CollapseError(f"{f}: axes: {e}") from None

    root = Path(base_cfg.run.root).expanduser().resolve()
    runs: list[SweepRun] = []
    seen: dict[str, dict[str, Any]] = {}
    grid_keys = list(grid)
    for combo in itertools.product(*(grid[k] for k in grid_keys)) if grid_keys else [()]:
        for point in points:
            explicit = dict(zip(grid_keys, combo))
            clash = set(explicit) & set(point)
            if clash:
                raise CollapseError(f"{f}: axes: {', '.join(sorted(clash))} both in axes.grid and axes.list")
            explicit.update(point)
            rname = run_name(explicit, order)
            if rname in seen:
                raise CollapseError(f"{f}: axes: two runs would be named {rname!r} ({seen[rname]} and {explicit}); make the points distinct")
            seen[rname] = explicit
            d = copy.deepcopy(data)
            apply_overrides(d, explicit)
            if isinstance(_get_or_none(d, "mix.regime"), list):
                raise CollapseError(f"{f}: run {rname}: mix.regime: one regime per run; list the regimes as an axis")
            d.setdefault("run", {})
            d["run"]["experiment"] = name
            d["run"]["root"] = str(root)
            run_dir = root / name / rname
            d["run"]["dir"] = str(run_dir)
            try:
                cfg = from_dict(d)
            except ConfigError as e:
                raise CollapseError(f"{f}: run {rname}: {e}") from None
            full = cfg.to_dict()
            runs.append(SweepRun(rname, {k: _get(full, k) for k in order}, full, run_dir))
    check_claims(claims, runs, order, f)
    return Sweep(name=name, path=path.resolve(), root=root, axis_keys=order, runs=runs,
                 slurm=_parse_slurm(f"{f}: slurm", raw.get("slurm")), tracking_uri=base_cfg.tracking.uri,
                 tracking_enabled=base_cfg.tracking.enabled, description=str(raw.get("description") or ""),
                 claims=claims, overrides=given)


def _command_line_overrides(f: str, overrides: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """``key=value`` strings (or a mapping) → ``{dotted key: value}``, each key checked."""
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        out = dict(_flatten_overrides("overrides", overrides))
    else:
        out = {}
        for item in overrides:
            key, value = parse_override(item)
            out[".".join(key)] = value
    for key in out:
        if key in RESERVED and key not in ("run.root", "tracking.uri", "tracking.enabled"):
            raise CollapseError(f"{key}: set by the sweep for each run; it cannot be overridden")
        check_key(key)
    return out


def _flatten_grid(f: str, grid: dict[str, Any]) -> dict[str, Any]:
    """Grid keys may be dotted or nested sections (``sample: {temperature: [..]}``)."""
    out: dict[str, Any] = {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                out[f"{prefix}{k}"] = v

    walk(grid, "")
    return out


def _get_or_none(d: dict[str, Any], key: str) -> Any:
    try:
        return _get(d, key)
    except (KeyError, TypeError):
        return None
