"""Evaluating a saved checkpoint away from its trainer: find it, rebuild its model, data split and normalizer.

``tuinet eval`` and ``tuinet predict`` use these; they read only what a run left on disk (the checkpoint holds the
model, the training configuration and the dataset record: normalizer, class and feature names).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tuinet.data import Normalizer, load_dataset
from tuinet.engine.checkpoint import load_checkpoint
from tuinet.engine.threads import configure_threads
from tuinet.errors import CheckpointError, ConfigError, DataError
from tuinet.training.config import TrainConfig
from tuinet.training.rundir import find_run
from tuinet.training.stats import confusion_matrix

MAX_NAMES = 1 << 20  # class, feature or target names in a saved dataset record


def resolve_checkpoint(ref: str, runs_dir: str | None = None, best: bool = False):
    """Load the checkpoint named by ``ref``: a checkpoint file, a run folder or a run name (latest, or best)."""
    p = Path(ref).expanduser()
    if p.is_file():
        if best:
            raise ConfigError(f"{ref}: --best applies to a run, not to a checkpoint file")
        return load_checkpoint(p)
    try:
        rd = find_run(ref, runs_dir)
    except ConfigError:
        if p.is_dir():
            return load_checkpoint(p / "best.npz") if best else load_checkpoint(p)
        raise ConfigError(f"{ref}: no such checkpoint file or run (see `tuinet runs`)") from None
    path = rd.best if best else rd.latest
    if not path.is_file():
        kind = "best" if best else "latest"
        raise CheckpointError(f"run '{rd.name}' has no {kind} checkpoint yet ({path} is missing)")
    return load_checkpoint(path)


def _names(value: Any) -> bool:
    return value is None or (isinstance(value, list) and len(value) <= MAX_NAMES
                             and all(isinstance(v, str) and len(v) <= 1000 for v in value))


def saved_dataset_info(ckpt) -> dict[str, Any]:
    """The dataset record a trainer saved in the checkpoint (normalizer, task, class and feature names), its
    fields checked (a crafted checkpoint fails here with one line naming it)."""
    info = ckpt.extra.get("dataset")
    if not isinstance(info, dict) or "normalizer" not in info:
        raise CheckpointError(f"{ckpt.path}: the checkpoint holds no dataset record (normalizer, classes); "
                              "it was not written by `tuinet train`")
    for key in ("class_names", "feature_names", "target_names"):
        if not _names(info.get(key)):
            raise CheckpointError(f"{ckpt.path}: invalid dataset record: {key} must be a list of names")
    if info.get("task") not in (None, "classification", "regression"):
        raise CheckpointError(f"{ckpt.path}: invalid dataset record: unknown task {info.get('task')!r:.40}")
    return info


def saved_normalizer(ckpt):
    """The :class:`~tuinet.data.Normalizer` fitted on the run's training split, as saved in the checkpoint."""
    try:
        norm = Normalizer.from_dict(saved_dataset_info(ckpt)["normalizer"])
    except DataError as e:
        raise CheckpointError(f"{ckpt.path}: {e}") from None
    width = ckpt.meta["model"]["input_shape"][-1]
    if norm.shift is not None and norm.shift.size not in (1, width):
        raise CheckpointError(f"{ckpt.path}: invalid normalizer record: {norm.shift.size} channels for a model whose "
                              f"inputs have {width}")
    return norm


def checkpoint_model(ckpt):
    """The checkpoint's model with its weights, its kernels' thread counts set for this machine."""
    model = ckpt.build_model()
    configure_threads(model)  # as training does, honouring TUINET_THREAD_MODE
    return model


def rebuild_test_split(ckpt, dataset: str | None = None):
    """The test split the checkpoint's run used (same source, splits, seed, limit), normalized with the
    normalizer saved in the checkpoint; returns ``(x_test, y_test, dataset)``."""
    cfg = ckpt.extra.get("config")
    info = saved_dataset_info(ckpt)
    if not isinstance(cfg, dict) or "dataset" not in cfg:
        raise CheckpointError(f"{ckpt.path}: the checkpoint holds no training configuration; "
                              "cannot rebuild its dataset")
    keys = ("dataset", "val_split", "test_split", "seed", "target", "task", "limit", "n_samples", "noise")
    try:
        saved = TrainConfig.from_dict({k: cfg[k] for k in keys if k in cfg}, source="configuration")
    except ConfigError as e:
        raise CheckpointError(f"{ckpt.path}: invalid saved training configuration "
                              f"({str(e).removeprefix('configuration: ')})") from None
    data = load_dataset(dataset or saved.dataset, val_split=saved.val_split, test_split=saved.test_split,
                        seed=saved.seed, normalize="none", target=saved.target, task=saved.task or info.get("task"),
                        limit=saved.limit, n_samples=saved.n_samples, noise=saved.noise, log=lambda m: None)
    x = saved_normalizer(ckpt).transform(data.x_test)
    return x, data.y_test, data


