"""Activations: the Gaussian constants C_φ, C_φ' against adaptive quadrature, the
bounds B of A-4 against the derivatives on a dense grid, the registered φ'
against finite differences, and the registry itself."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.special

import dipflow as dip
import dipflow.generators._activations as _activations

# Independent NumPy versions of the built-in activations and their derivatives.
REFERENCE = {
    "sigmoid": (
        scipy.special.expit,
        lambda x: scipy.special.expit(x) * scipy.special.expit(-x),
    ),
    "tanh": (
        np.tanh,
        lambda x: (2.0 * np.exp(-np.abs(x)) / (1.0 + np.exp(-2.0 * np.abs(x)))) ** 2,
    ),
    "softplus": (lambda x: np.logaddexp(0.0, x), scipy.special.expit),
}

SMOOTH_BUILTINS = ("sigmoid", "tanh", "softplus")


def gaussian_mean(f):
    """E f(g), g ~ N(0, 1), by adaptive quadrature."""
    value, error = scipy.integrate.quad(
        lambda g: f(g) * np.exp(-0.5 * g * g) / np.sqrt(2.0 * np.pi),
        -np.inf,
        np.inf,
        epsabs=1e-13,
        epsrel=1e-13,
        limit=500,
    )
    assert error < 1e-10
    return value


def as_numpy(fn, x):
    return np.asarray(fn(jnp.asarray(x, dtype=jnp.float64)), dtype=np.float64)


@pytest.mark.parametrize("name", SMOOTH_BUILTINS)
def test_constants_match_quadrature(name):
    phi, dphi = REFERENCE[name]
    c_phi = np.sqrt(gaussian_mean(lambda g: phi(g) ** 2))
    c_phi_prime = np.sqrt(gaussian_mean(lambda g: dphi(g) ** 2))
    consts = dip.activation_constants(name)
    np.testing.assert_allclose(consts.C_phi, c_phi, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(consts.C_phi_prime, c_phi_prime, rtol=1e-8, atol=1e-8)
    assert consts.B == dip.get_activation(name).bound
    assert all(isinstance(c, float) for c in consts)


def test_relu_constants_closed_form():
    # E relu(g)² = E[g² 1{g>0}] = 1/2 and E 1{g>0} = 1/2.
    consts = dip.activation_constants("relu")
    np.testing.assert_allclose(consts.C_phi, np.sqrt(0.5), rtol=1e-12)
    np.testing.assert_allclose(consts.C_phi_prime, np.sqrt(0.5), rtol=1e-12)
    assert not dip.get_activation("relu").smooth


def test_builtins_registered():
    names = dip.available_activations()
    assert set(SMOOTH_BUILTINS) | {"relu"} <= set(names)
    assert names == sorted(names)
    for name in SMOOTH_BUILTINS:
        assert dip.get_activation(name).smooth
    act = dip.get_activation("tanh")
    assert dip.get_activation(act) is act


# A dense grid that covers where the derivatives peak and where they vanish.
GRID = np.linspace(-30.0, 30.0, 120_001)
H = 1e-4


def finite_difference_derivatives(fn, x, h=H):
    """Central differences of φ for φ' and φ'' (errors O(h²) + O(eps·|φ|/h²))."""
    f_minus, f_0, f_plus = (as_numpy(fn, x + s) for s in (-h, 0.0, h))
    return (f_plus - f_minus) / (2 * h), (f_plus - 2 * f_0 + f_minus) / h**2


@pytest.mark.parametrize(
    "name", [n for n in dip.available_activations() if dip.get_activation(n).smooth]
)
def test_bound_holds_on_grid(name):
    act = dip.get_activation(name)
    d1, d2 = finite_difference_derivatives(act.fn, GRID)
    # Round-off of the second difference is about eps·|φ|/h² ≤ 1e-16·30/1e-8.
    slack = 1e-6
    assert np.max(np.abs(d1)) <= act.bound + slack
    assert np.max(np.abs(d2)) <= act.bound + slack
    # The registered φ' obeys the same bound.
    assert np.max(np.abs(as_numpy(act.derivative, GRID))) <= act.bound * (1 + 1e-12)


# Closed-form maxima of |φ'| and |φ''|: the finite differences see the true peaks,
# so the bound check above is not vacuous.
PEAKS = {
    "sigmoid": (0.25, 1.0 / (6.0 * np.sqrt(3.0))),
    "tanh": (1.0, 4.0 / (3.0 * np.sqrt(3.0))),
    "softplus": (1.0, 0.25),
}


@pytest.mark.parametrize("name", SMOOTH_BUILTINS)
def test_grid_finds_closed_form_peaks(name):
    d1, d2 = finite_difference_derivatives(dip.get_activation(name).fn, GRID)
    peak1, peak2 = PEAKS[name]
    np.testing.assert_allclose(np.max(np.abs(d1)), peak1, rtol=1e-6)
    np.testing.assert_allclose(np.max(np.abs(d2)), peak2, rtol=1e-5)
    assert max(peak1, peak2) == pytest.approx(dip.get_activation(name).bound)


@pytest.mark.parametrize("name", [*SMOOTH_BUILTINS, "relu"])
def test_registered_derivative_matches_finite_differences(name):
    act = dip.get_activation(name)
    x = np.linspace(-12.0, 12.0, 2401)
    x = x[np.abs(x) > 1e-3]  # relu's kink
    h = 1e-5
    fd = (as_numpy(act.fn, x + h) - as_numpy(act.fn, x - h)) / (2 * h)
    np.testing.assert_allclose(as_numpy(act.derivative, x), fd, rtol=0, atol=1e-8)


