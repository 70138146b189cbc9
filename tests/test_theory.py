import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dipflow as dip

from .helpers import instance


def wide_instance(noise=0.0):
    """An instance where condition (5) holds: tanh, n = m = 2, κ(A) = 1, k = 2000."""
    k_net, k_prob = jax.random.split(jax.random.PRNGKey(0))
    net = dip.TwoLayerDIP.init(k_net, n=2, k=2000, d=3, activation="tanh")
    problem = dip.InverseProblem.with_condition_number(
        k_prob, m=2, n=2, kappa=1.0, noise=noise
    )
    return net, problem


def test_certificate_matches_numpy():
    net, problem = wide_instance(noise=0.05)
    cert = dip.theorem1(net, problem)
    V, W, u, A = (np.asarray(a) for a in (net.V, net.W, net.u, problem.A))
    y, eps = np.asarray(problem.y), np.asarray(problem.noise)
    m, n, k, d = 2, 2, 2000, 3
    s = np.linalg.svd(A, compute_uv=False)
    z = W @ u
    dphi = 1 - np.tanh(z) ** 2
    J = (V * dphi[None, :]) / np.sqrt(
        k
    )  # J Jᵀ = Σ_i φ'(z_i)² V_i V_iᵀ / k for ||u|| = 1
    sig_J = np.sqrt(np.linalg.eigvalsh(J @ J.T)[0])
    r0 = np.linalg.norm(A @ (V @ np.tanh(z) / np.sqrt(k)) - y)
    lip = 1.0 * 1.0 * np.sqrt(n / k)  # B = 1 for tanh, D = 1 for Rademacher V
    expected = {
        "norm_A": s[0],
        "sigma_A": s[-1],
        "kappa_A": s[0] / s[-1],
        "sigma_min_J0": sig_J,
        "lip_J_bound": lip,
        "initial_residual": r0,
        "noise_norm": np.linalg.norm(eps),
        "condition5_lhs": r0 / s[-1],
        "condition5_rhs": sig_J**2 / (4 * lip),
        "rate": sig_J**2 * s[-1] ** 2 / (4 * m),
        "early_stopping_time": 4
        * m
        * np.log(r0 / np.linalg.norm(eps))
        / (s[-1] ** 2 * sig_J**2),
        "R": sig_J / (2 * lip),
        "R_prime": 2 * r0 / (s[-1] * sig_J),
        "measurement_rate": np.linalg.eigvalsh(A @ J @ J.T @ A.T)[0] / m,
        "k_bound_factor": (s[0] / s[-1]) ** 2
        * n
        * (np.sqrt(n) * (np.sqrt(np.log(d)) + 1) + np.sqrt(m)) ** 2,
    }
    for name, value in expected.items():
        np.testing.assert_allclose(getattr(cert, name), value, rtol=1e-10, err_msg=name)
    assert bool(cert.condition5_holds)
    np.testing.assert_allclose(
        cert.k_required(3.0), 3.0 * expected["k_bound_factor"], rtol=1e-12
    )
    # The sharper certificate is never below the paper's rate at t = 0.
    assert float(cert.measurement_rate) >= float(
        cert.sigma_A**2 * cert.sigma_min_J0**2 / m
    ) * (1 - 1e-12)
    assert (
        cert.a1_unit_input,
        cert.a2_gaussian_init,
        cert.a3_bounded_v,
        cert.a4_smooth_activation,
    ) == (
        True,
        True,
        True,
        True,
    )
    text = str(cert)
    assert "(5) holds" in text and "yes" in text and "σ_A" in text


