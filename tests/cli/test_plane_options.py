"""The 2-D options of `tuinet train` on the command line: one clear line for each mistake, and a run that uses them."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tuinet.cli.group import main


def test_plane_option_mistakes_are_one_line(tmp_path):
    runner = CliRunner()
    cases = (
        (["--features", "x,q"], "Error: option --features: unknown input feature 'q'"),
        (["--dataset", "iris", "--noise", "0.1"], "Error: iris: a size and a noise level apply only to the synthetic"),
        (["--dataset", "iris", "--features", "x"], "Error: input features (x², xy, sin x, ...) need 2-D points"),
        (["--pace", "0"], "Error: option --pace must be > 0"),
        (["--n-samples", "5"], "Error: spiral: n_samples must be at least 10"),
    )
    for args, want in cases:
        r = runner.invoke(main, ["train", "--dataset", "spiral", *args, "--headless", "--runs-dir", str(tmp_path)])
        assert r.exit_code == 1 and r.output.startswith(want), (args, r.output)
        assert "Traceback" not in r.output
    assert not list(tmp_path.iterdir())  # nothing was created for a mistake


def test_a_run_with_features_noise_and_size_records_them(tmp_path):
    r = CliRunner().invoke(main, ["train", "--dataset", "xor", "--model", "4", "--features", "xy,x", "--noise", "0",
                                  "--n-samples", "50", "--epochs", "1", "--json", "--runs-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    started = next(json.loads(line) for line in r.output.splitlines() if '"started"' in line)
    assert started["config"]["features"] == "x,xy" and started["config"]["noise"] == 0.0
    assert sum(started["dataset"]["sizes"].values()) == 50
    assert started["layers"][0]["kind"] == "PlaneFeatures"
