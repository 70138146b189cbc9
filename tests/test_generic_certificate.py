"""The generic Theorem 1(i) certificate: σ_min(J0) against finite differences,
the matrix-free path against the dense one, the Lipschitz bracket against
difference quotients, and agreement with `theorem1` on the paper's network."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dipflow as dip
from dipflow.theory._jacobians import flat_generator

from .test_theory import wide_instance

# One search length throughout, so that each network shape compiles once.
STEPS = 100


def mlp_instance():
    net = dip.MLPDIP.init(jax.random.key(2), n=4, d=3, widths=(6, 5))
    problem = dip.InverseProblem.gaussian(jax.random.key(3), m=3, n=4)
    return net, problem


def both_layers_instance():
    k_net, k_prob = jax.random.split(jax.random.key(1))
    net = dip.TwoLayerDIP.init(k_net, n=4, k=8, d=3, train=("W", "V"))
    problem = dip.InverseProblem.gaussian(k_prob, m=3, n=4)
    return net, problem


@pytest.fixture(scope="module")
def mlp():
    net, problem = mlp_instance()
    return net, problem, dip.generic_certificate(net, problem, steps=STEPS)


@pytest.fixture(scope="module")
def both_layers():
    net, problem = both_layers_instance()
    return net, problem, dip.generic_certificate(net, problem, steps=STEPS)


@pytest.fixture(scope="module")
def paper():
    net, problem = wide_instance()
    return net, problem, dip.generic_certificate(net, problem, steps=STEPS)


def dense_jacobian(net):
    theta0, g = flat_generator(net)
    return theta0, jax.jit(jax.jacrev(g))


def difference_quotient(jac, t1, t2):
    """The exact `||J(θ1) − J(θ2)||_op / ||θ1 − θ2||` from dense Jacobians."""
    D = np.asarray(jac(t1) - jac(t2))
    return np.linalg.norm(D, 2) / np.linalg.norm(np.asarray(t1 - t2))


def random_pairs(theta0, radius, num, seed=0):
    """Pairs in the ball: uniform directions, radii uniform in [0, radius]."""
    rng = np.random.default_rng(seed)
    theta0 = np.asarray(theta0)
    for _ in range(num):
        pair = []
        for _ in range(2):
            e = rng.standard_normal(theta0.shape)
            pair.append(theta0 + rng.uniform(0, radius) * e / np.linalg.norm(e))
        yield jnp.asarray(pair[0]), jnp.asarray(pair[1])


# -- σ_min(J0) ----------------------------------------------------------------------------


def test_mlp_sigma_min_matches_finite_differences(mlp):
    net, _, cert = mlp
    theta0, g = flat_generator(net)
    h = 1e-5
    eye = np.eye(theta0.size)
    # Central differences, one column per parameter: independent of autodiff.
    J = np.stack(
        [(np.asarray(g(theta0 + h * e)) - np.asarray(g(theta0 - h * e))) / (2 * h) for e in eye],
        axis=1,
    )  # fmt: skip
    sigma = np.linalg.svd(J, compute_uv=False)[-1]
    assert cert.sigma_min_method == "svd"
    assert sigma > 1e-2  # a well-posed instance, so rtol is meaningful
    np.testing.assert_allclose(cert.sigma_min_J0, sigma, rtol=1e-6)


@pytest.mark.parametrize("case", ["mlp", "both_layers"])
def test_matrix_free_sigma_min_matches_dense(case, request):
    net, problem, dense = request.getfixturevalue(case)
    free = dip.generic_certificate(net, problem, steps=STEPS, dense_limit=0)
    assert (dense.sigma_min_method, free.sigma_min_method) == ("svd", "gram")
    np.testing.assert_allclose(free.sigma_min_J0, dense.sigma_min_J0, rtol=1e-8)


def test_matrix_free_sigma_min_is_zero_without_enough_parameters():
    # p = 2 < n = 4: J Jᵀ has rank ≤ 2.
    net = dip.TwoLayerDIP.init(jax.random.key(0), n=4, k=2, d=1)
    problem = dip.InverseProblem.gaussian(jax.random.key(1), m=3, n=4)
    cert = dip.generic_certificate(net, problem, steps=2, num_restarts=1, dense_limit=0)
    assert float(cert.sigma_min_J0) == 0.0
    assert cert.verdict == "refuted"


# -- the Lipschitz bracket ----------------------------------------------------------------


@pytest.mark.parametrize("case", ["paper", "both_layers", "mlp"])
def test_lip_lower_is_attained_in_the_ball(case, request):
    net, _, cert = request.getfixturevalue(case)
    theta0, jac = dense_jacobian(net)
    for t in (cert.theta1, cert.theta2):
        assert float(jnp.linalg.norm(t - theta0)) <= float(cert.radius)
    np.testing.assert_allclose(jnp.linalg.norm(cert.v), 1.0, rtol=1e-12)
    D = jac(cert.theta1) - jac(cert.theta2)
    quotient = jnp.linalg.norm(D @ cert.v) / jnp.linalg.norm(cert.theta1 - cert.theta2)
    np.testing.assert_allclose(cert.lip_lower, quotient, rtol=1e-8)
    # v is (close to) the top singular vector: the operator norm is not far above.
    exact = difference_quotient(jac, cert.theta1, cert.theta2)
    assert float(cert.lip_lower) <= exact * (1 + 1e-10)
    assert float(cert.lip_lower) >= 0.99 * exact


def test_restarts_batched_or_one_after_another_find_the_same_pair(mlp, monkeypatch):
    # On a CPU the restarts run one after another; batched (as on an
    # accelerator) they are the same search, to round-off.
    from dipflow.theory import _generic_certificate

    net, problem, cert = mlp
    monkeypatch.setattr(_generic_certificate, "on_cpu", lambda: False)
    batched = dip.generic_certificate(net, problem, steps=STEPS)
    np.testing.assert_allclose(batched.lip_lower, cert.lip_lower, rtol=1e-10)
    for field in ("theta1", "theta2", "v"):
        np.testing.assert_allclose(
            getattr(batched, field), getattr(cert, field), rtol=1e-8, atol=1e-12
        )


@pytest.mark.parametrize("case", ["paper", "both_layers", "mlp"])
def test_upper_bound_bounds_difference_quotients(case, request):
    net, _, cert = request.getfixturevalue(case)
    theta0, jac = dense_jacobian(net)
    upper = float(cert.lip_upper)
    assert np.isfinite(upper)
    assert float(cert.lip_lower) <= upper
    quotients = [
        difference_quotient(jac, t1, t2)
        for t1, t2 in random_pairs(theta0, float(cert.radius), 20)
    ]
    assert max(quotients) <= upper
    # The adversarial search does better than random pairs.
    assert float(cert.lip_lower) >= max(quotients)


def test_both_layers_bound_holds_on_a_small_ball():
    # Close pairs probe the second derivative, where the bound is tightest.
    net, problem = both_layers_instance()
    cert = dip.generic_certificate(net, problem, radius=0.05, steps=STEPS)
    assert 0 < float(cert.lip_lower) <= float(cert.lip_upper)
    assert float(cert.radius) == 0.05


def test_mlp_upper_bound_is_layer_wise(mlp):
    _, _, cert = mlp
    assert cert.upper_bound == "layer-wise" and np.isfinite(float(cert.lip_upper))
    assert (cert.verdict == "refuted") == bool(cert.lip_lower > cert.lip_threshold)
    assert (cert.verdict == "certified") == bool(cert.lip_upper < cert.lip_threshold)


def test_layer_wise_bound_reproduces_the_two_layer_bounds():
    # W only (Rademacher V: max column norm = D √n): Lemma 3; W and V: the
    # closed form c = ||u|| (max_i ||V0_i|| + R), B ||u|| (c + √(c² + 4))/(2√k).
    k_net = jax.random.key(4)
    paper = dip.TwoLayerDIP.init(k_net, n=4, k=8, d=3)
    np.testing.assert_allclose(
        dip.layerwise_lip_bound(paper, 0.3), dip.lipschitz_bound(paper), rtol=1e-12
    )
    net = dip.TwoLayerDIP.init(
        k_net, n=4, k=8, d=3, train=("W", "V"), v_dist="gaussian"
    )
    R, u = 0.3, np.linalg.norm(np.asarray(net.u))
    c = u * (np.max(np.linalg.norm(np.asarray(net.V), axis=0)) + R)
    closed = net.activation.bound * u * (c + np.sqrt(c**2 + 4)) / (2 * np.sqrt(8))
    np.testing.assert_allclose(dip.layerwise_lip_bound(net, R), closed, rtol=1e-12)
    only_v = dip.TwoLayerDIP.init(k_net, n=4, k=8, d=3, train=("V",))
    assert dip.layerwise_lip_bound(only_v, R) == 0.0


@pytest.mark.parametrize("train", [("weights",), ("weights", "V"), ("V",)])
def test_layer_wise_bound_bounds_a_deeper_mlp(train):
    net = dip.MLPDIP.init(jax.random.key(5), n=3, d=2, widths=(4, 5, 4), train=train)
    R = 0.5
    upper = dip.layerwise_lip_bound(net, R)
    theta0, jac = dense_jacobian(net)
    quotients = [
        difference_quotient(jac, t1, t2) for t1, t2 in random_pairs(theta0, R, 20)
    ]
    assert max(quotients) <= upper
    if train == ("V",):
        assert upper == 0.0 and max(quotients) < 1e-12


def test_no_bound_without_a_second_derivative():
    net = dip.MLPDIP.init(jax.random.key(5), n=3, d=2, widths=(4,), activation="relu")
    assert np.isnan(dip.layerwise_lip_bound(net, 1.0))


def test_linear_in_V_is_constant_jacobian():
    net = dip.TwoLayerDIP.init(jax.random.key(0), n=3, k=6, d=2, train=("V",))
    problem = dip.InverseProblem.gaussian(jax.random.key(1), m=3, n=3)
    cert = dip.generic_certificate(net, problem, steps=20, num_restarts=2)
    assert float(cert.lip_upper) == 0.0
    np.testing.assert_allclose(cert.lip_lower, 0.0, atol=1e-12)
    assert cert.verdict == "certified"


# -- agreement with theorem1 on the paper's network ---------------------------------------


def check_against_theorem1(net, problem, cert):
    ref = dip.theorem1(net, problem)
    np.testing.assert_allclose(cert.sigma_min_J0, ref.sigma_min_J0, rtol=1e-9)
    np.testing.assert_allclose(cert.initial_residual, ref.initial_residual, rtol=1e-12)
    np.testing.assert_allclose(cert.lip_upper, ref.lip_J_bound, rtol=1e-12)
    # rhs = σ²/(4 Lip), lhs = r0/σ_A  ⇒  threshold = σ² σ_A / (4 r0) = Lip rhs / lhs.
    np.testing.assert_allclose(
        cert.lip_threshold,
        ref.lip_J_bound * ref.condition5_rhs / ref.condition5_lhs,
        rtol=1e-9,
    )
    np.testing.assert_allclose(cert.R_prime, ref.R_prime, rtol=1e-9)
    np.testing.assert_allclose(cert.radius, ref.R_prime, rtol=1e-9)
    np.testing.assert_allclose(cert.rate, ref.rate, rtol=1e-9)
    assert (cert.verdict == "certified") == bool(ref.condition5_holds)
    return ref


def test_paper_net_certified_when_condition5_holds(paper):
    ref = check_against_theorem1(*paper)
    assert bool(ref.condition5_holds)
    assert paper[2].verdict == "certified"
    assert "certified" in str(paper[2])


def test_paper_net_not_certified_when_condition5_fails(paper):
    net, problem, _ = paper
    # Same shapes (the search is not recompiled), a residual ten times larger.
    far = dip.InverseProblem(problem.A, y=10 * problem.y)
    cert = dip.generic_certificate(net, far, steps=STEPS)
    ref = check_against_theorem1(net, far, cert)
    assert not bool(ref.condition5_holds)
    assert cert.verdict in ("refuted", "undecided")


def test_a_ball_smaller_than_R_prime_does_not_certify(paper):
    net, problem, cert = paper
    small = dip.generic_certificate(
        net, problem, radius=0.5 * float(cert.R_prime), steps=STEPS
    )
    assert float(small.lip_upper) < float(small.lip_threshold)
    assert small.verdict == "undecided"


# -- bad input ----------------------------------------------------------------------------


def test_bad_input():
    net, problem = both_layers_instance()
    with pytest.raises(TypeError, match="`net` must be a generator"):
        dip.generic_certificate("net", problem)
    with pytest.raises(TypeError, match="`net` must be a generator"):
        dip.generic_certificate(lambda: jnp.zeros(4), problem)
    with pytest.raises(TypeError, match="`problem` must be a dipflow.InverseProblem"):
        dip.generic_certificate(net, problem.A)
    other = dip.InverseProblem.gaussian(jax.random.key(0), m=3, n=5)
    with pytest.raises(ValueError, match=r"`net` must output shape \(5,\)"):
        dip.generic_certificate(net, other)
    for radius in (0.0, -1.0, np.inf):
        with pytest.raises(ValueError, match="`radius` must be finite and > 0"):
            dip.generic_certificate(net, problem, radius=radius)
    with pytest.raises(ValueError, match="`num_restarts` must be >= 1"):
        dip.generic_certificate(net, problem, num_restarts=0)
    with pytest.raises(TypeError, match="`steps` must be an integer"):
        dip.generic_certificate(net, problem, steps=1.5)
