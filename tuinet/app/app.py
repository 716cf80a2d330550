"""The tuinet app: watch a run live and steer it (pause, learning rate, optimizer, save, evaluate, restart, quit).

The app talks to a *session-like* object and nothing else: ``add_listener(fn)``, ``remove_listener(fn)``,
``send(command)``, ``state``, ``history``, ``last`` (and ``start``/``join``/``running`` when it owns the run). An
in-process :class:`~tuinet.training.session.Session` is one; a remote session behind a socket or a replay of a
recorded event stream are others.

Threading: the session calls our listener from the training thread. The listener only appends to a deque (and,
for the few events that answer a command or raise an alarm, posts one message so they show at once); a 5 Hz timer
drains the deque into a :class:`RunState` and redraws only the parts that changed and are visible. Charts are
rebuilt at most twice a second and within a time budget, so the UI takes little GIL time from training.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import queue
import sys
import threading
import time
from collections import deque
from typing import Any, Callable, Iterable

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Static, TabbedContent, TabPane

from tuinet.protocol import make_command
from tuinet.app.widgets.boundary import BoundaryMap, legend_text
from tuinet.app.widgets.dashboard import STATUS_STYLE, Dashboard
from tuinet.app.screens.dialogs import ConfirmDialog, DivergedDialog, LrDialog, OptimizerDialog
from tuinet.app.screens.help import HelpScreen
from tuinet.app.widgets.inspector import Inspector
from tuinet.app.widgets.predictions import Predictions
from tuinet.app.state import ALERTS, RunState, fmt_duration, fmt_num

TABS = ("dashboard", "inspector", "predictions", "boundary")
#: command -> the event that confirms it was applied (used for the "pending" line and latency figures)
ACK = {"pause": "paused", "resume": "resumed", "scale_lr": "lr_changed", "set_lr": "lr_changed",
       "set_optimizer": "optimizer_changed", "save": "checkpoint_saved", "evaluate": "evaluated",
       "rollback": "rolled_back"}
#: the live actions that need a running trainer
LIVE_ACTIONS = {"pause", "resume", "lr_up", "lr_down", "set_lr", "optimizer", "save", "evaluate"}


class EventsArrived(Message):
    """Posted (thread-safely) by the listener when an urgent event is queued: drain now, not at the next tick."""


class TuinetApp(App[int]):
    """Live training dashboard.

    Args:
        session: the session-like object to watch and steer.
        config: the run's TrainConfig (needed to restart; None disables restart).
        session_factory: ``config -> new session`` for restart (None disables restart).
        autostart: start the session if it has not started (in-process sessions).
        tick_hz: how often queued events are drained and the screen updated (<= 5 for SSH).
        chart_hz: the most chart rebuilds per second.
        progress_hz: the most progress-line (step, ETA, samples/s) repaints per second.
        switch_interval: the interpreter's GIL switch interval while the app runs (None, the default: leave
            Python's 5 ms). A shorter one looks attractive (the trainer, back from a GIL-free kernel while the UI
            thread redraws, waits up to this long for the GIL) but costs more than it saves: every forced switch
            is a handshake between the two threads. Measured on the mlp preset, app open vs headless, 5 rounds
            alternated: 71% with 1 ms, 102% with the default.
    """

    CSS_PATH = "app.tcss"
    TITLE = "tuinet"
    ENABLE_COMMAND_PALETTE = True

    BINDINGS = [
        Binding("space", "pause", "Pause", tooltip="Pause training before the next step"),
        Binding("space", "resume", "Resume", tooltip="Resume training"),
        Binding("plus,equals_sign", "lr_up", "lr×2", key_display="+"),
        Binding("minus,underscore", "lr_down", "lr÷2", key_display="-"),
        Binding("L", "set_lr", "lr…", key_display="L", tooltip="Type an exact learning rate"),
        Binding("o", "optimizer", "Optim", tooltip="Choose the optimizer"),
        Binding("s", "save", "Save"),
        Binding("e", "evaluate", "Eval"),
        Binding("r", "restart", "Restart"),
        Binding("l", "toggle_log", "Log y", show=False),
        Binding("q", "quit_app", "Quit"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("1", "show_tab('dashboard')", "Dashboard", show=False),
        Binding("2", "show_tab('inspector')", "Inspector", show=False),
        Binding("3", "show_tab('predictions')", "Predictions", show=False),
        Binding("4", "show_tab('boundary')", "Boundary", show=False),
    ]

    status: reactive[str] = reactive("loading")
    paused: reactive[bool] = reactive(False)
    lr: reactive[float | None] = reactive(None)
    optimizer: reactive[str] = reactive("-")
    log_scale: reactive[bool] = reactive(False)

    def __init__(self, session, *, config=None, session_factory: Callable[[Any], Any] | None = None,
                 autostart: bool = True, tick_hz: float = 5.0, chart_hz: float = 1.0, progress_hz: float = 2.0,
                 switch_interval: float | None = None):
        super().__init__()
        self.animation_level = "none"  # no tab-underline/scroll animations: fewer frames over SSH, less GIL time
        self.session = None
        self._initial_session = session
        self.config = config
        self.session_factory = session_factory
        self.autostart = autostart
        self.tick_hz = min(tick_hz, 10.0)
        self.chart_interval = 1.0 / max(chart_hz, 0.1)
        self._min_chart_interval = self.chart_interval
        self.state = RunState()
        self._queue: deque[tuple[int, dict[str, Any]]] = deque()
        self._gen = 0
        self._listener: Callable[[dict[str, Any]], None] | None = None
        self._lifecycle: str | None = None  # "stopping" / "restarting" while we wait for the trainer
        self.pending: dict[str, tuple[str, float]] = {}  # ack event -> (what we are waiting for, when asked)
        self.latencies: deque[tuple[str, float]] = deque(maxlen=200)  # (command, seconds from key to ack shown)
        self._last_chart = 0.0
        self.progress_interval = 1.0 / max(progress_hz, 0.1)
        self._last_progress = 0.0
        self._diverged_open = False
        self._snapshot_asked = 0.0
        self.redraws = 0
        self.switch_interval = switch_interval

    # --- layout ----------------------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(id="topbar")
        with TabbedContent(initial="dashboard", id="tabs"):
            with TabPane("Dashboard", id="dashboard"):
                yield Dashboard(id="dash")
            with TabPane("Inspector", id="inspector"):
                yield Inspector(id="insp")
            with TabPane("Predictions", id="predictions"):
                yield Predictions(id="preds")
            with TabPane("Boundary", id="boundary"):
                yield Static(id="boundary-legend")
                yield BoundaryMap(id="boundary-map")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        if self.switch_interval is not None:
            self._old_switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(self.switch_interval)
        # widgets are looked up once: a modal dialog on top must not hide them from the redraw
        self._tabs = self.query_one(TabbedContent)
        self._dash = self.query_one(Dashboard)
        self._insp = self.query_one(Inspector)
        self._preds = self.query_one(Predictions)
        self._blegend = self.query_one("#boundary-legend", Static)
        self._bmap = self.query_one(BoundaryMap)
        self._topbar = self.query_one("#topbar", Static)
        self._footer = self.query_one(Footer)
        self._adapt_layout(self.size.width, self.size.height)
        self._attach(self._initial_session)
        self.drain_timer = self.set_interval(1.0 / self.tick_hz, self._tick, name="drain")
        self._tick()

    def on_resize(self, event) -> None:
        self._adapt_layout(event.size.width, event.size.height)

    def _adapt_layout(self, width: int, height: int) -> None:
        """Compact layout on small terminals (80x24 over SSH): thinner panels, shorter log."""
        self.set_class(height < 32, "-short")
        self.set_class(width < 100, "-narrow")
        if hasattr(self, "_footer"):
            self._footer.show_command_palette = width >= 100
            self._insp.set_compact(width < 100)

    # --- the session ------------------------------------------------------------------------------------------------

    def _attach(self, session) -> None:
        """Watch ``session`` (replaying what it already reported when it is under way)."""
        if self.session is not None and self._listener is not None:
            self.session.remove_listener(self._listener)
        self._gen += 1
        gen = self._gen
        self.session = session

        def listener(event: dict[str, Any]) -> None:  # training thread: cheap and never blocks
            self._queue.append((gen, event))
            kind = event.get("event")
            if kind in ALERTS or kind in self.pending:
                self.post_message(EventsArrived())

        self._listener = listener
        started = getattr(session, "thread", None) is not None or bool(getattr(session, "running", False)) \
            or not hasattr(session, "start")
        if started:
            for e in list(getattr(session, "history", []) or []):
                self._queue.append((gen, e))
            last = getattr(session, "last", {}) or {}
            for kind in ("weights", "samples", "boundary"):
                if kind in last:
                    self._queue.append((gen, last[kind]))
        session.add_listener(listener)
        if self.autostart and not started:
            # start once the first frame is on screen: the app's start-up work then does not compete with training
            self.call_after_refresh(self._start_session, session)

    def _start_session(self, session) -> None:
        # the training thread is started from a launcher thread that keeps normal priority, then this (UI) thread
        # lowers its own: a thread inherits the nice value of the thread that starts it
        _LAUNCHER.call(session.start)
        _lower_ui_priority()

    def _send(self, kind: str, pending: str | None = None, **fields: Any) -> None:
        """Send a command; show ``pending`` until the trainer confirms it."""
        if self.session is None:
            return
        self.session.send(make_command(kind, **fields))
        ack = ACK.get(kind)
        if ack:
            self.pending[ack] = (pending or kind, time.perf_counter())
        self._redraw_status()

    def _session_live(self) -> bool:
        return self.session is not None and not self.state.done and self._lifecycle is None

    # --- draining events ---------------------------------------------------------------------------------------------

    @on(EventsArrived)
    def _urgent(self) -> None:
        self._tick()

    def _tick(self) -> None:
        """Fold queued events into the state, then redraw what changed."""
        if not hasattr(self, "_tabs") or self._closing or self._closed:
            return
        st = self.state
        now = time.perf_counter()
        while self._queue:
            gen, e = self._queue.popleft()
            if gen != self._gen:
                continue
            st.apply(e)
            kind = e.get("event")
            if kind in self.pending:
                what, t0 = self.pending.pop(kind)
                self.latencies.append((what, now - t0))
            if kind == "diverged" and e.get("action") == "paused":
                self._show_diverged(e)
        for k, (_, t0) in list(self.pending.items()):
            if now - t0 > 10:
                del self.pending[k]
                st.dirty.add("status")
        if st.done:
            self.pending.clear()
        self._sync_reactives()
        self._redraw()

    def _sync_reactives(self) -> None:
        st = self.state
        self.status = self._lifecycle or st.status
        self.paused = st.paused
        self.lr = st.lr
        self.optimizer = st.optimizer
        if st.dataset:
            tabs = self._tabs
            want_boundary = st.is_2d
            if want_boundary != getattr(self, "_boundary_shown", None):
                (tabs.show_tab if want_boundary else tabs.hide_tab)("boundary")
                self._boundary_shown = want_boundary
            if not st.is_classifier and getattr(self, "_preds_shown", True):
                tabs.hide_tab("predictions")
                self._preds_shown = False

    def watch_status(self) -> None:
        # which keys apply depends on the status (and on paused); lr and optimizer do not change that, and a
        # bindings refresh rebuilds the footer, so it is not done for them
        self.refresh_bindings()

    def watch_paused(self) -> None:
        self.refresh_bindings()

    def watch_log_scale(self, on: bool) -> None:
        if hasattr(self, "_dash"):
            self._dash.set_log_scale(on)

    @property
    def active_tab(self) -> str:
        """The id of the visible tab."""
        return self._tabs.active

    def _redraw(self) -> None:
        """Redraw the changed parts of the visible tab (others stay dirty until shown)."""
        st = self.state
        d = st.dirty
        self.redraws += 1
        tab = self.active_tab
        now = time.perf_counter()
        # state changes show at once; progress alone (step, ETA, samples/s) at most every progress_interval
        if d & {"status", "info"} or ("progress" in d and now - self._last_progress >= self.progress_interval):
            self._redraw_status()
            self._last_progress = now
            d -= {"status", "progress", "info"}
        dash = self._dash
        if "log" in d:
            dash.update_log(st)
            d.discard("log")
        if tab == "dashboard" and "charts" in d and now - self._last_chart >= self.chart_interval:
            cost = dash.update_charts(st)
            self._last_chart = time.perf_counter()
            # keep chart building under ~5% of the time (it competes with training for the GIL)
            self.chart_interval = max(self._min_chart_interval, min(5.0, cost * 20))
            d.discard("charts")
        if tab == "inspector":
            insp = self._insp
            if "layers" in d:
                insp.update_table(st)
                d.discard("layers")
            if "weights" in d or "layers" in d:
                insp.update_detail(st)
                d.discard("weights")
        if tab == "predictions":
            preds = self._preds
            if "samples" in d:
                preds.update_samples(st.samples)
                d.discard("samples")
            if "confusion" in d:
                preds.update_confusion(st.confusion)
                d.discard("confusion")
        if tab == "boundary" and "boundary" in d:
            names = [str(n) for n in st.dataset.get("class_names") or []]
            self._blegend.update(legend_text(names, st.boundary))
            self._bmap.set_event(st.boundary, len(names) if st.is_classifier else 1)
            d.discard("boundary")

    def _pending_text(self) -> str | None:
        if self._lifecycle == "stopping":
            return "stopping: saving a checkpoint…"
        if self._lifecycle == "restarting":
            return "restarting: stopping the current run…"
        if not self.pending:
            return None
        return " · ".join(what for what, _ in self.pending.values()) + " (next step)"

    def _redraw_status(self) -> None:
        st = self.state
        shown = self._lifecycle or ("pausing" if "paused" in self.pending and not st.paused else st.status)
        self._dash.update_status(st, shown, self._pending_text())
        sym, style = STATUS_STYLE.get(shown, ("◌", "yellow"))
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(" tuinet ", style="bold reverse")
        t.append(f" {sym} {shown} ", style=style)
        t.append(f" step {st.step:,}/{st.total_steps:,}  epoch {st.epoch:.2f}/{st.epochs}  ", style="")
        t.append(f"{st.optimizer} lr {fmt_num(st.lr)}", style="cyan")
        t.append(f"  ETA {fmt_duration(st.eta_seconds)}", style="dim")
        if st.name:
            t.append(f"  {st.name}", style="dim")
        if t.plain != getattr(self, "_topbar_plain", None):
            self._topbar_plain = t.plain
            self._topbar.update(t, layout=False)

    @on(TabbedContent.TabActivated)
    def _tab_changed(self, event: TabbedContent.TabActivated) -> None:
        st = self.state
        tab = event.pane.id if event.pane else None
        if tab == "inspector":
            st.dirty.update(("layers", "weights"))
        elif tab == "predictions":
            st.dirty.update(("samples", "confusion"))
        elif tab == "boundary":
            st.dirty.add("boundary")
        elif tab == "dashboard":
            st.dirty.add("charts")
            self._last_chart = 0.0
        # a panel that shows pictures was opened: ask for fresh ones (at most every 3 s)
        if tab in ("inspector", "predictions", "boundary") and self._session_live() and not st.compiling:
            if time.perf_counter() - self._snapshot_asked > 3.0:
                self._snapshot_asked = time.perf_counter()
                self.session.send(make_command("snapshot"))
        self.call_after_refresh(self._redraw)

    # --- bindings ---------------------------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Grey out keys that do not apply now; show pause or resume, not both."""
        live = self._session_live()
        if action == "pause":
            return (not self.paused) if live else None
        if action == "resume":
            return bool(self.paused) if live else False
        if action in LIVE_ACTIONS:
            return True if live else None
        if action == "restart":
            return True if self.session_factory is not None and self.config is not None and \
                self._lifecycle is None else None
        if action == "show_tab" and parameters:
            if parameters[0] == "boundary" and not self.state.is_2d:
                return None
            if parameters[0] == "predictions" and self.state.dataset and not self.state.is_classifier:
                return None
        return True

    def action_pause(self) -> None:
        """Pause before the next step."""
        self._send("pause", "pausing")

    def action_resume(self) -> None:
        """Resume training."""
        self._send("resume", "resuming")

    def action_toggle_pause(self) -> None:
        """Pause or resume (command palette)."""
        if self.paused:
            self.action_resume()
        else:
            self.action_pause()

    def action_lr_up(self) -> None:
        """Double the learning rate."""
        self._scale_lr(2.0)

    def action_lr_down(self) -> None:
        """Halve the learning rate."""
        self._scale_lr(0.5)

    def _scale_lr(self, factor: float) -> None:
        target = self.state.lr * factor if self.state.lr else None
        self._send("scale_lr", f"lr → {fmt_num(target)}" if target else "lr", factor=factor)

    def action_set_lr(self) -> None:
        """Open the dialog to type an exact learning rate."""
        def done(value: float | None) -> None:
            if value is not None:
                self._send("set_lr", f"lr → {fmt_num(value)}", lr=value)
        self.push_screen(LrDialog(self.state.lr), done)

    def action_optimizer(self) -> None:
        """Open the optimizer chooser."""
        st = self.state
        current = st.optimizer
        if current == "sgd" and (st.hyperparams.get("momentum") or 0) > 0:
            current = "momentum"

        def done(choice: dict[str, Any] | None) -> None:
            if choice:
                fields = {"name": choice["name"]}
                if choice.get("lr") is not None:
                    fields["lr"] = choice["lr"]
                self._send("set_optimizer", f"optimizer → {choice['name']}", **fields)
        self.push_screen(OptimizerDialog(current, st.lr), done)

    def action_save(self) -> None:
        """Save a checkpoint now."""
        self._send("save", "saving checkpoint")

    def action_evaluate(self) -> None:
        """Evaluate on the test set now."""
        self._send("evaluate", "evaluating on test")

    def action_toggle_log(self) -> None:
        """Loss chart: log / linear scale."""
        self.log_scale = not self.log_scale

    def action_help(self) -> None:
        """Show the keys."""
        self.push_screen(HelpScreen())

    def action_show_tab(self, tab: str) -> None:
        """Switch to a tab."""
        if tab in TABS:
            self._tabs.active = tab

    def action_restart(self) -> None:
        """Restart with the current settings (after confirming)."""
        def done(yes: bool | None) -> None:
            if yes:
                self._restart()
        what = "Stop this run (a checkpoint is saved) and start a new one" if not self.state.done else \
            "Start a new run"
        self.push_screen(ConfirmDialog("Restart", f"{what} with the current settings: {self._settings_text()}?",
                                       yes="Restart"), done)

    def action_quit_app(self) -> None:
        """Quit; while training runs, ask first, then stop it (saving a checkpoint)."""
        if not self._session_live() or not getattr(self.session, "running", True):
            self.exit(self._exit_code())
            return

        def done(yes: bool | None) -> None:
            if yes:
                self._quit()
        self.push_screen(ConfirmDialog("Quit", "Stop training, save a checkpoint and quit?", yes="Quit"), done)

    def _exit_code(self) -> int:
        return 1 if self.state.status == "failed" else 0

    def _show_diverged(self, event: dict[str, Any]) -> None:
        if self._diverged_open:
            return
        self._diverged_open = True
        factor = getattr(self.config, "divergence_factor", 0.5) if self.config is not None else 0.5

        def done(choice: str | None) -> None:
            self._diverged_open = False
            if choice == "rollback":
                self._send("rollback", "rolling back", factor=factor)
            elif choice == "resume":
                self._send("resume", "resuming")
        self.push_screen(DivergedDialog(event, factor), done)

    # --- restart and quit --------------------------------------------------------------------------------------------

    def current_config(self):
        """The run's config with the optimizer, its hyperparameters and lr as they are now (for restart)."""
        st = self.state
        hyper_keys = ("momentum", "dampening", "nesterov", "betas", "eps", "weight_decay", "alpha", "centered",
                      "amsgrad")
        changes: dict[str, Any] = {k: None for k in hyper_keys}
        for k, v in (st.hyperparams or {}).items():
            if k in hyper_keys:
                changes[k] = tuple(v) if isinstance(v, list) else v
        if st.optimizer and st.optimizer != "-":
            changes["optimizer"] = st.optimizer
        if st.lr:
            changes["lr"] = st.lr
        changes["name"] = None
        return dataclasses.replace(self.config, **changes)

    def _settings_text(self) -> str:
        st = self.state
        return f"{self.config.model if self.config else '?'} on {self.config.dataset if self.config else '?'}, " \
               f"{st.optimizer} lr {fmt_num(st.lr)}, batch {st.batch_size}, {st.epochs} epochs"

    async def _stop_session(self, session) -> None:
        if session is None:
            return
        if getattr(session, "running", False):
            session.send(make_command("stop", reason="user"))
        join = getattr(session, "join", None)
        if join is not None:
            await asyncio.to_thread(join, 120)
        self._tick()

    @work(exclusive=True, group="lifecycle")
    async def _restart(self) -> None:
        self._lifecycle = "restarting"
        self._tick()
        config = self.current_config()
        await self._stop_session(self.session)
        new = self.session_factory(config)
        self.config = config
        self.state.reset()
        self.state.add_log(f"restarted: {self._settings_text()}")
        self._insp.clear()
        self._lifecycle = None
        self._attach(new)
        self._tick()

    @work(exclusive=True, group="lifecycle")
    async def _quit(self) -> None:
        self._lifecycle = "stopping"
        self._tick()
        await self._stop_session(self.session)
        self._lifecycle = None
        self.exit(self._exit_code())

    def on_unmount(self) -> None:
        if getattr(self, "_old_switch_interval", None) is not None:
            sys.setswitchinterval(self._old_switch_interval)
        if self.session is not None and self._listener is not None:
            self.session.remove_listener(self._listener)

    # --- command palette -----------------------------------------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Every hotkey as a palette entry (only those that apply now), then Textual's own."""
        entries = [
            ("toggle_pause", "Pause / resume training", "space: pause before the next step, or resume"),
            ("lr_up", "Learning rate ×2", "+: double the learning rate"),
            ("lr_down", "Learning rate ÷2", "-: halve the learning rate"),
            ("set_lr", "Set learning rate…", "L: type an exact learning rate"),
            ("optimizer", "Choose optimizer…", "o: SGD, momentum, Adam, AdamW, RMSprop, Adagrad"),
            ("save", "Save checkpoint", "s: write latest.npz in the run directory"),
            ("evaluate", "Evaluate on test set", "e: loss and accuracy on the test split now"),
            ("restart", "Restart run…", "r: a new run with the current settings"),
            ("toggle_log", "Loss chart: log / linear", "l: switch the loss chart's y scale"),
            ("help", "Keys and tabs", "?: the help screen"),
            ("quit_app", "Quit (save checkpoint)", "q: stop training, save a checkpoint, quit"),
        ]
        for action, title, help_ in entries:
            check = "pause" if action == "toggle_pause" else action
            if check == "pause" and self.paused:
                check = "resume"
            if self.check_action(check, ()):
                yield SystemCommand(title, help_, getattr(self, f"action_{action}"))
        for tab in TABS:
            if self.check_action("show_tab", (tab,)):
                yield SystemCommand(f"Show {tab}", f"switch to the {tab} tab",
                                    lambda tab=tab: self.action_show_tab(tab))
        yield from super().get_system_commands(screen)


