"""CNN model specs (compact tokens, presets, TOML), config round-trips, checkpoints arrays, a real MNIST training
run, the one-signature-per-kernel rule, and equivalence with the PyTorch twin used by the benchmark."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.cnn_recipe import one_cycle_lr
from tuinet.engine import build_model, make_optimizer
from tuinet.engine.conv import kernels as conv_kernels
from tuinet.engine.conv import microkernels as conv_microkernels
from tuinet.engine import norm as norm_mod
from tuinet.engine import residual as res_mod
from tuinet.engine.model import Sequential
from tuinet.engine.threads import configure_threads, uses_numba_parallel
from tuinet.errors import ModelError


def kinds(model):
    return [layer.kind for layer in model.layers]


def test_compact_tokens():
    m = build_model("conv5x5x24,maxpool2,relu,conv32k3s2psame,bn,relu,avgpool2s1,res32,res48s2,gap", (28, 28, 1), 10)
    assert kinds(m) == ["Conv2D", "MaxPool2D", "ReLU", "Conv2D", "BatchNorm", "ReLU", "AvgPool2D", "ResidualBlock",
                        "ResidualBlock", "GlobalAvgPool", "Dense"]
    c1, c2 = m.layers[0], m.layers[3]
    assert (c1.filters, c1.kernel_size, c1.stride, c1.padding) == (24, (5, 5), (1, 1), "valid")
    assert (c2.filters, c2.kernel_size, c2.stride, c2.padding) == (32, (3, 3), (2, 2), "same")
    assert m.layers[6].stride == (1, 1)
    assert m.layers[8].stride == 2 and m.layers[8].has_projection
    assert m.output_shape == (10,)


def test_conv_token_options():
    m = build_model("conv3x2x8p1nb,flatten", (6, 6, 2), 3)
    c = m.layers[0]
    assert c.kernel_size == (3, 2) and c.padding == 1 and not c.use_bias and c.output_shape == (6, 7, 8)
    with pytest.raises(ModelError, match="cannot read"):
        build_model("conv5x5,relu", (28, 28, 1), 10)


def test_presets_shapes_and_sizes():
    cnn = build_model("cnn", (28, 28, 1), 10)
    assert kinds(cnn) == ["Conv2D", "MaxPool2D", "ReLU", "Conv2D", "MaxPool2D", "ReLU", "Flatten", "Dense", "ReLU",
                          "Dense"]
    assert [layer.output_shape for layer in cnn.layers[:6]] == [(24, 24, 24), (12, 12, 24), (12, 12, 24),
                                                               (10, 10, 32), (5, 5, 32), (5, 5, 32)]
    assert cnn.num_params() == 215_194
    lenet = build_model("lenet", (28, 28, 1), 10)
    assert lenet.layers[5].output_shape == (5, 5, 16) and lenet.num_params() == 61_706
    resnet = build_model("resnet", (28, 28, 1), 10)
    assert resnet.layers[-2].kind == "GlobalAvgPool" and resnet.layers[-3].output_shape == (7, 7, 64)
    assert uses_numba_parallel(cnn) and uses_numba_parallel(resnet)


def test_toml_layer_list(tmp_path):
    f = tmp_path / "net.toml"
    f.write_text("""
[[layers]]
type = "conv2d"
filters = 8
kernel_size = 3
padding = "same"
[[layers]]
type = "batchnorm"
[[layers]]
type = "relu"
[[layers]]
type = "ResidualBlock"
filters = 16
stride = 2
[[layers]]
type = "maxpool2d"
pool_size = 2
[[layers]]
type = "globalavgpool"
""")
    m = build_model(str(f), (12, 12, 1), 4)
    assert kinds(m) == ["Conv2D", "BatchNorm", "ReLU", "ResidualBlock", "MaxPool2D", "GlobalAvgPool", "Dense"]
    assert m.layers[3].output_shape == (6, 6, 16)


def test_model_config_round_trip_and_checkpoint_arrays():
    m = build_model("conv3x3x4psame,bn,relu,res8s2,gap,dense6,bn", (8, 8, 2), 3, seed=4)
    again = Sequential.from_config(m.config())
    assert again.config() == m.config()
    names = m.named_arrays()
    assert "batchnorm_1.running_var" in names and "residualblock_3.proj_bn.running_mean" in names
    assert "residualblock_3.conv1.W" in names and "batchnorm_6.gamma" in names
    x = np.random.default_rng(0).random((5, 8, 8, 2), dtype=np.float32)
    m.forward(x, training=True)  # moves the running statistics
    again.set_weights(m.get_weights())
    np.testing.assert_array_equal(again.forward(x, False), m.forward(x, False))


@pytest.mark.parametrize("spec,shape,triples", [
    ("cnn", (28, 28, 1), {0, 3}),
    ("conv3x3x12s2psame,maxpool3s2,relu,conv2x2x8,maxpool2,bn", (17, 15, 2), {0}),
    ("conv3x3x16,maxpool2,relu,conv2x2x8,maxpool2,relu", (11, 9, 3), {0, 3}),  # 2x2 windows over odd sizes
])
def test_fused_conv_maxpool_pairs_change_nothing(spec, shape, triples):
    """The model runs Conv2D + MaxPool2D pairs fused, with the ReLU after the pooling when there is one (a 2x2
    and a 3x3 pooling); outputs, each ReLU's output and gradients equal those of the layers one by one."""
    model = build_model(spec, shape, 10, seed=3)
    pairs = [i for i, layer in enumerate(model.layers) if layer.kind == "Conv2D"]
    dense_relu = {i for i, (a, b) in enumerate(zip(model.layers, model.layers[1:])) if (a.kind, b.kind) == ("Dense", "ReLU")}
    assert model.fused_pairs == set(pairs) | dense_relu and len(pairs) == 2
    assert model.fused_triples == {i for i in pairs if model.layers[i + 2].kind == "ReLU"}
    assert model.fused_triples == triples
    rng = np.random.default_rng(0)
    x = rng.random((6,) + shape, dtype=np.float32)
    y = rng.integers(0, 10, 6)
    _assert_fusion_changes_nothing(model, x, y)


