"""The events a late viewer replays, bounded so that a week-long run does not grow memory.

A :class:`~tuinet.training.session.Session` (in the app, or the detached trainer serving viewers) keeps every
event a new viewer needs to rebuild its charts and state. Left alone that list grows with every logged step,
forever. :class:`EventHistory` keeps at most ``cap`` events: when full, it halves the density of the most
numerous kind (per-step progress, usually), again until it is back under 3/4 of the cap, keeping order, the
run's first events (configuration, dataset, model) and the newest ones intact. Each kind is thinned on a fixed grid of
its own arrival numbers (at level L an event stays when its number is a multiple of 2**L), so the whole run keeps
an even resolution instead of the oldest part fading away; a replay shows the run like the charts' own bounded
series do.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterator


class EventHistory:
    """An append-only, bounded, ordered list of event dicts.

    Args:
        cap: the most events kept.
        keep_first: the run's first events, never dropped (its start: config, dataset, model, compiling).
        keep_last: the newest events, never dropped (the current state).
    """

    def __init__(self, cap: int = 4000, keep_first: int = 50, keep_last: int = 200):
        if cap < 2 * (keep_first + keep_last):
            raise ValueError("cap must leave room beyond the kept first and last events")
        self.cap, self.keep_first, self.keep_last = cap, keep_first, keep_last
        self._items: list[tuple[int, dict[str, Any]]] = []  # (arrival number within its kind, event)
        self._arrived: dict[str, int] = {}
        self.level: dict[str, int] = {}  # thinning level per kind
        self.dropped = 0
        self.total = 0  # events ever appended (a mark for :meth:`since`)

    def append(self, event: dict[str, Any]) -> None:
        """Add an event (thinning older ones when full)."""
        kind = event.get("event", "")
        n = self._arrived.get(kind, 0)
        self._arrived[kind] = n + 1
        self._items.append((n, event))
        self.total += 1
        if len(self._items) > self.cap:
            self._thin()

    def _thin(self) -> None:
        items = self._items
        head, mid, tail = items[:self.keep_first], items[self.keep_first:-self.keep_last], items[-self.keep_last:]
        target = self.cap * 3 // 4 - len(head) - len(tail)
        before = len(mid)
        level = self.level
        # events that joined the middle since the last time: onto the grid of their kind's current level
        mid = [(n, e) for n, e in mid if n % (1 << level.get(e.get("event", ""), 0)) == 0]
        while len(mid) > target:
            counts = Counter(e.get("event", "") for _, e in mid)
            kind = max(counts, key=lambda k: counts[k])  # the most numerous kind loses half its density
            level[kind] = level.get(kind, 0) + 1
            mid = [(n, e) for n, e in mid if e.get("event", "") != kind or n % (1 << level[kind]) == 0]
        self.dropped += before - len(mid)
        # one assignment: a reader iterating the old list (another thread) is not disturbed
        self._items = head + mid + tail

    def since(self, mark: int) -> list[dict[str, Any]]:
        """The events appended after ``total`` was ``mark`` (all of them unless more than ``keep_last`` came and
        some of those were thinned since)."""
        new = self.total - mark
        if new <= 0:
            return []
        return [e for _, e in self._items[-min(new, len(self._items)):]]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (e for _, e in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self._items[i][1]
