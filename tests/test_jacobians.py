"""Jacobians and kernels against references built by hand in NumPy: the closed-form
Jacobian of DESIGN §1, central finite differences, J Jᵀ, σ_min from eigvalsh,
K_A = A J Jᵀ Aᵀ, its rate on Im(A), and the Lemma 3 bound on Lip(J)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest
import scipy.special
from jax.flatten_util import ravel_pytree

import dipflow as dip

PHI = {
    "sigmoid": scipy.special.expit,
    "tanh": np.tanh,
    "softplus": lambda x: np.logaddexp(0.0, x),
    "relu": lambda x: np.maximum(x, 0.0),
}
DPHI = {
    "sigmoid": lambda x: scipy.special.expit(x) * scipy.special.expit(-x),
    "tanh": lambda x: 1.0 - np.tanh(x) ** 2,
    "softplus": scipy.special.expit,
    "relu": lambda x: (x > 0).astype(float),
}

# The shapes used throughout, (n, k, d): n ≤ k; k < n ≤ k·d; and fewer parameters
# than outputs, k·d < n.
WIDE, NARROW, TINY = (8, 20, 5), (12, 8, 5), (12, 3, 2)


def make_net(
    shape, activation="sigmoid", train=("W",), seed=0, u_scale=1.0, v_dist="rademacher"
):
    """A network drawn as in A-1..A-3 with NumPy (u scaled off the sphere if asked)."""
    n, k, d = shape
    rng = np.random.default_rng(seed)
    if v_dist == "rademacher":
        V = rng.choice([-1.0, 1.0], size=(n, k))
    else:
        V = rng.uniform(-np.sqrt(3.0), np.sqrt(3.0), size=(n, k))
    u = rng.standard_normal(d)
    u *= u_scale / np.linalg.norm(u)
    W = rng.standard_normal((k, d))
    return dip.TwoLayerDIP(V, W, u, activation=activation, train=train)


def arrays(net):
    return tuple(np.asarray(a) for a in (net.V, net.W, net.u))


def jacobian_W(V, W, u, activation):
    """J[:, i·d + j] = V[:, i] φ'(z_i) u_j / √k (row-major W), z = W u."""
    k = V.shape[1]
    J = (V * DPHI[activation](W @ u))[:, :, None] * u[None, None, :] / np.sqrt(k)
    return J.reshape(V.shape[0], -1)


def closed_form_jacobian_W(net):
    return jacobian_W(*arrays(net), net.activation.name)


def closed_form_jacobian_V(net):
    """∂g_a/∂V_bc = δ_ab φ(z_c) / √k (row-major V)."""
    V, W, u = arrays(net)
    n, k = V.shape
    phi = PHI[net.activation.name](W @ u)
    return np.kron(np.eye(n), phi[None, :]) / np.sqrt(k)


def reference_jacobian(net):
    """The closed form, in the pytree order of TwoLayerDIP's fields (V, W, u)."""
    blocks = {"V": closed_form_jacobian_V, "W": closed_form_jacobian_W}
    return np.concatenate([blocks[f](net) for f in ("V", "W") if f in net.train], 1)


def finite_difference_jacobian(g, theta, h=1e-6):
    """Central differences of g at theta, all columns at once (one compiled call)."""
    E = h * jnp.eye(theta.shape[0], dtype=theta.dtype)
    columns = jax.jit(jax.vmap(lambda e: (g(theta + e) - g(theta - e)) / (2 * h)))
    return np.asarray(columns(E)).T


def flat(net):
    params, static = eqx.partition(net, net.trainable_filter())
    theta, unravel = ravel_pytree(params)
    return theta, lambda t: eqx.combine(unravel(t), static)()


def sigma_min_reference(J):
    n, p = J.shape
    if p < n:
        return 0.0
    return np.sqrt(max(np.linalg.eigvalsh(J @ J.T)[0], 0.0))


