import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.stats

import dipflow as dip

from .helpers import (
    instance,
    numpy_arrays,
    numpy_gd,
    numpy_loss_and_grads,
    tree_allclose,
)


@pytest.mark.parametrize(
    "train, reduced", [(("W",), None), (("W",), False), (("W", "V"), None)]
)
def test_gd_matches_numpy_loop_step_for_step(train, reduced):
    net, problem = instance(train=train)
    steps = 30
    res = dip.gradient_descent(
        net,
        problem,
        step_size=0.5,
        max_steps=steps,
        tol=0.0,
        save_every=1,
        reduced=reduced,
    )
    losses, W, V = numpy_gd(net, problem, 0.5, steps, train=train)
    np.testing.assert_allclose(res.trajectory.loss, losses, rtol=1e-12, atol=0)
    np.testing.assert_allclose(res.net.W, W, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(res.net.V, V, rtol=1e-12, atol=1e-14)
    assert int(res.num_steps) == steps
    assert res.result_name == "max_steps"
    np.testing.assert_array_equal(res.trajectory.steps, np.arange(steps + 1))
    np.testing.assert_allclose(res.trajectory.ts, 0.5 * np.arange(steps + 1))
    # ||θ − θ0|| along the run, from the NumPy iterates' endpoint.
    dist = np.sqrt(
        np.sum((W - np.asarray(net.W)) ** 2) + np.sum((V - np.asarray(net.V)) ** 2)
    )
    np.testing.assert_allclose(res.trajectory.distance[-1], dist, rtol=1e-10)


def test_num_steps_is_first_iterate_below_tol():
    net, problem = instance()
    losses, _, _ = numpy_gd(net, problem, 1.0, 40)
    assert np.all(np.diff(losses) < 0), "this instance should descend monotonically"
    s = 17
    tol = 0.5 * (losses[s] + losses[s - 1])  # iterate s is the first below tol
    res = dip.gradient_descent(net, problem, step_size=1.0, max_steps=40, tol=tol)
    assert int(res.num_steps) == s
    assert res.result_name == "converged" and bool(res.converged)
    np.testing.assert_allclose(res.final_loss, losses[s], rtol=1e-12)
    # Loss already below tol: nothing to do.
    res0 = dip.gradient_descent(
        net, problem, step_size=1.0, max_steps=40, tol=2 * losses[0]
    )
    assert int(res0.num_steps) == 0 and res0.result_name == "converged"
    assert tree_allclose(res0.net, net, rtol=0, atol=0)
    # max_steps caps the number of updates.
    res_cap = dip.gradient_descent(
        net, problem, step_size=1.0, max_steps=s - 1, tol=tol
    )
    assert int(res_cap.num_steps) == s - 1 and res_cap.result_name == "max_steps"


def test_saved_trajectory_every_few_steps():
    net, problem = instance()
    res = dip.gradient_descent(
        net, problem, step_size=1.0, max_steps=40, tol=0.0, save_every=7
    )
    losses, _, _ = numpy_gd(net, problem, 1.0, 40)
    np.testing.assert_array_equal(res.trajectory.steps, np.arange(0, 41, 7))
    np.testing.assert_allclose(res.trajectory.loss, losses[::7], rtol=1e-12)
    # The residual norm is sqrt(2 m L); signal error uses x̄.
    np.testing.assert_allclose(
        res.trajectory.residual, np.sqrt(2 * problem.m * losses[::7]), rtol=1e-12
    )
    assert res.trajectory.signal_error is not None and res.trajectory.sigma_min is None
    # Stopping early leaves the unreached save points NaN.
    tol = losses[10]
    res = dip.gradient_descent(
        net, problem, step_size=1.0, max_steps=40, tol=tol, save_every=7
    )
    assert np.all(np.isfinite(res.trajectory.loss[:2])) and np.all(
        np.isnan(res.trajectory.loss[2:])
    )


def test_gd_is_explicit_euler_of_the_flow():
    net, problem = instance()
    eta, steps = 0.5, 25
    gd = dip.gradient_descent(net, problem, step_size=eta, max_steps=steps, tol=0.0)
    euler = dip.gradient_flow(
        net,
        problem,
        t1=eta * steps,
        tol=0.0,
        solver=diffrax.Euler(),
        dt0=eta,
        stepsize_controller=diffrax.ConstantStepSize(),
    )
    assert int(euler.num_steps) == steps
    np.testing.assert_allclose(euler.net.W, gd.net.W, rtol=1e-12, atol=1e-14)


def _scipy_flow(net, problem, ts):
    V, W0, u, A, y = numpy_arrays(net, problem)

    def rhs(t, w):
        _, gW, _ = numpy_loss_and_grads(V, w.reshape(W0.shape), u, A, y)
        return -gW.ravel()

    sol = scipy.integrate.solve_ivp(
        rhs,
        (0.0, ts[-1]),
        W0.ravel(),
        method="DOP853",
        t_eval=ts,
        rtol=1e-10,
        atol=1e-10,
    )
    assert sol.success
    Ws = sol.y.T.reshape(len(ts), *W0.shape)
    losses = np.array([numpy_loss_and_grads(V, w, u, A, y)[0] for w in Ws])
    return Ws, losses


def test_flow_matches_scipy_dop853():
    net, problem = instance()
    ts = np.array([0.0, 0.5, 2.0, 5.0, 10.0, 20.0])
    sol = dip.gradient_flow(
        net, problem, t1=20.0, tol=0.0, save_ts=ts, rtol=1e-11, atol=1e-12
    )
    Ws, losses = _scipy_flow(net, problem, ts)
    np.testing.assert_allclose(sol.trajectory.loss, losses, rtol=1e-7)
    dist = np.sqrt(np.sum((Ws - np.asarray(net.W)) ** 2, axis=(1, 2)))
    np.testing.assert_allclose(sol.trajectory.distance, dist, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(sol.net.W, Ws[-1], rtol=1e-7, atol=1e-9)
    assert sol.result_name == "max_steps" and float(sol.t_final) == 20.0


def test_gd_converges_to_flow_at_first_order():
    net, problem = instance()
    T = 2.0
    flow = dip.gradient_flow(
        net, problem, t1=T, tol=0.0, save_ts=[T], rtol=1e-12, atol=1e-13
    )
    etas = np.array([0.2, 0.1, 0.05, 0.025])
    errors = []
    for eta in etas:
        gd = dip.gradient_descent(
            net, problem, step_size=eta, max_steps=int(round(T / eta)), tol=0.0
        )
        errors.append(float(jnp.linalg.norm(gd.net.W - flow.net.W)))
    fit = scipy.stats.linregress(np.log(etas), np.log(errors))
    assert 0.9 < fit.slope < 1.1, fit


def test_flow_stops_at_tolerance():
    net, problem = instance()
    tol = 0.72  # this small instance plateaus near 0.7; the flow crosses 0.72 near t = 200
    sol = dip.gradient_flow(
        net, problem, t1=1000.0, tol=tol, save_ts=np.linspace(0, 1000, 11)
    )
    assert sol.result_name == "converged"
    assert float(sol.final_loss) < tol
    assert float(dip.loss(sol.net, problem)) < tol
    t = float(sol.t_final)
    assert 0 < t < 1000
    # Saved values stop with the flow; before the stop, the loss is above tol.
    before = np.asarray(sol.trajectory.ts) <= t
    assert np.all(np.isfinite(sol.trajectory.loss[before])) and np.all(
        np.isnan(sol.trajectory.loss[~before])
    )
    assert np.all(sol.trajectory.loss[before] >= tol)
    # A loss already below tol: converged at t = 0.
    sol0 = dip.gradient_flow(net, problem, t1=1000.0, tol=1e6, save_ts=[0.0, 10.0])
    assert sol0.result_name == "converged" and float(sol0.t_final) == 0.0
    assert tree_allclose(sol0.net, net, rtol=0, atol=0)


def test_divergence_is_a_status_not_an_exception(linear_activation):
    net, problem = instance(activation=linear_activation)
    res = dip.gradient_descent(net, problem, step_size=1e3, max_steps=500, tol=1e-7)
    assert res.result_name == "diverged"
    assert not np.isfinite(float(res.final_loss))
    assert int(res.num_steps) < 500
    # A stable step on the same instance does not diverge.
    ok = dip.gradient_descent(net, problem, step_size=1e-2, max_steps=50, tol=1e-7)
    assert ok.result_name != "diverged"


def test_flow_saves_sigma_min_and_signal_error():
    net, problem = instance(seed=4)  # σ_min(J0) ≈ 0.08 (seed 0 has a rank-deficient V)
    ts = np.array([0.0, 1.0, 3.0])
    sol = dip.gradient_flow(
        net, problem, t1=3.0, tol=0.0, save_ts=ts, save_sigma_min=True
    )
    np.testing.assert_allclose(
        sol.trajectory.sigma_min[0], dip.sigma_min_gram(net), rtol=1e-10
    )
    np.testing.assert_allclose(
        sol.trajectory.sigma_min[-1], dip.sigma_min_gram(sol.net), rtol=1e-6
    )
    err = jnp.linalg.norm(sol.net() - problem.x_true)
    np.testing.assert_allclose(sol.trajectory.signal_error[-1], err, rtol=1e-6)
    np.testing.assert_allclose(
        sol.trajectory.residual,
        np.sqrt(2 * problem.m * np.asarray(sol.trajectory.loss)),
        rtol=1e-12,
    )


def test_generic_generator_mlp():
    key = jax.random.PRNGKey(3)
    net = dip.MLPDIP.init(
        key, n=6, d=5, widths=(8, 8)
    )  # last width ≥ n, so J can have rank n
    problem = dip.InverseProblem.gaussian(jax.random.PRNGKey(4), m=4, n=6)
    res = dip.gradient_descent(
        net, problem, step_size=0.5, max_steps=50, tol=0.0, save_every=10
    )
    assert np.all(np.diff(res.trajectory.loss) < 0)
    assert not tree_allclose(res.net.weights, net.weights)
    assert tree_allclose(
        res.net.V, net.V, rtol=0, atol=0
    )  # V is not trained by default
    sol = dip.gradient_flow(
        net, problem, t1=25.0, tol=0.0, save_ts=[0.0, 25.0], save_sigma_min=True
    )
    np.testing.assert_allclose(
        sol.trajectory.loss[-1], res.trajectory.loss[-1], rtol=0.05
    )
    np.testing.assert_allclose(
        sol.trajectory.sigma_min[0], dip.sigma_min_jacobian(net), rtol=1e-10
    )


def test_float32():
    key = jax.random.PRNGKey(0)
    net = dip.TwoLayerDIP.init(key, n=6, k=8, d=5, dtype=jnp.float32)
    problem = dip.InverseProblem.gaussian(key, m=4, n=6, dtype=jnp.float32)
    res = dip.gradient_descent(net, problem, step_size=1.0, max_steps=20, tol=0.0)
    sol = dip.gradient_flow(
        net, problem, t1=5.0, tol=0.0, save_ts=[0.0, 5.0], rtol=1e-4, atol=1e-6
    )
    assert res.net.W.dtype == jnp.float32 and res.final_loss.dtype == jnp.float32
    assert sol.net.W.dtype == jnp.float32 and sol.trajectory.loss.dtype == jnp.float32
    losses, _, _ = numpy_gd(net, problem, 1.0, 20)
    np.testing.assert_allclose(res.final_loss, losses[-1], rtol=1e-4)
