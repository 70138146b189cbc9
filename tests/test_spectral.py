"""Matrix-free σ_min(J) and λ_min(K_A) (Lanczos, LOBPCG) against dense references:
the SVD of the autodiff Jacobian, eigvalsh of (A J)(A J)ᵀ and of J Jᵀ, and
operators with known spectra."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest

import dipflow as dip


class PlainGenerator(eqx.Module):
    """Not a dipflow generator: every float array (the MLP's and `u`) trains."""

    mlp: eqx.nn.MLP
    u: jax.Array

    def __call__(self):
        return self.mlp(self.u)


def make(name):
    key = jax.random.PRNGKey(3)
    if name == "two-layer W":
        return dip.TwoLayerDIP.init(key, n=12, k=20, d=3)
    if name == "two-layer W, V":
        return dip.TwoLayerDIP.init(key, n=12, k=20, d=3, train=("W", "V"))
    if name == "MLP depth 2":
        return dip.MLPDIP.init(key, n=10, d=3, widths=(6, 14))
    k1, k2 = jax.random.split(key)
    mlp = eqx.nn.MLP(3, 9, width_size=10, depth=1, activation=jnp.tanh, key=k1)
    return PlainGenerator(mlp, jax.random.normal(k2, (3,)))


NETS = ["two-layer W", "two-layer W, V", "MLP depth 2", "plain module"]


def dense_J(net):
    return np.asarray(dip.jacobian(net))


def dense_sigma_min(net):
    J = dense_J(net)
    return np.linalg.svd(J, compute_uv=False)[J.shape[0] - 1]


@pytest.mark.parametrize("name", NETS)
def test_lanczos_sigma_min_matches_svd(name):
    net = make(name)
    expected = dense_sigma_min(net)
    got = float(dip.sigma_min_jacobian(net, method="lanczos"))
    # n steps (the default for n < 300) span R^n: exact up to round-off.
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    # The default method is still the dense SVD.
    assert float(dip.sigma_min_jacobian(net)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", ["two-layer W, V", "plain module"])
def test_lobpcg_sigma_min_matches_svd(name):
    net = make(name)
    got = float(dip.sigma_min_jacobian(net, method="lobpcg"))
    np.testing.assert_allclose(got, dense_sigma_min(net), rtol=1e-8)


@pytest.mark.parametrize("name", ["two-layer W", "MLP depth 2"])
def test_lanczos_ritz_values_are_the_spectrum(name):
    net = make(name)
    J = dense_J(net)
    G = J @ J.T
    est = dip.gram_min_eigenvalue(net)
    np.testing.assert_allclose(
        np.asarray(est.ritz_values),
        np.linalg.eigvalsh(G),
        rtol=1e-9,
        atol=1e-12 * np.trace(G),
    )
    # The reported residual is the true one of the returned pair.
    v, lam = np.asarray(est.vector), float(est.value)
    np.testing.assert_allclose(np.linalg.norm(v), 1.0, rtol=1e-12)
    np.testing.assert_allclose(
        float(est.residual), np.linalg.norm(G @ v - lam * v), rtol=1e-6, atol=1e-14
    )
    assert bool(est.converged)
    assert int(est.num_matvecs) == J.shape[0] + 1


def test_few_iterations_bound_from_above_and_flag_it():
    net = make("two-layer W, V")
    J = dense_J(net)
    G = J @ J.T
    lam_min = np.linalg.eigvalsh(G)[0]
    # The spectrum is clustered (all of it within 0.37–0.48): 3 steps leave a
    # residual of 1.8 % of λ, a value at the default rtol = 0.1, not at 1e-3.
    est = dip.gram_min_eigenvalue(net, num_iters=3, rtol=1e-3)
    # A Ritz value of a 3-dimensional subspace: above λ_min (Courant–Fischer).
    assert float(est.value) > lam_min * (1 + 1e-6)
    assert float(est.upper_bound) == float(est.value)
    assert not bool(est.converged)
    # Nothing above 0 is proved below λ_min from 3 of 12 dimensions.
    assert float(est.lower_bound) == 0.0
    v = np.asarray(est.vector)
    assert float(est.residual) == pytest.approx(
        np.linalg.norm(G @ v - float(est.value) * v), rel=1e-6
    )
    assert bool(dip.gram_min_eigenvalue(net, num_iters=3).converged)
    # sigma_min_jacobian refuses the upper bound as the value ...
    with pytest.raises(Exception, match="only an upper bound"):
        jax.block_until_ready(
            dip.sigma_min_jacobian(net, method="lanczos", num_iters=3, rtol=1e-3)
        )
    # ... unless the check is off.
    off = dip.sigma_min_jacobian(net, method="lanczos", num_iters=3, rtol=math.inf)
    assert float(off) == pytest.approx(math.sqrt(float(est.value)), rel=1e-12)


@pytest.mark.parametrize(
    "spectrum",
    [
        np.ones(10),  # M = I: the Krylov space of any v is 1-dimensional
        np.repeat([0.5, 2.0, 7.0], 4),  # three eigenvalues of multiplicity 4
        np.array([0.0, 0.0, 1.0, 3.0, 3.0, 9.0, 10.0, 11.0]),  # singular
    ],
)
def test_lanczos_restarts_past_invariant_subspaces(spectrum):
    n = spectrum.size
    Q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((n, n)))
    M = jnp.asarray((Q * spectrum) @ Q.T)
    est = dip.smallest_eigenvalue(lambda v: M @ v, n, rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(est.ritz_values), np.sort(spectrum), atol=1e-12 * spectrum.max()
    )
    if spectrum.min() > 0:
        assert bool(est.converged)
        np.testing.assert_allclose(float(est.lower_bound), spectrum.min(), rtol=1e-9)
    else:
        # λ_min = 0 has no relative precision: reported as an upper bound, in
        # the proved bracket [0, value].
        assert not bool(est.converged)
        assert float(est.lower_bound) == 0.0
        assert abs(float(est.value)) <= 1e-12 * spectrum.max()


@pytest.mark.parametrize("method", ["lanczos", "lobpcg"])
def test_smallest_eigenvalue_of_a_matrix_under_jit(method):
    n = 16
    B = np.random.default_rng(1).standard_normal((n, n + 2))
    M = jnp.asarray(B @ B.T)

    @jax.jit
    def run(M, key):
        return dip.smallest_eigenvalue(lambda v: M @ v, n, method=method, key=key)

    est = run(M, jax.random.key(5))
    np.testing.assert_allclose(
        float(est.value), np.linalg.eigvalsh(np.asarray(M))[0], rtol=1e-8
    )
    assert bool(est.converged)
    assert est.method == method


def test_sigma_min_jacobian_under_jit():
    net = make("MLP depth 2")
    f = jax.jit(lambda net: dip.sigma_min_jacobian(net, method="lanczos"))
    np.testing.assert_allclose(float(f(net)), dense_sigma_min(net), rtol=1e-10)


@pytest.mark.parametrize("method", ["lanczos", "lobpcg"])
def test_fewer_parameters_than_outputs_is_exactly_zero(method):
    net = dip.TwoLayerDIP.init(jax.random.PRNGKey(0), n=12, k=3, d=2)  # p = 6
    assert float(dip.sigma_min_jacobian(net, method=method)) == 0.0
    assert int(dip.gram_min_eigenvalue(net, method=method).num_matvecs) == 0
    problem = dip.InverseProblem.gaussian(jax.random.PRNGKey(1), m=8, n=12)
    assert float(dip.measurement_min_eigenvalue(net, problem, method=method)) == 0.0


def _problem(matrix_free, m=8, n=12):
    problem = dip.InverseProblem.gaussian(jax.random.PRNGKey(2), m=m, n=n)
    if matrix_free:
        A = problem.A
        op = lx.FunctionLinearOperator(
            lambda x: A @ x, jax.ShapeDtypeStruct((n,), A.dtype)
        )
        problem = dip.InverseProblem(op, y=problem.y)
    return problem


@pytest.mark.parametrize(
    "name, method, matrix_free",
    [
        ("two-layer W", "lanczos", False),
        ("two-layer W, V", "lanczos", True),
        ("MLP depth 2", "lanczos", True),
        ("two-layer W, V", "lobpcg", True),
    ],
)
def test_measurement_min_eigenvalue_matches_dense_kernel(name, method, matrix_free):
    net = make(name)
    n = dense_J(net).shape[0]
    problem = _problem(matrix_free, n=n)
    AJ = np.asarray(problem.as_matrix()) @ dense_J(net)
    expected = np.linalg.eigvalsh(AJ @ AJ.T)[0]
    got = float(dip.measurement_min_eigenvalue(net, problem, method=method))
    np.testing.assert_allclose(got, expected, rtol=1e-8)
    # The dense method is m times the rate.
    dense = float(dip.measurement_min_eigenvalue(net, problem))
    rate = float(dip.measurement_rate(net, problem)) * problem.m
    np.testing.assert_allclose(dense, rate, rtol=1e-12)
    np.testing.assert_allclose(dense, expected, rtol=1e-8)


def test_bad_arguments():
    net = make("two-layer W")
    problem = _problem(False)
    with pytest.raises(ValueError, match="`method` must be one of"):
        dip.sigma_min_jacobian(net, method="qr")
    with pytest.raises(ValueError, match="`method` must be one of"):
        dip.measurement_min_eigenvalue(net, problem, method="svd")
    with pytest.raises(ValueError, match="`method` must be one of"):
        dip.smallest_eigenvalue(lambda v: v, 10, method="dense")
    with pytest.raises(ValueError, match="`mode`"):
        dip.sigma_min_jacobian(net, mode="both", method="lanczos")
    with pytest.raises(ValueError, match="`num_iters` must be >= 1"):
        dip.sigma_min_jacobian(net, method="lanczos", num_iters=0)
    with pytest.raises(TypeError, match="`num_iters` must be an integer"):
        dip.gram_min_eigenvalue(net, num_iters=2.5)
    with pytest.raises(ValueError, match="`rtol` must be > 0"):
        dip.gram_min_eigenvalue(net, rtol=-1.0)
    with pytest.raises(TypeError, match="`rtol` must be a real number"):
        dip.gram_min_eigenvalue(net, rtol="small")
    with pytest.raises(ValueError, match="n > 5"):
        dip.smallest_eigenvalue(lambda v: v, 5, method="lobpcg")
    wide = dip.InverseProblem.gaussian(jax.random.PRNGKey(0), m=14, n=12)
    with pytest.raises(ValueError, match="full row rank"):
        dip.measurement_min_eigenvalue(net, wide, method="lanczos")
