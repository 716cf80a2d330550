"""The tuinet app: watch a run live and steer it (pause, learning rate, optimizer, save, evaluate, restart, quit).

The app talks to a :class:`tuinet.protocol.Session` and nothing else: an in-process
:class:`~tuinet.training.session.Session`, a :class:`~tuinet.remote.client.RemoteSession` behind a socket, or a
:class:`~tuinet.app.replay.ReplaySession` of recorded events. Its keys, palette entries and help lines come from the
table in :mod:`tuinet.app.actions`.

Threading: the session calls our listener from the training thread. The listener only appends to a deque (and,
for the few events that answer a command or raise an alarm, posts one message so they show at once); a 5 Hz timer
drains the deque into a :class:`RunState` and redraws only the parts that changed and are visible. Charts are
rebuilt at most twice a second and within a time budget, so the UI takes little GIL time from training.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import signal
import sys
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from textual import events, on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Static, TabbedContent, TabPane

from tuinet.app import actions
from tuinet.app.actions import When
from tuinet.app.compare_state import MAX_CHARTED, CompareState
from tuinet.app.launcher import start_session
from tuinet.app.messages import EventsArrived
from tuinet.app.screens.compare import CompareView
from tuinet.app.screens.dialogs import (BatchSizeDialog, ConfirmDialog, DivergedDialog, EpochsDialog, LrDialog,
                                        OptimizerDialog, RegularizationDialog)
from tuinet.app.screens.help import HelpScreen
from tuinet.app.screens.lrfind import LrChoice, LrFindScreen
from tuinet.app.screens.step import CountPrefix, StepScreen
from tuinet.app.state import ALERTS, RunState
from tuinet.app.widgets.plane import PlaneView
from tuinet.app.widgets.dashboard import Dashboard, topbar_text
from tuinet.app.widgets.drawpad import DrawCanvas, DrawPad
from tuinet.app.widgets.embedding import EmbeddingView
from tuinet.training.probe import DIGIT_DATASETS
from tuinet.app.widgets.inspector import Inspector
from tuinet.app.widgets.predictions import Predictions
from tuinet.formatting import fmt_num
from tuinet.protocol import ACKNOWLEDGED_BY, HYPERPARAMS, PICTURE_EVENTS, Listener, Session, make_command
from tuinet.training.alerts import ALERT_EVENTS, Throttle, make_alert, terminal_codes
from tuinet.training.signals import handle_stop_signals

if TYPE_CHECKING:
    from tuinet.training.config import TrainConfig
    from tuinet.training.trainer import Trainer

TABS = ("dashboard", "inspector", "predictions", "boundary", "compare", "draw")
PLANE_EVERY = 0.5  # seconds between fresh boundary and neuron maps while the Boundary tab is shown, at least
PLANE_SHARE = 0.05  # at most about this share of the trainer's time goes into them (a big net is asked less often)
#: the panels of the inspector, predictions and boundary tabs are redrawn as new figures arrive, each at most this
#: share of the time (its drawing, measured from before it is built until Textual has painted it; the app competes
#: with training for Python's GIL), and at least every PANEL_MAX seconds
PANEL_SHARE = 0.025
#: the boundary forming and the drawing's answer are their tabs' point: they may take more (the layers under the
#: answer take the usual share)
PANEL_SHARES = {"boundary": 0.1, "probe": 0.1}
PANEL_MIN, PANEL_MAX = 0.25, 5.0
#: earlier runs put in the compare tab's chart next to this run at first (most recent of the same dataset)
COMPARE_FIRST = 3


class TuinetApp(App[int]):
    """Live training dashboard.

    Args:
        session: the session to watch and steer.
        config: the run's TrainConfig (needed to restart; None disables restart).
        session_factory: ``config -> new session`` for restart (None disables restart).
        autostart: start the session if it has not started (in-process sessions).
        tick_hz: how often queued events are drained and the screen updated (<= 5 for SSH).
        chart_hz: the most chart rebuilds per second.
        progress_hz: the most progress-line (step, ETA, samples/s) repaints per second.
        switch_interval: the interpreter's GIL switch interval while the app runs (None, the default: leave
            Python's; docs/tui.md says why).
    """

    CSS_PATH = "app.tcss"
    TITLE = "tuinet"
    ENABLE_COMMAND_PALETTE = True

    #: every action of this app (its palette entries and check_action read them), and its help screen's lines
    ACTIONS: tuple[actions.Action, ...] = actions.ACTIONS
    HELP_ROWS: tuple[actions.HelpRow, ...] = actions.APP_HELP_ROWS
    #: what the help screen describes: the app's actions and those bound on its views (compare, neuron maps, step
    #: view, draw canvas)
    HELP_ACTIONS: tuple[actions.Action, ...] = (*actions.ACTIONS, *actions.COMPARE_ACTIONS, *actions.NEURON_ACTIONS,
                                                 *actions.STEP_ACTIONS, *actions.DRAW_ACTIONS)
    BINDINGS = actions.bindings(actions.ACTIONS)

    status: reactive[str] = reactive("loading")
    paused: reactive[bool] = reactive(False)
    lr: reactive[float | None] = reactive(None)
    optimizer: reactive[str] = reactive("-")
    log_scale: reactive[bool] = reactive(False)
    #: whether this app is a viewer of a detached run (d detaches it)
    detachable = False

    def __init__(self, session: Session, *, config: TrainConfig | None = None,
                 session_factory: Callable[[TrainConfig], Session] | None = None, autostart: bool = True,
                 tick_hz: float = 5.0, chart_hz: float = 1.0, progress_hz: float = 2.0,
                 switch_interval: float | None = None):
        super().__init__()
        self.animation_level = "none"  # no tab-underline/scroll animations: fewer frames over SSH, less GIL time
        self.session: Session | None = None
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
        self._listener: Listener | None = None
        self._lifecycle: str | None = None  # "stopping" / "restarting" while we wait for the trainer
        self.pending: dict[str, tuple[str, float]] = {}  # ack event -> (what we are waiting for, when asked)
        self.latencies: deque[tuple[str, float]] = deque(maxlen=200)  # (command, seconds from key to ack shown)
        self._last_chart = 0.0
        self._panel_due: dict[str, float] = {}  # panel -> when it may be redrawn (see PANEL_SHARE)
        self.panel_costs: dict[str, deque[float]] = {}  # panel -> the seconds its last drawings took (benchmarks)
        self.progress_interval = 1.0 / max(progress_hz, 0.1)
        self._last_progress = 0.0
        self._diverged_open = False
        self._lr_find: LrFindScreen | None = None  # the finder screen while it is open
        self._lr_find_orphan = False  # the finder was closed before its test ended: resume the run when it does
        self._snapshot_asked = 0.0
        self.redraws = 0
        self.switch_interval = switch_interval
        self._old_switch_interval: float | None = None
        self.drain_timer: Timer | None = None  # the timer that drains events and redraws (set on mount)
        self._by_call = actions.by_call(self.ACTIONS)
        # the widgets, looked up once on mount: a modal dialog on top must not hide them from the redraw
        self._tabs: TabbedContent | None = None
        self._dash: Dashboard | None = None
        self._insp: Inspector | None = None
        self._preds: Predictions | None = None
        self._plane: PlaneView | None = None
        self._plane_asked = 0.0  # when fresh boundary maps were last asked for (perf_counter)
        self._plane_asked_wall = 0.0  # the same moment in wall-clock time, against the answer's timestamp
        self._plane_asked_for: Any = None  # the boundary event shown then: ask again once a newer one came
        self._plane_every = PLANE_EVERY
        self._compare: CompareView | None = None
        self._draw: DrawPad | None = None
        self._draw_shown: bool | None = None
        self._saved_probe: Any = None  # a CheckpointProbe of the ended run (answers drawings once its trainer is gone)
        self._probe_held = False  # whether the live trainer holds a drawing of ours (it answers it as it learns)
        self._embedding_held = False  # whether the live trainer sends us the layers' views (the Predictions tab)
        self._embedding_saved_asked = False  # whether an ended run's saved weights were asked for them
        self._compare_for: str | None = None  # the run the compare tab was loaded for ("" while loading)
        self._topbar: Static | None = None
        self._footer: Footer | None = None
        self._topbar_plain: str | None = None
        self._boundary_shown: bool | None = None
        self._preds_shown = True
        self.signal_received: int | None = None  # SIGHUP/SIGTERM/SIGINT (or ctrl+c) that ended the app
        self._live_since = 0.0
        self._alert_throttle = Throttle()
        self.alerts_sent: list[dict[str, Any]] = []  # the alerts rung (bell and desktop notification), in order
        self._loop: asyncio.AbstractEventLoop | None = None
        self._count = CountPrefix()  # digits typed before `n` (10n: ten steps)
        self._step_screen: StepScreen | None = None  # the Step view, while it is open

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
                yield PlaneView(id="plane")
            with TabPane("Compare", id="compare"):
                yield CompareView(id="compare-view")
            with TabPane("Draw", id="draw"):
                yield DrawPad(id="drawpad")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.signal_received is not None:  # a signal came while the app was starting
            self._on_signal(self.signal_received)
            return
        if self.switch_interval is not None:
            self._old_switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(self.switch_interval)
        self._tabs = self.query_one(TabbedContent)
        self._dash = self.query_one(Dashboard)
        self._insp = self.query_one(Inspector)
        self._preds = self.query_one(Predictions)
        self._plane = self.query_one(PlaneView)
        self._compare = self.query_one(CompareView)
        self._draw = self.query_one(DrawPad)
        self._compare.active = False
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
        if self._footer is not None and self._insp is not None:
            self._footer.show_command_palette = width >= 100
            self._insp.fit(width)  # compact when its full columns would not fit (80 columns over SSH)
        if self._compare is not None:
            self._compare.adapt(width, height)
        if self._preds is not None:
            self._want_embedding()  # the views' panel shows on tall, wide terminals only

    # --- the session ------------------------------------------------------------------------------------------------

    def _attach(self, session: Session) -> None:
        """Watch ``session`` (replaying what it already reported when it is under way)."""
        if self.session is not None and self._listener is not None:
            self.session.remove_listener(self._listener)
        self._gen += 1
        gen = self._gen
        self._embedding_saved_asked = False
        self.session = session
        self._live_since = time.time() - 1.0  # events older than this are history replayed: they ring no bell

        def listener(event: dict[str, Any]) -> None:  # training thread: cheap and never blocks
            self._queue.append((gen, event))
            kind = event.get("event")
            if kind in ALERTS or kind in self.pending:
                self.post_message(EventsArrived())

        self._listener = listener
        started = session.started
        if started:
            for e in list(session.history):
                self._queue.append((gen, e))
            last = session.last
            for kind in sorted(PICTURE_EVENTS):
                if kind in last:
                    self._queue.append((gen, last[kind]))
        session.add_listener(listener)
        if self.autostart and not started:
            # start once the first frame is on screen: the app's start-up work then does not compete with training
            self.call_after_refresh(start_session, session)

    def _send(self, kind: str, pending: str | None = None, **fields: Any) -> None:
        """Send a command; show ``pending`` until the trainer confirms it."""
        if self.session is None:
            return
        self.session.send(make_command(kind, **fields))
        ack = ACKNOWLEDGED_BY.get(kind)
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
        if self._tabs is None or not self.is_running:
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
            if kind == "samples":
                self._draw.set_samples(e)
            elif kind == "started" and self._draw.image is not None and self._session_live() \
                    and self.active_tab == "draw":
                self._send_probe(self._draw.image.tolist())  # a restarted run: the drawing is answered again
            elif kind == "started":
                self._embedding_held = False  # a restarted run's trainer holds no viewer yet
                self._want_embedding()  # (a run that was loading, or restarted: its views again)
            if kind == "diverged" and e.get("action") == "paused":
                self._show_diverged(e)
            if kind in ALERT_EVENTS and (e.get("time") or 0) >= self._live_since:
                self._alert(e)
            elif kind == "lr_find":
                self._on_lr_find(e)
        if st.compiling:
            st.dirty.add("status")  # the compile time counts up live
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
            if want_boundary != self._boundary_shown:
                (tabs.show_tab if want_boundary else tabs.hide_tab)("boundary")
                self._boundary_shown = want_boundary
            if not st.is_classifier and self._preds_shown:
                tabs.hide_tab("predictions")
                self._preds_shown = False
            if st.drawable != self._draw_shown:
                (tabs.show_tab if st.drawable else tabs.hide_tab)("draw")
                self._draw_shown = st.drawable
                shape = st.dataset.get("input_shape") or []
                if st.drawable:
                    self._draw.set_model((shape[0], shape[1]),
                                         centre=str(st.dataset.get("name", "")).lower() in DIGIT_DATASETS)

    def watch_status(self) -> None:
        # which keys apply depends on the status (and on paused); lr and optimizer do not change that, and a
        # bindings refresh rebuilds the footer, so it is not done for them
        self._refresh_footers()

    def watch_paused(self) -> None:
        self._refresh_footers()

    def _refresh_footers(self) -> None:
        """Refresh the keys of every screen on the stack, not only the top one: a modal screen (the lr finder, a
        dialog) shows the main screen's footer beneath it, and that footer only listens to its own screen."""
        if not self._is_mounted:  # as Textual's own refresh_bindings
            return
        for screen in self.screen_stack:
            screen.refresh_bindings()

    def watch_log_scale(self, on: bool) -> None:
        if self._dash is not None:
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
        if self._step_screen is not None and self.screen is self._step_screen and "stepview" in d:
            if self._step_screen.show(st, self._count.pending, "step_detail" in self.pending):
                d.discard("stepview")
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
        panels: tuple[tuple[str, Callable[[], object]], ...] = ()
        if tab == "inspector":
            insp = self._insp
            panels = (("layers", lambda: insp.update_table(st)), ("weights", lambda: insp.update_detail(st)))
        elif tab == "predictions":
            preds = self._preds
            panels = (("samples", lambda: preds.update_samples(st.samples)),
                      ("confusion", lambda: preds.update_confusion(st.confusion)),
                      ("embedding", lambda: preds.update_embedding(st.embedding, not self.no_color)))
        for panel, draw in panels:  # one panel a tick, so that each one's cost is its own
            if panel in d and self._draw_panel(panel, draw, now):
                d.discard(panel)
                break
        if tab == "draw":
            names = [str(n) for n in st.dataset.get("class_names") or []]
            if "probe" in d and self._draw_panel(
                    "probe", lambda: self._draw.show_answer(st.probe, names, *self._probe_source(st.probe)), now):
                d.discard("probe")
            elif "probe_layers" in d and self._draw_panel("probe_layers",
                                                          lambda: self._draw.show_layers(st.probe, names), now):
                d.discard("probe_layers")
        if tab == "boundary" and "boundary" in d:
            names = [str(n) for n in st.dataset.get("class_names") or []]
            if self._draw_panel("boundary", lambda: self._plane.show(st.boundary, names,
                                                                     len(names) if st.is_classifier else 1), now):
                d.discard("boundary")
        if tab == "boundary" and self._session_live() and not st.paused and not st.compiling \
                and st.boundary is not self._plane_asked_for and now - self._plane_asked >= self._plane_every \
                and "boundary" not in d and now >= self._panel_due.get("boundary", 0.0):
            # the boundary and the neuron maps form while one watches: fresh ones while this tab is shown, each
            # asked once the last answer came and was drawn (a slow or remote trainer never gets a queue of
            # requests, and no maps are computed that the app has no time to draw)
            self._ask_snapshot()

    def _draw_panel(self, panel: str, draw: Callable[[], object], now: float) -> bool:
        """Draw ``panel`` unless it was drawn too recently for its cost; True when drawn.

        Its cost is this thread's CPU time from here until Textual has painted the screen after it (building the
        panel's text is only part of it: a layer table of 12 columns or a tile of weight pictures takes as long again
        to paint; time spent waiting for the GIL while training holds it is not counted). The
        next drawing waits cost / PANEL_SHARE (between PANEL_MIN and PANEL_MAX seconds): figures arriving 3-4 times
        a second, all drawn, took 30% of a core from training with the inspector or predictions tab open. Paused or
        finished, there is no training to slow down: the latest figures are drawn at once.
        """
        st = self.state
        if now < self._panel_due.get(panel, 0.0) and not (st.paused or st.done):  # (no training to slow down)
            return False
        t0, c0 = time.perf_counter(), time.thread_time()
        self._panel_due[panel] = t0 + PANEL_MIN  # until the cost is known
        draw()

        def painted() -> None:
            cost = time.thread_time() - c0  # this thread's CPU: waits for the GIL held by training are not cost
            self.panel_costs.setdefault(panel, deque(maxlen=100)).append(cost)
            share = PANEL_SHARES.get(panel, PANEL_SHARE)
            self._panel_due[panel] = t0 + min(PANEL_MAX, max(PANEL_MIN, cost / share))

        self.call_after_refresh(painted)
        return True

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
        t = topbar_text(st, shown)
        if t.plain != self._topbar_plain:
            self._topbar_plain = t.plain
            self._topbar.update(t, layout=False)

    @on(TabbedContent.TabActivated)
    def _tab_changed(self, event: TabbedContent.TabActivated) -> None:
        st = self.state
        tab = event.pane.id if event.pane else None
        self._panel_due.clear()  # a tab just opened shows the latest figures at once
        if tab == "inspector":
            st.dirty.update(("layers", "weights"))
        elif tab == "predictions":
            st.dirty.update(("samples", "confusion", "embedding"))
        elif tab == "boundary":
            st.dirty.add("boundary")
        elif tab == "dashboard":
            st.dirty.add("charts")
            self._last_chart = 0.0
        elif tab == "draw":
            st.dirty.update(("probe", "probe_layers"))
            self.call_after_refresh(self.query_one(DrawCanvas).focus)  # (after a click on the tab has focused it)
        self._want_embedding()
        if self._draw is not None and self._draw.image is not None and self._session_live() \
                and (tab == "draw") != self._probe_held:
            # the trainer answers the drawing while its tab is shown, and forgets it while another tab is
            self._send_probe(self._draw.image.tolist() if tab == "draw" else None)
        if self._compare is not None:
            # from the tab shown now, not the event's: a late event of an earlier switch must not wake the view
            self._compare.active = self.active_tab == "compare"
            if self._compare.active:
                self._show_compare()
            elif self.focused is not None and self._compare in self.focused.ancestors_with_self:
                self.screen.set_focus(None)  # focus left in the hidden tab would bring it back
        # a panel that shows pictures was opened: ask for fresh ones (at most every 3 s)
        if tab in ("inspector", "predictions", "boundary") and self._session_live() and not st.compiling:
            if time.perf_counter() - self._snapshot_asked > 3.0:
                self._snapshot_asked = time.perf_counter()
                self._ask_snapshot()
        self.call_after_refresh(self._redraw)

    # --- the Draw tab ----------------------------------------------------------------------------------------------

    @on(DrawPad.Probe)
    def _drawn(self, message: DrawPad.Probe) -> None:
        """The drawing changed: a live trainer answers it with its current weights, an ended run with its saved
        ones."""
        self._send_probe(message.image)

    def _send_probe(self, image: list[list[float]] | None) -> None:
        """Send the drawing to a live trainer, or have the saved weights answer it once the run has ended."""
        if self._session_live():
            self.session.send(make_command("probe", image=image))
            self._probe_held = image is not None
        elif self.state.done or self.session is None or not self.session.running:
            self._probe_saved(image, self.state.run_dir, self._gen)

    def _want_embedding(self) -> None:
        """Have the layers' views while their panel is seen (the Predictions tab on a terminal tall and wide enough
        for it): from the live trainer, which computes them only then, or once from an ended run's saved weights."""
        st = self.state
        seen = self.active_tab == "predictions" and st.is_classifier and \
            not (self.has_class("-short") or self.has_class("-narrow"))
        if self._session_live() and seen != self._embedding_held:
            self._watch_embedding(seen)
        elif seen and st.embedding is None and st.done and st.run_dir and not self._embedding_saved_asked:
            self._embedding_saved_asked = True
            self._embedding_saved(st.run_dir, self._gen)  # an ended run: its saved weights' views

    def _watch_embedding(self, watch: bool) -> None:
        """Ask the live trainer to send (or stop sending) each layer's view of the validation samples."""
        image = self._draw.image if watch and self._draw is not None and self.state.drawable else None
        extra = {} if image is None else {"image": image.tolist()}  # the Draw tab's digit, placed among them
        self.session.send(make_command("embedding", watch=watch, **extra))
        self._embedding_held = watch

    def exit(self, *args: Any, **kwargs: Any) -> None:
        """Close the app; a trainer that goes on (a detached run) forgets this viewer's drawing and stops computing
        the layers' views first, so it does not work for a picture nobody looks at."""
        for held, command in ((self._probe_held, make_command("probe", image=None)),
                              (self._embedding_held, make_command("embedding", watch=False))):
            if held and self._session_live():
                try:
                    self.session.send(command)
                except Exception:  # noqa: BLE001 - a lost connection: the trainer keeps computing, nothing worse
                    pass
        super().exit(*args, **kwargs)

    def action_embed_prev(self) -> None:
        """The embedding panel: the previous layer's view."""
        self._preds.query_one(EmbeddingView).step_view(-1)

    def action_embed_next(self) -> None:
        """The embedding panel: the next layer's view."""
        self._preds.query_one(EmbeddingView).step_view(1)

    @work(thread=True, exclusive=True, group="embedding", exit_on_error=False)
    def _embedding_saved(self, run_dir: str, gen: int) -> None:
        """The layers' views of an ended run, from its saved weights (off the UI thread: it loads the data)."""
        from tuinet.errors import TuinetError
        from tuinet.training.embedding import checkpoint_embedding

        try:
            event = checkpoint_embedding(run_dir)
        except (TuinetError, OSError) as e:
            event = {"event": "log", "level": "warning", "message": f"layer by layer: {e}"}
        self._queue.append((gen, event))
        self.post_message(EventsArrived())

    @work(thread=True, exclusive=True, group="probe", exit_on_error=False)
    def _probe_saved(self, image: list[list[float]] | None, run_dir: str | None, gen: int) -> None:
        """Answer a drawing with the ended run's saved weights (built once, off the UI thread)."""
        from tuinet.errors import TuinetError
        from tuinet.training.probe import CheckpointProbe

        event: dict[str, Any]
        try:
            if not run_dir:
                raise TuinetError("this run kept no checkpoint to answer with")
            probe = self._saved_probe
            if probe is None or probe.run_dir != run_dir:
                probe = self._saved_probe = CheckpointProbe(run_dir)
            answer = probe.answer(image) if image is not None else {"probs": None, "pred": None}
            event = {"event": "probe", "step": probe.step, "source": "checkpoint", **answer}
        except (TuinetError, OSError) as e:
            event = {"event": "log", "level": "error", "message": f"draw: {e}"}
        self._queue.append((gen, event))
        self.post_message(EventsArrived())

    def _probe_source(self, event: dict[str, Any] | None) -> tuple[str, str]:
        """Whose weights answered (the live ones, the final ones, the saved checkpoint's), and what that means."""
        if (event or {}).get("source") == "checkpoint":
            return "the run's saved weights (latest.npz)", ""
        if self.state.done:
            return "the run's final weights", ""
        return "live weights", "(it moves as the network learns)"

    def _ask_snapshot(self) -> None:
        """Ask the trainer for fresh pictures (weights, samples, the boundary and its neuron maps)."""
        answer = self.state.boundary
        if answer is not None and answer is not self._plane_asked_for and self._plane_asked_wall:
            # the trainer stamped its answer after computing it: from asking to that is what a snapshot costs it
            took = float(answer.get("time") or 0) - self._plane_asked_wall
            if 0 < took < 60:
                self._plane_every = min(5.0, max(PLANE_EVERY, took / PLANE_SHARE))
        self._plane_asked = time.perf_counter()
        self._plane_asked_wall = time.time()
        self._plane_asked_for = answer
        self.session.send(make_command("snapshot"))

    # --- bindings ---------------------------------------------------------------------------------------------------

    def applies(self, when: When) -> bool:
        """Whether actions that apply ``when`` apply now."""
        st = self.state
        match when:
            case When.LIVE:
                return self._session_live()
            case When.RESTART:
                return self.session_factory is not None and self.config is not None and self._lifecycle is None
            case When.TWO_D:
                return st.is_2d
            case When.CLASSIFIER:
                return st.is_classifier
            case When.DRAWABLE:
                return st.drawable
            case When.TRAINER_RUNNING:
                return self.session is not None and self.session.running and not st.done
            case When.DETACHED:
                return self.detachable and self.applies(When.TRAINER_RUNNING)
        return True

    def why_not(self, when: When) -> str:
        """Why actions that apply ``when`` do not apply now (the toast of a greyed key)."""
        return actions.why_not(when, self.state, detachable=self.detachable, under_way=self._lifecycle)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Grey out the keys that do not apply now (the actions table says when each applies); of the two actions on
        the space key, show the one that fits (pause while running, resume while paused). Once the run is over,
        pause, resume and detach leave the footer: nothing can bring them back."""
        entry = self._by_call.get((action, tuple(parameters)))
        if entry is None:  # Textual's own
            return True
        applies = self.applies(entry.when)
        if not applies and self.state.done and (entry.paused is not None or entry.when is When.DETACHED):
            return False
        if entry.paused is None:
            return True if applies else None
        if not applies:
            return False if entry.paused else None
        return entry.paused == self.paused

    def on_key(self, event: events.Key) -> None:
        """A key of the table that cannot apply now says why in a toast (the footer shows it greyed or not at
        all); Textual has already run the key's action when it applied."""
        if len(self.screen_stack) > 1:  # a dialog or the help screen has the keys
            return
        active = self.screen.active_bindings.get(event.key)
        if active is not None and (active.node is not self or active.enabled):
            return
        for entry in self.ACTIONS:
            if event.key in entry.all_keys and not self.check_action(entry.name, entry.params):
                if entry.paused is not None and self.applies(entry.when):
                    continue  # the other action on the key applies
                self.notify(f"{entry.label}: {self.why_not(entry.when)}", title="not now", timeout=4)
                return


    def action_pause(self) -> None:
        """Pause before the next step."""
        self._send("pause", "pausing")

    def action_resume(self) -> None:
        """Resume training."""
        self._send("resume", "resuming")

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
        self.push_screen(LrDialog(self.state.lr, live=lambda: self.state.lr), done)

    def action_lr_find(self) -> None:
        """Ask the trainer for a range test and open the finder; enter there sets the chosen lr, and a run the
        trainer paused for the test is resumed once the finder closes."""
        screen = LrFindScreen(self.state.lr)

        def done(choice: LrChoice | None) -> None:
            self._lr_find = None
            if choice is not None and choice.lr is not None:
                self._send("set_lr", f"lr → {fmt_num(choice.lr)}", lr=choice.lr)
            if screen.result is None and screen.error is None:
                self._lr_find_orphan = True  # closed while the test runs: its end decides
            elif choice is not None and choice.resume:
                self._send("resume", "resuming")
        self._lr_find = screen
        self._lr_find_orphan = False
        self._send("lr_find", "range test")
        self.push_screen(screen, done)

    def _on_lr_find(self, event: dict[str, Any]) -> None:
        """An ``lr_find`` event: to the finder while it is open; after a finder closed early, resume the run the
        trainer paused for the test once the test ends."""
        if self._lr_find is not None:
            self._lr_find.update(event)
        elif self._lr_find_orphan and event.get("phase") in ("done", "failed"):
            self._lr_find_orphan = False
            if event.get("paused_for_test") and self._session_live():
                self._send("resume", "resuming")

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
        self.push_screen(OptimizerDialog(current, st.lr, live=lambda: self.state.lr), done)

    def action_regularize(self) -> None:
        """Open the regularization dialog: L1, L2 and dropout, as the run has them now."""
        def done(changed: dict[str, float] | None) -> None:
            if changed:
                what = ", ".join(f"{key} → {fmt_num(v) if v else '0'}" for key, v in changed.items())
                self._send("set_regularization", what, **changed)
        st = self.state
        # the weight decay is the optimizer's (its hyperparameters, as the status panel shows them)
        self.push_screen(RegularizationDialog({**(st.config or {}),
                                               "weight_decay": (st.hyperparams or {}).get("weight_decay")}), done)

    def action_epochs(self) -> None:
        """Open the dialog to plan more (or fewer) epochs."""
        def done(epochs: int | None) -> None:
            if epochs is not None:
                self._send("set_epochs", f"epochs → {epochs:,}", epochs=epochs)
        st = self.state
        self.push_screen(EpochsDialog(st.epochs, int(st.epoch), (st.config or {}).get("schedule")), done)

    def action_batch_size(self) -> None:
        """Open the dialog to type a new batch size (from the next epoch)."""
        def done(answer: tuple[int, bool] | None) -> None:
            if answer is not None:
                size, scale = answer
                self._send("set_batch_size", f"batch size → {size:,}{', lr scaled' if scale else ''}",
                           batch_size=size, **({"scale_lr": True} if scale else {}))
        st = self.state
        train = ((st.dataset or {}).get("sizes") or {}).get("train")
        self.push_screen(BatchSizeDialog(st.batch_size or 1, train if isinstance(train, int) else None,
                                         st.batch_pending, st.lr, live=lambda: self.state.lr), done)

    def action_save(self) -> None:
        """Save a checkpoint now."""
        self._send("save", "saving checkpoint")

    def action_evaluate(self) -> None:
        """Evaluate on the test set now."""
        self._send("evaluate", "evaluating on test")

    def action_step(self) -> None:
        """Take one step (or the count typed before ``n``) and show the last one stage by stage in the Step view;
        a running trainer is paused first (the trainer takes steps one at a time only while paused). On the Draw tab
        the tab itself shows the step: the drawing's answer after it (no Step view over it)."""
        count = self._count.take()
        if not self.state.paused and "paused" not in self.pending:
            self._send("pause", "pausing")
        self._send("step", f"{count:,} step{'s' if count > 1 else ''}", **({"count": count} if count > 1 else {}))
        if self.screen is self.screen_stack[0] and self.active_tab == "draw":
            return
        if self.screen is not self._step_screen:
            self._step_screen = StepScreen()
            self.push_screen(self._step_screen, lambda _: setattr(self, "_step_screen", None))
        else:
            self._step_screen.show(self.state, None, True)

    async def on_event(self, event: events.Event) -> None:
        """Note digits typed before a key that takes a count (``10n``); every key then goes on as usual."""
        if isinstance(event, events.Key) and not event.is_forwarded:
            self._count.feed(event.character, event.key)
            if self._step_screen is not None and self.screen is self._step_screen:
                self.state.dirty.add("stepview")
        await super().on_event(event)

    def action_toggle_log(self) -> None:
        """Loss chart: log / linear scale."""
        self.log_scale = not self.log_scale

    def action_help(self) -> None:
        """Show the keys."""
        self.push_screen(HelpScreen(actions.help_lines(self.HELP_ROWS, actions.by_id(self.HELP_ACTIONS))))

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
        if not self._session_live() or not self.session.running:
            self.exit(self._exit_code())
            return

        def done(yes: bool | None) -> None:
            if yes:
                self._quit()
        self.push_screen(ConfirmDialog("Quit", "Stop training, save a checkpoint and quit?", yes="Quit"), done)

    def action_detach(self) -> None:
        """Detach: only a viewer of a detached run can (:class:`~tuinet.app.remote.RemoteApp`); here, say why not."""
        self.notify(self.why_not(When.DETACHED), title="not now", timeout=4)

    def deliver_signal(self, signum: int) -> None:
        """Called by a signal handler (in the main thread, at any point of the event loop): hand the signal to the
        loop, which stops the run and exits. Safe from a handler: it only sets fields and wakes the loop.

        A hang-up comes with a SIGCONT when the app leads its terminal's session (a tmux pane's command, an SSH
        session's): Textual's driver would answer it by restarting application mode on the dead terminal, whose
        new output thread dies on the first write, and the app would then hang on exit. So after SIGHUP the
        driver no longer restarts (Python runs the SIGHUP handler before the SIGCONT one)."""
        self.signal_received = signum
        if signum == signal.SIGHUP and self._driver is not None:
            self._driver._auto_restart = False
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_signal, signum)

    def _on_signal(self, signum: int) -> None:
        """SIGHUP (the terminal is gone), SIGTERM or SIGINT: ask the trainer to stop (it finishes the step, saves a
        checkpoint and marks the run stopped) and leave at once, restoring the terminal if there is one; the
        caller waits for the trainer. The exit code is 128 + the signal, as headless."""
        if self.session is not None and self.session.running and self._lifecycle != "stopping":
            self.session.send(make_command("stop", reason=signal.Signals(signum).name))
            self._lifecycle = "stopping"
        self.exit(128 + signum)

    def _exit_code(self) -> int:
        if self.signal_received is not None:
            return 128 + self.signal_received
        return 1 if self.state.status == "failed" else 0

    def _alert(self, event: dict[str, Any]) -> None:
        """The run finished, diverged, stopped early, failed or tripped a watch rule: ring the bell and send a
        desktop notification through the terminal's escape codes (training/alerts.py), and say it in a toast."""
        alert = make_alert(event, self.state.name)
        if alert is None or not self._alert_throttle.allow(alert["alert"]):
            return
        self.alerts_sent.append(alert)
        if not self.is_headless and self._driver is not None:  # as App.bell does: the terminal is the driver's
            self._driver.write(terminal_codes(alert))
        self.notify(alert["message"], title=alert["title"], timeout=10,
                    severity="information" if alert["alert"] == "finished" else "warning")

    def _show_diverged(self, event: dict[str, Any]) -> None:
        if self._diverged_open:
            return
        self._diverged_open = True
        # the trainer says how far to cut (tenfold after a repeated divergence); older trainers did not
        factor = event.get("factor") or (self.config.divergence_factor if self.config is not None else 0.5)

        def done(choice: str | None) -> None:
            self._diverged_open = False
            if choice == "rollback":
                self._send("rollback", "rolling back", factor=factor)
            elif choice == "resume":
                self._send("resume", "resuming")
        self.push_screen(DivergedDialog(event, factor), done)

    # --- the compare tab ---------------------------------------------------------------------------------------------

    def runs_dir(self) -> Path | None:
        """The runs folder this run is in (None: the default one)."""
        if self.state.run_dir:
            return Path(self.state.run_dir).parent
        if self.config is not None and getattr(self.config, "runs_dir", None):
            return Path(self.config.runs_dir)
        return None

    def _show_compare(self) -> None:
        """Load the runs folder the first time the tab is shown (and again after a restart), then focus the table."""
        view = self._compare
        if self._compare_for != (self.state.name or ""):
            self._compare_for = self.state.name or ""
            view.loading = True
            self._load_compare(self.runs_dir(), self.state.name, self.state.dataset.get("name"))
        else:
            view.poll()
        view.focus_main()

    @work(thread=True, exclusive=True, group="compare", exit_on_error=False)
    def _load_compare(self, runs_dir: Path | None, this_run: str | None, dataset: str | None) -> None:
        """Read the runs folder in a thread (hundreds of runs take a moment) and hand the view its state."""
        from tuinet.training.compare import load_runs

        try:
            records = load_runs(runs_dir)
            error = None
        except Exception as e:  # noqa: BLE001 - an unreadable runs folder: say so, keep the app
            records, error = [], str(e)
        same = [r.name for r in records if r.name != this_run and (dataset is None or r.dataset == dataset)]
        charted = ([this_run] if any(r.name == this_run for r in records) else []) + same[:COMPARE_FIRST]
        state = CompareState(records, this_run=this_run, charted=charted[:MAX_CHARTED])
        self.call_from_thread(self._compare_loaded, state, error)

    def _compare_loaded(self, state: CompareState, error: str | None) -> None:
        view = self._compare
        view.loading = False
        view.set_state(state)
        if error:
            self.notify(f"cannot read the runs folder: {error}", severity="error", timeout=8)
        if self.active_tab == "compare":
            view.focus_main()

    @on(CompareView.OpenLive)
    def _open_live(self, event: CompareView.OpenLive) -> None:
        """Enter on a live run: this run → the dashboard; another → how to attach to it (not from here yet)."""

        if event.name == self.state.name:
            self.action_show_tab("dashboard")
            return
        from tuinet.app.compare import attach_hint

        self.notify(attach_hint(event.name), title="live run", timeout=10)

    # --- restart and quit --------------------------------------------------------------------------------------------

    def current_config(self) -> TrainConfig:
        """The run's config with the optimizer, its hyperparameters, lr, weight penalties, dropout rate and batch
        size as they are now (for restart; a batch size asked for the next epoch counts as set)."""
        st = self.state
        changes: dict[str, Any] = {k: None for k in HYPERPARAMS}
        for k in ("l1", "l2", "dropout"):  # the regularization dialog's, as the trainer confirmed them
            if isinstance((st.config or {}).get(k), (int, float)):
                changes[k] = float(st.config[k])
        if st.batch_pending or st.batch_size:
            changes["batch_size"] = int(st.batch_pending or st.batch_size)
        if isinstance((st.config or {}).get("epochs"), int):  # the plan as `E` left it
            changes["epochs"] = st.config["epochs"]
        for k, v in (st.hyperparams or {}).items():
            if k in HYPERPARAMS:
                changes[k] = tuple(v) if isinstance(v, list) else v
        if st.optimizer and st.optimizer != "-":
            changes["optimizer"] = st.optimizer
        if st.base_lr or st.lr:
            # the schedule's base, not the lr it has decayed to: a cosine run restarted at its end would start
            # from its last, near-zero lr
            changes["lr"] = st.base_lr or st.lr
        changes["name"] = None
        return dataclasses.replace(self.config, **changes)

    def _settings_text(self) -> str:
        st = self.state
        return f"{self.config.model if self.config else '?'} on {self.config.dataset if self.config else '?'}, " \
               f"{st.optimizer} lr {fmt_num(st.base_lr or st.lr)}{self._schedule_note()}, " \
               f"batch {st.batch_pending or st.batch_size}, " \
               f"{st.epochs} epochs"

    def _schedule_note(self) -> str:
        """`` (cosine schedule)`` after a restart's lr when a schedule moves it."""
        schedule = getattr(self.config, "schedule", None) if self.config else None
        return f" ({schedule} schedule)" if schedule and schedule != "constant" else ""

    async def _stop_session(self, session: Session | None) -> None:
        if session is None:
            return
        if session.running:
            reason = signal.Signals(self.signal_received).name if self.signal_received else "user"
            session.send(make_command("stop", reason=reason))
        await asyncio.to_thread(session.join, 120)
        self._tick()

    @work(exclusive=True, group="lifecycle")
    async def _restart(self) -> None:
        self._lifecycle = "restarting"
        self._tick()
        config = self.current_config()
        settings = self._settings_text()  # now: the state is reset below
        await self._stop_session(self.session)
        new = self.session_factory(config)
        self.config = config
        self.state.reset()
        self.state.add_log(f"restarted: {settings}")
        if self._insp is not None:
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
        if self._old_switch_interval is not None:
            sys.setswitchinterval(self._old_switch_interval)
        if self.session is not None and self._listener is not None:
            self.session.remove_listener(self._listener)

    # --- command palette -----------------------------------------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Every action of the table that has a palette title and applies now (on the compare tab, its keys too),
        then Textual's own."""
        for entry in self.ACTIONS:
            if entry.title is not None and self.check_action(entry.name, entry.params):
                run = functools.partial(getattr(self, f"action_{entry.name}"), *entry.params)
                yield SystemCommand(entry.title, entry.palette_help, run)
        view = self._compare
        if view is not None and self._tabs is not None and self.active_tab == "compare":
            for entry in actions.COMPARE_ACTIONS:
                if view.check_action(entry.name, entry.params):
                    run = functools.partial(getattr(view, f"action_{entry.name}"), *entry.params)
                    yield SystemCommand(entry.title, entry.palette_help, run)
        yield from super().get_system_commands(screen)


