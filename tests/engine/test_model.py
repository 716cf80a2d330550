"""Models, specs, checkpoints, dtype discipline and real learning on MNIST."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tuinet.data import load_dataset
from tuinet.engine import build_model, make_optimizer
from tuinet.engine.checkpoint import load_checkpoint, save_checkpoint
from tuinet.errors import CheckpointError, ModelError


@pytest.fixture(scope="module")
def mnist_small():
    """10,000 training images and 2,000 held-out MNIST test images."""
    d = load_dataset("mnist", limit=10_000, log=lambda m: None)
    return d


def _train(model, x, y, epochs, batch, opt, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        perm = rng.permutation(len(x))
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            model.train_step(x[idx], y[idx], opt)


def test_dense_net_learns_mnist(mnist_small):
    """Issue 2: a dense net trained on 10,000 MNIST images for 2 epochs scores >= 93% on 2,000 test images."""
    d = mnist_small
    model = build_model("mlp", d.input_shape, 10, seed=0)
    opt = make_optimizer("adam", model.params, lr=1e-3)
    _train(model, d.x_train, d.y_train, epochs=2, batch=32, opt=opt)
    held_out = np.random.default_rng(123).choice(len(d.x_test), 2000, replace=False)  # a seeded random 2,000
    x_test, y_test = d.x_test[held_out], d.y_test[held_out]
    acc = model.evaluate(x_test, y_test)["accuracy"]
    assert acc >= 0.93, f"test accuracy {acc:.4f}"
    for p in model.params:  # parameters stay float32 and C-contiguous through training
        assert p.dtype == np.float32 and p.flags.c_contiguous


def test_summary_lists_layers_shapes_and_params():
    model = build_model("784-256-128-10", (784,), 10)
    text = model.summary()
    assert "Dense(256)" in text and "(None, 256)" in text and "200,960" in text
    assert "Total params: 235,146" in text


@pytest.mark.parametrize("spec,expected_units", [
    ("784-256-128-10", [256, 128, 10]),
    ("256,128", [256, 128, 10]),
    ("mlp", [256, 128, 10]),
    ("dense64,tanh,dropout0.2,dense10", [64, 10]),
    ("32", [32, 10]),
])
def test_specs(spec, expected_units):
    model = build_model(spec, (28, 28, 1) if spec != "784-256-128-10" else (784,), 10)
    assert [layer.units for layer in model.layers if layer.kind == "Dense"] == expected_units


def test_spec_activation_option_and_init():
    model = build_model("64,32", (8,), 3, activation="tanh")
    kinds = [layer.kind for layer in model.layers]
    assert kinds == ["Dense", "Tanh", "Dense", "Tanh", "Dense"]
    assert model.layers[0].init == "xavier"
    relu = build_model("64", (8,), 3)
    assert relu.layers[0].init == "he"
    w = relu.layers[0].params[0]
    assert abs(float(w.std()) - np.sqrt(2 / 8)) < 0.05  # He: std sqrt(2/fan_in)
    assert np.all(relu.layers[0].params[1] == 0)  # zero biases


@pytest.mark.parametrize("spec,shape", [("dense16,bn,relu,skip16,dense8", (8,)),
                                         ("conv3x3x4,bn,relu,dense8", (6, 6, 1)), ("res4,gap", (6, 6, 2))])
def test_init_gain_scales_the_initial_weights_and_nothing_else(spec, shape):
    one = build_model(spec, shape, 3, seed=4)
    half = build_model(spec, shape, 3, seed=4, init_gain=0.5)
    scaled = 0
    for a, b in zip(one.layers, half.layers):
        for (name, p, _), (_, q, _) in zip(a.named_params(), b.named_params()):
            if name in a.penalized:  # the weights: exactly half (the same draws, times 0.5)
                np.testing.assert_array_equal(q, p * np.float32(0.5))
                scaled += 1
            else:  # biases, batch norm's scale and shift
                np.testing.assert_array_equal(q, p)
        for key in a.buffers:
            np.testing.assert_array_equal(a.buffers[key], b.buffers[key])
    assert scaled >= 2
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ModelError, match="init_gain must be a number > 0"):
            build_model(spec, shape, 3, init_gain=bad)


def test_same_seed_same_weights_different_seed_different():
    a = build_model("mlp", (784,), 10, seed=1).params[0]
    b = build_model("mlp", (784,), 10, seed=1).params[0]
    c = build_model("mlp", (784,), 10, seed=2).params[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("spec,message", [
    ("100-64-10", "starts with 100 inputs but the data has 784"),
    ("784-64-7", "ends with 7 outputs but the data has 10"),
    ("dense64,wobble", "cannot read 'wobble'"),
])
def test_bad_specs_are_clear(spec, message):
    with pytest.raises(ModelError, match=message):
        build_model(spec, (784,), 10)


def test_toml_model_file(tmp_path):
    f = tmp_path / "net.toml"
    f.write_text('[[layers]]\ntype = "dense"\nunits = 16\n[[layers]]\ntype = "gelu"\n[[layers]]\ntype = "Dense"\n'
                 'units = 3\n')
    model = build_model(str(f), (4,), 3)
    assert [layer.kind for layer in model.layers] == ["Dense", "GELU", "Dense"]
    bad = tmp_path / "bad.toml"
    bad.write_text('[[layers]]\ntype = "Conv9D"\n')
    with pytest.raises(ModelError, match="layer 1 has unknown type 'Conv9D'"):
        build_model(str(bad), (4,), 3)


def test_save_load_gives_identical_predictions(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((64, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 64)
    model = build_model("mlp", (28, 28, 1), 10, seed=3)
    opt = make_optimizer("adam", model.params, lr=1e-3)
    for _ in range(3):
        model.train_step(x, y, opt)
    path = save_checkpoint(tmp_path / "m.npz", model, opt, extra={"epoch": 3})
    ck = load_checkpoint(path)
    clone = ck.build_model()
    np.testing.assert_array_equal(model.predict(x), clone.predict(x))
    assert ck.extra == {"epoch": 3}
    opt2 = ck.build_optimizer(clone)
    assert opt2.t == 3 and opt2.name == "adam"
    # the restored optimizer continues exactly like the original
    model.train_step(x, y, opt)
    clone.train_step(x, y, opt2)
    np.testing.assert_allclose(model.predict(x), clone.predict(x), rtol=1e-5, atol=1e-5)
    with np.load(path, allow_pickle=False) as npz:  # loads without pickle
        assert "tuinet.json" in npz.files


def test_checkpoint_errors_are_clear(tmp_path):
    model = build_model("mlp", (784,), 10)
    good = save_checkpoint(tmp_path / "good.npz", model)
    other = build_model("64", (784,), 10)
    with pytest.raises(CheckpointError, match="another architecture"):
        load_checkpoint(good).load_into(other)
    truncated = tmp_path / "trunc.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="damaged|not a tuinet checkpoint"):
        load_checkpoint(truncated)
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a tuinet checkpoint"):
        load_checkpoint(text)
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a tuinet checkpoint"):
        load_checkpoint(plain)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.npz")
    pickled = tmp_path / "objects.npz"  # NumPy's message would suggest loading it "unsafely"
    np.savez(pickled, **{"tuinet.json": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(CheckpointError, match="holds pickled Python objects") as e:
        load_checkpoint(pickled)
    assert "allow_pickle" not in str(e.value) and "unsafe" not in str(e.value)
    # a checkpoint whose weight arrays were tampered with (wrong shape)
    tampered = tmp_path / "tampered.npz"
    with np.load(good, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["model/dense_2.W"] = np.zeros((3, 3), np.float32)
    np.savez(tampered, **arrays)
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(tampered).build_model()
    # a pickled object array is refused, never unpickled
    pickled = tmp_path / "pickled.npz"
    arrays["tuinet.json"] = np.array([{"evil": 1}], dtype=object)
    np.savez(pickled, **arrays)
    with pytest.raises(CheckpointError):
        load_checkpoint(pickled)


def test_each_kernel_has_one_signature_after_training(tmp_path):
    """A fresh process trains through the trainer; afterwards no kernel has been compiled twice."""
    script = textwrap.dedent(f"""
        import json, numba
        from tuinet.training.config import TrainConfig
        from tuinet.training.trainer import Trainer
        cfg = TrainConfig(dataset="mnist", limit=600, epochs=2, batch_size=50, l1=1e-5, l2=1e-4, dropout=0.1,
                          stats_every=3, runs_dir={str(tmp_path)!r}, clip_grad=5.0)
        final = Trainer(cfg).run()
        assert final["event"] == "finished", final
        import tuinet.engine.kernels as K, tuinet.engine.optim as O
        out = {{}}
        for mod in (K, O):
            for name in dir(mod):
                f = getattr(mod, name)
                if isinstance(f, numba.core.registry.CPUDispatcher):
                    out[mod.__name__ + "." + name] = len(f.signatures)
        print(json.dumps(out))
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    counts = json.loads(res.stdout.strip().splitlines()[-1])
    multi = {k: v for k, v in counts.items() if v > 1}
    assert not multi, f"kernels compiled more than once: {multi}"
    used = {k for k, v in counts.items() if v == 1}
    assert {"tuinet.engine.kernels.bias_relu", "tuinet.engine.kernels.relu_grad_bias",
            "tuinet.engine.kernels.softmax_cross_entropy", "tuinet.engine.optim._adam_all",
            "tuinet.engine.kernels.add_penalty_grad"} <= used
