"""The predictions tab: test samples with predicted/true labels and confidence, the most confidently wrong
validation samples, and the validation confusion matrix (updated every epoch)."""

from __future__ import annotations

import textwrap
from typing import Any, Callable

import numpy as np
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Static

from tuinet.data.render import render_image_text
from tuinet.app.widgets.cells import update_static
from tuinet.app.widgets.embedding import EmbeddingView
from tuinet.app.widgets.inspector import WidthText, fit_size, halve, tile


def _name(names: list[str], i: int) -> str:
    return str(names[i]) if 0 <= i < len(names) else str(i)


def sample_tiles(items: list[dict[str, Any]], names: list[str], width: int) -> Text:
    """Samples as pictures with a caption each ('7 ✓ 99%' or '9 ✗ 4 82%'), or a text table without images."""
    if not items:
        return Text("none yet", style="dim")
    if all(it.get("image") is not None for it in items):
        blocks, caps = [], []
        for it in items:
            img = np.asarray(it["image"], dtype=np.float32)
            if img.shape[0] > 28 or img.shape[1] > 28:  # keep tiles small: nearest-neighbour to <= 28 px
                step = max(1, int(np.ceil(max(img.shape) / 28)))
                img = img[::step, ::step]
            if fit_size(img.shape[1], width, want=4):
                img = halve(img).astype(np.float32)
            blocks.append(render_image_text(img).split("\n"))
            caps.append(caption(it, names))
        return tile(blocks, caps, width)
    t = Text(no_wrap=True)
    t.append(f"{'#':>6}  {'true':<10} {'predicted':<10} conf\n", style="dim")
    for it in items:
        ok = it["label"] == it["pred"]
        t.append(f"{it['index']:>6}  {_name(names, it['label']):<10} {_name(names, it['pred']):<10} "
                 f"{it['confidence']:.0%}\n", style="green" if ok else "red")
    return t


def caption(it: dict[str, Any], names: list[str]) -> Text:
    """'7 ✓ 99%' (green) for a right prediction, '9✗4 82%' (red: predicted 9, true 4) for a wrong one."""
    ok = it["label"] == it["pred"]
    pred, true = _name(names, it["pred"]), _name(names, it["label"])
    text = f"{pred} ✓ {it['confidence']:.0%}" if ok else f"{pred}✗{true} {it['confidence']:.0%}"
    return Text(text, style="green" if ok else "red")


def confusion_text(event: dict[str, Any] | None) -> Text:
    """The confusion matrix, rows true class, columns predicted, cells shaded by their share of the row."""
    if not event:
        return Text("after the first epoch", style="dim")
    m = np.asarray(event.get("matrix") or [[0]], dtype=np.int64)
    names = [str(n) for n in event.get("class_names") or range(len(m))]
    k = len(m)
    short = [n[:5] for n in names]
    cw = max(4, max(len(str(int(m.max()))), max(len(s) for s in short)) + 1)
    lw = max(len(s) for s in short) + 1
    t = Text(no_wrap=True)
    t.append(f"epoch {event.get('epoch')}  rows: true, columns: predicted\n", style="dim")
    t.append(" " * lw)
    for s in short:
        t.append(s.rjust(cw), style="bold")
    t.append("\n")
    rows = m.sum(axis=1)
    for i in range(k):
        t.append(short[i].rjust(lw - 1) + " ", style="bold")
        for j in range(k):
            v = int(m[i, j])
            frac = v / rows[i] if rows[i] else 0.0
            if i == j:
                style = "bold green" if v else "dim"
            else:
                style = "bold red" if frac > 0.1 else ("red" if v else "dim")
            t.append(str(v).rjust(cw), style=style)
        acc = m[i, i] / rows[i] if rows[i] else 0.0
        t.append(f"  {acc:.0%}", style="dim")
        t.append("\n")
    total = m.sum()
    t.append(f"\naccuracy {np.trace(m) / total:.2%} on {total:,} samples" if total else "", style="bold")
    return t


class Predictions(Horizontal):
    """Samples and wrong ones on the left (scrolls), the confusion matrix and each layer's view of the validation
    samples on the right."""

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="samples-scroll"):
            yield WidthText(id="samples")
            yield WidthText(id="augmented")
            yield WidthText(id="wrong")
        with Vertical(id="predictions-right"):
            yield Static(id="confusion")
            yield EmbeddingView(id="embedding")

    def on_mount(self) -> None:
        self._scroll = self.query_one("#samples-scroll", VerticalScroll)
        self._samples = self.query_one("#samples", WidthText)
        self._augmented = self.query_one("#augmented", WidthText)
        self._wrong = self.query_one("#wrong", WidthText)
        self._confusion = self.query_one("#confusion", Static)
        self._scroll.border_title = "test samples · most confidently wrong"
        self._confusion.border_title = "confusion (validation)"

    def update_samples(self, event: dict[str, Any] | None) -> None:
        """Draw the latest samples event."""
        s, w = self._samples, self._wrong
        if not event:
            s.show(Text("waiting for predictions…", style="dim"))
            return
        names = [str(n) for n in event.get("class_names") or []]

        def section(title: str, items: list, note: str = "") -> Callable[[int], Text]:
            def build(width: int) -> Text:
                t = Text(title + "\n", style="bold")
                for line in textwrap.wrap(note, max(20, width - 1)):  # the panel does not wrap its pictures' text
                    t.append(line + "\n", style="dim")
                t.append_text(sample_tiles(items, names, width))
                return t
            return build

        s.show(section(f"test samples (step {event.get('step')})", event.get("samples") or []))
        augmented = event.get("augmented")
        self._augmented.display = bool(augmented)
        self._scroll.border_title = "test samples · " + ("what it trains on · " if augmented else "") + \
            "most confidently wrong"
        if augmented:  # a run with --augment: what the network trains on, not what it is tested on
            self._augmented.show(section(f"what it trains on (step {event.get('step')}, augmented)", augmented,
                                         f"--augment {event.get('augment')}: a new version of each sample at "
                                         "every step"))
        w.show(section("most confidently wrong (validation)", event.get("wrong") or []))

    def update_embedding(self, event: dict[str, Any] | None, color: bool = True) -> None:
        """Draw the latest embedding event."""
        self.query_one(EmbeddingView).show(event, color)

    def update_confusion(self, event: dict[str, Any] | None) -> None:
        """Draw the latest confusion matrix."""
        update_static(self._confusion, confusion_text(event), auto_width=True, nowrap=True)
