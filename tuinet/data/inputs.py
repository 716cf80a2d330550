"""Inputs for prediction: image files and CSV rows read as raw (not yet normalized) model inputs."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from tuinet.data.finite import bad_value_mask
from tuinet.data.images import IMAGE_SUFFIXES, open_image
from tuinet.data.limits import max_data_bytes, require_regular_file, too_big
from tuinet.errors import DataError


#: how an image whose shape is not the model's input is brought to it (see :func:`_read_image`)
FITS = ("stretch", "pad", "digit")
#: aspect ratios further apart than this (as a ratio) make ``stretch`` say that it distorted the image
ASPECT_TOLERANCE = 1.1
#: ``digit``: the share of the input's longer side the digit's box takes (MNIST: 20 of 28 pixels)
DIGIT_BOX = 20 / 28
#: ``digit``: pixels differing from the background by less than this share of the strongest ink are background
INK_FLOOR = 0.1
#: ``digit``: the digit's bounding box holds the pixels with at least this share of the strongest ink
INK_BOX = 0.25


def _border_color(a: np.ndarray) -> np.ndarray:
    """The median of an (H, W, C) image's outermost pixels, per channel: its background, for padding."""
    edge = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    return np.median(edge, axis=0)


def _pad_to(im, h: int, w: int, c: int) -> np.ndarray:
    """``im`` scaled to fit (h, w) with its shape kept, centred on its own border colour."""
    from PIL import Image

    iw, ih = im.size
    scale = min(w / iw, h / ih)
    sw, sh = max(1, min(w, round(iw * scale))), max(1, min(h, round(ih * scale)))
    small = np.asarray(im.resize((sw, sh), Image.BILINEAR), dtype=np.float32).reshape(sh, sw, c)
    a = np.empty((h, w, c), np.float32)
    a[:] = _border_color(np.asarray(im, dtype=np.float32).reshape(ih, iw, c))
    top, left = (h - sh) // 2, (w - sw) // 2
    a[top:top + sh, left:left + sw] = small
    return a


