"""The one protocol between a trainer and whoever watches it: events out, commands in.

Both are plain dicts that serialize to one JSON object per line. The same stream feeds the Textual app (through an
in-process :class:`~tuinet.training.session.Session`), ``tuinet train --headless --json``, ``metrics.jsonl`` in the
run directory, and viewers in another process (over a Unix socket, one JSON object per line).

The module also says which events carry pictures, which statuses mean a trainer is live, which event ends a run
and the exit code it means, which event confirms each command, and what any session offers a viewer
(:class:`Session`). Every side imports it; it imports nothing of tuinet but its errors.

Every event has ``"event"`` (its type), ``"v"`` (protocol version) and ``"time"`` (Unix seconds). Every command has
``"command"`` and may carry ``"v"``. The full field list of each type is in ``docs/protocol.md``.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from tuinet.errors import ConfigError

PROTOCOL_VERSION = 1

#: the largest batch a set_batch_size command may ask for (as `tuinet bench --batch-size`)
MAX_BATCH = 65536
#: the most epochs a set_epochs command may plan
MAX_EPOCHS = 1_000_000

#: event type -> one-line description (docs/protocol.md has every field)
EVENTS: dict[str, str] = {
    "started": "a run began: name, run_dir, config, dataset, model summary/layers, steps_per_epoch, total_steps",
    "compiling": "kernels compile (first run) or load from the cache; again per kernel: kernel, kernels_done, elapsed (helper_kernels: those done by the compile helper process)",
    "compiled": "kernels are ready: seconds (helper_kernels: how many the compile helper process compiled)",
    "step": "training metrics averaged over the last log_every steps: step, epoch, loss, penalty, accuracy, lr",
    "epoch": "end of an epoch: train/val loss and accuracy, lr, seconds, samples_per_second",
    "validation": "mid-epoch validation (every val_every steps): step, val_loss, val_accuracy",
    "layer_stats": "per-layer weight mean/std/min/max, gradient norm, update/weight ratio, dead ReLU fraction",
    "weights": "per-layer weight histograms and small weight pictures (first dense rows, conv filters)",
    "samples": "sample test predictions with confidence, and the most confidently wrong ones (augmented: the "
               "latest training batch's first samples as augmented, with augment, the run's setting)",
    "confusion": "confusion matrix on the validation set",
    "embedding": "validation samples as each weighted layer receives them, projected on two principal components "
                 "(after an embedding command, then again as the weights change): step, epoch, class_names, labels, "
                 "preds, views ({name, dims, explained, neighbours, points})",
    "boundary": "decision-boundary grid for 2-D datasets",
    "paused": "training paused (reason)",
    "resumed": "training resumed",
    "lr_changed": "learning rate changed: lr, old_lr, source (user, schedule, plateau, divergence, batch)",
    "optimizer_changed": "optimizer swapped: name, hyperparams, state (fresh)",
    "regularization_changed": "the weight penalties, the dropout rate or the weight decay changed (from the next "
                              "step): l1, l2, dropout, weight_decay (as they are now), previous {the same four}, step, "
                              "layers (the model's layers, when dropout layers came or went)",
    "batch_size_changed": "the batch size: batch_size (the one the run's batches have now), previous, pending (a size "
                          "asked for, which takes effect when the epoch in progress ends; null when none), scale_lr "
                          "(the lr is scaled by new/old size with it), "
                          "from_epoch (the completed epochs when it does), step, epoch, steps_per_epoch, total_steps",
    "epochs_changed": "the planned epochs changed (a set_epochs command): epochs, previous, step, epoch, total_steps, "
                      "lr (a schedule is stretched over the new plan)",
    "checkpoint_saved": "a checkpoint was written: path, kind (latest, best, manual)",
    "evaluated": "on-demand evaluation: split, loss, accuracy",
    "early_stopped": "validation loss stopped improving: epoch, best_epoch, best_val_loss",
    "diverged": "non-finite loss or gradient: step, action (rolled_back or paused), lr, new_lr",
    "rolled_back": "weights restored to the last good state: step, lr",
    "stopped": "stopped on request or signal, checkpoint saved: reason, step, epoch",
    "finished": "training complete: final, test_accuracy, test_loss, test_best, test_last, epochs, train_seconds, "
                "samples_per_second, best_epoch, run_dir",
    "failed": "training failed: error",
    "lr_find": "learning-rate range test on copies of the weights and optimizer state: phase (started, progress, "
               "done, failed); done carries the curve (lr, loss, smoothed), suggestions and suggested_lr",
    "log": "a message for the event log: level, message",
    "step_detail": "one step stage by stage (after a step command): forward outputs of one sample and activation "
                   "stats, loss before/after and per sample, gradient norm per layer, the update per layer",
    "probe": "the network's answer to the picture drawn in the app (after a probe command, then again as the weights "
             "change, at most twice a second): step, epoch, probs (one per class; null once cleared), pred",
    "gradient_health": "the gradient-over-depth verdict changed: status (ok, vanishing, exploding, stalled, "
                       "huge_updates), ratio, layers, message, hint",
}

#: command type -> description and required fields
COMMANDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "pause": ("pause before the next step", ()),
    "resume": ("resume training", ()),
    "toggle_pause": ("pause or resume", ()),
    "set_lr": ("set the learning rate (applied at the next step)", ("lr",)),
    "scale_lr": ("multiply the learning rate by factor", ("factor",)),
    "set_optimizer": ("swap the optimizer, keeping the weights: name, optional hyperparams dict", ("name",)),
    "set_regularization": ("set the weight penalties, the dropout rate and the optimizer's weight decay (from the next "
                           "step, weights and optimizer state kept): any of l1, l2, weight_decay (>= 0), dropout (in "
                           "[0, 1))", ()),
    "set_batch_size": ("set the batch size: from the next epoch (the epoch in progress keeps its batches), at once "
                       f"between epochs; batch_size: a whole number from 1 to {MAX_BATCH:,}; scale_lr (optional): "
                       "true to multiply the learning rate by new/old size when it applies", ("batch_size",)),
    "set_epochs": (f"plan epochs epochs in all (1 to {MAX_EPOCHS:,}; at least the epoch in progress): train "
                   "longer or shorter without a stop and a resume; a schedule is stretched over the new plan",
                   ("epochs",)),
    "save": ("save a checkpoint now", ()),
    "evaluate": ("evaluate on the test set now", ()),
    "rollback": ("after a divergence: restore the last good weights, multiply lr by factor (default 0.5)", ()),
    "stop": ("save a checkpoint and stop", ()),
    "snapshot": ("send weights/samples events now (a viewer opened a panel)", ()),
    "lr_find": ("run a learning-rate range test on copies of the weights and optimizer state (pausing first when "
                "running): optional start_lr, end_lr, steps", ()),
    "step": ("while paused: run count (default 1) steps, then send step_detail for the last one", ()),
    "probe": ("a picture drawn in the app, for the network to answer as it learns: image, rows of ink from 0 "
              "(background) to 1 (the training data's lightest gray) at the model's input size; null clears it",
              ("image",)),
    "embedding": ("watch: true to receive embedding events (each layer's view of validation samples) as the network "
                  "learns, false to stop (a classifier's); optional image: a picture drawn in the app (as probe's) "
                  "to place among them", ("watch",)),
}


#: events that change a setting while a run trains (an lr_changed unless its schedule made it): the app's charts and
#: the Compare screen draw a line where each happened, the latest MAX_SETTING_CHANGES of a run
SETTING_CHANGES = frozenset({"lr_changed", "optimizer_changed", "regularization_changed", "batch_size_changed",
                             "epochs_changed"})
MAX_SETTING_CHANGES = 64


def is_setting_change(e: dict[str, Any]) -> bool:
    """True for an event that changed a setting while the run trained (see :data:`SETTING_CHANGES`): not a
    schedule's lr step, nor a batch size asked for (it changes when its epoch starts: that event is marked)."""
    kind = e.get("event")
    if kind == "batch_size_changed":
        return e.get("batch_size") != e.get("previous")
    return kind in SETTING_CHANGES and not (kind == "lr_changed" and e.get("source") == "schedule")


