"""The Step view's four stages drawn from a ``step_detail`` event: forward pass, loss, backpropagation, update.

Pure functions from the event (a copy the trainer sent) to Rich text, laid out for a width; the screen
(:mod:`tuinet.app.screens.step`) puts each in its panel. Sizes are shown as bars on a log scale, because gradient
norms and update ratios span decades; every bar has its number next to it, so nothing is told by colour alone.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from rich.text import Text

import textwrap

from tuinet.app.widgets.inspector import FLOW_DECADES, diverging_lines, fit_size, halve, tile
from tuinet.formatting import fmt_num

#: the one-line caption of each stage, in plain words
CAPTIONS = {
    "forward": "Forward pass: the batch goes through the layers, input to output; each layer's output for one sample.",
    "loss": "Loss: how wrong the network was on this batch, sample by sample, and whether this step made it less so.",
    "backward": "Backpropagation: the loss's gradient flows back from the output to the input; its size at each layer.",
    "update": "Update: the optimizer moves each layer's weights against the gradient; how far, and what its state "
              "added.",
}
#: the same in fewer words, for narrow panels
SHORT_CAPTIONS = {
    "forward": "Forward: each layer's output for one sample.",
    "loss": "Loss: how wrong, sample by sample; did it drop?",
    "backward": "Backprop: the gradient's size, output → input.",
    "update": "Update: how far each layer's weights moved.",
}
TITLES = {"forward": "1 forward pass", "loss": "2 loss", "backward": "3 backpropagation", "update": "4 update"}
EIGHTHS = " ▏▎▍▌▋▊▉"
#: float32's relative precision: a step smaller than this against its weights mostly rounds away
FLOAT32_EPS = 6e-8


def bar(fraction: float, width: int) -> str:
    """A horizontal bar of ``fraction`` (0..1) of ``width`` cells, in eighths."""
    f = min(max(fraction, 0.0), 1.0) * width
    full = int(f)
    rest = int((f - full) * 8)
    return ("█" * full + (EIGHTHS[rest] if rest and full < width else "")).ljust(width)


def log_fraction(v: float | None, lo: float, hi: float) -> float:
    """Where ``v`` sits between ``lo`` and ``hi`` on a log scale (a sliver for the smallest, 1 for the largest)."""
    if v is None or not math.isfinite(v) or v <= 0:
        return 0.0
    if hi <= lo:
        return 1.0
    return 0.04 + 0.96 * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))


def _para(text: str, width: int, style: str = "dim") -> Text:
    """Plain words wrapped to ``width`` columns (the panels do not wrap: pictures must keep their lines)."""
    return Text(textwrap.fill(text, max(width, 20)) + "\n", style=style)


def _caption(stage: str, width: int) -> Text:
    """The stage's caption on one line: the long one when it fits, else the short one (cut to the width)."""
    text = CAPTIONS[stage] if len(CAPTIONS[stage]) <= width else SHORT_CAPTIONS[stage]
    if len(text) > width:
        text = text[:max(width - 1, 1)] + "…"
    return Text(text + "\n", style="italic dim")


def _strip(values: list[float], scale: float, width: int, mode: str) -> Text:
    """One line of cells, one per value (as many as fit), shaded by sign and size like the weight pictures."""
    vals = np.asarray(values[:max(width, 1)], dtype=np.float64)
    return diverging_lines(np.vstack([vals, vals]), scale, mode)[0] if len(vals) else Text("")


def _maps(maps: list[Any], width: int, mode: str) -> Text:
    arrs = [np.asarray(m, dtype=np.float64) for m in maps]
    if arrs and fit_size(arrs[0].shape[1], width, want=4):
        arrs = [halve(a) for a in arrs]
    scale = float(max((np.abs(a).max() for a in arrs), default=0.0)) or 1.0
    return tile([diverging_lines(a, scale, mode) for a in arrs], [f"ch {i}" for i in range(len(arrs))], width)


def layer_heading(row: dict[str, Any], moments: bool = True) -> Text:
    """A layer's line in a forward pass (the Step view's, the Draw tab's): its name and output shape, with
    ``moments`` the mean and spread of its output, the share of zeros and, after Sigmoid or Tanh, the share
    saturated."""
    st = row.get("stats") or {}
    shape = "x".join(str(d) for d in row.get("shape") or [])
    t = Text(no_wrap=True)
    t.append(f"{row.get('name')}", style="bold")
    t.append(f" → {shape}", style="dim")
    if moments:
        t.append(f"  mean {fmt_num(st.get('mean'), 3)} sd {fmt_num(st.get('std'), 3)}", style="dim")
    if st.get("zero"):
        t.append(f" · {st['zero']:.0%} zero", style="dim")
    if st.get("saturated") is not None:
        t.append(f" · {st['saturated']:.0%} saturated", style="yellow" if st["saturated"] > 0.5 else "dim")
    t.append("\n")
    return t


