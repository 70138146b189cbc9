"""Heavy ball, Nesterov, optax optimizers and the inertial flow, against
independent references: plain NumPy loops with hand-derived gradients, scipy
DOP853 on the second-order inertial system with an explicit Hessian-vector
term, the full path for every exact reduction, and the 2 × 2 iteration matrix
for the stability limits."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.integrate

import dipflow as dip
from dipflow.studies._cell_solve import run_cell
from dipflow.training import _solution

from .helpers import instance, numpy_arrays, numpy_loss_and_grads


def _numpy_momentum(net, problem, eta, mu, steps, nesterov):
    """optax's `sgd(η, μ, nesterov)` on W, by hand: t ← g + μ t; W ← W − η t
    (heavy ball) or W ← W − η (g + μ t) (Nesterov)."""
    V, W, u, A, y = numpy_arrays(net, problem)
    t = np.zeros_like(W)
    losses = []
    for _ in range(steps):
        L, gW, _ = numpy_loss_and_grads(V, W, u, A, y)
        losses.append(L)
        t = gW + mu * t
        W = W - eta * ((gW + mu * t) if nesterov else t)
    losses.append(numpy_loss_and_grads(V, W, u, A, y)[0])
    return np.array(losses), W


@pytest.mark.parametrize("method", ["heavy_ball", "nesterov"])
def test_momentum_reduced_equals_full_equals_numpy(method):
    net, problem = instance(seed=1)
    trainer = getattr(dip, method)
    kw = dict(step_size=0.5, momentum=0.7, max_steps=30, tol=0.0, save_every=1)
    red = trainer(net, problem, reduced=True, **kw)
    full = trainer(net, problem, reduced=False, **kw)
    losses, W = _numpy_momentum(net, problem, 0.5, 0.7, 30, method == "nesterov")
    for sol in (red, full):
        np.testing.assert_allclose(sol.trajectory.loss, losses, rtol=1e-11, atol=0)
        np.testing.assert_allclose(sol.net.W, W, rtol=1e-11, atol=1e-13)
        assert sol.result_name == "max_steps" and int(sol.num_steps) == 30
    np.testing.assert_allclose(
        red.trajectory.distance, full.trajectory.distance, rtol=1e-10
    )
    np.testing.assert_allclose(
        red.stats["stability_ratio"], full.stats["stability_ratio"], rtol=1e-10
    )
    # The same as optax itself on the full parameters.
    via_optax = dip.optimize(
        net,
        problem,
        optax.sgd(0.5, 0.7, nesterov=method == "nesterov"),
        max_steps=30,
        tol=0.0,
        save_every=1,
    )
    np.testing.assert_allclose(via_optax.trajectory.loss, losses, rtol=1e-11)


def test_gd_through_optax_is_gradient_descent():
    net, problem = instance(seed=2)
    gd = dip.gradient_descent(net, problem, step_size=0.8, max_steps=25, tol=0.0)
    sgd = dip.optimize(net, problem, optax.sgd(0.8), max_steps=25, tol=0.0)
    np.testing.assert_allclose(sgd.net.W, gd.net.W, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sgd.final_loss, gd.final_loss, rtol=1e-12)


def test_adam_matches_a_numpy_adam_loop():
    net, problem = instance(seed=3)
    lr, b1, b2, eps, steps = 0.05, 0.9, 0.999, 1e-8, 40
    sol = dip.optimize(
        net,
        problem,
        optax.adam(lr, b1, b2, eps),
        max_steps=steps,
        tol=0.0,
        save_every=1,
    )
    V, W, u, A, y = numpy_arrays(net, problem)
    m1, m2, losses = np.zeros_like(W), np.zeros_like(W), []
    for t in range(1, steps + 1):
        L, g, _ = numpy_loss_and_grads(V, W, u, A, y)
        losses.append(L)
        m1 = b1 * m1 + (1 - b1) * g
        m2 = b2 * m2 + (1 - b2) * g**2
        W = W - lr * (m1 / (1 - b1**t)) / (np.sqrt(m2 / (1 - b2**t)) + eps)
    losses.append(numpy_loss_and_grads(V, W, u, A, y)[0])
    np.testing.assert_allclose(sol.trajectory.loss, losses, rtol=1e-10)
    np.testing.assert_allclose(sol.net.W, W, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(sol.trajectory.ts, np.arange(steps + 1))
    assert np.isnan(float(sol.stats["stability_ratio"]))


def test_inertial_flow_matches_the_second_order_system():
    """θ'' = −α θ' − β H(θ) θ' − ∇L(θ), θ(0) = θ0, θ'(0) = 0, solved by scipy
    with the Hessian-vector product written out; dipflow solves the
    Hessian-free first-order form."""
    net, problem = instance(seed=5)
    alpha, beta, t1 = 1.5, 0.7, 6.0
    ts = np.linspace(0.0, t1, 7)
    sol = dip.inertial_flow(
        net,
        problem,
        alpha=alpha,
        beta=beta,
        t1=t1,
        tol=0.0,
        save_ts=ts,
        rtol=1e-11,
        atol=1e-13,
        reduced=False,
    )
    params, static = eqx.partition(net, net.trainable_filter())
    W0 = np.asarray(params.W)

    def loss_of(W):
        return dip.loss(
            eqx.combine(eqx.tree_at(lambda p: p.W, params, W), static), problem
        )

    grad = jax.jit(jax.grad(loss_of))
    hvp = jax.jit(lambda W, v: jax.jvp(grad, (W,), (v,))[1])

    def rhs(t, s):
        W, dW = s[: W0.size].reshape(W0.shape), s[W0.size :].reshape(W0.shape)
        g, Hv = np.asarray(grad(W)), np.asarray(hvp(W, dW))
        return np.concatenate([dW.ravel(), (-alpha * dW - beta * Hv - g).ravel()])

    ref = scipy.integrate.solve_ivp(
        rhs,
        (0.0, t1),
        np.concatenate([W0.ravel(), np.zeros(W0.size)]),
        method="DOP853",
        t_eval=ts,
        rtol=1e-10,
        atol=1e-10,
    )
    W_ref = ref.y[: W0.size].T.reshape(len(ts), *W0.shape)
    loss_ref = [float(loss_of(jnp.asarray(W))) for W in W_ref]
    np.testing.assert_allclose(sol.trajectory.loss, loss_ref, rtol=1e-7)
    dist_ref = np.linalg.norm((W_ref - W0).reshape(len(ts), -1), axis=1)
    np.testing.assert_allclose(sol.trajectory.distance, dist_ref, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(sol.net.W, W_ref[-1], rtol=1e-7, atol=1e-9)
    # The loss decreased (the damped system loses energy).
    assert loss_ref[-1] < loss_ref[0]


@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_inertial_reduced_equals_full(beta):
    net, problem = instance(seed=6)
    kw = dict(
        alpha=2.0,
        beta=beta,
        t1=3.0,
        tol=0.0,
        save_ts=np.linspace(0, 3, 4),
        solver=diffrax.Tsit5(),
        dt0=0.05,
        stepsize_controller=diffrax.ConstantStepSize(),
    )
    red = dip.inertial_flow(net, problem, reduced=True, **kw)
    full = dip.inertial_flow(net, problem, reduced=False, **kw)
    for name in ("loss", "residual", "distance"):
        np.testing.assert_allclose(
            getattr(red.trajectory, name), getattr(full.trajectory, name), rtol=1e-10
        )
    np.testing.assert_allclose(red.net.W, full.net.W, rtol=1e-10, atol=1e-12)


def _spectral_radius(h, mu, nesterov):
    # One step on L = λθ²/2 with h = ηλ, state (θ, η t).
    if nesterov:
        M = np.array([[1 - h - mu * h, -mu * mu], [h, mu]])
    else:
        M = np.array([[1 - h, -mu], [h, mu]])
    return np.max(np.abs(np.linalg.eigvals(M)))


@pytest.mark.parametrize("method", ["gd", "heavy_ball", "nesterov"])
@pytest.mark.parametrize("mu", [0.0, 0.5, 0.9])
def test_stability_limits_are_where_the_iteration_stops_contracting(method, mu):
    if method == "gd" and mu:
        return
    limit = dip.stability_limit(method, mu)
    nest = method == "nesterov"
    assert _spectral_radius(limit * 0.999, mu, nest) < 1
    assert _spectral_radius(limit * 1.001, mu, nest) > 1
    np.testing.assert_allclose(dip.stability_ratio(limit / 7.0, 7.0, method, mu), 2.0)


def test_momentum_beyond_its_limit_is_unstable(linear_activation):
    net, problem = instance(seed=4, activation=linear_activation)
    probe = dip.gradient_descent(net, problem, step_size=1.0, max_steps=0)
    lam = float(probe.stats["stability_ratio"])  # λ_max of the curvature
    mu = 0.5
    limit = dip.stability_limit("heavy_ball", mu) / lam
    below = dip.heavy_ball(net, problem, 0.5 * limit, mu, max_steps=50, tol=0.0)
    above = dip.heavy_ball(net, problem, 1.05 * limit, mu, max_steps=50, tol=0.0)
    assert (
        below.result_name == "max_steps" and float(below.stats["stability_ratio"]) < 2
    )
    assert float(above.stats["stability_ratio"]) > 2
    assert above.result_name in ("unstable", "diverged")


def test_trainers_work_under_vmap():
    net, problem = instance(seed=7)
    run = jax.vmap(
        lambda mu: dip.nesterov(net, problem, 0.5, mu, max_steps=60, tol=1e-3)
    )
    batched = run(jnp.array([0.0, 0.5, 0.8]))
    for i, mu in enumerate((0.0, 0.5, 0.8)):
        one = dip.nesterov(net, problem, 0.5, mu, max_steps=60, tol=1e-3)
        assert int(batched.num_steps[i]) == int(one.num_steps)
        assert batched.result_name[i] == one.result_name


# -- studies run every trainer -------------------------------------------------------


@pytest.mark.parametrize(
    "method, extra",
    [
        ("heavy_ball", dict(momentum=0.5)),
        ("nesterov", dict(momentum=0.5)),
        ("inertial", dict(alpha=1.0, beta=0.5)),
        ("adam", dict(step_size=0.05)),
    ],
)
def test_study_rows_match_the_trainers(method, extra):
    kw = dict(m=4, n=6, k=8, d=5, max_steps=200, tol=0.5, method=method)
    cell = dip.Cell(**{**kw, **extra})
    study = dip.Study(cells=(cell,), runs=3, dtype="float64", seed=3)
    for row in run_cell(cell, study):
        net, problem = dip.study_instance(cell, study.seed, row["run"])
        common = dict(max_steps=cell.max_steps, tol=cell.tol)
        if method == "inertial":
            sol = dip.inertial_flow(
                net,
                problem,
                alpha=cell.alpha,
                beta=cell.beta,
                t1=cell.horizon,
                tol=cell.tol,
                save_ts=[0.0],
                rtol=cell.rtol,
                atol=cell.atol,
            )
            np.testing.assert_allclose(row["t_final"], sol.t_final, rtol=1e-9)
        elif method == "adam":
            sol = dip.optimize(net, problem, optax.adam(cell.step_size), **common)
            assert row["num_steps"] == int(sol.num_steps)
        else:
            sol = getattr(dip, method)(
                net, problem, cell.step_size, cell.momentum, **common
            )
            assert row["num_steps"] == int(sol.num_steps)
            np.testing.assert_allclose(
                row["stability_ratio"], sol.stats["stability_ratio"], rtol=1e-9
            )
        assert row["status"] == sol.result_name
        np.testing.assert_allclose(row["final_loss"], sol.final_loss, rtol=1e-7)


# -- bad input ---------------------------------------------------------------------


def test_bad_trainer_arguments_name_the_argument():
    net, problem = instance()
    with pytest.raises(ValueError, match="`momentum`"):
        dip.heavy_ball(net, problem, 0.5, -0.1)
    with pytest.raises(ValueError, match="`momentum`"):
        dip.nesterov(net, problem, 0.5, 1.0)
    with pytest.raises(ValueError, match="`alpha`"):
        dip.inertial_flow(net, problem, alpha=-1.0, t1=1.0)
    with pytest.raises(ValueError, match="`beta`"):
        dip.inertial_flow(net, problem, alpha=1.0, beta=-0.5, t1=1.0)
    with pytest.raises(TypeError, match="`optimizer`"):
        dip.optimize(net, problem, "adam")
    with pytest.raises(TypeError, match="`optimizer`"):
        dip.optimize(net, problem, optax.adam)  # the factory, not a transformation


def test_bad_cell_methods_and_hyperparameters():
    base = dict(m=4, n=6, k=8, d=5)
    with pytest.raises(ValueError, match="`method`"):
        dip.Cell(**base, method="lbfgs")
    with pytest.raises(ValueError, match="`momentum` is not a hyper-parameter"):
        dip.Cell(**base, method="gd", momentum=0.9)
    with pytest.raises(ValueError, match="`alpha` is not a hyper-parameter"):
        dip.Cell(**base, method="heavy_ball", momentum=0.5, alpha=1.0)
    with pytest.raises(ValueError, match="needs `momentum`"):
        dip.Cell(**base, method="nesterov")
    with pytest.raises(ValueError, match="needs `alpha`"):
        dip.Cell(**base, method="inertial")
    with pytest.raises(ValueError, match="`momentum`"):
        dip.Cell(**base, method="heavy_ball", momentum=-0.5)
    # Unset hyper-parameters keep the ids of cells that existed before them.
    assert "momentum" not in dip.Cell(**base).params()


def test_result_names_follow_the_enumeration():
    for i, name in enumerate(_solution.RESULT_NAMES):
        assert int(getattr(dip.RESULTS, name)._value) == i
        assert dip.result_name(getattr(dip.RESULTS, name)) == name
