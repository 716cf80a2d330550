"""Data augmentation: the spec, the warp against independent references (np.roll-like shifts, np.rot90, a float64
bilinear sampler written here), erasing, noise, the random state, and what it refuses."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tuinet.data.augment import Augment, background, check_input, parse_augment
from tuinet.engine.augment import Augmenter, inverse_maps, sample_boxes, warp_batch
from tuinet.training.augmenting import make_augmenter
from tuinet.errors import ConfigError


def pictures(n=5, h=9, w=7, c=2, seed=0):
    return np.random.default_rng(seed).random((n, h, w, c), dtype=np.float32)


def warp(x, mats, fill):
    out = np.full_like(x, np.nan)
    warp_batch(x, out, mats, np.asarray(fill, np.float32))
    return out


def shifted(x, dx, dy, fill):
    """``x`` (h, w, c) moved dx pixels right and dy down, ``fill`` where nothing moved in (written with slices)."""
    h, w, _ = x.shape
    out = np.empty_like(x)
    out[...] = fill
    src = x[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
    out[max(0, dy):max(0, dy) + src.shape[0], max(0, dx):max(0, dx) + src.shape[1]] = src
    return out


def bilinear_reference(img, mats_row, fill):
    """float64 bilinear sampling of ``img`` (h, w, c) through one inverse map, ``fill`` outside: the textbook
    formula, each neighbour tested on its own."""
    h, w, c = img.shape
    a, b, cc, d, e, f = mats_row
    out = np.empty((h, w, c))
    for i in range(h):
        for j in range(w):
            xs, ys = a * j + b * i + cc, d * j + e * i + f
            x0, y0 = int(np.floor(xs)), int(np.floor(ys))
            fx, fy = xs - x0, ys - y0

            def at(y, x):
                return img[y, x].astype(np.float64) if 0 <= y < h and 0 <= x < w else np.asarray(fill, np.float64)

            out[i, j] = ((1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x0 + 1))
                         + fy * ((1 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1)))
    return out


# --- the spec ------------------------------------------------------------------------------------------------------


def test_a_spec_reads_back_to_its_canonical_form():
    a = parse_augment(" Rotate=15, shift=2 ,flip,noise=0.05,erase=0.5,scale=0.1")
    assert a == Augment(shift=2, rotate=15.0, scale=0.1, flip=True, erase=0.5, noise=0.05)
    assert a.spec() == "shift=2,rotate=15,scale=0.1,flip,erase=0.5,noise=0.05"
    assert parse_augment(a.spec()) == a
    for none in (None, "", "none", "OFF"):
        assert not parse_augment(none).active and parse_augment(none).spec() == "none"
    assert parse_augment("noise=0.1").pictures_only is False and parse_augment("erase=0.2").warps is False


@pytest.mark.parametrize("spec, words", [
    ("blur=2", "unknown augmentation 'blur'; choose from shift=N"),
    ("shift=2,shift=3", "'shift' given twice"),
    ("rotate", "'rotate' needs a value, e.g. rotate=15"),
    ("shift=1.5", "'shift' must be a whole number, got '1.5'"),
    ("scale=big", "'scale' must be a number"),
    ("flip=1", "'flip' takes no value"),
    ("rotate=200", "'rotate' must be from 0 to 180, got 200"),
    ("erase=1.5", "'erase' must be from 0 to 1"),
    ("noise=nan", "'noise' must be from 0 to 10"),
    ("shift=-1", "'shift' must be from 0 to 1000"),
])
def test_a_bad_spec_is_one_line_naming_what_is_wrong(spec, words):
    with pytest.raises(ConfigError, match=None) as e:
        parse_augment(spec)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_moving_tables_is_refused_and_noise_is_not():
    with pytest.raises(ConfigError, match=r"--augment shift, flip: works on pictures, and iris's samples are rows "
                                          r"of 4 values; only noise applies"):
        check_input(parse_augment("shift=1,flip"), (4,), "iris")
    check_input(parse_augment("noise=0.1"), (4,), "iris")
    with pytest.raises(ConfigError, match="shift=8 moves digits's 8x8 pictures out of their frame"):
        check_input(parse_augment("shift=8"), (8, 8, 1), "digits")
    check_input(parse_augment("shift=7"), (8, 8, 1), "digits")
    x = np.zeros((3, 4), np.float32)
    assert make_augmenter(None, x, (4,), "iris", 0) is None and make_augmenter("none", x, (4,), "iris", 0) is None


# --- the warp ------------------------------------------------------------------------------------------------------


def test_whole_pixel_moves_copy_pixels_and_fill_the_rest_with_each_channels_background():
    x = pictures()
    fill = [-1.0, 2.0]
    moves = [(0, 0), (2, -1), (-3, 4), (6, 0), (0, -8)]
    out = warp(x, inverse_maps(np.zeros(5), np.ones(5), np.ones(5), moves, 9, 7), fill)
    for k, (dx, dy) in enumerate(moves):
        np.testing.assert_array_equal(out[k], shifted(x[k], dx, dy, fill))
    mirrored = warp(x, inverse_maps(np.zeros(5), np.ones(5), -np.ones(5), moves, 9, 7), fill)
    for k, (dx, dy) in enumerate(moves):  # mirrored first, then moved
        np.testing.assert_array_equal(mirrored[k], shifted(x[k, :, ::-1], dx, dy, fill))


def test_mirroring_and_quarter_turns_land_exactly_on_the_pixels():
    x = pictures(n=2, w=9)
    out = warp(x, inverse_maps([0, 0], [1, 1], [-1, -1], np.zeros((2, 2)), 9, 9), [0, 0])
    np.testing.assert_array_equal(out, x[:, :, ::-1])
    out = warp(x, inverse_maps(np.radians([90, -90]), [1, 1], [1, 1], np.zeros((2, 2)), 9, 9), [0, 0])
    np.testing.assert_allclose(out[0], np.rot90(x[0], -1), atol=1e-5)  # clockwise on the screen
    np.testing.assert_allclose(out[1], np.rot90(x[1], 1), atol=1e-5)


def test_turns_zooms_and_moves_match_a_float64_bilinear_sampler():
    x = pictures(n=4, h=11, w=8, c=3, seed=1)
    fill = [0.25, -0.5, 1.5]
    mats = inverse_maps(np.radians([17, -33, 170, 5]), [1.13, 0.8, 1.0, 0.55], [1, -1, 1, -1],
                        [(1, -2), (0, 0), (-3, 1), (2, 2)], 11, 8)
    out = warp(x, mats, fill)
    for k in range(4):
        np.testing.assert_allclose(out[k], bilinear_reference(x[k], mats[k], fill), atol=2e-5, err_msg=str(k))
    gray = pictures(n=4, h=11, w=8, c=1, seed=2)  # the one-channel loop is its own code
    out = warp(gray, mats, [0.1])
    for k in range(4):
        np.testing.assert_allclose(out[k], bilinear_reference(gray[k], mats[k], [0.1]), atol=2e-5, err_msg=str(k))


def test_maps_reading_far_outside_the_picture_stay_inside_the_kernels_buffers(tmp_path):
    """With Numba's bounds checks on (a fresh cache, so the kernels are compiled with them), turns, zooms down to
    a tenth and moves far off the frame read only inside the arrays, and give the background."""
    script = textwrap.dedent("""
        import numpy as np
        from tuinet.data.augment import parse_augment
        from tuinet.engine.augment import Augmenter, inverse_maps, warp_batch
        x = np.random.default_rng(0).random((64, 9, 7, 3), dtype=np.float32)
        fill = np.array([-1, -2, -3], np.float32)
        for spec in ("shift=6,rotate=180,scale=0.9,flip,erase=1", "rotate=180,scale=0.9"):
            a = Augmenter(parse_augment(spec), (9, 7, 3), fill, 0)
            for _ in range(10):
                assert np.isfinite(a(x)).all()
        out = np.empty_like(x[:2])
        warp_batch(x[:2], out, inverse_maps([0.3, 3.0], [0.1, 0.1], [1, -1], [(50, 50), (-40, 9)], 9, 7), fill)
        assert (out == fill).all()
        gray = x[:, :, :, :1].copy()
        a = Augmenter(parse_augment("shift=6,rotate=180,scale=0.9"), (9, 7, 1), fill[:1], 0)
        for _ in range(10):
            assert np.isfinite(a(gray)).all()
        print("inside")
    """)
    env = {**os.environ, "NUMBA_BOUNDSCHECK": "1", "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == "inside", done.stderr[-2000:]


# --- the augmenter -------------------------------------------------------------------------------------------------


def test_each_sample_gets_its_own_move_within_the_range_and_the_input_is_left_alone():
    x = pictures(n=40, h=8, w=8, c=1)
    x[:, 0, 0, 0] = 5.0  # a marked corner: where it lands says the move
    before = x.copy()
    aug = Augmenter(parse_augment("shift=2"), (8, 8, 1), np.zeros(1, np.float32), seed=0)
    out = aug(x)
    np.testing.assert_array_equal(x, before)
    moves = set()
    for k in range(40):
        found = [(dx, dy) for dx in range(-2, 3) for dy in range(-2, 3)
                 if np.array_equal(out[k], shifted(x[k], dx, dy, 0.0))]
        assert len(found) == 1, k
        moves.add(found[0])
    assert len(moves) >= 10  # 25 possible moves among 40 samples


def test_the_random_state_continues_exactly():
    x = pictures(n=16, h=10, w=10, c=1)
    spec = parse_augment("shift=2,rotate=20,scale=0.2,flip,erase=0.5,noise=0.1")
    a = Augmenter(spec, (10, 10, 1), np.zeros(1, np.float32), seed=7)
    a(x)
    saved = a.state()
    first = a(x)
    b = Augmenter(spec, (10, 10, 1), np.zeros(1, np.float32), seed=7)
    b.load_state(saved)
    np.testing.assert_array_equal(b(x), first)
    c = Augmenter(spec, (10, 10, 1), np.zeros(1, np.float32), seed=8)
    c(x)
    assert not np.array_equal(c(x), first)


def test_erasing_sets_one_rectangle_of_two_to_a_third_of_the_picture_to_the_background():
    rng = np.random.default_rng(0)
    boxes = sample_boxes(rng, 2000, 28, 28, 1.0)
    area = boxes[:, 2] * boxes[:, 3] / 784
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= 28).all()
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 1] + boxes[:, 3] <= 28).all()
    assert area.min() >= 0.015 and area.max() <= 0.36
    assert (sample_boxes(rng, 500, 28, 28, 0.0) == 0).all()
    half = sample_boxes(rng, 2000, 28, 28, 0.5)
    assert 0.45 < (half[:, 2] > 0).mean() < 0.55

    x = pictures(n=50, h=12, w=12, c=2) + 1.0
    out = Augmenter(parse_augment("erase=1"), (12, 12, 2), np.array([-1, -2], np.float32), seed=0)(x)
    for k in range(50):
        erased = (out[k] != x[k]).any(axis=2)
        rows, cols = np.nonzero(erased)
        assert erased.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)  # one full rectangle
        np.testing.assert_array_equal(out[k][erased], np.broadcast_to([-1, -2], (erased.sum(), 2)))


def test_noise_has_the_asked_spread_and_applies_to_tables_too():
    x = np.zeros((200, 50), np.float32)
    out = Augmenter(parse_augment("noise=0.3"), (50,), None, seed=0)(x)
    assert out.dtype == np.float32 and (x == 0).all()
    assert abs(out.mean()) < 0.01 and out.std() == pytest.approx(0.3, rel=0.02)


def test_the_background_is_each_channels_darkest_training_value():
    x = pictures(n=10, c=3)
    x[3, 2, 2] = [-4, -5, -6]
    np.testing.assert_array_equal(background(x), [-4, -5, -6])
    assert background(np.full((2, 3, 3, 1), 0.5, np.float32)).tolist() == [0.5]
