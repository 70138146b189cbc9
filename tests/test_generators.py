"""Generators and activations as types: what an `AbstractGenerator` must say, what
the library does with it, and activations held as modules."""

import pickle

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxtyping import Array, Float

import dipflow as dip


class LinearGenerator(dip.AbstractGenerator):
    """`x = B θ`: J = B, so J Jᵀ = B Bᵀ exactly; no reduction."""

    B: Float[Array, "n p"]
    theta: Float[Array, " p"]
    train: tuple[str, ...] = eqx.field(static=True)

    def __init__(self, B, theta):
        self.B, self.theta, self.train = B, theta, ("theta",)

    def __call__(self):
        return self.B @ self.theta

    def trainable_filter(self):
        return LinearGenerator(B=False, theta=True)

    def gram(self, hidden=None):
        return self.B @ self.B.T

    @property
    def reduction(self):
        return None

    @property
    def paper_model(self):
        return False


def _linear_generator():
    rng = np.random.default_rng(0)
    B = rng.standard_normal((5, 9))
    return LinearGenerator(B=jnp.asarray(B), theta=jnp.asarray(rng.standard_normal(9)))


def test_abstract_generator_is_abstract():
    with pytest.raises(TypeError):
        dip.AbstractGenerator()

    class Incomplete(dip.AbstractGenerator):
        train: tuple[str, ...] = ("x",)

        def __call__(self):
            return jnp.zeros(3)

    with pytest.raises(TypeError):
        Incomplete()


def test_user_generator_goes_through_every_path():
    net = _linear_generator()
    B = np.asarray(net.B)
    # Its own closed-form Gram is what `dip.gram` reports, and equals J Jᵀ.
    np.testing.assert_allclose(np.asarray(dip.gram(net)), B @ B.T, rtol=1e-12)
    J = np.asarray(dip.jacobian(net))
    np.testing.assert_allclose(J, B, rtol=1e-12)
    assert not dip.is_reducible(net)
    # GD on a linear model: θ_{t+1} = θ_t − η Bᵀ Aᵀ (A B θ_t − y)/m, by hand.
    problem = dip.InverseProblem.gaussian(jax.random.key(1), 4, 5)
    A, y = np.asarray(problem.A), np.asarray(problem.y)
    theta = np.asarray(net.theta)
    for _ in range(20):
        theta = theta - 0.1 * B.T @ A.T @ (A @ B @ theta - y) / 4
    sol = dip.gradient_descent(net, problem, step_size=0.1, max_steps=20, tol=0.0)
    np.testing.assert_allclose(np.asarray(sol.net.theta), theta, rtol=1e-10)


def test_mlp_has_no_closed_form():
    mlp = dip.MLPDIP.init(jax.random.key(0), n=6, d=4, widths=(8, 8))
    assert isinstance(mlp, dip.AbstractGenerator)
    assert mlp.gram() is None and dip.reduction(mlp) is None and not mlp.paper_model
    assert not dip.is_reducible(mlp)
    with pytest.raises(TypeError, match="closed form.*jacobian"):
        dip.gram(mlp)


def test_two_layer_says_what_it_reduces_to():
    net = dip.TwoLayerDIP.init(jax.random.key(0), n=6, k=8, d=4)
    both = dip.TwoLayerDIP.init(jax.random.key(0), n=6, k=8, d=4, train=("W", "V"))
    assert net.paper_model and dip.reduction(net) is dip.ReducedDynamics
    assert not both.paper_model and dip.reduction(both) is dip.BothLayersDynamics
    assert dip.is_reducible(net) and dip.is_reducible(both)
    assert not dip.is_reducible(net, trainable=net.trainable_filter())


def test_networks_hold_their_activation():
    act = dip.Activation("_unregistered_cos", jnp.cos, bound=1.0)
    assert isinstance(act, eqx.Module) and act.smooth
    assert "_unregistered_cos" not in dip.available_activations()
    net = dip.TwoLayerDIP.init(jax.random.key(0), n=6, k=8, d=4, activation=act)
    assert net.activation is act
    z = np.asarray(net.hidden())
    expected = np.asarray(net.V) @ np.cos(z) / np.sqrt(8)
    np.testing.assert_allclose(np.asarray(net()), expected, rtol=1e-12)
    # φ' defaults to autodiff: −sin.
    np.testing.assert_allclose(
        np.asarray(act.derivative(jnp.asarray(z))), -np.sin(z), rtol=1e-12
    )
    # Two activations compile apart: the static field is part of the treedef.
    tanh_net = dip.TwoLayerDIP(net.V, net.W, net.u, activation="tanh")
    assert jax.tree_util.tree_structure(net) != jax.tree_util.tree_structure(tanh_net)
    np.testing.assert_allclose(
        float(eqx.filter_jit(lambda n: n()[0])(tanh_net)),
        float(np.asarray(net.V)[0] @ np.tanh(z) / np.sqrt(8)),
        rtol=1e-12,
    )


def test_activation_constants_of_a_module():
    act = dip.Activation("_scaled_tanh", lambda x: 2.0 * jnp.tanh(x), bound=2.0)
    tanh = dip.activation_constants("tanh")
    np.testing.assert_allclose(
        act.constants, (2 * tanh.C_phi, 2 * tanh.C_phi_prime, 2.0), rtol=1e-12
    )
    assert dip.activation_constants(act) == act.constants


def test_builtin_activations_pickle():
    for name in dip.available_activations():
        act = dip.get_activation(name)
        again = pickle.loads(pickle.dumps(act))
        assert again.name == name and again.bound == act.bound
        x = jnp.linspace(-3.0, 3.0, 7)
        np.testing.assert_array_equal(np.asarray(again(x)), np.asarray(act(x)))
        np.testing.assert_array_equal(
            np.asarray(again.derivative(x)), np.asarray(act.derivative(x))
        )


def test_bad_activation_arguments():
    with pytest.raises(TypeError, match="`fn`"):
        dip.Activation("x", 3.0, bound=1.0)
    with pytest.raises(TypeError, match="`derivative`"):
        dip.Activation("x", jnp.tanh, bound=1.0, derivative="d")
    with pytest.raises(ValueError, match="`bound`"):
        dip.Activation("x", jnp.tanh, bound=0.0)
    with pytest.raises(TypeError, match="`activation`"):
        dip.TwoLayerDIP.init(jax.random.key(0), n=6, k=8, d=4, activation=jnp.tanh)
