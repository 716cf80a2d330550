"""Optimizers: golden values from the published torch.optim update rules, several steps, every option."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tuinet.engine.fpmode import flush_denormals
from tuinet.engine.optim import make_optimizer
from tuinet.errors import ConfigError

P0 = [0.5, -1.2, 2.0, 0.0, -0.3]
GRADS = [
    [0.1, -0.2, 0.3, -0.4, 0.5],
    [-0.3, 0.1, 0.2, 0.05, -0.1],
    [0.2, 0.2, -0.5, 0.3, 0.0],
    [0.05, -0.4, 0.1, -0.2, 0.25],
    [-0.1, 0.3, 0.0, 0.1, -0.3],
]


def run_ours(name, steps=5, lr=None, **hyper):
    p = np.array(P0, dtype=np.float32)
    opt = make_optimizer(name, [p], lr=lr, **hyper)
    out = []
    for g in GRADS[:steps]:
        opt.step([np.array(g, dtype=np.float32)])
        out.append(p.copy())
    return out


# --- reference implementations, written from the algorithm boxes in the torch.optim docs (float64, scalars) ---


def ref_sgd(lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, steps=5):
    p = list(P0)
    buf = [None] * len(p)
    out = []
    for g in GRADS[:steps]:
        for i in range(len(p)):
            d = g[i] + weight_decay * p[i]
            if momentum != 0:
                buf[i] = d if buf[i] is None else momentum * buf[i] + (1 - dampening) * d
                d = d + momentum * buf[i] if nesterov else buf[i]
            p[i] -= lr * d
        out.append(list(p))
    return out


def ref_adam(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled=False, steps=5):
    b1, b2 = betas
    p = list(P0)
    m = [0.0] * len(p)
    v = [0.0] * len(p)
    vmax = [0.0] * len(p)
    out = []
    for t, g in enumerate(GRADS[:steps], start=1):
        for i in range(len(p)):
            d = g[i]
            if decoupled:
                p[i] *= 1 - lr * weight_decay
            else:
                d += weight_decay * p[i]
            m[i] = b1 * m[i] + (1 - b1) * d
            v[i] = b2 * v[i] + (1 - b2) * d * d
            mhat = m[i] / (1 - b1 ** t)
            if amsgrad:
                vmax[i] = max(vmax[i], v[i])
                vhat = vmax[i] / (1 - b2 ** t)
            else:
                vhat = v[i] / (1 - b2 ** t)
            p[i] -= lr * mhat / (math.sqrt(vhat) + eps)
        out.append(list(p))
    return out


def ref_rmsprop(lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, steps=5):
    p = list(P0)
    sq = [0.0] * len(p)
    ga = [0.0] * len(p)
    buf = [0.0] * len(p)
    out = []
    for g in GRADS[:steps]:
        for i in range(len(p)):
            d = g[i] + weight_decay * p[i]
            sq[i] = alpha * sq[i] + (1 - alpha) * d * d
            if centered:
                ga[i] = alpha * ga[i] + (1 - alpha) * d
                avg = math.sqrt(sq[i] - ga[i] ** 2) + eps
            else:
                avg = math.sqrt(sq[i]) + eps
            if momentum > 0:
                buf[i] = momentum * buf[i] + d / avg
                p[i] -= lr * buf[i]
            else:
                p[i] -= lr * d / avg
        out.append(list(p))
    return out


def ref_adagrad(lr, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10, steps=5):
    p = list(P0)
    s = [initial_accumulator_value] * len(p)
    out = []
    for t, g in enumerate(GRADS[:steps], start=1):
        clr = lr / (1 + (t - 1) * lr_decay)
        for i in range(len(p)):
            d = g[i] + weight_decay * p[i]
            s[i] += d * d
            p[i] -= clr * d / (math.sqrt(s[i]) + eps)
        out.append(list(p))
    return out


def _compare(ours, ref, rtol=2e-5, atol=2e-6):
    for step, (a, b) in enumerate(zip(ours, ref), start=1):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"step {step}")


SGD_CASES = [
    dict(),
    dict(momentum=0.9),
    dict(momentum=0.9, dampening=0.1),
    dict(momentum=0.8, nesterov=True),
    dict(momentum=0.9, weight_decay=0.01),
    dict(weight_decay=0.1),
]


@pytest.mark.parametrize("hyper", SGD_CASES, ids=str)
def test_sgd_matches_published_rule(hyper):
    _compare(run_ours("sgd", lr=0.1, **hyper), ref_sgd(0.1, **hyper))


ADAM_CASES = [dict(), dict(betas=(0.7, 0.9)), dict(weight_decay=0.05), dict(amsgrad=True), dict(eps=1e-3)]


@pytest.mark.parametrize("hyper", ADAM_CASES, ids=str)
def test_adam_matches_published_rule(hyper):
    _compare(run_ours("adam", lr=0.01, **hyper), ref_adam(0.01, **hyper))


@pytest.mark.parametrize("hyper", [dict(), dict(weight_decay=0.1), dict(amsgrad=True, weight_decay=0.05)], ids=str)
def test_adamw_decoupled_weight_decay(hyper):
    wd = hyper.get("weight_decay", 1e-2)  # torch AdamW default
    ref_hyper = {k: v for k, v in hyper.items() if k != "weight_decay"}
    _compare(run_ours("adamw", lr=0.01, **hyper), ref_adam(0.01, weight_decay=wd, decoupled=True, **ref_hyper))


@pytest.mark.parametrize("hyper", [dict(), dict(momentum=0.9), dict(centered=True),
                                   dict(centered=True, momentum=0.5, weight_decay=0.01), dict(alpha=0.9)], ids=str)
def test_rmsprop_matches_published_rule(hyper):
    _compare(run_ours("rmsprop", lr=0.01, **hyper), ref_rmsprop(0.01, **hyper))


@pytest.mark.parametrize("hyper", [dict(), dict(lr_decay=0.1), dict(initial_accumulator_value=0.1, weight_decay=0.1)],
                         ids=str)
def test_adagrad_matches_published_rule(hyper):
    _compare(run_ours("adagrad", lr=0.1, **hyper), ref_adagrad(0.1, **hyper))


def test_hand_computed_first_steps():
    """Numbers worked out by hand, independent of the reference functions above."""
    # SGD lr 0.1, momentum 0.9: step 1 p = 0.5 - 0.1*0.1 = 0.49; step 2 buf = 0.9*0.1 - 0.3 = -0.21,
    # p = 0.49 + 0.021 = 0.511
    out = run_ours("sgd", steps=2, lr=0.1, momentum=0.9)
    assert out[0][0] == pytest.approx(0.49, abs=1e-7)
    assert out[1][0] == pytest.approx(0.511, abs=1e-6)
    # Adam's first step moves every coordinate with a nonzero gradient by lr * g/(|g| + eps') ~= lr * sign(g)
    out = run_ours("adam", steps=1, lr=0.01)
    np.testing.assert_allclose(out[0], [0.49, -1.19, 1.99, 0.01, -0.31], atol=1e-6)
    # Adagrad's first step: lr * g / |g| = lr * sign(g)
    out = run_ours("adagrad", steps=1, lr=0.1)
    np.testing.assert_allclose(out[0], [0.4, -1.1, 1.9, 0.1, -0.4], atol=1e-6)


def test_torch_defaults():
    p = [np.zeros(3, np.float32)]
    assert make_optimizer("adam", p).lr == 1e-3
    assert make_optimizer("adam", p).hyper["betas"] == (0.9, 0.999)
    assert make_optimizer("adamw", p).hyper["weight_decay"] == 1e-2
    assert make_optimizer("rmsprop", p).lr == 1e-2 and make_optimizer("rmsprop", p).hyper["alpha"] == 0.99
    assert make_optimizer("adagrad", p).hyper["eps"] == 1e-10
    assert make_optimizer("momentum", p).hyper["momentum"] == 0.9


def test_learning_rate_can_change_between_steps():
    p = np.array([1.0], dtype=np.float32)
    opt = make_optimizer("sgd", [p], lr=0.1)
    opt.step([np.array([1.0], np.float32)])
    opt.lr = 0.5
    opt.step([np.array([1.0], np.float32)])
    assert p[0] == pytest.approx(1.0 - 0.1 - 0.5)


def test_optimizer_state_round_trip():
    a = np.array(P0, dtype=np.float32)
    b = a.copy()
    opt_a = make_optimizer("adam", [a], lr=0.01)
    for g in GRADS[:2]:
        opt_a.step([np.array(g, np.float32)])
    meta, arrays = opt_a.state_dict()
    b[:] = a
    opt_b = make_optimizer("adam", [b], lr=0.01)
    opt_b.load_state_dict(meta, {k: v.copy() for k, v in arrays.items()})
    for g in GRADS[2:]:
        opt_a.step([np.array(g, np.float32)])
        opt_b.step([np.array(g, np.float32)])
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name,hyper,message", [
    ("adam", {"betas": (1.2, 0.9)}, "betas"),
    ("sgd", {"nesterov": True}, "nesterov"),
    ("sgd", {"betas": (0.9, 0.9)}, "unknown hyperparameter"),
    ("nadam", {}, "unknown optimizer"),
])
def test_bad_hyperparameters_are_clear_errors(name, hyper, message):
    with pytest.raises(ConfigError, match=message):
        make_optimizer(name, [np.zeros(2, np.float32)], **hyper)


def test_negative_learning_rate_is_refused():
    with pytest.raises(ConfigError, match="learning rate"):
        make_optimizer("sgd", [np.zeros(2, np.float32)], lr=-0.1)


def test_large_parameters_use_the_parallel_path_identically():
    """Arrays bigger than one chunk take the prange path; it must give the same numbers as the reference."""
    rng = np.random.default_rng(0)
    n = 50_000
    p = rng.standard_normal(n).astype(np.float32)
    p_ref = p.astype(np.float64)
    opt = make_optimizer("adam", [p], lr=0.01, weight_decay=0.01)
    m = np.zeros(n)
    v = np.zeros(n)
    for t in range(1, 4):
        g = rng.standard_normal(n).astype(np.float32)
        opt.step([g])
        d = g + 0.01 * p_ref
        m = 0.9 * m + 0.1 * d
        v = 0.999 * v + 0.001 * d * d
        p_ref -= 0.01 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    np.testing.assert_allclose(p, p_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,hyper", [("adam", {}), ("adamw", {}), ("adam", {"amsgrad": True}),
                                        ("sgd", {"momentum": 0.9}), ("rmsprop", {"momentum": 0.9, "centered": True})])
def test_moments_of_a_silent_parameter_flush_to_zero_not_to_denormals(name, hyper):
    """A parameter whose gradient stays zero (a dead unit) ends with zero moments, never denormal ones (x86
    computes with denormals about 100x slower); its value is what the published rule gives. The optimizers flush
    them themselves, so this holds where the CPU computes with subnormal numbers (here made to, in this thread;
    the trainer's threads flush them anyway: tests/engine/test_fpmode.py)."""
    flush_denormals(False)
    p = np.array([0.5, -0.25], dtype=np.float32)
    opt = make_optimizer(name, [p], lr=1e-3, **hyper)
    opt.step([np.array([1e-3, -2e-3], dtype=np.float32)])
    after_first = p.copy()
    zero = np.zeros(2, dtype=np.float32)
    for _ in range(1200):  # 0.9 ** 1200 takes a moment of 1e-3 below 1e-38
        opt.step([zero])
    tiny = np.finfo(np.float32).tiny
    for st in opt.state:
        for key, a in st.items():
            assert not np.any((a != 0) & (np.abs(a) < tiny)), f"{name}: denormal {key}"
    assert np.all(np.isfinite(p)) and np.all(np.abs(p - after_first) < 0.1)


def test_a_nan_gradient_still_reaches_the_weights():
    """The flush to zero keeps NaN (the divergence guard looks for it in the weights)."""
    p = np.ones(3, dtype=np.float32)
    make_optimizer("adam", [p]).step([np.array([np.nan, 0.0, 1.0], dtype=np.float32)])
    assert np.isnan(p[0]) and np.isfinite(p[1:]).all()


CONFIGS = [("sgd", {}), ("sgd", {"momentum": 0.9}), ("sgd", {"momentum": 0.9, "nesterov": True}), ("adam", {}),
           ("adam", {"amsgrad": True}), ("adamw", {}), ("rmsprop", {}), ("rmsprop", {"momentum": 0.9}),
           ("rmsprop", {"centered": True}), ("adagrad", {})]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name,hyper", CONFIGS)
def test_step_says_whether_every_weight_is_finite_after_it(name, hyper, threads):
    """``step`` answers the divergence guard's question (is every parameter finite after the update?) from the
    values its kernels write: a NaN or an infinity in any gradient, at either end of a parameter, inside or at the
    edge of a parallel chunk, in a small or a large parameter, is answered False, and True otherwise; the answer
    always agrees with reading the weights."""
    import numba

    from tuinet.engine.kernels import CHUNK

    sizes = [5, 3 * CHUNK + 7, 1]
    spots = [(0, 0), (0, 4), (1, 0), (1, CHUNK - 1), (1, CHUNK), (1, 3 * CHUNK + 6), (2, 0)]
    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        rng = np.random.default_rng(3)
        for k, i in [(None, None)] + spots:
            for bad in (np.nan, np.inf, -np.inf) if k is not None else (None,):
                params = [rng.standard_normal(n).astype(np.float32) for n in sizes]
                opt = make_optimizer(name, params, lr=1e-3, **hyper)
                grads = [rng.standard_normal(n).astype(np.float32) for n in sizes]
                assert opt.step(grads) is True
                if k is not None:
                    grads[k][i] = bad
                finite = opt.step(grads)
                assert finite is all(np.isfinite(p).all() for p in params)
                assert finite is (k is None), (k, i, bad)
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("name,hyper", CONFIGS)
def test_step_reports_an_overflow_from_finite_gradients(name, hyper):
    """A learning rate so large that finite gradients push a weight past float32's range: the update's own
    overflow is reported too, not only a non-finite input."""
    p = np.array([3.4e38, -1.0, 0.5], dtype=np.float32)  # float32's largest is 3.40282e38
    opt = make_optimizer(name, [p], lr=1e37, **hyper)
    finite = opt.step([np.array([-1e10, 0.1, 0.2], dtype=np.float32)])
    assert not np.isfinite(p).all() and finite is False


def test_adam_updates_every_parameter_in_one_call_like_one_by_one():
    """The all-parameter kernels (on one thread, and spread over Numba's threads) give the same bits as one
    optimizer per parameter, for parameters smaller and larger than one chunk."""
    from tuinet.engine import optim as O

    rng = np.random.default_rng(1)
    sizes = [5, 8192, 20_000, 1]
    start = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    alone, together, spread = ([p.copy() for p in start] for _ in range(3))
    opts = [make_optimizer("adam", [p], lr=0.01, weight_decay=0.01) for p in alone]
    opt = make_optimizer("adam", together, lr=0.01, weight_decay=0.01)
    moments = [np.zeros(n, np.float32) for n in sizes * 2]
    f = np.float32
    for t in range(1, 4):
        grads = [rng.standard_normal(n).astype(np.float32) for n in sizes]
        for one, g in zip(opts, grads):
            one.step([g])
        opt.step(grads)
        arrays = O._typed(spread + grads + moments + [O._EMPTY] * len(sizes))
        O._adam_all_parallel(arrays, len(sizes), *O._work_table(sizes, 3), f(0.01), f(0.9), f(0.999), f(1e-8),
                             f(0.01), False, False, f(1.0 - 0.9 ** t), f(math.sqrt(1.0 - 0.999 ** t)))
    for a, b, c in zip(alone, together, spread):
        assert np.array_equal(a, b) and np.array_equal(a, c)


def test_adam_follows_arrays_it_is_given_anew_and_copies_update_their_own():
    """The one-call Adam keeps its arrays in a list built once; new gradient or state arrays, and a deep copy of
    the optimizer, are picked up instead of updating the old ones."""
    import copy

    p = np.ones(4, dtype=np.float32)
    opt = make_optimizer("adam", [p], lr=0.1)
    opt.step([np.ones(4, dtype=np.float32)])
    opt.state[0]["exp_avg"] = np.zeros(4, dtype=np.float32)
    opt.step([np.full(4, 2.0, dtype=np.float32)])
    assert np.allclose(opt.state[0]["exp_avg"], 0.2)
    twin = copy.deepcopy(opt)
    before = p.copy()
    twin.step([np.ones(4, dtype=np.float32)])
    assert np.array_equal(p, before) and not np.array_equal(twin.params[0], before)


def test_adam_shares_the_elements_out_evenly_over_the_threads():
    """The pieces of the all-parameter Adam cover every element once, at most CHUNK each, in order, each starting at
    a multiple of ALIGN in its array (so the vector loop's scalar rest falls on the same elements whatever the thread
    count), and each thread's run of pieces holds an equal share of the elements, give or take ALIGN."""
    from tuinet.engine import optim as O

    for sizes, parts in (([200_704, 256, 32_768, 128, 1_280, 10], 2), ([5, 8192, 20_000, 1], 3), ([3], 4),
                         ([O.CHUNK * 3], 2), ([], 2), ([100_003, 7, 65_539], 5)):
        work, bounds = O._work_table(sizes, parts)
        assert len(bounds) == parts + 1 and bounds[0] == 0 and bounds[-1] == len(work)
        assert (np.diff(bounds) >= 0).all()
        covered = [(int(k), s) for k, s0, e in work for s in range(s0, e)]
        assert covered == [(k, s) for k, n in enumerate(sizes) for s in range(n)]
        assert all(0 < e - s0 <= O.CHUNK and s0 % O.ALIGN == 0 for _, s0, e in work)
        shares = [int((work[bounds[p]:bounds[p + 1], 2] - work[bounds[p]:bounds[p + 1], 1]).sum()) for p in range(parts)]
        assert max(shares) - min(shares) <= O.ALIGN, (sizes, parts, shares)