def fit_digit(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """A gray picture of a digit (2-D, 0..255) made as MNIST's were: the ink cropped, scaled to fit a box of
    ``DIGIT_BOX`` of the input with its shape kept, as light ink (up to 255) on black (0), centred on its centre of
    mass; an (h, w, 1) float32 array.

    The ink is how far each pixel is from the background (the median of the border), so dark ink on white paper
    and light ink on black give the same input; pixels within ``INK_FLOOR`` of the strongest ink's level count as
    background (paper grain, shadows), and the box holds the pixels of at least ``INK_BOX`` of it. Raises
    ValueError when the picture is all one gray (no digit)."""
    from PIL import Image

    a = np.asarray(a, dtype=np.float32)
    background = float(_border_color(a[:, :, None])[0])
    ink = np.abs(a - background)
    peak = float(ink.max())
    if peak < 1.0:
        raise ValueError("the image is all one gray")
    ink = np.clip((ink - INK_FLOOR * peak) * (255.0 / ((1 - INK_FLOOR) * peak)), 0.0, 255.0)
    rows, cols = np.nonzero(ink >= (INK_BOX - INK_FLOOR) / (1 - INK_FLOOR) * 255.0)
    crop = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    ch, cw = crop.shape
    box = max(1, round(DIGIT_BOX * max(h, w)))
    scale = min(box / ch, box / cw)
    sh, sw = max(1, min(h, round(ch * scale))), max(1, min(w, round(cw * scale)))
    small = np.asarray(Image.fromarray(crop).resize((sw, sh), Image.BILINEAR), dtype=np.float32)
    mass = small.sum()
    cy = float(small.sum(axis=1) @ np.arange(sh)) / mass if mass > 0 else (sh - 1) / 2
    cx = float(small.sum(axis=0) @ np.arange(sw)) / mass if mass > 0 else (sw - 1) / 2
    # the centre of mass to (h/2, w/2), where MNIST's are: (14, 14), not the middle pixel's 13.5 (the mean over 300
    # test digits is 13.99, 14.01; half a pixel off, a run's weights read 4 points fewer of them right)
    top = min(max(round(h / 2 - cy), 0), h - sh)
    left = min(max(round(w / 2 - cx), 0), w - sw)
    out = np.zeros((h, w, 1), np.float32)
    out[top:top + sh, left:left + sw, 0] = small
    return out


def _digit_to(path: Path, im, h: int, w: int) -> np.ndarray:
    """An opened gray image file through :func:`fit_digit`; one clear error when it holds no digit."""
    try:
        return fit_digit(np.asarray(im, dtype=np.float32), h, w)
    except ValueError:
        raise DataError(f"{path}: no digit to read with --fit digit (the image is all one gray)") from None


def _read_image(path: Path, input_shape: tuple[int, ...], invert: bool, fit: str = "stretch",
                notes: list[str] | None = None) -> np.ndarray:
    """An image file as one (H, W, C) float32 input of 0..255 at the model's input size, gray or RGB.

    ``fit``: "stretch" resizes it to that size whatever its shape (as an image folder is read for training) and,
    when its aspect ratio differs from the model's by more than 10%, adds a line saying so to ``notes``; "pad"
    keeps its shape: the longer side to the model's, the rest filled with the image's border colour (its
    background), centred; "digit" (gray models) makes a photographed or drawn digit look like MNIST's
    (:func:`_digit_to`). ``invert`` applies after."""
    if len(input_shape) != 3:
        raise DataError(f"{path}: the model takes {input_shape[0] if input_shape else 0} features, not images "
                        "(give CSV rows)")
    if fit not in FITS:
        raise ValueError(f"fit must be one of {', '.join(FITS)}, got {fit!r}")
    h, w, c = input_shape
    if c not in (1, 3):
        raise DataError(f"{path}: the model takes {c}-channel images; only gray (1) or RGB (3) can be read")
    if fit == "digit" and c != 1:
        raise DataError(f"{path}: --fit digit is for models of gray digits (MNIST's kind); this model takes RGB "
                        "images (use --fit pad)")
    im = open_image(path, "L" if c == 1 else "RGB")  # refuses unreadable files and decompression bombs
    iw, ih = im.size
    ratio = (iw / ih) / (w / h)
    if fit == "digit":
        a = _digit_to(path, im, h, w)
    elif fit == "pad" and im.size != (w, h):
        a = _pad_to(im, h, w, c)
    else:
        if im.size != (w, h):
            from PIL import Image

            im = im.resize((w, h), Image.BILINEAR)
            if notes is not None and max(ratio, 1 / ratio) > ASPECT_TOLERANCE:
                notes.append(f"{path.name} is {iw}x{ih} (width x height), the model takes {w}x{h}: stretched to "
                             "it; --fit pad keeps its shape (--fit digit: a digit made like MNIST's)")
        a = np.asarray(im, dtype=np.float32).reshape(h, w, c)
    return 255.0 - a if invert else a


def _read_csv_rows(path: Path, input_shape: tuple[int, ...], feature_names: list[str] | None
                   ) -> tuple[np.ndarray, list[str]]:
    """Rows of a CSV as model inputs, and a label per row (``file:line``)."""
    n = int(np.prod(input_shape))
    if path.stat().st_size > max_data_bytes():
        raise too_big(path, path.stat().st_size)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a UTF-8 text file (byte {e.start})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    first = text.splitlines()[0] if text.strip() else ""
    delimiter = max(",;\t", key=first.count) if any(ch in first for ch in ",;\t") else ","
    try:
        rows = [(i + 1, r) for i, r in enumerate(csv.reader(io.StringIO(text), delimiter=delimiter))
                if r and any(c.strip() for c in r)]
    except csv.Error as e:
        raise DataError(f"{path}: not a readable CSV file ({e})") from None
    if not rows:
        raise DataError(f"{path}: no rows")

    def numeric(r: list[str]) -> bool:
        try:
            [float(c) for c in r]
        except ValueError:
            return False
        return True

    header = None
    if not numeric(rows[0][1]):
        header = [h.strip() for h in rows[0][1]]
        rows = rows[1:]
        if not rows:
            raise DataError(f"{path}: a header row but no data rows")
    if header is not None and feature_names and len(feature_names) == n:
        missing = [f for f in feature_names if f not in header]
        if missing:
            raise DataError(f"{path}: no column {missing[0]!r}; the model needs the columns "
                            f"{', '.join(feature_names)}")
        cols = [header.index(f) for f in feature_names]
    else:
        width = len(rows[0][1])
        if width != n:
            hint = f" ({', '.join(feature_names)})" if feature_names else ""
            raise DataError(f"{path}: rows have {width} values but the model takes {n} features{hint}"
                            + ("; add a header row naming the columns" if feature_names and header is None else ""))
        cols = list(range(n))
    x = np.empty((len(rows), n), dtype=np.float32)
    labels = []
    for j, (line, r) in enumerate(rows):
        try:
            values = [float(r[c]) for c in cols]
        except (ValueError, IndexError):
            raise DataError(f"{path}: line {line}: expected {n} numeric values in the feature columns, "
                            f"got {r!r:.200}") from None
        # the finite-value policy; a prediction input is refused rather than dropped (each row is one answer)
        bad = np.flatnonzero(bad_value_mask(np.array(values)))
        if len(bad):
            col = header[cols[bad[0]]] if header is not None else f"value {bad[0] + 1}"
            raise DataError(f"{path}: line {line}: {col} is {r[cols[bad[0]]].strip()!r}, not a finite number "
                            "within float32's range")
        x[j] = values
        labels.append(f"{path.name}:{line}")
    return x.reshape((len(rows),) + tuple(input_shape)), labels


def load_inputs(files: tuple[str, ...], input_shape: tuple[int, ...], feature_names: list[str] | None,
                invert: bool = False, fit: str = "stretch", notes: list[str] | None = None
                ) -> tuple[np.ndarray, list[str]]:
    """Raw (not yet normalized) model inputs from image files and CSV files, with a label for each.

    ``fit`` and ``notes``: how images of another aspect ratio than the model's are resized (see
    :func:`_read_image`), and a list that collects a line for each one stretched."""
    xs, labels = [], []
    for f in files:
        p = Path(f).expanduser()
        require_regular_file(p, "an image or a CSV file")  # a FIFO or a device would block or never end
        if p.suffix.lower() in IMAGE_SUFFIXES:
            xs.append(_read_image(p, input_shape, invert, fit, notes)[None])
            labels.append(p.name)
        elif p.suffix.lower() in (".csv", ".tsv", ".txt"):
            x, lab = _read_csv_rows(p, input_shape, feature_names)
            xs.append(x)
            labels += lab
        else:
            raise DataError(f"{f}: unknown file type (images: {', '.join(sorted(IMAGE_SUFFIXES))}; rows: .csv)")
    return np.ascontiguousarray(np.concatenate(xs), dtype=np.float32), labels