@pytest.mark.parametrize("name", SMOOTH_BUILTINS)
def test_builtins_match_reference(name):
    phi, dphi = REFERENCE[name]
    act = dip.get_activation(name)
    x = np.linspace(-12.0, 12.0, 241)
    np.testing.assert_allclose(as_numpy(act, x), phi(x), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(
        as_numpy(act.derivative, x), dphi(x), rtol=1e-12, atol=1e-15
    )


# -- registering a user activation -------------------------------------------------

SWISH = "test-swish"


def swish(x):
    return x * jax.nn.sigmoid(x)


def swish_derivative_np(x):
    s = scipy.special.expit(x)
    return s + x * s * (1.0 - s)


# max|φ'| ≈ 1.0998 (at x ≈ 2.4), max|φ''| = 1/2 (at 0).
SWISH_BOUND = 1.1


@pytest.fixture
def registered_swish():
    assert SWISH not in _activations._REGISTRY
    act = dip.register_activation(SWISH, swish, bound=SWISH_BOUND)
    yield act
    del _activations._REGISTRY[SWISH]


def test_register_derives_derivative(registered_swish):
    act = registered_swish
    assert dip.get_activation(SWISH) is act
    assert SWISH in dip.available_activations()
    assert act.smooth and act.bound == SWISH_BOUND
    x = np.linspace(-10.0, 10.0, 201)
    np.testing.assert_allclose(
        as_numpy(act.derivative, x), swish_derivative_np(x), rtol=1e-12, atol=1e-14
    )
    # Elementwise on any shape, as networks use it.
    x2 = x[:200].reshape(10, 20)
    np.testing.assert_allclose(
        as_numpy(act.derivative, x2), swish_derivative_np(x2), rtol=1e-12, atol=1e-14
    )
    d1, d2 = finite_difference_derivatives(act.fn, GRID)
    assert max(np.max(np.abs(d1)), np.max(np.abs(d2))) <= SWISH_BOUND


def test_register_constants(registered_swish):
    c_phi = np.sqrt(gaussian_mean(lambda g: (g * scipy.special.expit(g)) ** 2))
    c_phi_prime = np.sqrt(gaussian_mean(lambda g: swish_derivative_np(g) ** 2))
    consts = dip.activation_constants(SWISH)
    np.testing.assert_allclose(consts, (c_phi, c_phi_prime, SWISH_BOUND), rtol=1e-8)


def test_register_refuses_duplicate(registered_swish):
    with pytest.raises(ValueError, match="already registered.*overwrite=True"):
        dip.register_activation(SWISH, jnp.tanh, bound=1.0)
    assert dip.get_activation(SWISH) is registered_swish
    with pytest.raises(ValueError, match="already registered"):
        dip.register_activation("sigmoid", jnp.tanh, bound=1.0)
    x = jnp.linspace(-3.0, 3.0, 7)
    np.testing.assert_array_equal(dip.get_activation("sigmoid")(x), jax.nn.sigmoid(x))


def test_register_overwrite_clears_constants(registered_swish):
    before = dip.activation_constants(SWISH)
    replaced = dip.register_activation(SWISH, jnp.tanh, bound=1.0, overwrite=True)
    assert dip.get_activation(SWISH) is replaced
    after = dip.activation_constants(SWISH)
    assert after != before
    np.testing.assert_allclose(after, dip.activation_constants("tanh"), rtol=1e-14)


def test_overwrite_keeps_built_networks_and_recompiles(registered_swish):
    # A network holds its activation: replacing the registry entry leaves the
    # networks built before unchanged, and a network built after it gets the new
    # φ in the compiled solvers too (no stale compilation keyed on the name).
    problem = dip.InverseProblem.gaussian(jax.random.key(1), 6, 8)
    before = dip.TwoLayerDIP.init(jax.random.key(0), n=8, k=20, d=5, activation=SWISH)
    loss_before = float(dip.gradient_descent(before, problem, max_steps=0).final_loss)
    np.testing.assert_allclose(
        loss_before, float(dip.loss(before, problem)), rtol=1e-12
    )
    dip.register_activation(SWISH, jnp.tanh, bound=1.0, overwrite=True)
    after = dip.TwoLayerDIP.init(jax.random.key(0), n=8, k=20, d=5, activation=SWISH)
    assert before.activation.fn is swish and after.activation.fn is jnp.tanh
    expected = float(dip.loss(after, problem))
    assert abs(expected - loss_before) > 1e-3
    after_loss = float(dip.gradient_descent(after, problem, max_steps=0).final_loss)
    np.testing.assert_allclose(after_loss, expected, rtol=1e-12)
    again = float(dip.gradient_descent(before, problem, max_steps=0).final_loss)
    np.testing.assert_allclose(again, loss_before, rtol=1e-12)


def test_network_with_registered_activation(registered_swish):
    net = dip.TwoLayerDIP.init(jax.random.key(0), n=8, k=20, d=5, activation=SWISH)
    V, W, u = (np.asarray(a) for a in (net.V, net.W, net.u))
    z = W @ u
    np.testing.assert_allclose(
        np.asarray(net()), V @ (z * scipy.special.expit(z)) / np.sqrt(20), rtol=1e-12
    )
    # The closed-form Gram uses the derived φ'; it must match the jacfwd Jacobian.
    J = np.asarray(dip.jacobian(net))
    np.testing.assert_allclose(np.asarray(dip.gram(net)), J @ J.T, rtol=1e-10)
    np.testing.assert_allclose(
        float(dip.lipschitz_bound(net)), SWISH_BOUND * np.sqrt(8 / 20), rtol=1e-12
    )


def test_unregistered_after_cleanup():
    # Runs after the fixture's teardown in the default order; holds in any order.
    assert SWISH not in dip.available_activations()
    with pytest.raises(ValueError, match="unknown activation"):
        dip.get_activation(SWISH)