def test_a_convolution_before_a_fused_batchnorm_relu_makes_their_backward_pass(monkeypatch):
    """With fusion on, the model has each Conv2D before a fused BatchNorm + ReLU make the BatchNorm's input gradient
    in its own backward pass (never written); off, the layers run their own: the same gradients bit for bit."""
    from tuinet.engine.conv.layers import Conv2D

    model = build_model("conv3x3x8psame,bn,relu,conv3x3x16s2psame,bn,relu,gap", (8, 8, 3), 10, seed=4)
    assert model._bn_links == {0, 3}
    seen = []
    backward = Conv2D.backward

    def spy(self, dy, need_dx=True, **kwargs):
        seen.append((self.name, kwargs.get("bn_relu") is not None))
        return backward(self, dy, need_dx, **kwargs)

    monkeypatch.setattr(Conv2D, "backward", spy)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 8, 8, 3)).astype(np.float32)
    y = rng.integers(0, 10, 6)
    start = model.get_weights()
    grads = []
    for fusion in (True, False):
        model.set_weights(start)
        model.fusion = fusion
        seen.clear()
        model.backward(model.loss(model.forward(x, training=True), y)[1])
        grads.append([g.copy() for g in model.grads])
        assert [linked for _, linked in seen] == [fusion, fusion]
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)