def test_residual_stays_under_envelope_when_condition5_holds():
    net, problem = wide_instance()
    cert = dip.theorem1(net, problem)
    assert bool(cert.condition5_holds)
    ts = np.linspace(0.0, 30.0, 301)
    sol = dip.gradient_flow(
        net,
        problem,
        t1=30.0,
        tol=0.0,
        save_ts=ts,
        rtol=1e-10,
        atol=1e-12,
        save_sigma_min=True,
    )
    envelope = np.asarray(cert.envelope(ts))
    residual = np.asarray(sol.trajectory.residual)
    assert np.all(np.isfinite(residual))
    assert np.all(residual <= envelope * (1 + 1e-8) + 1e-12)
    # The guarantee is not vacuous here: the residual really decays.
    assert residual[-1] < 1e-3 * residual[0]
    # Lemma 1: R' < R, so θ(t) stays in B(θ0, R') and σ_min(J(θ(t))) ≥ σ_min(J0)/2.
    assert float(cert.R_prime) < float(cert.R)
    assert np.all(
        np.asarray(sol.trajectory.distance) <= float(cert.R_prime) * (1 + 1e-8)
    )
    assert np.all(np.asarray(sol.trajectory.sigma_min) >= float(cert.sigma_min_J0) / 2)


def test_early_stopping_time_gives_prediction_bound():
    net, problem = wide_instance(noise=0.05)
    cert = dip.theorem1(net, problem)
    t_star = float(cert.early_stopping_time)
    assert np.isfinite(t_star) and t_star > 0
    bound = 2 * float(cert.noise_norm)
    for t1 in (t_star, 3 * t_star):
        sol = dip.gradient_flow(
            net, problem, t1=t1, tol=0.0, save_ts=[0.0, t1], rtol=1e-10, atol=1e-12
        )
        err = float(jnp.linalg.norm(problem.forward(sol.net()) - problem.y_clean))
        assert err <= bound, (t1, err, bound)


def test_assumption_flags():
    key = jax.random.PRNGKey(0)
    net = dip.TwoLayerDIP.init(key, n=6, k=8, d=5, activation="relu", v_dist="gaussian")
    _, problem = instance()
    cert = dip.theorem1(net, problem)
    assert cert.a4_smooth_activation is False and cert.a3_bounded_v is False
    assert cert.a1_unit_input is True and cert.a2_gaussian_init is True
    custom = dip.TwoLayerDIP(V=net.V, W=net.W, u=2 * net.u, activation="sigmoid")
    cert = dip.theorem1(custom, problem)
    assert cert.a1_unit_input is False
    assert cert.a2_gaussian_init is None and cert.a3_bounded_v is None
    assert "unknown" in str(cert)
    # Lemma 3 (hence (5), R) says nothing when V trains too.
    both = dip.TwoLayerDIP.init(key, n=6, k=8, d=5, train=("W", "V"))
    cert = dip.theorem1(both, problem)
    assert np.isnan(float(cert.lip_J_bound)) and not bool(cert.condition5_holds)


def test_certificate_for_generic_generator():
    net = dip.MLPDIP.init(jax.random.PRNGKey(3), n=6, d=5, widths=(8, 8))
    _, problem = instance()
    cert = dip.theorem1(net, problem)
    np.testing.assert_allclose(
        cert.sigma_min_J0, dip.sigma_min_jacobian(net), rtol=1e-12
    )
    J = np.asarray(dip.jacobian(net))
    A = np.asarray(problem.A)
    np.testing.assert_allclose(
        cert.measurement_rate,
        np.linalg.eigvalsh(A @ J @ J.T @ A.T)[0] / problem.m,
        rtol=1e-8,
    )
    assert np.isnan(float(cert.lip_J_bound))


@pytest.mark.parametrize("with_noise", [False, True])
def test_certificate_under_jit_and_vmap(with_noise):
    def cert_of(key):
        k_net, k_prob = jax.random.split(key)
        net = dip.TwoLayerDIP.init(k_net, n=6, k=8, d=5)
        problem = dip.InverseProblem.gaussian(
            k_prob, m=4, n=6, noise=0.1 if with_noise else 0.0
        )
        return dip.theorem1(net, problem)

    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    batched = jax.jit(jax.vmap(cert_of))(keys)
    for i, key in enumerate(keys):
        one = cert_of(key)
        np.testing.assert_allclose(batched.rate[i], one.rate, rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(
            batched.condition5_lhs[i], one.condition5_lhs, rtol=1e-10
        )
        assert np.isnan(float(one.early_stopping_time)) != with_noise
