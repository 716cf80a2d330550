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
from pathlib import Path
from typing import Any

import numpy as np

from tuinet.engine.model import Sequential
from tuinet.engine.optim import Optimizer, make_optimizer
from tuinet.errors import CheckpointError, ModelError

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
        """A new model with the saved architecture and weights."""
        model = Sequential.from_config(self.meta["model"])
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
        hyper = dict(om["hyperparams"])
        lr = hyper.pop("lr")
        opt = make_optimizer(om["name"], model.params, lr=lr, **hyper)
        try:
            opt.load_state_dict(om, self.prefixed("optim"))
        except (KeyError, ValueError) as e:
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
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if META_KEY not in npz.files:
                raise CheckpointError(f"{path}: not a tuinet checkpoint (no {META_KEY} entry)")
            meta = json.loads(bytes(npz[META_KEY]).decode("utf-8"))
            arrays = {k: npz[k] for k in npz.files if k != META_KEY}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, UnicodeDecodeError, KeyError) as e:
        raise CheckpointError(f"{path}: not a tuinet checkpoint or damaged ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a tuinet checkpoint (format marker missing)")
    if meta.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {meta.get('version')} is newer than this tuinet reads")
    if "model" not in meta:
        raise CheckpointError(f"{path}: checkpoint has no model description")
    return Checkpoint(path, meta, arrays)
