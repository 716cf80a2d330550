"""The Boundary tab of a 2-D dataset: the decision boundary (or the selected unit's map, large) beside Playground's
neuron maps, under a legend that says what is drawn."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Static

from tuinet.app.widgets.boundary import BoundaryMap, legend_text
from tuinet.app.widgets.cells import update_static
from tuinet.app.widgets.neurons import NeuronMaps, large_neuron_text, unit_name


class PlaneMap(BoundaryMap):
    """The large map: the decision boundary, or the selected unit's output over the same plane."""

    selected: tuple[int, int] | None = None

    def draw(self, width: int, height: int) -> Text:
        if self.selected is not None:
            text = large_neuron_text(self.event, self.selected, width, height, color=not self.app.no_color)
            if text is not None:
                return text
        return super().draw(width, height)


class PlaneView(Widget):
    """Legend, large map and neuron maps; :meth:`show` takes each new ``boundary`` event."""

    DEFAULT_CSS = """
    PlaneView { height: 1fr; }
    PlaneView > Horizontal { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None):
        super().__init__(id=id)
        self.event: dict[str, Any] | None = None
        self.class_names: list[str] = []
        self.num_classes: int | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="boundary-legend")
        with Horizontal():
            yield PlaneMap(id="boundary-map")
            yield NeuronMaps(id="neuron-maps")

    @property
    def selected(self) -> tuple[int, int] | None:
        """The unit drawn large, or None for the decision boundary."""
        return self.query_one(NeuronMaps).selected

    def show(self, event: dict[str, Any] | None, class_names: list[str], num_classes: int | None) -> None:
        """Draw ``event`` (a boundary event with its ``neurons``)."""
        self.event, self.class_names, self.num_classes = event, class_names, num_classes
        self.query_one(NeuronMaps).set_event(event)
        self.query_one(PlaneMap).set_event(event, num_classes)
        self._legend()

    def _legend(self) -> None:
        sel = self.selected
        legend = self.query_one("#boundary-legend", Static)
        if sel is None:
            update_static(legend, legend_text(self.class_names, self.event), nowrap=True)
            return
        t = Text(no_wrap=True)
        t.append(unit_name(self.event, sel), style="bold")
        t.append("  ░▒▓█ < 0 < .:+#" if self.app.no_color else "  orange < 0 < blue", style="dim")
        t.append("  esc: the boundary", style="dim")
        update_static(legend, t, nowrap=True)

    @on(NeuronMaps.Selected)
    def _selected(self, message: NeuronMaps.Selected) -> None:
        large = self.query_one(PlaneMap)
        large.selected = message.selected
        large.redraw()
        self._legend()
