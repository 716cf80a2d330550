"""What the trainer reports about the network: layer statistics, weight pictures, sample predictions, confusion."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tuinet.engine import kernels as K
from tuinet.engine.layers import Dense, ReLU

#: gradient norms below / above these are flagged as vanishing / exploding
VANISHING = 1e-7
EXPLODING = 1e3


def trainable_layers(model) -> list:
    """Layers that own parameters, in order."""
    return [layer for layer in model.layers if layer.params]


def layer_stats(model, before: dict[str, list[np.ndarray]] | None = None) -> list[dict[str, Any]]:
    """Per-layer weight statistics, gradient norm, update/weight ratio and dead-ReLU fraction.

    Args:
        model: the model right after an optimizer step (gradients from that step still in its buffers).
        before: the parameters of each layer (by name) copied before that step, for the update ratio.
    """
    rows: list[dict[str, Any]] = []
    layers = model.layers
    for i, layer in enumerate(layers):
        if not layer.params and not isinstance(layer, ReLU):
            continue
        row: dict[str, Any] = {"name": layer.name, "kind": layer.kind, "describe": layer.describe(),
                               "output_shape": list(layer.output_shape), "params": layer.num_params()}
        if layer.params:
            w = layer.params[0]
            wf = w.reshape(-1)
            row.update(weight_mean=float(wf.mean(dtype=np.float64)), weight_std=float(wf.std(dtype=np.float64)),
                       weight_min=float(wf.min()), weight_max=float(wf.max()))
            gsq = sum(K.sum_squares(g.reshape(-1)) for g in layer.grads)
            row["grad_norm"] = math.sqrt(gsq)
            wsq = sum(K.sum_squares(p.reshape(-1)) for p in layer.params)
            row["weight_norm"] = math.sqrt(wsq)
            if before is not None and layer.name in before:
                dsq = sum(float(np.sum((p.astype(np.float64) - b) ** 2)) for p, b in zip(layer.params,
                                                                                           before[layer.name]))
                row["update_ratio"] = math.sqrt(dsq) / max(row["weight_norm"], 1e-12)
            row["flag"] = ("vanishing" if row["grad_norm"] < VANISHING else
                           "exploding" if row["grad_norm"] > EXPLODING or not math.isfinite(row["grad_norm"])
                           else "")
        # a ReLU after this layer tells how many units are dead: the layer itself, the next layer, or the one after
        # a max-pooling (a channel whose pooled maxima are all <= 0 had all its outputs <= 0: the same units)
        relu = layer if isinstance(layer, ReLU) else next(
            (layers[j] for j in (i + 1, i + 2) if j < len(layers) and isinstance(layers[j], ReLU)
             and all(between.kind == "MaxPool2D" for between in layers[i + 1:j])), None)
        if relu is not None and relu.output is not None:
            y = relu.output
            act = y.reshape(y.shape[0], -1) if y.ndim == 2 else y.reshape(-1, y.shape[-1])
            row["dead_fraction"] = float(np.mean(~(act > 0).any(axis=0)))
        if isinstance(layer, ReLU):
            continue  # folded into the preceding trainable layer's row
        rows.append(row)
    return rows


def snapshot_params(model) -> dict[str, list[np.ndarray]]:
    """Copies of each trainable layer's parameters (for update ratios)."""
    return {layer.name: [p.copy() for p in layer.params] for layer in trainable_layers(model)}


def weight_pictures(model, max_pictures: int = 16) -> list[dict[str, Any]]:
    """Histograms of each layer's weights and small pictures: first-layer dense units as input-shaped maps,
    conv filters as KxK tiles (first input channel), rounded to 3 decimals."""
    out = []
    shape = model.input_shape
    for layer in trainable_layers(model):
        w = layer.params[0]
        counts, edges = np.histogram(w.reshape(-1), bins=24)
        entry: dict[str, Any] = {"name": layer.name, "kind": layer.kind,
                                 "histogram": {"counts": counts.tolist(), "edges": np.round(edges, 5).tolist()}}
        pics = None
        if isinstance(layer, Dense) and len(shape) == 3 and w.shape[0] == int(np.prod(shape)):
            h, wd, c = shape
            cols = w[:, :max_pictures].T.reshape(-1, h, wd, c).mean(axis=3)
            pics = cols
        elif w.ndim == 4:  # conv (KH, KW, Cin, Cout)
            pics = np.transpose(w[:, :, 0, :max_pictures], (2, 0, 1))
        if pics is not None:
            entry["pictures"] = np.round(pics, 3).tolist()
        out.append(entry)
    return out


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, k: int) -> np.ndarray:
    """k x k counts: rows true class, columns predicted class."""
    m = np.zeros((k, k), dtype=np.int64)
    np.add.at(m, (labels, preds), 1)
    return m


def sample_predictions(probs: np.ndarray, labels: np.ndarray, x: np.ndarray, fixed: np.ndarray,
                       n_wrong: int = 8) -> dict[str, Any]:
    """Fixed samples and the most confidently wrong ones, with predicted/true labels and confidence.

    Images (samples of at most 32x32) are included, rounded to 2 decimals, so remote viewers can draw them.
    """
    preds = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    wrong = np.nonzero(preds != labels)[0]
    worst = wrong[np.argsort(-conf[wrong])][:n_wrong]
    small_image = x.ndim == 4 and x.shape[1] <= 32 and x.shape[2] <= 32

    def item(i: int) -> dict[str, Any]:
        d = {"index": int(i), "label": int(labels[i]), "pred": int(preds[i]), "confidence": float(conf[i])}
        if small_image:
            d["image"] = np.round(x[i].mean(axis=2), 2).tolist()
        return d

    return {"samples": [item(i) for i in fixed], "wrong": [item(i) for i in worst]}


def boundary_grid(model, x: np.ndarray, y: np.ndarray, cols: int = 48, rows: int = 24,
                  max_points: int = 400) -> dict[str, Any]:
    """Class probabilities over a grid covering 2-D data, plus a sample of the data points, for a
    Playground-style decision-boundary map."""
    lo = x.min(axis=0)
    hi = x.max(axis=0)
    pad = (hi - lo) * 0.05 + 1e-6
    lo, hi = lo - pad, hi + pad
    gx = np.linspace(lo[0], hi[0], cols, dtype=np.float32)
    gy = np.linspace(hi[1], lo[1], rows, dtype=np.float32)  # top row = largest y
    grid = np.ascontiguousarray(np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2), dtype=np.float32)
    probs = model.predict_proba(grid) if model.is_classifier else model.predict(grid)
    if model.is_classifier:
        cls = probs.argmax(axis=1).reshape(rows, cols)
        conf = probs.max(axis=1).reshape(rows, cols)
    else:
        cls = np.zeros((rows, cols), dtype=np.int64)
        conf = probs[:, 0].reshape(rows, cols)
    step = max(1, len(x) // max_points)
    pts = [[round(float(a), 3), round(float(b), 3), int(c) if y.ndim == 1 else 0]
           for (a, b), c in zip(x[::step], y[::step])]
    return {"cols": cols, "rows": rows, "xrange": [float(lo[0]), float(hi[0])], "yrange": [float(lo[1]), float(hi[1])],
            "classes": cls.tolist(), "confidence": np.round(conf, 3).tolist(), "points": pts}
