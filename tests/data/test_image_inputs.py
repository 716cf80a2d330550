"""Images given to ``tuinet predict`` whose shape is not the model's input: stretched (with a note) or padded."""

from __future__ import annotations

import numpy as np
import pytest

from tuinet.data.inputs import load_inputs


def _wide_picture(path, background=30, square=255):
    """A 56 x 28 (width x height) gray image: a 20 x 20 bright square in the middle of a flat background."""
    from PIL import Image

    a = np.full((28, 56), background, np.uint8)
    a[4:24, 18:38] = square
    Image.fromarray(a, mode="L").save(path)


def _extent(bright: np.ndarray) -> tuple[int, int]:
    """Rows and columns of a boolean picture that hold any True."""
    return int(bright.any(axis=1).sum()), int(bright.any(axis=0).sum())


def test_pad_keeps_the_shape_and_fills_with_the_border_colour(tmp_path):
    _wide_picture(tmp_path / "wide.png")
    notes: list[str] = []
    x, labels = load_inputs((str(tmp_path / "wide.png"),), (28, 28, 1), None, fit="pad", notes=notes)
    assert labels == ["wide.png"] and x.shape == (1, 28, 28, 1) and notes == []
    a = x[0, :, :, 0]
    # scaled by half to 28 x 14 and centred: 7 rows of background above and below, the border's own value
    assert np.all(a[:7] == 30) and np.all(a[21:] == 30)
    rows, cols = _extent(a > 142)  # brighter than halfway between background and square
    assert rows == cols == 10  # the square stays a square (20 x 20 halved)
    assert abs(np.argwhere(a > 142).mean(axis=0) - 13.5).max() < 0.6  # in the middle


def test_stretch_distorts_and_says_so(tmp_path):
    _wide_picture(tmp_path / "wide.png")
    notes: list[str] = []
    x, _ = load_inputs((str(tmp_path / "wide.png"),), (28, 28, 1), None, fit="stretch", notes=notes)
    rows, cols = _extent(x[0, :, :, 0] > 142)
    assert rows == 20 and cols == 10  # squeezed sideways only
    assert len(notes) == 1 and "wide.png is 56x28" in notes[0] and "--fit pad" in notes[0]


def test_nearly_square_or_same_shape_images_give_no_note(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((28, 30), np.uint8), mode="L").save(tmp_path / "a.png")  # 7% wider: no note
    Image.fromarray(np.zeros((56, 56), np.uint8), mode="L").save(tmp_path / "b.png")  # the same shape, larger
    notes: list[str] = []
    for fit in ("stretch", "pad"):
        x, _ = load_inputs((str(tmp_path / "a.png"), str(tmp_path / "b.png")), (28, 28, 1), None, fit=fit,
                           notes=notes)
        assert x.shape == (2, 28, 28, 1)
    assert notes == []


def test_pad_on_rgb_pads_each_channel_with_its_border_colour(tmp_path):
    from PIL import Image

    a = np.zeros((10, 30, 3), np.uint8)  # 30 x 10: a wide strip
    a[:] = (10, 120, 250)
    a[3:7, 13:17] = (255, 0, 0)
    Image.fromarray(a, mode="RGB").save(tmp_path / "strip.png")
    x, _ = load_inputs((str(tmp_path / "strip.png"),), (12, 12, 3), None, fit="pad")
    # scaled by 12/30 to 12 x 4, rows 4..7; the rest is the border colour, channel by channel
    assert np.all(x[0, :4] == np.array([10, 120, 250], np.float32))
    assert np.all(x[0, 8:] == np.array([10, 120, 250], np.float32))


def test_invert_applies_after_padding(tmp_path):
    _wide_picture(tmp_path / "wide.png", background=250, square=0)  # dark ink on white paper
    x, _ = load_inputs((str(tmp_path / "wide.png"),), (28, 28, 1), None, invert=True, fit="pad")
    a = x[0, :, :, 0]
    assert np.all(a[:7] == 5) and np.all(a[21:] == 5)  # the padding is paper too, inverted with it
    assert _extent(a > 130) == (10, 10)


def test_unknown_fit_is_refused(tmp_path):
    _wide_picture(tmp_path / "wide.png")
    with pytest.raises(ValueError, match="fit"):
        load_inputs((str(tmp_path / "wide.png"),), (28, 28, 1), None, fit="crop")
