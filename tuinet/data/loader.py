"""``load_dataset``: find a source (built-in name or path), read it, clean, split and normalize it."""

from __future__ import annotations

import math
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tuinet.data.dataset import Dataset
from tuinet.data.finite import drop_nonfinite, first_bad_column
from tuinet.data.idx import find_idx_pairs, read_idx_pair
from tuinet.data.limits import check_class_count, max_data_bytes, require_regular_file, too_big
from tuinet.data.images import read_image_folder
from tuinet.data.normalize import Normalizer
from tuinet.data.splits import split_indices, subset_indices
from tuinet.data.synthetic import SYNTHETIC, make_synthetic
from tuinet.data.tables import encode_classes, infer_task, read_csv
from tuinet.errors import DataError
from tuinet.data.paths import datasets_dir

TABLES = {
    "iris": ("iris.csv", 150, (4,), 3, "Fisher's iris flowers: 4 measurements, 3 species (UCI)"),
    "wine": ("wine.csv", 178, (13,), 3, "wine chemical analysis: 13 features, 3 cultivars (UCI)"),
    "digits": ("digits8x8.csv.gz", 1797, (8, 8, 1), 10, "8x8 handwritten digits, pixels 0-16 (UCI)"),
}
NORMALIZE = ("auto", "minmax", "standard", "none")
MAX_SYNTHETIC = 10_000_000  # samples of a synthetic set


@dataclass
class _Raw:
    """A source read into memory, before splitting and normalization."""

    x: np.ndarray                 # (N, *input_shape), uint8 or float
    y: np.ndarray                 # int64 class indices or float (N, k)
    task: str
    class_names: list[str]
    feature_names: list[str] | None = None
    target_names: list[str] | None = None
    x_test: np.ndarray | None = None   # a source with its own test set
    y_test: np.ndarray | None = None


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def builtin_datasets() -> list[dict]:
    """List the built-in datasets: name, task, samples, input_shape, classes, description."""
    out = [{"name": "mnist", "task": "classification", "samples": 70000, "input_shape": [28, 28, 1],
            "classes": 10, "description": "handwritten digits 28x28: 60,000 train + 10,000 test (LeCun et al.)"}]
    for name, (_, n, shape, classes, desc) in TABLES.items():
        out.append({"name": name, "task": "classification", "samples": n, "input_shape": list(shape),
                    "classes": classes, "description": desc})
    for name, (task, n, _, desc) in SYNTHETIC.items():
        dims = 1 if name == "sine" else 2
        out.append({"name": name, "task": task, "samples": n, "input_shape": [dims],
                    "classes": 2 if task == "classification" else 0, "description": f"synthetic: {desc}"})
    return out


def _builtin_names() -> list[str]:
    return ["mnist", *TABLES, *SYNTHETIC]


# ---- readers ---------------------------------------------------------------------------------------------

def _read_mnist(folder: Path) -> _Raw:
    train, test = find_idx_pairs(folder) if folder.is_dir() else (None, None)
    if train is None or test is None:
        raise DataError(f"{folder}: MNIST files not found (expected train-images-idx3-ubyte.gz and "
                        "t10k-images-idx3-ubyte.gz with their labels)")
    return _idx_raw(train, test, str(folder))


def _idx_raw(train: Path, test: Path | None, source: str, log=_stderr) -> _Raw:
    x, y = read_idx_pair(train)
    # the finite-value policy: float IDX files (types 0x0D, 0x0E) can hold NaN, inf or values beyond float32
    x, y = drop_nonfinite(x, y, train.name, log, what="images")
    xt, yt = read_idx_pair(test) if test is not None else (None, None)
    if xt is not None:
        xt, yt = drop_nonfinite(xt, yt, test.name, log, what="images")
    if xt is not None and xt.shape[1:] != x.shape[1:]:
        raise DataError(f"{test}: images are {xt.shape[1:]} but {train.name} has {x.shape[1:]}")
    labels = y if yt is None else np.concatenate([y, yt])
    values = np.unique(labels)
    if len(values) < 2:
        raise DataError(f"{source}: a single class ({values[0] if len(values) else 'none'}) in the labels; "
                        "classification needs at least 2")
    check_class_count(len(values), len(labels), source)
    names = [str(v) for v in values.tolist()]
    if not np.array_equal(values, np.arange(len(values))):
        y = np.searchsorted(values, y)
        yt = None if yt is None else np.searchsorted(values, yt)
    return _Raw(x, y.astype(np.int64), "classification", names,
                x_test=xt, y_test=None if yt is None else yt.astype(np.int64))


