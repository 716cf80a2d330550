"""A deterministic ``step_detail`` event shaped exactly like the trainer's (tuinet/training/stepview.py): an mlp on
MNIST at step 1,234, for the Step view's pilot and snapshot tests."""

from __future__ import annotations

import math

import numpy as np

LAYERS = [("flatten_0", "Flatten", [784]), ("dense_1", "Dense", [256]), ("relu_2", "ReLU", [256]),
          ("dense_3", "Dense", [128]), ("relu_4", "ReLU", [128]), ("dense_5", "Dense", [10])]


def seven(shift: int = 0) -> list[list[float]]:
    """A blurred 28x28 seven."""
    img = np.zeros((28, 28))
    img[5:9, 7 + shift:21 + shift] = 1.0
    for r in range(9, 24):
        c = 20 + shift - (r - 9) // 2
        img[r, c - 2:c + 1] = 1.0
    blur = (img + np.roll(img, 1, 0) + np.roll(img, 1, 1) + np.roll(img, -1, 0) + np.roll(img, -1, 1)) / 5
    return np.round(blur, 2).tolist()


def step_detail(step: int = 1234, lr: float = 0.001, optimizer: str = "adam", t0: float = 1_767_225_700.0,
                grad_scale: float = 1.0) -> dict:
    """The event (``grad_scale`` < 1 shrinks the gradient toward the input: a vanishing profile)."""
    rng = np.random.default_rng(step)
    forward = []
    for name, kind, shape in LAYERS:
        n = shape[0]
        vals = rng.normal(0, 1, n)
        if kind == "ReLU":
            vals = np.maximum(vals, 0)
        units = np.round(vals[:64], 3).tolist()
        forward.append({"name": name, "kind": kind, "shape": shape,
                        "stats": {"mean": round(float(vals.mean()), 4), "std": round(float(vals.std()), 4),
                                  "min": round(float(vals.min()), 4), "max": round(float(vals.max()), 4),
                                  "zero": round(float(np.mean(vals == 0)), 4)},
                        "units": units, "size": n})
    probs = [0.01, 0.02, 0.04, 0.03, 0.01, 0.01, 0.0, 0.81, 0.02, 0.05]
    backward = []
    for i, (name, kind, _) in enumerate(reversed(LAYERS)):
        g = 0.08 * (grad_scale ** i) * (1 + 0.1 * i)
        row = {"name": name, "kind": kind, "grad_out": None if name == "flatten_0" else g}
        if kind == "Dense":
            row["grad_norm"] = 3 * g
        backward.append(row)
    upd = []
    for name, scale in (("dense_1", 7.9), ("dense_3", 5.2), ("dense_5", 2.4)):
        g = next(r["grad_norm"] for r in backward if r["name"] == name)
        upd.append({"name": name, "kind": "Dense", "grad_norm": g, "weight_norm": 20.0, "update_norm": lr * g * scale,
                    "update_ratio": lr * g * scale / 20.0, "sgd_step": lr * g, "scale": scale,
                    "cosine": round(0.9 - 0.2 * len(upd), 2)})
    worst = [{"position": 17, "index": 40211, "loss": 4.21, "label": 4, "pred": 9, "prob_true": 0.015},
             {"position": 3, "index": 1203, "loss": 2.87, "label": 5, "pred": 3, "prob_true": 0.057},
             {"position": 40, "index": 33, "loss": 1.9, "label": 7, "pred": 1, "prob_true": 0.15},
             {"position": 9, "index": 5120, "loss": 1.12, "label": 2, "pred": 2, "prob_true": 0.33},
             {"position": 0, "index": 77, "loss": 0.21, "label": 7, "pred": 7, "prob_true": 0.81}]
    counts = [int(40 * math.exp(-i / 2)) for i in range(16)]
    return {"event": "step_detail", "v": 1, "time": t0, "step": step, "epoch": 1, "batch_size": 64,
            "sample": {"position": 0, "index": 77, "loss": 0.21, "image": seven(), "label": 7, "pred": 7,
                       "probs": probs, "class_names": [str(i) for i in range(10)]},
            "forward": forward,
            "loss": {"loss": 0.412, "penalty": 0.0, "accuracy": 0.875, "before": 0.455, "after": 0.431,
                     "mean_sample_loss": 0.412, "histogram": {"counts": counts,
                                                             "edges": [round(i * 0.27, 3) for i in range(17)]},
                     "worst": worst},
            "backward": backward,
            "update": {"optimizer": optimizer, "lr": lr, "t": step, "hyperparams": {"lr": lr}, "layers": upd}}