def forward_text(e: dict[str, Any], width: int, mode: str = "color") -> Text:
    """Stage 1: the chosen sample, each layer's output for it and the batch's activation statistics, then the
    output probabilities against the true label."""
    t = _caption("forward", width)
    s = e.get("sample") or {}
    where = f"sample {s.get('position', 0) + 1} of {e.get('batch_size', '?')} in the batch (#{s.get('index', '?')} " \
            f"in the training set)"
    names = s.get("class_names") or []
    if "label" in s:
        where += f", true label {names[s['label']] if s['label'] < len(names) else s['label']}"
    t.append_text(_para(where, width, "bold"))
    if s.get("image") is not None:
        img = np.asarray(s["image"], dtype=np.float64)
        if img.shape[0] > 16:  # a 28x28 digit in 14 columns x 7 rows: the layers below matter more
            img = halve(img)
        for line in diverging_lines(img, float(np.abs(img).max()) or 1.0, mode):
            t.append_text(line)
            t.append("\n")
    elif s.get("values") is not None:
        t.append("input " + " ".join(fmt_num(v, 2) for v in s["values"][:12]) + "\n")
    for row in e.get("forward") or []:
        t.append_text(layer_heading(row))
        if row.get("kind") == "Flatten":
            t.append("  (the layer before, as one vector)\n", style="dim")
        elif row.get("maps"):
            t.append_text(_maps(row["maps"], width, mode))
        elif row.get("units"):
            units = row["units"]
            scale = max((abs(v) for v in units), default=0.0) or 1.0
            t.append("  ")
            t.append_text(_strip(units, scale, width - 2, mode))
            shown = min(len(units), width - 2)
            if row.get("size", shown) > shown:
                t.append(f"  {shown} of {row['size']}", style="dim")
            t.append("\n")
    probs = s.get("probs")
    if probs:
        t.append("output probabilities (◀ true label, ★ prediction)\n", style="bold")
        label, pred = s.get("label"), s.get("pred")
        order = sorted(range(len(probs)), key=lambda i: -probs[i])[:10]
        if label is not None and label not in order:
            order[-1] = label
        lw = max(len(str(names[i] if i < len(names) else i)) for i in order)
        bw = max(4, min(30, width - lw - 18))
        for i in order:
            name = str(names[i] if i < len(names) else i)
            style = "bold" if i == label else ""
            t.append(f"{name:>{lw}} {bar(probs[i], bw)} {probs[i]:6.1%}", style=style)
            t.append((" ◀" if i == label else "  ") + (" ★" if i == pred else ""), style="bold")
            t.append("\n")
    elif s.get("outputs") is not None:
        t.append("outputs " + " ".join(fmt_num(v, 3) for v in s["outputs"]) + "\ntargets " +
                 " ".join(fmt_num(v, 3) for v in s.get("targets") or []) + "\n")
    return t


SPARK = "▁▂▃▄▅▆▇█"


def loss_text(e: dict[str, Any], width: int) -> Text:
    """Stage 2: the batch loss, before and after the update on the same batch, and the samples that hurt most."""
    t = _caption("loss", width)
    lo = e.get("loss") or {}
    t.append("batch loss ", style="dim")
    t.append(fmt_num(lo.get("loss")), style="bold")
    if lo.get("penalty"):
        t.append(f" + penalty {fmt_num(lo['penalty'])}", style="dim")
    if lo.get("accuracy") is not None:
        t.append(f" · {lo['accuracy']:.0%} right", style="dim")
    t.append("\nsame batch, before → after:\n  ", style="dim")
    before, after = lo.get("before"), lo.get("after")
    t.append(f"{fmt_num(before)} → {fmt_num(after)}")
    if before and after is not None:
        change = (after - before) / before
        t.append(f" ({change:+.1%})", style="green" if change < 0 else "red")
        t.append("\n  lower: the step helped" if change < 0 else "\n  higher: the step overshot", style="dim")
    counts = (lo.get("histogram") or {}).get("counts") or []
    edges = (lo.get("histogram") or {}).get("edges") or [0, 0]
    if counts:
        top = max(counts) or 1
        t.append("\nper-sample loss ", style="dim")
        t.append("".join(SPARK[min(7, int(c / top * 7.999))] if c else " " for c in counts))
        t.append(f" {fmt_num(edges[0], 3)} … {fmt_num(edges[-1], 3)}", style="dim")
    worst = lo.get("worst") or []
    if worst:
        t.append("\nhurt most:", style="dim")
        for w in worst:
            t.append(f"\n  #{w['index']}")
            if "label" in w:
                t.append(f" true {w['label']} → said {w['pred']}" + (" ✓" if w["label"] == w["pred"] else " ✗"))
                t.append(f" p(true) {w['prob_true']:.2f}", style="dim")
            t.append(f" loss {fmt_num(w['loss'], 3)}")
    t.append("\n")
    return t


