"""TensorFlow Playground's derived input features (x², y², xy, sin x, sin y) as the first layer of a model on
2-D points.

The features live in the model, not in the data: a checkpoint then takes raw 2-D points (``eval``, ``predict``, the
decision boundary and the neuron maps all feed it ``(x, y)``), and the features' own maps show in the neuron view as
the input layer.
"""

from __future__ import annotations

import numpy as np

from tuinet.engine.layers import Layer, register
from tuinet.errors import ModelError

#: canonical feature names, in Playground's order
FEATURES = ("x", "y", "x²", "y²", "xy", "sin x", "sin y")
#: what a user may type for each (the canonical name, ASCII spellings, the data's own column names)
ALIASES = {
    "x": "x", "x1": "x", "y": "y", "x2": "y",
    "x²": "x²", "x^2": "x²", "xx": "x²", "x1^2": "x²", "y²": "y²", "y^2": "y²", "yy": "y²", "x2^2": "y²",
    "xy": "xy", "x*y": "xy", "x1x2": "xy",
    "sin x": "sin x", "sinx": "sin x", "sin(x)": "sin x", "sin y": "sin y", "siny": "sin y", "sin(y)": "sin y",
}


def parse_features(spec: str | list[str] | None) -> list[str] | None:
    """Canonical feature names from ``"x,y,x^2,y^2,xy,sinx,siny"`` (or ``all``), in Playground's order; None for
    no spec (the raw x and y, no feature layer). ModelError with one line for an unknown or repeated name."""
    if spec is None:
        return None
    items = spec if isinstance(spec, list) else [s for s in str(spec).split(",")]
    names: list[str] = []
    for item in items:
        key = str(item).strip().lower()
        if key == "all":
            names.extend(FEATURES)
            continue
        if key not in ALIASES:
            raise ModelError(f"unknown input feature {item!r}; choose from x, y, x^2, y^2, xy, sinx, siny (or all)")
        names.append(ALIASES[key])
    if not names:
        raise ModelError("no input features given; choose from x, y, x^2, y^2, xy, sinx, siny (or all)")
    unique = set(names)
    return [f for f in FEATURES if f in unique]


@register
class PlaneFeatures(Layer):
    """Maps 2-D points ``(x, y)`` to the chosen features, e.g. ``[x, y, x², y², xy, sin x, sin y]``.

    No parameters; the backward pass returns the exact input gradient (it is the first layer, so it is rarely asked).

    Args:
        features: canonical names from :data:`FEATURES` (see :func:`parse_features`).
    """

    def __init__(self, features: list[str] | tuple[str, ...] = FEATURES):
        super().__init__()
        names = parse_features(list(features))
        self.features = names or list(FEATURES)
        self._x: np.ndarray | None = None

    def build(self, input_shape, rng):
        if tuple(input_shape) != (2,):
            raise ModelError(f"input features (x², xy, sin x, ...) need 2-D points, but samples have shape "
                             f"{tuple(input_shape)}")
        self.input_shape = (2,)
        self.output_shape = (len(self.features),)
        return self.output_shape

    def forward(self, x, training):
        self._x = x
        a, b = x[:, 0], x[:, 1]
        cols = {"x": lambda: a, "y": lambda: b, "x²": lambda: a * a, "y²": lambda: b * b, "xy": lambda: a * b,
                "sin x": lambda: np.sin(a), "sin y": lambda: np.sin(b)}
        out = np.empty((len(x), len(self.features)), dtype=np.float32)
        for j, f in enumerate(self.features):
            out[:, j] = cols[f]()
        return out

    def backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        a, b = self._x[:, 0], self._x[:, 1]
        dx = np.zeros_like(self._x)
        for j, f in enumerate(self.features):
            g = dy[:, j]
            if f == "x":
                dx[:, 0] += g
            elif f == "y":
                dx[:, 1] += g
            elif f == "x²":
                dx[:, 0] += 2 * a * g
            elif f == "y²":
                dx[:, 1] += 2 * b * g
            elif f == "xy":
                dx[:, 0] += b * g
                dx[:, 1] += a * g
            elif f == "sin x":
                dx[:, 0] += np.cos(a) * g
            else:  # sin y
                dx[:, 1] += np.cos(b) * g
        return dx

    def config(self):
        return {"type": "PlaneFeatures", "features": list(self.features)}

    def describe(self):
        return f"Features({', '.join(self.features)})"
