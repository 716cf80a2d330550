"""Data augmentation's setting: what ``--augment`` takes (``shift=2,rotate=15,scale=0.1,flip,erase=0.5,noise=0.1``),
checked and written back in one canonical form, and what it applies to. The batches are made by the engine's
compiled kernels (:mod:`tuinet.engine.augment`); this module needs neither the engine nor Numba, so a viewer or a
config file that names an augmentation loads nothing heavy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from tuinet.errors import ConfigError

#: what ``--augment`` takes, in the order a canonical spec is written: name -> (value kind, help)
KINDS = {
    "shift": ("int", "move by up to N pixels across and down (whole pixels, as torchvision)"),
    "rotate": ("float", "turn by up to D degrees either way"),
    "scale": ("float", "zoom by a factor from 1-F to 1+F"),
    "flip": ("flag", "mirror left to right, half of the samples"),
    "erase": ("float", "with probability P, a random rectangle (2-33% of the picture) set to the background"),
    "noise": ("float", "Gaussian noise of standard deviation S added to every input value (normalized units)"),
}
PICTURES_ONLY = ("shift", "rotate", "scale", "flip", "erase")  # these need picture (H, W, C) samples
LIMITS = {"rotate": (0.0, 180.0), "scale": (0.0, 0.9), "erase": (0.0, 1.0), "noise": (0.0, 10.0)}
MAX_SHIFT = 1000

@dataclass(frozen=True)
class Augment:
    """One augmentation setting (all zero: none).

    Args:
        shift: largest move in whole pixels, each axis.
        rotate: largest turn in degrees, either way.
        scale: zoom range ``1 - scale .. 1 + scale``.
        flip: mirror left-right with probability 0.5.
        erase: probability of erasing one random rectangle.
        noise: standard deviation of the Gaussian noise added (normalized units).
    """

    shift: int = 0
    rotate: float = 0.0
    scale: float = 0.0
    flip: bool = False
    erase: float = 0.0
    noise: float = 0.0

    @property
    def active(self) -> bool:
        """True when it changes anything."""
        return any(getattr(self, f.name) for f in fields(self))

    @property
    def pictures_only(self) -> bool:
        """True when it needs image inputs (anything but noise)."""
        return any(getattr(self, name) for name in PICTURES_ONLY)

    @property
    def warps(self) -> bool:
        """True when samples are moved (shift, rotate, scale or flip)."""
        return bool(self.shift or self.rotate or self.scale or self.flip)

    def spec(self) -> str:
        """The canonical spec (``"shift=2,rotate=15"``; ``"none"`` when inactive), which :func:`parse_augment`
        reads back to an equal setting."""
        parts = []
        for name, (kind, _) in KINDS.items():
            v = getattr(self, name)
            if not v:
                continue
            parts.append(name if kind == "flag" else f"{name}={v:g}" if kind == "float" else f"{name}={v}")
        return ",".join(parts) or "none"


def parse_augment(spec: str | None) -> Augment:
    """An :class:`Augment` from ``"shift=2,rotate=15,scale=0.1,flip,erase=0.5,noise=0.1"`` (any order; ``none`` or
    an empty spec: no augmentation). ConfigError with one line for an unknown name, a missing, extra or
    out-of-range value, or a name given twice."""
    if spec is None:
        return Augment()
    if not isinstance(spec, str):
        raise ConfigError(f"augment must be a string such as 'shift=2,rotate=15', got {spec!r:.60}")
    text = spec.strip().lower()
    if text in ("", "none", "off"):
        return Augment()
    values: dict[str, Any] = {}
    choices = ", ".join(f"{n}=N" if k != "flag" else n for n, (k, _) in KINDS.items())
    for item in text.split(","):
        name, eq, raw = (part.strip() for part in item.partition("="))
        if name not in KINDS:
            raise ConfigError(f"unknown augmentation {name!r}; choose from {choices}")
        if name in values:
            raise ConfigError(f"augmentation {name!r} given twice")
        kind = KINDS[name][0]
        if kind == "flag":
            if eq:
                raise ConfigError(f"augmentation 'flip' takes no value (got 'flip={raw}')")
            values[name] = True
            continue
        if not eq or not raw:
            raise ConfigError(f"augmentation {name!r} needs a value, e.g. {name}={_example(name)}")
        try:
            value = int(raw) if kind == "int" else float(raw)
        except ValueError:
            what = "a whole number" if kind == "int" else "a number"
            raise ConfigError(f"augmentation {name!r} must be {what}, got {raw!r:.40}") from None
        lo, hi = LIMITS.get(name, (0, MAX_SHIFT))
        if not (math.isfinite(value) and lo <= value <= hi):
            raise ConfigError(f"augmentation {name!r} must be from {lo:g} to {hi:g}, got {raw}")
        values[name] = value
    return Augment(**values)


def _example(name: str) -> str:
    return {"shift": "2", "rotate": "15", "scale": "0.1", "erase": "0.5", "noise": "0.1"}[name]


def check_input(aug: Augment, input_shape: tuple[int, ...], dataset: str) -> None:
    """ConfigError with one line when ``aug`` does not apply to inputs of ``input_shape`` (moving, flipping and
    erasing need pictures; noise applies to any input)."""
    if aug.pictures_only and len(input_shape) != 3:
        used = ", ".join(n for n in PICTURES_ONLY if getattr(aug, n))
        raise ConfigError(f"--augment {used}: works on pictures, and {dataset}'s samples are rows of "
                          f"{int(np.prod(input_shape))} values; only noise applies to them")
    if aug.shift and len(input_shape) == 3 and aug.shift >= min(input_shape[0], input_shape[1]):
        raise ConfigError(f"--augment shift={aug.shift} moves {dataset}'s {input_shape[0]}x{input_shape[1]} pictures "
                          "out of their frame; give less than their side")


def background(x_train: np.ndarray) -> np.ndarray:
    """Each channel's darkest value in the (normalized) training pictures ``(N, H, W, C)``: what fills the pixels
    an augmentation moves in from outside the picture (MNIST: its black)."""
    channels = x_train.shape[-1]
    flat = x_train.reshape(-1) if channels == 1 else x_train.reshape(-1, channels)
    return np.atleast_1d(flat.min(axis=0)).astype(np.float32)
