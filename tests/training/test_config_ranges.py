"""Every numeric training option is range-checked with one line: NaN and infinities in any float option, float32
overflow of the learning rate, negative seeds, non-positive counts; configuration files that are not files."""

import os

import pytest

from tuinet.errors import ConfigError
from tuinet.training.config import TrainConfig

FLOAT_FIELDS = ["lr", "momentum", "dampening", "eps", "weight_decay", "alpha", "val_split", "test_split", "l1", "l2",
                "dropout", "gamma", "plateau_factor", "min_delta", "clip_grad", "divergence_factor", "init_gain"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("name", FLOAT_FIELDS)
def test_non_finite_float_options_refused(name, value):
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({name: value}, source="options", options={name})
    msg = str(e.value)
    assert msg.startswith(f"option --{name.replace('_', '-')}") and "\n" not in msg, msg


@pytest.mark.parametrize("lr, words", [(1e39, "too large: it becomes infinite in float32"),
                                       (1e-45, "too small for float32"), (0.0, "positive"), (-1.0, "positive")])
def test_learning_rate_checked_in_float32(lr, words):
    with pytest.raises(ConfigError, match=words):
        TrainConfig(lr=lr)


@pytest.mark.parametrize("fields, words", [
    ({"seed": -1}, "seed must be a whole number from 0"),
    ({"seed": 2**63}, "seed must be a whole number from 0"),
    ({"limit": 0}, "limit must be a whole number >= 1"),
    ({"val_every": 0}, "val_every"),
    ({"plateau_patience": -1}, "plateau_patience"),
    ({"l1": -0.1}, "l1 must be >= 0"),
    ({"momentum": -0.5}, "momentum must be >= 0"),
    ({"weight_decay": -1.0}, "weight_decay must be >= 0"),
    ({"eps": 0.0}, "eps must be > 0"),
    ({"plateau_factor": 1.5}, "plateau_factor must be in (0, 1)"),
    ({"l2": 1e39}, "finite number (within float32's range)"),
    ({"betas": (float("nan"), 0.9)}, "betas"),
])
def test_out_of_range_values_refused(fields, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**fields)


def test_file_values_name_the_file_and_options_name_the_option(tmp_path):
    p = tmp_path / "exp.toml"
    p.write_text("l2 = nan\nseed = 3\n")
    with pytest.raises(ConfigError, match=r"exp.toml: l2 must be a finite number"):
        TrainConfig.from_toml(p)
    p.write_text("seed = 3\n")
    with pytest.raises(ConfigError, match=r"^option --seed must be a whole number"):
        TrainConfig.from_toml(p, overrides={"seed": -4})


def test_valid_edge_values_accepted():
    c = TrainConfig(seed=2**63 - 1, lr=3e38, l2=0.0, momentum=0.0, plateau_patience=0, limit=1)
    assert c.seed == 2**63 - 1


def test_config_that_is_not_a_regular_file(tmp_path):
    with pytest.raises(ConfigError, match="/dev/zero: not a regular file"):
        TrainConfig.from_toml("/dev/zero")
    fifo = tmp_path / "exp.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="exp.toml: not a regular file"):
        TrainConfig.from_toml(fifo)  # would block until someone writes to the pipe
    (tmp_path / "big.toml").write_text("# x\n" * 300_000)
    with pytest.raises(ConfigError, match="too large for a configuration file"):
        TrainConfig.from_toml(tmp_path / "big.toml")
