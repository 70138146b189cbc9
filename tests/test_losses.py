"""Losses as values: each built-in against finite differences and a NumPy loop;
the exact reductions (W only, both layers) against the full path for every loss;
the stopping tolerance on the excess L − ℓ*; bad input."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import dipflow as dip
from dipflow.losses import AbstractLoss, Poisson, PseudoHuber, SquaredError

from .helpers import _NP_ACTIVATIONS, numpy_arrays

M, N, K, D = 4, 6, 8, 5
BACKGROUND = 30.0


class LogCosh(AbstractLoss):
    """A loss of one's own, value only: ℓ(v) = (1/m) Σ log cosh(v − y)."""

    def total(self, v, y):
        return jnp.sum(jnp.logaddexp(v - y, y - v) - jnp.log(2.0))


# Each loss with NumPy references of its sum and its gradient in v, written out.
NUMPY = {
    "squared": (
        lambda v, y: 0.5 * np.sum((v - y) ** 2),
        lambda v, y: v - y,
    ),
    "huber": (
        lambda v, y: np.sum(0.7**2 * (np.sqrt(1 + ((v - y) / 0.7) ** 2) - 1)),
        lambda v, y: (v - y) / np.sqrt(1 + ((v - y) / 0.7) ** 2),
    ),
    "poisson": (
        lambda v, y: np.sum(v + BACKGROUND - y * np.log(v + BACKGROUND)),
        lambda v, y: 1 - y / (v + BACKGROUND),
    ),
    "logcosh": (
        lambda v, y: np.sum(np.log(np.cosh(v - y))),
        lambda v, y: np.tanh(v - y),
    ),
}
# The second derivative of each summed loss in v (its Hessian is diagonal).
NUMPY_CURVATURE = {
    "squared": lambda v, y: np.ones_like(v),
    "huber": lambda v, y: (1 + ((v - y) / 0.7) ** 2) ** -1.5,
    "poisson": lambda v, y: y / (v + BACKGROUND) ** 2,
    "logcosh": lambda v, y: 1 / np.cosh(v - y) ** 2,
}
LOSSES = {
    "squared": SquaredError(),
    "huber": PseudoHuber(0.7),
    "poisson": Poisson(BACKGROUND),
    "logcosh": LogCosh(),
}


def _problem(name, seed=0, train=("W",)):
    """A two-layer net and a problem whose data suit the loss: Poisson counts
    around the background for the Poisson loss, Gaussian data otherwise."""
    k_net, k_prob = jax.random.split(jax.random.PRNGKey(seed))
    net = dip.TwoLayerDIP.init(k_net, n=N, k=K, d=D, train=train)
    base = dip.InverseProblem.gaussian(k_prob, m=M, n=N)
    if name == "poisson":
        rng = np.random.default_rng(seed)
        y = rng.poisson(BACKGROUND, size=M).astype(np.float64)
        problem = dip.InverseProblem(base.A, y=y, loss=LOSSES[name])
    else:
        problem = base.with_loss(LOSSES[name])
    return net, problem


