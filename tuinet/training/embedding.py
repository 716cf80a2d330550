"""What each layer makes of the data: a fixed set of validation samples as each weighted layer sees them, projected
to two dimensions (PCA), as TensorBoard's Embedding Projector shows a layer, but live while the network learns.

Each view is the input of one layer with weights (a Dense, a convolution, a residual block: what that layer is given)
and the model's output: raw pixels first, where the digits overlap, then the hidden representations, where training
pulls the classes apart. Two figures say how much the picture can be trusted: the share of the variance its two
components hold, and how often a sample's nearest neighbour in the layer's full space (not the picture) has its
label (a 1-nearest-neighbour check, leave-one-out): how well the layer separates the classes, whatever the
projection shows.

Feature maps wider than :data:`MAX_FEATURES` values are averaged over space first (as a picture is shrunk), so one
view costs at most a 400 x 2048 matrix product and a small eigenproblem.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tuinet.training.probe import block_mean

EMBED_SAMPLES = 400  #: validation samples shown (the first ones of the split: shuffled, so every class is there)
MAX_FEATURES = 2048  #: values per sample a view is computed from (feature maps averaged over space to fit)
MAX_VIEWS = 6  #: the input, the output, and at most this many views in all (the hidden ones nearest the output)
BLOCK, ITERATIONS = 10, 12  #: the two leading components from a block of 10 vectors, 12 times multiplied


def _pooled(a: np.ndarray) -> np.ndarray:
    """(N, ...) as (N, D) float64 with D <= MAX_FEATURES: feature maps (N, H, W, C) averaged over f x f patches."""
    if a.ndim == 4 and a[0].size > MAX_FEATURES:
        _, h, w, c = a.shape
        f = 1
        while (h // f) * (w // f) * c > MAX_FEATURES and f < max(h, w):
            f += 1
        a = block_mean(a, f)  # as the Draw tab shrinks a layer's maps
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    return a[:, :MAX_FEATURES] if a.shape[1] > MAX_FEATURES else a


def top_components(gram: np.ndarray, start: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The two leading eigenvalues of the (N, N) Gram matrix of centred samples and their eigenvectors (N, 2), by
    randomized subspace iteration (Halko, Martinsson and Tropp 2011, as scikit-learn's randomized PCA): a block of
    BLOCK vectors multiplied by the matrix ITERATIONS times, then the best two of the block. The block starts from
    ``start`` (the last picture's points: the clusters come back where they were) and random vectors. A full
    eigendecomposition of 400 x 400 took 25 ms here, this about 2."""
    n = len(gram)
    rng = np.random.default_rng(0)
    v = rng.standard_normal((n, min(BLOCK, n))).astype(np.float32)
    if start is not None and np.shape(start) == (n, 2) and np.isfinite(start).all():
        v[:, :2] = start
    g32 = gram.astype(np.float32)  # the iterations in float32 (7 times faster here), the last step in float64
    for _ in range(ITERATIONS):
        v, _ = np.linalg.qr(g32 @ v)
    v = v.astype(np.float64)
    vals, vecs = np.linalg.eigh(v.T @ gram @ v)  # the Rayleigh-Ritz step on the block
    order = np.argsort(vals)[::-1][:2]
    return vals[order], v @ vecs[:, order]


def project(a: np.ndarray, labels: np.ndarray, start: np.ndarray | None = None,
            extra: np.ndarray | None = None) -> dict[str, Any]:
    """One view: ``a`` (N, ...) projected on its two principal components (``points``, N x 2, each column's largest
    magnitude 1), the share of the variance they hold (``explained``), and the share of samples whose nearest other
    sample, by Euclidean distance in the full (pooled) space, has the same label (``neighbours``). ``start``: the
    last picture's points of the same view (see :func:`top_components`). ``extra``: more samples (M, ...) placed on
    the same two components (``extra_points``, M x 2, on the same scale) without taking part in them."""
    x = _pooled(a)
    mean = x.mean(axis=0)
    x = np.nan_to_num(x - mean, nan=0.0, posinf=0.0, neginf=0.0)
    n = len(x)
    gram = x @ x.T  # (N, N): the components and the distances both come from it
    total = float(np.trace(gram))
    vals, vecs = top_components(gram, start)
    root = np.sqrt(np.maximum(vals, 0.0))
    points = vecs * root
    # another sample on the same components: its centred features times the components' directions in feature space,
    # X^T u / sqrt(lambda), computed from its products with the samples (no D x D matrix)
    placed = None
    if extra is not None:
        e = np.nan_to_num(_pooled(extra) - mean, nan=0.0, posinf=0.0, neginf=0.0)
        placed = (e @ x.T) @ vecs / np.where(root > 0, root, 1.0)
    if start is not None and np.shape(start) == points.shape:  # keep each axis turned as in the last picture
        flip = np.where(np.sum(points * start, axis=0) < 0, -1.0, 1.0)
        points = points * flip
        placed = None if placed is None else placed * flip
    explained = float(np.maximum(vals, 0.0).sum() / total) if total > 0 else 0.0
    sq = np.diag(gram)
    dist = sq[:, None] + sq[None, :] - 2 * gram
    np.fill_diagonal(dist, np.inf)
    neighbours = float(np.mean(labels[np.argmin(dist, axis=1)] == labels)) if n > 1 else 0.0
    scale = np.where(np.abs(points).max(axis=0) > 0, np.abs(points).max(axis=0), 1.0)
    out = {"points": points / scale, "explained": explained, "neighbours": neighbours, "dims": int(a[0].size)}
    if placed is not None:
        out["extra_points"] = placed / scale
    return out


