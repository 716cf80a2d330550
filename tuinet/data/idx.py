"""IDX files (the MNIST format), gzip or not, with a cache of decoded arrays for fast warm loads."""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np

from tuinet.data.limits import max_data_bytes, require_regular_file, too_big
from tuinet.errors import DataError

# IDX type code -> big-endian dtype
_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def cache_dir() -> Path | None:
    """Return a writable cache folder: ``$TUINET_CACHE``, ``~/.cache/tuinet``, then a temp folder; None if none."""
    candidates = []
    if os.environ.get("TUINET_CACHE"):
        candidates.append(Path(os.environ["TUINET_CACHE"]))
    xdg = os.environ.get("XDG_CACHE_HOME")
    candidates.append((Path(xdg) if xdg else Path.home() / ".cache") / "tuinet")
    candidates.append(Path(tempfile.gettempdir()) / f"tuinet-cache-{os.getuid() if hasattr(os, 'getuid') else 'user'}")
    for folder in candidates:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if os.access(folder, os.W_OK):
                return folder
        except OSError:
            continue
    return None


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is gzip data; at most ``max_data_bytes()`` of them either way."""
    st = require_regular_file(path, "an IDX file")
    limit = max_data_bytes()
    if st.st_size > limit:
        raise too_big(path, st.st_size)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            d = zlib.decompressobj(wbits=31)
            out = d.decompress(raw, limit + 1)  # a gzip bomb stops here, after limit + 1 bytes
            if len(out) > limit:
                raise too_big(path, None, "expands to")
            if not d.eof:
                raise zlib.error("incomplete or truncated stream")
            return out
        except zlib.error as e:
            msg = "truncated gzip data" if "incomplete" in str(e) or "truncated" in str(e) else f"corrupt gzip data ({e})"
            raise DataError(f"{path}: {msg}") from None
    return raw


def parse_idx(data: bytes, path: Path | str = "<bytes>") -> np.ndarray:
    """Decode an IDX byte string into a native-endian array, checking the header and the length."""
    if len(data) == 0:
        raise DataError(f"{path}: empty file")
    if len(data) < 4:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0 or data[2] not in _TYPES or data[3] == 0:
        raise DataError(f"{path}: not an IDX file (magic number 0x{data[:4].hex()}; expected 0x0000TTNN, "
                        "e.g. 0x00000803 for images and 0x00000801 for labels)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header (needs {header} bytes, file has {len(data)})")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_TYPES[data[2]])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    found = len(data) - header
    if found < expected:
        raise DataError(f"{path}: truncated IDX file: header declares {'x'.join(map(str, dims))} "
                        f"({expected:,} bytes of data) but only {found:,} bytes follow")
    if found > expected:
        raise DataError(f"{path}: {found - expected:,} unexpected bytes after the {'x'.join(map(str, dims))} IDX data")
    arr = np.frombuffer(data, dtype, count=int(np.prod(dims)), offset=header).reshape(dims)
    # frombuffer gives a read-only view of `data`: make an owned, writable, native-endian copy
    return np.ascontiguousarray(arr.astype(dtype.newbyteorder("="), copy=True))


def read_idx(path: str | Path, *, use_cache: bool = True) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain); gzip files are cached as ``.npy`` keyed by path, size and mtime."""
    path = Path(path)
    st = require_regular_file(path, "an IDX file")
    cached = None
    if use_cache and path.suffix == ".gz":
        folder = cache_dir()
        if folder is not None:
            key = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
            cached = folder / f"{path.name.removesuffix('.gz')}-{key}.npy"
            if cached.exists():
                try:
                    arr = np.load(cached, allow_pickle=False)
                    if arr.flags.writeable and arr.flags.c_contiguous:
                        return arr
                except (OSError, ValueError):
                    pass  # a damaged cache entry: decode again and overwrite it
    arr = parse_idx(_read_bytes(path), path)
    if cached is not None:
        try:
            fd, tmp = tempfile.mkstemp(dir=cached.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                np.save(f, arr, allow_pickle=False)
            os.replace(tmp, cached)
        except OSError:
            try:
                os.unlink(tmp)
            except (OSError, UnboundLocalError):
                pass
    return arr


def write_idx(path: str | Path, arr: np.ndarray) -> None:
    """Write ``arr`` as an IDX file (gzip-compressed when ``path`` ends in ``.gz``)."""
    arr = np.asarray(arr)
    code = {np.dtype(v).kind + str(np.dtype(v).itemsize): k for k, v in _TYPES.items()}.get(arr.dtype.kind + str(arr.dtype.itemsize))
    if code is None:
        raise DataError(f"{path}: dtype {arr.dtype} has no IDX type code")
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes()
    data = header + arr.astype(np.dtype(_TYPES[code])).tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=6)
    path.write_bytes(data)


def labels_path_for(images: Path) -> Path:
    """Find the labels file next to an IDX images file (``…-images-idx3-ubyte`` -> ``…-labels-idx1-ubyte``)."""
    name = images.name
    if "images" not in name:
        raise DataError(f"{images}: cannot tell where its labels are (expected a name like "
                        "'train-images-idx3-ubyte' with 'train-labels-idx1-ubyte' next to it)")
    base = name.removesuffix(".gz")
    i = base.rfind("images")
    label_base = (base[:i] + "labels" + base[i + 6:]).replace("idx3", "idx1").replace("idx4", "idx1")
    for candidate in (label_base, label_base + ".gz"):
        if (images.parent / candidate).exists() or (images.parent / candidate).is_symlink():
            return images.parent / candidate  # read_idx refuses it when it is not a regular file
    raise DataError(f"{images}: labels file not found (looked for {label_base}[.gz] in {images.parent})")


def read_idx_pair(images: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an IDX images file and its labels; images come back as uint8-or-other (N, H, W, C)."""
    labels_file = labels_path_for(images)
    x = read_idx(images)
    y = read_idx(labels_file)
    if x.ndim not in (3, 4):
        raise DataError(f"{images}: expected an images file with 3 or 4 dimensions, found shape {x.shape}")
    if y.ndim != 1:
        raise DataError(f"{labels_file}: expected a labels file with 1 dimension, found shape {y.shape}")
    if len(x) != len(y):
        raise DataError(f"{images} has {len(x):,} images but {labels_file.name} has {len(y):,} labels")
    if x.ndim == 3:
        x = x[..., None]
    return x, y


def find_idx_pairs(folder: Path) -> tuple[Path | None, Path | None]:
    """Find the train and test images files in a folder of IDX files (None when missing)."""
    images = sorted(p for p in folder.iterdir() if "images-idx" in p.name and p.is_file())
    train = [p for p in images if "train" in p.name]
    test = [p for p in images if "t10k" in p.name or "test" in p.name]
    for kind, found in (("train", train), ("test", test)):
        if len({p.name.removesuffix(".gz") for p in found}) > 1:
            raise DataError(f"{folder}: several {kind} image files ({', '.join(p.name for p in found)}); "
                            "give the path of one of them")
    # prefer the uncompressed file when both exist (faster), else the .gz
    pick = lambda xs: (sorted(xs, key=lambda p: p.suffix == ".gz")[0] if xs else None)  # noqa: E731
    return pick(train), pick(test)