# -- the Jacobian ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "activation, u_scale",
    [("sigmoid", 1.0), ("tanh", 1.0), ("softplus", 1.0), ("relu", 1.0), ("tanh", 1.7)],
)
def test_jacobian_closed_form(activation, u_scale):
    net = make_net(WIDE, activation, u_scale=u_scale)
    V, W, u = arrays(net)
    n, k, d = WIDE
    # The network itself is V φ(W u) / √k.
    np.testing.assert_allclose(
        np.asarray(net()), V @ PHI[activation](W @ u) / np.sqrt(k), rtol=1e-13
    )
    J = np.asarray(dip.jacobian(net))
    assert J.shape == (n, k * d)
    np.testing.assert_allclose(J, closed_form_jacobian_W(net), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("train", [("W",), ("W", "V"), ("V",)])
def test_jacobian_finite_differences(train):
    net = make_net(WIDE, "tanh", train=train)
    theta, g = flat(net)
    J = np.asarray(dip.jacobian(net))
    np.testing.assert_allclose(J, finite_difference_jacobian(g, theta), atol=1e-8)
    np.testing.assert_allclose(J, reference_jacobian(net), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("shape", [WIDE, TINY])
def test_jacobian_modes_agree(shape):
    # WIDE has more parameters than outputs ("auto" picks jacrev), TINY fewer (jacfwd).
    net = make_net(shape, "softplus")
    expected = closed_form_jacobian_W(net)
    for mode in ("auto", "fwd", "rev"):
        np.testing.assert_allclose(
            np.asarray(dip.jacobian(net, mode=mode)), expected, rtol=1e-12, atol=1e-15
        )
        np.testing.assert_allclose(
            float(dip.sigma_min_jacobian(net, mode=mode)),
            sigma_min_reference(expected),
            rtol=1e-9,
            atol=1e-15,
        )


# -- the Gram matrix and σ_min ----------------------------------------------------------


@pytest.mark.parametrize(
    "shape, train, u_scale",
    [
        (WIDE, ("W",), 1.0),
        (WIDE, ("W",), 1.7),
        (WIDE, ("W", "V"), 1.0),
        (WIDE, ("V",), 1.0),
        (NARROW, ("W", "V"), 1.0),
    ],
)
def test_gram_is_J_JT(shape, train, u_scale):
    net = make_net(shape, "sigmoid", train=train, u_scale=u_scale)
    J = np.asarray(dip.jacobian(net))
    G = np.asarray(dip.gram(net))
    np.testing.assert_allclose(G, J @ J.T, rtol=1e-12, atol=1e-15)
    J_ref = reference_jacobian(net)
    np.testing.assert_allclose(G, J_ref @ J_ref.T, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    "shape, train, activation",
    [
        (WIDE, ("W",), "sigmoid"),
        (WIDE, ("W",), "tanh"),
        (WIDE, ("W", "V"), "softplus"),
        (NARROW, ("W", "V"), "sigmoid"),
    ],
)
def test_sigma_min_positive(shape, train, activation):
    net = make_net(shape, activation, train=train, seed=1)
    J = reference_jacobian(net)
    expected = sigma_min_reference(J)
    assert expected > 1e-3
    np.testing.assert_allclose(float(dip.sigma_min_jacobian(net)), expected, rtol=1e-9)
    np.testing.assert_allclose(float(dip.sigma_min_gram(net)), expected, rtol=1e-9)
    np.testing.assert_allclose(
        expected, np.linalg.svd(J, compute_uv=False)[shape[0] - 1], rtol=1e-9
    )


def test_sigma_min_zero_with_fewer_parameters_than_outputs():
    net = make_net(TINY, "sigmoid")
    n, k, d = TINY
    assert k * d < n
    assert float(dip.sigma_min_jacobian(net)) == 0.0
    assert float(dip.sigma_min_gram(net)) == 0.0
    # The Gram itself is still J Jᵀ, of rank ≤ k·d.
    J = closed_form_jacobian_W(net)
    np.testing.assert_allclose(np.asarray(dip.gram(net)), J @ J.T, rtol=1e-12)


def test_sigma_min_zero_when_n_exceeds_k():
    # k·d ≥ n, but J = V diag(φ') (I ⊗ uᵀ) / √k has rank ≤ k < n.
    net = make_net(NARROW, "sigmoid")
    n, k, d = NARROW
    assert k < n <= k * d
    J = closed_form_jacobian_W(net)
    assert np.linalg.matrix_rank(J) == k
    scale = np.linalg.norm(J, 2)
    assert float(dip.sigma_min_jacobian(net)) <= 1e-12 * scale
    # sqrt of a round-off eigenvalue: zero to about sqrt(eps).
    assert float(dip.sigma_min_gram(net)) <= 1e-6 * scale


# -- the measurement-space kernel and its rate --------------------------------------------


def random_A(seed, m, n, rank=None):
    rng = np.random.default_rng(seed)
    if rank is None:
        return rng.standard_normal((m, n))
    return rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n))