def representations(model, x: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The views' data: (label, the samples as that layer receives them) for each layer with weights, then the
    model's output; the input first. At most MAX_VIEWS: the input, the output and the hidden ones nearest the
    output (only those are kept while the samples pass: a deep net's maps of 400 samples are 20 MB a layer)."""
    weighted = [i for i, layer in enumerate(model.layers) if layer.params]
    keep = set(weighted[:1] + weighted[1:][-(MAX_VIEWS - 2):]) if MAX_VIEWS > 2 else set(weighted[:1])
    views: list[tuple[str, np.ndarray]] = []

    def visit(i, layer, h_in, _h_out) -> None:
        if i in keep:
            what = "the input" if i == weighted[0] and i <= 1 else f"{layer.name}'s input"
            views.append((f"{what} ({int(np.prod(h_in.shape[1:])):,} values)", h_in))

    out = model.forward_each(x, visit)
    views.append((f"the output ({int(np.prod(out.shape[1:])):,} scores)", out))
    return views


class Embedding:
    """The trainer's embedding views of a fixed set of validation samples, kept turned the same way from one event
    to the next (a principal component's sign is arbitrary: each view starts from its last picture and each axis
    is flipped to agree with it, so the clusters do not jump from side to side).

    Args:
        x, y: the samples (at most EMBED_SAMPLES are used) and their labels.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x = np.ascontiguousarray(x[:EMBED_SAMPLES])
        self.y = np.asarray(y[:EMBED_SAMPLES])
        self._last: dict[str, np.ndarray] = {}

    def event_fields(self, model, drawn: np.ndarray | None = None) -> dict[str, Any]:
        """The ``embedding`` event's fields for the model's weights now: ``labels``, ``preds`` and ``views``
        ({``name``, ``dims``, ``explained``, ``neighbours``, ``points``: N x [x, y], 3 decimals}); with ``drawn``
        (one sample, 1 x the model's input), each view's ``drawn``: where that sample lands on its components,
        and ``drawn_pred``."""
        views = []
        n = len(self.x)
        reps = representations(model, self.x if drawn is None else np.concatenate([self.x, drawn]))
        out = reps[-1][1][:n]
        for name, a in reps:
            v = project(a[:n], self.y, self._last.get(name), None if drawn is None else a[n:])
            p = self._last[name] = v["points"]
            views.append({"name": name, "dims": v["dims"], "explained": round(v["explained"], 4),
                          "neighbours": round(v["neighbours"], 4), "points": np.round(p, 3).tolist()})
            if drawn is not None:
                views[-1]["drawn"] = np.round(v["extra_points"][0], 3).tolist()
        preds = np.nan_to_num(np.asarray(out, dtype=np.float64)).argmax(axis=1)
        extra = {}
        if drawn is not None:
            extra["drawn_pred"] = int(np.nan_to_num(np.asarray(reps[-1][1][n:], dtype=np.float64)).argmax(axis=1)[0])
        return {"labels": self.y.astype(int).tolist(), "preds": preds.astype(int).tolist(), "views": views, **extra}


def checkpoint_embedding(path) -> dict[str, Any]:
    """The ``embedding`` event of a run's saved weights (its ``latest.npz``, or that file's path), for a run whose
    trainer has ended: the same validation samples (the split rebuilt from the saved configuration and normalized
    with the saved normalizer), marked ``source: "checkpoint"``. TuinetError or OSError when unreadable."""
    from pathlib import Path

    from tuinet.engine.checkpoint import load_checkpoint
    from tuinet.errors import CheckpointError
    from tuinet.training.evaluation import checkpoint_model, rebuild_test_split, saved_normalizer

    path = Path(path)
    ckpt = load_checkpoint(path / "latest.npz" if path.is_dir() else path)
    x_test, y_test, data = rebuild_test_split(ckpt)
    if len(data.x_val) >= 2:
        x, y = saved_normalizer(ckpt).transform(data.x_val[:EMBED_SAMPLES]), data.y_val
    else:
        x, y = x_test, y_test
    model = checkpoint_model(ckpt)
    if not model.is_classifier or len(x) < 2:
        raise CheckpointError(f"{ckpt.path}: the layers' views are drawn for classifiers with at least 2 samples")
    trainer = ckpt.extra.get("trainer") if isinstance(ckpt.extra.get("trainer"), dict) else {}
    return {"event": "embedding", "step": trainer.get("global_step"), "epoch": trainer.get("epoch"),
            "class_names": list(data.class_names), "source": "checkpoint", **Embedding(x, y).event_fields(model)}
