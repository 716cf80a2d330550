"""Playground's neuron maps: every hidden unit's output over the input plane of a 2-D dataset, layer by layer.

The trainer puts them into the ``boundary`` event (as plain lists: the app only ever sees copies). A "layer" here is
what a Playground column is: the inputs (the raw x and y, or the derived features of ``--features``), then the
output of each hidden block (a Dense layer and what follows it up to the next Dense: its activation, batch norm,
dropout), left to right. The output layer is the decision boundary itself and is not repeated.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: grid points per side of every neuron map
NEURON_GRID = 20
#: at most this many units per layer and layers are sent (a wide net would make a huge event)
MAX_UNITS = 32
MAX_LAYERS = 8


def _plane(xrange, yrange, size: int) -> np.ndarray:
    gx = np.linspace(xrange[0], xrange[1], size, dtype=np.float32)
    gy = np.linspace(yrange[1], yrange[0], size, dtype=np.float32)  # top row = largest y
    return np.ascontiguousarray(np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2), dtype=np.float32)


def _block_outputs(model, grid: np.ndarray) -> list[tuple[str, list[str] | None, np.ndarray]]:
    """(label, unit names or None, outputs (points, units)) of the inputs and of every hidden block."""
    layers = model.layers
    dense = [i for i, layer in enumerate(layers) if layer.kind == "Dense"]
    out: list[tuple[str, list[str] | None, np.ndarray]] = []
    x = grid
    inputs_done = False
    block_label = None
    for i, layer in enumerate(layers):
        if layer.kind == "Dense":
            if not inputs_done:  # what the first Dense sees: the raw point or the derived features
                names = list(getattr(layers[i - 1], "features", [])) if i and layers[i - 1].kind == "PlaneFeatures" \
                    else ["x", "y"] if x.shape[1] == 2 else None
                out.append(("inputs", names, x.reshape(len(x), -1)))
                inputs_done = True
            elif block_label is not None:
                out.append((block_label, None, x.reshape(len(x), -1)))
            if i == dense[-1]:
                break  # the output layer: the decision boundary shows it
            block_label = f"{len(out)}: {layer.describe()}"
        elif block_label is not None and layer.kind not in ("Dropout", "Flatten"):
            block_label += f" {layer.describe()}"
        x = layer.forward(x, False)
    return out


def neuron_maps(model, xrange, yrange, size: int = NEURON_GRID) -> dict[str, Any]:
    """Every input's and hidden unit's output over a ``size`` x ``size`` grid covering ``xrange`` x ``yrange``.

    Returns ``{"size", "layers": [{"label", "units", "names", "scales", "maps"}], "truncated"}``. Per unit (at
    most :data:`MAX_UNITS` of a layer's ``units`` are sent), ``scales`` holds its largest absolute output and
    ``maps`` a ``size`` x ``size`` list of whole numbers from -100 to 100 (top row = largest y): the output as a
    percentage of that scale, which is all a picture needs and keeps the event small.
    """
    grid = _plane(xrange, yrange, size)
    blocks = _block_outputs(model, grid)
    layers = []
    for label, names, values in blocks[:MAX_LAYERS]:
        shown = np.nan_to_num(values[:, :MAX_UNITS].T.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        scales = np.abs(shown).max(axis=1) if shown.size else np.zeros(0)
        pct = np.round(100 * shown / np.where(scales > 0, scales, 1.0)[:, None]).astype(np.int64)
        layers.append({"label": label, "units": int(values.shape[1]), "names": names[:MAX_UNITS] if names else None,
                       "scales": [round(float(v), 4) for v in scales], "maps": pct.reshape(-1, size, size).tolist()})
    truncated = len(blocks) > MAX_LAYERS or any(b[2].shape[1] > MAX_UNITS for b in blocks)
    return {"size": size, "layers": layers, "truncated": truncated}
