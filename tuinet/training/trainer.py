"""The training loop: epochs of shuffled mini-batches, commands applied between steps, events out, runs on disk.

The trainer never imports Textual. It reads commands from ``self.commands`` (a queue) between two optimizer steps
and reports through ``self.emit(event)``; a :class:`~tuinet.training.session.Session` wires both to a UI, and
the headless console prints the same events.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import queue
import time
import traceback
from typing import Any, Callable

import numpy as np

from tuinet.data import Dataset
from tuinet.engine import kernels as K
from tuinet.engine.checkpoint import load_checkpoint, save_checkpoint
from tuinet.engine.fpmode import flush_denormals
from tuinet.engine.model import Sequential
from tuinet.engine.optim import make_optimizer
from tuinet.engine.precompile import CompileHelper
from tuinet.engine.runtime import watch_compiles
from tuinet.engine.spec import build_model
from tuinet.engine.threads import ThreadTuner
from tuinet.errors import ConfigError, DataError, ModelError, TuinetError
from tuinet.training import stats as S
from tuinet.training import stepview
from tuinet.training.health import HealthMonitor
from tuinet.training.config import TrainConfig
from tuinet.training.console import ConsolePrinter
from tuinet.training.evaluation import confusion_event_fields
from tuinet.training.lrfind import clip_gradients, run_in_trainer as run_range_test
from tuinet.training.alerts import Alerts
from tuinet.training.augmenting import make_augmenter
from tuinet.training.branch import same_but_dropout, settings_at, weights_for
from tuinet.training.defaults import describe_defaults
from tuinet.training.embedding import Embedding
from tuinet.training.final_test import final_tests
from tuinet.training.neurons import neuron_maps
from tuinet.training.prefetch import DataPrefetch, load_run_data
from tuinet.training.probe import Probe, ink_range
from tuinet.protocol import LIVE_SETTINGS, REGULARIZATION, check_learning_rate, make_event
from tuinet.training.rundir import RunDir
from tuinet.training.schedules import make_schedule
from tuinet.training.watch import Watch

#: the settings of set_regularization that belong to the model (weight_decay is the optimizer's)
MODEL_SETTINGS = ("l1", "l2", "dropout")
SNAPSHOT_EVERY = 200  # steps between in-memory "last good" weight copies for divergence rollback
BLOWUP_FACTOR = 1e3  # a finite loss this many times the reference counts as divergence
REPEAT_FACTOR = 0.1  # lr factor of a rollback when the previous one was less than SNAPSHOT_EVERY steps ago
WEIGHTS_EVERY = 500  # steps between weight-picture events
PROBE_EVERY = 0.5  # seconds between answers to the picture drawn in the app while training runs, at least
PROBE_SHARE = 0.02  # ... and at most this share of the trainer's time goes into them
PICTURE_SAMPLES = 2000  # validation samples searched for the most confidently wrong predictions
AUGMENTED_SAMPLES = 8  # training samples shown as augmented (the samples event's ``augmented``)
EMBED_EVERY = 2.0  # seconds between embedding events at least, while a viewer watches them
EMBED_SHARE = 0.05  # and at most this share of the trainer's time (a deep net's views cost more), as the boundary
EARLY_STATS = 10  # the step of the first layer statistics, whatever stats_every says


class StopTraining(Exception):
    """Raised inside the loop when a stop command arrives."""


class RunLogLines:
    """A text stream for :class:`~tuinet.training.console.ConsolePrinter` that appends each line it is given to the
    run's log.txt, timestamped: the human-readable log every run folder holds."""

    def __init__(self, run_dir: RunDir):
        self.run_dir = run_dir

    def write(self, text: str) -> None:
        for line in text.splitlines():
            if line.strip():
                self.run_dir.log(line)

    def flush(self) -> None:
        """Nothing to do: RunDir.log flushes each line."""

    def isatty(self) -> bool:
        return False


