"""A picture drawn in the app (its Draw tab) through a model: the drawn picture, as ink from 0 (background) to 1
(full ink), becomes the model's input in the training data's own gray levels (MNIST: 0..255, the digits set:
0..16), normalized as the training data was, and the model answers with its class probabilities.

A live trainer answers with its current weights (the ``probe`` command and event); once the run has ended the app
asks the run's last checkpoint through :class:`CheckpointProbe`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tuinet.errors import ConfigError
from tuinet.protocol import MAX_IMAGE_SIDE

#: datasets of handwritten digits made as MNIST's were (cropped, 20x20, centred by their centre of mass in 28x28): a
#: drawing is centred that way for them (``predict --fit digit``, the Draw tab); other image sets get it as drawn
#: (the 8x8 digits set's digits fill their frame: read the MNIST way, a test digit redrawn reads right 22% of the
#: time against 93% as drawn)
DIGIT_DATASETS = ("mnist",)

def drawable(task: str | None, input_shape: Sequence[int] | None) -> bool:
    """True for a classifier of gray images of at most MAX_IMAGE_SIDE pixels a side (the app's canvas is 28x28,
    scaled to the model's size): what one can draw an input for."""
    shape = list(input_shape or ())
    return task == "classification" and len(shape) == 3 and shape[2] == 1 and 0 < max(shape[:2]) <= MAX_IMAGE_SIDE


#: ink below this counts as none: a canvas with no pixel above it is blank
INK_MIN = 0.05


def drawn_input(ink: np.ndarray, h: int, w: int, centre: bool = True) -> np.ndarray | None:
    """What the model is given for a drawing (``ink``: 2-D, 0..1, any size): with ``centre``, the digit made as
    MNIST's were (cropped, fitted to 20 of 28 pixels, centred on its centre of mass: ``tuinet predict --fit digit``);
    else the canvas scaled to the model's size as it is. An (h, w) array of ink; None for a blank canvas."""
    ink = np.clip(np.asarray(ink, dtype=np.float32), 0.0, 1.0)
    if ink.size == 0 or float(ink.max()) < INK_MIN:
        return None
    if centre:
        from tuinet.data.inputs import fit_digit

        return fit_digit(ink * 255.0, h, w)[:, :, 0] / 255.0
    if ink.shape == (h, w):
        return ink.copy()
    from PIL import Image

    return np.clip(np.asarray(Image.fromarray(ink).resize((w, h), Image.BILINEAR), dtype=np.float32), 0.0, 1.0)


def ink_range(normalizer, x_train: np.ndarray | None = None) -> tuple[float, float]:
    """The raw gray levels ink 0 and ink 1 stand for: the training split's darkest and lightest (min-max
    normalization keeps them: its shift and shift + scale; else they are read from ``x_train``, the normalized
    training split; without it, 8-bit images' 0..255)."""
    if normalizer.kind == "minmax" and normalizer.shift is not None and normalizer.shift.size == 1:
        lo = float(normalizer.shift.reshape(-1)[0])
        return lo, lo + float(normalizer.scale.reshape(-1)[0])
    if x_train is not None and x_train.size:
        raw = normalizer.inverse_transform(np.array([[x_train.min()], [x_train.max()]], np.float32))
        return float(raw[0, 0]), float(raw[1, 0])
    return 0.0, 255.0


def probe_input(image: Any, task: str, input_shape: Sequence[int], normalizer,
                gray: tuple[float, float] = (0.0, 255.0)) -> np.ndarray:
    """The drawn picture (rows of ink from 0 to 1, the model's height x width) as one normalized sample
    ``(1, h, w, 1)``, ink 0 and 1 being the gray levels ``gray`` (see :func:`ink_range`); ConfigError with one line
    when it does not fit the model."""
    if not drawable(task, input_shape):
        raise ConfigError("drawing an input applies to classifiers of gray images (MNIST's kind); this model takes "
                          f"{'x'.join(str(s) for s in input_shape)} inputs")
    h, w = int(input_shape[0]), int(input_shape[1])
    try:
        a = np.asarray(image, dtype=np.float32)
    except (TypeError, ValueError):
        raise ConfigError("the drawn image must be rows of numbers") from None
    if a.shape != (h, w):
        got = "x".join(str(s) for s in reversed(a.shape)) if a.ndim else "a number"
        raise ConfigError(f"the drawn image is {got} (width x height); the model takes {w}x{h}")
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        raise ConfigError("the drawn image's values must be ink from 0 to 1")
    lo, hi = gray
    return normalizer.transform((lo + a * (hi - lo)).reshape(1, h, w, 1))


#: a layer's output for a drawn picture, as the probe event carries it: at most PROBE_MAPS channel maps averaged down
#: to at most PROBE_SIDE pixels a side, or the first PROBE_UNITS units, each a whole percentage of the largest
#: magnitude among them (``scale``); small enough to send four times a second to a viewer over SSH
PROBE_MAPS, PROBE_SIDE, PROBE_UNITS = 8, 14, 64


def block_mean(a: np.ndarray, f: int) -> np.ndarray:
    """Feature maps ``(..., H, W, C)`` averaged over f x f patches (a picture shrunk; the last rows and columns
    that do not fill a patch are left out; a side shorter than ``f`` is one patch)."""
    *lead, h, w, c = a.shape
    fh, fw = min(f, h), min(f, w)
    hh, ww = max(1, h // fh), max(1, w // fw)
    return a[..., :hh * fh, :ww * fw, :].reshape(*lead, hh, fh, ww, fw, c).mean(axis=(-4, -2))


def layer_picture(y: np.ndarray) -> dict[str, Any]:
    """One sample's output of a layer, compact (see PROBE_MAPS): ``maps`` (channels x rows x cols) or ``units``, as
    integers from -100 to 100 of ``scale``, with the layer's ``channels`` or ``size``."""
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 3:
        h, w, c = y.shape
        a = block_mean(y[:, :, :PROBE_MAPS], max(1, -(-max(h, w) // PROBE_SIDE))).transpose(2, 0, 1)
        key, extra = "maps", {"channels": int(c)}
    else:
        a = y.reshape(-1)[:PROBE_UNITS]
        key, extra = "units", {"size": int(y.size)}
    finite = a[np.isfinite(a)]
    scale = float(np.abs(finite).max()) if finite.size else 0.0
    q = np.rint(np.nan_to_num(a / scale if scale > 0 else a * 0.0, nan=0.0) * 100).astype(int)
    return {key: q.tolist(), "scale": scale, **extra}


#: occlusion: the input is covered a patch at a time, patches of about a seventh of its side (MNIST: 4x4 of 28x28)
OCCLUSION_GRID = 7


def background_level(normalizer, gray: tuple[float, float]) -> float:
    """The normalized value of a pixel without ink (the gray level ``gray[0]``): what an occluded patch is set to."""
    return float(normalizer.transform(np.full((1, 1), gray[0], np.float32)).reshape(-1)[0])


def occlusion(model, x: np.ndarray, cls: int, background: float) -> dict[str, Any]:
    """Where the model looks (Zeiler and Fergus's occlusion test): for each patch of the input (a grid of about
    OCCLUSION_GRID x OCCLUSION_GRID), how much the model's score for class ``cls`` (its output before the softmax,
    the logit) changes when that patch is set to the background; all patches in one batch. The score, not the
    probability: a confident answer's probability stays at 100% whatever one patch does, its score does not.
    ``change``: rows x cols."""
    _, h, w, _ = x.shape
    patch = max(1, round(max(h, w) / OCCLUSION_GRID))
    rows, cols = -(-h // patch), -(-w // patch)
    batch = np.repeat(x, rows * cols, axis=0)
    for i in range(rows):
        for j in range(cols):
            batch[i * cols + j, i * patch:(i + 1) * patch, j * patch:(j + 1) * patch, :] = background
    base = float(np.asarray(model.predict(x), dtype=np.float64)[0, cls])
    covered = np.asarray(model.predict(batch), dtype=np.float64)[:, cls]
    change = np.nan_to_num(covered - base).reshape(rows, cols)
    return {"patch": patch, "class": int(cls), "change": np.round(change, 4).tolist(), "score": round(base, 4)}


def probe_answer(model, x: np.ndarray, background: float) -> dict[str, Any]:
    """The model's class probabilities for one sample ``x`` (1, h, w, 1), its prediction (None when they are not
    finite: a diverged model), the forward pass layer by layer (each layer's output for the sample,
    :func:`layer_picture`, with its mean, spread and share of zeros) and where the model looks for its prediction
    (:func:`occlusion`, patches set to ``background``)."""
    from tuinet.engine.kernels import softmax_rows
    from tuinet.training.stepview import activation_stats

    rows: list[dict[str, Any]] = []

    def visit(_i, layer, _x, h) -> None:
        rows.append({"name": layer.name, "kind": layer.kind, "shape": list(layer.output_shape),
                     "stats": activation_stats(layer.kind, h[0]), **layer_picture(h[0])})

    h = model.forward_each(x, visit)
    probs = np.empty_like(h)
    softmax_rows(h, probs)  # as Sequential.predict_proba does
    probs = probs[0].astype(np.float64)
    out: dict[str, Any] = {"forward": rows}
    finite = bool(np.isfinite(probs).all())
    if finite:
        out["occlusion"] = occlusion(model, x, int(probs.argmax()), background)
    return {"probs": [round(float(p), 6) for p in probs], "pred": int(probs.argmax()) if finite else None, **out}


class Probe:
    """A model and how a drawing becomes its input: the trainer's (its live weights) and :class:`CheckpointProbe`'s
    (a run's saved ones) answer drawings through it.

    Args:
        model: the model that answers.
        task, input_shape, normalizer: the dataset's, as the model was trained on it.
        gray: the raw gray levels ink 0 and ink 1 stand for (:func:`ink_range`).
    """

    def __init__(self, model, task: str, input_shape: Sequence[int], normalizer, gray: tuple[float, float]):
        self.model = model
        self.task = task
        self.input_shape = list(input_shape)
        self.normalizer = normalizer
        self.gray = gray
        self.drawable = drawable(task, self.input_shape)
        # (a model of other inputs has no gray background: input() refuses any drawing for it)
        self.background = background_level(normalizer, gray) if self.drawable else 0.0

    def input(self, image: Any) -> np.ndarray:
        """The drawing (rows of ink 0..1) as the model's normalized input; ConfigError when it does not fit."""
        return probe_input(image, self.task, self.input_shape, self.normalizer, self.gray)

    def answer_input(self, x: np.ndarray) -> dict[str, Any]:
        """The model's answer to an input made by :meth:`input` (the ``probe`` event's fields)."""
        return probe_answer(self.model, x, self.background)

    def answer(self, image: Any) -> dict[str, Any]:
        """The model's answer to a drawing."""
        return self.answer_input(self.input(image))


class CheckpointProbe(Probe):
    """Answers drawn pictures with a run's saved weights (a run that has ended; its trainer answers no more).

    Args:
        path: a checkpoint file (``latest.npz``) or a run folder.
    """

    def __init__(self, path: str | Path):
        from tuinet.engine.checkpoint import load_checkpoint
        from tuinet.training.evaluation import checkpoint_model, saved_dataset_info, saved_normalizer

        self.run_dir = str(path)
        self.ckpt = load_checkpoint(path)
        normalizer = saved_normalizer(self.ckpt)
        info = saved_dataset_info(self.ckpt)
        super().__init__(checkpoint_model(self.ckpt), info.get("task") or "classification",
                         self.ckpt.meta["model"]["input_shape"], normalizer, ink_range(normalizer))
        self.dataset = str(info.get("name") or "")
        self.class_names = [str(n) for n in info.get("class_names") or []]
        trainer = self.ckpt.extra.get("trainer")
        self.step = trainer.get("global_step") if isinstance(trainer, dict) else None