def backward_text(e: dict[str, Any], width: int, health: dict[str, Any] | None = None) -> Text:
    """Stage 3: the gradient's norm arriving at every layer, output first, as bars on one log scale."""
    t = _caption("backward", width)
    rows = [r for r in e.get("backward") or []]
    vals = [v for v in (r.get("grad_out") for r in rows) if v is not None and math.isfinite(v) and v > 0]
    lo, hi = (min(vals), max(vals)) if vals else (1.0, 1.0)
    span_lo = min(lo, hi * 10.0 ** -FLOW_DECADES)  # a factor of two looks like one; decades stand out
    nw = max((len(r.get("name", "")) for r in rows), default=4)
    show_w = width >= nw + 40  # the weights' gradient column, when it fits
    bw = max(6, min(30, width - nw - (23 if show_w else 12)))
    t.append(f"{'':{nw}} {'at its output, log scale':<{bw + 10}}" + ("  weights" if show_w else "") + "\n",
             style="dim")
    for r in rows:
        g = r.get("grad_out")
        t.append(f"{r.get('name', ''):{nw}} ")
        if g is None:
            t.append("not needed (no weights below)\n", style="dim")
            continue
        t.append(bar(log_fraction(g, span_lo, hi), bw), style="color(45)")
        t.append(f" {fmt_num(g, 3):>9}")
        if show_w and r.get("grad_norm") is not None:
            t.append(f"  {fmt_num(r['grad_norm'], 3)}", style="bold")
        t.append("\n")
    if vals:
        t.append_text(_para(f"gradient norms from {fmt_num(lo, 3)} to {fmt_num(hi, 3)}: "
                            f"{math.log10(hi / lo):.1f} decades over the depth", width))
    if health and health.get("status") not in (None, "ok"):
        t.append_text(_para(f"⚠ {health.get('message', health['status'])}", width, "bold red"))
    return t


def update_text(e: dict[str, Any], width: int) -> Text:
    """Stage 4: the learning rate and, per layer, the step against the weights and against plain SGD's step."""
    t = _caption("update", width)
    u = e.get("update") or {}
    t.append(f"{u.get('optimizer', '?')} lr {fmt_num(u.get('lr'))} · its step {u.get('t', '?')}\n", style="bold")
    rows = u.get("layers") or []
    nw = max((len(r.get("name", "")) for r in rows), default=5)
    t.append(f"{'layer':{nw}} {'upd/w':>9} {'×SGD':>7} {'cos':>5}\n", style="dim")
    for r in rows:
        ratio, scale, cos = r.get("update_ratio"), r.get("scale"), r.get("cosine")
        t.append(f"{r.get('name', ''):{nw}} {fmt_num(ratio, 3):>9} ")
        t.append(f"{f'×{scale:.3g}' if scale is not None else '-':>7} {fmt_num(cos, 2):>5}\n")
    if any(r.get("update_ratio") is not None and r["update_ratio"] < FLOAT32_EPS for r in rows):
        t.append_text(_para("⚠ some steps are below float32's precision against their weights: much of such a step "
                            "is lost to rounding (×SGD under 1)", width, "yellow"))
    hyper = u.get("hyperparams") or {}
    plain_sgd = u.get("optimizer") == "sgd" and not hyper.get("momentum") and not hyper.get("weight_decay")
    if not plain_sgd:
        t.append_text(_para("upd/w: the step against the weights' size; ×SGD: against lr × gradient, what the "
                            "optimizer's state made of it; cos: 1 is straight downhill on this batch", width))
    else:
        t.append_text(_para("upd/w: the step against the weights' size; plain SGD: each step is lr × gradient, "
                            "straight downhill on this batch (×1, cos 1)", width))
    return t