def problem_for(A, matrix_free=False):
    op = lx.MatrixLinearOperator(jnp.asarray(A)) if matrix_free else A
    return dip.InverseProblem(op, y=np.zeros(A.shape[0]))


def rate_reference(K, A):
    """λ_min of K on Im(A), via an orthonormal basis of Im(A) from NumPy's SVD."""
    U, s, _ = np.linalg.svd(A)
    r = int(np.sum(s > s[0] * max(A.shape) * np.finfo(float).eps))
    Q = U[:, :r]
    return np.linalg.eigvalsh(Q.T @ K @ Q)[0] / A.shape[0]


@pytest.mark.parametrize(
    "shape, train, matrix_free, use_filter",
    [
        (WIDE, ("W",), False, False),
        (WIDE, ("W",), True, False),
        (WIDE, ("W",), False, True),
        (WIDE, ("W", "V"), False, False),
        (NARROW, ("W",), True, False),
    ],
)
def test_measurement_kernel(shape, train, matrix_free, use_filter):
    net = make_net(shape, "tanh", train=train)
    A = random_A(2, 6, shape[0])
    J = reference_jacobian(net)
    trainable = net.trainable_filter() if use_filter else None
    K = np.asarray(dip.measurement_kernel(net, problem_for(A, matrix_free), trainable))
    np.testing.assert_allclose(K, A @ J @ J.T @ A.T, rtol=1e-11, atol=1e-13)


def test_kernel_drives_residual():
    # d/dt r = A J θ' = −K_A r / m along the flow θ' = −∇L.
    net = make_net(WIDE, "sigmoid")
    A = random_A(3, 6, 8)
    y = np.random.default_rng(3).standard_normal(6)
    problem = dip.InverseProblem(A, y=y)
    grad = jax.grad(lambda W: dip.loss(eqx.tree_at(lambda t: t.W, net, W), problem))
    theta_dot = -np.asarray(grad(net.W)).reshape(-1)
    r = A @ np.asarray(net()) - y
    K = np.asarray(dip.measurement_kernel(net, problem))
    np.testing.assert_allclose(
        A @ closed_form_jacobian_W(net) @ theta_dot, -K @ r / 6, rtol=1e-11
    )


@pytest.mark.parametrize(
    "shape, m, rank, matrix_free",
    [
        (WIDE, 6, None, False),  # full row rank, Im(A) = R^m
        (WIDE, 6, None, True),
        (WIDE, 6, 3, False),  # rank-deficient A
        (WIDE, 10, None, False),  # tall A, Im(A) a subspace of R^m
        (NARROW, 6, None, False),  # n > k ≥ m: σ_min(J) = 0 but the rate is > 0
        (NARROW, 8, 5, True),
    ],
)
def test_measurement_rate(shape, m, rank, matrix_free):
    net = make_net(shape, "sigmoid", seed=4)
    A = random_A(5, m, shape[0], rank)
    problem = problem_for(A, matrix_free)
    J = closed_form_jacobian_W(net)
    K = A @ J @ J.T @ A.T
    expected = rate_reference(K, A)
    assert expected > 1e-4
    rate = float(dip.measurement_rate(net, problem))
    np.testing.assert_allclose(rate, expected, rtol=1e-8)
    # Never below the paper's rate σ_A² σ_min(J)² / m.
    s = np.linalg.svd(A, compute_uv=False)
    sigma_A = s[s > s[0] * max(A.shape) * np.finfo(float).eps].min()
    sigma_min = sigma_min_reference(J)
    assert rate >= sigma_A**2 * sigma_min**2 / m * (1 - 1e-9)
    if shape == NARROW:
        assert sigma_min < 1e-6 * np.linalg.norm(J, 2)


