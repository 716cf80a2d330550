"""Modal dialogs: confirm, exact learning rate, optimizer choice, batch size, regularization, and what to do after
a divergence."""

from __future__ import annotations

import math
from typing import Any, Callable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from tuinet.errors import ConfigError
from tuinet.formatting import fmt_num
from tuinet.protocol import MAX_BATCH, MAX_EPOCHS, check_regularization

#: (name sent to the trainer, label, what it is) in the order the dialog lists them
OPTIMIZERS: list[tuple[str, str, str]] = [
    ("sgd", "SGD", "plain gradient descent"),
    ("momentum", "SGD + momentum", "SGD with momentum 0.9"),
    ("adam", "Adam", "adaptive moments, betas 0.9/0.999"),
    ("adamw", "AdamW", "Adam with decoupled weight decay 0.01"),
    ("rmsprop", "RMSprop", "running average of squared gradients, alpha 0.99"),
    ("adagrad", "Adagrad", "per-weight rates from summed squared gradients"),
]


def parse_lr(text: str) -> float | None:
    """A positive finite learning rate from user text ('3e-4', '0.01'), or None."""
    try:
        v = float(text.strip())
    except ValueError:
        return None
    return v if math.isfinite(v) and v > 0 else None


class ConfirmDialog(ModalScreen[bool]):
    """Ask a yes/no question; dismisses with True (y / enter on Yes) or False (n / escape)."""

    AUTO_FOCUS = "#yes"  # focused when the screen is shown (as DivergedDialog: no query before the children exist)

    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, title: str, message: str, yes: str = "Yes", no: str = "Cancel"):
        super().__init__(classes="dialog-screen")
        self._title, self._message, self._yes, self._no = title, message, yes, no

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as v:
            v.border_title = self._title
            yield Static(Text(self._message), classes="dialog-message")
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self._yes} (y)", id="yes", variant="primary")
                yield Button(f"{self._no} (n)", id="no")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class _FollowsLr:
    """A dialog that shows the run's lr and follows it while open (a schedule moves it every step): ``_live``
    returns the lr now; :meth:`_follow_lr` starts polling it twice a second and calls :meth:`_lr_moved` with each
    new value."""

    _live: Callable[[], float | None] | None
    _shown_lr: float | None

    def _follow_lr(self) -> None:
        if self._live is not None:
            self.set_interval(0.5, self._poll_lr)  # type: ignore[attr-defined]

    def _poll_lr(self) -> None:
        now = self._live() if self._live is not None else None
        if now is not None and now != self._shown_lr:
            self._shown_lr = now
            self._lr_moved(now)

    def _lr_moved(self, lr: float) -> None:
        raise NotImplementedError


class LrDialog(_FollowsLr, ModalScreen["float | None"]):
    """Type an exact learning rate; dismisses with the number, or None on escape.

    ``live`` (optional) returns the run's lr now: a schedule moves it while the dialog is open (a cosine decay
    through a whole short run in seconds), so the "Current" line follows it twice a second instead of showing the
    value the dialog opened with. The typed field is left alone.
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, current: float | None, live: Callable[[], float | None] | None = None):
        super().__init__(classes="dialog-screen")
        self.current = self._shown_lr = current
        self._live = live

    def _message(self) -> str:
        return (f"Current: {fmt_num(self.current)}. Type a positive number (e.g. 3e-4) and press enter; "
                "it applies at the next step.")

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as v:
            v.border_title = "Learning rate"
            yield Static(self._message(), classes="dialog-message", id="lr-current")
            # full precision: enter on the untouched field must not round the lr (fmt_num shows 0.00123456 as 0.0012)
            yield Input(value=f"{self.current:.6g}" if self.current else "", placeholder="0.001", id="lr-input")
            yield Label("", id="lr-error", classes="dialog-error")

    def on_mount(self) -> None:
        inp = self.query_one(Input)
        inp.focus()
        inp.action_select_all()
        self._follow_lr()

    def _lr_moved(self, lr: float) -> None:
        self.current = lr
        self.query_one("#lr-current", Static).update(self._message())

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        v = parse_lr(event.value)
        if v is None:
            self.query_one("#lr-error", Label).update(f"not a positive number: {event.value!r}")
            return
        self.dismiss(v)

    def action_cancel(self) -> None:
        self.dismiss(None)


def _whole_number(text: str, lowest: int, highest: int) -> int | None:
    """A whole number typed as '40', '1,000' or '1_000', within [lowest, highest]; None otherwise."""
    raw = text.strip().replace(",", "").replace("_", "")
    return int(raw) if raw.isdigit() and lowest <= int(raw) <= highest else None


def parse_epochs(text: str, lowest: int) -> int | str:
    """Planned epochs from user text, at least ``lowest``, or a one-line reason they are not."""
    v = _whole_number(text, lowest, MAX_EPOCHS)
    if v is None:
        return f"epochs: a whole number from {lowest:,} (the epoch in progress) to {MAX_EPOCHS:,}, not {text.strip()!r}"
    return v


class _TypedDialog(ModalScreen):
    """A dialog around one typed field: it starts focused with its text selected (typing replaces it); escape
    dismisses with None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def on_mount(self) -> None:
        inp = self.query_one(Input)
        inp.focus()
        inp.action_select_all()

    def action_cancel(self) -> None:
        self.dismiss(None)