#: events that carry pictures (weights, sample predictions, the decision boundary): only the newest one matters, so
#: they are not written to ``metrics.jsonl`` nor kept in a viewer's history; the last of each kind is replayed
PICTURE_EVENTS = frozenset({"weights", "samples", "boundary", "step_detail", "probe", "embedding"})

#: ``status.json`` statuses of a trainer that is (or should be) alive
LIVE_STATUSES = ("loading", "compiling", "running", "paused", "testing")

#: ``status.json`` statuses of a run whose trainer has ended (``pruned``: a sweep's pruner stopped it, checkpoint
#: saved, like ``stopped``)
ENDED_STATUSES = ("finished", "stopped", "pruned", "failed")

#: events that end a run
FINAL_EVENTS = ("finished", "stopped", "failed")

#: command -> the event that confirms the trainer applied it
ACKNOWLEDGED_BY = {"pause": "paused", "resume": "resumed", "scale_lr": "lr_changed", "set_lr": "lr_changed",
                   "set_optimizer": "optimizer_changed", "set_regularization": "regularization_changed",
                   "set_batch_size": "batch_size_changed", "set_epochs": "epochs_changed",
                   "save": "checkpoint_saved", "evaluate": "evaluated",
                   "rollback": "rolled_back", "lr_find": "lr_find",
                   "step": "step_detail"}

