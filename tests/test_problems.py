"""Inverse problems: the spectrum (||A||, σ_A, κ(A), rank) against NumPy's SVD for
dense and matrix-free operators, the generators, and forward/adjoint of a
matrix-free operator against the dense matrix."""

import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest

import dipflow as dip
from dipflow.problems import _draws


def numpy_spectrum(A):
    """(||A||, smallest non-zero σ, κ, rank) with numpy.linalg.matrix_rank's cutoff."""
    s = np.linalg.svd(A, compute_uv=False)
    nonzero = s[s > s[0] * max(A.shape) * np.finfo(A.dtype).eps]
    return s[0], nonzero.min(), s[0] / nonzero.min(), nonzero.size


def random_matrix(seed, m, n, rank=None):
    """A Gaussian `(m, n)` matrix, or a product of thin factors of the given rank."""
    rng = np.random.default_rng(seed)
    if rank is None:
        return rng.standard_normal((m, n))
    return rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n))


def matrix_operator(A):
    return lx.MatrixLinearOperator(jnp.asarray(A))


def function_operator(A):
    A_j = jnp.asarray(A)
    return lx.FunctionLinearOperator(
        lambda x: A_j @ x, jax.ShapeDtypeStruct((A.shape[1],), A_j.dtype)
    )


OPERATORS = {
    "dense": jnp.asarray,
    "matrix": matrix_operator,
    "function": function_operator,
}

# (m, n, rank): wide, tall and square; full rank and rank-deficient. Sides ≤ 32
# take the small-Gram branch for matrix-free operators, larger ones Lanczos.
SMALL_CASES = [(12, 20, None), (20, 12, None), (15, 15, None), (12, 20, 5)]
LARGE_CASES = [(40, 60, None), (60, 40, None), (40, 60, 36), (60, 40, 10)]


def check_spectrum(spec, A, rtol, with_rank=True):
    norm, sigma_A, kappa, rank = numpy_spectrum(A)
    np.testing.assert_allclose(float(spec.norm), norm, rtol=rtol)
    np.testing.assert_allclose(float(spec.sigma_A), sigma_A, rtol=rtol)
    np.testing.assert_allclose(float(spec.kappa), kappa, rtol=rtol)
    if with_rank:
        assert int(spec.rank) == rank


@pytest.mark.parametrize("kind", list(OPERATORS))
@pytest.mark.parametrize("m, n, rank", SMALL_CASES)
def test_spectrum_small(kind, m, n, rank):
    A = random_matrix(m + n, m, n, rank)
    problem = dip.InverseProblem(OPERATORS[kind](A), y=np.zeros(m))
    assert problem.is_matrix_free == (kind != "dense")
    check_spectrum(problem.spectrum(), A, rtol=1e-10)


@pytest.mark.parametrize("kind", ["matrix", "function"])
@pytest.mark.parametrize("m, n, rank", LARGE_CASES)
def test_spectrum_iterative(kind, m, n, rank):
    A = random_matrix(m + n, m, n, rank)
    spec = dip.InverseProblem(OPERATORS[kind](A), y=np.zeros(m)).spectrum()
    # Lanczos does not report a rank; the singular values must still be exact.
    check_spectrum(spec, A, rtol=1e-8, with_rank=False)


def test_spectrum_rank_deficient_skips_zeros():
    # A product of thin factors: σ_5.. are round-off, σ_A is σ_4 (0-based).
    A = random_matrix(0, 12, 20, rank=5)
    s = np.linalg.svd(A, compute_uv=False)
    assert s[5] < 1e-12 * s[0]
    spec = dip.InverseProblem(A, y=np.zeros(12)).spectrum()
    np.testing.assert_allclose(float(spec.sigma_A), s[4], rtol=1e-10)
    assert int(spec.rank) == 5


def masked_blur(n, keep, kernel):
    """A mask after a circular blur: image-style operator, matrix-free, and the
    same map written densely with a NumPy loop."""
    kernel_j = jnp.asarray(kernel)
    keep_j = jnp.asarray(keep)

    def blur(x):
        return sum(kernel_j[j] * jnp.roll(x, j - 1) for j in range(len(kernel)))

    op = lx.FunctionLinearOperator(
        lambda x: blur(x)[keep_j], jax.ShapeDtypeStruct((n,), jnp.float64)
    )
    dense = np.zeros((len(keep), n))
    for row, i in enumerate(keep):
        for j, c in enumerate(kernel):
            dense[row, (i - (j - 1)) % n] += c
    return op, dense


