"""Shared instances and independent NumPy references for the tests."""

import equinox as eqx
import jax
import numpy as np

import dipflow as dip

# One small shape shared by most tests, so that compiled functions are reused.
SMALL = dict(m=4, n=6, k=8, d=5)


def instance(seed=0, m=4, n=6, k=8, d=5, activation="sigmoid", train=("W",), noise=0.0):
    """A (net, problem) pair drawn as in the paper."""
    k_net, k_prob = jax.random.split(jax.random.PRNGKey(seed))
    net = dip.TwoLayerDIP.init(k_net, n=n, k=k, d=d, activation=activation, train=train)
    problem = dip.InverseProblem.gaussian(k_prob, m=m, n=n, noise=noise)
    return net, problem


def tree_allclose(x, y, *, rtol=1e-5, atol=1e-8):
    return eqx.tree_equal(x, y, typematch=True, rtol=rtol, atol=atol)


def assert_tree_allclose(x, y, *, rtol=1e-5, atol=1e-8):
    """Leafwise `assert_allclose` (NaNs in the same places compare equal)."""
    assert jax.tree_util.tree_structure(x) == jax.tree_util.tree_structure(y)
    for a, b in zip(
        jax.tree_util.tree_leaves(x), jax.tree_util.tree_leaves(y), strict=True
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


# -- NumPy references with hand-derived gradients ---------------------------------------

_NP_ACTIVATIONS = {
    "sigmoid": (
        lambda z: 1 / (1 + np.exp(-z)),
        lambda z: np.exp(-z) / (1 + np.exp(-z)) ** 2,
    ),
    "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    "softplus": (lambda z: np.logaddexp(0, z), lambda z: 1 / (1 + np.exp(-z))),
}


def numpy_arrays(net, problem):
    return (
        np.asarray(net.V, np.float64),
        np.asarray(net.W, np.float64),
        np.asarray(net.u, np.float64),
        np.asarray(problem.A, np.float64),
        np.asarray(problem.y, np.float64),
    )


def numpy_loss_and_grads(V, W, u, A, y, activation="sigmoid"):
    """L = ||A V φ(W u)/√k − y||²/(2m) and its gradients w.r.t. W and V, by hand:

    r = A g − y, ∂L/∂g = Aᵀ r / m, ∂L/∂W = (φ'(z) ⊙ Vᵀ Aᵀ r) uᵀ / (m √k),
    ∂L/∂V = Aᵀ r φ(z)ᵀ / (m √k)."""
    phi, dphi = _NP_ACTIVATIONS[activation]
    m, k = A.shape[0], V.shape[1]
    z = W @ u
    g = V @ phi(z) / np.sqrt(k)
    r = A @ g - y
    back = A.T @ r / m
    grad_W = np.outer(dphi(z) * (V.T @ back), u) / np.sqrt(k)
    grad_V = np.outer(back, phi(z)) / np.sqrt(k)
    return r @ r / (2 * m), grad_W, grad_V


def numpy_gd(net, problem, step_size, num_steps, activation="sigmoid", train=("W",)):
    """Plain gradient-descent loop; returns the losses of iterates 0..num_steps and
    the final W, V."""
    V, W, u, A, y = numpy_arrays(net, problem)
    losses = []
    for _ in range(num_steps):
        L, gW, gV = numpy_loss_and_grads(V, W, u, A, y, activation)
        losses.append(L)
        if "W" in train:
            W = W - step_size * gW
        if "V" in train:
            V = V - step_size * gV
    losses.append(numpy_loss_and_grads(V, W, u, A, y, activation)[0])
    return np.array(losses), W, V