Listener = Callable[[dict[str, Any]], None]


@runtime_checkable
class Session(Protocol):
    """What a viewer (the app, a headless printer) may use of a run: an in-process thread, a detached trainer behind
    its socket, or a replay of recorded events."""

    #: the events so far, for a viewer that arrives late (bounded; pictures excluded)
    history: Sequence[dict[str, Any]]
    #: the newest event of each kind
    last: dict[str, dict[str, Any]]

    @property
    def started(self) -> bool:
        """True once training was started (always, for a detached run or a replay)."""

    @property
    def running(self) -> bool:
        """True while the trainer is alive."""

    @property
    def state(self) -> dict[str, Any]:
        """The trainer's live state (status, paused, lr, optimizer, epoch, step ...), a copy."""

    def start(self) -> None:
        """Start training (in-process sessions; nothing to do where the trainer runs elsewhere)."""

    def add_listener(self, fn: Listener) -> None:
        """Call ``fn(event)`` for every event from now on (possibly from another thread)."""

    def remove_listener(self, fn: Listener) -> None:
        """Stop calling ``fn``."""

    def send(self, command: dict[str, Any]) -> Any:
        """Queue a command for the trainer (validated; raises ConfigError when malformed)."""

    def join(self, timeout: float | None = None) -> bool:
        """Wait for training to end; True when it has."""


