"""Checkpoints: architecture, weights, optimizer state and anything else as one ``.npz`` holding arrays + JSON.

Layout of the archive (loaded with ``allow_pickle=False``):

* ``tuinet.json``: UTF-8 JSON as a uint8 array: ``{"format": "tuinet-checkpoint", "version": 1, "model": ...,
  "optimizer": {...} | null, "extra": {...}}``;
* ``model/<layer>.<param>``: every parameter and buffer;
* ``optim/<index>.<state>``: the optimizer's state arrays.

Writes are atomic: a temporary file in the same folder is written, fsynced, then renamed over the target, so a
crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from tuinet.engine.model import Sequential
from tuinet.engine.optim import Optimizer, make_optimizer
from tuinet.errors import CheckpointError, ConfigError, ModelError

FORMAT = "tuinet-checkpoint"
VERSION = 1
META_KEY = "tuinet.json"


def atomic_write_bytes(path: Path, write) -> None:
    """Call ``write(fileobj)`` on a temporary file next to ``path``, fsync it and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        try:
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def save_checkpoint(path: str | Path, model: Sequential, optimizer: Optimizer | None = None,
                    extra: dict[str, Any] | None = None, extra_arrays: dict[str, np.ndarray] | None = None) -> Path:
    """Write model (+ optimizer, + extra JSON and arrays) atomically to ``path``; return the path."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {f"model/{k}": v for k, v in model.named_arrays().items()}
    opt_meta = None
    if optimizer is not None:
        opt_meta, opt_arrays = optimizer.state_dict()
        arrays.update({f"optim/{k}": v for k, v in opt_arrays.items()})
    for k, v in (extra_arrays or {}).items():
        arrays[f"extra/{k}"] = np.asarray(v)
    meta = {"format": FORMAT, "version": VERSION, "model": model.config(), "optimizer": opt_meta,
            "extra": extra or {}}
    arrays[META_KEY] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    atomic_write_bytes(path, lambda f: np.savez(f, **arrays))
    return path


class Checkpoint:
    """A loaded checkpoint: its JSON metadata and arrays (read eagerly, file closed)."""

    def __init__(self, path: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]):
        self.path = path
        self.meta = meta
        self.arrays = arrays

    @property
    def extra(self) -> dict[str, Any]:
        """The extra JSON saved with the checkpoint (training position, dataset, normalizer ...)."""
        return self.meta.get("extra", {})

    def prefixed(self, prefix: str) -> dict[str, np.ndarray]:
        """Arrays under ``prefix/`` with the prefix removed."""
        n = len(prefix) + 1
        return {k[n:]: v for k, v in self.arrays.items() if k.startswith(prefix + "/")}

    def build_model(self) -> Sequential:
        """A new model with the saved architecture and weights; CheckpointError naming the file when the saved
        description cannot be built or does not match the saved weights."""
        cfg = self.meta["model"]
        try:
            _preflight(self.path, cfg, self.prefixed("model"))
            model = Sequential.from_config(cfg)
        except CheckpointError:
            raise
        except (ModelError, ConfigError) as e:
            raise CheckpointError(f"{self.path}: invalid model description ({e})") from None
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError, IndexError) as e:
            raise CheckpointError(f"{self.path}: invalid model description ({type(e).__name__}: {e})") from None
        except MemoryError:
            raise CheckpointError(f"{self.path}: the model it describes does not fit in memory") from None
        self.load_into(model)
        return model

    def load_into(self, model: Sequential) -> None:
        """Copy the saved weights into ``model``; a clear error when the architecture differs."""
        saved = self.meta["model"]
        own = model.config()
        if _arch(saved) != _arch(own):
            raise CheckpointError(
                f"{self.path}: checkpoint is for another architecture "
                f"(saved {describe_arch(saved)}; this model is {describe_arch(own)})"
            )
        try:
            model.set_weights(self.prefixed("model"))
        except ModelError as e:
            raise CheckpointError(f"{self.path}: {e}") from None

    def build_optimizer(self, model: Sequential) -> Optimizer | None:
        """The saved optimizer with its state, bound to ``model``'s parameters (None when none was saved)."""
        om = self.meta.get("optimizer")
        if not om:
            return None
        state = self.prefixed("optim")
        for k, a in state.items():
            if _bad_floats(a):
                raise CheckpointError(f"{self.path}: optimizer state {k} holds NaN, infinite or non-numeric values; "
                                      "refusing to resume from it")
        try:
            hyper = dict(om["hyperparams"])
            lr = hyper.pop("lr")
            if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not 0 < lr <= FLOAT32_MAX:
                raise ValueError(f"learning rate {lr!r:.40} is not a positive float32 number")
            opt = make_optimizer(om["name"], model.params, lr=lr, **hyper)
        except (KeyError, ValueError, TypeError, AttributeError, ConfigError, ModelError) as e:
            raise CheckpointError(f"{self.path}: invalid optimizer record ({type(e).__name__}: {e})") from None
        try:
            opt.load_state_dict(om, state)
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"{self.path}: optimizer state does not fit the model ({e})") from None
        return opt


