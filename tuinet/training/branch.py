"""Branching a run: a new run that starts from another run's checkpoint with some settings changed.

``tuinet train --from RUN[@EPOCH] --lr 0.0005`` answers "what if I had lowered the lr at epoch 5?":

* the branch point is a checkpoint of RUN: ``epoch-NNNN.npz`` for ``@EPOCH`` (a run keeps its last
  ``keep_epochs``), ``best.npz`` for ``@best``, ``latest.npz`` otherwise;
* the parent's configuration is the base and the options given override it; the data must stay the parent's (same
  dataset, splits, normalization and seed: a branch trains on exactly the split its weights were fitted on), and so
  must the architecture, except for dropout layers (their rate can change, or they can come and go);
* the weights, the shuffle and dropout random states and the position (epoch, step) come from the checkpoint: the
  new run's epochs continue from the branch point, and ``epochs`` counts from the parent's start, so its curves
  line up with the parent's; a branch with no setting changed trains exactly as ``tuinet resume`` would;
* the optimizer's state is carried over when the optimizer and its hyperparameters (other than the learning rate and
  the weight decay, which the app also changes on a running optimizer) are unchanged, and starts fresh otherwise;
  the ``started`` event and the log say which;
* best validation loss, early-stopping patience, train time and throughput start afresh: they describe the branch.

:func:`branch_config` builds the new run's configuration (the command line calls it); ``config.parent`` records the
branch point, and :func:`start_branch` (called by the trainer once the data and the model are there) loads it, so a
detached trainer branches from the same record.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuinet.engine.checkpoint import Checkpoint, describe_arch, load_checkpoint
from tuinet.engine.optim import make_optimizer
from tuinet.errors import CheckpointError, ConfigError, DataError, ModelError
from tuinet.protocol import LIVE_SETTINGS
from tuinet.training.config import SCHEDULE_ALIASES, TrainConfig, default_runs_dir, read_toml
from tuinet.training.rundir import RunDir, absolute_dataset, find_run, free_run_name

#: settings that define the data: a branch keeps its parent's (the seed draws the splits too)
DATA_KEYS = ("dataset", "val_split", "test_split", "normalize", "target", "task", "limit", "seed", "n_samples",
             "noise")
#: the optimizer's name and hyperparameters as configuration keys
HYPER_KEYS = ("momentum", "dampening", "nesterov", "betas", "eps", "weight_decay", "alpha", "centered", "amsgrad")
OPTIMIZER_KEYS = ("optimizer", *HYPER_KEYS)


@dataclass
class BranchPoint:
    """A checkpoint of a run to branch from, and the training position it holds."""

    run: RunDir
    checkpoint: Checkpoint
    epoch: int  # epochs completed
    step: int  # the global step
    step_in_epoch: int  # > 0 for a checkpoint taken mid-epoch (a stopped run's latest)

    @property
    def record(self) -> dict[str, Any]:
        """The new run's ``parent``: run name, epoch, step, checkpoint file and the parent folder's path."""
        return {"run": self.run.name, "epoch": self.epoch, "step": self.step,
                "checkpoint": self.checkpoint.path.name, "path": str(self.run.path.resolve())}


def split_ref(ref: str) -> tuple[str, str]:
    """``RUN@5`` -> ``("RUN", "5")``; ``RUN@best`` -> ``("RUN", "best")``; ``RUN`` -> ``("RUN", "latest")``."""
    run, sep, which = ref.rpartition("@")
    if sep and run and (which.isdigit() or which in ("best", "latest")):
        return run, which
    return ref, "latest"


def _position(ckpt: Checkpoint) -> dict[str, Any]:
    x = ckpt.extra.get("trainer")
    if not isinstance(x, dict):
        raise CheckpointError(f"{ckpt.path}: the checkpoint holds no training position; it was not written by "
                              "`tuinet train`")
    for key in ("epoch", "global_step", "step_in_epoch"):
        v = x.get(key, 0)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise CheckpointError(f"{ckpt.path}: invalid training position ({key} {v!r:.40})")
    return x


def resolve_branch_point(ref: str, runs_dir: str | None = None) -> BranchPoint:
    """The checkpoint ``RUN[@EPOCH|@best|@latest]`` names, loaded and checked; one-line errors for an unknown run,
    an epoch whose checkpoint is not kept (naming the kept ones) and a checkpoint that cannot be used."""
    name, which = split_ref(ref)
    run = find_run(name, runs_dir)
    if which == "latest":
        path = run.latest
        if not path.is_file():
            raise CheckpointError(f"run {run.name} has no checkpoint to branch from yet ({path.name} is missing)")
    elif which == "best":
        path = run.best
        if not path.is_file():
            raise CheckpointError(f"run {run.name} has no best checkpoint ({path.name} is missing); branch from "
                                  f"{run.name} (its latest) or {run.name}@EPOCH")
    else:
        epoch = int(which)
        path = run.epoch_checkpoint(epoch)
        if not path.is_file():
            kept = list(run.epoch_checkpoints())
            if kept:
                have = f"it keeps epochs {_spans(kept)}"
            else:
                have = "it keeps no epoch checkpoints (trained with --keep-epochs 0, or before they existed)"
            raise CheckpointError(f"run {run.name} has no checkpoint for epoch {epoch}: {have}; or branch from "
                                  f"{run.name}@best or {run.name} (its latest checkpoint)")
    ckpt = load_checkpoint(path)  # refuses a damaged file and non-finite weights with one line
    x = _position(ckpt)
    return BranchPoint(run, ckpt, x.get("epoch", 0), x.get("global_step", 0), x.get("step_in_epoch", 0))


def _spans(numbers: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"``."""
    out, start = [], None
    for i, n in enumerate(numbers):
        if start is None:
            start = n
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            out.append(str(start) if start == n else f"{start}-{n}")
            start = None
    return ", ".join(out)