@pytest.mark.parametrize("n, n_keep", [(30, 20), (60, 40)])
def test_spectrum_masked_blur(n, n_keep):
    rng = np.random.default_rng(n)
    keep = np.sort(rng.choice(n, n_keep, replace=False))
    op, dense = masked_blur(n, keep, kernel=[0.25, 0.5, 0.25])
    np.testing.assert_allclose(np.asarray(op.as_matrix()), dense, atol=1e-15)
    spec = dip.InverseProblem(op, y=np.zeros(n_keep)).spectrum()
    check_spectrum(spec, dense, rtol=1e-8, with_rank=n_keep <= 32)


@pytest.mark.parametrize(
    "m, n, kappa, sigma_max",
    [(12, 20, 10.0, None), (20, 12, 100.0, 2.5), (12, 20, 1.0, None)],
)
def test_with_condition_number(m, n, kappa, sigma_max):
    problem = dip.InverseProblem.with_condition_number(
        jax.random.key(1), m, n, kappa, sigma_max=sigma_max
    )
    A = np.asarray(problem.A)
    assert A.shape == (m, n)
    expected_max = np.sqrt(m) + np.sqrt(n) if sigma_max is None else sigma_max
    s = np.linalg.svd(A, compute_uv=False)
    np.testing.assert_allclose(s[0], expected_max, rtol=1e-12)
    np.testing.assert_allclose(s[0] / s[-1], kappa, rtol=1e-10)
    # Geometric spacing from σ_max down to σ_max / κ.
    r = min(m, n)
    np.testing.assert_allclose(
        s, expected_max * kappa ** -np.linspace(0.0, 1.0, r), rtol=1e-10
    )
    spec = problem.spectrum()
    np.testing.assert_allclose(float(spec.kappa), kappa, rtol=1e-10)
    np.testing.assert_allclose(float(spec.norm), expected_max, rtol=1e-12)
    assert int(spec.rank) == r
    np.testing.assert_allclose(
        np.asarray(problem.y), A @ np.asarray(problem.x_true), rtol=1e-12, atol=1e-12
    )


