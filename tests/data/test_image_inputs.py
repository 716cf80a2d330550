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


def _drawn_seven(path, paper=235, ink=20, size=(300, 200)):
    """A '7' drawn with a thick pen, off-centre on a page much larger than the digit."""
    from PIL import Image, ImageDraw

    im = Image.new("L", size, paper)
    ImageDraw.Draw(im).line([(60, 40), (100, 40), (70, 160)], fill=ink, width=14)
    im.save(path)


def test_digit_fit_makes_a_photographed_digit_look_like_mnists(tmp_path):
    _drawn_seven(tmp_path / "seven.png")
    x, _ = load_inputs((str(tmp_path / "seven.png"),), (28, 28, 1), None, fit="digit")
    a = x[0, :, :, 0]
    assert a.max() == 255.0 and a.min() == 0.0  # light ink on black, the contrast stretched
    rows, cols = _extent(a > 0)
    assert max(rows, cols) in (20, 21) and min(rows, cols) < 17  # fitted in the 20x20 box, its shape kept
    assert np.sum(a == 0) > 28 * 28 * 0.6  # the page around it is black (0), not paper grey
    cy, cx = (np.arange(28) @ a.sum(axis=1)) / a.sum(), (np.arange(28) @ a.sum(axis=0)) / a.sum()
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5  # its centre of mass where MNIST's are: (14, 14)


def test_digit_fit_reads_dark_ink_on_paper_and_light_ink_on_black_alike(tmp_path):
    _drawn_seven(tmp_path / "paper.png", paper=235, ink=20)
    _drawn_seven(tmp_path / "board.png", paper=10, ink=225)
    x, _ = load_inputs((str(tmp_path / "paper.png"), str(tmp_path / "board.png")), (28, 28, 1), None, fit="digit")
    np.testing.assert_allclose(x[0], x[1], atol=1.0)
    inv, _ = load_inputs((str(tmp_path / "paper.png"),), (28, 28, 1), None, invert=True, fit="digit")
    np.testing.assert_array_equal(inv[0], 255.0 - x[0])  # --invert still applies after, for white-ground models


def test_digit_fit_refuses_blank_pictures_and_colour_models(tmp_path):
    from PIL import Image

    from tuinet.errors import DataError

    Image.new("L", (40, 30), 200).save(tmp_path / "blank.png")
    with pytest.raises(DataError, match="blank.png: no digit"):
        load_inputs((str(tmp_path / "blank.png"),), (28, 28, 1), None, fit="digit")
    _drawn_seven(tmp_path / "seven.png")
    with pytest.raises(DataError, match="--fit digit is for models of gray digits"):
        load_inputs((str(tmp_path / "seven.png"),), (32, 32, 3), None, fit="digit")


@pytest.mark.parametrize("kind", ["RGBA", "LA", "P"])
def test_transparent_pictures_are_read_as_shown_on_white(tmp_path, kind):
    """A black digit drawn on a transparent canvas (whose transparent pixels store black) is black on white."""
    from PIL import Image

    a = np.zeros((30, 30, 4), np.uint8)  # transparent black everywhere
    a[5:25, 12:18] = (0, 0, 0, 255)  # an opaque black stroke
    im = Image.fromarray(a, mode="RGBA")
    if kind == "LA":
        im = im.convert("LA")
    elif kind == "P":  # a palette image whose index 0 (black) is transparent, as paint programs save them
        im = Image.fromarray((a[:, :, 3] > 0).astype(np.uint8), mode="P")
        im.putpalette([0, 0, 0, 0, 0, 0])
    im.save(tmp_path / "seven.png", **({"transparency": 0} if kind == "P" else {}))
    x, _ = load_inputs((str(tmp_path / "seven.png"),), (30, 30, 1), None)
    assert x[0, 0, 0, 0] == 255.0 and x[0, 10, 14, 0] == 0.0  # white ground, black ink
    d, _ = load_inputs((str(tmp_path / "seven.png"),), (28, 28, 1), None, fit="digit")
    assert d.max() == 255.0  # the stroke is found


def test_digit_fit_leaves_mnist_digits_where_mnist_put_them(tmp_path):
    """MNIST's own digits come out of the digit fit with their centre of mass where it was (about (14, 14), not
    the middle pixel's 13.5) and the same 20-pixel box: re-made, they still look like MNIST's."""
    from PIL import Image

    from tuinet.data import load_dataset

    x = load_dataset("mnist", normalize="none").x_test[:60, :, :, 0]
    files = []
    for i, digit in enumerate(x):
        Image.fromarray(digit.astype(np.uint8), mode="L").save(tmp_path / f"{i}.png")
        files.append(str(tmp_path / f"{i}.png"))
    out, _ = load_inputs(tuple(files), (28, 28, 1), None, fit="digit")

    def centre(a):
        return np.array([np.arange(28) @ a.sum(axis=1), np.arange(28) @ a.sum(axis=0)]) / a.sum()

    before = np.mean([centre(a) for a in x.astype(np.float64)], axis=0)
    after = np.mean([centre(a) for a in out[:, :, :, 0].astype(np.float64)], axis=0)
    assert np.all(np.abs(before - 14) < 0.2) and np.all(np.abs(after - before) < 0.2), (before, after)
    assert all(max(_extent(a > 0)) == 20 for a in out[:, :, :, 0])