def print_summary(session: Session) -> None:
    """After the app has closed: the run's summary on the terminal (how it went, its folder, the next commands),
    so it stays in the scrollback once the app's screen is gone."""
    from tuinet.protocol import final_event
    from tuinet.training.summary import summary_lines

    final = final_event(session.last)
    if final is None:
        return
    try:
        print("\n".join(summary_lines(final)), flush=True)
    except OSError:  # the terminal is gone (SIGHUP): nobody to tell
        pass


def run_app(config: TrainConfig, trainer: Trainer | None = None) -> int:
    """Train ``config`` (or run ``trainer``, e.g. a resumed one) in the app; returns the exit code.

    When the app closes while training still runs (ctrl+q, a lost terminal), training is stopped and a checkpoint
    saved before returning.
    """
    from tuinet.training.session import Session as InProcessSession
    from tuinet.training.trainer import Trainer

    def factory(cfg: TrainConfig) -> Session:
        return InProcessSession(Trainer(cfg))

    session = InProcessSession(trainer if trainer is not None else Trainer(config))
    app = TuinetApp(session, config=config, session_factory=factory)
    code = None
    try:
        with handle_stop_signals(app.deliver_signal):
            code = app.run()
    finally:
        live = app.session or session
        if live.running:
            reason = signal.Signals(app.signal_received).name if app.signal_received else "app closed"
            live.send(make_command("stop", reason=reason))
            with handle_stop_signals(None):  # while waiting: a second Ctrl-C must not cut the checkpoint short
                live.join(120)
        print_summary(app.session or session)
    if app.signal_received is not None:
        return 128 + app.signal_received
    if isinstance(code, int):
        return code
    return 1 if app.state.status == "failed" else 0
