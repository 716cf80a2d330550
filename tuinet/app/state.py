"""What the app knows about a run, folded from the event stream: pure Python, no Textual (tested on its own).

The app drains its event queue a few times a second into one :class:`RunState`; each event marks the parts of the
screen it changed (``dirty``), so a redraw touches only those. Every history kept here is bounded: metric series
halve the resolution of their older half when full, and logs and sparklines are fixed-length deques.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

from tuinet.formatting import fmt_duration, fmt_num
from tuinet.protocol import MAX_SETTING_CHANGES, REGULARIZATION, is_setting_change
from tuinet.training.console import batch_size_change, epochs_change, regularization_change
from tuinet.training.probe import drawable
from tuinet.training.summary import summary_lines

#: parts of the screen an event can change
SECTIONS = ("status", "progress", "charts", "layers", "weights", "samples", "confusion", "boundary", "log", "info",
            "stepview", "probe", "probe_layers", "embedding")

#: events the app shows at once (not at the next 5 Hz tick) whether asked for or not: the run's lifecycle and
#: alarms. The answer to a command the app is waiting for (see ``TuinetApp.pending``) is shown at once too; the
#: same kind of event when nobody asked (a routine per-epoch checkpoint) waits for the tick.
ALERTS = frozenset({"started", "compiled", "early_stopped", "diverged", "stopped", "finished", "failed"})


class Series:
    """A bounded (x, y) series that keeps the whole run at a uniform, coarsening resolution.

    Points go into bins of ``stride`` raw points (their mean is stored); when ``cap`` bins are stored, neighbouring
    pairs are merged and the stride doubles. Memory stays O(cap) however long the run, every stored point weighs
    the same, and the newest raw value is always shown (the partly filled bin is part of :meth:`points`).
    """

    def __init__(self, cap: int = 1000):
        self.cap = max(8, cap - cap % 2)
        self.x: list[float] = []
        self.y: list[float] = []
        self.stride = 1
        self._sx = self._sy = 0.0
        self._n = 0
        self.last: float | None = None  # the newest raw y
        self.version = 0  # bumps on every change, so a chart can tell it has nothing new to draw

    def append(self, x: float, y: float | None) -> None:
        """Add a point (None and non-finite y are skipped: a chart cannot draw them)."""
        if y is None or not math.isfinite(y):
            return
        self.last = float(y)
        self._sx += float(x)
        self._sy += float(y)
        self._n += 1
        if self._n == self.stride:
            self.x.append(self._sx / self._n)
            self.y.append(self._sy / self._n)
            self._sx = self._sy = 0.0
            self._n = 0
            if len(self.x) >= self.cap:
                self.x = [(self.x[i] + self.x[i + 1]) / 2 for i in range(0, len(self.x) - 1, 2)]
                self.y = [(self.y[i] + self.y[i + 1]) / 2 for i in range(0, len(self.y) - 1, 2)]
                self.stride *= 2
        self.version += 1

    def points(self) -> tuple[list[float], list[float]]:
        """(x, y) to draw: the stored bins plus the partly filled newest bin."""
        if self._n:
            return self.x + [self._sx / self._n], self.y + [self._sy / self._n]
        return list(self.x), list(self.y)

    def __len__(self) -> int:
        return len(self.x) + (1 if self._n else 0)


def smooth(values: list[float], alpha: float = 0.15) -> list[float]:
    """Exponential moving average (TensorBoard-style, debiased at the start)."""
    out, acc, w = [], 0.0, 0.0
    for v in values:
        acc = (1 - alpha) * acc + alpha * v
        w = (1 - alpha) * w + alpha
        out.append(acc / w)
    return out


def fmt_hyper(hyper: dict[str, Any]) -> str:
    """Optimizer hyperparameters without lr, e.g. 'betas=0.9,0.999 eps=1e-08'."""
    parts = []
    for k, v in (hyper or {}).items():
        if k == "lr":
            continue
        if isinstance(v, (list, tuple)):
            v = ",".join(fmt_num(float(x)) for x in v)
        elif isinstance(v, float):
            v = fmt_num(v)
        parts.append(f"{k}={v}")
    return " ".join(parts)


class RunState:
    """Everything the screens show, updated by :meth:`apply` from protocol events.

    Args:
        cap: points kept per metric series.
        log_lines: event-log lines kept.
        spark_len: gradient-norm history kept per layer (for sparklines).
    """

    def __init__(self, cap: int = 1000, log_lines: int = 400, spark_len: int = 60):
        self.cap = cap
        self.spark_len = spark_len
        self.reset()
        self.log: deque[tuple[float, str, str]] = deque(maxlen=log_lines)
        self.log_count = 0  # lines ever logged (a viewer appends the ones it has not written yet)

    def reset(self) -> None:
        """Forget the run (used on restart); keeps the log."""
        self.name: str | None = None
        self.run_dir: str | None = None
        self.config: dict[str, Any] = {}
        self.dataset: dict[str, Any] = {}
        self.model_summary = ""
        self.layers: list[dict[str, Any]] = []
        self.num_params = 0
        self.status = "loading"  # loading compiling running paused diverged finished stopped failed
        self.compiling = False
        self.compile_started: float | None = None  # monotonic time of the first ``compiling`` (live elapsed time)
        self.compile_kernel: str | None = None  # the kernel Numba is compiling now, when the trainer said
        self.compile_done = 0
        self.compile_helper: int | None = None  # of those, compiled by the trainer's compile helper process
        self.paused = False
        self.diverged: dict[str, Any] | None = None
        self.steps_per_epoch = 1
        self.total_steps = 1
        self.epochs = 1
        self.batch_size = 0
        self.batch_pending: int | None = None  # a batch size asked for, from the next epoch
        self.batch_scale_lr = False  # ... with the lr scaled by new/old size then
        #: (step, epoch, steps per epoch) from each step on which the run's batches had one size
        self._epoch_at: list[tuple[float, float, int]] = [(0.0, 0.0, 1)]
        self.optimizer = "-"
        self.hyperparams: dict[str, Any] = {}
        self.lr: float | None = None
        # the schedule's base: lr = base_lr * the schedule's factor; what a restart starts from (the trainer's
        # base_lr, moved by the user's lr changes and rollbacks, not by the schedule)
        self.base_lr: float | None = None
        self.step = 0
        self.epoch = 0.0
        self.loss: float | None = None
        self.accuracy: float | None = None
        self.samples_per_second: float | None = None
        self.val_loss: float | None = None
        self.val_accuracy: float | None = None
        self.best_val_accuracy: float | None = None
        self.final: dict[str, Any] | None = None
        self.evaluated: dict[str, Any] | None = None
        self.error: str | None = None
        self.train_loss = Series(self.cap)
        self.train_acc = Series(self.cap)
        self.val_loss_s = Series(self.cap)
        self.val_acc_s = Series(self.cap)
        #: where a setting changed (an lr not set by the schedule, the optimizer, regularization), in epochs: the
        #: charts draw a line there, so a change's effect on the curves is seen where it was made
        self.changes: list[float] = []
        self.layer_rows: dict[str, dict[str, Any]] = {}
        self.grad_history: dict[str, deque[float]] = {}
        self._flags: dict[str, str | None] = {}
        self.weights: dict[str, Any] | None = None
        self.samples: dict[str, Any] | None = None
        self.confusion: dict[str, Any] | None = None
        self.boundary: dict[str, Any] | None = None
        self.probe: dict[str, Any] | None = None  # the newest answer to the picture drawn on the Draw tab
        self.embedding: dict[str, Any] | None = None  # the newest view of the validation samples, layer by layer
        self.step_detail: dict[str, Any] | None = None  # the newest step shown stage by stage (after `n`)
        self.health: dict[str, Any] | None = None  # the newest gradient-health verdict (layer_stats, gradient_health)
        self._rate_t: float | None = None
        self._rate_step = 0
        self.steps_per_second: float | None = None
        self.dirty: set[str] = set(SECTIONS)
        self.events_seen = 0

    # --- derived ---------------------------------------------------------------------------------------------------

    @property
    def is_classifier(self) -> bool:
        """True for classification runs (accuracy charts, predictions)."""
        return self.dataset.get("task", "classification") == "classification"

    @property
    def is_2d(self) -> bool:
        """True when the inputs are 2-D points (a decision-boundary map applies)."""
        return list(self.dataset.get("input_shape", [])) == [2]

    @property
    def drawable(self) -> bool:
        """True for a classifier of gray images: one can draw it an input (the Draw tab)."""
        return drawable(self.dataset.get("task", "classification"), self.dataset.get("input_shape"))

    @property
    def done(self) -> bool:
        """True once the run ended (finished, stopped or failed)."""
        return self.status in ("finished", "stopped", "failed")

    @property
    def eta_seconds(self) -> float | None:
        """Seconds to the planned end at the recent step rate."""
        if self.done:
            return 0.0
        if self.paused:
            return None
        rate = self.steps_per_second
        if not rate:
            sps = self.samples_per_second
            rate = sps / self.batch_size if sps and self.batch_size else None
        if not rate:
            return None
        return max(self.total_steps - self.step, 0) / rate

    @property
    def progress(self) -> float:
        """Fraction of the planned steps done."""
        return min(1.0, self.step / max(self.total_steps, 1))

    def add_log(self, text: str, level: str = "info", t: float | None = None) -> None:
        """Append a line to the event log."""
        self.log.append((t or time.time(), level, text))
        self.log_count += 1
        self.dirty.add("log")

    # --- folding events ---------------------------------------------------------------------------------------------

    def apply(self, e: dict[str, Any]) -> None:
        """Fold one event into the state and mark what it changed."""
        self.events_seen += 1
        handler = getattr(self, "_on_" + str(e.get("event")), None)
        if handler is not None:
            handler(e)
        if is_setting_change(e):
            self._mark_change(e)

    def _on_started(self, e):
        self.name, self.run_dir = e.get("name"), e.get("run_dir")
        self.config = e.get("config") or {}
        self.dataset = e.get("dataset") or {}
        self.model_summary = e.get("model") or ""
        self.layers = e.get("layers") or []
        self.num_params = e.get("num_params") or sum(int(layer.get("params", 0)) for layer in self.layers)
        self.steps_per_epoch = e.get("steps_per_epoch") or 1
        self.total_steps = e.get("total_steps") or self.steps_per_epoch
        self.epochs = e.get("epochs") or 1
        self.batch_size = e.get("batch_size") or 0
        self.batch_pending, self.batch_scale_lr = None, False
        step, into = e.get("step") or 0, e.get("step_in_epoch")
        self._epoch_at = [(step - into, float(e.get("epoch") or 0), self.steps_per_epoch) if isinstance(into, int)
                          else (0.0, 0.0, self.steps_per_epoch)]  # (a run from before the field: from step 0)
        self.optimizer = e.get("optimizer") or "-"
        self.hyperparams = e.get("hyperparams") or {}
        self.lr = e.get("lr")
        self.base_lr = e.get("base_lr") or (e.get("config") or {}).get("lr") or self.lr
        self.step = e.get("step") or 0
        self.epoch = float(e.get("epoch") or 0)
        self.status = "running"
        self.dirty.update(SECTIONS)
        ds = self.dataset
        what = "resumed" if e.get("resumed") else "started"
        self.add_log(f"{what} {self.name or 'run'}: {self.config.get('model', '?')} on {ds.get('name', '?')} "
                     f"({self.num_params:,} parameters)", t=e.get("time"))

    def _on_compiling(self, e):
        if not self.compiling:  # the first report (later ones, per kernel, say what is compiling now)
            self.compiling = True
            self.compile_started = time.monotonic() - float(e.get("elapsed") or 0.0)
            self.compile_kernel, self.compile_done = None, 0
            self.status = "compiling"
            self.add_log("compiling kernels (first run) or loading them from the cache", t=e.get("time"))
        if e.get("kernel"):
            self.compile_kernel, self.compile_done = str(e["kernel"]), int(e.get("kernels_done") or 0)
            self.compile_helper = e.get("helper_kernels")
        self.dirty.add("status")

    def compile_progress(self) -> str:
        """What the compile screen says now: elapsed time, the kernel compiling, how many are done."""
        if not self.compiling or self.compile_started is None:
            return ""
        text = f"{time.monotonic() - self.compile_started:.0f} s"
        if self.compile_kernel:
            text += f" · {self.compile_kernel} · {self.compile_done} kernels done"
            if self.compile_helper is not None:
                text += f" ({self.compile_helper} by the compile helper)"
        return text

    def _on_compiled(self, e):
        self.compiling = False
        if self.status == "compiling":
            self.status = "paused" if self.paused else "running"
        self.dirty.add("status")
        helper = f" ({e['helper_kernels']} compiled by the compile helper)" if e.get("helper_kernels") else ""
        self.add_log(f"kernels ready in {e.get('seconds', 0):.1f}s{helper}", t=e.get("time"))

    def _on_step(self, e):
        step = e.get("step", self.step)
        t = e.get("time") or time.time()
        if self._rate_t is not None and t > self._rate_t and step > self._rate_step:
            rate = (step - self._rate_step) / (t - self._rate_t)
            self.steps_per_second = rate if self.steps_per_second is None else 0.7 * self.steps_per_second + 0.3 * rate
        self._rate_t, self._rate_step = t, step
        self.step = step
        self.epoch = float(e.get("epoch", self.epoch))
        self.loss = e.get("loss")
        self.accuracy = e.get("accuracy")
        if e.get("lr") is not None:
            if self.lr != e["lr"]:
                self.dirty.add("status")
            self.lr = e["lr"]
        self.samples_per_second = e.get("samples_per_second") or self.samples_per_second
        if self.status == "compiling":
            self.status = "running"
            self.compiling = False
            self.dirty.add("status")
        self.train_loss.append(self.epoch, self.loss)
        self.train_acc.append(self.epoch, self.accuracy)
        self.dirty.update(("progress", "charts"))

    def _on_epoch(self, e):
        x = float(e.get("epoch", self.epoch))
        self.val_loss = e.get("val_loss")
        self.val_accuracy = e.get("val_accuracy")
        if self.val_accuracy is not None:
            self.best_val_accuracy = max(self.best_val_accuracy or 0.0, self.val_accuracy)
        self.val_loss_s.append(x, self.val_loss)
        self.val_acc_s.append(x, self.val_accuracy)
        self.dirty.update(("progress", "charts"))
        acc = f", val acc {e['val_accuracy']:.2%}" if e.get("val_accuracy") is not None else ""
        self.add_log(f"epoch {e.get('epoch')}: train loss {fmt_num(e.get('train_loss'))}, val loss "
                     f"{fmt_num(self.val_loss)}{acc} ({fmt_duration(e.get('seconds'))})", t=e.get("time"))

    def _on_validation(self, e):
        self.val_loss = e.get("val_loss")
        self.val_accuracy = e.get("val_accuracy")
        x = self.epoch_of(e.get("step", self.step))
        self.val_loss_s.append(x, self.val_loss)
        self.val_acc_s.append(x, self.val_accuracy)
        self.dirty.update(("progress", "charts"))

    def _on_layer_stats(self, e):
        for row in e.get("layers") or []:
            name = row.get("name", "?")
            self.layer_rows[name] = row
            g = row.get("grad_norm")
            if g is not None:
                self.grad_history.setdefault(name, deque(maxlen=self.spark_len)).append(float(g))
            if row.get("flag") and self._flags.get(name) != row["flag"]:
                self.add_log(f"{name}: {row['flag']} gradients (norm {fmt_num(g)})", "warning", e.get("time"))
            self._flags[name] = row.get("flag")
        h = e.get("health")
        if h is not None:  # the verdict of these rows; the words of the last gradient_health while it holds
            same = self.health is not None and self.health.get("status") == h.get("status")
            self.health = {**self.health, **h} if same else dict(h)
        self.dirty.add("layers")

    def _on_gradient_health(self, e):
        self.health = e
        self.dirty.update(("layers", "stepview"))
        ok = e.get("status") == "ok"
        self.add_log(f"{e.get('message')}" + ("" if ok or not e.get("hint") else f" — {e['hint']}"),
                     "info" if ok else "warning", e.get("time"))

    def _on_step_detail(self, e):
        self.step_detail = e
        self.step = max(self.step, e.get("step") or 0)
        self.dirty.update(("stepview", "progress"))
        lo = e.get("loss") or {}
        self.add_log(f"step {e.get('step')}: loss {fmt_num(lo.get('before'))} → {fmt_num(lo.get('after'))} on its "
                     f"batch", t=e.get("time"))

    def _on_weights(self, e):
        self.weights = e
        self.dirty.add("weights")

    def _on_samples(self, e):
        self.samples = e
        self.dirty.add("samples")

    def _on_confusion(self, e):
        self.confusion = e
        self.dirty.add("confusion")

    def _on_boundary(self, e):
        self.boundary = e
        self.dirty.add("boundary")

    def _on_embedding(self, e):
        self.embedding = e
        self.dirty.add("embedding")

    def _on_probe(self, e):
        self.probe = e
        self.dirty.update(("probe", "probe_layers"))

    def _on_paused(self, e):
        self.paused = True
        self.step = e.get("step", self.step)
        self._rate_t = None  # the pause is not part of the step rate
        if self.status not in ("diverged",) and not self.done:
            self.status = "diverged" if e.get("reason") == "diverged" else "paused"
        self.dirty.add("status")
        self.add_log(f"paused at step {e.get('step', self.step)}" +
                     (f" ({e['reason']})" if e.get("reason") not in (None, "user") else ""), t=e.get("time"))

    def _on_resumed(self, e):
        self.paused = False
        self._rate_t = None
        self.diverged = None
        if not self.done:
            self.status = "compiling" if self.compiling else "running"
        self.dirty.add("status")
        self.add_log(f"resumed at step {e.get('step', self.step)}", t=e.get("time"))

    def _mark_change(self, e) -> None:
        x = self.epoch_of(e.get("step", self.step))
        if not self.changes or self.changes[-1] != x:
            self.changes = (self.changes + [x])[-MAX_SETTING_CHANGES:]
            self.dirty.add("charts")

    def _on_lr_changed(self, e):
        self.lr = e.get("lr")
        if e.get("base_lr") is not None:
            self.base_lr = e["base_lr"]
        self.hyperparams = {**self.hyperparams, "lr": self.lr}
        self.dirty.add("status")
        src = e.get("source", "user")
        if src != "schedule":
            self.add_log(f"lr {fmt_num(e.get('old_lr'))} -> {fmt_num(self.lr)} ({src})", t=e.get("time"))

    def _on_optimizer_changed(self, e):
        self.optimizer = e.get("name") or self.optimizer
        self.hyperparams = e.get("hyperparams") or {}
        if "lr" in self.hyperparams:
            self.lr = self.hyperparams["lr"]
        if e.get("base_lr") is not None:
            self.base_lr = e["base_lr"]
        self.dirty.add("status")
        self.add_log(f"optimizer {e.get('previous', '?')} -> {e.get('describe', self.optimizer)} "
                     f"(state {e.get('state', 'fresh')})", t=e.get("time"))

    def _on_regularization_changed(self, e):
        self.config = {**self.config, **{key: e[key] for key in REGULARIZATION if key in e}}
        if e.get("weight_decay") is not None and "weight_decay" in self.hyperparams:  # the optimizer's, shown as such
            self.hyperparams = {**self.hyperparams, "weight_decay": e["weight_decay"]}
        if e.get("layers"):  # dropout layers came or went: the layers after them have new names (by position)
            def weighted(rows):
                return [r.get("name") for r in rows if r.get("kind") != "Dropout"]

            old, new = weighted(self.layers), weighted(e["layers"])
            if len(old) == len(new):  # each layer's gradient history and flags go on under its new name
                moved = dict(zip(old, new))
                for table in (self.grad_history, self.layer_rows, self._flags):
                    kept = {moved.get(k, k): v for k, v in table.items()}
                    table.clear()
                    table.update(kept)
                for name, row in self.layer_rows.items():
                    self.layer_rows[name] = {**row, "name": name}
            self.layers = e["layers"]
            self.dirty.add("layers")
        self.dirty.add("status")
        self.add_log(f"regularization: {regularization_change(e)} from step {e.get('step', 0) + 1:,}", t=e.get("time"))

    def _on_epochs_changed(self, e):
        self.epochs = e.get("epochs") or self.epochs
        self.total_steps = e.get("total_steps") or self.total_steps
        self.config = {**self.config, "epochs": self.epochs}
        if e.get("lr") is not None:
            self.lr = e["lr"]
        self.dirty.update(("status", "progress"))
        self.add_log(epochs_change(e), t=e.get("time"))

    def _on_batch_size_changed(self, e):
        self.batch_pending = e.get("pending")
        self.batch_scale_lr = bool(e.get("scale_lr")) and bool(self.batch_pending)
        size, previous = e.get("batch_size"), e.get("previous")
        if size and size != previous:
            self.batch_size = size
            self.steps_per_epoch = e.get("steps_per_epoch") or self.steps_per_epoch
            self._epoch_at.append((e.get("step", self.step), float(e.get("epoch") or 0), self.steps_per_epoch))
            self.total_steps = e.get("total_steps") or self.total_steps
            self._rate_t, self.steps_per_second = None, None  # the old batches' step rate says nothing of the new
        self.add_log(batch_size_change(e), t=e.get("time"))
        self.dirty.update(("status", "progress"))

    def epoch_of(self, step: float) -> float:
        """The epoch (a fraction) of a global step, in the steps per epoch of the batch size the run had then."""
        s0, e0, spe = next((seg for seg in reversed(self._epoch_at) if seg[0] <= step), self._epoch_at[0])
        return e0 + (step - s0) / max(spe, 1)

    def _on_checkpoint_saved(self, e):
        self.add_log(f"checkpoint ({e.get('kind')}) saved at step {e.get('step')}: {e.get('path')}", t=e.get("time"))

    def _on_evaluated(self, e):
        self.evaluated = e
        self.dirty.add("progress")
        acc = f", accuracy {e['accuracy']:.2%}" if e.get("accuracy") is not None else ""
        self.add_log(f"evaluated on {e.get('split', 'test')}: loss {fmt_num(e.get('loss'))}{acc}", t=e.get("time"))

    def _on_early_stopped(self, e):
        self.add_log(f"early stop at epoch {e.get('epoch')}: best epoch {e.get('best_epoch')} "
                     f"(val loss {fmt_num(e.get('best_val_loss'))}), best weights restored", "warning", e.get("time"))

    def _on_diverged(self, e):
        self.diverged = e
        if e.get("action") == "paused":
            self.status = "diverged"
        self.dirty.add("status")
        loss = "not a number" if e.get("loss") is None else fmt_num(e.get("loss"))
        self.add_log(f"diverged at step {e.get('step')} (loss {loss}, lr {fmt_num(e.get('lr'))}): "
                     f"{'paused' if e.get('action') == 'paused' else 'rolled back'}", "error", e.get("time"))

    def _on_rolled_back(self, e):
        self.diverged = None
        self.lr = e.get("lr", self.lr)
        self.dirty.add("status")
        self.add_log(f"rolled back to step {e.get('to_step')}, lr now {fmt_num(self.lr)}", "warning", e.get("time"))

    def _on_stopped(self, e):
        self.status = "stopped"
        self.paused = False
        self.final = e
        self.dirty.update(("status", "progress"))
        self.add_log(f"stopped ({e.get('reason')}) at step {e.get('step')}; checkpoint {e.get('checkpoint') or '-'}",
                     t=e.get("time"))
        self._add_summary(e)

    def _on_finished(self, e):
        self.status = "finished"
        self.paused = False
        self.final = e
        self.step = max(self.step, e.get("steps") or self.step)
        self.dirty.update(("status", "progress"))
        acc = f", test accuracy {e['test_accuracy']:.2%}" if e.get("test_accuracy") is not None else ""
        self.add_log(f"finished: test loss {fmt_num(e.get('test_loss'))}{acc}, "
                     f"{fmt_num(e.get('samples_per_second'), 0)} samples/s", t=e.get("time"))
        self._add_summary(e)

    def _add_summary(self, e):
        """The run's summary (training/summary.py: both test figures, best epoch, folder, next commands)."""
        for line in summary_lines(e)[1:]:
            self.add_log(line.strip() if not line.startswith("    ") else line[2:], t=e.get("time"))

    def _on_failed(self, e):
        self.status = "failed"
        self.error = e.get("error")
        self.dirty.update(("status", "progress"))
        self.add_log(f"failed: {self.error}", "error", e.get("time"))

    def _on_log(self, e):
        self.add_log(str(e.get("message", "")), e.get("level", "info"), e.get("time"))
