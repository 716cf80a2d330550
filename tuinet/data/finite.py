"""The one finite-value policy every loader applies: samples holding a value the engine cannot compute with are
reported and dropped.

The engine computes in float32, so a value is usable when it is finite *and* within float32's range: ``inf``,
``1e400`` (inf once parsed), NaN and ``1e39`` (finite in float64, inf in float32) are not. One such value would
turn its whole column into NaN once normalized, and training would "finish" having learned nothing.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from tuinet.errors import DataError

#: the largest float32 (values beyond it become inf when the data is cast for the engine)
FLOAT32_MAX = float(np.finfo(np.float32).max)
_CHUNK = 1 << 20  # values per chunk when scanning big arrays (bounded temporaries)
_SHOWN_COLUMNS = 5


def bad_value_mask(a: np.ndarray) -> np.ndarray:
    """Element-wise: True where a value is NaN, infinite or beyond float32's range (same shape as ``a``)."""
    a = np.asarray(a)
    if a.dtype.kind in "biu":
        # integers: only 64-bit ones could exceed float32's range, and even they cannot (2**64 < 3.4e38)
        return np.zeros(a.shape, bool)
    if a.dtype.kind != "f":
        raise DataError(f"expected numbers, got dtype {a.dtype}")
    with np.errstate(invalid="ignore"):
        return ~(np.abs(a) <= FLOAT32_MAX)  # NaN compares False, so it is bad too


def bad_rows(a: np.ndarray) -> np.ndarray:
    """Per sample (first axis): True when any of its values is NaN, infinite or beyond float32's range."""
    a = np.asarray(a)
    n = len(a) if a.ndim else 0
    out = np.zeros(n, bool)
    if a.dtype.kind in "biu" or n == 0:
        return out
    flat = a.reshape(n, -1)
    rows = max(1, _CHUNK // max(1, flat.shape[1]))
    for start in range(0, n, rows):
        out[start:start + rows] = bad_value_mask(flat[start:start + rows]).any(axis=1)
    return out


def drop_nonfinite(x: np.ndarray, y: np.ndarray | None, source: str, log: Callable[[str], None], *,
                   feature_names: Sequence[str] | None = None, target_names: Sequence[str] | None = None,
                   what: str = "rows") -> tuple[np.ndarray, np.ndarray | None]:
    """Drop the samples of ``x`` (and the matching ``y``) holding NaN, infinite or out-of-float32-range values.

    The policy every loader applies (CSV, NPZ, IDX, synthetic sets): features are checked, and so is ``y`` when
    it holds numbers that are not class labels (float targets). What was dropped is reported through ``log``:
    how many, and per column (``feature_names``/``target_names``, else column numbers) for tables.

    Args:
        x: samples, (N, ...) numbers.
        y: targets or labels aligned with ``x`` (checked when of a float dtype), or None.
        source: the file or dataset, named in the note and the error.
        log: receives the note.
        feature_names, target_names: column names for the note.
        what: the noun for a sample in messages ("rows", "samples", "images").

    Raises:
        DataError: when no sample is left.
    """
    bad_x = bad_rows(x)
    bad_y = bad_rows(y) if y is not None and np.asarray(y).dtype.kind == "f" else np.zeros(len(x), bool)
    drop = bad_x | bad_y
    if not drop.any():
        return x, y
    n, k = len(x), int(drop.sum())
    columns = _column_counts(x, bad_x, feature_names, "x")
    if bad_y.any():
        columns += _column_counts(np.asarray(y), bad_y, target_names, "y")
    detail = f" (columns: {', '.join(columns)})" if columns else ""
    if k == n:
        raise DataError(f"{source}: every one of the {n:,} {what} holds a NaN, infinite or out-of-float32-range "
                        f"value{detail}; nothing left to train on")
    log(f"{source}: dropped {k:,} of {n:,} {what} with NaN, infinite or out-of-float32-range values{detail}")
    keep = ~drop
    return x[keep], (None if y is None else y[keep])


def _column_counts(a: np.ndarray, rows: np.ndarray, names: Sequence[str] | None, label: str) -> list[str]:
    """``name (count)`` for the columns of a table holding bad values in ``rows`` (tables only; images: none)."""
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.dtype.kind != "f":
        return []
    counts = bad_value_mask(a[rows]).sum(axis=0)
    cols = np.flatnonzero(counts)
    if names is None or len(names) != a.shape[1]:
        names = [f"{label}[{j}]" if a.shape[1] > 1 or label == "x" else label for j in range(a.shape[1])]
    out = [f"{names[j]} ({int(counts[j]):,})" for j in cols[:_SHOWN_COLUMNS]]
    if len(cols) > _SHOWN_COLUMNS:
        out.append(f"and {len(cols) - _SHOWN_COLUMNS} more")
    return out


def first_bad_column(x: np.ndarray) -> int | None:
    """The index of the first last-axis column of ``x`` holding a non-finite value (None when all are finite)."""
    x = np.asarray(x)
    if x.dtype.kind != "f" or x.size == 0:
        return None
    flat = x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x.reshape(-1, 1)
    rows = max(1, _CHUNK // max(1, flat.shape[1]))
    for start in range(0, len(flat), rows):
        cols = np.flatnonzero(~np.isfinite(flat[start:start + rows]).all(axis=0))
        if len(cols):
            return int(cols[0])
    return None
