"""TrainConfig: TOML files, overrides, and one clear line for every bad value."""

from __future__ import annotations

import pytest

from tuinet.errors import ConfigError
from tuinet.training.config import TrainConfig


def write(tmp_path, text, name="exp.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_toml_top_level_and_train_table(tmp_path):
    a = TrainConfig.from_toml(write(tmp_path, 'dataset = "iris"\nlr = 0.01\nepochs = 3\nbetas = [0.7, 0.9]\n'))
    assert (a.dataset, a.lr, a.epochs, a.betas) == ("iris", 0.01, 3, (0.7, 0.9))
    b = TrainConfig.from_toml(write(tmp_path, '[train]\nbatch-size = 16\nschedule = "one-cycle"\n', "b.toml"))
    assert b.batch_size == 16 and b.schedule == "onecycle"


def test_overrides_win_over_the_file(tmp_path):
    p = write(tmp_path, 'dataset = "iris"\nlr = 0.01\nepochs = 3\n')
    c = TrainConfig.from_toml(p, overrides={"lr": 0.5, "seed": 9})
    assert (c.dataset, c.lr, c.epochs, c.seed) == ("iris", 0.5, 3, 9)


def test_int_accepted_for_float_and_round_trip(tmp_path):
    c = TrainConfig.from_toml(write(tmp_path, "lr = 1\nbetas = \"0.8,0.99\"\n"))
    assert c.lr == 1.0 and isinstance(c.lr, float) and c.betas == (0.8, 0.99)
    again = TrainConfig.from_dict(c.to_dict())
    assert again == c


@pytest.mark.parametrize("text, words", [
    ('learning_rate = 0.1\n', ["exp.toml", "unknown key 'learning_rate'"]),
    ('epochs = "ten"\n', ["exp.toml", "'epochs'", "whole number"]),
    ('epochs = 2.5\n', ["exp.toml", "'epochs'", "whole number"]),
    ('lr = -0.1\n', ["exp.toml", "lr", "positive"]),
    ('lr = "fast"\n', ["exp.toml", "'lr'", "a number"]),
    ('nesterov = "yes"\n', ["exp.toml", "'nesterov'", "true or false"]),
    ('batch_size = 0\n', ["exp.toml", "batch_size"]),
    ('dropout = 1.5\n', ["exp.toml", "dropout"]),
    ('schedule = "sometimes"\n', ["exp.toml", "unknown schedule 'sometimes'"]),
    ('betas = [0.9]\n', ["exp.toml", "betas"]),
    ('val_split = 0.6\ntest_split = 0.5\n', ["exp.toml", "val_split + test_split"]),
    ('epochs = \n', ["exp.toml", "not valid TOML"]),
    ('train = 3\n', ["exp.toml", "[train] must be a table"]),
])
def test_bad_values_name_the_file_and_the_key(tmp_path, text, words):
    with pytest.raises(ConfigError) as exc:
        TrainConfig.from_toml(write(tmp_path, text))
    msg = str(exc.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="configuration file not found"):
        TrainConfig.from_toml(tmp_path / "nope.toml")


def test_direct_construction_validates():
    with pytest.raises(ConfigError, match="clip_grad"):
        TrainConfig(clip_grad=-1.0)
    with pytest.raises(ConfigError, match="patience"):
        TrainConfig(patience=0)
    with pytest.raises(ConfigError, match="on_divergence"):
        TrainConfig(on_divergence="explode")


def test_runs_dir_from_environment(monkeypatch):
    monkeypatch.setenv("TUINET_RUNS_DIR", "/tmp/somewhere")
    assert TrainConfig().runs_dir == "/tmp/somewhere"