class EpochsDialog(_TypedDialog):
    """Type the epochs to plan in all; dismisses with the number, or None on escape or when it is the plan."""

    def __init__(self, planned: int, done: int, schedule: str | None = None):
        super().__init__(classes="dialog-screen")
        self.planned, self.done, self.schedule = int(planned), int(done), schedule

    def _message(self) -> str:
        stretch = (f" The {self.schedule} schedule is stretched over the new plan: the next step takes the lr of "
                   "the new curve at this point (higher, for more epochs)."
                   if self.schedule and self.schedule != "constant" else "")
        return (f"Planned: {self.planned:,} epochs, {self.done:,} done. Type the epochs in all (at least "
                f"{self.done + 1:,}) and press enter: training goes on without a stop.{stretch}")

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as v:
            v.border_title = "Epochs"
            yield Static(self._message(), classes="dialog-message")
            yield Input(value=str(self.planned), placeholder=str(self.planned), id="epochs-input")
            yield Label("", id="epochs-error", classes="dialog-error")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        v = parse_epochs(event.value, self.done + 1)
        if isinstance(v, str):
            self.query_one("#epochs-error", Label).update(v)
            return
        self.dismiss(None if v == self.planned else v)


def parse_batch_size(text: str) -> int | str:
    """A batch size from user text ('256', '1,024'), or a one-line reason it is not one."""
    v = _whole_number(text, 1, MAX_BATCH)
    if v is None:
        return f"a batch size is a whole number from 1 to {MAX_BATCH:,}, not {text.strip()!r}"
    return v


class BatchSizeDialog(_FollowsLr, _TypedDialog):
    """Type a new batch size; dismisses with (size, scale the lr with it), or None on escape (or when it is the size
    the run has, or has asked for).

    The trainer takes it at once between epochs and otherwise from the next epoch (the epoch in progress keeps its
    batches); the dialog says so and what an epoch is now. A checkbox (tab, then space) asks for the learning rate
    to be scaled with the batch (×new/old: the linear scaling rule); its label shows the lr it would become, and
    follows the run's lr while the dialog is open (``live``, as :class:`LrDialog`'s: a schedule moves it).
    """

    def __init__(self, current: int, train_samples: int | None, pending: int | None = None,
                 lr: float | None = None, live: Callable[[], float | None] | None = None):
        super().__init__(classes="dialog-screen")
        self.current, self.train_samples, self.pending, self.lr = int(current), train_samples, pending, lr
        self._shown_lr, self._live = lr, live

    def on_mount(self) -> None:
        super().on_mount()
        self._follow_lr()

    def _lr_moved(self, lr: float) -> None:
        self.lr = lr
        self.query_one(Checkbox).label = self._scale_label(self.query_one(Input).value)

    def _message(self) -> str:
        n = self.train_samples
        steps = f" ({-(-n // self.current):,} steps per epoch of {n:,} samples)" if n else ""
        waiting = f"; {self.pending:,} is asked for the next epoch" if self.pending else ""
        return (f"Current: {self.current:,}{steps}{waiting}. Type a size and press enter: it applies from the next "
                "epoch (the epoch in progress keeps its batches). Small batches: noisier steps, more of them; large "
                "ones: smoother steps, more samples per second. The box (tab, space) scales the learning rate with "
                "the batch: the linear rule.")

    def _scale_label(self, text: str) -> str:
        v = parse_batch_size(text)
        if isinstance(v, str) or not self.lr:
            return "scale the lr with it (×new/old size)"
        return f"scale the lr with it: {fmt_num(self.lr)} → {fmt_num(self.lr * v / self.current)} (×{v / self.current:.3g})"

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as v:
            v.border_title = "Batch size"
            yield Static(self._message(), classes="dialog-message")
            value = str(self.pending or self.current)
            yield Input(value=value, placeholder="64", id="batch-input")
            yield Checkbox(self._scale_label(value), id="batch-scale-lr")
            yield Label("", id="batch-error", classes="dialog-error")

    @on(Input.Changed)
    def _typed(self, event: Input.Changed) -> None:
        self.query_one(Checkbox).label = self._scale_label(event.value)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        v = parse_batch_size(event.value)
        if isinstance(v, str):
            self.query_one("#batch-error", Label).update(v)
            return
        self.dismiss(None if v == (self.pending or self.current) else (v, self.query_one(Checkbox).value))