def final_event(last: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The event that ended the run, from a session's newest-event-per-kind map (None while it runs).

    A resumed run's history also holds the earlier process's end (a ``stopped`` before a later ``finished``), so the
    newest final event wins."""
    return max((last[k] for k in FINAL_EVENTS if k in last), key=lambda e: e.get("time") or 0, default=None)


def exit_code(final: dict[str, Any] | None, signum: int | None = None) -> int:
    """The process exit code a run's end means: 0 finished, 128+signal when a signal stopped it, 3 stopped on
    request, 1 failed or ended without a final event."""
    if final is None:
        return 1
    if final["event"] == "finished":
        return 0
    if final["event"] == "stopped":
        return 128 + signum if signum else 3
    return 1


def make_event(_kind: str, **fields: Any) -> dict[str, Any]:
    """Build an event dict of type ``_kind``."""
    if _kind not in EVENTS:
        raise ValueError(f"unknown event type {_kind!r}")
    return {"event": _kind, "v": PROTOCOL_VERSION, "time": round(time.time(), 3), **fields}


def make_command(kind: str, **fields: Any) -> dict[str, Any]:
    """Build a command dict of type ``kind``, checking its required fields."""
    cmd = {"command": kind, "v": PROTOCOL_VERSION, **fields}
    validate_command(cmd)
    return cmd


#: the float32 range a learning rate or hyperparameter must fit (the engine computes in float32)
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_MIN_NORMAL = 1.1754943508222875e-38
MAX_TEXT = 200  # characters of a free-text field (a reason)
MAX_NAME = 32  # characters of a name (an optimizer, a hyperparameter)
LR_FIND_STEPS = (10, 1000)  # the fewest and most steps of a learning-rate range test
MAX_STEPS = 100_000  # steps one `step` command may ask for
MAX_IMAGE_SIDE = 64  # rows, and numbers a row, of a probe command's image

#: hyperparameters a set_optimizer command may carry, and their kind
HYPERPARAMS = {"momentum": "number", "dampening": "number", "nesterov": "bool", "betas": "betas", "eps": "number",
               "weight_decay": "number", "alpha": "number", "centered": "bool", "amsgrad": "bool"}

#: what a set_regularization command may change (the run's settings of the same names; weight_decay is the
#: optimizer's hyperparameter)
REGULARIZATION = ("l1", "l2", "dropout", "weight_decay")

#: the settings that change while a run trains (the app's commands): a checkpoint's config carries them as they
#: stood when it was saved, and the Compare screen shows a changed one as ``start → now``
LIVE_SETTINGS = (*REGULARIZATION, "batch_size", "epochs")

#: fields any command may carry besides its own: the protocol version, and the viewer's pid (set by the socket)
_COMMON_FIELDS = {"command", "v", "client_pid"}
#: command -> its optional fields
_OPTIONAL_FIELDS = {"pause": ("reason",), "stop": ("reason",), "set_optimizer": ("hyperparams", "lr"),
                    "rollback": ("factor",), "lr_find": ("start_lr", "end_lr", "steps"),
                    "step": ("count",), "embedding": ("image",),
                    "set_regularization": REGULARIZATION, "set_batch_size": ("scale_lr",)}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_learning_rate(lr: Any, what: str = "learning rate") -> float:
    """A learning rate as a float that stays positive and finite in float32; ConfigError otherwise."""
    if not _is_number(lr) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"{what} must be a positive number, got {lr!r}")
    if lr > FLOAT32_MAX:
        raise ConfigError(f"{what} {lr!r} is too large: it becomes infinite in float32 (at most {FLOAT32_MAX:.4g})")
    if lr < FLOAT32_MIN_NORMAL:
        raise ConfigError(f"{what} {lr!r} is too small for float32 (at least {FLOAT32_MIN_NORMAL:.4g})")
    return float(lr)


def _check_hyperparam(name: Any, value: Any) -> None:
    if not isinstance(name, str) or name not in HYPERPARAMS:
        shown = name if isinstance(name, str) and len(name) <= MAX_NAME else type(name).__name__
        raise ConfigError(f"unknown hyperparameter {shown!r}; known: {', '.join(HYPERPARAMS)}")
    kind = HYPERPARAMS[name]
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"hyperparameter {name} must be true or false, got {value!r:.40}")
    elif kind == "betas":
        if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(
                _is_number(b) and math.isfinite(b) and 0 <= b < 1 for b in value):
            raise ConfigError(f"hyperparameter betas must be two numbers in [0, 1), got {value!r:.60}")
    elif not _is_number(value) or not math.isfinite(value) or not 0 <= value <= FLOAT32_MAX:
        raise ConfigError(f"hyperparameter {name} must be a finite number >= 0, got {value!r:.40}")


def _check_image(image: Any) -> None:
    """A probe's image: at most MAX_IMAGE_SIDE rows of as many numbers each, all finite (the range and the model's
    size are the trainer's to check)."""
    if not isinstance(image, list) or not 0 < len(image) <= MAX_IMAGE_SIDE or not all(
            isinstance(row, list) and 0 < len(row) <= MAX_IMAGE_SIDE for row in image):
        raise ConfigError(f"image must be 1 to {MAX_IMAGE_SIDE} rows of 1 to {MAX_IMAGE_SIDE} numbers (or null)")
    if len({len(row) for row in image}) != 1:
        raise ConfigError("image rows must all have the same length")
    if not all(_is_number(v) and math.isfinite(v) for row in image for v in row):
        raise ConfigError("image values must be finite numbers")


def check_regularization(cmd: dict[str, Any]) -> None:
    """A set_regularization command: at least one of l1, l2, dropout, weight_decay; penalties and decay finite and
    >= 0, a dropout rate in [0, 1)."""
    given = [k for k in REGULARIZATION if k in cmd]
    if not given:
        raise ConfigError(f"command 'set_regularization' needs at least one of {', '.join(REGULARIZATION)}")
    for key in given:
        v = cmd[key]
        if not _is_number(v) or not math.isfinite(v):
            raise ConfigError(f"{key} must be a number, got {v!r:.40}")
        if key == "dropout" and not 0 <= v < 1:
            raise ConfigError(f"dropout must be in [0, 1) (the share of units dropped), got {v!r:.40}")
        if key != "dropout" and not 0 <= v <= FLOAT32_MAX:
            raise ConfigError(f"{key} must be a number >= 0, got {v!r:.40}")


def validate_command(cmd: Any) -> dict[str, Any]:
    """Check a command from any source (the app, a socket client) field by field: types, ranges and lengths.

    Returns the command; raises ConfigError with one clear line when anything is wrong, so nothing malformed ever
    reaches the trainer.
    """
    if not isinstance(cmd, dict) or "command" not in cmd:
        raise ConfigError(f"a command must be an object with a 'command' field, got {str(cmd)[:80]!r}")
    kind = cmd["command"]
    if not isinstance(kind, str) or kind not in COMMANDS:
        shown = kind if isinstance(kind, str) and len(kind) <= MAX_NAME else type(kind).__name__
        raise ConfigError(f"unknown command {shown!r}; known: {', '.join(COMMANDS)}")
    required = COMMANDS[kind][1]
    allowed = _COMMON_FIELDS | set(required) | set(_OPTIONAL_FIELDS.get(kind, ()))
    for field in cmd:
        if field not in allowed:
            shown = field if isinstance(field, str) and len(field) <= MAX_NAME else "…"
            raise ConfigError(f"command {kind!r} takes no field {shown!r}")
    for field in required:
        if field not in cmd:
            raise ConfigError(f"command {kind!r} needs field {field!r}")
    if "v" in cmd and (not isinstance(cmd["v"], int) or isinstance(cmd["v"], bool)):
        raise ConfigError(f"field 'v' must be the protocol version (an integer), got {cmd['v']!r:.40}")
    if "client_pid" in cmd and (not isinstance(cmd["client_pid"], int) or isinstance(cmd["client_pid"], bool)):
        raise ConfigError("field 'client_pid' must be an integer")
    if "reason" in cmd and (not isinstance(cmd["reason"], str) or len(cmd["reason"]) > MAX_TEXT):
        raise ConfigError(f"field 'reason' must be a text of at most {MAX_TEXT} characters")
    if "lr" in cmd:
        check_learning_rate(cmd["lr"])
    for field in ("start_lr", "end_lr"):
        if field in cmd:
            check_learning_rate(cmd[field], field.replace("_", " "))
    if "steps" in cmd:
        n = cmd["steps"]
        if not isinstance(n, int) or isinstance(n, bool) or not LR_FIND_STEPS[0] <= n <= LR_FIND_STEPS[1]:
            raise ConfigError(f"steps must be a whole number from {LR_FIND_STEPS[0]} to {LR_FIND_STEPS[1]}, "
                              f"got {n!r:.40}")
    if "factor" in cmd:
        f = cmd["factor"]
        if not _is_number(f) or not math.isfinite(f) or not 0 < f <= FLOAT32_MAX:
            raise ConfigError(f"lr factor must be a positive number, got {f!r:.40}")
    if "count" in cmd:
        n = cmd["count"]
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_STEPS:
            raise ConfigError(f"step count must be a whole number from 1 to {MAX_STEPS:,}, got {n!r:.40}")
    if kind == "set_regularization":
        check_regularization(cmd)
    if kind == "set_epochs":
        n = cmd["epochs"]
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_EPOCHS:
            raise ConfigError(f"epochs must be a whole number from 1 to {MAX_EPOCHS:,}, got {n!r:.40}")
    if kind == "set_batch_size":
        n = cmd["batch_size"]
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_BATCH:
            raise ConfigError(f"batch size must be a whole number from 1 to {MAX_BATCH:,}, got {n!r:.40}")
        if not isinstance(cmd.get("scale_lr", False), bool):
            raise ConfigError(f"field 'scale_lr' must be true or false, got {cmd['scale_lr']!r:.40}")
    if kind == "probe" and cmd["image"] is not None:
        _check_image(cmd["image"])
    if kind == "embedding" and not isinstance(cmd["watch"], bool):
        raise ConfigError(f"field 'watch' must be true or false, got {cmd['watch']!r:.40}")
    if kind == "embedding" and cmd.get("image") is not None:
        _check_image(cmd["image"])
    if kind == "set_optimizer":
        name = cmd["name"]
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
            raise ConfigError(f"optimizer name must be a text of 1 to {MAX_NAME} characters, got "
                              f"{type(name).__name__ if not isinstance(name, str) else repr(name[:40])}")
        hyper = cmd.get("hyperparams")
        if hyper is not None:
            if not isinstance(hyper, dict) or len(hyper) > len(HYPERPARAMS):
                raise ConfigError("hyperparams must be an object of at most "
                                  f"{len(HYPERPARAMS)} named values, got {type(hyper).__name__}")
            for k, v in hyper.items():
                _check_hyperparam(k, v)
    return cmd


def _clean(obj: Any) -> Any:
    """Replace NaN/inf floats by None so the line is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def to_json(message: dict[str, Any]) -> str:
    """One line of strict JSON (non-finite numbers become null)."""
    return json.dumps(_clean(message), separators=(",", ":"), default=_default)


def _default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot serialize {type(obj).__name__}")


def from_json(line: str | bytes) -> dict[str, Any]:
    """Parse one line of the protocol; ValueError for anything that is not one JSON object (too deep included)."""
    try:
        msg = json.loads(line)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if not isinstance(msg, dict):
        raise ValueError("protocol messages are JSON objects")
    return msg