class Trainer:
    """Trains one model on one dataset as a configuration describes, reporting events and obeying commands.

    Args:
        config: the run's configuration.
        dataset: an already loaded dataset (loaded from ``config`` when None).
        run_dir: where the run is written (created under ``config.runs_dir`` when None; ``False`` for no disk).
        emit: called with every event (a Session replaces it).
        prefetch: the dataset, already loading in the background (used instead of loading it in ``prepare``).
    """

    def __init__(self, config: TrainConfig, dataset: Dataset | None = None, run_dir: RunDir | None | bool = None,
                 emit: Callable[[dict[str, Any]], None] | None = None, prefetch: DataPrefetch | None = None):
        self.config = config
        self.data = dataset
        self._prefetch = prefetch
        self._run_dir_arg = run_dir
        self.run_dir: RunDir | None = None
        self.emit: Callable[[dict[str, Any]], None] = emit or (lambda e: None)
        self._compile_watch = contextlib.ExitStack()  # reports what the first step compiles (closed after it)
        self._compile_helper: CompileHelper | None = None  # processes compiling the same kernels meanwhile
        self.commands: queue.Queue[dict[str, Any]] = queue.Queue()
        self.model: Sequential | None = None
        self.optimizer = None
        self.schedule = None
        self.status = "created"
        self.paused = False
        self.epoch = 0  # epochs completed
        self.step_in_epoch = 0
        self.global_step = 0
        #: global_step minus the step the schedule reads: a batch size changed while it trains renumbers the
        #: schedule's steps (in the new batches, as a branch from that epoch counts them)
        self.schedule_offset = 0
        self._next_batch: int | None = None  # a batch size asked for, from the next epoch (set_batch_size)
        self._next_scale = False  # ... with the lr scaled by new/old size when it applies
        self.base_lr = 0.0
        self.best_val_loss = math.inf
        self.best_val_accuracy: float | None = None
        self.best_epoch = 0
        self.bad_epochs = 0
        self.train_seconds = 0.0
        self.paused_seconds = 0.0  # time spent paused in this process (kept out of the epochs' times)
        self.samples_seen = 0
        self.test_result: dict[str, float] | None = None
        #: which weights the run reports and the test figures of both (set by training/final_test.py at the end)
        self._final_figures: dict[str, Any] = {"final": None, "test_best": None, "test_last": None}
        self._epoch_rng_state: dict[str, Any] | None = None
        self._good: dict[str, Any] | None = None
        self._last_divergence: int | None = None  # step of the last divergence (a repeat within SNAPSHOT_EVERY cuts harder)
        self.divergences = 0  # divergences in this process (a resumed run counts from 0), for the final summary
        self._lr_before_divergence: float | None = None  # the lr at the first of them
        self._loss_count = 0  # good steps seen by the blow-up rule
        self._loss_ref = 0.0  # the loss of the first good step (the initialization's natural scale)
        self._loss_avg = 0.0  # recent average loss of good steps (exponential)
        self._resume_ckpt = None
        self.branch_info: dict[str, Any] | None = None  # a branched run's parent record (see training/branch.py)
        self._fixed_samples = np.zeros(0, dtype=np.int64)
        self.augmenter = None  # makes each training batch's random versions (--augment; see engine/augment.py)
        self._augmented: tuple[np.ndarray, np.ndarray] | None = None
        self._embedding: Embedding | None = None  # the layers' views of validation samples, while a viewer watches
        self._embed_t = 0.0  # when they were last sent (perf_counter)
        self._embed_every = EMBED_EVERY
        self._embed_drawn: np.ndarray | None = None  # a drawing placed among them (the model's input, 1 sample)
        self._probe: Probe | None = None  # how the model answers a picture drawn in the app (made at the first one)
        self._probe_x: np.ndarray | None = None  # that picture, as the model's input (see _apply's probe)
        self._probe_t = 0.0  # when the model last answered it (perf_counter)
        self._probe_every = PROBE_EVERY
        self._picture_costs: dict[str, float] = {}  # what the last paced picture of each kind cost (see _pace)
        self.started_at = time.time()
        self.stop_reason: str | None = None
        self.diverged_pending = False
        self.alerts: Alerts | None = None  # --notify / --notify-url (built in prepare: a bad URL is one Error line)
        self.watch = Watch(config.pause_if, config.stop_if)  # --pause-if / --stop-if, checked after each epoch
        self._steps_left = 0  # steps a `step` command still asks for (they run while paused)
        self.health = HealthMonitor()

    # --- public state ----------------------------------------------------------------------------------------

    @property
    def lr(self) -> float:
        """The learning rate used by the next step."""
        return self.optimizer.lr if self.optimizer is not None else (self.config.lr or 0.0)

    def public_state(self) -> dict[str, Any]:
        """A JSON-able picture of the trainer's state."""
        opt = self.optimizer
        return {
            "status": self.status, "paused": self.paused, "epoch": self.epoch, "epochs": self.config.epochs,
            "step": self.global_step, "step_in_epoch": self.step_in_epoch, "lr": self.lr,
            "optimizer": opt.name if opt else self.config.optimizer,
            "hyperparams": opt.hyperparams() if opt else {}, "batch_size": self.config.batch_size,
            "run_dir": str(self.run_dir.path) if self.run_dir else None,
        }

    # --- setup ---------------------------------------------------------------------------------------------------

    @classmethod
    def resume(cls, run: RunDir, emit=None, epochs: int | None = None) -> "Trainer":
        """A trainer that continues ``run`` exactly where its latest checkpoint left it.

        Takes the run's lock first (RunLockedError, with nothing changed, when another trainer has it) and holds
        status.json and metrics.jsonl back until the run has started: a resume that fails leaves the run as it was.
        """
        took = run.lock()
        try:
            cfg_data = run.read_json("config.json")
            if not cfg_data:
                raise ConfigError(f"{run.path}: no config.json; not a tuinet run")
            cfg_data["runs_dir"] = str(run.path.parent)
            cfg_data["name"] = run.name
            ckpt = load_checkpoint(run.latest)
            live = settings_at(ckpt)  # changed while it trained (the app's commands): as at the checkpoint
            moved = {k for k, v in live.items() if cfg_data.get(k) != v}
            if isinstance(cfg_data.get("dataset_defaults"), list):  # those are no longer the dataset's defaults
                cfg_data["dataset_defaults"] = [n for n in cfg_data["dataset_defaults"] if n not in moved]
            cfg_data.update(live)
            if epochs is not None:  # (the checkpoint's plan otherwise: a resume --epochs, or the app, changed it)
                cfg_data["epochs"] = epochs
            config = TrainConfig.from_dict(cfg_data, source=str(run.path / "config.json"))
            t = cls(config, run_dir=run, emit=emit)
            t._resume_ckpt = ckpt
        except BaseException:
            if took:
                run.unlock()
            raise
        t._owns_lock = took
        run.hold_until_started()
        return t

    def _log(self, message: str, level: str = "info") -> None:
        self._emit("log", level=level, message=message)  # log.txt gets it through _emit

    def _emit(self, _kind: str, **fields: Any) -> dict[str, Any]:
        event = make_event(_kind, **fields)
        if self.run_dir:
            self.run_dir.append_event(event)
            if getattr(self, "_text_log", None) is None or self._text_log.out.run_dir is not self.run_dir:
                self._text_log = ConsolePrinter(RunLogLines(self.run_dir), tty=False)
            try:  # log.txt: the headless lines (start, epochs, changes, the end), timestamped
                self._text_log(event)
            except (KeyError, TypeError, ValueError, OSError):
                pass  # an event the printer cannot word, or a full disk: the run goes on, metrics.jsonl has it
        self.emit(event)
        if self.alerts is not None:
            self.alerts(event)
        return event

    def prepare(self) -> None:
        """Load the data and build the model (once), before any run folder is created or written.

        What fails here is the user's to fix (a bad data file, a model that does not fit the data or the memory):
        it raises a TuinetError with one line. The command line calls this first and prints ``Error: ...``;
        :meth:`run` calls it before it creates the run folder, so such a failure leaves no folder behind. Notes
        from loading (rows dropped) are kept and logged once the run has started.
        """
        if self.model is not None:
            return
        c = self.config
        if (c.notify or c.notify_url) and self.alerts is None:
            self.alerts = Alerts(c.notify, c.notify_url)
        if getattr(self, "_notes", None) is None:
            self._notes: list[str] | None = []
        try:
            self._load_data()
        except MemoryError:
            raise DataError(f"{c.dataset}: the dataset does not fit in memory") from None
        try:
            self._build()
        except MemoryError:
            raise ModelError(f"model {c.model!r}: too large to fit in memory for inputs of shape "
                             f"{tuple(self.data.input_shape)}") from None
        except (ValueError, TypeError, KeyError, IndexError) as e:
            raise ModelError(f"model {c.model!r}: cannot be built ({e})") from None

    def create_run_dir(self) -> None:
        """Create (and lock) the run folder now, after :meth:`prepare`, instead of in :meth:`run`: a taken
        ``--name`` is then one error line from the command line before training starts."""
        if self.run_dir is None and self._run_dir_arg is None:
            self._setup_run_dir()
            self._run_dir_arg = self.run_dir

    def _note(self, message: str) -> None:
        """A note from loading: kept until the run has started (see :meth:`prepare`), else logged at once."""
        if getattr(self, "_notes", None) is not None:
            self._notes.append(message)
        else:
            self._log(message)

    def _load_data(self) -> None:
        c = self.config
        if self.data is None and self._prefetch is not None:
            prefetch, self._prefetch = self._prefetch, None
            try:
                self.data = prefetch.result()
            finally:
                for message in prefetch.notes:
                    self._note(message)
        if self.data is None:
            self.data = load_run_data(c, self._note)
        if len(self.data.x_train) == 0:
            raise ConfigError(f"{c.dataset}: the training split is empty")

    def _build(self) -> None:
        c, d = self.config, self.data
        self.model = build_model(c.model, d.input_shape, d.num_outputs, task=d.task, activation=c.activation,
                                 dropout=c.dropout, l1=c.l1, l2=c.l2, seed=c.seed,
                                 features=c.features.split(",") if c.features else None, init_gain=c.init_gain)
        self.optimizer = make_optimizer(c.optimizer, self.model.params, lr=c.lr, **c.optimizer_hyperparams())
        self.base_lr = self.optimizer.lr
        self.steps_per_epoch = math.ceil(len(d.x_train) / c.batch_size)
        self.schedule = self._make_schedule()
        self.shuffle_rng = np.random.default_rng([c.seed, 2])
        self.augmenter = make_augmenter(c.augment, d.x_train, d.input_shape, c.dataset, c.seed)
        n_fixed = min(8, len(d.x_test))
        self._fixed_samples = np.random.default_rng([c.seed, 3]).choice(len(d.x_test), n_fixed, replace=False) \
            if n_fixed else np.zeros(0, dtype=np.int64)
        if self._resume_ckpt is not None:
            self._restore(self._resume_ckpt)
        elif c.parent:  # a branch: weights, position and random state from the parent's checkpoint
            from tuinet.training.branch import start_branch

            self.branch_info = start_branch(self)

    def _make_schedule(self):
        c = self.config
        return make_schedule(c.schedule, self.steps_per_epoch, c.epochs, step_size=c.step_size, gamma=c.gamma,
                             plateau_factor=c.plateau_factor, plateau_patience=c.plateau_patience,
                             min_delta=c.min_delta)

    @property
    def planned_steps(self) -> int:
        """The run's steps in all as now planned: those taken, and the rest of its epochs in the current batches."""
        return self.global_step - self.step_in_epoch + (self.config.epochs - self.epoch) * self.steps_per_epoch

    def _replan(self) -> None:
        """The schedule made again for the plan as it now stands (epochs, steps per epoch), its state kept, and the
        next step's lr taken from it."""
        state = self.schedule.state()
        self.schedule = self._make_schedule()
        self.schedule.load_state(state)
        self.optimizer.lr = self.base_lr * self.schedule.factor(self.schedule_step)

    @property
    def schedule_step(self) -> int:
        """The step the lr schedule reads (the global step, in this batch size's steps since a change)."""
        return self.global_step - self.schedule_offset

    def _restore(self, ckpt) -> None:
        ckpt.load_into(self.model)
        opt = ckpt.build_optimizer(self.model)
        if opt is not None:
            self.optimizer = opt
        x = ckpt.extra.get("trainer", {})
        self.epoch = x.get("epoch", 0)
        self.step_in_epoch = x.get("step_in_epoch", 0)
        self.global_step = x.get("global_step", 0)
        self.schedule_offset = x.get("schedule_offset", 0)
        self._next_batch = x.get("next_batch_size")
        self._next_scale = bool(x.get("next_batch_scale_lr"))
        self.base_lr = x.get("base_lr", self.optimizer.lr)
        self.best_val_loss = x.get("best_val_loss") if x.get("best_val_loss") is not None else math.inf
        self.best_val_accuracy = x.get("best_val_accuracy")
        self.best_epoch = x.get("best_epoch", 0)
        self.bad_epochs = x.get("bad_epochs", 0)
        self.train_seconds = x.get("train_seconds", 0.0)
        self.samples_seen = x.get("samples_seen", 0)
        self.schedule.load_state(x.get("schedule", {}))
        if x.get("epoch_rng_state"):
            self.shuffle_rng.bit_generator.state = x["epoch_rng_state"]
        if x.get("dropout_rng_state"):
            self.model.dropout_rng.bit_generator.state = x["dropout_rng_state"]
        if self.augmenter is not None:
            self.augmenter.load_state(x.get("augment_rng_state"))

    # --- checkpoints --------------------------------------------------------------------------------------------

    def _trainer_state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
            "schedule_offset": self.schedule_offset, "next_batch_size": self._next_batch,
            "next_batch_scale_lr": self._next_scale,
            "base_lr": self.base_lr, "best_val_loss": self.best_val_loss if math.isfinite(self.best_val_loss) else None,
            "best_val_accuracy": self.best_val_accuracy, "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs, "train_seconds": self.train_seconds, "samples_seen": self.samples_seen,
            "schedule": self.schedule.state(),
            "epoch_rng_state": self._epoch_rng_state or self.shuffle_rng.bit_generator.state,
            "dropout_rng_state": self.model.dropout_rng.bit_generator.state,
            "augment_rng_state": self.augmenter.state() if self.augmenter is not None else None,
        }

    def checkpoint_extra(self) -> dict[str, Any]:
        """What a checkpoint stores besides weights: training position, dataset and normalization, config."""
        d = self.data
        return {"trainer": self._trainer_state(), "config": self.config.to_dict(),
                "dataset": {"name": d.name, "task": d.task, "input_shape": list(d.input_shape),
                            "class_names": list(d.class_names), "feature_names": d.feature_names,
                            "normalizer": d.normalizer.to_dict()}}

    def save(self, kind: str = "latest") -> str | None:
        """Write the latest (or best) checkpoint atomically; returns its path."""
        if not self.run_dir:
            return None
        path = self.run_dir.best if kind == "best" else self.run_dir.latest
        if not self._weights_finite():  # the guard restores good weights first; this is the last line of defence
            self._emit("log", level="error", message=f"checkpoint {kind} not written: the weights are not finite")
            return None
        save_checkpoint(path, self.model, self.optimizer, extra=self.checkpoint_extra())
        self._emit("checkpoint_saved", path=str(path), kind=kind, step=self.global_step, epoch=self.epoch)
        return str(path)

    # --- commands ---------------------------------------------------------------------------------------------------

    def _poll_commands(self) -> None:
        """Apply every queued command; block while paused unless a `step` command asked for steps (the time held is
        added to ``paused_seconds``, so an epoch's reported time leaves it out)."""
        t0 = time.perf_counter()
        held = False
        try:
            while True:
                hold = self.paused and not self._steps_left
                held = held or hold
                try:
                    cmd = self.commands.get(block=hold, timeout=0.1 if hold else None)
                except queue.Empty:
                    if hold:
                        continue
                    return
                self._apply(cmd)
                if not (self.paused and not self._steps_left) and self.commands.empty():
                    return
        finally:
            if held:
                self.paused_seconds += time.perf_counter() - t0

    def _apply(self, cmd: dict[str, Any]) -> None:
        kind = cmd.get("command")
        try:
            if kind == "pause" or (kind == "toggle_pause" and not self.paused):
                if not self.paused:
                    self.paused = True
                    self.status = "paused"
                    self._status_file()
                    self._emit("paused", reason=cmd.get("reason", "user"), step=self.global_step)
            elif kind == "resume" or kind == "toggle_pause":
                self._steps_left = 0
                if self.paused:
                    self.paused = False
                    self.status = "running"
                    self.diverged_pending = False
                    self._status_file()
                    self._emit("resumed", step=self.global_step)
            elif kind == "set_lr":
                self._set_lr(float(cmd["lr"]), "user")
            elif kind == "scale_lr":
                self._set_lr(self.optimizer.lr * float(cmd["factor"]), "user")
            elif kind == "set_optimizer":
                self._set_optimizer(cmd["name"], dict(cmd.get("hyperparams") or {}), cmd.get("lr"))
            elif kind == "set_regularization":
                self._set_regularization({k: float(cmd[k]) for k in REGULARIZATION if k in cmd})
            elif kind == "set_epochs":
                self._set_epochs(int(cmd["epochs"]))
            elif kind == "set_batch_size":
                self._set_batch_size(int(cmd["batch_size"]), bool(cmd.get("scale_lr", False)))
            elif kind == "save":
                self.save("latest")
            elif kind == "evaluate":
                r = self.model.evaluate(self.data.x_test, self.data.y_test)
                self._emit("evaluated", split="test", step=self.global_step, **r)
            elif kind == "rollback":
                self._rollback(float(cmd.get("factor", self.config.divergence_factor)), "user")
                if self.paused:
                    self.paused = False
                    self.status = "running"
                    self._emit("resumed", step=self.global_step)
            elif kind == "stop":
                self.stop_reason = cmd.get("reason", "user")
                raise StopTraining()
            elif kind == "snapshot":
                self._emit_pictures()
            elif kind == "probe":
                image = cmd.get("image")
                self._probe_x = None if image is None else self._drawing_input(image)
                self._emit_probe()
            elif kind == "embedding":
                d = self.data
                x, y = (d.x_val, d.y_val) if len(d.x_val) >= 2 else (d.x_test, d.y_test)
                image = cmd.get("image")
                if not cmd["watch"]:
                    self._embedding, self._embed_drawn = None, None
                elif self.model.is_classifier and len(x) >= 2:
                    # a drawing from the Draw tab, placed among the samples (refused as the probe command's is)
                    self._embed_drawn = None if image is None else self._drawing_input(image)
                    self._embedding = self._embedding or Embedding(x, y)
                    self._emit_embedding()
            elif kind == "lr_find":
                run_range_test(self, cmd)
            elif kind == "step":
                if not self.paused:
                    raise ConfigError("steps one at a time only while paused")
                self._steps_left += int(cmd.get("count", 1))
        except StopTraining:
            raise
        except (TuinetError, ValueError, TypeError, KeyError) as e:
            self._emit("log", level="error", message=f"command {kind} refused: {e}")

    def _set_lr(self, lr: float, source: str) -> None:
        lr = check_learning_rate(lr)  # positive and finite in float32, whatever product it came from
        old = self.optimizer.lr
        factor = self.schedule.factor(self.schedule_step)
        self.base_lr = lr / factor if factor > 0 else lr
        self.optimizer.lr = lr
        self._emit("lr_changed", lr=lr, old_lr=old, source=source, step=self.global_step, base_lr=self.base_lr)

    def _set_optimizer(self, name: str, hyper: dict[str, Any], lr: float | None) -> None:
        lr = lr if lr is not None else self.optimizer.lr
        new = make_optimizer(name, self.model.params, lr=lr, **hyper)
        old = self.optimizer.describe()
        self.optimizer = new
        factor = self.schedule.factor(self.schedule_step)
        self.base_lr = lr / factor if factor > 0 else lr
        self._emit("optimizer_changed", name=new.name, requested=name, hyperparams=new.hyperparams(),
                   describe=new.describe(), previous=old, state="fresh", step=self.global_step, base_lr=self.base_lr)

    def _set_regularization(self, asked: dict[str, float]) -> None:
        """New weight penalties, dropout rate and weight decay (the optimizer's) from the next step on, weights and
        optimizer state kept. They are the run's settings from then on: its checkpoints, a resume and a branch from
        them take the new values (its config.json keeps those it started with). Nothing changes when any of them is
        refused (a ConfigError, which the command loop logs)."""
        c = self.config
        previous = {key: getattr(c, key) for key in MODEL_SETTINGS}
        previous["weight_decay"] = self.optimizer.hyper.get("weight_decay")
        if "weight_decay" in asked and previous["weight_decay"] is None:
            raise ConfigError(f"optimizer {self.optimizer.name} has no weight decay")
        new = {**previous, **asked}
        layers = None
        if new["dropout"] != previous["dropout"]:
            self._rebuild_for_dropout(new["dropout"])  # the optimizer made anew: its hyperparameters set after this
            layers = self._layer_rows()
        self.model.l1, self.model.l2 = new["l1"], new["l2"]
        c.l1, c.l2, c.dropout = new["l1"], new["l2"], new["dropout"]
        if "weight_decay" in asked:
            self.optimizer.hyper["weight_decay"] = c.weight_decay = new["weight_decay"]
        self._emit("regularization_changed", **new, previous=previous, step=self.global_step,
                   **({"layers": layers, "num_params": self.model.num_params()} if layers is not None else {}))
        self._status_file()  # its changed_settings (the checkpoint that carries them comes with the epoch's end)

    def _set_epochs(self, epochs: int) -> None:
        """Plan ``epochs`` in all from the next step: a schedule is stretched (or squeezed) over the new plan, as
        ``tuinet resume --epochs`` does, its state kept; at least the epoch in progress (a stop ends a run sooner).
        The run's setting from then on (checkpoints, resume, branch); config.json keeps the first plan."""
        c = self.config
        if self.status == "testing" or self.epoch >= c.epochs:
            name = self.run_dir.name if self.run_dir else "RUN"
            raise ConfigError(f"the run's epochs are done; `tuinet resume {name} --epochs N` trains it on")
        if epochs < self.epoch + 1:
            raise ConfigError(f"the run is in epoch {self.epoch + 1}: plan at least {self.epoch + 1} epochs (a stop "
                              "ends it sooner)")
        previous, c.epochs = c.epochs, epochs
        self._replan()
        self._emit("epochs_changed", epochs=epochs, previous=previous, step=self.global_step, epoch=self.epoch,
                   total_steps=self.planned_steps, lr=self.optimizer.lr)
        self._status_file()

    def _set_batch_size(self, size: int, scale_lr: bool = False) -> None:
        """A new batch size: at once between epochs, else from the next epoch (the epoch in progress keeps its
        batches, so that it covers its samples once; a second ask before then replaces the first, the run's own size
        cancels it). Like the regularization, it is the run's setting from then on (checkpoints, resume, branch).
        ``scale_lr``: the learning rate is multiplied by new/old size when it applies (the linear scaling rule)."""
        c = self.config
        if self.epoch >= c.epochs:
            raise ConfigError("no epoch is left to train in batches of another size")
        if self.step_in_epoch == 0:
            self._apply_batch_size(size, scale_lr)
            return
        self._next_batch = None if size == c.batch_size else size
        self._next_scale = scale_lr and self._next_batch is not None
        self._emit_batch_size(c.batch_size)

    def _apply_batch_size(self, size: int, scale_lr: bool = False) -> None:
        """Batches of ``size`` from this step on (the start of an epoch): the steps per epoch, the schedule (its
        steps renumbered in the new batches, its state kept) and the thread tuner's reference follow; with
        ``scale_lr`` the learning rate is multiplied by new/old size (an ``lr_changed`` from source ``batch``)."""
        c = self.config
        old, self._next_batch, self._next_scale = c.batch_size, None, False
        c.batch_size = size
        self.steps_per_epoch = math.ceil(len(self.data.x_train) / size)
        self.schedule_offset = self.global_step - self.epoch * self.steps_per_epoch
        self._replan()
        self.tuner.rebase()  # (a batch size applies only while the run trains: the tuner is there)
        self._emit_batch_size(old, scale_lr and size != old)
        if scale_lr and size != old:
            self._set_lr(self.optimizer.lr * size / old, "batch")
        if size != old:
            self._status_file()

    def _emit_batch_size(self, previous: int, scaled: bool = False) -> None:
        self._emit("batch_size_changed", batch_size=self.config.batch_size, previous=previous,
                   pending=self._next_batch, scale_lr=scaled or self._next_scale,
                   from_epoch=self.epoch + (1 if self._next_batch is not None else 0), step=self.global_step,
                   epoch=self.epoch, steps_per_epoch=self.steps_per_epoch, total_steps=self.planned_steps)

    def _rebuild_for_dropout(self, rate: float) -> None:
        """The model as its spec builds it with dropout ``rate`` (dropout layers set to the new rate, added or
        removed, as a run started with it has them), holding the same weights, with the optimizer's state moved
        over; a ConfigError when the spec puts no dropout anywhere."""
        c, d, old = self.config, self.data, self.model
        model = build_model(c.model, d.input_shape, d.num_outputs, task=d.task, activation=c.activation,
                            dropout=rate, l1=c.l1, l2=c.l2, seed=c.seed,
                            features=c.features.split(",") if c.features else None, init_gain=c.init_gain)
        if rate > 0 and not any(layer.kind == "Dropout" for layer in model.layers):
            raise ConfigError(f"model {c.model!r} has no dropout layers to set (a model from a file, or one that puts "
                              "none): its layers stay as they are")
        if not same_but_dropout(old, model):
            raise ConfigError(f"model {c.model!r} built with dropout {rate:g} has other layers than the one training")
        model.set_weights(weights_for(old, model))
        model.dropout_rng.bit_generator.state = old.dropout_rng.bit_generator.state
        if getattr(self, "_best_weights", None) is not None:  # the best epoch's, kept for early stopping
            self._best_weights = weights_for(old, model, self._best_weights)
        meta, arrays = self.optimizer.state_dict()
        hyper = {k: v for k, v in self.optimizer.hyperparams().items() if k != "lr"}
        optimizer = make_optimizer(self.optimizer.name, model.params, lr=self.optimizer.lr, **hyper)
        optimizer.load_state_dict(meta, arrays)
        self.model, self.optimizer = model, optimizer
        self._probe = None  # made again for the new model at the next drawing's answer
        self._remember_good()  # the last good weights under the new layer names

    def _layer_rows(self) -> list[dict[str, Any]]:
        """The model's layers as the ``started`` event lists them."""
        return [{"name": layer.name, "kind": layer.kind, "describe": layer.describe(),
                 "output_shape": list(layer.output_shape), "params": layer.num_params()}
                for layer in self.model.layers]

    # --- divergence guard ------------------------------------------------------------------------------------------

    def _weights_finite(self) -> bool:
        return all(K.all_finite(p.reshape(-1)) for p in self.model.params)

    def _loss_blew_up(self, total: float) -> bool:
        """A finite loss far above the run's reference: the larger of the first good step's loss and the recent
        average (so a loss near zero late in training does not make an ordinary batch look like a blow-up, and a
        loss that rises slowly moves the bar with it); never below BLOWUP_FACTOR itself, so a problem whose losses
        are all tiny does not turn an ordinary spike into a divergence."""
        return self._loss_count > 0 and total > BLOWUP_FACTOR * max(self._loss_ref, self._loss_avg, 1.0)

    def _track_loss(self, total: float) -> None:
        self._loss_count += 1
        if self._loss_count == 1:
            self._loss_ref = self._loss_avg = total
        else:
            self._loss_avg += 0.05 * (total - self._loss_avg)

    def _remember_good(self) -> None:
        """Keep the weights and optimizer state to roll back to, only when they are finite and the loss is sane."""
        if not self._weights_finite() or (self._loss_count and not math.isfinite(self._loss_avg)):
            return
        meta, arrays = self.optimizer.state_dict()
        self._good = {"weights": self.model.get_weights(), "opt_meta": meta,
                      "opt_arrays": {k: v.copy() for k, v in arrays.items()}, "opt_name": self.optimizer.name,
                      "step": self.global_step}

    def _restore_good(self) -> bool:
        """Put the last good weights and optimizer state back (the lr is left alone); False when there are none."""
        if self._good is None:
            return False
        self.model.set_weights(self._good["weights"])
        if self._good["opt_name"] == self.optimizer.name:
            self.optimizer.load_state_dict(self._good["opt_meta"], self._good["opt_arrays"])
        return True

    def _rollback(self, factor: float, source: str) -> None:
        if not self._restore_good():
            return
        try:
            self._set_lr(self.optimizer.lr * factor, "divergence")
        except ConfigError:
            self._emit("log", level="error", message=f"cannot lower the learning rate below {self.optimizer.lr:.3g}")
        self._emit("rolled_back", step=self.global_step, to_step=self._good["step"], lr=self.optimizer.lr,
                   source=source)

    def _on_divergence(self, loss: float, reason: str = "non-finite") -> None:
        """The loss, the gradients or the updated weights went non-finite, or the loss blew up: roll back to the
        last good weights with a lower lr (cut harder when the last rollback was recent), or pause and ask."""
        lr = self.optimizer.lr
        factor = self.config.divergence_factor
        repeated = self._last_divergence is not None and self.global_step - self._last_divergence < SNAPSHOT_EVERY
        if repeated:
            factor = min(factor, REPEAT_FACTOR)
        self._last_divergence = self.global_step
        self.divergences += 1
        if self._lr_before_divergence is None:
            self._lr_before_divergence = lr
        self._steps_left = 0  # a divergence ends stepping: the event says what happened
        fields = dict(step=self.global_step, loss=loss if math.isfinite(loss) else None, lr=lr, new_lr=lr * factor,
                      reason=reason, repeated=repeated, factor=factor)
        if self.config.on_divergence == "pause":
            # the model never keeps non-finite or blown-up weights, even while the user decides (a save, a stop
            # or a snapshot would carry them): the last good ones go back at once, at the same lr
            self._restore_good()
            self._emit("diverged", action="paused", **fields)
            self.diverged_pending = True
            self._apply({"command": "pause", "reason": "diverged"})
        else:
            self._emit("diverged", action="rolled_back", **fields)
            self._rollback(factor, "guard")

    def _clip(self) -> float:
        return clip_gradients(self.model.grads, self.config.clip_grad)

    # --- events about the network -----------------------------------------------------------------------------------

    def _emit_pictures(self) -> None:
        if self.model is None:
            return
        self._emit("weights", step=self.global_step, layers=S.weight_pictures(self.model))
        d = self.data
        if self.model.is_classifier and len(d.x_test):
            idx = self._fixed_samples
            probs_fixed = self.model.predict_proba(d.x_test[idx]) if len(idx) else None
            x_val, y_val = (d.x_val, d.y_val) if len(d.x_val) else (d.x_test, d.y_test)
            x_val, y_val = x_val[:PICTURE_SAMPLES], y_val[:PICTURE_SAMPLES]  # bounded cost mid-training
            probs = self.model.predict_proba(x_val)
            sp = S.sample_predictions(probs, y_val, x_val, np.zeros(0, dtype=np.int64))
            if probs_fixed is not None:
                fixed = S.sample_predictions(probs_fixed, d.y_test[idx], d.x_test[idx], np.arange(len(idx)))
                for item, i in zip(fixed["samples"], idx):
                    item["index"] = int(i)
                sp["samples"] = fixed["samples"]
            if self._augmented is not None:  # what the network trains on: the latest batch's first samples
                xb, yb = (part[:AUGMENTED_SAMPLES] for part in self._augmented)
                shown = S.sample_predictions(self.model.predict_proba(xb), yb, xb, np.arange(len(xb)))
                sp["augmented"] = shown["samples"]
                sp["augment"] = self.config.augment
            self._emit("samples", step=self.global_step, epoch=self.epoch, class_names=list(d.class_names), **sp)
        if d.input_shape == (2,) and len(d.x_train):
            plane = S.boundary_grid(self.model, d.x_train, d.y_train)
            plane["neurons"] = neuron_maps(self.model, plane["xrange"], plane["yrange"])
            self._emit("boundary", step=self.global_step, epoch=self.epoch, **plane)

    def _drawing_input(self, image: Any) -> np.ndarray:
        """A picture drawn in the app (rows of ink) as the model's input, through the one Probe the probe and
        embedding commands share (made at the first drawing); ConfigError when it does not fit the model."""
        if self._probe is None:
            d = self.data
            self._probe = Probe(self.model, d.task, d.input_shape, d.normalizer, ink_range(d.normalizer, d.x_train))
        return self._probe.input(image)

    def _pace(self, picture: str, cost: float, every: float, share: float) -> float:
        """Seconds until a picture that took ``cost`` seconds to make is made again: at least ``every``, and as
        long as keeps it within ``share`` of the trainer's time. By the cheaper of its last two costs: the first
        one often compiles kernels (a resnet's views took 5 s once, 0.23 s after), and one slow answer should not
        hold the picture still for minutes."""
        last = self._picture_costs.get(picture)
        self._picture_costs[picture] = cost
        return every if last is None else max(every, min(cost, last) / share)

    def _emit_embedding(self) -> None:
        """Each weighted layer's view of the validation samples (training/embedding.py), while a viewer watches
        them: sent again every EMBED_EVERY seconds, or less often when computing them would take more than
        EMBED_SHARE of the time."""
        t0 = time.perf_counter()
        fields = self._embedding.event_fields(self.model, self._embed_drawn)
        self._embed_t = time.perf_counter()
        self._embed_every = self._pace("embedding", self._embed_t - t0, EMBED_EVERY, EMBED_SHARE)
        self._emit("embedding", step=self.global_step, epoch=self.epoch + self.step_in_epoch / self.steps_per_epoch,
                   class_names=list(self.data.class_names), **fields)

    def _emit_probe(self) -> None:
        """The model's answer to the picture drawn in the app (a cleared picture: an answer of nothing). While
        training runs it is sent again every PROBE_EVERY seconds, or less often when computing it would take more
        than PROBE_SHARE of the time (a deep net's layer by layer forward pass)."""
        t0 = time.perf_counter()
        answer = self._probe.answer_input(self._probe_x) if self._probe_x is not None \
            else {"probs": None, "pred": None}
        self._probe_t = time.perf_counter()
        self._probe_every = self._pace("probe", self._probe_t - t0, PROBE_EVERY, PROBE_SHARE)
        self._emit("probe", step=self.global_step, epoch=self.epoch + self.step_in_epoch / self.steps_per_epoch,
                   **answer)

    def _pace_wait(self, pace: float) -> None:
        """``--pace``: wait until 1/pace s after the previous step ended, applying commands as they come (a pause
        holds here), so the boundary and the neuron maps can be watched forming."""
        deadline = getattr(self, "_pace_next", 0.0)
        while (left := deadline - time.perf_counter()) > 0:
            try:
                cmd = self.commands.get(timeout=left)
            except queue.Empty:
                break
            self._apply(cmd)
            if self.paused:
                self._poll_commands()
        self._pace_next = time.perf_counter() + 1.0 / pace

    # --- the loop --------------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Train to the end (or until stopped); returns the final event. Never raises: failures become events."""
        try:
            # overflows and NaNs in a diverging step are the divergence guard's to answer (it rolls back or pauses):
            # NumPy's warnings about them would only print source lines into the terminal or the app
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                return self._run()
        except StopTraining:
            return self._stopped()
        except TuinetError as e:
            return self._failed(str(e))
        except Exception as e:  # noqa: BLE001 - report everything, the UI must not hang
            return self._failed(f"{type(e).__name__}: {e}", traceback.format_exc())
        finally:
            if self.alerts is not None:  # the last alert's command or webhook finishes before the process ends
                self.alerts.wait()
                for message in self.alerts.errors:
                    if self.run_dir:
                        self.run_dir.log(message)
            self._compile_watch.close()
            self._stop_compile_helper()
            if self.run_dir:
                self.run_dir.close()
                if getattr(self, "_owns_lock", False):  # the lock is held for exactly the trainer's lifetime
                    self.run_dir.unlock()

    def _watch_compiles(self, t0: float) -> None:
        """Until the first step is done, emit ``compiling`` with the kernel Numba is compiling (at most 5 a second).

        The first compile also starts the compile helper (:mod:`tuinet.engine.precompile`), which compiles the same
        kernels from the other end in one or more other processes; each kernel this process starts compiling is marked
        for it.
        """
        last = [0.0]
        helper = None
        if CompileHelper.enabled():
            helper = self._compile_helper = CompileHelper(
                CompileHelper.job_for(self.config, self.data, self.tuner.mode,
                                      dataclasses.asdict(self.augmenter.aug) if self.augmenter else None))

        def on_compile(dispatcher, args) -> None:
            if helper is not None:
                helper.start()
                helper.mark(dispatcher, args)

        def report(kernel: str, done: int) -> None:
            now = time.perf_counter()
            if now - last[0] >= 0.2:
                last[0] = now
                extra = {}
                if helper is not None and helper.started:
                    extra["helper_kernels"] = helper.done()
                self._emit("compiling", message=f"compiling {kernel}", kernel=kernel,
                           kernels_done=done + extra.get("helper_kernels", 0), elapsed=round(now - t0, 1), **extra)

        self._compile_watch.enter_context(watch_compiles(report, on_compile=on_compile))

    def _stop_compile_helper(self) -> int | None:
        """Stop the compile helper if one ran; returns how many kernels it compiled (None when none ran)."""
        helper, self._compile_helper = self._compile_helper, None
        if helper is None or helper.folder is None:
            return None
        return helper.stop()

    def _failed(self, message: str, tb: str | None = None) -> dict[str, Any]:
        self.status = "failed"
        if self.run_dir:
            if tb:
                self.run_dir.log(tb)
            self._status_file(error=message)
        return self._emit("failed", error=message, run_dir=str(self.run_dir.path) if self.run_dir else None,
                          name=self.run_dir.name if self.run_dir else None,
                          elapsed_seconds=round(time.time() - self.started_at, 1))

    def _stopped(self) -> dict[str, Any]:
        # a sweep's pruner stops a trial with reason "pruned": the run's status says so (its checkpoint is saved
        # like any stop's, and it resumes like any stopped run)
        self.status = "pruned" if self.stop_reason == "pruned" else "stopped"
        path = None
        if self.model is not None:
            try:
                path = self.save("latest")
            except OSError as e:
                self._log(f"could not save the checkpoint: {e}", "error")
        tests: dict[str, Any] = {}
        # a stop the user asked for reports the test figures too; a closed terminal or SIGTERM leaves at once
        if self.model is not None and self.epoch >= 1 and self.stop_reason not in ("SIGHUP", "SIGTERM"):
            try:
                tests = final_tests(self)
            except Exception as e:  # noqa: BLE001 - the checkpoint is saved; a failed test must not hide that
                self._log(f"no final test: {e}", "warning")
        self._status_file()
        return self._emit("stopped", reason=self.stop_reason or "user", step=self.global_step, epoch=self.epoch,
                          checkpoint=path, run_dir=str(self.run_dir.path) if self.run_dir else None,
                          name=self.run_dir.name if self.run_dir else None, best_epoch=self.best_epoch,
                          best_val_accuracy=self.best_val_accuracy, train_seconds=round(self.train_seconds, 3),
                          elapsed_seconds=round(time.time() - self.started_at, 1), **self._divergence_fields(),
                          dataset=self.config.dataset, **tests)

    def _divergence_fields(self) -> dict[str, Any]:
        """The final events' account of divergences: how many, and the lr before the first and now."""
        return {"divergences": self.divergences, "lr_before_divergence": self._lr_before_divergence,
                "lr": self.optimizer.lr if self.optimizer is not None else None}

    def _status_file(self, **extra: Any) -> None:
        if not self.run_dir:
            return
        c = self.config
        self.run_dir.update_status(
            name=self.run_dir.name, status=self.status, pid=os.getpid(), dataset=c.dataset, model=c.model,
            optimizer=self.optimizer.name if self.optimizer else c.optimizer, epoch=self.epoch, epochs=c.epochs,
            step=self.global_step, best_val_accuracy=self.best_val_accuracy,
            best_val_loss=self.best_val_loss if math.isfinite(self.best_val_loss) else None,
            test_accuracy=(self.test_result or {}).get("accuracy"), test_loss=(self.test_result or {}).get("loss"),
            best_epoch=self.best_epoch or None, **self._final_figures,
            train_seconds=round(self.train_seconds, 2), started=self.started_at,
            changed_settings=self._changed_settings(), **extra)

    def _changed_settings(self) -> dict[str, list[Any]]:
        """The settings changed while the run trained (set_optimizer, set_regularization, set_batch_size):
        ``{key: [as it started, now]}``, for the Compare screen's settings diff (config.json keeps the values the
        run started with)."""
        start = getattr(self, "_start_settings", None)
        if start is None:  # (status.json is written only with a run folder)
            saved = self.run_dir.read_json("config.json")
            start = {k: float(saved.get(k) or 0.0) for k in MODEL_SETTINGS}
            first = make_optimizer(saved.get("optimizer") or self.config.optimizer, [])  # (an alias: its name)
            decay = saved.get("weight_decay")
            start["weight_decay"] = first.hyper.get("weight_decay") if decay is None else decay  # (its default)
            start["batch_size"] = saved.get("batch_size")
            start["epochs"] = saved.get("epochs")
            start["optimizer"] = first.name
            self._start_settings = start
        now = {k: float(getattr(self.config, k)) for k in MODEL_SETTINGS}
        now["weight_decay"] = self.optimizer.hyper.get("weight_decay") if self.optimizer else None
        now["batch_size"] = self.config.batch_size
        now["epochs"] = self.config.epochs
        now["optimizer"] = self.optimizer.name if self.optimizer else None
        return {k: [start[k], now[k]] for k in ("optimizer", *LIVE_SETTINGS)
                if now[k] is not None and start[k] is not None and now[k] != start[k]}

    def _setup_run_dir(self) -> None:
        if self._run_dir_arg is False:
            self.run_dir = None
        elif isinstance(self._run_dir_arg, RunDir):
            # one trainer per run folder: refused here, before self.run_dir is set, so nothing is written
            self._owns_lock = self._run_dir_arg.lock() or getattr(self, "_owns_lock", False)
            self.run_dir = self._run_dir_arg
        else:
            c = self.config
            self.run_dir = RunDir.create(c.runs_dir, c.name, c.dataset, c.model)  # created and locked
            self._owns_lock = True
        if self.run_dir and self._resume_ckpt is None:
            self.run_dir.write_config(self.config.to_dict())

    def _run(self) -> dict[str, Any]:
        c = self.config
        self.status = "loading"
        flush_denormals()  # before this thread starts any Numba threads: they take its setting (engine/fpmode.py)
        if not isinstance(self._run_dir_arg, RunDir):
            self.prepare()  # data and model first: when they fail, no run folder has been created
        self._setup_run_dir()
        if self.run_dir and self.alerts is not None:
            self.alerts.run = self.run_dir.name
        if self.run_dir:
            prev = self.run_dir.read_json("status.json")
            self.started_at = prev.get("started", self.started_at) if self._resume_ckpt else self.started_at
        self.prepare()  # an existing run folder (resume, detached): after its lock, so a second trainer loads nothing
        notes, self._notes = getattr(self, "_notes", None) or [], None
        for message in notes:
            self._log(message)
        self.tuner = ThreadTuner(self.model)
        mode = self.tuner.mode
        d, m = self.data, self.model
        if self._resume_ckpt is not None and self.schedule is not None:
            # say the lr the next step takes, not the one the checkpoint ended with: resumed with more epochs, a
            # schedule is stretched over them (a cosine run that ended near 0 goes on from the middle of its curve)
            self.optimizer.lr = self.base_lr * self.schedule.factor(self.schedule_step)
        self.status = "running"
        self._status_file()
        self._emit(
            "started", name=self.run_dir.name if self.run_dir else None,
            run_dir=str(self.run_dir.path) if self.run_dir else None, config=c.to_dict(), dataset=d.describe(),
            model=m.summary(), layers=self._layer_rows(),
            num_params=m.num_params(), steps_per_epoch=self.steps_per_epoch,
            total_steps=self.planned_steps,
            epochs=c.epochs, batch_size=c.batch_size, optimizer=self.optimizer.name,
            hyperparams=self.optimizer.hyperparams(), lr=self.optimizer.lr, base_lr=self.base_lr,
            resumed=self._resume_ckpt is not None,
            epoch=self.epoch, step=self.global_step, step_in_epoch=self.step_in_epoch, thread_mode=mode,
            pid=os.getpid(),
            parent=self.branch_info or c.parent)
        defaults = describe_defaults(c)
        if defaults:
            self._log(defaults)
        self._remember_good()
        compiled = False
        t_compile = time.perf_counter()
        self._emit("compiling", message="compiling kernels (first run) or loading them from the cache")
        self._watch_compiles(t_compile)
        sum_loss = sum_pen = 0.0
        sum_correct = sum_n = n_batches = 0
        last_log_time = time.perf_counter()
        last_log_samples = 0
        while self.epoch < c.epochs:
            # the permutation of this epoch comes from the rng state at its start (saved, for exact resume)
            self._epoch_rng_state = self.shuffle_rng.bit_generator.state
            perm = self.shuffle_rng.permutation(len(d.x_train))
            if self._next_batch is not None and self.step_in_epoch == 0:
                self._apply_batch_size(self._next_batch, self._next_scale)  # asked for during the last epoch
            epoch_t0, paused_t0 = time.perf_counter(), self.paused_seconds
            epoch_seconds = 0.0
            ep_loss = ep_correct = ep_n = 0.0
            for b in itertools.count(self.step_in_epoch):
                if b >= self.steps_per_epoch:  # (a batch size set at the epoch's first step changes it)
                    break
                self._poll_commands()
                m = self.model  # a command may have rebuilt it (set_regularization's dropout)
                idx = perm[b * c.batch_size:(b + 1) * c.batch_size]
                x, y = d.x_train[idx], d.y_train[idx]
                self.optimizer.lr = self.base_lr * self.schedule.factor(self.schedule_step)
                t0 = time.perf_counter()
                if self.augmenter is not None:  # timed with the step: it is work the run asked for
                    x = self.augmenter(x)  # a new random version of each sample (training batches only)
                    self._augmented = (x, y)  # the latest batch, as the network saw it (for the samples event)
                # every stats_every steps, and once early (step 10) so a short run gets its gradient-health verdict
                stats_step = (self.global_step + 1) % c.stats_every == 0 or self.global_step + 1 == EARLY_STATS
                before = S.snapshot_params(m) if stats_step else None
                traced = self._steps_left == 1 and self.paused  # the last step of a `step` command: shown in detail
                if traced:
                    loss, pen, correct, trace = stepview.traced_gradients(m, x, y)
                else:
                    loss, pen, correct = m.compute_gradients(x, y)
                if not (math.isfinite(loss) and math.isfinite(pen)):
                    self._on_divergence(loss)
                    self._poll_commands()
                    continue
                if self._loss_blew_up(loss + pen):
                    self._on_divergence(loss + pen, "blow-up")
                    self._poll_commands()
                    continue
                if c.clip_grad is not None:
                    self._clip()
                # every updated weight is checked (non-finite gradients or a huge lr show here too): a NaN weight
                # can hide behind a ReLU and never reach the loss; the optimizer's kernels check what they write
                if not self.optimizer.step(m.grads):
                    self._on_divergence(loss, "non-finite weights")
                    self._poll_commands()
                    continue
                self._track_loss(loss + pen)
                dt = time.perf_counter() - t0
                if compiled and not self._steps_left:  # steps taken one by one are timed with the user's pauses
                    chosen = self.tuner.record(dt, len(idx))
                    if chosen is not None:
                        self._emit("log", level="debug", message=f"threads: {chosen} ({self.tuner.last_reason})")
                if not compiled:
                    compiled = True
                    self._compile_watch.close()
                    helper = self._compile_helper
                    extra = {"helper_kernels": helper.done()} if helper is not None and helper.folder else {}
                    self._emit("compiled", seconds=round(time.perf_counter() - t_compile, 3), **extra)
                    self._emit_pictures()  # (the helper may still be compiling the evaluation's kernels)
                    self._stop_compile_helper()
                    epoch_t0, paused_t0 = time.perf_counter(), self.paused_seconds
                else:
                    self.train_seconds += dt
                    epoch_seconds += dt
                    self.samples_seen += len(idx)
                self.global_step += 1
                self.step_in_epoch = b + 1
                sum_loss += loss * len(idx)
                sum_pen += pen * len(idx)
                sum_n += len(idx)
                sum_correct += correct or 0
                n_batches += 1
                ep_loss += loss * len(idx)
                ep_correct += correct or 0
                ep_n += len(idx)
                if stats_step:
                    rows = S.layer_stats(m, before)
                    verdict, change = self.health.check(rows, self.schedule.factor(self.schedule_step))
                    self._emit("layer_stats", step=self.global_step, epoch=self.epoch, layers=rows, health=verdict)
                    if change is not None:
                        self._emit("gradient_health", step=self.global_step, epoch=self.epoch, **change)
                if self._steps_left:
                    self._steps_left -= 1
                    if traced:
                        self._emit("step_detail", step=self.global_step, epoch=self.epoch,
                                   **stepview.step_detail(m, self.optimizer, trace, x, y, idx, loss, pen, correct,
                                                          list(d.class_names)))
                if self.global_step % c.log_every == 0 or b == self.steps_per_epoch - 1:
                    now = time.perf_counter()
                    sps = (self.samples_seen - last_log_samples) / max(now - last_log_time, 1e-9)
                    self._emit("step", step=self.global_step, epoch=self.epoch + (b + 1) / self.steps_per_epoch,
                               loss=sum_loss / sum_n, penalty=sum_pen / sum_n,
                               accuracy=(sum_correct / sum_n) if m.is_classifier else None,
                               lr=self.optimizer.lr, samples_per_second=sps, batches=n_batches)
                    last_log_time, last_log_samples = now, self.samples_seen
                    sum_loss = sum_pen = 0.0
                    sum_correct = sum_n = n_batches = 0
                if c.val_every and self.global_step % c.val_every == 0 and len(d.x_val):
                    r = m.evaluate(d.x_val, d.y_val)
                    self._emit("validation", step=self.global_step, val_loss=r["loss"],
                               val_accuracy=r.get("accuracy"))
                if self.global_step % SNAPSHOT_EVERY == 0:
                    self._remember_good()
                if self.global_step % WEIGHTS_EVERY == 0:
                    self._emit_pictures()
                if self._probe_x is not None and (self.paused
                                                  or time.perf_counter() - self._probe_t >= self._probe_every):
                    self._emit_probe()  # the drawn picture's probabilities move as the network learns
                if self._embedding is not None and (self.paused
                                                    or time.perf_counter() - self._embed_t >= self._embed_every):
                    self._emit_embedding()  # the classes pull apart layer by layer as it learns
                if c.pace:
                    self._pace_wait(c.pace)
            # --- end of epoch ---
            self.epoch += 1
            self.step_in_epoch = 0
            self._epoch_rng_state = None
            wall = time.perf_counter() - epoch_t0 - (self.paused_seconds - paused_t0)
            if self._end_epoch(ep_loss / max(ep_n, 1), ep_correct / max(ep_n, 1), wall, epoch_seconds, ep_n):
                break
        self.status = "testing"
        self._poll_commands()
        tests = final_tests(self)  # the last weights and the best validation epoch's (see training/final_test.py)
        self._poll_commands()  # a stop (a signal) during the test evaluation ends the run stopped, not finished
        self.status = "finished"
        self._status_file()
        self._emit_pictures()
        if self._probe_x is not None:
            self._emit_probe()  # the final weights' answer (the app asks the saved ones after this)
        if self._embedding is not None:
            self._emit_embedding()  # the final weights' views
        return self._emit(
            "finished", **tests, epochs=self.epoch, steps=self.global_step,
            train_seconds=round(self.train_seconds, 3),
            samples_per_second=self.samples_seen / self.train_seconds if self.train_seconds > 0 else None,
            best_val_accuracy=self.best_val_accuracy, best_epoch=self.best_epoch,
            best_val_loss=self.best_val_loss if math.isfinite(self.best_val_loss) else None,
            elapsed_seconds=round(time.time() - self.started_at, 1), stopped_early=self.epoch < c.epochs,
            **self._divergence_fields(),
            run_dir=str(self.run_dir.path) if self.run_dir else None, name=self.run_dir.name if self.run_dir else None,
            dataset=c.dataset)

    def _end_epoch(self, train_loss: float, train_acc: float, wall: float, compute: float, n: float) -> bool:
        """Validate, report, checkpoint, schedule and early-stop; True when training should stop."""
        c, d, m = self.config, self.data, self.model
        val, val_out = m.evaluate(d.x_val, d.y_val, return_outputs=True) if len(d.x_val) else ({}, None)
        val_loss = val.get("loss")
        if val_loss is not None and not math.isfinite(val_loss):
            # finite training losses but weights so large the validation overflows: the last steps diverged;
            # never checkpoint or keep such weights
            self._on_divergence(val_loss)
            if not self.paused:
                val, val_out = m.evaluate(d.x_val, d.y_val, return_outputs=True)
                val_loss = val.get("loss")
        epoch_event = self._emit("epoch", epoch=self.epoch, step=self.global_step, train_loss=train_loss,
                   train_accuracy=train_acc if m.is_classifier else None, val_loss=val_loss,
                   val_accuracy=val.get("accuracy"), lr=self.optimizer.lr, seconds=round(wall, 3),
                   samples_per_second=n / compute if compute > 0 else None)
        if m.is_classifier and val_out is not None and len(val_out):
            preds = val_out.argmax(axis=1)
            # bounded: at most CONFUSION_MAX_CLASSES classes, whatever the dataset's class count
            self._emit("confusion", epoch=self.epoch, split="val",
                       **confusion_event_fields(d.y_val, preds, list(d.class_names)))
        if self.schedule.on_epoch_end(val_loss):
            self._set_lr(self.base_lr * self.schedule.factor(self.schedule_step), "plateau")
        improved = val_loss is not None and math.isfinite(val_loss) and val_loss < self.best_val_loss - c.min_delta
        acc = val.get("accuracy")
        if acc is not None and math.isfinite(acc) and (self.best_val_accuracy is None or acc > self.best_val_accuracy):
            self.best_val_accuracy = acc  # the highest validation accuracy (its epoch may differ from the best loss's)
        if improved:
            self.best_val_loss = val_loss
            self.best_epoch = self.epoch
            self.bad_epochs = 0
            self._best_weights = m.get_weights()
        else:
            self.bad_epochs += 1
        self._remember_good()
        if self.save("latest") and c.keep_epochs:
            try:  # the last keep_epochs epochs' checkpoints, for `tuinet train --from RUN@EPOCH`
                self.run_dir.keep_epoch_checkpoint(self.epoch, c.keep_epochs)
            except OSError as e:
                self._log(f"could not keep the checkpoint of epoch {self.epoch}: {e}", "warning")
        if improved:
            self.save("best")
        self._status_file()  # after the checkpoint it describes: status.json never runs ahead of latest.npz
        if c.patience is not None and self.bad_epochs >= c.patience and self.epoch < c.epochs:
            if getattr(self, "_best_weights", None) is not None:
                m.set_weights(self._best_weights)
                self._restored_best = True
                self.save("latest")  # the run's final weights are the restored ones (eval RUN uses latest)
            self._emit("early_stopped", epoch=self.epoch, best_epoch=self.best_epoch,
                       best_val_loss=self.best_val_loss, restored="best")
            return True
        self._check_watch(epoch_event)
        return False

    def _check_watch(self, epoch_event: dict[str, Any]) -> None:
        """Feed the epoch's metrics to the watch rules; one that holds pauses the run (the loop then waits at the
        next step) or stops it, its checkpoint already written."""
        fired = self.watch.update(epoch_event) if self.watch else None
        if fired is None:
            return
        action, rule = fired
        reason = f"watch rule: {action} if {rule.describe()}"
        self._log(f"epoch {self.epoch}: {rule.describe()} holds; {'pausing' if action == 'pause' else 'stopping'}",
                  "warning")
        if action == "stop" and self.epoch < self.config.epochs:
            self.stop_reason = reason
            raise StopTraining()
        if action == "pause" and self.epoch < self.config.epochs:
            self._apply({"command": "pause", "reason": reason})
