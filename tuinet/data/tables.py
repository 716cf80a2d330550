"""CSV tables: parsing, cleaning (missing / non-numeric values), target selection and task inference."""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tuinet.data.finite import drop_nonfinite
from tuinet.data.limits import MAX_CLASSES, check_class_count, max_data_bytes, require_regular_file, too_big
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


CHUNK_ROWS = 50_000  # rows parsed per chunk: bounds the Python strings alive at once
MAX_LINE_CHARS = 16 * 1024 * 1024  # a longer line is not a table row (or a file with no newlines at all)
#: distinct text values remembered for a target column (enough for MAX_CLASSES classes plus missing markers)
_MAX_TEXT_VALUES = MAX_CLASSES + len(MISSING) + 1


class _Capped(io.RawIOBase):
    """A binary stream that raises DataError once more than ``limit`` bytes came out of it, so a gzip bomb
    (26 MB expanding to 5 GB) is stopped after ``limit`` bytes rather than decompressed whole."""

    def __init__(self, raw, limit: int, path: Path, compressed: bool):
        self._raw, self._limit, self._path, self._compressed = raw, limit, path, compressed
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self._raw.readinto(b)
        self.count += n or 0
        if self.count > self._limit:
            raise too_big(self._path, None, "expands to" if self._compressed else "holds")
        return n

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


def _open_text(path: Path) -> io.TextIOWrapper:
    """Open a (possibly gzipped) UTF-8 table as a text stream, refusing non-regular files and oversized data."""
    st = require_regular_file(path, "a table (CSV)")
    limit = max_data_bytes()
    gz = path.name.endswith(".gz")
    if not gz and st.st_size > limit:
        raise too_big(path, st.st_size)
    try:
        raw = gzip.open(path, "rb") if gz else open(path, "rb")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    return io.TextIOWrapper(io.BufferedReader(_Capped(raw, limit, path, gz), 1 << 20), encoding="utf-8-sig",
                            newline="")


class _Lines:
    """The lines of a text stream, each at most MAX_LINE_CHARS long; counts them for error messages."""

    def __init__(self, text: io.TextIOBase, path: Path):
        self.text, self.path, self.n = text, path, 0

    def __iter__(self):
        while True:
            line = self.text.readline(MAX_LINE_CHARS + 1)
            if not line:
                return
            self.n += 1
            if len(line) > MAX_LINE_CHARS:
                raise DataError(f"{self.path}: line {self.n} is longer than {MAX_LINE_CHARS:,} characters; "
                                "not a table with one row per line")
            yield line


_UNSEEN = object()


