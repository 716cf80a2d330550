"""The learning-rate range test ("lr finder"): train a copy of the model for a bounded number of steps while the
learning rate rises exponentially, record the loss, and suggest a learning rate from the curve.

The test never touches the live model or optimizer: it runs on a deep copy of the model (weights, buffers and the
dropout generator) and a new optimizer of the same kind loaded with the live one's state (step count, momentum
buffers, Adam moments). So it can run before training starts, or at any point of a paused run, and training goes on
exactly as if it had never run.

Three rules read the smoothed curve (the usual ones of fastai and Lightning):

* ``valley``: the longest stretch over which the loss keeps falling, and the point about halfway down it (fastai's
  default since 2.5; it is the one ``suggested_lr`` takes, since it sits well inside the part of the curve where
  the loss falls and is the least thrown by noise or by a short flat start);
* ``steepest``: where the loss falls fastest against log lr, on its way down to its lowest point;
* ``minimum``: a tenth of the lr at the lowest loss.

The curve is what matters: the app draws it with the three suggestions marked and a cursor to choose any lr.
"""

from __future__ import annotations

import copy
import math
import queue
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from tuinet.engine import kernels as K
from tuinet.engine.augment import Augmenter
from tuinet.engine.optim import make_optimizer
from tuinet.errors import ConfigError, TuinetError
from tuinet.protocol import LR_FIND_STEPS, check_learning_rate

DEFAULT_STEPS = 100
MIN_STEPS, MAX_STEPS = LR_FIND_STEPS
DEFAULT_START_LR = 1e-7
DEFAULT_END_LR = 10.0
#: exponential smoothing of the recorded loss (bias-corrected, as fastai and Lightning do)
SMOOTHING = 0.98
#: the test stops once the smoothed loss exceeds this many times its lowest value, and so did the raw losses of the
#: last EXPLODE_STEPS steps (one outlier batch on a nearly trained network must not end the test)
EXPLODE_FACTOR = 4.0
EXPLODE_STEPS = 3
#: the rules in the order they are shown; the first one is ``suggested_lr``
RULES = ("valley", "steepest", "minimum")
SUGGESTED_RULE = RULES[0]
#: seconds between two progress reports while the test runs
PROGRESS_EVERY = 0.25


