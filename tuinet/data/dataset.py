"""The Dataset record handed to the trainer: prepared splits plus what is needed to explain them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tuinet.data.normalize import Normalizer

SPLITS = ("train", "val", "test")


@dataclass
class Dataset:
    """Train/validation/test arrays (x float32 C-contiguous; y int64 classes or float32 (N, k) targets).

    Args:
        name: built-in name (``"mnist"``) or the path given.
        task: ``"classification"`` or ``"regression"``.
        input_shape: shape of one sample, e.g. ``(28, 28, 1)`` (NHWC images) or ``(4,)``.
        class_names: one name per class index; ``[]`` for regression.
        normalizer: the transform already applied to every split, fitted on the training split only.
        feature_names: column names for tables (regression: ``target_names`` holds the target columns).
    """

    name: str
    task: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    input_shape: tuple[int, ...]
    class_names: list[str]
    normalizer: Normalizer
    feature_names: list[str] | None = None
    target_names: list[str] | None = None

    @property
    def num_outputs(self) -> int:
        """Number of classes (classification) or of regression targets."""
        if self.task == "classification":
            return len(self.class_names)
        return int(self.y_train.shape[1]) if self.y_train.ndim == 2 else 1

    @property
    def is_image(self) -> bool:
        """True for (H, W, C) samples."""
        return len(self.input_shape) == 3

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(x, y)`` of ``"train"``, ``"val"`` or ``"test"``."""
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; choose train, val or test")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def class_counts(self, split: str = "train") -> list[int]:
        """Samples per class in one split (classification only)."""
        y = self.split(split)[1]
        return np.bincount(y, minlength=len(self.class_names)).tolist() if self.class_names else []

    def feature_ranges(self) -> list[dict]:
        """Per feature (tables) or per channel (images): raw and normalized min/max/mean of the training split."""
        x = self.x_train.reshape(-1, self.x_train.shape[-1]) if self.x_train.size else None
        if x is None:
            return []
        lo, hi, mean = x.min(axis=0), x.max(axis=0), x.mean(axis=0, dtype=np.float64).astype(np.float32)
        raw = self.normalizer.inverse_transform(np.stack([lo, hi, mean]))
        names = self.feature_names if (self.feature_names and len(self.feature_names) == x.shape[1]) else None
        if names is None:
            names = (["gray"] if x.shape[1] == 1 else ["red", "green", "blue", "alpha"][:x.shape[1]]) \
                if self.is_image else [f"x{i}" for i in range(x.shape[1])]
        return [{"name": names[i], "min": float(raw[0, i]), "max": float(raw[1, i]), "mean": float(raw[2, i]),
                 "norm_min": float(lo[i]), "norm_max": float(hi[i])} for i in range(x.shape[1])]

    def describe(self) -> dict:
        """Sizes, shapes, classes and task as a JSON-serialisable dict."""
        d = {
            "name": self.name,
            "task": self.task,
            "input_shape": list(self.input_shape),
            "num_outputs": self.num_outputs,
            "class_names": list(self.class_names),
            "sizes": {s: int(len(self.split(s)[0])) for s in SPLITS},
            "normalizer": self.normalizer.kind,
            "feature_names": self.feature_names,
        }
        if self.task == "classification":
            d["class_counts"] = {s: self.class_counts(s) for s in SPLITS}
        else:
            d["target_names"] = self.target_names
            d["target_ranges"] = [
                {"min": float(c.min()), "max": float(c.max()), "mean": float(c.mean())}
                for c in self.y_train.reshape(len(self.y_train), -1).T
            ] if len(self.y_train) else []
        return d

    def summary(self, max_features: int = 16) -> str:
        """A multi-line text summary: task, shapes, split sizes, class counts and feature ranges."""
        d = self.describe()
        sizes = d["sizes"]
        total = sum(sizes.values())
        kind = (f"classification, {len(self.class_names)} classes" if self.task == "classification"
                else f"regression, {self.num_outputs} target(s)")
        lines = [
            f"{self.name}: {kind}",
            f"  input shape   {tuple(self.input_shape)}  (x float32; y "
            + ("int64 class index)" if self.task == "classification" else f"float32 {self.y_train.shape[1:]})"),
            f"  samples       {total:,}: train {sizes['train']:,} · val {sizes['val']:,} · test {sizes['test']:,}",
            f"  normalization {self.normalizer.kind} (fitted on the training split)",
        ]
        if self.task == "classification":
            width = max(len(n) for n in self.class_names)
            lines.append(f"  classes       {'':{width}}  train    val   test")
            counts = d["class_counts"]
            for i, n in enumerate(self.class_names):
                lines.append(f"    {i:>3} {n:<{width}}       {counts['train'][i]:>7,} {counts['val'][i]:>6,} "
                             f"{counts['test'][i]:>6,}")
        else:
            names = self.target_names or [f"y{i}" for i in range(self.num_outputs)]
            for n, r in zip(names, d["target_ranges"]):
                lines.append(f"  target {n}: min {r['min']:.4g}  max {r['max']:.4g}  mean {r['mean']:.4g}")
        ranges = self.feature_ranges()
        label = "channels" if self.is_image else "features"
        lines.append(f"  {label} (train, raw -> normalized):")
        width = max((len(r["name"]) for r in ranges[:max_features]), default=4)
        for r in ranges[:max_features]:
            lines.append(f"    {r['name']:<{width}}  [{r['min']:.4g}, {r['max']:.4g}] mean {r['mean']:.4g}"
                         f"  -> [{r['norm_min']:.3g}, {r['norm_max']:.3g}]")
        if len(ranges) > max_features:
            lines.append(f"    … and {len(ranges) - max_features} more")
        return "\n".join(lines)
