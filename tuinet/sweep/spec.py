"""The SPEC of a sweep: a TOML file with ``[train]`` (the base run), ``[search]`` (the space) and ``[sweep]``.

Everything is checked here, before any trial runs, with one line per problem: an unknown option or table, a
distribution that is not one of the five, an empty range, a choice of a value the trainer would refuse (an unknown
optimizer, a dropout of 1.5), a range on a whole-number option given as floats. Both ends of every range and every
choice are put through :class:`~tuinet.training.config.TrainConfig`'s own checks, so a trial can never fail on a
value the SPEC let through.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuinet.errors import ConfigError
from tuinet.sweep.state import DIRECTIONS
from tuinet.training.config import TrainConfig, read_toml

#: distribution name -> what it takes
DISTRIBUTIONS = {"log_uniform": "[low, high], low > 0", "uniform": "[low, high]", "int": "[low, high] or "
                 "[low, high, step]", "choice": "[value, ...]", "grid": "[value, ...]"}
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
#: options no trial may change: where runs go and what they are called belong to the sweep
RESERVED = ("runs_dir", "name", "parent")
#: [sweep] key -> (type, default, description)
SWEEP_KEYS: dict[str, tuple[type, Any, str]] = {
    "objective": (str, "val_loss", "val_loss or val_accuracy; the direction follows from it"),
    "trials": (int, 16, "how many trials in all"),
    "sampler": (str, "tpe", "tpe, random or grid"),
    "pruner": (str, "median", "median, hyperband or none"),
    "seed": (int, 0, "the sampler's seed (the trials' own seed is [train] seed)"),
    "startup_trials": (int, 4, "trials that finish before the median pruner prunes anything"),
    "warmup_epochs": (int, 1, "epochs every trial runs before it can be pruned"),
    "name": (str, "", "the sweep's name (its folder in the runs dir)  [default: the SPEC file's name]"),
}
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")


@dataclass(frozen=True)
class Param:
    """One searched option: its distribution and what it takes."""

    name: str
    kind: str  # one of DISTRIBUTIONS
    low: float | int | None = None
    high: float | int | None = None
    step: int | None = None
    values: tuple[Any, ...] = ()

    def distribution(self):
        """The Optuna distribution of this parameter."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind in ("choice", "grid"):
            return CategoricalDistribution(list(self.values))
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), step=self.step or 1)
        return FloatDistribution(float(self.low), float(self.high), log=self.kind == "log_uniform")

    def grid_values(self) -> list[Any]:
        """Every value, for the grid sampler (ranges of floats have none)."""
        if self.kind in ("choice", "grid"):
            return list(self.values)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, self.step or 1))
        raise ConfigError(f"search: '{self.name}' is a {self.kind} range; the grid sampler needs grid, choice or "
                          "int for every option")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``sweep.json``)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