def settings_at(ckpt: Checkpoint, keys=LIVE_SETTINGS) -> dict[str, Any]:
    """The settings that change while a run trains (by default its weight penalties, dropout rate, weight decay and
    batch size, which the app sets) as they stood when ``ckpt`` was saved: its config.json keeps those the run
    started with. ``tuinet resume`` and a branch take them from here."""
    saved = ckpt.extra.get("config")
    return {k: saved[k] for k in keys if k in saved} if isinstance(saved, dict) else {}


def _parent_settings(point: BranchPoint) -> dict[str, Any]:
    """The parent's configuration as it stood at the checkpoint: its config.json (dataset path absolute), with the
    planned epochs of the checkpoint (``tuinet resume --epochs`` changes those) and its weight penalties, dropout
    rate, weight decay and batch size (the app changes those while it trains)."""
    base = point.run.read_json("config.json") or dict(point.checkpoint.extra.get("config") or {})
    base.update(settings_at(point.checkpoint))
    for key in ("name", "runs_dir", "parent"):
        base.pop(key, None)
    return base


def _option(key: str) -> str:
    return f"--{key.replace('_', '-')}"


def _same_hyper(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two optimizers' hyperparameters equal, the learning rate and the weight decay aside (JSON-normalized: tuples
    are lists)."""
    def norm(h):
        return json.dumps({k: v for k, v in h.items() if k not in ("lr", "weight_decay")}, sort_keys=True,
                          default=str)

    return norm(a) == norm(b)


def same_optimizer(optimizer, saved: dict[str, Any] | None) -> bool:
    """True when ``optimizer`` is the checkpoint's optimizer record's kind with the same hyperparameters (the
    learning rate and the weight decay aside, as a running optimizer's can change): its saved state then means the
    same thing and carries over."""
    return bool(saved) and optimizer.name == saved.get("name") and isinstance(saved.get("hyperparams"), dict) \
        and _same_hyper(optimizer.hyperparams(), saved["hyperparams"])


def branch_config(ref: str, options: dict[str, Any], config_file: str | None = None) -> TrainConfig:
    """The configuration of a run branched from ``ref`` (``RUN[@EPOCH|@best]``).

    Args:
        ref: the parent run (name or folder) and, after ``@``, which checkpoint.
        options: the training options given on the command line (None entries left out); they override the
            parent's settings, and so do those of ``config_file`` (a TOML file), under them.

    Without optimizer options, the optimizer is the one the checkpoint holds (a swap made while the parent trained
    included); without ``--lr``, the learning rate is the parent's at that point (changes made while it trained
    included, unless the optimizer changes kind). Raises ConfigError (one line) for a setting a branch cannot
    change and for epochs that do not reach past the branch point.
    """
    given: dict[str, Any] = {}
    if config_file:
        given.update({k.replace("-", "_") if isinstance(k, str) else k: v for k, v in read_toml(config_file).items()})
    given.update(options)
    if "parent" in given:
        raise ConfigError(f"{config_file}: 'parent' is set by --from; leave it out of the configuration file")
    runs_dir = given.get("runs_dir") if isinstance(given.get("runs_dir"), str) else None
    point = resolve_branch_point(ref, runs_dir)
    pname, ckpt = point.run.name, point.checkpoint
    source = str(point.run.path / "config.json")
    base = _parent_settings(point)
    parent = TrainConfig.from_dict({**base, "runs_dir": runs_dir or default_runs_dir()}, source=source)
    merged = {**base, **given, "name": given.get("name"), "runs_dir": runs_dir or default_runs_dir()}
    config = TrainConfig.from_dict(merged, source=config_file or source, options=set(options))

    for key in DATA_KEYS:
        new, old = getattr(config, key), getattr(parent, key)
        if key == "dataset":
            new, old = absolute_dataset(new), absolute_dataset(old)
        if new != old:
            raise ConfigError(f"{_option(key)} cannot change on a branch (run {pname} has {old!r}, asked {new!r}): "
                              "a branch trains on its parent's exact data split; start a new run instead")
    if config.epochs <= point.epoch:
        asked = f"--epochs {config.epochs}" if "epochs" in given else f"its {config.epochs} planned epochs"
        raise ConfigError(f"{asked}: run {pname} had completed {point.epoch} epochs at that checkpoint, and a "
                          f"branch counts epochs from the parent's start; give --epochs more than {point.epoch}")
    if point.step_in_epoch and config.batch_size != parent.batch_size:
        raise ConfigError(f"--batch-size cannot change from the middle of an epoch ({ckpt.path.name} of run {pname} "
                          f"is {point.step_in_epoch} steps into epoch {point.epoch + 1}); branch from an epoch's end "
                          f"instead: {pname}@{point.epoch}")

    saved = ckpt.meta.get("optimizer")
    if saved:
        built = _optimizer_of(config)
        if not set(given) & set(OPTIMIZER_KEYS) and not same_optimizer(built, saved):
            # the parent swapped its optimizer while it trained: the branch goes on with the one it had then
            config.optimizer = saved["name"]
            for key in HYPER_KEYS:
                if key in saved["hyperparams"]:
                    v = saved["hyperparams"][key]
                    setattr(config, key, tuple(v) if isinstance(v, list) else v)
            built = _optimizer_of(config)
        base_lr = _position(ckpt).get("base_lr")
        if "lr" not in given and built.name == saved["name"] and isinstance(base_lr, float) \
                and math.isfinite(base_lr) and base_lr > 0 and base_lr != built.lr:
            config.lr = base_lr  # the learning rate the parent had reached (set live, or lowered by a rollback)
    config.parent = point.record
    suffix = f"-from{point.epoch}"
    config.name = given.get("name") or free_run_name(config.runs_dir, pname[:40 - len(suffix)] + suffix)
    try:
        config.validate()
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return config


def _optimizer_of(config: TrainConfig):
    """The optimizer ``config`` describes, bound to no parameters (to compare its kind and hyperparameters)."""
    return make_optimizer(config.optimizer, [], lr=config.lr, **config.optimizer_hyperparams())


def parent_checkpoint_path(config: TrainConfig) -> Path:
    """The checkpoint file ``config.parent`` names (in its ``path``, else in the runs folder by its name)."""
    p = config.parent or {}
    folder = Path(p["path"]) if p.get("path") else Path(config.runs_dir) / p["run"]
    return folder / p["checkpoint"]


def _without_dropout(model) -> list:
    return [layer for layer in model.layers if type(layer).__name__ != "Dropout"]


def same_but_dropout(old, new) -> bool:
    """True when two models have the same layers once their dropout layers are left out (a dropout rate changed, or
    dropout added or removed): every weight of one then has its place in the other."""
    a, b = _without_dropout(old), _without_dropout(new)
    return old.input_shape == new.input_shape and old.loss_name == new.loss_name and len(a) == len(b) and all(
        json.dumps(x.config(), sort_keys=True) == json.dumps(y.config(), sort_keys=True) for x, y in zip(a, b))


def weights_for(old, new, weights: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """``old``'s weights (parameters and buffers; or ``weights``, named as ``old`` names them) under ``new``'s layer
    names, for models that are the same but for dropout (:func:`same_but_dropout`): a dropout layer shifts the names
    of the layers after it."""
    arrays = old.named_arrays() if weights is None else weights
    out = {}
    for lo, ln in zip(_without_dropout(old), _without_dropout(new)):
        for key, value in arrays.items():
            if key.startswith(lo.name + "."):
                out[ln.name + key[len(lo.name):]] = value
    return out


def _load_weights(ckpt: Checkpoint, model, config: TrainConfig, parent: dict[str, Any], pname: str) -> None:
    """Copy the checkpoint's weights into ``model``: the same layers, dropout layers aside (a changed rate, or
    dropout added or removed, keeps every weight); one clear line when the architecture differs."""
    old = ckpt.build_model()
    if not same_but_dropout(old, model):
        changed = [k for k in ("model", "activation") if getattr(config, k) != parent.get(k)]
        what = " ".join(f"{_option(k)} {getattr(config, k)}" for k in changed) or "the model"
        raise ModelError(f"{what} does not fit run {pname}'s checkpoint ({describe_arch(old.config())}; this model "
                         f"is {describe_arch(model.config())}): a branch keeps its parent's architecture (dropout, "
                         "l1/l2, optimizer, lr, schedule, batch size and epochs may change)")
    try:
        model.set_weights(weights_for(old, model))
    except ModelError as e:
        raise CheckpointError(f"{ckpt.path}: {e}") from None


def _check_data(ckpt: Checkpoint, data, pname: str) -> None:
    """The loaded data is the parent's: the normalization fitted on its training split and its classes are the
    ones the checkpoint saved (a data file changed since would train the weights on something else)."""
    from tuinet.training.evaluation import saved_dataset_info, saved_normalizer

    info = saved_dataset_info(ckpt)
    differs = None
    if saved_normalizer(ckpt) != data.normalizer:
        differs = "the normalization fitted on its training split"
    elif list(info.get("class_names") or []) != list(data.class_names):
        differs = "its classes"
    if differs:
        raise DataError(f"{data.name}: the data differs from what run {pname} trained on ({differs} changed: the "
                        "file was modified?); a branch must train on its parent's data")


def start_branch(trainer, ckpt: Checkpoint | None = None) -> dict[str, Any]:
    """Put the branch point of ``trainer.config.parent`` into a prepared trainer (data loaded, model, optimizer and
    schedule built from the configuration): weights, optimizer state when it carries over, schedule state, position
    and random states. Returns the ``parent`` record for the ``started`` event, with ``optimizer_state``
    (``carried`` or ``fresh``)."""
    c = trainer.config
    p = c.parent
    pname = p["run"]
    if ckpt is None:
        path = parent_checkpoint_path(c)
        if not path.is_file():
            raise CheckpointError(f"run {pname}'s checkpoint {path} is gone: cannot branch from it")
        ckpt = load_checkpoint(path)
    x = _position(ckpt)
    if x.get("global_step", 0) != p["step"] or x.get("epoch", 0) != p["epoch"]:
        raise CheckpointError(f"{ckpt.path}: now holds epoch {x.get('epoch', 0)}, step {x.get('global_step', 0)}, "
                              f"not the branch point (epoch {p['epoch']}, step {p['step']}): run {pname} went on")
    saved_cfg = ckpt.extra.get("config") if isinstance(ckpt.extra.get("config"), dict) else {}
    _load_weights(ckpt, trainer.model, c, saved_cfg, pname)
    _check_data(ckpt, trainer.data, pname)

    saved_opt = ckpt.meta.get("optimizer")
    if same_optimizer(trainer.optimizer, saved_opt):
        opt = ckpt.build_optimizer(trainer.model)  # the saved state, bound to this model's parameters
        opt.lr = trainer.optimizer.lr
        if "weight_decay" in opt.hyper:  # the branch's (its option, or the parent's as at the checkpoint)
            opt.hyper["weight_decay"] = trainer.optimizer.hyper["weight_decay"]
        trainer.optimizer = opt
        state, why = "carried", ""
    else:
        state = "fresh"
        if not saved_opt:
            why = " (the checkpoint holds none)"
        elif trainer.optimizer.name != saved_opt.get("name"):
            why = f" ({saved_opt.get('name')} -> {trainer.optimizer.name})"
        else:
            why = " (its hyperparameters changed)"
    trainer.base_lr = trainer.optimizer.lr

    schedule = SCHEDULE_ALIASES.get(saved_cfg.get("schedule"), saved_cfg.get("schedule"))
    if schedule == c.schedule and isinstance(x.get("schedule"), dict):
        trainer.schedule.load_state(x["schedule"])  # a plateau schedule's reductions so far
    trainer.epoch = x.get("epoch", 0)
    if saved_cfg.get("batch_size") == c.batch_size:
        trainer.step_in_epoch = x.get("step_in_epoch", 0)
        trainer.global_step = x.get("global_step", 0)
        trainer.schedule_offset = x.get("schedule_offset", 0)  # its batch size changed while it trained
    else:
        if x.get("step_in_epoch", 0):
            raise ConfigError(f"--batch-size cannot change from the middle of an epoch ({ckpt.path.name} of run "
                              f"{pname}); branch from {pname}@{trainer.epoch}")
        # steps count in this run's batches, so that step-based schedules see the epochs they expect
        trainer.global_step = trainer.epoch * trainer.steps_per_epoch
    try:
        if x.get("epoch_rng_state"):
            trainer.shuffle_rng.bit_generator.state = x["epoch_rng_state"]
        if x.get("dropout_rng_state"):
            trainer.model.dropout_rng.bit_generator.state = x["dropout_rng_state"]
        if trainer.augmenter is not None:  # a parent without augmentation has none: the branch starts it fresh
            trainer.augmenter.load_state(x.get("augment_rng_state"))
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{ckpt.path}: invalid random state ({e})") from None
    trainer._note(f"branched from run {pname} at epoch {p['epoch']} (step {p['step']}, {ckpt.path.name}): weights "
                  f"and random state loaded, optimizer state {state}{why}; epochs {trainer.epoch + 1} to {c.epochs} "
                  "follow")
    return {**p, "optimizer_state": state}