def _table_raw(path: Path, target: str | None, task: str | None, log, name: str | None = None) -> _Raw:
    # a built-in image table (digits) has constant border pixels by nature: not worth a note
    table = read_csv(path, target, log, report_constant=name != "digits")
    label = name or str(path)
    task = infer_task(table.y, table.numeric_target, ",".join(table.target_names), task, log)
    if task == "classification":
        y, names = encode_classes(table.y, label)
        return _Raw(table.x, y, task, names, table.feature_names, table.target_names)
    y = np.asarray(table.y, dtype=np.float64).reshape(len(table.y), -1)
    return _Raw(table.x, y, task, [], table.feature_names, table.target_names)


NPZ_KEYS = ("x", "y", "x_test", "y_test")


def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of each ``.npy`` member of an NPZ, read from the headers without loading any data."""
    out = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, _, dtype = reader(f)
            out[info.filename[:-4]] = (tuple(int(d) for d in shape), dtype)
    return out


def _npz_raw(path: Path, task: str | None, log) -> _Raw:
    try:
        headers = _npz_headers(path)
        for key in ("x", "y"):
            if key not in headers:
                raise DataError(f"{path}: no array {key!r} (arrays found: {', '.join(headers) or 'none'}); "
                                "expected 'x' (samples) and 'y' (labels or targets)")
        for key in NPZ_KEYS:
            if key in headers and headers[key][1].hasobject:
                raise DataError(f"{path}: array {key!r} holds Python objects (dtype {headers[key][1]}); "
                                "save numbers (or, for 'y', strings)")
        size = sum(int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
                   for k, (shape, dtype) in headers.items() if k in NPZ_KEYS)
        if size > max_data_bytes():
            raise too_big(path, size)
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in NPZ_KEYS if k in headers}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as e:
        msg = (str(e).splitlines() or [type(e).__name__])[0][:100]
        raise DataError(f"{path}: not a readable .npz file ({msg})") from None
    x, y = arrays["x"], arrays["y"]
    xt, yt = arrays.get("x_test"), arrays.get("y_test")
    if (xt is None) != (yt is None):
        have, lack = ("x_test", "y_test") if yt is None else ("y_test", "x_test")
        raise DataError(f"{path}: has {have!r} but no {lack!r}; a test set needs both")

    def check(x, y, kx, ky):
        if x.dtype.kind not in "biuf":
            raise DataError(f"{path}: array {kx!r} has dtype {x.dtype}; expected numbers")
        if x.ndim == 0:
            raise DataError(f"{path}: array {kx!r} is a single value; expected samples of shape (N, F) or images")
        if len(x) == 0:
            raise DataError(f"{path}: array {kx!r} is empty (0 samples)")
        if y.ndim == 0:
            raise DataError(f"{path}: array {ky!r} is a single value; expected one label or target per sample")
        if y.dtype.kind not in "biufUS":
            raise DataError(f"{path}: array {ky!r} has dtype {y.dtype}; expected numbers or strings")
        if len(x) != len(y):
            raise DataError(f"{path}: {kx!r} has {len(x):,} samples but {ky!r} has {len(y):,}")
        if x.ndim == 1:
            x = x[:, None]
        elif x.ndim == 3:
            x = x[..., None]
        elif x.ndim > 4:
            raise DataError(f"{path}: array {kx!r} has shape {x.shape}; expected (N, F), (N, H, W) or (N, H, W, C)")
        if x[0].size == 0:
            raise DataError(f"{path}: array {kx!r} has shape {x.shape}: its samples hold no values")
        if y.dtype.kind == "S":  # bytes labels: class names as text
            y = np.char.decode(y, "utf-8", errors="replace")
        # the finite-value policy (float features; float targets); labels are checked when encoded
        return drop_nonfinite(x, y, path.name if kx == "x" else f"{path.name} (test set)", log, what="samples")

    x, y = check(x, y, "x", "y")
    if xt is not None:
        xt, yt = check(xt, yt, "x_test", "y_test")
        if xt.shape[1:] != x.shape[1:]:
            raise DataError(f"{path}: 'x_test' samples are {xt.shape[1:]} but 'x' samples are {x.shape[1:]}")
        if (yt.ndim, yt.shape[1:]) != (y.ndim, y.shape[1:]):
            raise DataError(f"{path}: 'y_test' has shape {yt.shape} but 'y' has {y.shape}")
    numeric = y.dtype.kind in "biuf"
    task = infer_task(y if yt is None else np.concatenate([y, yt]), numeric, "y", task, log)
    if task == "classification":
        if y.ndim != 1:
            raise DataError(f"{path}: 'y' has shape {y.shape}; class labels must be one value per sample")
        both, names = encode_classes(y if yt is None else np.concatenate([y, yt]), str(path))
        return _Raw(x, both[:len(y)], task, names, x_test=xt, y_test=None if yt is None else both[len(y):])
    y = y.astype(np.float64).reshape(len(y), -1)
    yt = None if yt is None else yt.astype(np.float64).reshape(len(yt), -1)
    return _Raw(x, y, task, [], x_test=xt, y_test=yt)


def _path_raw(path: Path, target, task, image_size, color, log) -> _Raw:
    if path.is_dir():
        train, test = find_idx_pairs(path)
        if train is not None:
            return _idx_raw(train, test, str(path), log)
        if test is not None:
            raise DataError(f"{path}: found a test IDX file ({test.name}) but no train-images file")
        raw = read_image_folder(path, image_size, color, log)
        return _Raw(raw[0], raw[1], "classification", raw[2])
    if require_regular_file(path, "a data file").st_size == 0:
        raise DataError(f"{path}: empty file")
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz", ".tsv", ".txt")):
        return _table_raw(path, target, task, log)
    if name.endswith(".npz"):
        return _npz_raw(path, task, log)
    if "idx" in name or "ubyte" in name:
        return _idx_raw(path, None, str(path), log)
    raise DataError(f"{path}: unknown data format (expected .csv[.gz], .npz, an IDX file, or a folder)")


# ---- preparation -------------------------------------------------------------------------------------------

def load_dataset(source: str, *, val_split: float = 0.1, test_split: float = 0.1, seed: int = 0,
                 normalize: str = "auto", target: str | None = None, task: str | None = None,
                 image_size: tuple[int, int] | None = None, color: str = "gray",
                 n_samples: int | None = None, noise: float | None = None, limit: int | None = None,
                 log: Callable[[str], None] | None = None) -> Dataset:
    """Load, clean, split (seeded, stratified) and normalize a dataset.

    Args:
        source: a built-in name (``builtin_datasets()``) or a path: ``.csv``/``.csv.gz``, ``.npz`` with
            ``x`` and ``y`` (optionally ``x_test``/``y_test``), a folder of class subfolders of images,
            an IDX images file, or a folder holding train/t10k IDX pairs.
        val_split, test_split: fractions of all samples (of the training pool when the source has its own
            test set, as MNIST does).
        normalize: ``"auto"`` (minmax for images, standard for tables), ``"minmax"``, ``"standard"``, ``"none"``.
        target, task: CSV target column(s) (default the last; comma-separated for several regression
            targets) and ``"classification"``/``"regression"`` (default inferred, and said).
        image_size, color: (height, width) and ``"gray"``/``"rgb"`` for image folders.
        n_samples, noise: size and noise of synthetic sets.
        limit: cap on the training set size (a seeded, stratified subset); validation and test are
            capped at the same number, for tests and quick runs.
        log: receives notes about cleaning and choices (default: printed to stderr).
    """
    log = log or _stderr
    if normalize not in NORMALIZE:
        raise DataError(f"unknown normalization {normalize!r}; choose one of: {', '.join(NORMALIZE)}")
    if task is not None and task not in ("classification", "regression"):
        raise DataError(f"unknown task {task!r}; choose classification or regression")
    if not (0 <= val_split < 1 and 0 <= test_split < 1 and val_split + test_split < 1):
        raise DataError(f"invalid splits: val {val_split}, test {test_split} (each in [0, 1), sum below 1)")
    if limit is not None and limit <= 0:
        raise DataError(f"limit must be positive, got {limit}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
        raise DataError(f"seed must be a whole number >= 0, got {seed!r}")

    key = source.strip().lower()
    image_like = False
    if key not in SYNTHETIC and (n_samples is not None or noise is not None):
        raise DataError(f"{source}: a size and a noise level apply only to the synthetic datasets "
                        f"({', '.join(SYNTHETIC)})")
    if key == "mnist":
        raw = _read_mnist(datasets_dir() / "mnist")
        image_like = True
    elif key in TABLES:
        file, _, shape, _, _ = TABLES[key]
        raw = _table_raw(datasets_dir() / "tabular" / file, None, "classification", log, name=key)
        if key == "digits":
            raw.x = raw.x.reshape((-1,) + shape)
            raw.feature_names = None
            image_like = True
    elif key in SYNTHETIC:
        kind, default_n, default_noise, _ = SYNTHETIC[key]
        n = n_samples if n_samples is not None else default_n
        if n < 10:
            raise DataError(f"{key}: n_samples must be at least 10, got {n}")
        if n > MAX_SYNTHETIC:
            raise DataError(f"{key}: n_samples must be at most {MAX_SYNTHETIC:,}, got {n:,}")
        if noise is not None and not (math.isfinite(noise) and noise >= 0):
            raise DataError(f"{key}: noise must be a finite number >= 0, got {noise}")
        x, y = make_synthetic(key, n, default_noise if noise is None else noise, seed)
        x, y = drop_nonfinite(x, y, key, log, what="samples")  # a huge noise overflows float32
        if kind == "classification":
            raw = _Raw(x, y, kind, ["0", "1"], feature_names=["x1", "x2"])
        else:
            raw = _Raw(x, y, kind, [], feature_names=[f"x{i + 1}" for i in range(x.shape[1])], target_names=["y"])
        if task is not None and task != kind:
            raise DataError(f"{key} is a {kind} dataset; --task {task} does not apply")
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(f"{source}: no such file or folder (built-in datasets: {', '.join(_builtin_names())})")
        raw = _path_raw(path, target, task, image_size, color, log)
        image_like = raw.x.ndim == 4
        key = source
    if raw.x.ndim == 4:
        image_like = True
    return _prepare(key, raw, image_like, val_split, test_split, seed, normalize, limit, log)


def _empty_float32(shape: tuple[int, ...]) -> np.ndarray:
    """``np.empty(shape, float32)`` without the transparent-huge-page hint NumPy gives arrays of 4 MB or more.

    With the hint, the first writes to a fresh 200 MB dataset ask the kernel for 2 MB pages, and on a machine whose
    memory is fragmented the kernel compacts memory to find them: filling MNIST's arrays took 0.12 s or, in half
    of the fresh processes measured, 0.5-1.4 s, against 0.2-0.3 s every time with ordinary pages (2026-12-02, the
    2-core test machine). Batches are gathered row by row from these arrays, so their page size does not change
    a step's time. The hint is NumPy's process-wide setting, switched off for this one allocation only.
    """
    core = getattr(np, "_core", None) or getattr(np, "core", None)  # NumPy 2, NumPy 1
    toggle = getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)
    if toggle is None:
        return np.empty(shape, dtype=np.float32)
    was = toggle(False)
    try:
        return np.empty(shape, dtype=np.float32)
    finally:
        toggle(was)


def _gather_float32(x: np.ndarray, idx: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Return ``x[idx]`` as a new C-contiguous float32 array, gathering in chunks (no full-size temporary)."""
    out = _empty_float32((len(idx),) + x.shape[1:])
    for start in range(0, len(idx), chunk):
        out[start:start + chunk] = x[idx[start:start + chunk]]
    return out