def evaluate_checkpoint(ckpt, dataset: str | None = None) -> dict[str, Any]:
    """Test loss and accuracy, per-class accuracy and the confusion matrix of a checkpoint on its test split
    (mean absolute error instead of the accuracies for a regression model)."""
    x, y, data = rebuild_test_split(ckpt, dataset)
    model = checkpoint_model(ckpt)
    if tuple(model.input_shape) != tuple(x.shape[1:]):
        raise CheckpointError(f"{ckpt.path}: the model takes input {tuple(model.input_shape)} but the dataset "
                              f"{data.name} has {tuple(x.shape[1:])}")
    if len(x) == 0:
        raise DataError(f"{data.name}: the test split is empty (test_split was 0); nothing to evaluate")
    trainer = ckpt.extra.get("trainer", {})
    result: dict[str, Any] = {"checkpoint": str(ckpt.path), "dataset": data.name, "task": data.task,
                              "samples": int(len(x)), "epoch": trainer.get("epoch"),
                              "step": trainer.get("global_step")}
    r = model.evaluate(x, y)
    result["test_loss"] = r["loss"]
    if model.is_classifier:
        names = list(saved_dataset_info(ckpt).get("class_names") or data.class_names)
        k = model.output_shape[-1]
        names = names if len(names) == k else [str(i) for i in range(k)]
        if y.max(initial=0) >= k:
            raise CheckpointError(f"{ckpt.path}: the data has more classes than the model's {k} outputs")
        preds = model.predict(x).argmax(axis=1)
        cm = confusion_matrix(y, preds, k)
        support = cm.sum(axis=1)
        result["test_accuracy"] = r["accuracy"]
        result["class_names"] = names
        result["per_class"] = [{"class": names[i], "samples": int(support[i]), "correct": int(cm[i, i]),
                                "accuracy": float(cm[i, i] / support[i]) if support[i] else None}
                               for i in range(k)]
        result["confusion_matrix"] = cm.tolist()
    else:
        pred = model.predict(x)
        result["test_mae"] = float(np.mean(np.abs(pred.reshape(len(pred), -1) - y.reshape(len(y), -1))))
    return result


WEIGHTS_LABEL = {"best": "the best validation epoch's weights", "last": "the last weights"}


def evaluate_run_or_checkpoint(ref: str, runs_dir: str | None = None, which: str | None = None,
                               dataset: str | None = None) -> dict[str, Any]:
    """What ``tuinet eval`` reports: :func:`evaluate_checkpoint` of a checkpoint file, or of a run's weights.

    For a run, ``which`` picks ``best`` (``best.npz``) or ``last`` (``latest.npz``); None means the weights the run
    itself reports (its ``final`` setting; ``last`` for runs from before it existed). The result says which
    (``weights``) and, under ``other``, gives the test loss and accuracy of the run's other checkpoint, so both
    figures a run ends with are shown side by side.
    """
    p = Path(ref).expanduser()
    rd = None
    if not p.is_file():
        try:
            rd = find_run(ref, runs_dir)
        except ConfigError:
            rd = None
    if rd is None:
        return evaluate_checkpoint(resolve_checkpoint(ref, runs_dir, which == "best"), dataset)
    if which is None:
        final = rd.read_json("config.json").get("final", "last")
        which = "best" if final == "best" and rd.best.is_file() else "last"
    result = evaluate_checkpoint(resolve_checkpoint(ref, runs_dir, which == "best"), dataset)
    result["weights"] = which
    other = "last" if which == "best" else "best"
    path = rd.latest if other == "last" else rd.best
    if path.is_file():
        r = evaluate_checkpoint(load_checkpoint(path), dataset)
        result["other"] = {"weights": other, "checkpoint": r["checkpoint"], "epoch": r["epoch"],
                           "test_loss": r["test_loss"], "test_accuracy": r.get("test_accuracy"),
                           "test_mae": r.get("test_mae")}
    return result


#: the most classes a confusion event carries (a terminal shows fewer; 1,000 classes would be 8 MB per epoch)
CONFUSION_MAX_CLASSES = 30


def confusion_event_fields(labels: np.ndarray, preds: np.ndarray, class_names: list[str],
                           max_classes: int = CONFUSION_MAX_CLASSES) -> dict[str, Any]:
    """The fields of a ``confusion`` event: the matrix (rows true, columns predicted) and its class names.

    With more than ``max_classes`` classes, only the ``max_classes`` with the most samples (ties: the lower index)
    are kept, as a square sub-matrix; ``class_indices`` says which, ``num_classes`` how many there are in all, and
    ``samples``/``correct`` count every sample, so the event stays small whatever the class count.
    """
    k = len(class_names)
    labels = np.asarray(labels, dtype=np.int64)
    preds = np.asarray(preds, dtype=np.int64)
    out: dict[str, Any] = {"num_classes": k, "samples": int(len(labels)), "correct": int((labels == preds).sum())}
    if k <= max_classes:
        keep = np.arange(k)
    else:
        support = np.bincount(labels, minlength=k)
        keep = np.sort(np.argsort(-support, kind="stable")[:max_classes])
    pos = np.full(k, -1, np.int64)
    pos[keep] = np.arange(len(keep))
    rows, cols = pos[labels], pos[np.clip(preds, 0, k - 1)]
    inside = (rows >= 0) & (cols >= 0)
    m = np.zeros((len(keep), len(keep)), np.int64)
    np.add.at(m, (rows[inside], cols[inside]), 1)
    out.update(matrix=m.tolist(), class_names=[class_names[i] for i in keep], class_indices=keep.tolist(),
               truncated=bool(len(keep) < k))
    return out