# -- Lemma 3 -------------------------------------------------------------------------------


def lipschitz_ratios(net, num_pairs, seed):
    """||J(W) − J(W̃)||₂ / ||W − W̃||_F over random pairs at several distances."""
    V, W, u = arrays(net)
    rng = np.random.default_rng(seed)
    J0 = closed_form_jacobian_W(net)
    ratios = []
    for i in range(num_pairs):
        delta = rng.standard_normal(W.shape) * 10.0 ** rng.uniform(-4, 1)
        if i % 3 == 0:  # one row only: the direction that makes Lemma 3 tight
            delta[np.arange(W.shape[0]) != i % W.shape[0]] = 0.0
        dJ = jacobian_W(V, W + delta, u, net.activation.name) - J0
        ratios.append(np.linalg.norm(dJ, 2) / np.linalg.norm(delta))
    return np.array(ratios)


@pytest.mark.parametrize(
    "activation, v_dist, u_scale",
    [
        ("sigmoid", "rademacher", 1.0),
        ("tanh", "rademacher", 1.0),
        ("softplus", "uniform", 1.0),
        ("tanh", "uniform", 1.7),
    ],
)
def test_lipschitz_bound_holds(activation, v_dist, u_scale):
    net = make_net(WIDE, activation, v_dist=v_dist, u_scale=u_scale)
    bound = float(dip.lipschitz_bound(net))
    n, k, _ = WIDE
    D = np.max(np.abs(np.asarray(net.V)))
    np.testing.assert_allclose(
        bound,
        dip.get_activation(activation).bound * D * np.sqrt(n / k) * u_scale**2,
        rtol=1e-12,
    )
    ratios = lipschitz_ratios(net, num_pairs=30, seed=6)
    assert np.all(ratios <= bound * (1 + 1e-10))
    assert np.max(ratios) > 0


# -- a generator other than the two-layer net -------------------------------------------


@pytest.mark.parametrize("train", [("weights",), ("weights", "V")])
def test_mlp_jacobian(train):
    rng = np.random.default_rng(7)
    W1, W2 = rng.standard_normal((6, 5)), rng.standard_normal((10, 6))
    V, u = rng.uniform(-np.sqrt(3.0), np.sqrt(3.0), (8, 10)), rng.standard_normal(5)
    u /= np.linalg.norm(u)
    net = dip.MLPDIP((W1, W2), V, u, train=train)
    h1 = scipy.special.expit(W1 @ u)
    h2 = scipy.special.expit(W2 @ h1 / np.sqrt(6))
    np.testing.assert_allclose(np.asarray(net()), V @ h2 / np.sqrt(10), rtol=1e-13)

    theta, g = flat(net)
    J = np.asarray(dip.jacobian(net))
    assert J.shape == (8, 6 * 5 + 10 * 6 + 8 * 10 * ("V" in train))
    np.testing.assert_allclose(J, finite_difference_jacobian(g, theta), atol=1e-8)
    expected = sigma_min_reference(J)
    assert expected > 1e-3
    np.testing.assert_allclose(float(dip.sigma_min_jacobian(net)), expected, rtol=1e-9)
    A = random_A(8, 6, 8)
    K = np.asarray(dip.measurement_kernel(net, problem_for(A)))
    np.testing.assert_allclose(K, A @ J @ J.T @ A.T, rtol=1e-11, atol=1e-13)
    assert np.isnan(float(dip.lipschitz_bound(net)))
    with pytest.raises(TypeError, match="TwoLayerDIP"):
        dip.gram(net)