class _Launcher:
    """A thread, created at import (normal priority), that runs callables for the UI thread and waits for them."""

    def __init__(self) -> None:
        self._jobs: "queue.Queue" = queue.Queue()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while True:
            fn, done, box = self._jobs.get()
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller
                box.append(e)
            done.set()

    def call(self, fn) -> None:
        """Run ``fn`` in the launcher thread; re-raise what it raised."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tuinet-launcher", daemon=True)
            self._thread.start()
        done, box = threading.Event(), []
        self._jobs.put((fn, done, box))
        done.wait()
        if box:
            raise box[0]


_LAUNCHER = _Launcher()


def _lower_ui_priority() -> None:
    """Optionally give the UI thread a lower CPU priority than the training thread: ``TUINET_UI_NICE=N``.

    Off by default. The idea: the UI's redraws pre-empt one of the two threads of a parallel sgemm and the whole
    step waits at the barrier; at a higher nice value the UI runs in the gaps instead. Measured A/B (nice 0 vs 10,
    twice each): throughput ratios swung 63-116% either way (noise), while the slowest key answer grew from
    24-295 ms to 572-948 ms, so it stays opt-in. Threads started later by this thread would inherit the nice value,
    so sessions are started (from a launcher thread) before this is called.
    """
    nice = int(os.environ.get("TUINET_UI_NICE", "0"))
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        current = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), max(current, nice))
    except OSError:
        pass


def run_app(config, trainer=None) -> int:
    """Train ``config`` (or run ``trainer``, e.g. a resumed one) in the app; returns the exit code.

    When the app closes while training still runs (ctrl+q, a lost terminal), training is stopped and a checkpoint
    saved before returning.
    """
    from tuinet.training.session import Session
    from tuinet.training.trainer import Trainer

    def factory(cfg):
        return Session(Trainer(cfg))

    session = Session(trainer if trainer is not None else Trainer(config))
    app = TuinetApp(session, config=config, session_factory=factory)
    code = None
    try:
        code = app.run()
    finally:
        live = app.session or session
        if getattr(live, "running", False):
            live.send(make_command("stop", reason="app closed"))
            live.join(120)
    if isinstance(code, int):
        return code
    return 1 if app.state.status == "failed" else 0
