"""Per-dataset training defaults: every built-in dataset has a row, the options a user sets always win."""

from __future__ import annotations

import pytest
from tests.cli.conftest import invoke
from tuinet.cli.train import build_config
from tuinet.data import builtin_datasets
from tuinet.training.config import TrainConfig
from tuinet.training.defaults import DATASET_DEFAULTS, describe_defaults
from tuinet.training.trainer import Trainer


def test_every_builtin_dataset_has_a_valid_row():
    assert {d["name"] for d in builtin_datasets()} == set(DATASET_DEFAULTS)
    for name, row in DATASET_DEFAULTS.items():
        TrainConfig(dataset=name, **row)  # every row is a valid configuration


def test_no_options_is_the_mnist_row():
    c = build_config({})
    row = DATASET_DEFAULTS["mnist"]
    assert c.dataset == "mnist" and all(getattr(c, k) == v for k, v in row.items())
    assert sorted(c.dataset_defaults) == sorted(row)
    assert "defaults for mnist" in describe_defaults(c) and "epochs 5" in describe_defaults(c)


def test_options_set_on_the_command_line_or_in_a_file_win(tmp_path):
    c = build_config({"dataset": "iris", "epochs": 3, "lr": 0.5, "model": None})
    assert (c.epochs, c.lr) == (3, 0.5)
    assert c.batch_size == DATASET_DEFAULTS["iris"]["batch_size"] and c.model == DATASET_DEFAULTS["iris"]["model"]
    assert "epochs" not in c.dataset_defaults and "lr" not in c.dataset_defaults
    f = tmp_path / "exp.toml"
    f.write_text('dataset = "mnist"\nbatch-size = 8\ndropout = 0.0\n')
    c = build_config({"config_file": str(f), "epochs": 2})
    assert (c.batch_size, c.dropout, c.epochs) == (8, 0.0, 2)
    assert c.schedule == DATASET_DEFAULTS["mnist"]["schedule"] and "dropout" not in c.dataset_defaults


def test_another_optimizer_or_model_drops_what_belongs_to_the_rows():
    c = build_config({"optimizer": "sgd"})  # adamw's lr and weight decay mean nothing to sgd
    assert c.optimizer == "sgd" and c.lr is None and c.weight_decay is None
    assert c.epochs == DATASET_DEFAULTS["mnist"]["epochs"]
    c = build_config({"model": "cnn"})  # the mlp's dropout is the mlp's
    assert c.model == "cnn" and c.dropout == 0.0 and c.lr == DATASET_DEFAULTS["mnist"]["lr"]


def test_a_dataset_by_path_keeps_the_global_defaults(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("a,b,y\n1,2,0\n3,4,1\n")
    c = build_config({"dataset": str(f)})
    assert c.dataset_defaults is None and c.epochs == TrainConfig.epochs and c.model == TrainConfig.model


def test_the_run_says_which_defaults_it_took(tmp_path):
    r = invoke("train", "--dataset", "gaussian", "--epochs", "1", "--headless", "--runs-dir", tmp_path)
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if x.startswith("defaults for gaussian"))
    assert "model 8" in line and "epochs" not in line  # --epochs was given: not a default


def test_the_default_spiral_run_forms_the_spiral():
    """The spiral's noise caps any classifier near 84% (see training/defaults.py); the old defaults ended at 57%."""
    final = Trainer(TrainConfig(dataset="spiral", **DATASET_DEFAULTS["spiral"], keep_epochs=0), run_dir=False).run()
    assert final["event"] == "finished" and final["test_last"]["accuracy"] >= 0.75


def test_a_bad_row_field_is_refused():
    with pytest.raises(Exception, match="dataset_defaults"):
        TrainConfig(dataset_defaults=["no_such_option"])
