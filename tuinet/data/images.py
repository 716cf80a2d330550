"""Image folders: one subfolder per class holding PNG/JPEG files, decoded with Pillow."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from tuinet.data.limits import check_class_count, require_regular_file
from tuinet.errors import DataError

if TYPE_CHECKING:
    from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
COLORS = {"gray": ("L", 1), "grey": ("L", 1), "rgb": ("RGB", 3)}


def read_image_folder(folder: Path, image_size: tuple[int, int] | None, color: str,
                      log: Callable[[str], None]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode ``folder/<class>/<image>`` into uint8 (N, H, W, C), int64 labels and the class names.

    Unreadable files and decompression bombs are skipped with a warning naming each one. ``image_size`` is (height, width);
    when None, the most common size among the images is used.
    """
    from PIL import Image

    if color not in COLORS:
        raise DataError(f"unknown color mode {color!r}; choose gray or rgb")
    mode, channels = COLORS[color]
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    files: list[tuple[Path, str]] = []
    for sub in subdirs:
        found = sorted(p for p in sub.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            log(f"{folder.name}: class folder {sub.name!r} has no images: ignored")
        files.extend((p, sub.name) for p in found)
    if not files:
        loose = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        hint = " (images must sit in one subfolder per class, not directly in the folder)" if loose else ""
        raise DataError(f"{folder}: no images found (expected one subfolder per class with .png/.jpg files){hint}")

    decoded: list[tuple[Image.Image, str]] = []
    skipped = []
    for path, label in files:
        try:
            decoded.append((open_image(path, mode), label))
        except DataError as e:
            skipped.append(path)
            log(f"warning: skipped unreadable image {path.relative_to(folder)}: {str(e).removeprefix(f'{path}: ')}")
    if not decoded:
        raise DataError(f"{folder}: none of the {len(files)} image files could be read")
    if skipped:
        log(f"{folder.name}: skipped {len(skipped)} unreadable file(s) of {len(files)}")

    if image_size is None:
        sizes = Counter(im.size for im, _ in decoded)
        (w, h), _ = sizes.most_common(1)[0]
        if len(sizes) > 1:
            log(f"{folder.name}: images have {len(sizes)} different sizes; resizing all to {h}x{w} "
                "(choose with --image-size)")
    else:
        h, w = image_size
        if h <= 0 or w <= 0:
            raise DataError(f"invalid image size {h}x{w}")
    x = np.empty((len(decoded), h, w, channels), dtype=np.uint8)
    for i, (im, _) in enumerate(decoded):
        if im.size != (w, h):
            im = im.resize((w, h), Image.BILINEAR)
        x[i] = np.asarray(im, dtype=np.uint8).reshape(h, w, channels)
    class_names = sorted({label for _, label in decoded})
    lookup = {name: i for i, name in enumerate(class_names)}
    y = np.array([lookup[label] for _, label in decoded], dtype=np.int64)
    if len(class_names) < 2:
        raise DataError(f"{folder}: a single class ({class_names[0]!r}); classification needs at least 2 "
                        "class subfolders with images")
    check_class_count(len(class_names), len(y), str(folder))
    return x, y, class_names


def open_image(path: Path, mode: str) -> "Image.Image":
    """Decode one image file into ``mode`` ("L" or "RGB"); DataError for an unreadable file or a decompression bomb.

    Pillow refuses images of more than twice ``Image.MAX_IMAGE_PIXELS`` pixels (DecompressionBombError) and only
    warns between once and twice that; both are refused here, before the pixels are decoded. An image with
    transparency is laid on white first, as a viewer shows it: dropping the alpha channel would show whatever
    colour its transparent pixels store, often black (a black digit drawn on a transparent canvas would be black on
    black).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        require_regular_file(path, "an image file")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                    rgba = im.convert("RGBA")
                    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)),
                                                 rgba).convert(mode)
                return im.convert(mode)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{path}: image too large, a possible decompression bomb ({str(e)[:120]})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        raise DataError(f"{path}: cannot read the image ({type(e).__name__}: {str(e)[:80]})") from None
    except MemoryError:
        raise DataError(f"{path}: image too large to decode in memory") from None