@dataclass
class RangeTest:
    """The outcome of a range test.

    Attributes:
        lrs: the learning rate of each step taken.
        losses: the loss (data loss plus penalty) of each step, as computed before its update (None: not finite).
        smoothed: the bias-corrected exponential average of ``losses``.
        suggestions: rule -> suggested lr (None when the curve is too short for that rule).
        indices: rule -> the index of the curve point the rule chose (the minimum rule: the lowest point).
        stop_reason: ``exploded`` (see :func:`exploded`), ``non-finite``, ``cancelled``, or
            ``None`` when every planned step ran.
        steps: the planned number of steps.
        start_lr, end_lr: the planned range.
        seconds: how long the test took.
    """

    lrs: list[float] = field(default_factory=list)
    losses: list[float | None] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    suggestions: dict[str, float | None] = field(default_factory=dict)
    indices: dict[str, int | None] = field(default_factory=dict)
    stop_reason: str | None = None
    steps: int = DEFAULT_STEPS
    start_lr: float = DEFAULT_START_LR
    end_lr: float = DEFAULT_END_LR
    seconds: float = 0.0

    @property
    def suggested_lr(self) -> float | None:
        """The suggestion of :data:`SUGGESTED_RULE`, falling back on the other rules when it has none."""
        return next((self.suggestions[r] for r in RULES if self.suggestions.get(r) is not None), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: every field plus ``suggested_lr`` and ``suggested_rule``."""
        out = asdict(self)
        out["suggested_lr"] = self.suggested_lr
        out["suggested_rule"] = next((r for r in RULES if self.suggestions.get(r) is not None), None)
        return out


def check_range(start_lr: float, end_lr: float, steps: int) -> tuple[float, float, int]:
    """The range test's settings, checked: ConfigError with one line when they make no sense."""
    start_lr = check_learning_rate(start_lr, "start lr")
    end_lr = check_learning_rate(end_lr, "end lr")
    if not end_lr > start_lr:
        raise ConfigError(f"the end lr ({end_lr:g}) must be above the start lr ({start_lr:g})")
    if isinstance(steps, bool) or not isinstance(steps, int) or not MIN_STEPS <= steps <= MAX_STEPS:
        raise ConfigError(f"range test steps must be a whole number from {MIN_STEPS} to {MAX_STEPS}, got {steps!r}")
    return start_lr, end_lr, steps


def exploded(losses: list[float | None], smoothed: float, best: float) -> bool:
    """Whether the loss has blown up: the smoothed loss above EXPLODE_FACTOR times its lowest value so far
    (``best``), and each of the last EXPLODE_STEPS raw losses too. fastai and Lightning stop on the first
    condition alone; on a run far into training (losses near zero) a single hard batch then ends the test after a
    few steps."""
    bar = EXPLODE_FACTOR * best
    recent = losses[-EXPLODE_STEPS:]
    return smoothed > bar and len(recent) == EXPLODE_STEPS and all(v is not None and v > bar for v in recent)


def lr_schedule(start_lr: float, end_lr: float, steps: int) -> np.ndarray:
    """``steps`` learning rates from ``start_lr`` to ``end_lr``, evenly spaced on a log scale."""
    return start_lr * (end_lr / start_lr) ** (np.arange(steps) / max(steps - 1, 1))


def smooth(losses: list[float], beta: float = SMOOTHING) -> np.ndarray:
    """The bias-corrected exponential moving average of ``losses`` (the first point is the first loss)."""
    out = np.empty(len(losses))
    avg = 0.0
    for i, v in enumerate(losses):
        avg = beta * avg + (1 - beta) * v
        out[i] = avg / (1 - beta ** (i + 1))
    return out


def _window(n: int) -> tuple[int, int]:
    """The part of an n-point curve the rules read: the first tenth (the loss has not moved yet) and the last
    points (the explosion, and the smoothing's lag behind it) are left out, as fastai does."""
    lo = n // 10
    hi = n - min(5, n // 10)
    return (lo, hi) if hi - lo >= 3 else (0, n)


def valley_index(smoothed: np.ndarray) -> int:
    """fastai's valley: the longest decreasing subsequence of the curve, and the point about halfway down it (its
    start, one before the first point as fastai counts it, plus a third and a sixth of its length)."""
    n = len(smoothed)
    lds = [1] * n
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if smoothed[i] < smoothed[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    return min(max(max_start + int(sections) + int(sections / 2), 0), n - 1)


def steepest_index(lrs: np.ndarray, smoothed: np.ndarray) -> int:
    """The point where the loss falls fastest against log lr (the most negative slope)."""
    slopes = np.diff(smoothed) / np.diff(np.log(lrs))
    return int(np.argmin(slopes))


def suggest(lrs: list[float], smoothed: list[float]) -> tuple[dict[str, float | None], dict[str, int | None]]:
    """Every rule's suggested lr and the curve index it chose, from the curve (None where it is too short)."""
    lr = np.asarray(lrs, np.float64)
    sm = np.asarray(smoothed, np.float64)
    none = {r: None for r in RULES}
    if len(lr) < 3 or not np.isfinite(sm).all():
        return dict(none), dict(none)
    lo, hi = _window(len(lr))
    w_lr, w_sm = lr[lo:hi], sm[lo:hi]
    low = int(np.argmin(w_sm))
    # the steepest fall is on the way down, before the lowest loss: past it the loss climbs, and where it levels
    # off at chance (MNIST's 2.3, never 4x the minimum, so the test runs on) its noise has falls of its own; the
    # default run's curve gave "steepest 0.74" in that noise, 1,000x its valley
    down = low + 1 if low >= 2 else len(w_sm)
    idx = {"valley": lo + valley_index(w_sm), "steepest": lo + steepest_index(w_lr[:down], w_sm[:down]),
           "minimum": lo + low}
    lrs_out = {"valley": float(lr[idx["valley"]]), "steepest": float(lr[idx["steepest"]]),
               "minimum": float(lr[idx["minimum"]]) / 10}
    return {r: lrs_out[r] for r in RULES}, {r: idx[r] for r in RULES}


def copy_for_test(model, optimizer):
    """A deep copy of ``model`` and a new optimizer of the same kind and settings over the copy, loaded with
    ``optimizer``'s state (step count and every state array, copied): nothing the test does reaches the originals."""
    twin = copy.deepcopy(model)
    hyper = {k: v for k, v in optimizer.hyper.items()}
    opt = make_optimizer(optimizer.name, twin.params, lr=optimizer.lr, **hyper)
    meta, arrays = optimizer.state_dict()
    opt.load_state_dict(meta, arrays)  # copies into the new optimizer's own arrays
    return twin, opt


def clip_gradients(grads: list[np.ndarray], max_norm: float | None) -> float:
    """Scale ``grads`` in place so their global L2 norm is at most ``max_norm`` (None: leave them); returns the norm
    before clipping."""
    total = math.sqrt(sum(K.sum_squares(g.reshape(-1)) for g in grads))
    if max_norm is not None and total > max_norm:
        scale = np.float32(max_norm / (total + 1e-6))
        for g in grads:
            g *= scale
    return total


def range_test(model, optimizer, x: np.ndarray, y: np.ndarray, *, batch_size: int, seed: int = 0,
               start_lr: float = DEFAULT_START_LR, end_lr: float = DEFAULT_END_LR, steps: int = DEFAULT_STEPS,
               clip_grad: float | None = None, progress: Callable[[int, float, float | None], None] | None = None,
               cancelled: Callable[[], bool] | None = None,
               augment: Callable[[np.ndarray], np.ndarray] | None = None) -> RangeTest:
    """Run the range test on a copy of ``model`` and ``optimizer`` (both are left exactly as they were).

    Args:
        model, optimizer: the live model and optimizer (only read).
        x, y: the training data; batches of ``batch_size`` are drawn from a permutation seeded by ``seed``.
        start_lr, end_lr, steps: the range, swept exponentially, one optimizer step per lr.
        clip_grad: the run's gradient clipping, applied as in training.
        progress: called as ``progress(steps_done, lr, smoothed_loss)`` at most every PROGRESS_EVERY seconds.
        cancelled: polled between steps; True ends the test early (its curve so far is returned).
        augment: makes each batch's random versions, as the run's training does (None: the batches as they are).
    """
    start_lr, end_lr, steps = check_range(start_lr, end_lr, steps)
    if len(x) == 0:
        raise ConfigError("the training split is empty: nothing to run a range test on")
    t0 = time.perf_counter()
    twin, opt = copy_for_test(model, optimizer)
    rng = np.random.default_rng([seed, 4])
    perm, pos = rng.permutation(len(x)), 0
    result = RangeTest(steps=steps, start_lr=start_lr, end_lr=end_lr)
    beta, avg, best = SMOOTHING, 0.0, math.inf
    last_report = time.perf_counter()
    for i, lr in enumerate(lr_schedule(start_lr, end_lr, steps)):
        if cancelled is not None and cancelled():
            result.stop_reason = "cancelled"
            break
        if pos + batch_size > len(x) and pos > 0:
            perm, pos = rng.permutation(len(x)), 0
        idx = perm[pos:pos + batch_size]
        pos += batch_size
        xb = x[idx] if augment is None else augment(x[idx])
        loss, pen, _ = twin.compute_gradients(xb, y[idx])
        total = float(loss) + float(pen)
        result.lrs.append(float(lr))
        if not math.isfinite(total):
            result.losses.append(None)
            result.smoothed.append(math.inf)
            result.stop_reason = "non-finite"
            break
        result.losses.append(total)
        avg = beta * avg + (1 - beta) * total
        sm = avg / (1 - beta ** (i + 1))
        result.smoothed.append(sm)
        if exploded(result.losses, sm, best):
            result.stop_reason = "exploded"
            break
        best = min(best, sm)
        clip_gradients(twin.grads, clip_grad)
        opt.lr = float(lr)
        opt.step(twin.grads)
        if progress is not None and time.perf_counter() - last_report >= PROGRESS_EVERY:
            last_report = time.perf_counter()
            progress(i + 1, float(lr), sm)
    # the last point of a stopped test is where it blew up: drawn, but not read by the rules
    usable = len(result.smoothed) - (1 if result.stop_reason in ("exploded", "non-finite") else 0)
    result.smoothed = [s if math.isfinite(s) else None for s in result.smoothed]
    result.suggestions, result.indices = suggest(result.lrs[:usable], result.smoothed[:usable])
    result.seconds = time.perf_counter() - t0
    return result


def trainer_range_test(trainer, *, start_lr: float = DEFAULT_START_LR, end_lr: float = DEFAULT_END_LR,
                       steps: int = DEFAULT_STEPS, progress=None, cancelled=None) -> RangeTest:
    """:func:`range_test` on a prepared trainer's model, optimizer and training split, with its batch size and
    gradient clipping; the batches are seeded by the run's seed and its step (the same test twice, the same curve),
    and augmented as the run's are (by an augmenter of the test's own: the run's random state stays as it was).
    """
    d, c = trainer.data, trainer.config
    own = trainer.augmenter
    augment = None if own is None else Augmenter(own.aug, own.input_shape, own.fill, c.seed + trainer.global_step)
    return range_test(trainer.model, trainer.optimizer, d.x_train, d.y_train, batch_size=c.batch_size,
                      seed=c.seed + trainer.global_step, start_lr=start_lr, end_lr=end_lr, steps=steps,
                      clip_grad=c.clip_grad, progress=progress, cancelled=cancelled, augment=augment)


def run_in_trainer(trainer, cmd: dict[str, Any]) -> None:
    """The ``lr_find`` command, applied by ``trainer`` between two steps: pause first when running (the event says
    so, and the viewer resumes after its choice), run the range test on copies, and report it as ``lr_find`` events
    (``started``, ``progress``, then ``done`` or ``failed``). A ``stop`` arriving meanwhile cancels the test and stops
    the run; other commands wait until the test has ended, then apply in order.
    """
    paused_for_test = not trainer.paused
    if paused_for_test:
        trainer._apply({"command": "pause", "reason": "lr_find"})
    start_lr = float(cmd.get("start_lr", DEFAULT_START_LR))
    end_lr = float(cmd.get("end_lr", DEFAULT_END_LR))
    steps = int(cmd.get("steps", DEFAULT_STEPS))
    step = trainer.global_step
    base = dict(step=step, paused_for_test=paused_for_test, current_lr=trainer.optimizer.lr)
    deferred: list[dict[str, Any]] = []
    stop: list[dict[str, Any]] = []

    def cancelled() -> bool:
        while not stop:
            try:
                c = trainer.commands.get_nowait()
            except queue.Empty:
                return False
            (stop if c.get("command") == "stop" else deferred).append(c)
        return True

    def progress(done: int, lr: float, loss: float | None) -> None:
        trainer._emit("lr_find", phase="progress", done=done, steps=steps, lr=lr, loss=loss, step=step)

    try:
        check_range(start_lr, end_lr, steps)
        trainer._emit("lr_find", phase="started", steps=steps, start_lr=start_lr, end_lr=end_lr, **base)
        result = trainer_range_test(trainer, start_lr=start_lr, end_lr=end_lr, steps=steps, progress=progress,
                                    cancelled=cancelled)
    except Exception as e:  # noqa: BLE001 - the viewer waits for an answer: every failure is one
        trainer._emit("lr_find", phase="failed", error=str(e) if isinstance(e, TuinetError)
                      else f"{type(e).__name__}: {e}", **base)
        result = None
    if result is not None and not stop:
        trainer._emit("lr_find", phase="done", **base, **result.to_dict())
        trainer._log(f"lr range test: {len(result.lrs)} steps, suggested lr {_fmt(result.suggested_lr)} "
                     f"({', '.join(f'{r} {_fmt(result.suggestions[r])}' for r in RULES)})")
    for c in deferred:
        trainer._apply(c)
    if stop:
        trainer._emit("lr_find", phase="failed", error="cancelled: the run is stopping", **base)
        trainer._apply(stop[0])


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"
