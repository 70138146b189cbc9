"""The reduced dynamics in z = W u is exact: it reproduces the full path to round-off."""

import diffrax
import jax
import numpy as np
import pytest

import dipflow as dip

from .helpers import instance

# The shared shape, n > k (σ_min(J) = 0, K_A still positive), and m = n.
SIZES = [dict(m=4, n=6, k=8, d=5), dict(m=3, n=10, k=4, d=5), dict(m=5, n=5, k=7, d=3)]
FIELDS = ("loss", "residual", "distance", "sigma_min", "kernel_rate", "signal_error")


def _compare(reduced, full, rtol):
    for name in FIELDS:
        a, b = getattr(reduced, name), getattr(full, name)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("size", SIZES)
def test_gd_reduced_equals_full(size):
    net, problem = instance(seed=4, **size)
    kw = dict(
        step_size=0.5,
        max_steps=40,
        tol=0.0,
        save_every=5,
        save_sigma_min=True,
        save_kernel_rate=True,
    )
    red = dip.gradient_descent(net, problem, reduced=True, **kw)
    full = dip.gradient_descent(net, problem, reduced=False, **kw)
    _compare(red.trajectory, full.trajectory, rtol=1e-10)
    np.testing.assert_allclose(red.net.W, full.net.W, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(red.final_loss, full.final_loss, rtol=1e-10)
    np.testing.assert_allclose(
        red.stats["stability_ratio"], full.stats["stability_ratio"], rtol=1e-10
    )
    assert red.result_name == full.result_name
    assert bool(red.stats["monotone"]) == bool(full.stats["monotone"])
    if size["n"] > size["k"]:
        assert np.all(np.asarray(red.trajectory.sigma_min) == 0.0)
        assert np.all(np.asarray(red.trajectory.kernel_rate) > 0.0)


@pytest.mark.parametrize("size", SIZES)
def test_flow_reduced_equals_full(size):
    net, problem = instance(seed=4, **size)
    ts = np.array([0.0, 0.4, 1.0, 2.0])
    # A constant step makes both paths take the same steps: agreement to round-off.
    kw = dict(
        t1=2.0,
        tol=0.0,
        save_ts=ts,
        solver=diffrax.Tsit5(),
        dt0=0.05,
        stepsize_controller=diffrax.ConstantStepSize(),
        save_sigma_min=True,
        save_kernel_rate=True,
    )
    red = dip.gradient_flow(net, problem, reduced=True, **kw)
    full = dip.gradient_flow(net, problem, reduced=False, **kw)
    _compare(red.trajectory, full.trajectory, rtol=1e-10)
    np.testing.assert_allclose(red.net.W, full.net.W, rtol=1e-10, atol=1e-12)


def test_adaptive_flow_reduced_matches_full_to_tolerance():
    net, problem = instance(seed=4)
    kw = dict(t1=50.0, tol=0.0, save_ts=np.linspace(0, 50, 6), rtol=1e-11, atol=1e-12)
    red = dip.gradient_flow(net, problem, reduced=True, **kw)
    full = dip.gradient_flow(net, problem, reduced=False, **kw)
    np.testing.assert_allclose(red.trajectory.loss, full.trajectory.loss, rtol=1e-8)
    np.testing.assert_allclose(red.net.W, full.net.W, rtol=1e-8, atol=1e-10)


def test_reduced_is_the_default_only_where_exact():
    net, problem = instance()
    assert isinstance(dip.make_dynamics(net, problem), dip.ReducedDynamics)
    assert isinstance(dip.make_dynamics(net, problem, reduced=False), dip.FullDynamics)
    both, _ = instance(train=("W", "V"))
    assert isinstance(dip.make_dynamics(both, problem), dip.BothLayersDynamics)
    assert isinstance(dip.make_dynamics(both, problem, reduced=False), dip.FullDynamics)
    mlp = dip.MLPDIP.init(jax.random.key(0), n=problem.n, d=4, widths=(8,))
    assert isinstance(dip.make_dynamics(mlp, problem), dip.FullDynamics)
    with pytest.raises(ValueError, match="reduced=True"):
        dip.make_dynamics(mlp, problem, reduced=True)
    with pytest.raises(ValueError, match="reduced=True"):
        dip.make_dynamics(net, problem, trainable=net.trainable_filter(), reduced=True)


def test_stability_ratio_predicts_unstable_steps(linear_activation):
    # With φ(x) = x the loss is quadratic in W: GD is stable iff η λ_max < 2.
    net, problem = instance(seed=4, activation=linear_activation)
    probe = dip.gradient_descent(net, problem, step_size=1.0, max_steps=1, tol=0.0)
    lam = float(probe.stats["stability_ratio"])  # λ_max of the curvature, as η = 1
    runs = {
        ratio: dip.gradient_descent(
            net, problem, step_size=ratio / lam, max_steps=300, tol=0.0
        )
        for ratio in (0.5, 2.5, 20.0)
    }
    for ratio, res in runs.items():
        np.testing.assert_allclose(res.stats["stability_ratio"], ratio, rtol=1e-10)
    assert bool(runs[0.5].stats["monotone"]) and runs[0.5].result_name == "max_steps"
    assert not bool(runs[2.5].stats["monotone"]) and runs[2.5].result_name == "unstable"
    assert runs[20.0].result_name == "diverged"
