"""Text formatting shared by the command line, the headless console and the app: numbers, durations, tables."""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence


def fmt_num(v: Any, digits: int = 4) -> str:
    """A compact number: '-' for None, 3 significant digits for tiny/huge values."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if not isinstance(v, float):
        return str(v)
    if not math.isfinite(v):
        return str(v)
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
        return f"{v:.3g}"
    text = f"{v:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def fmt_pct(v: Any) -> str:
    """A fraction as a percentage with two decimals ('98.12%'), '-' when missing or not finite."""
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v * 100:.2f}%"


def fmt_duration(seconds: Any, tenths: bool = False) -> str:
    """'1h02m', '3m05s', '42s' or '-'; with ``tenths``, durations under 10 s keep one decimal ('4.2s')."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds) \
            or seconds < 0:
        return "-"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{seconds:.1f}s" if tenths and seconds < 10 else f"{s}s"


def count(n: Any, word: str) -> str:
    """``1 epoch``, ``5 epochs``: a count and its noun (plural with an s)."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def cut(text: str, width: int) -> str:
    """``text``, cut to ``width`` characters with a closing "…" when longer."""
    return text if len(text) <= width else text[:width - 1] + "…"


def table(rows: Sequence[Sequence[str]], right: Iterable[int] = ()) -> str:
    """Rows of cells as aligned columns two spaces apart; columns in ``right`` are right-aligned."""
    right = set(right)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