def _prepare(name: str, raw: _Raw, image_like: bool, val_split: float, test_split: float, seed: int,
             normalize: str, limit: int | None, log) -> Dataset:
    rng = np.random.default_rng(seed)
    strat = raw.y if raw.task == "classification" else None
    n = len(raw.x)
    if raw.x_test is not None:
        train_idx, val_idx = split_indices(n, (val_split,), rng, strat)
        pools = [(raw.x, raw.y, train_idx), (raw.x, raw.y, val_idx),
                 (raw.x_test, raw.y_test, np.arange(len(raw.x_test)))]
    else:
        train_idx, val_idx, test_idx = split_indices(n, (val_split, test_split), rng, strat)
        pools = [(raw.x, raw.y, train_idx), (raw.x, raw.y, val_idx), (raw.x, raw.y, test_idx)]
    if len(train_idx) == 0:
        raise DataError(f"{name}: no samples left for training ({n} samples, val {val_split}, test {test_split})")
    if limit is not None:
        pools = [(x, y, idx[subset_indices(len(idx), limit, rng,
                                           None if strat is None else y[idx])]) for x, y, idx in pools]
    if raw.task == "classification":
        present = np.unique(raw.y[pools[0][2]])
        if len(present) < 2:
            raise DataError(f"{name}: the training split has a single class ({raw.class_names[present[0]]!r})")

    kind = normalize if normalize != "auto" else ("minmax" if image_like else "standard")
    if raw.x.dtype.kind in "biu" and raw.x.dtype.itemsize <= 2:
        # small integers (pixels) are exact in float32: cast once into the final arrays and normalize in
        # place, with no intermediate copy (this is most of MNIST's load time and memory)
        xs = [_gather_float32(x, idx) for x, _, idx in pools]
        normalizer = Normalizer(kind).fit(xs[0])
        for part in xs:
            normalizer.apply_inplace(part)
    else:
        x_train_raw = pools[0][0][pools[0][2]]
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported just below, by column
            normalizer = Normalizer(kind).fit(x_train_raw)
            xs = [normalizer.transform(x_train_raw)] + [normalizer.transform(x[idx]) for x, _, idx in pools[1:]]
        del x_train_raw
        # every value is within float32's range (the finite-value policy), but a column spanning nearly all of
        # it (-3e38 .. 3e38) still overflows once shifted and scaled: say which, rather than train on NaN
        for part, split in zip(xs, ("training", "validation", "test")):
            col = first_bad_column(part)
            if col is not None:
                names = raw.feature_names if raw.feature_names and len(raw.feature_names) == part.shape[-1] else None
                what = f"column {names[col]!r}" if names else f"feature/channel {col}"
                raise DataError(f"{name}: {what} cannot be normalized in float32 (its values span more than "
                                f"float32 can hold, found in the {split} split); rescale it")
    ys = []
    for x, y, idx in pools:
        if raw.task == "classification":
            ys.append(np.ascontiguousarray(y[idx], dtype=np.int64))
        else:
            ys.append(np.ascontiguousarray(y[idx], dtype=np.float32).reshape(len(idx), -1))
    return Dataset(name=name, task=raw.task, x_train=xs[0], y_train=ys[0], x_val=xs[1], y_val=ys[1],
                   x_test=xs[2], y_test=ys[2], input_shape=tuple(int(d) for d in raw.x.shape[1:]),
                   class_names=list(raw.class_names), normalizer=normalizer,
                   feature_names=raw.feature_names, target_names=raw.target_names)
