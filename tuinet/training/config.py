"""The training configuration: every option of ``tuinet train``, loadable from TOML, saved with each run."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tuinet.errors import ConfigError
from tuinet.protocol import FLOAT32_MAX, check_learning_rate

SCHEDULES = ("constant", "step", "exponential", "cosine", "onecycle", "plateau")
SCHEDULE_ALIASES = {"reduce_on_plateau": "plateau", "reduce-on-plateau": "plateau", "one_cycle": "onecycle",
                    "one-cycle": "onecycle", "exp": "exponential", "none": "constant"}


MAX_SEED = 2**63 - 1
MAX_CONFIG_BYTES = 1024 * 1024  # a configuration file larger than this is not one
MAX_KEEP_EPOCHS = 100_000
#: the checkpoint files a branched run's ``parent`` may name (a file name in the parent's folder, never a path)
PARENT_CHECKPOINT = re.compile(r"(latest|best|epoch-\d{4,9})\.npz")


class FieldError(ConfigError):
    """An invalid value of one configuration field: ``field`` and what is wrong (``rest``, read after the name)."""

    def __init__(self, field: str, rest: str, message: str | None = None):
        super().__init__(message or f"{field} {rest}")
        self.field, self.rest, self.message = field, rest, message

    def as_option(self) -> str:
        """The message naming the command-line option (``option --l2 must be ...``)."""
        opt = f"option --{self.field.replace('_', '-')}"
        return f"{opt}: {self.message}" if self.message else f"{opt} {self.rest}"


def default_runs_dir() -> str:
    """``$TUINET_RUNS_DIR`` or ``./runs``."""
    return os.environ.get("TUINET_RUNS_DIR", "runs")


@dataclass
class TrainConfig:
    """Everything that defines a training run (enough to reproduce it).

    Args:
        dataset: built-in name or path.
        model: preset, compact spec or TOML file.
        activation: hidden activation for dense specs.
        optimizer: sgd, momentum, adam, adamw, rmsprop, adagrad.
        lr: learning rate (None: the optimizer's torch default).
        batch_size, epochs, seed: the usual.
        val_split, test_split: fractions carved for validation/test (MNIST keeps its own test set).
        l1, l2: weight penalties; dropout: rate after each hidden activation.
        schedule: constant, step, exponential, cosine, onecycle, plateau.
        patience: early-stopping patience in epochs (None: off).
        clip_grad: clip the global gradient norm to this value (None: off).
        augment: data augmentation of the training batches, e.g. ``"shift=2,rotate=15"`` (None: none); kept in
            the canonical form of :meth:`tuinet.engine.augment.Augment.spec` (see :mod:`tuinet.engine.augment`).
        init_gain: every layer's initial weights (not biases) multiplied by this; 1 keeps its own He or Xavier
            scheme (see :func:`tuinet.engine.spec.build_model`).
        final: which weights the run's test figures are of when it ends: ``best`` (the best validation epoch's,
            ``best.npz``) or ``last``; both are evaluated and reported.
        pause_if, stop_if: watch rules checked after each epoch (``"val_loss rises 3"``; see
            :mod:`tuinet.training.watch`) that pause or stop the run; a string or a list of them.
        notify: a shell command run with each alert (finished, diverged, early stop, failed, a watch rule) as JSON
            on its standard input (None: none); see :mod:`tuinet.training.alerts`.
        notify_url: an apprise URL each alert is posted to (needs the ``notify`` extra; None: none).
        dataset_defaults: the fields filled in from the dataset's row of
            :data:`tuinet.training.defaults.DATASET_DEFAULTS` (None: none were).
        n_samples, noise: size and noise level of a synthetic dataset (None: the dataset's defaults).
        features: Playground's input features for 2-D datasets, e.g. ``"x,y,x^2,y^2,xy,sinx,siny"`` or ``"all"``
            (None: the raw x and y); a first model layer computes them (see :mod:`tuinet.engine.features`).
        pace: at most this many optimizer steps per second, to watch a boundary form (None: full speed).
        keep_epochs: how many per-epoch checkpoints (``epoch-NNNN.npz``) the run folder keeps, the most recent
            ones (0: none); ``tuinet train --from RUN@EPOCH`` branches from them.
        parent: set on a branched run: where it started, ``{"run", "epoch", "step", "checkpoint", "path"}``
            (see :mod:`tuinet.training.branch`); None for a run trained from scratch.
    """

    dataset: str = "mnist"
    model: str = "mlp"
    activation: str | None = None
    optimizer: str = "adam"
    lr: float | None = None
    momentum: float | None = None
    dampening: float | None = None
    nesterov: bool | None = None
    betas: tuple[float, float] | None = None
    eps: float | None = None
    weight_decay: float | None = None
    alpha: float | None = None
    centered: bool | None = None
    amsgrad: bool | None = None
    batch_size: int = 64
    epochs: int = 10
    seed: int = 0
    val_split: float = 0.1
    test_split: float = 0.1
    normalize: str = "auto"
    target: str | None = None
    task: str | None = None
    limit: int | None = None
    n_samples: int | None = None
    noise: float | None = None
    features: str | None = None
    pace: float | None = None
    l1: float = 0.0
    l2: float = 0.0
    dropout: float = 0.0
    schedule: str = "constant"
    step_size: int = 1
    gamma: float = 0.5
    plateau_factor: float = 0.1
    plateau_patience: int = 2
    patience: int | None = None
    min_delta: float = 0.0
    clip_grad: float | None = None
    init_gain: float = 1.0
    augment: str | None = None
    val_every: int | None = None
    log_every: int = 25
    stats_every: int = 100
    keep_epochs: int = 5
    on_divergence: str = "rollback"
    final: str = "best"
    pause_if: list[str] | None = None
    stop_if: list[str] | None = None
    notify: str | None = None
    notify_url: str | None = None
    dataset_defaults: list[str] | None = None
    divergence_factor: float = 0.5
    runs_dir: str = field(default_factory=default_runs_dir)
    name: str | None = None
    parent: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError with one clear line for any invalid value (naming the field)."""
        s = SCHEDULE_ALIASES.get(self.schedule, self.schedule)
        if s not in SCHEDULES:
            raise FieldError("schedule", "",
                             f"unknown schedule '{self.schedule}'; choose one of {', '.join(SCHEDULES)}")
        self.schedule = s
        # every number first: NaN and infinities pass most comparisons below unnoticed, and the engine computes in
        # float32, where 1e39 is already infinite
        if self.lr is not None:
            try:
                check_learning_rate(self.lr, "lr")  # positive, and neither inf nor 0 once cast to float32
            except ConfigError as e:
                raise FieldError("lr", str(e).removeprefix("lr ")) from None
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, float) and not (math.isfinite(v) and abs(v) <= FLOAT32_MAX):
                raise FieldError(f.name, f"must be a finite number (within float32's range), got {v}")
        for name in ("batch_size", "epochs", "log_every", "stats_every", "step_size"):
            _check_int(name, getattr(self, name), 1)
        _check_int("seed", self.seed, 0, MAX_SEED)
        for name in ("limit", "patience", "val_every", "n_samples"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 1)
        _check_int("plateau_patience", self.plateau_patience, 0)
        _check_int("keep_epochs", self.keep_epochs, 0, MAX_KEEP_EPOCHS)
        if self.parent is not None:
            _check_parent(self.parent)
        for name in ("val_split", "test_split"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise FieldError(name, f"must be in [0, 1), got {v}")
        if self.val_split + self.test_split >= 1.0:
            raise FieldError("val_split", "+ test_split must leave some data for training")
        for name in ("l1", "l2", "min_delta", "noise"):
            if getattr(self, name) is None:
                continue
            if getattr(self, name) < 0:
                raise FieldError(name, f"must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise FieldError("dropout", f"must be in [0, 1), got {self.dropout}")
        if self.pace is not None and self.pace <= 0:
            raise FieldError("pace", f"must be > 0 steps per second, got {self.pace}")
        if self.features is not None:
            from tuinet.engine.features import parse_features  # a leaf module: the names and their spellings
            from tuinet.errors import ModelError

            try:
                self.features = ",".join(parse_features(self.features))
            except ModelError as e:
                raise FieldError("features", "", str(e)) from None
        if self.augment is not None:
            from tuinet.data.augment import parse_augment  # the names and their ranges (no engine, no Numba)

            try:
                aug = parse_augment(self.augment)
            except ConfigError as e:
                raise FieldError("augment", "", str(e)) from None
            self.augment = aug.spec() if aug.active else None
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise FieldError("clip_grad", f"must be > 0, got {self.clip_grad}")
        if not (isinstance(self.init_gain, (int, float)) and math.isfinite(self.init_gain) and self.init_gain > 0):
            raise FieldError("init_gain", f"must be a number > 0, got {self.init_gain!r}")
        if self.dataset_defaults is not None:
            names = {f.name for f in fields(self)}
            if not isinstance(self.dataset_defaults, list) or not all(
                    isinstance(n, str) and n in names for n in self.dataset_defaults):
                raise FieldError("dataset_defaults", f"must be a list of option names, got {self.dataset_defaults!r:.60}")
        for name in ("pause_if", "stop_if"):
            v = getattr(self, name)
            if isinstance(v, (str, tuple)):
                v = [v] if isinstance(v, str) else list(v)
                setattr(self, name, v)
            if v is not None:
                from tuinet.training.watch import parse_rules

                try:
                    parse_rules(v)
                except ConfigError as e:
                    raise FieldError(name, "", str(e)) from None
        for name in ("notify", "notify_url"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or not v.strip() or len(v) > 4096):
                raise FieldError(name, f"must be a non-empty command or URL, got {v!r:.60}")
        if self.final not in ("best", "last"):
            raise FieldError("final", f"must be best or last, got {self.final!r}")
        if self.on_divergence not in ("rollback", "pause"):
            raise FieldError("on_divergence", f"must be rollback or pause, got {self.on_divergence!r}")
        if self.betas is not None:
            b = tuple(float(x) for x in self.betas)
            if len(b) != 2 or not all(0.0 <= x < 1.0 for x in b):
                raise FieldError("betas", f"must be two numbers in [0, 1), e.g. 0.9,0.999; got {self.betas}")
            self.betas = b  # type: ignore[assignment]
        for name in ("momentum", "dampening", "weight_decay", "alpha"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise FieldError(name, f"must be >= 0, got {v}")
        if self.eps is not None and self.eps <= 0:
            raise FieldError("eps", f"must be > 0, got {self.eps}")
        if not 0 < self.divergence_factor < 1:
            raise FieldError("divergence_factor", f"must be in (0, 1), got {self.divergence_factor}")
        if not 0 < self.gamma <= 1 and self.schedule in ("step", "exponential"):
            raise FieldError("gamma", f"must be in (0, 1], got {self.gamma}")
        if not 0 < self.plateau_factor < 1:
            raise FieldError("plateau_factor", f"must be in (0, 1), got {self.plateau_factor}")

    def optimizer_hyperparams(self) -> dict[str, Any]:
        """Hyperparameters given for the optimizer (None entries left out)."""
        keys = ("momentum", "dampening", "nesterov", "betas", "eps", "weight_decay", "alpha", "centered", "amsgrad")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict."""
        d = dataclasses.asdict(self)
        if d["betas"] is not None:
            d["betas"] = list(d["betas"])
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "configuration",
                  options: frozenset[str] | set[str] = frozenset()) -> "TrainConfig":
        """Build from a dict, checking keys, types and ranges; errors name ``source`` and the key.

        Keys in ``options`` came from the command line: their errors name the option (``--l2``) instead.
        """
        known = {f.name: f for f in fields(cls)}
        clean: dict[str, Any] = {}
        for key, value in data.items():
            k = key.replace("-", "_") if isinstance(key, str) else key
            if k not in known:
                raise ConfigError(f"{source}: unknown key '{key}' (known: {', '.join(sorted(known))})")
            where = f"option --{k.replace('_', '-')}" if k in options else f"{source}: '{k}'"
            clean[k] = _coerce(k, value, known[k].type, where)
        try:
            return cls(**clean)
        except FieldError as e:
            if e.field in options:
                raise ConfigError(e.as_option()) from None
            raise ConfigError(f"{source}: {e}") from None
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def from_toml(cls, path: str | Path, overrides: dict[str, Any] | None = None,
                  dataset_defaults: bool = False) -> "TrainConfig":
        """Load a TOML file (top level or a [train] table); ``overrides`` (command-line options) win over it; with
        ``dataset_defaults``, what neither sets comes from the dataset's defaults (training/defaults.py)."""
        data = {**read_toml(path), **(overrides or {})}
        if dataset_defaults:
            from tuinet.training.defaults import with_dataset_defaults

            data = with_dataset_defaults(data)
        return cls.from_dict(data, source=str(path), options=set(overrides or ()))


def read_toml(path: str | Path) -> dict[str, Any]:
    """The options of a TOML configuration file (its top level or its [train] table), not yet checked; a
    ConfigError with one line when the file cannot be read or is not TOML."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        # /dev/zero would be read forever, a FIFO would block until someone writes to it
        raise ConfigError(f"{path}: not a regular file; give a .toml configuration file")
    if st.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {st.st_size:,} bytes is too large for a configuration file "
                          f"(at most {MAX_CONFIG_BYTES:,})")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML (nested too deeply)") from None
    data = doc.get("train", doc)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: [train] must be a table")
    return data


def _check_parent(parent: Any) -> None:
    """A branched run's ``parent`` record: the run's name, the epoch and step it branched at, the checkpoint file
    (a name in the parent's folder), and optionally the parent folder's absolute path."""
    if not isinstance(parent, dict):
        raise FieldError("parent", f"must be a table with run, epoch, step and checkpoint, got {parent!r:.60}")
    run, path, ckpt = parent.get("run"), parent.get("path"), parent.get("checkpoint")
    if not isinstance(run, str) or not run or len(run) > 255 or "/" in run:
        raise FieldError("parent", f"run must be a run's name, got {run!r:.60}")
    if path is not None and not (isinstance(path, str) and os.path.isabs(path)):
        raise FieldError("parent", f"path must be an absolute folder, got {path!r:.60}")
    if not isinstance(ckpt, str) or not PARENT_CHECKPOINT.fullmatch(ckpt):
        raise FieldError("parent", f"checkpoint must be latest.npz, best.npz or epoch-NNNN.npz, got {ckpt!r:.60}")
    for key in ("epoch", "step"):
        v = parent.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise FieldError("parent", f"{key} must be a whole number >= 0, got {v!r:.40}")


def _check_int(name: str, v: Any, lo: int, hi: int | None = None) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
        span = f">= {lo}" if hi is None else f"from {lo} to {hi:,}"
        raise FieldError(name, f"must be a whole number {span}, got {v!r}")


def _coerce(key: str, value: Any, typ: Any, where: str) -> Any:
    t = str(typ)
    if value is None:
        return None
    bad = ConfigError(f"{where} must be {_type_name(t)}, got {value!r:.60}")
    if "tuple" in t:
        if isinstance(value, str):
            try:
                value = [float(v) for v in value.split(",")]
            except ValueError:
                raise bad from None
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, (int, float)) for v in value):
            raise bad
        return tuple(float(v) for v in value)
    if t.startswith("bool"):
        if not isinstance(value, bool):
            raise bad
        return value
    if t.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if t.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if t.startswith("str"):
        if not isinstance(value, str):
            raise bad
        return value
    return value


def _type_name(t: str) -> str:
    for name, label in (("tuple", "two numbers"), ("bool", "true or false"), ("int", "a whole number"),
                        ("float", "a number"), ("str", "a string")):
        if t.startswith(name) or name in t[:6]:
            return label
    return t