def _arch(cfg: dict[str, Any]) -> tuple:
    return (tuple(cfg.get("input_shape", ())), json.dumps(cfg.get("layers", []), sort_keys=True))


def describe_arch(cfg: dict[str, Any]) -> str:
    """A compact architecture description for error messages."""
    parts = []
    for lc in cfg.get("layers", []):
        t = lc.get("type", "?")
        if "units" in lc:
            t += f"({lc['units']})"
        elif "filters" in lc:
            t += f"({lc['filters']})"
        parts.append(t)
    return f"input {tuple(cfg.get('input_shape', ()))} -> " + "-".join(parts)


#: the most values one input sample of a loaded model may have (2048 x 2048 gray; about 1182 x 1182 RGB)
MAX_INPUT_VALUES = 1 << 22
FLOAT32_MAX = float(np.finfo(np.float32).max)
#: arrays may declare at most this many times the file's size (+ slack) of data: more is a compression bomb
_MAX_EXPANSION, _SLACK = 16, 16 << 20


def _bad_floats(a: np.ndarray) -> bool:
    """True when ``a`` is not numeric or holds NaN, inf or values beyond float32's range."""
    if a.dtype.kind in "biu":
        return False
    if a.dtype.kind != "f":
        return True
    with np.errstate(invalid="ignore"):
        return not bool((np.abs(a) <= FLOAT32_MAX).all())


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _validate_meta(path: Path, meta: Any) -> None:
    """Check the JSON record's structure and types, so a crafted file fails here with one line naming it."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a tuinet checkpoint (format marker missing)")
    version = meta.get("version")
    if not _is_int(version) or version < 1:
        raise CheckpointError(f"{path}: invalid checkpoint version {version!r:.40} (expected a whole number)")
    if version > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {version} is newer than this tuinet reads")
    model = meta.get("model")
    if model is None:
        raise CheckpointError(f"{path}: checkpoint has no model description")
    if not isinstance(model, dict):
        raise CheckpointError(f"{path}: invalid model description (expected an object, got {type(model).__name__})")
    shape = model.get("input_shape")
    if not isinstance(shape, list) or not 1 <= len(shape) <= 3 or not all(_is_int(d) and d >= 1 for d in shape):
        raise CheckpointError(f"{path}: invalid model input shape {shape!r:.60} (expected 1 to 3 positive whole "
                              "numbers)")
    if int(np.prod(shape, dtype=np.float64)) > MAX_INPUT_VALUES:
        raise CheckpointError(f"{path}: model input shape {tuple(shape)} is too large (at most "
                              f"{MAX_INPUT_VALUES:,} values per sample)")
    layers = model.get("layers")
    if not isinstance(layers, list) or not layers or not all(
            isinstance(lc, dict) and isinstance(lc.get("type"), str) for lc in layers):
        raise CheckpointError(f"{path}: invalid model description (layers must be a non-empty list of objects "
                              "with a type)")
    for key in ("l1", "l2"):
        v = model.get(key, 0.0)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= FLOAT32_MAX:
            raise CheckpointError(f"{path}: invalid model {key} penalty {v!r:.40}")
    if not _is_int(model.get("seed", 0)) or model.get("seed", 0) < 0:
        raise CheckpointError(f"{path}: invalid model seed {model.get('seed')!r:.40}")
    if not isinstance(model.get("loss", ""), str):
        raise CheckpointError(f"{path}: invalid model loss {model.get('loss')!r:.40}")
    opt = meta.get("optimizer")
    if opt is not None and not (isinstance(opt, dict) and isinstance(opt.get("name"), str)
                                and isinstance(opt.get("hyperparams"), dict)):
        raise CheckpointError(f"{path}: invalid optimizer record (expected an object with a name and hyperparams)")
    extra = meta.get("extra", {})
    if not isinstance(extra, dict):
        raise CheckpointError(f"{path}: invalid extra record (expected an object, got {type(extra).__name__})")
    for key in ("trainer", "dataset", "config"):
        if key in extra and not isinstance(extra[key], dict):
            raise CheckpointError(f"{path}: invalid {key} record (expected an object, got "
                                  f"{type(extra[key]).__name__})")


def _param_bound(layer: Any, shape: tuple[int, ...]) -> int | None:
    """How many parameters ``layer`` allocates for inputs of ``shape`` (a lower bound; None when it has none or
    the kind is not known here). Only kinds whose size grows with their input or options are listed."""
    kind = type(layer).__name__
    try:
        if kind == "Dense" and len(shape) == 1:
            return shape[0] * int(layer.units)
        if kind == "Conv2D" and len(shape) == 3:
            kh, kw = layer.kernel_size
            return int(kh) * int(kw) * shape[2] * int(layer.filters)
        if kind == "ResidualBlock" and len(shape) == 3:
            k, f = int(layer.kernel_size), int(layer.filters)
            return k * k * shape[2] * f + k * k * f * f
        if kind == "BatchNorm" and shape:
            return 2 * shape[-1]
    except (AttributeError, TypeError, ValueError):
        return None
    return None


def _preflight(path: Path, cfg: dict[str, Any], saved: dict[str, np.ndarray]) -> None:
    """Build the described layers one by one, each only after checking that the weights it would allocate are
    no more than the checkpoint holds for it: a crafted description (a Dense layer of 10**12 units, a huge
    input) is refused before it can exhaust the memory."""
    from tuinet.engine.layers import Layer

    rng = np.random.default_rng(0)
    shape = tuple(int(d) for d in cfg["input_shape"])
    for i, lc in enumerate(cfg["layers"]):
        layer = Layer.from_config(lc)
        prefix = f"{lc['type'].lower()}_{i}."
        held = sum(int(a.size) for k, a in saved.items() if k.startswith(prefix))
        need = _param_bound(layer, shape)
        if need is not None and need > held:
            raise CheckpointError(f"{path}: layer {i + 1} ({lc['type']}) would need at least {need:,} weights for "
                                  f"inputs of shape {shape}, but the checkpoint holds {held:,} for it")
        shape = tuple(int(d) for d in layer.build(shape, rng))
        if int(np.prod(shape, dtype=np.float64)) > 16 * MAX_INPUT_VALUES:
            raise CheckpointError(f"{path}: layer {i + 1} ({lc['type']}) outputs {shape}, too large per sample")


def _declared_bytes(path: Path) -> int:
    """The data the archive's ``.npy`` members declare in their headers (read without loading them)."""
    total = 0
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.filename.endswith(".npy"):
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                        np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(f)
                total += int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    return total


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a tuinet checkpoint; raise CheckpointError with one clear line when it is not one or is damaged."""
    path = Path(path)
    if path.is_dir():
        for name in ("latest.npz", "best.npz"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise CheckpointError(f"{path}: folder holds no checkpoint (latest.npz or best.npz)")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file" if not path.exists() else
                              f"{path}: not a regular file; give a checkpoint (.npz) file")
    try:
        declared = _declared_bytes(path)
        if declared > _MAX_EXPANSION * path.stat().st_size + _SLACK:
            raise CheckpointError(f"{path}: its arrays declare {declared:,} bytes of data, far more than the file "
                                  "holds (a compression bomb?)")
        with np.load(path, allow_pickle=False) as npz:
            if META_KEY not in npz.files:
                raise CheckpointError(f"{path}: not a tuinet checkpoint (no {META_KEY} entry)")
            meta = json.loads(bytes(npz[META_KEY]).decode("utf-8"))
            arrays = {k: npz[k] for k in npz.files if k != META_KEY}
    except CheckpointError:
        raise
    except ValueError as e:
        if "pickle" in str(e):  # NumPy's own words suggest loading it "unsafely": a checkpoint never needs that
            raise CheckpointError(f"{path}: not a tuinet checkpoint (it holds pickled Python objects, which tuinet "
                                  "never loads)") from None
        raise CheckpointError(f"{path}: not a tuinet checkpoint or damaged ({type(e).__name__}: "
                              f"{str(e)[:120]})") from None
    except (zipfile.BadZipFile, OSError, EOFError, UnicodeDecodeError, KeyError, TypeError,
            RecursionError, zlib.error) as e:
        raise CheckpointError(f"{path}: not a tuinet checkpoint or damaged ({type(e).__name__}: "
                              f"{str(e)[:120]})") from None
    _validate_meta(path, meta)
    for k, a in arrays.items():
        if k.startswith("model/") and _bad_floats(a):
            raise CheckpointError(f"{path}: weight {k[6:]} holds NaN, infinite or non-numeric values (the run had "
                                  "diverged?); refusing to use it")
    return Checkpoint(path, meta, arrays)
