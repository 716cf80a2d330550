"""Feature normalization fitted on the training split and saved with the model."""

from __future__ import annotations

import numpy as np

from tuinet.errors import DataError

KINDS = ("minmax", "standard", "none")
MAX_CHANNELS = 1 << 24  # entries of a saved shift/scale
_CHUNK = 8192  # rows per chunk when accumulating statistics, to avoid a float64 copy of the data


class Normalizer:
    """Per-channel affine transform ``(x - shift) / scale``, fitted on training data only.

    Statistics are taken over every axis except the last, so a table gets one pair per column and an
    NHWC image set one pair per colour channel (MNIST: a single min/max, i.e. ``pixel / 255``).

    Args:
        kind: ``"minmax"`` (to [0, 1]), ``"standard"`` (zero mean, unit variance) or ``"none"``.
    """

    def __init__(self, kind: str = "none", shift=None, scale=None):
        if kind not in KINDS:
            raise DataError(f"unknown normalization {kind!r}; choose one of: {', '.join(KINDS)}")
        self.kind = kind
        self.shift = None if shift is None else np.asarray(shift, dtype=np.float32)
        self.scale = None if scale is None else np.asarray(scale, dtype=np.float32)

    @property
    def fitted(self) -> bool:
        """True once ``fit`` (or ``from_dict``) has set the statistics."""
        return self.kind == "none" or self.shift is not None

    def fit(self, x: np.ndarray) -> "Normalizer":
        """Compute the statistics from ``x`` (the training split) and return self."""
        x = np.asarray(x)
        if x.ndim == 1:
            x = x[:, None]
        if x.shape[0] == 0:
            raise DataError("cannot fit a normalizer on an empty training split")
        channels = x.shape[-1]
        flat = x.reshape(-1, channels)
        if self.kind == "none":
            self.shift = np.zeros(channels, np.float32)
            self.scale = np.ones(channels, np.float32)
        elif self.kind == "minmax":
            if channels == 1:  # a 1-wide axis-0 reduction is slow; reduce the flat array instead
                lo = np.array([flat.min()], np.float64)
                hi = np.array([flat.max()], np.float64)
            else:
                lo = flat.min(axis=0).astype(np.float64)
                hi = flat.max(axis=0).astype(np.float64)
            rng = hi - lo
            self.shift = lo.astype(np.float32)
            self.scale = np.where(rng > 0, rng, 1.0).astype(np.float32)
        else:
            total = np.zeros(channels)
            total_sq = np.zeros(channels)
            for i in range(0, flat.shape[0], _CHUNK):
                part = flat[i:i + _CHUNK].astype(np.float64)
                total += part.sum(axis=0)
                total_sq += np.square(part).sum(axis=0)
            n = flat.shape[0]
            mean = total / n
            var = np.maximum(total_sq / n - mean**2, 0.0)
            std = np.sqrt(var)
            self.shift = mean.astype(np.float32)
            self.scale = np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0).astype(np.float32)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Return ``(x - shift) / scale`` as a new float32, C-contiguous, writable array."""
        if not self.fitted:
            raise DataError("normalizer used before it was fitted")
        x = np.asarray(x)
        out = np.empty(x.shape, dtype=np.float32)
        if self.kind == "none":
            out[...] = x
            return out
        self._check_width(x)
        out[...] = x
        return self.apply_inplace(out)

    def apply_inplace(self, out: np.ndarray) -> np.ndarray:
        """Normalize a C-contiguous float32 array in place and return it (saves a copy for big image sets)."""
        if self.kind == "none":
            return out
        self._check_width(out)
        # operate on a (rows, channels) view: a trailing axis of 1 would make NumPy loop one element at a time
        if self.shift.size == 1:
            flat = out.reshape(-1)
            flat -= self.shift[0]
            flat /= self.scale[0]
        else:
            flat = out.reshape(-1, self.shift.size)
            flat -= self.shift
            flat /= self.scale
        return out

    def inverse_transform(self, x: np.ndarray) -> np.ndarray:
        """Undo ``transform`` (for showing raw values)."""
        x = np.asarray(x, dtype=np.float32)
        if self.kind == "none":
            return x.copy()
        self._check_width(x)
        return np.ascontiguousarray(x * self.scale + self.shift, dtype=np.float32)

    def _check_width(self, x) -> None:
        width = x.shape[-1] if x.ndim else 1
        if self.shift.size not in (1, width):
            raise DataError(f"data has {width} features/channels but the normalizer was fitted on {self.shift.size}")

    def to_dict(self) -> dict:
        """JSON-serialisable form (lists of floats)."""
        d = {"kind": self.kind}
        if self.shift is not None:
            d["shift"] = [float(v) for v in self.shift]
            d["scale"] = [float(v) for v in self.scale]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Normalizer":
        """Rebuild a normalizer saved with ``to_dict``, checking every field (it may come from a crafted file)."""
        if not isinstance(d, dict):
            raise DataError(f"invalid normalizer record: expected an object, got {type(d).__name__}")
        kind = d.get("kind")
        if not isinstance(kind, str) or kind not in KINDS:
            raise DataError(f"invalid normalizer record: kind must be one of {', '.join(KINDS)}, got {kind!r:.40}")
        stats = []
        for key in ("shift", "scale"):
            v = d.get(key)
            if v is None:
                stats.append(None)
                continue
            if not isinstance(v, list) or not v or len(v) > MAX_CHANNELS or not all(
                    isinstance(e, (int, float)) and not isinstance(e, bool) for e in v):
                raise DataError(f"invalid normalizer record: {key} must be a list of 1 to {MAX_CHANNELS:,} numbers")
            a = np.asarray(v, dtype=np.float64)
            if not (np.abs(a) <= np.finfo(np.float32).max).all():
                raise DataError(f"invalid normalizer record: {key} holds NaN, infinite or out-of-float32-range values")
            stats.append(a)
        shift, scale = stats
        if kind != "none" and (shift is None or scale is None):
            raise DataError(f"invalid normalizer record: a {kind} normalizer needs shift and scale")
        if (shift is None) != (scale is None) or (shift is not None and len(shift) != len(scale)):
            raise DataError("invalid normalizer record: shift and scale differ in length")
        if scale is not None and not (scale.astype(np.float32) > 0).all():
            raise DataError("invalid normalizer record: every scale must be > 0")
        return cls(kind, shift, scale)

    def __eq__(self, other) -> bool:
        return isinstance(other, Normalizer) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        n = 0 if self.shift is None else self.shift.size
        return f"Normalizer(kind={self.kind!r}, channels={n})"