def _to_float(values) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Convert strings to floats; return (values, missing mask, non-numeric mask).

    Infinite values (``inf``, ``1e400``) parse as numbers here; the finite-value policy drops them later.
    """
    bad = np.zeros(len(values), bool)
    try:
        out = np.array(values, dtype=np.float64)  # fast path: every cell numeric
        return out, np.isnan(out), bad
    except ValueError:
        pass
    out = np.full(len(values), np.nan)
    missing = np.zeros(len(values), bool)
    seen: dict[str, float | None] = {}  # a text column repeats its values: parse each distinct one once
    for i, v in enumerate(values):
        f = seen.get(v, _UNSEEN)
        if f is _UNSEEN:
            s = v.strip()
            if s.lower() in MISSING:
                f = np.nan
            else:
                try:
                    f = float(s)
                except ValueError:
                    f = None
            if len(seen) < 10_000:
                seen[v] = f
        if f is None:
            bad[i] = True
        elif f != f:  # NaN: a missing marker or a literal nan
            missing[i] = True
        else:
            out[i] = f
    return out, missing, bad


class _Column:
    """One numeric-or-not column accumulated chunk by chunk: float values, missing and non-numeric masks."""

    def __init__(self, keep_text: bool = False):
        self.values: list[np.ndarray] = []
        self.missing: list[np.ndarray] = []
        self.bad: list[np.ndarray] = []
        self.n_missing = self.n_bad = 0
        self.example: tuple[str, int] | None = None  # first non-numeric value and its line
        self.keep_text = keep_text
        self.codes: list[np.ndarray] = []  # text values as indices into `texts` (targets only)
        self.texts: dict[str, int] = {}
        self.text_overflow = False

    def add(self, cells, lines: list[int]) -> None:
        vals, missing, bad = _to_float(cells)
        self.values.append(vals)
        self.missing.append(missing)
        self.bad.append(bad)
        self.n_missing += int(missing.sum())
        nb = int(bad.sum())
        if nb and self.example is None:
            i = int(np.flatnonzero(bad)[0])
            self.example = (cells[i], lines[i])
        self.n_bad += nb
        if self.keep_text and not self.text_overflow:
            texts, codes = self.texts, np.empty(len(cells), np.int32)
            for i, c in enumerate(cells):
                s = c.strip()
                code = texts.get(s)
                if code is None:
                    if len(texts) >= _MAX_TEXT_VALUES:
                        self.text_overflow = True
                        self.codes = []
                        return
                    code = texts[s] = len(texts)
                codes[i] = code
            self.codes.append(codes)

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cat = (lambda parts, dt: np.concatenate(parts) if parts else np.zeros(0, dt))
        return cat(self.values, np.float64), cat(self.missing, bool), cat(self.bad, bool)

    def text_values(self) -> tuple[np.ndarray, np.ndarray]:
        """The stripped text of every cell, as an object array sharing one string per distinct value, and the
        mask of missing markers."""
        names = np.empty(len(self.texts), dtype=object)
        for s, i in self.texts.items():
            names[i] = s
        codes = np.concatenate(self.codes) if self.codes else np.zeros(0, np.int32)
        missing = [i for s, i in self.texts.items() if s.lower() in MISSING]
        return names[codes], np.isin(codes, missing)


def read_csv(path: Path, target: str | None, log: Callable[[str], None], report_constant: bool = True) -> Table:
    """Read a CSV with a header row, check its shape, pick the target column(s) and drop bad rows.

    The file is streamed in chunks of CHUNK_ROWS rows, each converted to float arrays at once, so the peak
    memory is the final arrays plus one chunk of text, not a Python copy of the whole file.
    """
    with _open_text(path) as text:
        lines = _Lines(text, path)
        try:
            return _read_table(path, lines, target, log, report_constant)
        except UnicodeDecodeError:
            raise DataError(f"{path}: not a UTF-8 text file (undecodable bytes near line {lines.n + 1})") from None
        except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
            raise DataError(f"{path}: cannot read ({str(e) or type(e).__name__})") from None


def _read_table(path: Path, lines: _Lines, target: str | None, log: Callable[[str], None],
                report_constant: bool) -> Table:
    it = iter(lines)
    first = next(it, "")
    if not first.strip():
        raise DataError(f"{path}: empty file (expected a header row and data rows)")
    delimiter = max(",;\t", key=first.count) if any(c in first for c in ",;\t") else ","
    reader = csv.reader(itertools.chain([first], it), delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader)]
    except csv.Error as e:
        raise DataError(f"{path}: line {reader.line_num}: {e}") from None
    if len(header) < 2:
        raise DataError(f"{path}: the header has {len(header)} column; need at least one feature and a target")
    for i, h in enumerate(header):
        if not h:
            header[i] = f"column{i + 1}"

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

    feat_cols = [_Column() for _ in f_idx]
    t_cols = [_Column(keep_text=len(t_idx) == 1) for _ in t_idx]
    n = 0
    rows: list[list[str]] = []
    row_lines: list[int] = []

    def flush() -> None:
        columns = list(zip(*rows))
        for col, ci in zip(feat_cols, f_idx):
            col.add(columns[ci], row_lines)
        for col, ci in zip(t_cols, t_idx):
            col.add(columns[ci], row_lines)
        rows.clear()
        row_lines.clear()

    try:
        for row in reader:
            if not row or (not row[0].strip() and all(not c.strip() for c in row)):  # a blank line
                continue
            if len(row) != len(header):
                raise DataError(f"{path}: row {n + 1} (line {reader.line_num}) has {len(row)} fields "
                                f"but the header has {len(header)}")
            rows.append(row)
            row_lines.append(reader.line_num)
            n += 1
            if len(rows) >= CHUNK_ROWS:
                flush()
    except csv.Error as e:
        raise DataError(f"{path}: line {reader.line_num}: {e}") from None
    if rows:
        flush()
    if n == 0:
        raise DataError(f"{path}: no data rows after the header")

    drop = np.zeros(n, bool)
    bad_cols: dict[str, int] = {}
    feats = np.empty((n, len(f_idx)))
    for j, (col, ci) in enumerate(zip(feat_cols, f_idx)):
        present = n - col.n_missing
        if present and col.n_bad > present / 2:
            value, line = col.example
            raise DataError(f"{path}: column {header[ci]!r} is not numeric (e.g. {value!r} at "
                            f"line {line}); features must be numbers")
        vals, missing, bad = col.finish()
        feats[:, j] = vals
        col.values.clear()
        if col.n_missing or col.n_bad:
            bad_cols[header[ci]] = col.n_missing + col.n_bad
            drop |= missing | bad

    # a target is numeric when most present values parse: the few that do not are bad rows, dropped
    numeric = all(col.n_bad <= (n - col.n_missing) / 2 for col in t_cols)
    if numeric:
        parts = [col.finish() for col in t_cols]
        y = np.stack([v for v, _, _ in parts], axis=1)
        for (_, missing, bad), ci in zip(parts, t_idx):
            if (missing | bad).any():
                bad_cols[header[ci]] = int((missing | bad).sum())
                drop |= missing | bad
    else:
        if len(t_idx) > 1:
            raise DataError(f"{path}: several target columns must all be numeric (regression)")
        col = t_cols[0]
        if col.text_overflow:
            raise DataError(f"{path}: target {targets[0]!r} has more than {MAX_CLASSES:,} distinct text values "
                            f"(the most classes tuinet trains on); an ID or free-text column? pick the label "
                            "column with --target")
        y, missing = col.text_values()
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
    feature_names = [header[i] for i in f_idx]
    # the finite-value policy: infinite or out-of-float32-range features and numeric targets (text targets are
    # class names and cannot be)
    feats, y = drop_nonfinite(feats, y, path.name, log, feature_names=feature_names, target_names=targets)
    if numeric and len(t_idx) == 1:
        y = y[:, 0]
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
    check_class_count(len(names), len(y), source)
    return idx.astype(np.int64), names
