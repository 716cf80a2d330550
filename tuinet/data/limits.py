"""Bounds on what a data file may cost: regular files only, a cap on the bytes read or expanded, a cap on classes.

A crafted file should meet one clear ``DataError``, never a hung read (a FIFO, ``/dev/zero``), an exhausted memory
(a 26 MB ``.csv.gz`` that expands to 5 GB, an NPZ whose compressed zeros declare terabytes) or a run that writes
gigabytes of metrics (10,000 one-row classes).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from tuinet.errors import DataError

#: environment variable that sets the cap on the data bytes a file may hold or expand to
MAX_DATA_ENV = "TUINET_MAX_DATA_SIZE"
DEFAULT_MAX_DATA = 2 * 1024**3  # 2 GiB
#: the most classes a classification target may have
MAX_CLASSES = 1000
#: above this many classes, a class must have at least two samples on average (else: an ID column, not labels)
FEW_CLASSES = 20

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def max_data_bytes() -> int:
    """The cap on data bytes (``$TUINET_MAX_DATA_SIZE``: bytes, or with a K/M/G/T suffix; default 2 GiB)."""
    raw = os.environ.get(MAX_DATA_ENV)
    if not raw:
        return DEFAULT_MAX_DATA
    m = _SIZE.match(raw)
    if not m:
        raise DataError(f"{MAX_DATA_ENV}={raw!r}: expected a size such as 500M, 2G or a number of bytes")
    value = float(m.group(1)) * 1024 ** " kmgt".index((m.group(2) or " ").lower())
    if value < 1:
        raise DataError(f"{MAX_DATA_ENV}={raw!r}: the size must be at least one byte")
    return int(value)


def fmt_bytes(n: float) -> str:
    """``1.5 GiB``-style size for messages."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} GiB"  # pragma: no cover


def too_big(path: Path | str, size: int | None, what: str = "holds") -> DataError:
    """The error for a file whose data exceeds :func:`max_data_bytes` (``size`` None: found while streaming it)."""
    limit = fmt_bytes(max_data_bytes())
    amount = f"{fmt_bytes(size)} of data, more than the limit of {limit}" if size is not None else \
        f"more than the limit of {limit} of data"
    return DataError(f"{path}: {what} {amount} (raise it with {MAX_DATA_ENV}=SIZE, e.g. 8G)")


def require_regular_file(path: Path | str, what: str = "a file") -> os.stat_result:
    """Stat ``path`` (following links) and refuse anything but a regular file: a FIFO, a device such as
    ``/dev/zero``, a socket or a folder would block or never end. Returns the stat result."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        if p.is_symlink():
            raise DataError(f"{path}: a broken symbolic link (its target does not exist)") from None
        raise DataError(f"{path}: no such file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode) else "something else")
        raise DataError(f"{path}: not a regular file but {kind}; expected {what}")
    return st


def check_class_count(n_classes: int, n_samples: int, source: str, target: str | None = None) -> None:
    """Refuse absurd class counts: more than :data:`MAX_CLASSES`, or (past :data:`FEW_CLASSES`) fewer than two
    samples per class on average, which is an ID or free-text column rather than labels."""
    col = f"target {target!r}" if target else "the labels"
    if n_classes > MAX_CLASSES:
        raise DataError(f"{source}: {col} has {n_classes:,} distinct classes, more than the {MAX_CLASSES:,} tuinet "
                        "trains on (an ID or free-text column? pick the label column with --target, or use "
                        "--task regression for a numeric target)")
    if n_classes > FEW_CLASSES and 2 * n_classes > n_samples:
        raise DataError(f"{source}: {col} has {n_classes:,} distinct classes for {n_samples:,} samples (fewer than "
                        "two samples per class: an ID or free-text column? pick the label column with --target)")
