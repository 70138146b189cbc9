"""Activation functions φ with the constants the theory needs (C_φ, C_φ', B)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# Nodes of Gauss–Hermite quadrature. For the smooth activations the integrands
# are analytic, so the error decays geometrically; 200 nodes reach round-off.
_QUADRATURE_NODES = 200


@dataclasses.dataclass(frozen=True)
class Activation:
    """An activation φ and what assumption A-4 asks of it.

    **Fields:**

    - `name`: registry key.
    - `fn`: φ, elementwise and JAX-traceable.
    - `derivative`: φ', elementwise (defaults to `jax.grad` of `fn`).
    - `bound`: `B`, a bound on |φ'| and |φ''| (A-4).
    - `smooth`: whether φ is twice differentiable with bounded derivatives, i.e.
      whether A-4 holds. ReLU is registered with `smooth=False`.
    """

    name: str
    fn: Callable[[jax.Array], jax.Array]
    derivative: Callable[[jax.Array], jax.Array]
    bound: float
    smooth: bool = True

    def __call__(self, x):
        return self.fn(x)


class ActivationConstants(NamedTuple):
    """`C_φ = sqrt(E φ(g)²)`, `C_φ' = sqrt(E φ'(g)²)` for g ~ N(0, 1), and `B`."""

    C_phi: float
    C_phi_prime: float
    B: float


_REGISTRY: dict[str, Activation] = {}


def _elementwise_grad(fn):
    return jnp.vectorize(jax.grad(fn))


def register_activation(
    name: str,
    fn: Callable[[jax.Array], jax.Array],
    *,
    bound: float,
    derivative: Callable[[jax.Array], jax.Array] | None = None,
    smooth: bool = True,
    overwrite: bool = False,
) -> Activation:
    """Register an activation so that networks can refer to it by `name`.

    **Arguments:**

    - `name`: the key networks use, e.g. `TwoLayerDIP.init(..., activation=name)`.
    - `fn`: φ, an elementwise JAX function.
    - `bound`: `B` of assumption A-4, a bound on |φ'| and |φ''|.
    - `derivative`: φ'; derived with `jax.grad` when omitted.
    - `smooth`: `False` if φ is not twice differentiable with bounded derivatives
      (the certificate then flags A-4 as failing).
    - `overwrite`: allow replacing an existing entry.

    **Returns:** the registered [`dipflow.Activation`][].
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"`name` must be a non-empty string, got {name!r}.")
    if not callable(fn):
        raise TypeError(f"`fn` must be callable, got {type(fn).__name__}.")
    if not (np.isfinite(bound) and bound > 0):
        raise ValueError(f"`bound` (B of A-4) must be finite and > 0, got {bound!r}.")
    if name in _REGISTRY and not overwrite:
        raise ValueError(
            f"activation {name!r} is already registered; pass overwrite=True to replace it."
        )
    act = Activation(
        name=name,
        fn=fn,
        derivative=_elementwise_grad(fn) if derivative is None else derivative,
        bound=float(bound),
        smooth=smooth,
    )
    replacing = name in _REGISTRY
    _REGISTRY[name] = act
    activation_constants.cache_clear()
    if replacing:
        # Compiled solvers key on the activation's name: drop them, or they would
        # keep running the old φ.
        jax.clear_caches()
    return act


def get_activation(activation: str | Activation) -> Activation:
    """Look up an activation by name (an `Activation` is returned unchanged)."""
    if isinstance(activation, Activation):
        return activation
    if not isinstance(activation, str):
        raise TypeError(
            "`activation` must be a registered name or an Activation, got "
            f"{type(activation).__name__}."
        )
    try:
        return _REGISTRY[activation]
    except KeyError:
        raise ValueError(
            f"unknown activation {activation!r}; expected one of {sorted(_REGISTRY)} "
            "or a name registered with dipflow.register_activation."
        ) from None


def available_activations() -> list[str]:
    """Names of all registered activations."""
    return sorted(_REGISTRY)


@functools.cache
def activation_constants(activation: str) -> ActivationConstants:
    """`C_φ`, `C_φ'` and `B` of a registered activation.

    The Gaussian expectations are computed in float64 by Gauss–Hermite quadrature:
    `E f(g) = π^{-1/2} Σ_i w_i f(√2 x_i)`.

    **Arguments:**

    - `activation`: a registered activation name.

    **Returns:** an `ActivationConstants(C_phi, C_phi_prime, B)` of Python floats.
    """
    act = get_activation(activation)
    nodes, weights = np.polynomial.hermite.hermgauss(_QUADRATURE_NODES)
    with jax.enable_x64(True):
        g = jnp.asarray(np.sqrt(2.0) * nodes, dtype=jnp.float64)
        phi = np.asarray(act.fn(g), dtype=np.float64)
        dphi = np.asarray(act.derivative(g), dtype=np.float64)
    norm = 1.0 / np.sqrt(np.pi)
    c_phi = float(np.sqrt(norm * np.sum(weights * phi**2)))
    c_phi_prime = float(np.sqrt(norm * np.sum(weights * dphi**2)))
    return ActivationConstants(C_phi=c_phi, C_phi_prime=c_phi_prime, B=act.bound)


def _relu_derivative(x):
    return jnp.where(x > 0, 1.0, 0.0).astype(jnp.result_type(x))


def _sigmoid_derivative(x):
    # φ(1 − φ) reuses the φ(z) the flow computes anyway (XLA merges the two
    # sigmoids), which saves an exp per neuron and step; φ(−x) would not.
    s = jax.nn.sigmoid(x)
    return s * (1 - s)


# B bounds both |φ'| and |φ''|: sigmoid max|φ'| = 1/4 > max|φ''| = 1/(6√3);
# tanh max|φ'| = 1 > max|φ''| = 4/(3√3); softplus φ' = sigmoid ≤ 1, φ'' ≤ 1/4.
register_activation(
    "sigmoid",
    jax.nn.sigmoid,
    bound=0.25,
    derivative=_sigmoid_derivative,
)
register_activation(
    "tanh", jnp.tanh, bound=1.0, derivative=lambda x: 1.0 - jnp.tanh(x) ** 2
)
register_activation("softplus", jax.nn.softplus, bound=1.0, derivative=jax.nn.sigmoid)
register_activation(
    "relu", jax.nn.relu, bound=1.0, derivative=_relu_derivative, smooth=False
)
