"""SPEC parsing: the documented shape loads; every mistake is one `Error:` line before anything runs."""

from __future__ import annotations

import pytest

from tests.sweep.conftest import run_cli, write_spec
from tuinet.errors import ConfigError
from tuinet.sweep.spec import load_spec

README_SPEC = """
[train]                 # any `tuinet train` option, as in `train --config`
dataset = "digits"
epochs = 20
[search]                # the space: log_uniform, uniform, int, choice, grid
lr = {log_uniform = [1e-4, 1e-1]}
dropout = {uniform = [0.0, 0.5]}
optimizer = {choice = ["adam", "sgd"]}
model = {choice = ["mlp", "128,64"]}
[sweep]
objective = "val_loss"  # or "val_accuracy"; the direction follows from it
trials = 16
sampler = "tpe"         # tpe (default), random, grid
pruner = "median"       # median (default), hyperband, none
"""


def test_the_documented_spec_loads_and_flags_override_it(tmp_path):
    path = write_spec(tmp_path, README_SPEC, name="lr-search.toml")
    spec = load_spec(path)
    assert spec.name == "lr-search" and spec.trials == 16 and spec.direction == "minimize"
    assert spec.train == {"dataset": "digits", "epochs": 20}
    assert [(p.name, p.kind) for p in spec.search.values()] == [
        ("lr", "log_uniform"), ("dropout", "uniform"), ("optimizer", "choice"), ("model", "choice")]
    spec = load_spec(path, {"trials": 3, "objective": "val_accuracy", "sampler": "random", "name": "x"})
    assert (spec.trials, spec.direction, spec.sampler, spec.name) == (3, "maximize", "random", "x")
    config = spec.trial_config({"lr": 0.01, "dropout": 0.25, "optimizer": "sgd", "model": "128,64"}, "x-t000")
    assert (config.lr, config.dropout, config.optimizer, config.model, config.epochs) == (0.01, 0.25, "sgd",
                                                                                          "128,64", 20)


def test_grid_has_as_many_trials_as_points(tmp_path):
    path = write_spec(tmp_path, '[train]\ndataset = "digits"\n[search]\nbatch_size = {grid = [32, 64]}\n'
                                'seed = {int = [0, 2]}\n[sweep]\nsampler = "grid"\ntrials = 50\n')
    spec = load_spec(path)
    assert spec.trials == 6 and spec.grid() == {"batch_size": [32, 64], "seed": [0, 1, 2]}


@pytest.mark.parametrize("search, sweep, message", [
    ('lrr = {uniform = [0.1, 0.2]}', "", "[search] unknown option 'lrr'"),
    ('lr = {uniform = [0.1, 0.1]}', "", "[search] lr: empty range [0.1, 0.1]"),
    ('dropout = {uniform = [0.4, 0.2]}', "", "empty range [0.4, 0.2]"),
    ('optimizer = {choice = ["adam", "adamm"]}', "", "unknown optimizer 'adamm'"),
    ('optimizer = {choice = []}', "", "choice is empty"),
    ('dropout = {uniform = [0.0, 1.5]}', "", "the value 1.5 is refused"),
    ('batch_size = {uniform = [16, 64]}', "", "takes whole numbers; use int"),
    ('lr = {uniform = ["a", 1]}', "", "uniform takes [low, high]"),
    ('lr = {normal = [0, 1]}', "", "unknown distribution 'normal'"),
    ('lr = {log_uniform = [0, 1]}', "", "log_uniform needs low > 0"),
    ('lr = {uniform = [0.1, 0.2]}', 'trials = "many"', "[sweep] trials must be a whole number"),
    ('lr = {uniform = [0.1, 0.2]}', 'objective = "accuracy"', "unknown objective 'accuracy'"),
    ('lr = {uniform = [0.1, 0.2]}', 'budget = 3', "[sweep] unknown key 'budget'"),
    ('lr = {uniform = [0.1, 0.2]}', 'sampler = "grid"', "the grid sampler needs grid, choice or int"),
    ('name = {choice = ["a", "b"]}', "", "'name' is set by the sweep"),
])
def test_a_bad_spec_is_one_error_line_and_nothing_runs(tmp_path, search, sweep, message):
    path = write_spec(tmp_path, f'[train]\ndataset = "digits"\nepochs = 2\n[search]\n{search}\n[sweep]\n{sweep}\n')
    result = run_cli("sweep", path, "--headless", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.output
    assert str(path) in lines[0] or "option" in lines[0]
    assert not (tmp_path / "runs").exists()  # nothing was created, nothing ran


def test_a_bad_train_option_and_a_model_that_cannot_be_built_are_one_line(tmp_path):
    for text, message in (('[train]\nepochs = -1\n[search]\nlr = {uniform = [0.1, 0.2]}\n', "epochs"),
                          ('[train]\nepoch = 2\n[search]\nlr = {uniform = [0.1, 0.2]}\n', "unknown key 'epoch'"),
                          ('[train]\ndataset = "digits"\n[search]\nmodel = {choice = ["16", "conv3x3x4x"]}\n',
                           "conv3x3x4x"),
                          ('[oops]\n', "unknown table [oops]")):
        path = write_spec(tmp_path, text)
        result = run_cli("sweep", path, "--headless", "--runs-dir", tmp_path / "runs")
        lines = result.output.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1 and message in lines[0], result.output
    assert not (tmp_path / "runs").exists()


def test_flags_are_checked_too(tmp_path):
    path = write_spec(tmp_path)
    for args, message in ((("--workers", 0), "--workers must be a whole number"),
                          (("--worker",), "--worker joins a shared study"),
                          (("--shared-dir", tmp_path), "--shared-dir is for --ray"),
                          (("--ray", "127.0.0.1:1"), "--ray 127.0.0.1:1")):  # nothing listens there: at once
        result = run_cli("sweep", path, "--headless", "--runs-dir", tmp_path / "runs", *args)
        assert result.exit_code == 1 and message in result.output, result.output
    with pytest.raises(ConfigError, match="not found"):
        load_spec(tmp_path / "missing.toml")