class OptimizerDialog(_FollowsLr, ModalScreen["dict[str, Any] | None"]):
    """Choose an optimizer (and its learning rate); dismisses with {"name", "lr"} or None.

    The lr field starts empty: enter keeps the run's lr as it is when the new optimizer takes over (its placeholder
    shows it, following ``live`` while the dialog is open). Pre-filled with the lr the dialog opened with, it sent
    that number back (rounded to 3 digits), setting a schedule's lr back to where it had been.
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, current: str, lr: float | None, live: Callable[[], float | None] | None = None):
        super().__init__(classes="dialog-screen")
        self.current = current
        self.lr = self._shown_lr = lr
        self._live = live

    def _placeholder(self) -> str:
        return f"keep current ({fmt_num(self.lr)})" if self.lr else "keep current"

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog dialog-wide") as v:
            v.border_title = "Optimizer"
            yield Static("Weights are kept; the new optimizer starts with fresh state.", classes="dialog-message")
            options = []
            for name, label, what in OPTIMIZERS:
                mark = "●" if name == self.current else " "
                options.append(Option(f"{mark} {label:<15} [dim]{what}[/dim]", id=name))
            yield OptionList(*options, id="opt-list")
            with Horizontal(classes="dialog-row"):
                yield Label("lr ", classes="dialog-label")
                yield Input(value="", id="opt-lr", placeholder=self._placeholder())
            yield Label("enter: apply   tab: edit lr   escape: cancel", classes="dialog-hint")
            yield Label("", id="opt-error", classes="dialog-error")

    def on_mount(self) -> None:
        ol = self.query_one(OptionList)
        names = [n for n, _, _ in OPTIMIZERS]
        ol.highlighted = names.index(self.current) if self.current in names else 0
        ol.focus()
        self._follow_lr()

    def _lr_moved(self, lr: float) -> None:
        self.lr = lr
        self.query_one("#opt-lr", Input).placeholder = self._placeholder()

    def _result(self) -> dict[str, Any] | None:
        ol = self.query_one(OptionList)
        if ol.highlighted is None:
            return None
        name = OPTIMIZERS[ol.highlighted][0]
        text = self.query_one("#opt-lr", Input).value.strip()
        if not text:
            return {"name": name, "lr": None}
        lr = parse_lr(text)
        if lr is None:
            self.query_one("#opt-error", Label).update(f"lr must be a positive number, got {text!r}")
            return None
        return {"name": name, "lr": lr}

    @on(OptionList.OptionSelected)
    @on(Input.Submitted)
    def _apply(self, event) -> None:
        event.stop()
        result = self._result()
        if result is not None:
            self.dismiss(result)

    def action_cancel(self) -> None:
        self.dismiss(None)


#: (setting, label, what it does) in the order the regularization dialog lists them
REGULARIZERS: list[tuple[str, str, str]] = [
    ("l1", "L1", "adds l1·Σ|w| to the loss: pushes weights to exactly 0"),
    ("l2", "L2", "adds l2·Σw² to the loss: shrinks every weight"),
    ("weight_decay", "decay", "the optimizer's weight decay (AdamW: w shrinks by lr·decay a step)"),
    ("dropout", "dropout", "share of hidden units dropped each step, 0 to below 1"),
]


def parse_regularization(key: str, text: str) -> float | str:
    """A typed L1/L2 penalty, weight decay or dropout rate, checked as the trainer checks the command's field
    (:func:`tuinet.protocol.check_regularization`); the reason as a str when it is not one."""
    try:
        v = float(text.strip())
    except ValueError:
        return f"{key} must be a number, got {text.strip()!r:.30}"
    try:
        check_regularization({key: v})
    except ConfigError as e:
        return str(e)
    return v


class RegularizationDialog(ModalScreen["dict[str, float] | None"]):
    """Set the L1 and L2 penalties and the dropout rate of a training run; dismisses with the values that changed
    (``{"l2": 0.001}``), or None on escape or when nothing changed. The trainer keeps the weights and the optimizer's
    state and applies them from its next step."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, current: dict[str, float | None]):
        super().__init__(classes="dialog-screen")
        #: the run's values; None for a setting it does not have (an optimizer without weight decay): no field
        self.current = {key: None if key == "weight_decay" and current.get(key) is None else
                        float(current.get(key) or 0.0) for key, _, _ in REGULARIZERS}
        self.keys = [key for key, _, _ in REGULARIZERS if self.current[key] is not None]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog dialog-wide", id="reg-dialog") as v:
            v.border_title = "Regularization"
            yield Static("What keeps the network from learning its training set by heart. Weights and optimizer "
                         "state are kept; the change applies from the next step: watch the gap between the train "
                         "and validation curves.", classes="dialog-message")
            for key, label, what in REGULARIZERS:
                if key not in self.keys:
                    continue
                with Horizontal(classes="reg-row"):
                    yield Label(f"{label:<8}", classes="dialog-label")
                    # every digit (repr): enter on an untouched field must send nothing, not a rounded value
                    yield Input(value="0" if self.current[key] == 0 else repr(self.current[key]), id=f"reg-{key}")
                    yield Label(what, classes="reg-what")
            yield Label("enter: apply   tab: next field   escape: cancel", classes="dialog-hint")
            yield Label("", id="reg-error", classes="dialog-error")

    def on_mount(self) -> None:
        inp = self.query_one(f"#reg-{REGULARIZERS[0][0]}", Input)
        inp.focus()
        inp.action_select_all()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        changed: dict[str, float] = {}
        for key in self.keys:
            v = parse_regularization(key, self.query_one(f"#reg-{key}", Input).value)
            if isinstance(v, str):
                self.query_one("#reg-error", Label).update(v)
                self.query_one(f"#reg-{key}", Input).focus()
                return
            if v != self.current[key]:
                changed[key] = v
        self.dismiss(changed or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class DivergedDialog(ModalScreen["str | None"]):
    """After a divergence (training paused): roll back with a lower lr, continue as is, or stay paused."""

    AUTO_FOCUS = "#rollback"  # focused when the screen is shown (a query in on_mount once found no children yet)

    BINDINGS = [Binding("r", "choose('rollback')", "Roll back"), Binding("c", "choose('resume')", "Continue"),
                Binding("escape", "choose(None)", "Stay paused")]

    def __init__(self, event: dict[str, Any], factor: float = 0.5):
        super().__init__(classes="dialog-screen")
        self.event = event
        self.factor = factor

    def compose(self) -> ComposeResult:
        e = self.event
        lr = e.get("lr")
        new_lr = e.get("new_lr") or (lr * self.factor if lr else None)
        loss = "not a number" if e.get("loss") is None else fmt_num(e.get("loss"))
        what = {"blow-up": f"the loss jumped to {loss}, a thousand times its usual size",
                "non-finite weights": "the update made weights infinite or not a number"}.get(
            e.get("reason"), f"the loss became {loss}")
        again = " It diverged again soon after the last rollback, so the lr is cut tenfold." if e.get("repeated") \
            else ""
        with Vertical(classes="dialog dialog-alarm") as v:
            v.border_title = "Training diverged"
            yield Static(f"At step {e.get('step')} {what} (lr {fmt_num(lr)}). Training is paused.{again}\n\n"
                         f"Roll back to the last good weights with lr {fmt_num(new_lr)}, or continue as is?",
                         classes="dialog-message")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Roll back (r)", id="rollback", variant="warning")
                yield Button("Continue (c)", id="resume")
                yield Button("Stay paused (esc)", id="stay")

    def action_choose(self, choice: str | None) -> None:
        self.dismiss(choice)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None if event.button.id == "stay" else event.button.id)


