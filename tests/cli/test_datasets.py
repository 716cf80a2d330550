"""`tuinet datasets` and `tuinet datasets show`, plus the terminal image renderer."""

import json

import numpy as np
from click.testing import CliRunner

from tuinet.cli.datasets import datasets
from tuinet.data import render_image, render_image_text


def test_list_builtins():
    result = CliRunner().invoke(datasets, [])
    assert result.exit_code == 0
    for name in ("mnist", "iris", "wine", "digits", "spiral", "sine", "70,000", "28x28x1"):
        assert name in result.output


def test_show_table():
    result = CliRunner().invoke(datasets, ["show", "iris", "--seed", "1", "--samples", "3"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "train 120 · val 15 · test 15" in out and "setosa" in out and "petal_width_cm" in out
    assert "first 3 training samples" in out


def test_show_images_draws_half_blocks():
    result = CliRunner().invoke(datasets, ["show", "mnist", "--limit", "50", "--samples", "2"])
    assert result.exit_code == 0, result.output
    assert "(28, 28, 1)" in result.output and ("▀" in result.output or "█" in result.output)


def test_show_json_and_options():
    result = CliRunner().invoke(datasets, ["show", "moons", "--n-samples", "100", "--val-split", "0.2",
                                           "--test-split", "0", "--json"])
    assert result.exit_code == 0, result.output
    d = json.loads(result.output)
    assert d["sizes"] == {"train": 80, "val": 20, "test": 0}


def test_a_bare_name_shows_the_dataset():
    """`tuinet datasets iris` is `tuinet datasets show iris`, options included; an unknown one is one Error line."""
    bare = CliRunner().invoke(datasets, ["iris", "--seed", "1", "--samples", "3"])
    shown = CliRunner().invoke(datasets, ["show", "iris", "--seed", "1", "--samples", "3"])
    assert bare.exit_code == 0, bare.output
    assert bare.output == shown.output
    missing = CliRunner().invoke(datasets, ["nope"])
    assert missing.exit_code == 1 and missing.output.startswith("Error: nope: no such file or folder")
    assert len(missing.output.strip().splitlines()) == 1


def test_bad_option_values_are_one_line():
    result = CliRunner().invoke(datasets, ["show", "iris", "--val-split", "0.9", "--test-split", "0.5"])
    assert result.exit_code == 1 and result.output.startswith("Error: invalid splits")


def test_render_image_shapes_and_modes(monkeypatch):
    img = np.zeros((28, 28, 1), np.float32)
    img[:14] = 1.0
    monkeypatch.setenv("NO_COLOR", "1")
    plain = render_image(img)
    lines = plain.split("\n")
    assert len(lines) == 14 and all(len(ln) == 28 for ln in lines)
    assert lines[0] == "█" * 28 and lines[-1] == " " * 28
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("COLORTERM", "truecolor")
    colored = render_image(img)
    assert "\x1b[38;2;255;255;255m\x1b[48;2;255;255;255m▀" in colored and colored.count("▀") == 28 * 14
    monkeypatch.setenv("COLORTERM", "")
    assert "\x1b[38;5;" in render_image(img)
    odd = render_image(np.ones((5, 3)), color=False)  # odd height: padded with a dark row
    assert odd.split("\n") == ["███", "███", "▀▀▀"]


def test_render_image_text():
    img = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    text = render_image_text(img)
    assert text.plain == "▀▀▀▀\n▀▀▀▀"
    assert len(text.spans) == 8


def test_render_image_text_draws_runs_of_equal_cells_as_one_span():
    from rich.console import Console

    img = np.zeros((4, 8), dtype=np.float32)
    img[0, 2] = 1.0
    text = render_image_text(img)
    assert text.plain == "▀" * 8 + "\n" + "▀" * 8
    assert len(text.spans) == 4, "black, the white dot, black; the second row all black"
    console = Console(width=20, color_system="truecolor", file=open("/dev/null", "w"))  # noqa: SIM115
    cells = [(ch, seg.style.color.triplet, seg.style.bgcolor.triplet) for seg in console.render(text)
             if seg.style for ch in seg.text]
    dot = [c for c in cells if c[1] != (0, 0, 0)]
    assert len(cells) == 16 and dot == [("▀", (255, 255, 255), (0, 0, 0))]


def test_show_draws_the_samples_as_the_augmentation_gives_them():
    """The pictures drawn are the augmenter's versions of the first training samples, seeded by --seed."""
    from tuinet.cli.datasets import _samples
    from tuinet.data import load_dataset
    from tuinet.training.augmenting import make_augmenter

    args = ["show", "digits", "--samples", "3", "--seed", "2"]
    plain = CliRunner().invoke(datasets, args)
    moved = CliRunner().invoke(datasets, [*args, "--augment", "shift=2,rotate=20"])
    assert plain.exit_code == 0 and moved.exit_code == 0, moved.output
    assert "first 3 training samples, augmented (shift=2,rotate=20: one random version each):" in moved.output
    ds = load_dataset("digits", seed=2)
    expected = _samples(ds, make_augmenter("rotate=20,shift=2", ds.x_train, ds.input_shape, "digits", 2)(ds.x_train[:3]))
    assert moved.output.rstrip().endswith(expected.rstrip())
    assert not plain.output.rstrip().endswith(expected.rstrip())
    bad = CliRunner().invoke(datasets, ["show", "iris", "--augment", "rotate=10"])
    assert bad.exit_code != 0 and "Error: --augment rotate: works on pictures" in bad.output