@dataclass
class SweepSpec:
    """A parsed, checked SPEC.

    Args:
        name: the sweep's name (its folder in the runs dir).
        train: the base options of every trial (a TrainConfig dict, runs_dir and name left out).
        search: the searched options, by name.
        objective, trials, sampler, pruner, seed, startup_trials, warmup_epochs: the ``[sweep]`` table.
        runs_dir: where the sweep folder and its trials' runs go.
        source: the SPEC file (for messages).
    """

    name: str
    train: dict[str, Any]
    search: dict[str, Param]
    objective: str = "val_loss"
    trials: int = 16
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    startup_trials: int = 4
    warmup_epochs: int = 1
    runs_dir: str = "runs"
    source: str = "SPEC"
    extra: dict[str, Any] = field(default_factory=dict)  # backend settings the driver keeps (workers, storage)

    @property
    def direction(self) -> str:
        """``minimize`` for val_loss, ``maximize`` for val_accuracy."""
        return DIRECTIONS[self.objective]

    @property
    def folder(self) -> Path:
        """The sweep folder."""
        return Path(self.runs_dir) / self.name

    def distributions(self) -> dict[str, Any]:
        """Optuna distributions by option name, in SPEC order."""
        return {n: p.distribution() for n, p in self.search.items()}

    def grid(self) -> dict[str, list[Any]]:
        """The grid sampler's search space (every option must be finite)."""
        return {n: p.grid_values() for n, p in self.search.items()}

    def trial_config(self, params: dict[str, Any], name: str) -> TrainConfig:
        """The TrainConfig of the trial with ``params``, named ``name``, in the sweep's runs dir."""
        data = {**self.train, **params, "runs_dir": self.runs_dir, "name": name}
        return TrainConfig.from_dict(data, source=f"{self.source} (trial {name})")

    def budget(self, params: dict[str, Any]) -> int:
        """The epochs a trial with ``params`` may run."""
        return int(params.get("epochs", self.train.get("epochs", TrainConfig.epochs)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``sweep.json``): what a resumed or detached driver starts from."""
        return {"name": self.name, "train": self.train, "search": {n: p.to_dict() for n, p in self.search.items()},
                "objective": self.objective, "direction": self.direction, "trials": self.trials,
                "sampler": self.sampler, "pruner": self.pruner, "seed": self.seed,
                "startup_trials": self.startup_trials, "warmup_epochs": self.warmup_epochs,
                "runs_dir": self.runs_dir, "source": self.source, **self.extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SweepSpec":
        """Back from :meth:`to_dict`."""
        search = {n: Param(**{**p, "values": tuple(p.get("values") or ())}) for n, p in data["search"].items()}
        own = {f.name for f in dataclasses.fields(cls)} - {"search", "extra"}
        extra = {k: v for k, v in data.items() if k not in own and k not in ("search", "direction")}
        return cls(search=search, extra=extra, **{k: v for k, v in data.items() if k in own})


def _where(source: str, table: str, key: str) -> str:
    return f"{source}: [{table}] {key}"


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _parse_param(source: str, name: str, raw: Any, field_type: str) -> Param:
    where = _where(source, "search", name)
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ConfigError(f"{where}: give one distribution, e.g. {name} = {{uniform = [0.0, 0.5]}}; one of "
                          f"{', '.join(DISTRIBUTIONS)}")
    (kind, arg), = raw.items()
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: unknown distribution '{kind}'; choose one of {', '.join(DISTRIBUTIONS)}")
    if not isinstance(arg, list):
        raise ConfigError(f"{where}: {kind} takes {DISTRIBUTIONS[kind]}, got {arg!r:.60}")
    if kind in ("choice", "grid"):
        if not arg:
            raise ConfigError(f"{where}: {kind} is empty; give at least one value")
        if not all(isinstance(v, (str, int, float, bool)) for v in arg):
            raise ConfigError(f"{where}: {kind} values must be strings, numbers or booleans")
        if len(set(map(repr, arg))) != len(arg):
            raise ConfigError(f"{where}: {kind} lists a value twice")
        return Param(name, kind, values=tuple(arg))
    if len(arg) not in ((2, 3) if kind == "int" else (2,)) or not all(_number(v) for v in arg):
        raise ConfigError(f"{where}: {kind} takes {DISTRIBUTIONS[kind]}, got {arg!r:.60}")
    low, high = arg[0], arg[1]
    if kind == "int":
        if not all(isinstance(v, int) for v in arg):
            raise ConfigError(f"{where}: int takes whole numbers, got {arg!r:.60}")
        step = arg[2] if len(arg) == 3 else 1
        if step < 1:
            raise ConfigError(f"{where}: the step must be >= 1, got {step}")
        if low > high:
            raise ConfigError(f"{where}: empty range [{low}, {high}] (low must not exceed high)")
        if (high - low) % step:
            raise ConfigError(f"{where}: the range [{low}, {high}] is not a whole number of steps of {step}")
        return Param(name, kind, low, high, step=step)
    if field_type.startswith("int"):
        raise ConfigError(f"{where}: '{name}' takes whole numbers; use int = [low, high] (or choice)")
    if not low < high:
        raise ConfigError(f"{where}: empty range [{low}, {high}] (low must be below high)")
    if kind == "log_uniform" and low <= 0:
        raise ConfigError(f"{where}: log_uniform needs low > 0, got {low}")
    return Param(name, kind, float(low), float(high))


def _check_values(source: str, base: dict[str, Any], p: Param) -> None:
    """Put both ends of a range, or every choice, through TrainConfig's checks (and the optimizer's names)."""
    from tuinet.engine.optim import ALIASES, OPTIMIZER_NAMES

    values = list(p.values) if p.values else [p.low, p.high]
    where = _where(source, "search", p.name)
    for v in values:
        if p.name == "optimizer" and (not isinstance(v, str) or v.lower().strip() not in OPTIMIZER_NAMES
                                      and v.lower().strip() not in ALIASES):
            raise ConfigError(f"{where}: unknown optimizer {v!r}; choose from {', '.join(OPTIMIZER_NAMES)}")
        try:
            TrainConfig.from_dict({**base, p.name: v}, source="x")
        except ConfigError as e:
            reason = str(e).removeprefix("x: ").replace(f"'{p.name}' ", "").replace(f"{p.name} ", "", 1)
            raise ConfigError(f"{where}: the value {v!r} is refused: {reason}") from None


def check_models(spec: SweepSpec) -> None:
    """Load the data and build every model the search can produce (each choice of dataset, model, activation),
    so a model that does not fit the data is one line before anything runs. Cheap for the small data sweeps use."""
    from tuinet.training.trainer import Trainer

    keys = [k for k in ("dataset", "model", "activation") if k in spec.search]
    choices = [spec.search[k].values for k in keys]
    for combo in itertools.product(*choices) if keys else [()]:
        params = dict(zip(keys, combo))
        config = spec.trial_config(params, name="check")
        try:
            Trainer(config, run_dir=False).prepare()
        except ConfigError:
            raise
        except Exception as e:
            shown = ", ".join(f"{k} = {v!r}" for k, v in params.items()) or "[train]"
            raise ConfigError(f"{spec.source}: {shown}: {e}") from None


def load_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> SweepSpec:
    """Read and check a SPEC file; ``overrides`` (command-line flags: trials, sampler, pruner, objective, seed,
    name, runs_dir) win over it. Raises ConfigError with one line for anything wrong."""
    from tuinet.training.config import default_runs_dir

    path = Path(path)
    source = str(path)
    doc = read_toml_tables(path)
    for table in doc:
        if table not in ("train", "search", "sweep"):
            raise ConfigError(f"{source}: unknown table [{table}]; a SPEC has [train], [search] and [sweep]")
    train = doc.get("train", {})
    search_raw = doc.get("search", {})
    sweep = dict(doc.get("sweep", {}))
    for table, value in (("train", train), ("search", search_raw), ("sweep", sweep)):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: [{table}] must be a table")
    sweep.update({k: v for k, v in (overrides or {}).items() if v is not None and k in SWEEP_KEYS})
    runs_dir = (overrides or {}).get("runs_dir") or train.get("runs_dir") or default_runs_dir()
    for key in RESERVED:
        if key in train or key in search_raw:
            raise ConfigError(f"{source}: '{key}' is set by the sweep (each trial is named <sweep>-tNNN in the "
                              "runs dir); leave it out")
    train = {k.replace("-", "_"): v for k, v in train.items()}
    base = TrainConfig.from_dict(train, source=f"{source}: [train]").to_dict()
    base = {k: v for k, v in base.items() if k in train}  # only what the SPEC says: defaults stay defaults
    known = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}
    search: dict[str, Param] = {}
    for name, raw in search_raw.items():
        key = name.replace("-", "_")
        if key not in known or key in RESERVED:
            raise ConfigError(f"{source}: [search] unknown option '{name}' (any `tuinet train` option: "
                              f"{', '.join(k for k in sorted(known) if k not in RESERVED)})")
        p = _parse_param(source, key, raw, known[key])
        _check_values(source, base, p)
        search[key] = p
    if not search:
        raise ConfigError(f"{source}: [search] is empty; name at least one option to search, e.g. "
                          "lr = {log_uniform = [1e-4, 1e-1]}")
    settings = {}
    for key, value in sweep.items():
        if key not in SWEEP_KEYS:
            raise ConfigError(f"{source}: [sweep] unknown key '{key}' (known: {', '.join(SWEEP_KEYS)})")
        typ = SWEEP_KEYS[key][0]
        if typ is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{_where(source, 'sweep', key)} must be a whole number, got {value!r:.40}")
        if typ is str and not isinstance(value, str):
            raise ConfigError(f"{_where(source, 'sweep', key)} must be a string, got {value!r:.40}")
        settings[key] = value
    for key, allowed in (("objective", tuple(DIRECTIONS)), ("sampler", SAMPLERS), ("pruner", PRUNERS)):
        if key in settings and settings[key] not in allowed:
            raise ConfigError(f"{_where(source, 'sweep', key)}: unknown {key} {settings[key]!r}; choose one of "
                              f"{', '.join(allowed)}")
    for key, lo in (("trials", 1), ("seed", 0), ("startup_trials", 0), ("warmup_epochs", 0)):
        if key in settings and settings[key] < lo:
            raise ConfigError(f"{_where(source, 'sweep', key)} must be >= {lo}, got {settings[key]}")
    name = settings.pop("name", "") or re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem).strip("-.")[:40] or "sweep"
    if not NAME_RE.fullmatch(name):
        raise ConfigError(f"{_where(source, 'sweep', 'name')}: {name!r} is not a usable folder name (letters, "
                          "digits, '.', '_', '-'; at most 40)")
    spec = SweepSpec(name=name, train=base, search=search, runs_dir=str(runs_dir), source=source, **settings)
    if spec.sampler == "grid":
        size = math.prod(len(v) for v in spec.grid().values())
        if spec.trials > size:
            spec.trials = size  # the grid has no more points: every one runs once
    return spec


def read_toml_tables(path: Path) -> dict[str, Any]:
    """The whole TOML document of a SPEC; ``read_toml`` checks the file first (missing, not a regular file, too
    large, not UTF-8, not TOML: one line each), then it is parsed whole (``read_toml`` keeps only [train])."""
    import tomllib

    read_toml(path)
    return tomllib.loads(path.read_text(encoding="utf-8"))