@pytest.mark.parametrize("name", list(LOSSES))
def test_value_and_gradient_against_numpy_and_finite_differences(name):
    loss, (np_total, np_grad) = LOSSES[name], NUMPY[name]
    rng = np.random.default_rng(1)
    y = (
        rng.poisson(BACKGROUND, size=M).astype(float)
        if name == "poisson"
        else rng.normal(size=M)
    )
    v = rng.normal(size=M) * 2
    total, grad = loss.total_and_gradient(jnp.asarray(v), jnp.asarray(y))
    np.testing.assert_allclose(total, np_total(v, y), rtol=1e-13)
    np.testing.assert_allclose(grad, np_grad(v, y), rtol=1e-12, atol=1e-14)
    h = 1e-6
    fd = [
        (np_total(v + h * e, y) - np_total(v - h * e, y)) / (2 * h) for e in np.eye(M)
    ]
    np.testing.assert_allclose(grad, fd, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("name", list(LOSSES))
def test_hessian_against_numpy(name):
    loss, h_of = LOSSES[name], NUMPY_CURVATURE[name]
    rng = np.random.default_rng(3)
    y = (
        rng.poisson(BACKGROUND, size=M).astype(float)
        if name == "poisson"
        else rng.normal(size=M)
    )
    v, w = rng.normal(size=M) * 2, rng.normal(size=M)
    h = h_of(v, y)
    H = loss.hessian(jnp.asarray(v), jnp.asarray(y))
    np.testing.assert_allclose(H, np.diag(h), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        loss.hessian_vector(jnp.asarray(v), jnp.asarray(y), jnp.asarray(w)),
        h * w,
        rtol=1e-12,
        atol=1e-15,
    )
    assert loss.unit_hessian == (name == "squared")


def _numpy_gauss_newton_max(net, problem, name, layers):
    """λ_max(J_Aᵀ diag(h) J_A)/m at θ0 with J_A written out for the two-layer
    net, v = A V φ(W u)/√k: ∂v/∂W_ij = A V_:i φ'(z_i) u_j/√k and
    ∂v/∂V_pi = A_:p φ(z_i)/√k; h the loss's second derivative at v0."""
    phi, dphi = _NP_ACTIVATIONS["sigmoid"]
    V, W, u, A, y = numpy_arrays(net, problem)
    z = W @ u
    v0 = A @ (V @ phi(z)) / np.sqrt(K)
    columns = []
    if "W" in layers:
        columns.append(np.einsum("mi,j->mij", A @ V * dphi(z), u).reshape(M, -1))
    if "V" in layers:
        columns.append(np.einsum("mp,i->mpi", A, phi(z)).reshape(M, -1))
    J_A = np.concatenate(columns, axis=1) / np.sqrt(K)
    G = J_A.T @ (NUMPY_CURVATURE[name](v0, y)[:, None] * J_A)
    return np.linalg.eigvalsh(G)[-1] / M


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("layers", [("W",), ("W", "V")])
def test_curvature_is_the_losses_gauss_newton_curvature(name, layers):
    # Every path to the stability ratio's λ_max: the exact reductions, the full
    # path's kernel (W alone: the paper's model) and its power iteration (both
    # layers; an MLP below).
    net, problem = _problem(name, seed=8, train=layers)
    expected = _numpy_gauss_newton_max(net, problem, name, layers)
    reduced = dip.make_dynamics(net, problem)
    full = dip.make_dynamics(net, problem, reduced=False)
    assert isinstance(full, dip.FullDynamics)
    for dyn in (reduced, full):
        np.testing.assert_allclose(dyn.curvature(), expected, rtol=1e-10)
    if name == "squared":  # the kernel's own λ_max, as before losses had Hessians
        K_A = dip.measurement_kernel(net, problem)
        np.testing.assert_allclose(
            full.curvature(), jnp.linalg.eigvalsh(K_A)[-1] / M, rtol=1e-13
        )


@pytest.mark.parametrize("name", ["huber", "poisson"])
def test_curvature_of_any_generator_by_power_iteration(name):
    _, problem = _problem(name, seed=9)
    mlp = dip.MLPDIP.init(jax.random.key(1), n=N, d=3, widths=(5,))
    dyn = dip.make_dynamics(mlp, problem)
    theta0, unravel = ravel_pytree(dyn.params0)

    def measurement(theta):
        return problem.forward(eqx.combine(unravel(theta), dyn.static)())

    J_A = np.asarray(jax.jacfwd(measurement)(theta0))
    h = NUMPY_CURVATURE[name](np.asarray(measurement(theta0)), np.asarray(problem.y))
    top = np.linalg.eigvalsh(J_A.T @ (h[:, None] * J_A))[-1] / M
    np.testing.assert_allclose(dyn.curvature(), top, rtol=1e-6)


@pytest.mark.parametrize("name", ["squared", "huber", "poisson"])
def test_the_infimum_is_the_value_at_the_minimiser_and_nothing_is_below(name):
    loss = LOSSES[name]
    rng = np.random.default_rng(2)
    y = jnp.asarray(
        rng.poisson(BACKGROUND, size=M).astype(float)
        if name == "poisson"
        else rng.normal(size=M)
    )
    v_star = loss.minimiser(y)
    np.testing.assert_allclose(loss.total(v_star, y), loss.infimum(y), atol=1e-12)
    for _ in range(20):
        v = v_star + jnp.asarray(rng.normal(size=M))
        assert loss.total(v, y) >= loss.infimum(y)


@pytest.mark.parametrize("name", list(LOSSES))
def test_reduced_equals_full_equals_numpy_along_gd(name):
    net, problem = _problem(name)
    kw = dict(max_steps=30, tol=0.0, save_every=1)
    red = dip.gradient_descent(net, problem, 0.5, **kw)
    full = dip.gradient_descent(net, problem, 0.5, **kw, reduced=False)
    assert isinstance(dip.make_dynamics(net, problem), dip.ReducedDynamics)

    # A plain NumPy loop: ∇_W L = (φ'(z) ⊙ Vᵀ Aᵀ ∇ℓ(v)/√k) uᵀ, ∇ℓ = ∇(sum)/m.
    np_total, np_grad = NUMPY[name]
    phi, dphi = _NP_ACTIVATIONS["sigmoid"]
    V, W, u, A, y = numpy_arrays(net, problem)
    losses = []
    for step in range(31):
        z = W @ u
        v = A @ (V @ phi(z)) / np.sqrt(K)
        losses.append(np_total(v, y) / M)
        if step < 30:
            c = dphi(z) * (V.T @ (A.T @ np_grad(v, y))) / (M * np.sqrt(K))
            W = W - 0.5 * np.outer(c, u)
    for sol in (red, full):
        np.testing.assert_allclose(sol.trajectory.loss, losses, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(sol.net.W, W, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        red.trajectory.distance, full.trajectory.distance, atol=1e-10
    )


@pytest.mark.parametrize("name", ["huber", "poisson", "logcosh"])
def test_both_layers_reduction_equals_the_full_path(name):
    net, problem = _problem(name, seed=4, train=("W", "V"))
    kw = dict(max_steps=25, tol=0.0, save_every=1)
    red = dip.gradient_descent(net, problem, 0.5, **kw)
    full = dip.gradient_descent(net, problem, 0.5, **kw, reduced=False)
    assert isinstance(dip.make_dynamics(net, problem), dip.BothLayersDynamics)
    np.testing.assert_allclose(red.trajectory.loss, full.trajectory.loss, rtol=1e-10)
    np.testing.assert_allclose(red.net.W, full.net.W, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(red.net.V, full.net.V, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["huber", "poisson"])
def test_reduced_equals_full_along_the_flow(name):
    net, problem = _problem(name, seed=5)
    kw = dict(t1=20.0, tol=0.0, save_ts=np.linspace(0, 20, 5), rtol=1e-10, atol=1e-12)
    red = dip.gradient_flow(net, problem, **kw)
    full = dip.gradient_flow(net, problem, **kw, reduced=False)
    np.testing.assert_allclose(red.trajectory.loss, full.trajectory.loss, rtol=1e-9)
    np.testing.assert_allclose(red.net.W, full.net.W, rtol=1e-8, atol=1e-10)


def test_the_tolerance_applies_to_the_excess_loss():
    # Poisson's ℓ* is far from 0: with tol on L itself the run could never stop.
    net, problem = _problem("poisson", seed=6)
    net = dip.TwoLayerDIP.init(jax.random.PRNGKey(6), n=N, k=200, d=D)
    floor = float(problem.loss.infimum(problem.y)) / M
    assert floor < -1
    sol = dip.gradient_descent(net, problem, 10.0, max_steps=10_000, tol=1e-6)
    assert sol.result == dip.RESULTS.converged
    assert float(sol.final_loss) - floor < 1e-6
    # tol = 0 runs to the budget whatever the loss.
    sol0 = dip.gradient_descent(net, problem, 1.0, max_steps=50, tol=0.0)
    assert int(sol0.num_steps) == 50 and sol0.result == dip.RESULTS.max_steps


def test_leaving_the_poisson_domain_is_a_result():
    k_net, k_prob = jax.random.split(jax.random.PRNGKey(7))
    net = dip.TwoLayerDIP.init(k_net, n=N, k=K, d=D)
    A = dip.InverseProblem.gaussian(k_prob, m=M, n=N).A
    problem = dip.InverseProblem(
        A, y=np.array([0.0, 3.0, 1.0, 2.0]), loss=Poisson(0.05)
    )
    sol = dip.gradient_descent(net, problem, 50.0, max_steps=200, tol=0.0)
    assert sol.result == dip.RESULTS.outside_domain
    flow = dip.gradient_flow(
        net, problem, t1=50.0, tol=0.0, dt0=5.0, stepsize_controller=None
    )
    assert flow.result in (dip.RESULTS.outside_domain, dip.RESULTS.max_steps)


def test_bad_losses_are_refused_by_name():
    A = np.ones((2, 3))
    with pytest.raises(TypeError, match="`loss`"):
        dip.InverseProblem(A, y=np.ones(2), loss="poisson")
    with pytest.raises(ValueError, match="`delta`"):
        PseudoHuber(0.0)
    with pytest.raises(TypeError, match="delta"):  # beartype's message under the tests
        PseudoHuber("1")
    with pytest.raises(ValueError, match="`background`"):
        Poisson(-1.0)
    with pytest.raises(ValueError, match="`y`.*counts"):
        dip.InverseProblem(A, y=np.array([1.5, 2.0]), loss=Poisson(1.0))
    with pytest.raises(ValueError, match="`y`.*counts"):
        dip.InverseProblem(A, y=np.array([-1.0, 2.0]), loss=Poisson(1.0))
    with pytest.raises(ValueError, match="`background`.*zero"):
        dip.InverseProblem(A, y=np.array([0.0, 2.0]), loss=Poisson(0.0))


@pytest.mark.parametrize("method, extra", [("gd", {}), ("adam", dict(step_size=0.05))])
def test_study_cells_train_on_their_loss(method, extra):
    from dipflow.studies._cell_solve import run_cell

    kw = dict(m=4, n=6, k=8, d=5, max_steps=200, tol=0.05, noise=0.3, method=method)
    cell = dip.Cell(**kw, **extra, loss="pseudo-huber:0.25")
    assert cell.loss == "pseudo_huber:0.25" and "loss" in cell.params()
    assert "loss" not in dip.Cell(**kw, **extra, loss="squared").params()  # one id
    study = dip.Study(cells=(cell,), runs=2, dtype="float64", seed=3)
    for row in run_cell(cell, study):
        net, problem = dip.study_instance(cell, study.seed, row["run"])
        assert problem.loss == PseudoHuber(0.25)
        if method == "gd":
            sol = dip.gradient_descent(
                net, problem, cell.step_size, cell.max_steps, cell.tol
            )
        else:
            sol = dip.optimize(
                net,
                problem,
                optax.adam(cell.step_size),
                max_steps=cell.max_steps,
                tol=cell.tol,
            )
        assert (
            row["num_steps"] == int(sol.num_steps) and row["status"] == sol.result_name
        )
        np.testing.assert_allclose(row["final_loss"], sol.final_loss, rtol=1e-7)


def test_loss_names_are_parsed_in_one_place():
    from dipflow.problems._losses import loss_name, parse_loss

    assert parse_loss("squared") == SquaredError()
    assert parse_loss("Pseudo-Huber:0.5") == PseudoHuber(0.5)
    assert parse_loss("poisson") == Poisson(0.0) and parse_loss("poisson:2") == Poisson(
        2.0
    )
    for loss in (SquaredError(), PseudoHuber(0.5), Poisson(2.0)):
        assert parse_loss(loss_name(loss)) == loss
    for bad in ("huber", "pseudo_huber", "squared:1", "poisson:x"):
        with pytest.raises(ValueError, match="`loss`"):
            parse_loss(bad)
    with pytest.raises(ValueError, match="count data"):
        dip.Cell(m=4, n=6, k=8, d=5, loss="poisson:1")