class BranchDialog(ModalScreen["str | None"]):
    """The options of a branch of run ``name`` (as `tuinet train --from` takes them); dismisses with them, or None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, name: str, suggestion: str):
        super().__init__(classes="dialog-screen")
        self.run_name = name
        self.suggestion = suggestion

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as v:
            v.border_title = f"Branch {self.run_name}"
            yield Static("A new run starts in the background from this run's checkpoint (NAME@EPOCH for a kept epoch, "
                         "NAME@best, or NAME: its latest), with its settings (the learning rate it had reached, "
                         "unless you add --lr) and the options you change, as `tuinet train --from` takes them. "
                         "Enter starts it; escape cancels.", classes="dialog-message")
            yield Input(value=self.suggestion, id="branch-input")
            yield Label("", id="branch-error", classes="dialog-error")

    def on_mount(self) -> None:
        inp = self.query_one(Input)
        inp.focus()
        inp.action_end()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        if "--from" not in event.value.split():
            self.query_one("#branch-error", Label).update("the options need --from RUN[@EPOCH]")
            return
        self.dismiss(event.value)

    def show_error(self, text: str) -> None:
        """Say why the branch did not start (the dialog stays open to correct the options)."""
        self.query_one("#branch-error", Label).update(text)

    def action_cancel(self) -> None:
        self.dismiss(None)
