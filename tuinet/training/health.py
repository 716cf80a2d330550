"""Gradient health over depth: is the gradient reaching the first layers, and do the updates move the weights?

Every ``layer_stats`` event (every ``stats_every`` steps, from the gradients and the update of the step just taken,
so it costs no extra pass) carries a verdict, and a ``gradient_health`` event says when the verdict changes, with
a hint of what usually helps. The tests are relative, not absolute thresholds: a gradient of 1e-4 is healthy in
one network and vanishing in another, but the first layer getting a thousandth of what the last one gets is a
vanishing gradient anywhere.
"""

from __future__ import annotations

import math
from typing import Any

#: the first layer's gradient norm below this fraction of the last layer's: vanishing
VANISHING_RATIO = 1e-3
#: ... above this multiple of it: exploding
EXPLODING_RATIO = 1e3
#: an update smaller than this fraction of a layer's weights changes nothing that matters
NEGLIGIBLE_UPDATE = 1e-6
#: an update this large against the weights rewrites the layer in one step
HUGE_UPDATE = 1.0
#: consecutive healthy checks before a warning counts as over (so one lucky batch does not flip it back and forth)
CLEAR_AFTER = 3
#: layers whose gradient norm is not part of the depth profile: normalization scales, not the signal
NOT_IN_PROFILE = frozenset({"BatchNorm"})

HINTS = {
    "vanishing": "the first layers barely learn. What usually helps: ReLU instead of sigmoid/tanh, batch "
                 "normalization (bn), skip connections (res blocks), He initialization, or a higher lr",
    "exploding": "the gradient grows toward the input. What usually helps: a lower lr, gradient clipping "
                 "(--clip-grad), batch normalization (bn), or skip connections",
    "stalled": "these layers' updates are negligible against their weights. What usually helps: a higher lr, or "
               "fixing vanishing gradients (ReLU, normalization, skip connections)",
    "huge_updates": "a step rewrites these layers' weights. What usually helps: a lower lr or gradient clipping "
                    "(--clip-grad)",
}


def profile(rows: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """(layer, gradient norm) from input to output, for the layers that carry the signal."""
    return [(r["name"], float(r["grad_norm"])) for r in rows
            if r.get("grad_norm") is not None and r.get("kind") not in NOT_IN_PROFILE]


def assess(rows: list[dict[str, Any]], lr_factor: float = 1.0) -> dict[str, Any]:
    """The verdict on one ``layer_stats`` row list: ``status`` (ok, vanishing, exploding, stalled, huge_updates),
    ``ratio`` (first layer's gradient norm / last layer's), and the layers concerned.

    ``lr_factor`` is what the lr schedule makes of the run's lr now (1: full; a cosine schedule ends near 0): an
    update is negligible against :data:`NEGLIGIBLE_UPDATE` scaled by it, so the small steps a schedule asks for on
    purpose at its end are not called stalled."""
    prof = profile(rows)
    out: dict[str, Any] = {"status": "ok", "ratio": None, "layers": []}
    if len(prof) >= 2:
        (first, g0), (last, g1) = prof[0], prof[-1]
        if not (math.isfinite(g0) and math.isfinite(g1)):
            return {**out, "status": "exploding", "layers": [n for n, g in prof if not math.isfinite(g)]}
        ratio = g0 / g1 if g1 > 0 else (math.inf if g0 > 0 else 1.0)
        out["ratio"] = ratio
        if ratio < VANISHING_RATIO:
            return {**out, "status": "vanishing", "layers": [first, last]}
        if ratio > EXPLODING_RATIO:
            return {**out, "status": "exploding", "layers": [first, last]}
    ratios = [(r["name"], r["update_ratio"]) for r in rows if r.get("update_ratio") is not None]
    huge = [n for n, u in ratios if not math.isfinite(u) or u > HUGE_UPDATE]
    if huge:
        return {**out, "status": "huge_updates", "layers": huge}
    stalled = [n for n, u in ratios if u < NEGLIGIBLE_UPDATE * max(0.0, min(1.0, lr_factor))]
    if stalled:
        return {**out, "status": "stalled", "layers": stalled}
    return out


def message(verdict: dict[str, Any]) -> str:
    """The verdict in one line of plain words."""
    s, ratio, layers = verdict["status"], verdict.get("ratio"), verdict.get("layers") or []
    if s == "ok":
        return "gradient health back to normal" + (f" (first/last layer gradient {ratio:.2g})" if ratio else "")
    if s in ("vanishing", "exploding") and ratio is not None and len(layers) == 2:
        return (f"{s} gradients: {layers[0]} gets {ratio:.2g} times the gradient norm of {layers[1]}")
    return f"{s.replace('_', ' ')}: {', '.join(layers)}"


class HealthMonitor:
    """Turns the verdicts of successive checks into ``gradient_health`` events: one when a problem appears or
    changes, one when it has been gone for :data:`CLEAR_AFTER` checks in a row."""

    def __init__(self) -> None:
        self.status = "ok"
        self._clear = 0

    def check(self, rows: list[dict[str, Any]], lr_factor: float = 1.0) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """(the verdict, the ``gradient_health`` event fields to emit or None); ``lr_factor`` as in :func:`assess`."""
        v = assess(rows, lr_factor)
        if v["status"] == "ok":
            if self.status == "ok":
                return v, None
            self._clear += 1
            if self._clear < CLEAR_AFTER:
                return v, None
        self._clear = 0
        if v["status"] == self.status:
            return v, None
        self.status = v["status"]
        return v, {**v, "message": message(v), "hint": HINTS.get(v["status"])}