def test_gaussian_noise_statistics():
    m, n, sigma = 20_000, 2, 0.3
    problem = dip.InverseProblem.gaussian(jax.random.key(2), m, n, noise=sigma)
    A, x, eps, y = (
        np.asarray(a) for a in (problem.A, problem.x_true, problem.noise, problem.y)
    )
    assert A.shape == (m, n) and x.shape == (n,) and eps.shape == y.shape == (m,)
    np.testing.assert_allclose(y, A @ x + eps, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(
        np.asarray(problem.y_clean), A @ x, rtol=1e-13, atol=1e-13
    )
    # Sample std has relative standard error 1/sqrt(2m) = 0.5%; allow 5%.
    assert abs(eps.std() / sigma - 1.0) < 0.05
    assert abs(eps.mean()) < 5 * sigma / np.sqrt(m)
    # A is iid N(0, 1) and independent of the noise.
    assert abs(A.std() - 1.0) < 0.05 and abs(A.mean()) < 0.05
    assert abs(np.corrcoef(A[:, 0], eps)[0, 1]) < 0.05


def test_gaussian_noiseless_and_with_noise():
    problem = dip.InverseProblem.gaussian(jax.random.key(3), 12, 20)
    A, x = np.asarray(problem.A), np.asarray(problem.x_true)
    np.testing.assert_array_equal(np.asarray(problem.noise), np.zeros(12))
    np.testing.assert_allclose(np.asarray(problem.y), A @ x, rtol=1e-13)
    noisy = problem.with_noise(jax.random.key(4), 0.5)
    np.testing.assert_array_equal(np.asarray(noisy.A), A)
    np.testing.assert_allclose(
        np.asarray(noisy.y), A @ x + np.asarray(noisy.noise), rtol=1e-13
    )
    assert np.linalg.norm(np.asarray(noisy.noise)) > 0


@pytest.mark.parametrize("kind", ["matrix", "function"])
@pytest.mark.parametrize("m, n", [(12, 20), (20, 12)])
def test_matrix_free_forward_adjoint(kind, m, n):
    rng = np.random.default_rng(5)
    A = rng.standard_normal((m, n))
    x, noise, r = (rng.standard_normal(size) for size in (n, m, m))
    x_j, r_j = jnp.asarray(x), jnp.asarray(r)
    free = dip.InverseProblem(OPERATORS[kind](A), x_true=x, noise=noise)
    dense = dip.InverseProblem(A, x_true=x, noise=noise)
    assert free.is_matrix_free and not dense.is_matrix_free
    assert (free.m, free.n) == (dense.m, dense.n) == (m, n)
    np.testing.assert_allclose(np.asarray(free.y), A @ x + noise, rtol=1e-13)
    np.testing.assert_allclose(np.asarray(free.y), np.asarray(dense.y), rtol=1e-13)
    np.testing.assert_allclose(np.asarray(free.forward(x_j)), A @ x, rtol=1e-13)
    np.testing.assert_allclose(np.asarray(free.adjoint(r_j)), A.T @ r, rtol=1e-13)
    np.testing.assert_allclose(np.asarray(dense.adjoint(r_j)), A.T @ r, rtol=1e-13)
    np.testing.assert_allclose(np.asarray(free.as_matrix()), A, rtol=1e-15)
    # Adjointness: <A x, r> = <x, Aᵀ r>.
    np.testing.assert_allclose(
        float(free.forward(x_j) @ r_j), float(x_j @ free.adjoint(r_j)), rtol=1e-12
    )


def test_problem_is_a_pytree():
    problem = dip.InverseProblem.gaussian(jax.random.key(6), 12, 20, noise=0.1)
    out = jax.jit(lambda p: p.adjoint(p.forward(p.x_true) - p.y))(problem)
    np.testing.assert_allclose(
        np.asarray(out),
        -np.asarray(problem.A).T @ np.asarray(problem.noise),
        rtol=1e-12,
    )
    batched = jax.vmap(lambda p: p.forward(p.x_true))(
        jax.tree_util.tree_map(lambda a: jnp.stack([a, 2 * a]), problem)
    )
    assert batched.shape == (2, 12)
    np.testing.assert_allclose(
        np.asarray(batched[1]), 4 * np.asarray(batched[0]), rtol=1e-12
    )


@pytest.mark.parametrize("backend", ["numpy", "jax"])
@pytest.mark.parametrize("m, n, kappa", [(12, 20, 10.0), (20, 12, 100.0), (7, 7, 1.0)])
def test_conditioned_has_the_prescribed_singular_values(backend, m, n, kappa):
    rng = np.random.default_rng(m + n)
    r = min(m, n)
    G_left, G_right = rng.standard_normal((m, r)), rng.standard_normal((n, r))
    if backend == "jax":
        G_left, G_right = jnp.asarray(G_left), jnp.asarray(G_right)
    U, V = (np.asarray(_draws.haar(G)) for G in (G_left, G_right))
    np.testing.assert_allclose(U.T @ U, np.eye(r), atol=1e-13)
    np.testing.assert_allclose(V.T @ V, np.eye(r), atol=1e-13)
    A = np.asarray(_draws.conditioned(G_left, G_right, kappa))
    s = (np.sqrt(m) + np.sqrt(n)) * kappa ** -np.linspace(0.0, 1.0, r)
    np.testing.assert_allclose(A, (U * s) @ V.T, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(np.linalg.svd(A, compute_uv=False), s, rtol=1e-12)


def test_haar_is_haar():
    # Haar O(p): E[Q_00] = 0, E[Q_00²] = 1/p, E[tr Q] = 0 and E[(tr Q)²] = 1 (the
    # moments of scipy.stats.ortho_group). QR without the sign fix has Q_00 < 0
    # always and fails every one of them but the second.
    p, draws = 4, 4000
    G = np.random.default_rng(0).standard_normal((draws, p, p))
    for Q in (
        np.stack([_draws.haar(g) for g in G]),
        np.asarray(jax.vmap(_draws.haar)(jnp.asarray(G))),
    ):
        q00, tr = Q[:, 0, 0], np.trace(Q, axis1=1, axis2=2)
        se = 1 / np.sqrt(draws)
        assert abs(q00.mean()) < 5 * se / np.sqrt(p)
        assert abs((q00**2).mean() - 1 / p) < 5 * se * np.sqrt(3) / p
        assert abs(tr.mean()) < 5 * se
        assert abs((tr**2).mean() - 1) < 5 * np.sqrt(2) * se


def test_condition_number_draws_are_one_distribution():
    # InverseProblem.with_condition_number and the studies' NumPy draws build A
    # by the same construction from their Gaussian matrices.
    m, n, kappa = 5, 8, 30.0
    key_u, key_v = jax.random.split(jax.random.key(3), 4)[:2]
    problem = dip.InverseProblem.with_condition_number(jax.random.key(3), m, n, kappa)
    G_left = np.asarray(jax.random.normal(key_u, (m, m)))
    G_right = np.asarray(jax.random.normal(key_v, (n, m)))
    np.testing.assert_allclose(
        np.asarray(problem.A),
        _draws.conditioned(G_left, G_right, kappa),
        rtol=1e-12,
        atol=1e-12,
    )
