"""CSV tables: parsing, cleaning (missing / non-numeric values), target selection and task inference."""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tuinet.errors import DataError

MISSING = {"", "na", "nan", "n/a", "null", "none", "?", "-"}
MAX_CLASSES_AUTO = 50  # an integer target with more distinct values than this is treated as regression


@dataclass
class Table:
    """A cleaned table: float features, raw target values and the names involved."""

    x: np.ndarray               # (N, F) float64
    y: np.ndarray               # (N,) or (N, k): strings or floats
    feature_names: list[str]
    target_names: list[str]
    numeric_target: bool


def _open_text(path: Path):
    try:
        if path.name.endswith(".gz"):
            raw = gzip.decompress(path.read_bytes())
            return io.StringIO(raw.decode("utf-8-sig"))
        return io.StringIO(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a UTF-8 text file (byte {e.start})") from None


def _to_float(values: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Convert strings to floats; return (values, missing mask, non-numeric mask)."""
    bad = np.zeros(len(values), bool)
    try:
        out = np.array(values, dtype=np.float64)  # fast path: every cell numeric
        return out, np.isnan(out), bad
    except ValueError:
        pass
    out = np.full(len(values), np.nan)
    missing = np.zeros(len(values), bool)
    for i, v in enumerate(values):
        s = v.strip()
        if s.lower() in MISSING:
            missing[i] = True
            continue
        try:
            out[i] = float(s)
            if np.isnan(out[i]):
                missing[i] = True
        except ValueError:
            bad[i] = True
    return out, missing, bad


def read_csv(path: Path, target: str | None, log: Callable[[str], None], report_constant: bool = True) -> Table:
    """Read a CSV with a header row, check its shape, pick the target column(s) and drop bad rows."""
    text = _open_text(path)
    first = text.readline()
    if not first.strip():
        raise DataError(f"{path}: empty file (expected a header row and data rows)")
    delimiter = max(",;\t", key=first.count) if any(c in first for c in ",;\t") else ","
    text.seek(0)
    reader = csv.reader(text, delimiter=delimiter)
    header = [h.strip() for h in next(reader)]
    if len(header) < 2:
        raise DataError(f"{path}: the header has {len(header)} column; need at least one feature and a target")
    for i, h in enumerate(header):
        if not h:
            header[i] = f"column{i + 1}"
    rows, lines = [], []
    try:
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise DataError(f"{path}: row {len(rows) + 1} (line {reader.line_num}) has {len(row)} fields "
                                f"but the header has {len(header)}")
            rows.append(row)
            lines.append(reader.line_num)
    except csv.Error as e:
        raise DataError(f"{path}: line {reader.line_num}: {e}") from None
    if not rows:
        raise DataError(f"{path}: no data rows after the header")

    if target is None:
        targets = [header[-1]]
    else:
        targets = [t.strip() for t in target.split(",") if t.strip()]
    missing_cols = [t for t in targets if t not in header]
    if missing_cols:
        raise DataError(f"{path}: no column {missing_cols[0]!r}; columns are: {', '.join(header)}")
    t_idx = [header.index(t) for t in targets]
    f_idx = [i for i in range(len(header)) if i not in t_idx]
    if not f_idx:
        raise DataError(f"{path}: no feature columns left once the target {', '.join(targets)} is taken out")

    columns = list(zip(*rows))
    n = len(rows)
    drop = np.zeros(n, bool)
    bad_cols: dict[str, int] = {}
    feats = np.empty((n, len(f_idx)))
    for j, ci in enumerate(f_idx):
        vals, missing, bad = _to_float(list(columns[ci]))
        present = n - missing.sum()
        if present and bad.sum() > present / 2:
            first_bad = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}: column {header[ci]!r} is not numeric (e.g. {columns[ci][first_bad]!r} at "
                            f"line {lines[first_bad]}); features must be numbers")
        if (missing | bad).any():
            bad_cols[header[ci]] = int((missing | bad).sum())
            drop |= missing | bad
        feats[:, j] = vals

    # target: numeric if every present value parses
    # a target is numeric when most present values parse: the few that do not are bad rows, dropped
    t_cols = []
    numeric = True
    for ci in t_idx:
        vals, missing, bad = _to_float(list(columns[ci]))
        if bad.sum() > (n - missing.sum()) / 2:
            numeric = False
        t_cols.append((ci, vals, missing | bad))
    if numeric:
        y = np.stack([v for _, v, _ in t_cols], axis=1)
        for ci, _, missing in t_cols:
            if missing.any():
                bad_cols[header[ci]] = int(missing.sum())
                drop |= missing
    else:
        if len(t_idx) > 1:
            raise DataError(f"{path}: several target columns must all be numeric (regression)")
        y = np.array([c.strip() for c in columns[t_idx[0]]], dtype=object)
        missing = np.array([c.lower() in MISSING for c in y])
        if missing.any():
            bad_cols[header[t_idx[0]]] = int(missing.sum())
            drop |= missing
    if drop.any():
        detail = ", ".join(f"{k} ({v})" for k, v in bad_cols.items())
        log(f"{path.name}: dropped {int(drop.sum())} of {n} rows with missing or non-numeric values "
            f"(columns: {detail})")
        keep = ~drop
        feats, y = feats[keep], y[keep]
        if len(feats) == 0:
            raise DataError(f"{path}: no rows left after dropping rows with missing or non-numeric values")
    if numeric and len(t_idx) == 1:
        y = y[:, 0]
    feature_names = [header[i] for i in f_idx]
    constant = [feature_names[j] for j in range(feats.shape[1]) if np.ptp(feats[:, j]) == 0]
    if constant and report_constant:
        log(f"{path.name}: constant columns (one value in every row, they carry no information): {', '.join(constant)}")
    return Table(feats, y, feature_names, targets, numeric)


def infer_task(y: np.ndarray, numeric: bool, name: str, task: str | None, log: Callable[[str], None]) -> str:
    """Decide classification vs regression for a target, saying so when the target is numeric."""
    if task is not None:
        if task not in ("classification", "regression"):
            raise DataError(f"unknown task {task!r}; choose classification or regression")
        if task == "regression" and not numeric:
            sample = next(iter(y), "")
            raise DataError(f"target {name!r} has text values (e.g. {sample!r}): cannot treat it as regression")
        return task
    if not numeric:
        return "classification"
    y = np.asarray(y, dtype=np.float64)
    if y.ndim > 1 and y.shape[1] > 1:
        return "regression"
    y = y.reshape(-1)
    integer = bool(np.all(np.isfinite(y)) and np.all(y == np.round(y)))
    distinct = len(np.unique(y))
    if integer and distinct <= MAX_CLASSES_AUTO:
        log(f"target {name!r} has {distinct} integer values: treating as classification "
            "(use --task regression to change)")
        return "classification"
    why = "non-integer values" if not integer else f"{distinct} distinct values"
    log(f"target {name!r} is continuous ({why}): treating as regression (use --task classification to change)")
    return "regression"


def encode_classes(y: np.ndarray, source: str) -> tuple[np.ndarray, list[str]]:
    """Map class values (text or numbers) to int64 indices; names sorted (numbers numerically)."""
    y = np.asarray(y)
    if y.dtype.kind in "fiub":
        values = np.unique(y.astype(np.float64))
        names = [str(int(v)) if float(v).is_integer() else repr(float(v)) for v in values]
        idx = np.searchsorted(values, y.astype(np.float64))
    else:
        strs = np.array([str(v) for v in y])
        values = np.unique(strs)
        names = [str(v) for v in values]
        idx = np.searchsorted(values, strs)
    if len(names) < 2:
        only = names[0] if names else "none"
        raise DataError(f"{source}: a single class ({only!r}) in the target; classification needs at least 2")
    return idx.astype(np.int64), names
