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
from tuinet.training.rundir import find_run
from tuinet.training.stats import confusion_matrix


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


def saved_dataset_info(ckpt) -> dict[str, Any]:
    """The dataset record a trainer saved in the checkpoint (normalizer, task, class and feature names)."""
    info = ckpt.extra.get("dataset")
    if not isinstance(info, dict) or "normalizer" not in info:
        raise CheckpointError(f"{ckpt.path}: the checkpoint holds no dataset record (normalizer, classes); "
                              "it was not written by `tuinet train`")
    return info


def saved_normalizer(ckpt):
    """The :class:`~tuinet.data.Normalizer` fitted on the run's training split, as saved in the checkpoint."""
    return Normalizer.from_dict(saved_dataset_info(ckpt)["normalizer"])


def checkpoint_model(ckpt):
    """The checkpoint's model with its weights, its kernels' thread counts set for this machine."""
    model = ckpt.build_model()
    configure_threads(model)
    return model


def rebuild_test_split(ckpt, dataset: str | None = None):
    """The test split the checkpoint's run used (same source, splits, seed, limit), normalized with the
    normalizer saved in the checkpoint; returns ``(x_test, y_test, dataset)``."""
    cfg = ckpt.extra.get("config")
    info = saved_dataset_info(ckpt)
    if not isinstance(cfg, dict) or "dataset" not in cfg:
        raise CheckpointError(f"{ckpt.path}: the checkpoint holds no training configuration; "
                              "cannot rebuild its dataset")
    data = load_dataset(dataset or cfg["dataset"], val_split=cfg.get("val_split", 0.1),
                        test_split=cfg.get("test_split", 0.1), seed=cfg.get("seed", 0), normalize="none",
                        target=cfg.get("target"), task=cfg.get("task") or info.get("task"),
                        limit=cfg.get("limit"), log=lambda m: None)
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
