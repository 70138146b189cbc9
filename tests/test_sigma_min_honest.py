"""One contract for smallest-eigenvalue estimates: a value (residual ≤ rtol·λ)
or an upper bound, reported as such, with a lower bound where one is proved;
and the exact σ_min(J) of image generators from the blocked Gram J Jᵀ, against
the SVD of the dense autodiff Jacobian."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dipflow as dip
from dipflow.theory import _blocked_gram


def _tiny_decoder():
    return dip.ConvDecoder.init(jax.random.key(0), (1, 8, 8), channels=8, layers=2)


def _trained(net, steps=20, lr=0.01):
    """`net` after a few Adam steps towards a random image."""
    params, static = eqx.partition(net, net.trainable_filter())
    target = jax.random.uniform(jax.random.key(1), (64,), jnp.float64)
    opt = optax.adam(lr)

    @jax.jit
    def step(params, state):
        def loss(p):
            r = eqx.combine(p, static)() - target
            return 0.5 * jnp.dot(r, r)

        updates, state = opt.update(jax.grad(loss)(params), state, params)
        return optax.apply_updates(params, updates), state

    state = opt.init(params)
    for _ in range(steps):
        params, state = step(params, state)
    return eqx.combine(params, static)


@pytest.fixture(scope="module")
def nets():
    net = _tiny_decoder()
    out = {}
    for name, x in (("theta0", net), ("trained", _trained(net))):
        J = np.asarray(dip.jacobian(x))
        s = np.linalg.svd(J, compute_uv=False)
        out[name] = (x, J, s[J.shape[0] - 1])
    return out


@pytest.mark.parametrize("name", ["theta0", "trained"])
@pytest.mark.parametrize("block_size", [None, 1, 5, 64])  # 5 does not divide 64
def test_blocked_gram_is_J_Jt(nets, name, block_size):
    net, J, sigma = nets[name]
    G = np.asarray(_blocked_gram.blocked_gram(net, block_size=block_size))
    G0 = J @ J.T
    np.testing.assert_allclose(G, G0, rtol=0, atol=1e-13 * np.abs(G0).max())
    lam = np.linalg.eigvalsh((G + G.T) / 2)[0]
    np.testing.assert_allclose(math.sqrt(lam), sigma, rtol=1e-10)


@pytest.mark.parametrize("name", ["theta0", "trained"])
def test_exact_sigma_min_is_the_svd_and_a_value(nets, name):
    net, J, sigma = nets[name]
    got = float(dip.sigma_min_jacobian(net, method="gram"))
    np.testing.assert_allclose(got, sigma, rtol=1e-10)
    est = dip.gram_min_eigenvalue(net, method="gram")
    assert est.method == "gram" and bool(est.converged)
    lam = sigma**2
    # Bounds on both sides, up to round-off: lower ≤ λ_min ≤ upper.
    assert float(est.lower_bound) <= lam * (1 + 1e-12)
    assert float(est.upper_bound) >= lam * (1 - 1e-12)
    np.testing.assert_allclose(float(est.lower_bound), lam, rtol=1e-10)
    assert float(est.residual) <= 1e-10 * lam
    np.testing.assert_allclose(
        np.asarray(est.ritz_values), np.linalg.eigvalsh(J @ J.T), rtol=1e-9,
        atol=1e-12 * np.abs(J).max() ** 2,
    )  # fmt: skip
    # Every column once (block 64 // p ... all of them), and the residual's.
    assert int(est.num_matvecs) >= J.shape[0] + 1


def test_a_rank_deficient_jacobian_is_not_resolved_but_bracketed():
    """Adam at 0.05 kills this net's rank (σ_min(J) = 3e-16 by the SVD): λ_min
    of the Gram is below its round-off, so the exact path reports an upper
    bound with 0 below it, and the number-returning function refuses it."""
    net = _trained(_tiny_decoder(), lr=0.05)
    est = dip.gram_min_eigenvalue(net, method="gram")
    assert not bool(est.converged)
    assert float(est.lower_bound) == 0.0
    assert 0 <= float(est.value) <= 1e-12 * float(est.norm)
    with pytest.raises(Exception, match="cannot resolve"):
        jax.block_until_ready(dip.sigma_min_jacobian(net, method="gram"))


def test_exact_sigma_min_under_jit(nets):
    net, _, sigma = nets["trained"]
    f = jax.jit(lambda net: dip.sigma_min_jacobian(net, method="gram"))
    np.testing.assert_allclose(float(f(net)), sigma, rtol=1e-10)


def test_auto_picks_the_exact_gram_when_it_fits(nets, monkeypatch):
    net, _, sigma = nets["theta0"]
    assert dip.gram_min_eigenvalue(net, method="auto").method == "gram"
    np.testing.assert_allclose(
        float(dip.sigma_min_jacobian(net, method="auto")), sigma, rtol=1e-10
    )
    # A Gram over the budget: Lanczos, under the same contract.
    monkeypatch.setattr(_blocked_gram, "GRAM_MEMORY_BYTES", 64 * 64 * 8 - 1)
    est = dip.gram_min_eigenvalue(net, method="auto")
    assert est.method == "lanczos"
    np.testing.assert_allclose(math.sqrt(float(est.value)), sigma, rtol=1e-8)


def _ill_conditioned(n=40, kappa=1e8):
    """A PSD matrix with eigenvalues geometric from 1/kappa to 1."""
    spectrum = np.geomspace(1 / kappa, 1.0, n)
    Q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((n, n)))
    return jnp.asarray((Q * spectrum) @ Q.T), spectrum


def test_too_few_lanczos_steps_are_an_upper_bound():
    M, spectrum = _ill_conditioned()
    n = spectrum.size
    est = dip.smallest_eigenvalue(lambda v: M @ v, n, num_iters=8)
    lam = spectrum.min()
    assert not bool(est.converged)
    assert float(est.value) >= lam and float(est.upper_bound) == float(est.value)
    assert float(est.residual) > est.rtol * float(est.value)
    # From 8 of 40 dimensions nothing above 0 is proved.
    assert float(est.lower_bound) == 0.0
    # Over the whole space: a value, with a lower bound on λ_min.
    full = dip.smallest_eigenvalue(lambda v: M @ v, n, num_iters=n)
    assert bool(full.converged)
    assert 0 < float(full.lower_bound) <= lam * (1 + 1e-6)
    np.testing.assert_allclose(float(full.value), lam, rtol=1e-6)


def test_the_backward_error_test_would_have_passed_it():
    """The old test, residual ≤ sqrt(eps) ‖M‖, accepts an estimate many times
    too large once λ_min ≪ ‖M‖; the relative test does not."""
    M, spectrum = _ill_conditioned(kappa=1e12)
    est = dip.smallest_eigenvalue(lambda v: M @ v, spectrum.size, num_iters=30)
    assert float(est.value) > 10 * spectrum.min()
    assert float(est.residual) <= math.sqrt(np.finfo(float).eps) * spectrum.max()
    assert not bool(est.converged)


def test_number_returning_functions_refuse_an_upper_bound(nets):
    net, J, sigma = nets["trained"]
    est = dip.gram_min_eigenvalue(net, num_iters=3)
    assert not bool(est.converged) and float(est.value) > sigma**2
    with pytest.raises(Exception, match="only an upper bound"):
        jax.block_until_ready(
            dip.sigma_min_jacobian(net, method="lanczos", num_iters=3)
        )
    problem = dip.InverseProblem.gaussian(jax.random.key(2), m=20, n=64)
    with pytest.raises(Exception, match="only an upper bound"):
        jax.block_until_ready(
            dip.measurement_min_eigenvalue(net, problem, method="lanczos", num_iters=3)
        )
    # The check off: the upper bound, as asked.
    off = dip.sigma_min_jacobian(net, method="lanczos", num_iters=3, rtol=math.inf)
    np.testing.assert_allclose(float(off), math.sqrt(float(est.value)), rtol=1e-12)


def test_fewer_parameters_than_outputs_is_exactly_zero_by_the_gram():
    net = dip.TwoLayerDIP.init(jax.random.key(0), n=12, k=3, d=2)  # p = 6
    est = dip.gram_min_eigenvalue(net, method="gram")
    assert float(est.value) == 0.0 and bool(est.converged)
    assert int(est.num_matvecs) == 0
    assert float(dip.sigma_min_jacobian(net, method="auto")) == 0.0


def test_bad_arguments(nets):
    net, _, _ = nets["theta0"]
    with pytest.raises(ValueError, match="`block_size` must be >= 1"):
        _blocked_gram.blocked_gram(net, block_size=0)
    with pytest.raises(ValueError, match="`method` must be one of"):
        dip.gram_min_eigenvalue(net, method="svd")
    with pytest.raises(ValueError, match="`sigma_min_method` must be one of"):
        dip.fit_image(net, None, None, sigma_min_method="svd", progress=False)
