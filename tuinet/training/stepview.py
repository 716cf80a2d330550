"""One optimizer step seen stage by stage: what the Step view shows after ``n`` (the ``step_detail`` event).

A traced step is the trainer's ordinary step (same batch, same dropout draws, same update, so a run stepped this
way continues exactly as it would have) with copies taken on the way:

1. forward: each layer's output for one sample of the batch, and each layer's activation statistics over the batch;
2. loss: the batch loss, every sample's loss, and the loss on the same batch before and after the update;
3. backward: the norm of the gradient arriving at every layer, from the output back to the input, and each
   trainable layer's parameter-gradient norm;
4. update: per trainable layer, the step's size against the weights', and against the plain-SGD step ``lr * grad``
   (what momentum or Adam's state added), and how far it points along this batch's gradient.

Nothing here runs in the ordinary loop: the trainer calls :func:`traced_gradients` instead of
``model.compute_gradients`` only for the last step of a ``step`` command, and :func:`step_detail` after its update.
The pair runs the model's layers one by one without Conv2D+MaxPool2D fusion (the engine's fused and unfused passes
give the same numbers bit for bit), so every layer's output exists to be copied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: dense outputs of one sample sent per layer (a strip); longer layers send their first ones and their size
MAX_UNITS = 64
#: conv channels drawn per layer, and the largest side of a map (larger maps are subsampled)
MAX_MAPS = 8
MAX_SIDE = 28
#: the samples of the batch with the highest loss, listed
WORST = 5
#: bins of the per-sample loss histogram
LOSS_BINS = 16


@dataclass
class StepTrace:
    """What a traced step saw before its update (filled by :func:`traced_gradients`)."""

    sample: int
    loss_before: float
    forward: list[dict[str, Any]] = field(default_factory=list)
    outputs: np.ndarray | None = None
    sample_losses: np.ndarray | None = None
    flow: dict[int, float] = field(default_factory=dict)
    before: dict[str, list[np.ndarray]] = field(default_factory=dict)


def _norm(a: np.ndarray) -> float:
    """The Euclidean norm, accumulated in float64."""
    v = np.asarray(a, dtype=np.float64).reshape(-1)
    return float(math.sqrt(float(v @ v)))


def activation_stats(kind: str, y: np.ndarray) -> dict[str, float]:
    """A layer's output over the whole batch: mean, std, min, max, the fraction of exact zeros (ReLU's dead or
    resting units) and, after Sigmoid or Tanh, the fraction saturated (where their gradient all but vanishes)."""
    a = np.asarray(y, dtype=np.float64).reshape(-1)
    out = {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()), "max": float(a.max()),
           "zero": float(np.mean(a == 0.0))}
    if kind == "Sigmoid":
        out["saturated"] = float(np.mean((a < 0.01) | (a > 0.99)))
    elif kind == "Tanh":
        out["saturated"] = float(np.mean(np.abs(a) > 0.99))
    return out


def sample_picture(y: np.ndarray) -> dict[str, Any]:
    """One sample's output of a layer, bounded: the first :data:`MAX_MAPS` channel maps of an image-shaped output
    (subsampled to at most :data:`MAX_SIDE` a side), or the first :data:`MAX_UNITS` values of a flat one."""
    if y.ndim == 3:
        h, w, c = y.shape
        step = max(1, math.ceil(max(h, w) / MAX_SIDE))
        maps = np.transpose(y[::step, ::step, :MAX_MAPS], (2, 0, 1))
        return {"maps": np.round(maps.astype(np.float64), 3).tolist(), "channels": int(c)}
    flat = y.reshape(-1)
    return {"units": np.round(flat[:MAX_UNITS].astype(np.float64), 3).tolist(), "size": int(flat.size)}


def per_sample_losses(model, out: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each sample's loss (their mean is the batch loss), in float64."""
    if model.is_classifier:
        z = out.astype(np.float64)
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return -logp[np.arange(len(y)), y]
    t = np.asarray(y, dtype=np.float64).reshape(out.shape)
    o = out.astype(np.float64)
    if model.loss_name == "bce_with_logits":
        per = np.maximum(o, 0) - o * t + np.log1p(np.exp(-np.abs(o)))
    else:
        per = (o - t) ** 2
    return per.reshape(len(out), -1).mean(axis=1)


def traced_gradients(model, x: np.ndarray, y: np.ndarray, sample: int = 0):
    """``model.compute_gradients(x, y)`` with copies taken on the way: returns (loss, penalty, correct, trace).

    Also measures the loss on this batch before the update (inference mode, so no dropout draw and no batch-norm
    statistic is consumed) and keeps the weights before the update for :func:`step_detail`.
    """
    fused = model.fusion
    model.fusion = False
    try:
        trace = StepTrace(sample=min(max(sample, 0), len(x) - 1),
                          loss_before=float(model.loss.value(model.forward(x, training=False), y)[0]))
        trace.before = {layer.name: [p.copy() for p in layer.params] for layer in model.layers if layer.params}
        h = x
        for layer in model.layers:  # Sequential.forward, unfused, one layer at a time
            h = layer.forward(h, True)
            trace.forward.append({"name": layer.name, "kind": layer.kind, "shape": list(layer.output_shape),
                                  "stats": activation_stats(layer.kind, h), **sample_picture(h[trace.sample])})
        loss, dout, correct = model.loss(h, y)
        trace.outputs = h.copy()
        trace.sample_losses = per_sample_losses(model, h, y)
        d = dout
        stop = model.first_trainable
        for i in range(len(model.layers) - 1, stop - 1, -1):  # Sequential.backward, unfused
            trace.flow[i] = _norm(d)
            d = model.layers[i].backward(d, need_dx=i > stop)
        pen = model.penalty(add_grad=True)
    finally:
        model.fusion = fused
    return loss, pen, correct, trace


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z.astype(np.float64) - z.max())
    return e / e.sum()


