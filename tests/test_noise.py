"""Noise models as values: each draws what its law says (closed-form moments on
large samples, both the JAX and the NumPy draw), Gaussian noise is drawn exactly
as before, Poisson counts at a peak scale the operator and its spectrum, names
round-trip, and bad levels are refused naming the argument."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dipflow as dip
from dipflow.noise import (
    GaussianNoise,
    ImpulseNoise,
    LaplaceNoise,
    PoissonNoise,
    noise_name,
    parse_noise,
)
from dipflow.problems._draws import draw_problem

BIG = 40_000  # samples for the moment checks: 4σ of a mean is ~2 % here


def _draws(model, clean):
    """The JAX and the NumPy draw of `model` from `clean`, as NumPy."""
    y, eps = model.observe(jax.random.key(1), jnp.asarray(clean))
    y_np, eps_np = model.observe_numpy(np.random.default_rng(1), np.asarray(clean))
    return [(np.asarray(y), np.asarray(eps)), (y_np, eps_np)]


def test_gaussian_noise_is_drawn_as_before():
    key = jax.random.key(7)
    p = dip.InverseProblem.gaussian(key, 9, 4, noise=0.3)
    k_a, k_x, k_e = jax.random.split(key, 3)
    A = jax.random.normal(k_a, (9, 4))
    x = jax.random.normal(k_x, (4,))
    eps = 0.3 * jax.random.normal(k_e, (9,))
    np.testing.assert_array_equal(p.noise, eps)
    np.testing.assert_array_equal(p.y, A @ x + eps)
    q = dip.InverseProblem.gaussian(key, 9, 4, noise=GaussianNoise(0.3))
    np.testing.assert_array_equal(q.y, p.y)
    # The NumPy draw of studies: A, x̄, then ε = σ z from the same generator.
    rng = np.random.default_rng(3)
    A_np, x_np, z = (
        rng.standard_normal((9, 4)),
        rng.standard_normal(4),
        rng.standard_normal(9),
    )
    A2, x2, eps2, y2 = draw_problem(np.random.default_rng(3), 9, 4, None, 0.3)
    np.testing.assert_array_equal(A2, A_np)
    np.testing.assert_array_equal(eps2, 0.3 * z)
    np.testing.assert_array_equal(y2, A_np @ x_np + 0.3 * z)


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_laplace_noise_moments(scale):
    clean = np.linspace(-1, 1, BIG)
    for y, eps in _draws(LaplaceNoise(scale), clean):
        np.testing.assert_allclose(y - clean, eps, atol=1e-12)
        # E|ε| = s and Var ε = 2 s² for the Laplace law of scale s.
        np.testing.assert_allclose(np.mean(np.abs(eps)), scale, rtol=0.03)
        np.testing.assert_allclose(np.var(eps), 2 * scale**2, rtol=0.06)
        assert abs(np.mean(eps)) < 4 * np.sqrt(2) * scale / np.sqrt(BIG)


def test_impulse_noise_hits_a_density_of_extremes():
    clean = np.linspace(-2.0, 3.0, BIG)
    for y, eps in _draws(ImpulseNoise(0.2), clean):
        hit = y != clean
        # A hit at an extreme that equals the clean value is invisible: rare.
        assert abs(hit.mean() - 0.2) < 4 * np.sqrt(0.2 * 0.8 / BIG)
        assert set(np.unique(y[hit])) <= {-2.0, 3.0}
        assert abs(np.mean(y[hit] == 3.0) - 0.5) < 0.03
        np.testing.assert_array_equal(eps[~hit], 0.0)
    y, _ = ImpulseNoise(1.0, low=0.0, high=1.0).observe_numpy(
        np.random.default_rng(0), clean
    )
    assert set(np.unique(y)) == {0.0, 1.0}
    y, eps = ImpulseNoise(0.0).observe_numpy(np.random.default_rng(0), clean)
    np.testing.assert_array_equal(y, clean)


def test_poisson_noise_counts_at_a_peak():
    clean = np.linspace(0.0, 0.5, BIG)  # an image-like clean measurement ≥ 0
    model = PoissonNoise(peak=10, background=2)
    gain = float(model.gain(jnp.asarray(clean)))
    assert gain == pytest.approx(20.0)
    for y, eps in _draws(model, gain * clean):
        assert np.all(y == np.round(y)) and np.all(y >= 0)
        np.testing.assert_allclose(y - gain * clean, eps, atol=1e-12)
        lam = gain * clean + 2
        # Counts have mean and variance λ: check both on the standardised sum.
        assert abs(np.sum(y - lam)) < 4 * np.sqrt(np.sum(lam))
        np.testing.assert_allclose(np.mean((y - lam) ** 2 / lam), 1.0, rtol=0.05)


def test_poisson_problem_scales_the_operator_and_its_spectrum():
    key = jax.random.key(0)
    p = dip.InverseProblem.gaussian(key, 12, 5, noise=PoissonNoise(10, background=25))
    q = dip.InverseProblem.gaussian(key, 12, 5)
    g = 10 / np.max(np.abs(q.forward(q.x_true)))
    np.testing.assert_allclose(p.A, g * q.A, rtol=1e-14)
    np.testing.assert_allclose(np.max(np.abs(p.forward(p.x_true))), 10.0, rtol=1e-12)
    np.testing.assert_allclose(p.y - p.noise, p.forward(p.x_true), rtol=1e-12)
    # The matched loss models these counts, and its certificate is decided.
    poisson = dip.losses.Poisson(25.0)
    r = p.with_loss(poisson)
    assert np.all(r.y > 0)
    assert poisson.pl_constant(r.y + 0.5, r.y) is not None
    # A matrix-free operator keeps its singular values, scaled.
    truth = jnp.linspace(0.1, 1.0, 16).reshape(1, 4, 4)
    op = dip.image_operator("inpaint", (1, 4, 4), key=key, missing=0.5)
    s = dip.InverseProblem.observed(op, truth.ravel(), PoissonNoise(8, 1), key=key)
    gain = 8 / np.max(np.abs(op.mv(truth.ravel())))
    spec = s.spectrum()
    np.testing.assert_allclose(spec.norm, gain, rtol=1e-12)
    dense = np.linalg.svd(np.asarray(s.as_matrix()), compute_uv=False)
    np.testing.assert_allclose(spec.norm, dense.max(), rtol=1e-12)
    np.testing.assert_allclose(spec.sigma_A, dense[dense > 1e-9].min(), rtol=1e-12)


def test_noise_models_in_the_numpy_draw():
    for model in (LaplaceNoise(0.1), ImpulseNoise(0.3), PoissonNoise(5, 15)):
        A, x, eps, y = draw_problem(np.random.default_rng(2), 8, 3, 4.0, model)
        np.testing.assert_allclose(y - A @ x, eps, atol=1e-12)
    # Poisson: the scaled A puts the brightest clean measurement at the peak.
    assert np.max(np.abs(A @ x)) == pytest.approx(5.0)
    assert np.all(y == np.round(y))


@pytest.mark.parametrize(
    "text", ["gaussian:0.1", "laplace:2", "impulse:0.25", "poisson:10", "poisson:10:20"]
)
def test_names_round_trip(text):
    model = parse_noise(text)
    assert noise_name(model) == text
    assert parse_noise(noise_name(model)) == model
    assert parse_noise("Salt-and-Pepper:0.25") == ImpulseNoise(0.25)


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: GaussianNoise(-0.1), "sigma"),
        (lambda: LaplaceNoise(-1), "scale"),
        (lambda: ImpulseNoise(-0.1), "density"),
        (lambda: ImpulseNoise(1.5), "density"),
        (lambda: PoissonNoise(-3), "peak"),
        (lambda: PoissonNoise(0), "peak"),
        (lambda: PoissonNoise(10, -1), "background"),
        (lambda: ImpulseNoise(0.1, low=1.0, high=0.0), "low"),
        (lambda: parse_noise("impulse:-0.2"), "density"),
        (lambda: parse_noise("poisson:10:x"), "background"),
        (lambda: parse_noise("speckle:1"), "noise"),
        (
            lambda: dip.InverseProblem.gaussian(jax.random.key(0), 4, 3, noise=-1.0),
            "noise",
        ),
        (
            lambda: dip.InverseProblem.gaussian(
                jax.random.key(0), 4, 3, noise=PoissonNoise(10)
            ),
            "background",
        ),
    ],
)
def test_bad_noise_is_refused_naming_the_argument(make, argument):
    with pytest.raises((ValueError, TypeError), match=f"`{argument}`"):
        make()
