"""Every action of the app in one table: its keys, its footer label, what it does, the command it sends the trainer
and when it applies.

The app's ``BINDINGS``, its command palette and the ``?`` help screen are all built from this table, and
``check_action`` reads when an action applies from it, so a key is described once. :data:`HELP_ROWS` only says in
what order, and grouped how, the help screen lists the actions.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Iterable, Mapping

from textual.actions import parse
from textual.binding import Binding


class When(enum.Enum):
    """When an action applies. Outside that its key is greyed out in the footer and it leaves the palette."""

    ALWAYS = "always"
    LIVE = "a live trainer: attached, the run not over, no stop or restart under way"
    RESTART = "the app can start a new run (it has the run's config and a way to make a session), nothing under way"
    TWO_D = "a 2-D dataset"
    DRAWABLE = "a classifier of gray images (MNIST's kind)"
    CLASSIFIER = "a classifier, or a dataset not known yet"
    TRAINER_RUNNING = "a trainer still running (a detached one goes on when the viewer leaves)"
    DETACHED = "a viewer of a detached run whose trainer still runs"
    ROW = "a run highlighted in the Compare screen's runs table"
    TRIAL = "a trial highlighted in the Sweep screen's trials table"
    TRIAL_RUNNING = "a running trial highlighted in the Sweep screen's trials table"


@dataclass(frozen=True)
class Action:
    """One thing the user can do, and all the footer, the palette and the help screen show of it.

    Attributes:
        id: the Textual action string (``pause``, ``show_tab('inspector')``); the app's ``action_<name>`` runs it.
        keys: the keys bound to it, as comma-separated Textual key names.
        label: the footer's short label.
        description: what it does, in one line: the help screen, the palette and the footer tooltip say this.
        title: its name in the command palette (None: not in the palette).
        key_display: how its key is written (None: the first key's name).
        show: whether the footer shows it.
        command: the protocol command it sends the trainer (None: it sends none itself).
        when: when it applies.
        paused: for the two actions that share the space key: True applies only while paused, False only while
            running. While the run is not live the False one is shown greyed out and the True one hidden, so the
            footer always holds one of the two.
        hidden_keys: more keys bound to it that the footer does not show; they take priority over Textual's own
            bindings of the same keys (ctrl+q, ctrl+c).
    """

    id: str
    keys: str
    label: str
    description: str
    title: str | None = None
    key_display: str | None = None
    show: bool = True
    command: str | None = None
    when: When = When.ALWAYS
    paused: bool | None = None
    hidden_keys: str | None = None

    @property
    def name(self) -> str:
        """The action's name, without its arguments (``show_tab``)."""
        return parse(self.id)[1]

    @property
    def params(self) -> tuple[object, ...]:
        """The action's arguments (``("inspector",)``)."""
        return parse(self.id)[2]

    @property
    def key(self) -> str:
        """Its key as the help screen and the palette write it."""
        return self.key_display or self.keys.split(",")[0]

    @property
    def all_keys(self) -> tuple[str, ...]:
        """Every key bound to it, hidden ones too, as Textual names them."""
        return tuple(k.strip() for k in f"{self.keys},{self.hidden_keys or ''}".split(",") if k.strip())

    @property
    def palette_help(self) -> str:
        """The palette's line under the title: the key, then what it does."""
        return f"{self.key}: {self.description}"

    def bindings(self) -> list[Binding]:
        """The Textual bindings for this action: its keys, then its hidden keys."""
        tooltip = self.description[:1].upper() + self.description[1:]
        out = [Binding(self.keys, self.id, self.label, show=self.show, key_display=self.key_display,
                       tooltip=tooltip)]
        if self.hidden_keys:
            out.append(Binding(self.hidden_keys, self.id, self.label, show=False, priority=True, tooltip=tooltip))
        return out


@dataclass(frozen=True)
class HelpRow:
    """One line of the help screen: one action, or several described together (space, ``+ -``, the tab keys).

    Attributes:
        ids: the actions it stands for (empty for a key of Textual's own).
        text: what the line says (None: the one action's description).
        keys: the key column (None: the actions' keys, each once, separated by a space).
    """

    ids: tuple[str, ...]
    text: str | None = None
    keys: str | None = None


#: the app's actions, in the order of the footer
ACTIONS: tuple[Action, ...] = (
    Action("pause", "space", "Pause", "pause training before the next step", "Pause training", command="pause",
           when=When.LIVE, paused=False),
    Action("resume", "space", "Resume", "resume training", "Resume training", command="resume", when=When.LIVE,
           paused=True),
    Action("lr_up", "plus,equals_sign", "lr×2", "double the learning rate (next step)", "Learning rate ×2",
           key_display="+", command="scale_lr", when=When.LIVE),
    Action("lr_down", "minus,underscore", "lr÷2", "halve the learning rate (next step)", "Learning rate ÷2",
           key_display="-", command="scale_lr", when=When.LIVE),
    Action("set_lr", "L", "lr…", "type an exact learning rate", "Set learning rate…", key_display="L",
           command="set_lr", when=When.LIVE),
    Action("lr_find", "f", "LR find", "lr finder: a range test on a copy; pick an lr on its curve",
           "Find a learning rate…", show=False, command="lr_find", when=When.LIVE),
    Action("optimizer", "o", "Optim", "choose the optimizer (weights kept, fresh state)", "Choose optimizer…",
           command="set_optimizer", when=When.LIVE),
    Action("regularize", "g", "Reg…", "set L1 / L2, weight decay and dropout (weights, optimizer state kept)",
           "Set regularization (L1, L2, weight decay, dropout)…", show=False, command="set_regularization",
           when=When.LIVE),
    Action("epochs", "E", "Epochs…", "plan more (or fewer) epochs: train on without a stop and a resume (a schedule "
           "is stretched over them)", "Set the planned epochs…", key_display="E", show=False, command="set_epochs",
           when=When.LIVE),
    Action("batch_size", "B", "Batch…", "set the batch size (from the next epoch; weights and optimizer state "
           "kept)", "Set batch size…", key_display="B", show=False, command="set_batch_size", when=When.LIVE),
    Action("save", "s", "Save", "save a checkpoint now", "Save checkpoint", command="save", when=When.LIVE),
    Action("evaluate", "e", "Eval", "evaluate on the test set now", "Evaluate on test set", command="evaluate",
           when=When.LIVE),
    Action("step", "n", "Step", "take one training step and show it stage by stage (pauses first; a count typed "
           "before it, 10n, takes that many)", "Step: one training step, stage by stage", command="step",
           when=When.LIVE, show=False),
    Action("restart", "r", "Restart", "restart with the current settings (asks first)", "Restart run…",
           when=When.RESTART),
    Action("toggle_log", "l", "Log y", "loss chart: log / linear scale", "Loss chart: log / linear", show=False),
    Action("quit_app", "q", "Quit", "quit: stops training and saves a checkpoint (asks first)",
           "Quit (save checkpoint)", hidden_keys="ctrl+q,ctrl+c"),
    Action("detach", "d", "Detach", "close this viewer; training goes on (in a viewer of a detached run)",
           "Detach (leave training running)", show=False, when=When.DETACHED),
    Action("help", "question_mark", "Help", "this help", "Keys and tabs", key_display="?"),
    Action("show_tab('dashboard')", "1", "Dashboard", "switch to the dashboard tab", "Show dashboard", show=False),
    Action("show_tab('inspector')", "2", "Inspector", "switch to the inspector tab", "Show inspector", show=False),
    Action("show_tab('predictions')", "3", "Predictions", "switch to the predictions tab", "Show predictions",
           show=False, when=When.CLASSIFIER),
    Action("show_tab('boundary')", "4", "Boundary", "switch to the boundary tab", "Show boundary", show=False,
           when=When.TWO_D),
    Action("show_tab('compare')", "5,c", "Compare", "switch to the compare tab: this run against earlier runs",
           "Show compare", key_display="5", show=False),
    Action("show_tab('draw')", "6", "Draw", "switch to the draw tab: draw a digit, watch the network read it as it "
           "learns", "Show draw", show=False, when=When.DRAWABLE),
    Action("embed_prev", "left_square_bracket", "Layer[", "layer by layer (predictions tab): the previous layer's "
           "view of the validation samples", "Layer by layer: previous layer", key_display="[", show=False,
           when=When.CLASSIFIER),
    Action("embed_next", "right_square_bracket", "Layer]", "layer by layer (predictions tab): the next layer's "
           "view of the validation samples", "Layer by layer: next layer", key_display="]", show=False,
           when=When.CLASSIFIER),
)

#: the Compare screen's keys (the screen of `tuinet compare` and the app's compare tab): bound on the Compare view,
#: so they apply while it has the focus; ``l`` means what it means on the dashboard (log scale of the loss), and
#: space there toggles the highlighted run instead of pausing (pause stays in the palette and on the other tabs)
COMPARE_ACTIONS: tuple[Action, ...] = (
    Action("toggle_run", "space", "Chart±", "put the highlighted run in / out of the chart", "Compare: run in / out of "
           "the chart", when=When.ROW),
    Action("open_run", "enter", "Open", "open the highlighted run: a finished one's summary (curves, confusion), "
           "or how to attach to a live one", "Compare: open run", when=When.ROW),
    Action("branch_run", "b", "Branch", "branch the highlighted run: a new detached run from its checkpoint, with "
           "the options you change", "Compare: branch run…", show=False, when=When.ROW),
    Action("cycle_x", "x", "X axis", "x axis: epoch → step → samples seen → wall time", "Compare: next x axis"),
    Action("cycle_split", "v", "Curves", "curves: validation → train → both", "Compare: validation / train / both"),
    Action("toggle_smooth", "m", "Smooth", "smooth the curves on / off", "Compare: smoothing on / off"),
    Action("compare_log", "l", "Log y", "loss chart: log / linear scale", "Compare: loss log / linear"),
    Action("next_sort", "S", "Sort", "sort by the next column (or click a heading; again reverses)",
           "Compare: sort by the next column", key_display="S"),
    Action("reverse_sort", "R", "Reverse", "reverse the order of the table", "Compare: reverse the order",
           key_display="R"),
    Action("filter_runs", "slash", "Filter", "filter the runs (e.g. dataset=mnist, lr<0.01, model~cnn; empty: all)",
           "Compare: filter runs…", key_display="/"),
    Action("toggle_all", "a", "All±", "every shown run in / out of the chart (at most 8)", "Compare: all runs in / "
           "out of the chart", show=False),
    Action("toggle_diff", "D", "Diff", "the settings diff of the charted runs: show / hide", "Compare: settings "
           "diff", key_display="D"),
    Action("draw_runs", "w", "Draw", "draw a digit: how each charted run reads it, with its saved weights",
           "Compare: draw a digit for the charted runs", show=False),
)

#: the neuron maps' keys on the Boundary tab: bound on the neuron panel, so they apply while it has the focus (a
#: click on a picture focuses it)
NEURON_ACTIONS: tuple[Action, ...] = (
    Action("neuron_prev", "up", "Unit↑", "neuron maps: select the unit above (shown large)", key_display="↑",
           show=False),
    Action("neuron_next", "down", "Unit↓", "neuron maps: select the unit below (shown large)", key_display="↓",
           show=False),
    Action("neuron_left", "left", "Layer←", "neuron maps: select the layer to the left", key_display="←",
           show=False),
    Action("neuron_right", "right", "Layer→", "neuron maps: select the layer to the right", key_display="→",
           show=False),
    Action("neuron_clear", "escape", "Boundary", "neuron maps: back to the decision boundary", key_display="esc",
           show=False),
)

#: the Draw tab's keys: bound on its canvas, so they apply while it has the focus (the tab gives it the focus)
DRAW_ACTIONS: tuple[Action, ...] = (
    Action("pen_left", "left", "←", "move the pen left", key_display="←", show=False),
    Action("pen_right", "right", "→", "move the pen right", key_display="→", show=False),
    Action("pen_up", "up", "↑", "move the pen up", key_display="↑", show=False),
    Action("pen_down", "down", "↓", "move the pen down", key_display="↓", show=False),
    Action("ink_left", "shift+left", "Ink←", "draw to the left", key_display="shift+←", show=False),
    Action("ink_right", "shift+right", "Ink→", "draw to the right", key_display="shift+→", show=False),
    Action("ink_up", "shift+up", "Ink↑", "draw upwards", key_display="shift+↑", show=False),
    Action("ink_down", "shift+down", "Ink↓", "draw downwards", key_display="shift+↓", show=False),
    Action("ink_dot", "enter", "Dot", "ink (or erase) a dot at the pen", "Draw: a dot at the pen", show=False),
    Action("toggle_eraser", "p", "Pen/eraser", "the left button and the keys: pen ↔ eraser (the right button "
           "always erases)", "Draw: pen / eraser", show=False),
    Action("clear_canvas", "x,backspace", "Clear", "clear the canvas", "Draw: clear the canvas", key_display="x"),
    Action("test_sample", "t", "Sample", "put the next test sample on the canvas, to change it and watch the "
           "answer move", "Draw: a test sample on the canvas"),
    Action("toggle_centre", "m", "Centre", "centre and size the drawing as MNIST's digits were (on) or give it as "
           "drawn (off)", "Draw: MNIST centring on / off"),
)

#: the Step view's own keys (``n`` is the app's, so it steps again from the view too)
STEP_ACTIONS: tuple[Action, ...] = (
    Action("train", "space", "Train", "back to normal training (resume) and close the step view",
           "Step view: back to training", command="resume", when=When.LIVE),
    Action("close_step_view", "escape", "Back", "close the step view; training stays paused", "Step view: close",
           key_display="esc"),
)

#: what the standalone Compare app (`tuinet compare`) adds to the Compare keys
COMPARE_APP_ACTIONS: tuple[Action, ...] = (
    Action("help", "question_mark", "Help", "this help", "Keys", key_display="?"),
    Action("quit", "q", "Quit", "quit (the runs are only read; live ones go on)", "Quit", hidden_keys="ctrl+q"),
)

#: the Sweep screen's keys (`tuinet sweep`, `tuinet attach SWEEP`): bound on the Sweep view, so they apply while it
#: has the focus; sorting and the log scale mean what they mean on the Compare screen
SWEEP_ACTIONS: tuple[Action, ...] = (
    Action("open_trial", "enter", "Open", "open the highlighted trial: the app on a running one (as tuinet attach), "
           "a finished one's summary", "Sweep: open trial", when=When.TRIAL),
    Action("stop_trial", "s", "Stop", "stop (prune) the highlighted running trial; its checkpoint is saved (asks "
           "first)", "Sweep: stop / prune trial…", when=When.TRIAL_RUNNING),
    Action("promote_trial", "p", "Promote", "promote the highlighted running trial: it goes on past its epoch "
           "budget", "Sweep: promote trial", when=When.TRIAL_RUNNING),
    Action("sort_trials", "S", "Sort", "sort by the next column (or click a heading; again reverses)",
           "Sweep: sort by the next column", key_display="S"),
    Action("reverse_trials", "R", "Reverse", "reverse the order of the table", "Sweep: reverse the order",
           key_display="R"),
    Action("toggle_params", "i", "Params", "the parameters panel (importances, objective against each parameter): "
           "show / hide", "Sweep: parameters panel"),
    Action("sweep_log", "l", "Log y", "loss chart: log / linear scale", "Sweep: loss log / linear", show=False),
    Action("draw_trials", "w", "Draw", "draw a digit: how each charted trial reads it, with its saved weights",
           "Sweep: draw a digit for the charted trials", show=False),
)

#: what the Sweep app adds to the Sweep keys
SWEEP_APP_ACTIONS: tuple[Action, ...] = (
    Action("help", "question_mark", "Help", "this help", "Keys", key_display="?"),
    Action("quit", "q", "Quit", "quit this screen (a sweep started elsewhere goes on; one started here: asks "
           "whether to stop it)", "Quit", hidden_keys="ctrl+q"),
)

#: the Sweep app's help, top to bottom
SWEEP_APP_HELP_ROWS: tuple[HelpRow, ...] = (
    HelpRow(("open_trial",)),
    HelpRow(("stop_trial",)),
    HelpRow(("promote_trial",)),
    HelpRow(("sort_trials", "reverse_trials"), "sort by the next column / reverse (or click a heading)"),
    HelpRow(("toggle_params",)),
    HelpRow(("sweep_log",)),
    HelpRow(("draw_trials",)),
    HelpRow((), "command palette (every action by name)", keys="ctrl+p"),
    HelpRow(("help",)),
    HelpRow(("quit",)),
)

#: what the viewer of a detached run shows differently: its detach key, in the footer
REMOTE_ACTIONS: tuple[Action, ...] = (
    Action("detach", "d", "Detach", "close this viewer; training goes on", "Detach (leave training running)",
           when=When.DETACHED),
)

#: the help screen's key list, top to bottom
HELP_ROWS: tuple[HelpRow, ...] = (
    HelpRow(("pause", "resume"), "pause / resume training"),
    HelpRow(("lr_up", "lr_down"), "learning rate x2 / ÷2 (next step)", keys="+  -"),
    HelpRow(("set_lr",)),
    HelpRow(("lr_find",)),
    HelpRow(("optimizer",)),
    HelpRow(("regularize",)),
    HelpRow(("batch_size",)),
    HelpRow(("epochs",)),
    HelpRow(("save",)),
    HelpRow(("evaluate",)),
    HelpRow(("step",)),
    HelpRow(("restart",)),
    HelpRow(("toggle_log",)),
    HelpRow(("embed_prev", "embed_next"), "layer by layer (predictions tab): the previous / next layer's view of the "
            "validation samples", keys="[  ]"),
    HelpRow(("show_tab('dashboard')", "show_tab('inspector')", "show_tab('predictions')", "show_tab('boundary')",
             "show_tab('compare')", "show_tab('draw')"), "dashboard, inspector, predictions, boundary, compare (or c), "
            "draw", keys="1 2 3 4 5 6"),
    HelpRow((), "focus the next panel (shift+tab: back), then ↑ ↓ PgUp PgDn scroll it; ← → on the tab bar "
                "switch tabs", keys="tab"),
    HelpRow((), "command palette (every action by name)", keys="ctrl+p"),
    HelpRow(("help",)),
    HelpRow(("detach",)),
    HelpRow(("quit_app",), keys="q ctrl+q ctrl+c"),
)

#: the Compare keys' help lines, top to bottom
COMPARE_HELP_ROWS: tuple[HelpRow, ...] = (
    HelpRow(("toggle_run",)),
    HelpRow(("toggle_all",)),
    HelpRow(("open_run",)),
    HelpRow(("branch_run",)),
    HelpRow(("cycle_x",)),
    HelpRow(("cycle_split",)),
    HelpRow(("toggle_smooth",)),
    HelpRow(("compare_log",)),
    HelpRow(("next_sort", "reverse_sort"), "sort by the next column / reverse (or click a heading)"),
    HelpRow(("filter_runs",)),
    HelpRow(("toggle_diff",)),
    HelpRow(("draw_runs",)),
)

#: the neuron maps' help lines (the Boundary tab of a 2-D dataset)
NEURON_HELP_ROWS: tuple[HelpRow, ...] = (
    HelpRow(("neuron_prev", "neuron_next", "neuron_left", "neuron_right"),
            "select a unit (or click its picture): it is drawn large"),
    HelpRow(("neuron_clear",), "back to the decision boundary"),
)

#: the Draw tab's help lines
DRAW_HELP_ROWS: tuple[HelpRow, ...] = (
    HelpRow((), "draw with the left button, erase with the right", keys="mouse"),
    HelpRow(("pen_left", "pen_right", "pen_up", "pen_down"), "move the pen", keys="← → ↑ ↓"),
    HelpRow(("ink_left", "ink_right", "ink_up", "ink_down"), "draw as the pen moves",
            keys="shift+← shift+→ shift+↑ shift+↓"),
    HelpRow(("ink_dot",)),
    HelpRow(("toggle_eraser",)),
    HelpRow(("clear_canvas",), keys="x backspace"),
    HelpRow(("test_sample",)),
    HelpRow(("toggle_centre",)),
)

#: the Step view's help lines
STEP_HELP_ROWS: tuple[HelpRow, ...] = (
    HelpRow(("train",)),
    HelpRow(("close_step_view",)),
)

#: the app's help: its own keys, then the step view's, the boundary tab's and the compare tab's
APP_HELP_ROWS: tuple[HelpRow, ...] = (*HELP_ROWS, HelpRow((), "", keys=""),
                                      HelpRow((), "in the step view (n):", keys=""), *STEP_HELP_ROWS,
                                      HelpRow((), "", keys=""),
                                      HelpRow((), "on the boundary tab's neuron maps:", keys=""), *NEURON_HELP_ROWS,
                                      HelpRow((), "", keys=""),
                                      HelpRow((), "on the draw tab:", keys=""), *DRAW_HELP_ROWS,
                                      HelpRow((), "", keys=""),
                                      HelpRow((), "on the compare tab:", keys=""), *COMPARE_HELP_ROWS)

#: the standalone Compare app's help
COMPARE_APP_HELP_ROWS: tuple[HelpRow, ...] = (
    *COMPARE_HELP_ROWS,
    HelpRow((), "command palette (every action by name)", keys="ctrl+p"),
    HelpRow(("help",)),
    HelpRow(("quit",)),
)



def why_not(when: When, state, *, detachable: bool, under_way: str | None) -> str:
    """Why actions that apply ``when`` do not apply now, in a sentence for a toast.

    Args:
        when: the condition that does not hold.
        state: the app's RunState (status, dataset).
        detachable: whether the app is a viewer of a detached run.
        under_way: "stopping" / "restarting" while the app waits for the trainer, else None.
    """
    if when is When.DETACHED and not detachable:
        return ("d detaches a viewer of a detached run (`tuinet train --detach`, then `tuinet attach`); this run "
                "trains inside this app: q stops it")
    if when in (When.LIVE, When.TRAINER_RUNNING, When.DETACHED, When.RESTART) and under_way:
        return f"wait: {under_way}…"
    match when:
        case When.RESTART:
            return ("restart works in the app that trains the run (`tuinet train`); in a viewer, stop the run "
                    "(q, then s) and `tuinet resume` or `tuinet train` it")
        case When.TWO_D:
            name = state.dataset.get("name") or "this dataset"
            return f"{name} is not a 2-D dataset: the boundary map needs 2 input features (e.g. -d spiral)"
        case When.CLASSIFIER:
            return "a regression run has no class predictions"
        case When.DRAWABLE:
            return ("drawing an input needs a classifier of gray images (e.g. MNIST, the default); this run's inputs "
                    "are not")
    if state.done:
        name = state.name
        more = ("" if not name else f"; `tuinet resume {name} --epochs N` trains it on" if state.status == "finished"
                else f"; `tuinet resume {name}` continues it" if state.status == "stopped" else "")
        return f"the run is over ({state.status}): q quits{more}"
    return "the trainer is not ready yet"


def bindings(actions: Iterable[Action]) -> list[Binding]:
    """The Textual bindings of ``actions``, in order."""
    return [b for a in actions for b in a.bindings()]


def by_id(actions: Iterable[Action]) -> dict[str, Action]:
    """``actions`` by their id."""
    return {a.id: a for a in actions}


def by_call(actions: Iterable[Action]) -> dict[tuple[str, tuple[object, ...]], Action]:
    """``actions`` by (name, arguments), as ``check_action`` receives them."""
    return {(a.name, a.params): a for a in actions}


def help_lines(rows: Iterable[HelpRow], actions: Mapping[str, Action]) -> list[tuple[str, str]]:
    """The help screen's (keys, what they do) lines."""
    lines = []
    for row in rows:
        members = [actions[i] for i in row.ids]
        keys = row.keys if row.keys is not None else " ".join(dict.fromkeys(a.key for a in members))
        text = row.text if row.text is not None else members[0].description
        lines.append((keys, text))
    return lines