def test_a_residual_block_gathers_the_sums_of_the_linked_batchnorm_before_it(monkeypatch):
    """resnet's stem: Conv2D, BatchNorm + ReLU (linked: the convolution makes their backward pass), then a block
    whose conv1 runs by Winograd: the block gathers the BatchNorm's first-pass sums as it writes its input
    gradient, and the convolution takes them (that pass over the gradient and the BatchNorm's input is not made);
    the gradients are those without the sums, and those of the layers one by one, bit for bit (16 x 16 images: each
    sample's rows are whole 32-row blocks of the sums, so the gathered sums add in the own pass's order; with other
    sizes they differ by float32 rounding, as conv2's gathered sums of bn1 do)."""
    from tuinet.engine.conv.layers import Conv2D

    model = build_model("conv3x3x16psame,bn,relu,res16,gap", (16, 16, 1), 10, seed=6)
    assert model._bn_links == {0} and model.layers[3].sublayers["conv1"]._wino is not None
    seen = []
    backward = Conv2D.backward

    def spy(self, dy, need_dx=True, **kwargs):
        if kwargs.get("bn_relu") is not None:
            seen.append(kwargs.get("bn_sums") is not None)
        return backward(self, dy, need_dx, **kwargs)

    monkeypatch.setattr(Conv2D, "backward", spy)
    rng = np.random.default_rng(9)
    for layer in model.layers:
        if layer.kind == "BatchNorm":
            layer.params[0][:] = rng.uniform(0.5, 1.5, layer.channels)
            layer.params[1][:] = rng.standard_normal(layer.channels)
    x = rng.standard_normal((6, 16, 16, 1)).astype(np.float32)
    y = rng.integers(0, 10, 6)
    start = model.get_weights()
    grads = []
    for case in ("gathered", "own pass", "one by one"):
        model.set_weights(start)
        model.fusion = case != "one by one"
        if case == "own pass":
            monkeypatch.setattr(type(model), "_input_batchnorm", lambda self, i, stop: None)
        seen.clear()
        model.backward(model.loss(model.forward(x, training=True), y)[1])
        grads.append([g.copy() for g in model.grads])
        assert seen == {"gathered": [True], "own pass": [False], "one by one": []}[case]
    for other in grads[1:]:
        for a, b in zip(grads[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("spec,shape,fused", [("conv3x3x4psame,bn,relu,res8s2,gap", (9, 9, 2), {1}),
                                              ("bn,relu,dense8,bn,relu,dense8", (6,), {0, 3}),
                                              ("dense8,bn,relu,bn,tanh", (5,), {1})])
def test_fused_batchnorm_relu_pairs_change_nothing(spec, shape, fused):
    """BatchNorm + ReLU run fused (the ReLU in BN's output pass): outputs, ``relu.output``, gradients and running
    statistics equal those of the two layers one by one, bit for bit, also where BN is the first trainable layer."""
    model = build_model(spec, shape, 10, seed=5)
    assert model.fused_pairs == fused
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if layer.kind == "BatchNorm":
            layer.params[0][:] = rng.uniform(0.5, 1.5, layer.channels)
            layer.params[1][:] = rng.standard_normal(layer.channels)
    x = rng.standard_normal((7,) + shape).astype(np.float32)
    y = rng.integers(0, 10, 7)
    _assert_fusion_changes_nothing(model, x, y)


def _assert_fusion_changes_nothing(model, x, y):
    """One training step with the model's fused pairs and one with every layer alone, from the same weights:
    outputs, each ReLU's ``output``, gradients, weights and running statistics, and an evaluation forward all
    equal bit for bit."""
    start = model.get_weights()  # BatchNorm's running statistics move with each training forward
    results = []
    for fusion in (True, False):
        model.set_weights(start)
        model.fusion = fusion
        out = model.forward(x, training=True)
        loss, dout, _ = model.loss(out, y)
        model.backward(dout)
        relus = [layer.output.copy() for layer in model.layers if layer.kind == "ReLU"]
        results.append((out.copy(), relus, [g.copy() for g in model.grads], model.get_weights(),
                        model.forward(x[:4], training=False)))
    for fused_part, plain_part in zip(*results):
        if isinstance(fused_part, dict):
            fused_part, plain_part = list(fused_part.values()), list(plain_part.values())
        if isinstance(fused_part, list):
            for a, b in zip(fused_part, plain_part, strict=True):
                np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_array_equal(fused_part, plain_part)


def test_residual_training_is_bit_for_bit_repeatable_with_a_pinned_thread_mode():
    """Fused pairs leave training deterministic: two runs, the same weights, bit for bit."""
    rng = np.random.default_rng(0)
    xs = rng.random((3, 16, 10, 10, 1), dtype=np.float32)
    ys = rng.integers(0, 10, (3, 16))
    finals = []
    for _ in range(2):
        model = build_model("conv3x3x8psame,bn,relu,res8,res16s2,gap", (10, 10, 1), 10, seed=4)
        configure_threads(model, "numba")
        opt = make_optimizer("adam", model.params, lr=0.01)
        for x, y in zip(xs, ys):
            model.train_step(x, y, opt)
        finals.append(model.get_weights())
    for k, a in finals[0].items():
        np.testing.assert_array_equal(a, finals[1][k], err_msg=k)


def test_one_cycle_matches_torch_formula():
    total, lr = 100, 0.01
    assert one_cycle_lr(0, total, lr) == pytest.approx(lr / 25)
    assert one_cycle_lr(29, total, lr) == pytest.approx(lr)
    assert one_cycle_lr(99, total, lr) == pytest.approx(lr / 25 / 1e4)
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, cycle_momentum=False)
    for step in range(total):
        assert opt.param_groups[0]["lr"] == pytest.approx(one_cycle_lr(step, total, lr), rel=1e-6)
        opt.step()
        sched.step()


@pytest.fixture(scope="module")
def mnist_small():
    from tuinet.data import load_dataset

    return load_dataset("mnist", limit=3000, seed=0, log=lambda s: None)


def _jitted(module):
    return {name: obj for name, obj in vars(module).items() if hasattr(obj, "signatures") and hasattr(obj, "py_func")}


def test_training_reaches_accuracy_and_compiles_each_kernel_once(mnist_small):
    d = mnist_small
    # the cnn recipe on a subset, then a model that uses every other kernel (BN dense + NHWC, residual, pools)
    cnn = build_model("cnn", (28, 28, 1), 10, seed=0)
    configure_threads(cnn)
    opt = make_optimizer("adam", cnn.params, lr=0.01, betas=(0.7, 0.9))
    n, bs, epochs = len(d.x_train), 128, 2
    steps = epochs * (-(-n // bs))
    rng = np.random.default_rng(0)
    step = 0
    for _ in range(epochs):
        perm = rng.permutation(n)
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            opt.lr = one_cycle_lr(step, steps, 0.01)
            cnn.train_step(d.x_train[idx], d.y_train[idx], opt)
            step += 1
    acc = cnn.evaluate(d.x_test, d.y_test)["accuracy"]
    assert acc > 0.9, acc

    # (a MaxPool2D that is not fused with a Conv2D, so that the test alone calls every public kernel)
    other = build_model("conv3x3x8s2psame,bn,relu,maxpool2s1,res8,res16s2,avgpool2s1,gap,dense16,bn,relu", (28, 28, 1),
                        10)
    configure_threads(other)
    opt2 = make_optimizer("adam", other.params, lr=0.01)
    for i in range(0, 512, 128):
        other.train_step(d.x_train[i:i + 128], d.y_train[i:i + 128], opt2)
    other.evaluate(d.x_val[:300], d.y_val[:300])

    counts = {f"{mod.__name__}.{name}": len(fn.signatures)
              for mod in (conv_kernels, conv_microkernels, norm_mod, res_mod) for name, fn in _jitted(mod).items()}
    # helpers called only from other kernels have no signature of their own when their caller came from the cache
    public = {k: c for k, c in counts.items() if not k.rsplit(".", 1)[1].startswith("_")}
    # (the residual block's own add+ReLU kernel is gone: BN's kernels fuse it, with one signature for every mode)
    assert len(public) >= 11 and all(c == 1 for c in public.values()), public
    assert all(c <= 1 for c in counts.values()), {k: c for k, c in counts.items() if c > 1}


_COLD_COMPILE_SCRIPT = r"""
import importlib, json, pkgutil
import numpy as np
import tuinet.engine as E
from tuinet.engine import build_model, make_optimizer
from tuinet.engine.threads import configure_threads
rng = np.random.default_rng(0)
# every kind of kernel: direct and Winograd convolutions, fused BatchNorm sums, residual blocks, pools, the Dense
# micro-kernels; a batch of 37 ends in partial tiles
for spec in ("cnn", "resnet", "conv3x3x8s2psame,bn,relu,maxpool2s1,res8,res16s2,avgpool2s1,gap,dense16,bn,relu"):
    m = build_model(spec, (28, 28, 1), 10, seed=0)
    configure_threads(m)
    opt = make_optimizer("adam", m.params)
    for b in (64, 37):
        x = rng.random((b, 28, 28, 1), dtype=np.float32)
        y = rng.integers(0, 10, b)
        m.train_step(x, y, opt)
        m.evaluate(x, y)
counts = {}
for info in pkgutil.walk_packages(E.__path__, "tuinet.engine."):
    mod = importlib.import_module(info.name)
    for name, fn in vars(mod).items():
        if hasattr(fn, "signatures") and getattr(getattr(fn, "py_func", None), "__module__", None) == mod.__name__:
            counts[info.name + "." + name] = [str(s) for s in fn.signatures]
print(json.dumps(counts))
"""


@pytest.mark.slow
def test_a_cold_compile_makes_one_version_of_each_kernel(tmp_path):
    """With an empty cache (a first run) every engine kernel, helpers included, compiles for one signature.

    A helper that one caller passes a literal (``0``, ``1``, ``False``) and another a variable compiled twice, with
    the literal's type and the variable's: seconds more of a first run. In-process the check above sees helpers only
    when their callers were not loaded from the cache, so this one starts a process on an empty cache.
    """
    import json
    import os
    import subprocess
    import sys

    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, "-c", _COLD_COMPILE_SCRIPT], env=env, capture_output=True, text=True,
                         cwd=str(root), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    counts = json.loads(out.stdout.splitlines()[-1])
    compiled = {k: v for k, v in counts.items() if v}
    assert len(compiled) >= 40, sorted(compiled)  # the models above compiled the engine's kernels here
    assert {k: v for k, v in compiled.items() if len(v) > 1} == {}


def test_pytorch_twin_computes_the_same_function():
    torch = pytest.importorskip("torch")
    from tuinet.bench.torch_models import copy_weights_to_torch, torch_cnn_model

    rng = np.random.default_rng(0)
    for spec, shape in [("cnn", (28, 28, 1)), ("conv3x3x4s2psame,bn,relu,res8s2,res8,gap", (9, 9, 2))]:
        m = build_model(spec, shape, 10, seed=1)
        x = rng.random((6,) + shape, dtype=np.float32)
        m.forward(x, training=True)  # non-trivial BN running statistics
        t = torch_cnn_model(m.config()["layers"], shape)
        copy_weights_to_torch(m, t)
        t.eval()
        with torch.no_grad():
            out = t(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()
        np.testing.assert_allclose(m.forward(x, training=False), out, rtol=1e-4, atol=1e-4)
