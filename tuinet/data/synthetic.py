"""Synthetic datasets generated from a seed: the 2-D sets of TensorFlow Playground and two regressions."""

from __future__ import annotations

import numpy as np

# name -> (task, default size, default noise, description)
SYNTHETIC = {
    "spiral": ("classification", 1000, 0.1, "two interleaved spirals (2-D)"),
    "circles": ("classification", 1000, 0.1, "a disc inside a ring (2-D)"),
    "xor": ("classification", 1000, 0.05, "four quadrants, label = sign(x*y) (2-D)"),
    "gaussian": ("classification", 1000, 0.5, "two Gaussian blobs (2-D)"),
    "moons": ("classification", 1000, 0.1, "two interleaving half circles (2-D)"),
    "sine": ("regression", 1000, 0.1, "y = sin(x) on [-3, 3] plus noise (1 -> 1)"),
    "regression": ("regression", 1000, 0.1, "a smooth 2-D surface y = sin(x1) * cos(x2) + x1 / 4 plus noise (2 -> 1)"),
}


def make_synthetic(name: str, n: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``n`` samples: (x float64 (n, d), y int64 labels or float (n, 1) targets)."""
    rng = np.random.default_rng(seed)
    n0 = n // 2
    n1 = n - n0
    if name == "spiral":
        parts = []
        for label, m in ((0, n0), (1, n1)):
            r = np.linspace(0.05, 1.0, m)
            t = 1.75 * 2 * np.pi * r + label * np.pi
            pts = np.stack([r * np.sin(t), r * np.cos(t)], axis=1)
            parts.append(pts + rng.normal(0, noise, pts.shape))
        x = np.concatenate(parts)
        y = np.repeat([0, 1], [n0, n1])
    elif name == "circles":
        r_in = rng.uniform(0, 0.5, n0)
        r_out = rng.uniform(0.7, 1.0, n1)
        t = rng.uniform(0, 2 * np.pi, n)
        r = np.concatenate([r_in, r_out])
        x = np.stack([r * np.cos(t), r * np.sin(t)], axis=1) + rng.normal(0, noise, (n, 2))
        y = np.repeat([0, 1], [n0, n1])
    elif name == "xor":
        # balanced: label 0 in the same-sign quadrants, label 1 in the mixed-sign ones
        x = np.abs(rng.uniform(-1, 1, (n, 2))) + 0.05  # a small margin around the axes, as in the Playground
        s0 = rng.choice([-1.0, 1.0], n)
        y = np.repeat([0, 1], [n0, n1])
        x[:, 0] *= s0
        x[:, 1] *= np.where(y == 0, s0, -s0)
        x = x + rng.normal(0, noise, x.shape)
    elif name == "gaussian":
        centers = np.array([[-1.0, -1.0], [1.0, 1.0]])
        y = np.repeat([0, 1], [n0, n1])
        x = centers[y] + rng.normal(0, max(noise, 1e-6), (n, 2))
    elif name == "moons":
        t0 = rng.uniform(0, np.pi, n0)
        t1 = rng.uniform(0, np.pi, n1)
        a = np.stack([np.cos(t0), np.sin(t0)], axis=1)
        b = np.stack([1 - np.cos(t1), 0.5 - np.sin(t1)], axis=1)
        x = np.concatenate([a, b]) + rng.normal(0, noise, (n, 2))
        y = np.repeat([0, 1], [n0, n1])
    elif name == "sine":
        x = rng.uniform(-3, 3, (n, 1))
        y = np.sin(x) + rng.normal(0, noise, (n, 1))
        return x, y
    elif name == "regression":
        x = rng.uniform(-3, 3, (n, 2))
        y = (np.sin(x[:, 0]) * np.cos(x[:, 1]) + x[:, 0] / 4)[:, None] + rng.normal(0, noise, (n, 1))
        return x, y
    else:
        raise KeyError(name)
    return x, y.astype(np.int64)
