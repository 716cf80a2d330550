"""Draw a digit for several runs at once (``w`` on the Compare screen): the Draw tab's canvas, and how each charted
run reads the picture with its saved weights, one line a run in the chart's markers.

An idea against its absence, on an input of one's own: a run with dropout and one without, a high and a low
learning rate, MNIST's centring on and off. Each run answers from its ``latest.npz`` (a live run: as saved at its
last epoch), read once per run in a worker thread (:class:`tuinet.training.probe.CheckpointProbe`) and again when
the file changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Static

from tuinet.app.compare_state import RunStyle
from tuinet.app.widgets.cells import update_static
from tuinet.app.widgets.drawpad import DrawCanvas, DrawPad
from tuinet.app.widgets.stepview import bar
from tuinet.training.probe import DIGIT_DATASETS, drawn_input


@dataclass(frozen=True)
class DrawnRun:
    """A run to read the drawing with: its name, folder and chart marker (None: not charted)."""

    name: str
    path: Path
    style: RunStyle | None = None
    dataset: str | None = None


def answer_line(run: DrawnRun, answer: dict[str, Any] | None, width: int, color: bool = True) -> Text:
    """One run's reading of the drawing on two lines: its chart marker and name, then its prediction with its
    probability as a bar and the next two classes; or why it has none."""
    t = Text(no_wrap=True, overflow="crop")
    marker = run.style.glyph if run.style is not None else "·"
    t.append(f"{marker} ", style=f"color({run.style.color})" if color and run.style is not None else "")
    t.append(run.name, style="bold")
    t.append("\n   ")
    if answer is None:
        t.append("reading its weights…", style="dim")
        return t
    if answer.get("error"):
        t.append(str(answer["error"]), style="dim")
        return t
    probs = answer.get("probs") or []
    names = answer.get("class_names") or [str(i) for i in range(len(probs))]
    pred = answer.get("pred")
    if pred is None or not probs:
        t.append("outputs not finite (diverged weights)" if probs else "nothing drawn", style="dim")
        return t
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    bar_w = max(4, min(20, width - 48))
    t.append(f"{names[pred]:>3} {probs[pred]:6.1%} ", style="bold green")
    t.append(bar(probs[pred], bar_w), style="green")
    t.append("  then ", style="dim")
    t.append(", ".join(f"{names[i]} {probs[i]:.1%}" for i in order[1:3]), style="dim")
    step = answer.get("step")
    note = f" · step {step:,}" if isinstance(step, int) else ""
    if note and len(t.plain.split("\n")[-1]) + len(note) <= width:
        t.append(note, style="dim")
    return t


class DrawRunsScreen(Screen):
    """The canvas and, for each run, its reading of the drawing; ``esc`` goes back."""

    BINDINGS = [Binding("escape", "close", "Back", key_display="esc")]

    def __init__(self, runs: list[DrawnRun]):
        super().__init__()
        self.runs = runs
        self.answers: dict[str, dict[str, Any] | None] = {r.name: None for r in runs}
        self._probes: dict[str, tuple[float, Any]] = {}  # run name -> (latest.npz's mtime, CheckpointProbe)
        self._generation = 0

    def compose(self) -> ComposeResult:
        yield Static(Text.assemble((" tuinet ", "bold reverse"), "  draw a digit: how each run reads it "
                                   "(its saved weights)"), id="topbar")
        yield DrawPad(id="drawpad")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        pad = self.query_one(DrawPad)
        pad.set_model((28, 28), centre=any(str(r.dataset or "").lower() in DIGIT_DATASETS for r in self.runs))
        pad.no_samples = "no test samples here: draw, or open a run's Draw tab (6) in the app"
        answers = Static(id="draw-runs")
        answers.border_title = "how each run reads it"
        pad.query_one("#draw-right").mount(answers)
        for hidden in ("#draw-probs", "#draw-layers-scroll"):
            pad.query_one(hidden).display = False
        self._show()
        self.call_after_refresh(self.query_one(DrawCanvas).focus)

    def action_close(self) -> None:
        self.app.pop_screen()

    def _show(self) -> None:
        panel = self.query_one("#draw-runs", Static)
        width = panel.content_size.width or 80
        color = not self.app.no_color
        t = Text(no_wrap=True, overflow="crop")
        drawn = self.query_one(DrawPad).image is not None
        if not drawn:
            t.append("draw a digit on the canvas: each run's answer shows here\n\n", style="dim")
        for i, run in enumerate(self.runs):
            if i:
                t.append("\n")
            if drawn:
                t.append_text(answer_line(run, self.answers.get(run.name), width, color))
            else:
                t.append(f"{run.style.glyph if run.style is not None else '·'} {run.name}", style="dim")
        update_static(panel, t, nowrap=True)

    @on(DrawPad.Probe)
    def _drawn(self, message: DrawPad.Probe) -> None:
        message.stop()
        self._generation += 1
        if message.image is None:
            self._show()
            return
        ink = self.query_one(DrawCanvas).ink.copy()
        self._read(ink, self.query_one(DrawPad).centre, self._generation)

    @work(thread=True, exclusive=True, group="draw-runs", exit_on_error=False)
    def _read(self, ink, centre: bool, generation: int) -> None:
        """Each run's answer to the drawing, at its own input size, from its saved weights (off the UI thread)."""
        from tuinet.errors import TuinetError
        from tuinet.training.probe import CheckpointProbe

        for run in self.runs:
            try:
                latest = run.path / "latest.npz"
                mtime = latest.stat().st_mtime if latest.is_file() else 0.0
                cached = self._probes.get(run.name)
                if cached is None or cached[0] != mtime:
                    cached = self._probes[run.name] = (mtime, CheckpointProbe(run.path))
                probe = cached[1]
                if not probe.drawable:
                    answer = {"error": "not a classifier of gray images"}
                else:
                    h, w = probe.input_shape[:2]
                    # centred as MNIST's only for runs on a set made that way; the others get the drawing as drawn
                    image = drawn_input(ink, h, w, centre and probe.dataset.lower() in DIGIT_DATASETS)
                    answer = probe.answer(image.tolist()) if image is not None else {"probs": None, "pred": None}
                    answer["step"] = probe.step
                    answer["class_names"] = [str(n) for n in probe.class_names]
            except (TuinetError, OSError) as e:  # one line, the run's folder named by the run (a path is long)
                answer = {"error": str(e).split("\n")[0].replace(str(run.path), run.name)}
            self.app.call_from_thread(self._answered, run.name, answer, generation)

    def _answered(self, name: str, answer: dict[str, Any], generation: int) -> None:
        if generation == self._generation and self.is_mounted:
            self.answers[name] = answer
            self._show()
