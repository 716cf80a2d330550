"""The Draw tab: a 28x28 canvas to draw a digit on (mouse, or the keys), what the network is given for it (centred
and sized as MNIST's digits, or as drawn) and its class probabilities, which move as the network learns.

The canvas holds ink from 0 to 1 per pixel. The pad turns it into the model's input
(:func:`tuinet.training.probe.drawn_input`) and posts :class:`DrawPad.Probe` with it, at most ``SEND_EVERY``
seconds apart while a stroke goes on and once more when it ends; the app sends that to the trainer (a ``probe``
command) or, once the run has ended, asks the run's saved weights.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from rich.color import Color
from rich.style import Style
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Static

from tuinet.app import actions
from tuinet.app.widgets.cells import append_cell, update_static
from tuinet.app.widgets.inspector import diverging_lines, picture_legend, picture_mode, tile
from tuinet.app.widgets.stepview import bar, layer_heading
from tuinet.data.render import render_image_text
from tuinet.training.probe import drawn_input

SIZE = 28  # the canvas's pixels a side (MNIST's)
#: the brush: ink 1 within INNER pixels of the pen, falling to 0 at OUTER (strokes about 3 pixels wide, as MNIST's)
INNER, OUTER = 0.75, 2.0
SEND_EVERY = 0.1  # seconds between the pictures sent while a stroke goes on
SHADES = " ░▒▓█"  # ink without colour (NO_COLOR)
BAR = 20  # cells of a probability bar at 100%


def brush(ink: np.ndarray, cy: float, cx: float, erase: bool = False) -> None:
    """Ink a round dab centred at pixel coordinates (cy, cx), in place; or erase every pixel such a dab would
    touch."""
    h, w = ink.shape
    r0, r1 = max(0, int(cy - OUTER)), min(h, int(cy + OUTER) + 2)
    c0, c1 = max(0, int(cx - OUTER)), min(w, int(cx + OUTER) + 2)
    if r0 >= r1 or c0 >= c1:
        return
    yy, xx = np.mgrid[r0:r1, c0:c1]
    d = np.hypot(yy - cy, xx - cx)
    v = np.clip((OUTER - d) / (OUTER - INNER), 0.0, 1.0).astype(np.float32)
    patch = ink[r0:r1, c0:c1]
    if erase:
        patch[d < OUTER] = 0.0
    else:
        np.maximum(patch, v, out=patch)


def stroke(ink: np.ndarray, a: tuple[float, float], b: tuple[float, float], erase: bool = False) -> None:
    """Dabs from a to b half a pixel apart: a fast drag leaves a line, not dots."""
    n = max(1, int(np.ceil(np.hypot(b[0] - a[0], b[1] - a[1]) * 2)))
    for i in range(1, n + 1):
        brush(ink, a[0] + (b[0] - a[0]) * i / n, a[1] + (b[1] - a[1]) * i / n, erase)


class DrawCanvas(Widget, can_focus=True):
    """A SIZE x SIZE canvas: two columns a pixel when there is room (square pixels), else half blocks (two pixels
    a cell, one above the other). Left button draws (or erases, with the eraser on), the right button erases; the
    arrows move the pen, shift+arrows draw as it moves. Posts :class:`DrawCanvas.Changed`."""

    DEFAULT_CSS = "DrawCanvas { width: 58; height: 30; }"
    BINDINGS = actions.bindings(actions.DRAW_ACTIONS)
    ALLOW_SELECT = False  # a drag draws; it must not also select the canvas's cells as text

    class Changed(Message):
        """The ink changed; ``done``: a stroke ended (or a key drew), so the picture is final for now."""

        def __init__(self, done: bool):
            super().__init__()
            self.done = done

    class Asked(Message):
        """A key asked the pad for something the canvas does not hold: ``what`` is "sample" or "centre"."""

        def __init__(self, what: str):
            super().__init__()
            self.what = what

    def __init__(self, *, id: str | None = None):
        super().__init__(id=id)
        self.ink = np.zeros((SIZE, SIZE), np.float32)
        self.pen = (SIZE // 2, SIZE // 2)  # (row, col) of the keyboard pen
        self.pen_shown = False  # shown once a key moved it (mouse users never see it)
        self.eraser = False
        self._last: tuple[float, float] | None = None  # the pen's last point in a mouse stroke
        self._erasing = False
        self._styles: dict[int, Style] = {}

    # --- geometry ----------------------------------------------------------------------------------------------------

    @property
    def wide(self) -> bool:
        """Two columns a pixel (True) or half blocks."""
        size = self.content_size
        return size.width >= 2 * SIZE and size.height >= SIZE

    def pixel_at(self, x: int, y: int) -> tuple[float, float] | None:
        """The pixel coordinates (row, col) under content cell (x, y); None outside the picture."""
        if self.wide:
            if not (0 <= x < 2 * SIZE and 0 <= y < SIZE):
                return None
            return float(y), float(x // 2)
        if not (0 <= x < SIZE and 0 <= y < SIZE // 2):
            return None
        return 2.0 * y + 0.5, float(x)

    # --- drawing -----------------------------------------------------------------------------------------------------

    def clear(self) -> None:
        self.ink[:] = 0.0
        self.refresh()
        self.post_message(self.Changed(True))

    def set_ink(self, ink: np.ndarray) -> None:
        """Put a picture (ink 0..1, SIZE x SIZE) on the canvas."""
        self.ink[:] = np.clip(ink, 0.0, 1.0)
        self.refresh()
        self.post_message(self.Changed(True))

    def on_mouse_down(self, event: events.MouseDown) -> None:
        at = self.pixel_at(event.x - self.gutter.left, event.y - self.gutter.top)
        if at is None or event.button not in (1, 3):
            return
        self.focus()
        self.capture_mouse()
        self._erasing = event.button == 3 or self.eraser
        brush(self.ink, *at, erase=self._erasing)
        self._last = at
        self.refresh()
        self.post_message(self.Changed(False))

    def on_mouse_move(self, event: events.MouseMove) -> None:
        if self._last is None or not event.button:
            return
        x = min(max(event.x - self.gutter.left, 0), 2 * SIZE - 1 if self.wide else SIZE - 1)
        y = min(max(event.y - self.gutter.top, 0), SIZE - 1 if self.wide else SIZE // 2 - 1)
        at = self.pixel_at(x, y)
        if at is None or at == self._last:
            return
        stroke(self.ink, self._last, at, erase=self._erasing)
        self._last = at
        self.refresh()
        self.post_message(self.Changed(False))

    def on_mouse_up(self, event: events.MouseUp) -> None:
        if self._last is None:
            return
        self._last = None
        self.release_mouse()
        self.post_message(self.Changed(True))

    def _move(self, dy: int, dx: int, ink: bool) -> None:
        r, c = self.pen
        to = (min(max(r + dy, 0), SIZE - 1), min(max(c + dx, 0), SIZE - 1))
        if ink:
            if not self.pen_shown:  # the first shift+arrow starts where the pen is
                brush(self.ink, float(r), float(c), erase=self.eraser)
            stroke(self.ink, (float(r), float(c)), (float(to[0]), float(to[1])), erase=self.eraser)
        self.pen, self.pen_shown = to, True
        self.refresh()
        if ink:
            self.post_message(self.Changed(True))

    def action_pen_left(self) -> None:
        self._move(0, -1, False)

    def action_pen_right(self) -> None:
        self._move(0, 1, False)

    def action_pen_up(self) -> None:
        self._move(-1, 0, False)

    def action_pen_down(self) -> None:
        self._move(1, 0, False)

    def action_ink_left(self) -> None:
        self._move(0, -1, True)

    def action_ink_right(self) -> None:
        self._move(0, 1, True)

    def action_ink_up(self) -> None:
        self._move(-1, 0, True)

    def action_ink_down(self) -> None:
        self._move(1, 0, True)

    def action_ink_dot(self) -> None:
        brush(self.ink, float(self.pen[0]), float(self.pen[1]), erase=self.eraser)
        self.pen_shown = True
        self.refresh()
        self.post_message(self.Changed(True))

    def action_toggle_eraser(self) -> None:
        self.eraser = not self.eraser
        self.post_message(self.Asked("mode"))

    def action_clear_canvas(self) -> None:
        self.clear()

    def action_test_sample(self) -> None:
        self.post_message(self.Asked("sample"))

    def action_toggle_centre(self) -> None:
        self.post_message(self.Asked("centre"))

    # --- painting ----------------------------------------------------------------------------------------------------

    def _gray(self, v: float) -> Style:
        level = int(round(v * 255))
        style = self._styles.get(level)
        if style is None:
            style = self._styles[level] = Style(bgcolor=Color.from_rgb(level, level, level))
        return style

    def render(self) -> Text:
        ink = self.ink
        color = not self.app.no_color
        pen = self.pen if self.pen_shown and self.has_focus else None
        mark = Style(color="red", bold=True)
        t = Text(no_wrap=True, overflow="crop")
        if self.wide:
            for r in range(SIZE):
                if r:
                    t.append("\n")
                for c in range(SIZE):
                    v = float(ink[r, c])
                    if pen == (r, c):
                        t.append("[]", mark + self._gray(v) if color else mark)
                    elif color:
                        append_cell(t, "  ", self._gray(v))
                    else:
                        t.append(SHADES[int(round(v * (len(SHADES) - 1)))] * 2)
            return t
        t = gray_text(ink, color)
        if pen is not None:  # the pen's cell, marked
            line = pen[0] // 2
            start = sum(len(row) + 1 for row in t.plain.split("\n")[:line]) + pen[1]
            t.stylize(Style(bgcolor="red"), start, start + 1)
        return t


def gray_text(ink: np.ndarray, color: bool) -> Text:
    """A picture of ink (0..1) in half blocks of gray, or in shades without colour."""
    return render_image_text(ink) if color else shade_text(ink)


def shade_text(ink: np.ndarray) -> Text:
    """A picture of ink (0..1) without colour: a shade character a cell, two pixels (one above the other) a cell,
    the stronger of the two."""
    a = np.clip(np.asarray(ink, dtype=np.float32), 0.0, 1.0)
    if a.shape[0] % 2:
        a = np.vstack([a, np.zeros((1, a.shape[1]), np.float32)])
    levels = np.rint(np.maximum(a[0::2], a[1::2]) * (len(SHADES) - 1)).astype(int)
    return Text("\n".join("".join(SHADES[v] for v in row) for row in levels.tolist()), no_wrap=True, overflow="crop")


def probability_bars(event: dict[str, Any] | None, names: list[str], width: int = BAR) -> Text:
    """One bar per class, the prediction marked; 'draw a digit' before there is an answer."""
    probs = (event or {}).get("probs")
    if not probs:
        return Text("draw a digit on the canvas:\nthe network's answer shows here", style="dim")
    pred = (event or {}).get("pred")
    label_w = max(len(str(n)) for n in names) if names else 2
    t = Text(no_wrap=True, overflow="crop")
    for i, p in enumerate(probs):
        name = names[i] if i < len(names) else str(i)
        if i:
            t.append("\n")
        t.append(f"{str(name)[:12]:>{min(label_w, 12)}} ", style="bold" if i == pred else "")
        if p is None:
            t.append("—", style="dim")
            continue
        t.append(bar(p, width), style="green" if i == pred else "blue")
        t.append(f" {p:6.1%}", style="bold" if i == pred else "dim")
        if i == pred:
            t.append(" ◀", style="bold green")
    if pred is None:
        t.append("\nthe model's outputs are not finite (diverged weights)", style="red")
    return t


def to_side(a: np.ndarray, side: int) -> np.ndarray:
    """A picture brought to about ``side`` pixels a side: blocks averaged when larger (28 -> 14), pixels repeated
    when smaller (8 -> 8 x 1; 7 -> 14)."""
    n = max(a.shape)
    if n > side:
        f = -(-n // side)
        h, w = a.shape[0] // f * f, a.shape[1] // f * f
        return a[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3))
    k = max(1, side // n)
    return np.kron(a, np.ones((k, k))) if k > 1 else a


def occlusion_text(occ: dict[str, Any], image: np.ndarray | None, names: list[str], width: int,
                   mode: str = "color") -> Text:
    """Where the network looks (a probe event's ``occlusion``): the input beside a map of how covering each patch
    changes the predicted class's score (its logit), each shown at 14 columns."""
    change = np.asarray(occ.get("change") or [[0.0]], dtype=np.float64)
    cls = int(occ.get("class", 0))
    name = names[cls] if cls < len(names) else str(cls)
    scale = float(np.abs(change).max())
    blocks = [diverging_lines(to_side(change, 14), scale or 1.0, mode)]
    caps = [f"±{scale:.2g} of {occ.get('score', 0):.3g}"]
    if image is not None:
        picture = gray_text(to_side(np.asarray(image, dtype=np.float64), 14), mode != "glyph")
        blocks.insert(0, picture.split("\n"))
        caps.insert(0, "given")
    t = Text(no_wrap=True, overflow="crop")
    t.append(f"where it looks for its {name}\n", style="bold")
    neg, pos = ("blue", "orange") if mode == "color" else ("blue", "yellow") if mode == "ansi16" else \
        ("░▒▓█", ".:+#")
    t.append(f"covering a {occ.get('patch', 1)}x{occ.get('patch', 1)} patch moves the {name}'s score (logit)\n"
             f"{neg}: it falls, {pos}: it rises\n", style="dim")
    t.append_text(tile(blocks, caps, width))
    return t


def forward_rows_text(rows: list[dict[str, Any]] | None, width: int, mode: str = "color") -> Text:
    """Each layer's output for the drawn picture (a probe event's ``forward``): its name, shape and share of zeros,
    then its channel maps or its first units, each layer on its own scale."""
    if not rows:
        return Text("each layer's output for the picture shows here", style="dim")
    t = Text(no_wrap=True, overflow="crop")
    t.append("each layer's output for this picture\n", style="bold")
    t.append(f"{picture_legend(mode)}, each on its own scale\n", style="dim")
    for row in rows:
        if row.get("kind") == "Flatten":
            continue
        t.append_text(layer_heading(row, moments=False))
        if row.get("maps"):
            maps = [np.asarray(m, dtype=np.float64) for m in row["maps"]]
            t.append_text(tile([diverging_lines(m, 100.0, mode) for m in maps],
                               [f"ch {i}" for i in range(len(maps))], width))
            if row.get("channels", len(maps)) > len(maps):
                t.append(f"{len(maps)} of {row['channels']} channels\n", style="dim")
        elif row.get("units"):
            size = int(row.get("size") or len(row["units"]))
            room = width - 2 - (len(f"  {len(row['units'])} of {size}") if size > len(row["units"]) else 0)
            units = np.asarray(row["units"][:max(room, 1)], dtype=np.float64)
            t.append("  ")
            t.append_text(diverging_lines(np.vstack([units, units]), 100.0, mode)[0])
            if size > len(units):
                t.append(f"  {len(units)} of {size}", style="dim")
            t.append("\n")
    return t


class DrawPad(Horizontal):
    """The canvas and its hints on the left; what the network is given and its answer on the right."""

    class Probe(Message):
        """The model's input for the drawing changed: ``image`` (rows of ink 0..1 at the model's size; None for a
        blank canvas)."""

        def __init__(self, image: list[list[float]] | None):
            super().__init__()
            self.image = image

    def __init__(self, *, id: str | None = None):
        super().__init__(id=id)
        self.centre = True
        self.input_shape: tuple[int, int] = (SIZE, SIZE)
        self.image: np.ndarray | None = None  # the model's input for the drawing (None: blank)
        self._samples_event: dict[str, Any] | None = None  # the latest samples event: its pictures are for t
        self.no_samples = "no test samples yet: they come with the first pictures of the run"  # t without any
        self._sample_i = 0
        self._sent_at = 0.0
        self._timer: Timer | None = None
        self._dirty = False

    def compose(self) -> ComposeResult:
        with Vertical(id="draw-left"):
            yield DrawCanvas(id="draw-canvas")
            yield Static(id="draw-hint")
        with Vertical(id="draw-right"):
            with Horizontal(id="draw-top"):
                yield Static(id="draw-sees")
                yield Static(id="draw-probs")
            with VerticalScroll(id="draw-layers-scroll"):
                yield Static(id="draw-layers")

    def on_mount(self) -> None:
        self.canvas = self.query_one(DrawCanvas)
        self._hint = self.query_one("#draw-hint", Static)
        self._sees = self.query_one("#draw-sees", Static)
        self._probs = self.query_one("#draw-probs", Static)
        self._layers = self.query_one("#draw-layers", Static)
        self._layers_scroll = self.query_one("#draw-layers-scroll", VerticalScroll)
        self._layers_scroll.border_title = "the forward pass, layer by layer"
        self.canvas.border_title = "draw a digit"
        self._sees.border_title = "what the network is given"
        self._probs.border_title = "its answer"
        self._show_hint()
        self._show_input()

    def on_resize(self, event: events.Resize) -> None:
        """Half-block canvas and fewer panels when the tab is small (80x24: 20 rows, 80 columns)."""
        self.set_class(event.size.height < 28, "-short")
        self.set_class(event.size.width < 100, "-narrow")

    def _show_hint(self) -> None:
        mode = "eraser" if self.canvas.eraser else "pen"
        centre = "on" if self.centre else "off"
        self.canvas.border_subtitle = f"left button: {mode}"
        self._hint.update(Text("mouse: the left button draws, the right erases\n"
                               "← → ↑ ↓ move the pen, shift+arrows draw\n"
                               f"enter a dot · p pen/eraser ({mode}) · x clear\n"
                               f"t a test sample · m MNIST centring ({centre})", style="dim"))

    def _show_input(self) -> None:
        h, w = self.input_shape
        if self.image is None:
            text = Text(f"{w}x{h}, nothing drawn yet", style="dim")
        else:
            # a small input (the digits set's 8x8) shown 3x: its pixels stay pixels
            text = gray_text(to_side(self.image, SIZE), not self.app.no_color)
            how = "centred as MNIST's" if self.centre else "as drawn"
            text.append(f"\n{w}x{h}, {how}", style="dim")
        update_static(self._sees, text, nowrap=True)

    def set_model(self, input_shape: tuple[int, int], centre: bool = True) -> None:
        """The model's input size (height, width): the drawing is given at that size, centred as MNIST's digits
        (``centre``: a dataset made as MNIST was) or as drawn; ``m`` switches."""
        self.input_shape = (int(input_shape[0]), int(input_shape[1]))
        self.centre = centre
        self._show_hint()
        if self.canvas.ink.max() > 0:  # a drawing made before the model was known: given again at its size
            self._changed(True)
        else:
            self._show_input()

    def show_answer(self, event: dict[str, Any] | None, names: list[str], source: str, note: str = "") -> None:
        """Draw the latest answer (a probe event) and whose weights gave it (``source``; ``note``, when there is
        room for it: what that means)."""
        width = self._probs.content_size.width or 40
        label = min(12, max((len(n) for n in names), default=2))
        bar = max(4, min(BAR, width - label - 10))
        text = probability_bars(event if self.image is not None else None, names, bar)
        if event and event.get("probs") and self.image is not None:
            step = event.get("step")
            line = source + (f", step {step:,}" if isinstance(step, int) else "")
            text.append(f"\n\n{line}", style="dim")
            if note and len(line) + len(note) + 1 <= width:
                text.append(f" {note}", style="dim")
        update_static(self._probs, text, nowrap=True)

    def show_layers(self, event: dict[str, Any] | None, names: list[str] | None = None) -> None:
        """Draw where the network looks and each layer's output for the drawing (a probe event's ``occlusion`` and
        ``forward``): a panel of its own, redrawn less often than the answer while training runs (a CNN's channel
        maps take some 70 ms to build and paint)."""
        mode = picture_mode(self.app.no_color, self.app.console.color_system)
        width = (self._layers.content_size.width or 57) - 1  # (the panel's scroll bar, once it scrolls)
        drawn = event is not None and self.image is not None
        text = Text(no_wrap=True, overflow="crop")
        if drawn and event.get("occlusion"):
            text.append_text(occlusion_text(event["occlusion"], self.image, names or [], width, mode))
            text.append("\n")
        text.append_text(forward_rows_text(event.get("forward") if drawn else None, width, mode))
        update_static(self._layers, text, nowrap=True)

    def set_samples(self, event: dict[str, Any] | None) -> None:
        """Keep the latest samples event, for ``t`` (its pictures are read only when asked for)."""
        self._samples_event = event

    @property
    def samples(self) -> list[np.ndarray]:
        """The test samples' pictures to put on the canvas (``t``)."""
        items = (self._samples_event or {}).get("samples") or []
        return [np.asarray(it["image"], np.float32) for it in items if it.get("image") is not None]

    # --- the canvas's messages --------------------------------------------------------------------------------------

    def on_draw_canvas_changed(self, message: DrawCanvas.Changed) -> None:
        message.stop()
        self._changed(message.done)

    def on_draw_canvas_asked(self, message: DrawCanvas.Asked) -> None:
        message.stop()
        if message.what == "centre":
            self.centre = not self.centre
            self._changed(True)
        elif message.what == "sample":
            samples = self.samples
            if not samples:
                self.app.notify(self.no_samples, timeout=4)
                return
            a = samples[self._sample_i % len(samples)]
            self._sample_i += 1
            lo, hi = float(a.min()), float(a.max())
            a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
            if a.shape != (SIZE, SIZE):
                from PIL import Image

                a = np.asarray(Image.fromarray(a.astype(np.float32)).resize((SIZE, SIZE), Image.BILINEAR))
            self.canvas.set_ink(a)
        self._show_hint()

    def _changed(self, done: bool) -> None:
        h, w = self.input_shape
        self.image = drawn_input(self.canvas.ink, h, w, self.centre)
        self._show_input()
        self._dirty = True
        now = time.perf_counter()
        if done or now - self._sent_at >= SEND_EVERY:
            self._send()
        elif self._timer is None:
            self._timer = self.set_timer(SEND_EVERY - (now - self._sent_at), self._send)

    def _send(self) -> None:
        self._timer = None
        if not self._dirty:
            return
        self._dirty = False
        self._sent_at = time.perf_counter()
        image = None if self.image is None else np.round(self.image, 3).tolist()
        self.post_message(self.Probe(image))