def _loss_part(model, trace: StepTrace, y: np.ndarray, idx: np.ndarray, loss: float, pen: float,
               correct: int | None, loss_after: float) -> dict[str, Any]:
    per = trace.sample_losses
    counts, edges = np.histogram(per, bins=LOSS_BINS)
    worst = []
    preds = trace.outputs.argmax(axis=1) if model.is_classifier else None
    for j in np.argsort(-per, kind="stable")[:WORST]:
        item = {"position": int(j), "index": int(idx[j]), "loss": float(per[j])}
        if preds is not None:
            item.update(label=int(y[j]), pred=int(preds[j]), prob_true=float(_softmax(trace.outputs[j])[y[j]]))
        worst.append(item)
    return {"loss": float(loss), "penalty": float(pen), "accuracy": correct / len(y) if correct is not None else None,
            "before": trace.loss_before, "after": loss_after, "mean_sample_loss": float(per.mean()),
            "histogram": {"counts": counts.tolist(), "edges": [float(e) for e in edges]}, "worst": worst}


def _update_part(model, optimizer, trace: StepTrace) -> dict[str, Any]:
    rows = []
    lr = float(optimizer.lr)
    for layer in model.layers:
        if not layer.params or layer.name not in trace.before:
            continue
        g2 = w2 = d2 = dot = 0.0
        for p, g, b in zip(layer.params, layer.grads, trace.before[layer.name]):
            gf = g.astype(np.float64).reshape(-1)
            df = p.astype(np.float64).reshape(-1) - b.astype(np.float64).reshape(-1)
            wf = p.astype(np.float64).reshape(-1)
            g2 += float(gf @ gf)
            w2 += float(wf @ wf)
            d2 += float(df @ df)
            dot += float(df @ gf)
        g_n, w_n, d_n = math.sqrt(g2), math.sqrt(w2), math.sqrt(d2)
        sgd = lr * g_n
        rows.append({"name": layer.name, "kind": layer.kind, "grad_norm": g_n, "weight_norm": w_n,
                     "update_norm": d_n, "update_ratio": d_n / w_n if w_n > 0 else None,
                     "sgd_step": sgd, "scale": d_n / sgd if sgd > 0 else None,
                     "cosine": -dot / (d_n * g_n) if d_n > 0 and g_n > 0 else None})
    return {"optimizer": optimizer.name, "lr": lr, "t": int(optimizer.t), "hyperparams": optimizer.hyperparams(),
            "layers": rows}


def step_detail(model, optimizer, trace: StepTrace, x: np.ndarray, y: np.ndarray, idx: np.ndarray, loss: float,
                pen: float, correct: int | None, class_names: list[str] | None = None) -> dict[str, Any]:
    """The ``step_detail`` event's fields, right after the traced step's update (gradients still in the buffers).

    Args:
        model, optimizer: the trainer's, after the update.
        trace: what :func:`traced_gradients` returned for this step.
        x, y: the batch; ``idx`` its samples' positions in the training set.
        loss, pen, correct: what the step reported.
        class_names: the dataset's, for the output probabilities.
    """
    loss_after = float(model.loss.value(model.forward(x, training=False), y)[0])
    s = trace.sample
    out = trace.outputs[s]
    sample: dict[str, Any] = {"position": s, "index": int(idx[s]), "loss": float(trace.sample_losses[s])}
    xs = x[s]
    if xs.ndim == 3:
        sample["image"] = np.round(xs.mean(axis=2).astype(np.float64), 2).tolist()
    else:
        sample["values"] = np.round(xs.reshape(-1)[:MAX_UNITS].astype(np.float64), 3).tolist()
    if model.is_classifier:
        probs = _softmax(out)
        sample.update(label=int(y[s]), pred=int(probs.argmax()), probs=[round(float(p), 4) for p in probs])
        if class_names:
            sample["class_names"] = [str(c) for c in class_names][:len(probs)]
    else:
        sample.update(outputs=[float(v) for v in out.reshape(-1)[:MAX_UNITS]],
                      targets=[float(v) for v in np.asarray(y[s], dtype=np.float64).reshape(-1)[:MAX_UNITS]])
    layers = model.layers
    backward = []
    for i in range(len(layers) - 1, -1, -1):
        layer = layers[i]
        row: dict[str, Any] = {"name": layer.name, "kind": layer.kind, "grad_out": trace.flow.get(i)}
        if layer.params:
            row["grad_norm"] = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in layer.grads))
        backward.append(row)
    return {"batch_size": int(len(x)), "sample": sample, "forward": trace.forward,
            "loss": _loss_part(model, trace, y, idx, loss, pen, correct, loss_after), "backward": backward,
            "update": _update_part(model, optimizer, trace)}
