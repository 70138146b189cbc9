"""Activation functions φ with the constants the theory needs (C_φ, C_φ', B)."""

from __future__ import annotations

import functools
import pickle
from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

# Nodes of Gauss–Hermite quadrature. For the smooth activations the integrands
# are analytic, so the error decays geometrically; 200 nodes reach round-off.
_QUADRATURE_NODES = 200


class Activation(eqx.Module):
    """An activation φ, its derivative and what assumption A-4 asks of it.

    Networks hold their activation as this module (a field, like `eqx.nn.MLP`'s
    activation): a name such as `"sigmoid"` is only a shorthand, resolved through
    the registry ([`dipflow.register_activation`][]) when a network is built. Every
    field is static, so two networks with different activations compile apart and
    a network keeps the φ it was built with.

    **Fields:**

    - `name`: the name it is known by (registry key, cell field, column value).
    - `fn`: φ, elementwise and JAX-traceable.
    - `derivative`: φ', elementwise (defaults to `jax.grad` of `fn`).
    - `bound`: `B`, a bound on |φ'| and |φ''| (A-4).
    - `smooth`: whether φ is twice differentiable with bounded derivatives, i.e.
      whether A-4 holds. ReLU has `smooth=False`.
    """

    name: str = eqx.field(static=True)
    fn: Callable[[jax.Array], jax.Array] = eqx.field(static=True)
    derivative: Callable[[jax.Array], jax.Array] = eqx.field(static=True)
    bound: float = eqx.field(static=True)
    smooth: bool = eqx.field(static=True)

    # Arguments unannotated: they are checked here, with messages that name them.
    def __init__(self, name, fn, *, bound, derivative=None, smooth=True):
        if not isinstance(name, str) or not name:
            raise TypeError(f"`name` must be a non-empty string, got {name!r}.")
        if not callable(fn):
            raise TypeError(f"`fn` must be callable, got {type(fn).__name__}.")
        if derivative is not None and not callable(derivative):
            raise TypeError(
                f"`derivative` must be callable or None, got {type(derivative).__name__}."
            )
        if not (np.isfinite(bound) and bound > 0):
            raise ValueError(
                f"`bound` (B of A-4) must be finite and > 0, got {bound!r}."
            )
        self.name = name
        self.fn = fn
        self.derivative = _elementwise_grad(fn) if derivative is None else derivative
        self.bound = float(bound)
        self.smooth = bool(smooth)

    def __call__(self, x):
        return self.fn(x)

    @property
    def constants(self) -> ActivationConstants:
        """`C_φ`, `C_φ'` and `B` (see [`dipflow.activation_constants`][])."""
        return activation_constants(self)


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
    """Register an activation so that networks, cells, TOML files and the CLI can
    refer to it by `name`.

    **Arguments:**

    - `name`: the key networks use, e.g. `TwoLayerDIP.init(..., activation=name)`.
    - `fn`: φ, an elementwise JAX function.
    - `bound`: `B` of assumption A-4, a bound on |φ'| and |φ''|.
    - `derivative`: φ'; derived with `jax.grad` when omitted.
    - `smooth`: `False` if φ is not twice differentiable with bounded derivatives
      (the certificate then flags A-4 as failing).
    - `overwrite`: allow replacing an existing entry. Networks built before keep
      the activation they were built with.

    Study worker processes receive the registered activations a study uses; with
    several workers, `fn` and `derivative` must be picklable (module-level
    functions), or cloudpickle must be installed.

    **Returns:** the registered [`dipflow.Activation`][].
    """
    act = Activation(name, fn, bound=bound, derivative=derivative, smooth=smooth)
    if name in _REGISTRY and not overwrite:
        raise ValueError(
            f"activation {name!r} is already registered; pass overwrite=True to replace it."
        )
    _REGISTRY[name] = act
    return act


def get_activation(activation) -> Activation:
    """Resolve an activation: a registered name, or an `Activation` (returned
    unchanged)."""
    if isinstance(activation, Activation):
        return activation
    if not isinstance(activation, str):
        raise TypeError(
            "`activation` must be a registered name or a dipflow.Activation, got "
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


def portable_activations(names) -> bytes:
    """The registered activations `names`, pickled for a worker process (which
    re-registers them with [`restore_activations`][dipflow.generators._activations.restore_activations])."""
    acts = [get_activation(name) for name in sorted(set(names))]
    acts = [act for act in acts if _BUILTINS.get(act.name) is not act]
    try:
        return pickle.dumps(acts)
    except (pickle.PicklingError, AttributeError, TypeError) as e:
        try:
            import cloudpickle
        except ImportError:
            raise ValueError(
                "an activation of this study cannot be sent to worker processes "
                f"({e}): define its functions at module level, install cloudpickle, "
                "or run with workers=1."
            ) from None
        return cloudpickle.dumps(acts)


def restore_activations(payload: bytes) -> None:
    for act in pickle.loads(payload):
        _REGISTRY[act.name] = act


def activation_constants(activation) -> ActivationConstants:
    """`C_φ`, `C_φ'` and `B` of an activation (or of a registered name).

    The Gaussian expectations are computed in float64 by Gauss–Hermite quadrature:
    `E f(g) = π^{-1/2} Σ_i w_i f(√2 x_i)`.

    **Returns:** an `ActivationConstants(C_phi, C_phi_prime, B)` of Python floats.
    """
    return _constants(get_activation(activation))


@functools.cache
def _constants(act: Activation) -> ActivationConstants:
    nodes, weights = np.polynomial.hermite.hermgauss(_QUADRATURE_NODES)
    with jax.enable_x64(True):
        g = jnp.asarray(np.sqrt(2.0) * nodes, dtype=jnp.float64)
        phi = np.asarray(act.fn(g), dtype=np.float64)
        dphi = np.asarray(act.derivative(g), dtype=np.float64)
    norm = 1.0 / np.sqrt(np.pi)
    c_phi = float(np.sqrt(norm * np.sum(weights * phi**2)))
    c_phi_prime = float(np.sqrt(norm * np.sum(weights * dphi**2)))
    return ActivationConstants(C_phi=c_phi, C_phi_prime=c_phi_prime, B=act.bound)


# The built-ins are module-level functions so that networks pickle (to worker
# processes, to Dask) by reference; some of JAX's own wrappers do not.
def _sigmoid(x):
    return jax.nn.sigmoid(x)


def _sigmoid_derivative(x):
    # φ(1 − φ) reuses the φ(z) the flow computes anyway (XLA merges the two
    # sigmoids), which saves an exp per neuron and step; φ(−x) would not.
    s = jax.nn.sigmoid(x)
    return s * (1 - s)


def _tanh(x):
    return jnp.tanh(x)


def _tanh_derivative(x):
    return 1.0 - jnp.tanh(x) ** 2


def _softplus(x):
    return jax.nn.softplus(x)


def _relu(x):
    return jax.nn.relu(x)


def _leaky_relu(x):
    return jax.nn.leaky_relu(x, negative_slope=0.2)


def _leaky_relu_derivative(x):
    return jnp.where(x > 0, 1.0, 0.2).astype(jnp.result_type(x))


def _relu_derivative(x):
    return jnp.where(x > 0, 1.0, 0.0).astype(jnp.result_type(x))


# B bounds both |φ'| and |φ''|: sigmoid max|φ'| = 1/4 > max|φ''| = 1/(6√3);
# tanh max|φ'| = 1 > max|φ''| = 4/(3√3); softplus φ' = sigmoid ≤ 1, φ'' ≤ 1/4.
register_activation("sigmoid", _sigmoid, bound=0.25, derivative=_sigmoid_derivative)
register_activation("tanh", _tanh, bound=1.0, derivative=_tanh_derivative)
register_activation("softplus", _softplus, bound=1.0, derivative=_sigmoid)
register_activation("relu", _relu, bound=1.0, derivative=_relu_derivative, smooth=False)
# The DIP code's LeakyReLU(0.2).
register_activation(
    "leaky_relu",
    _leaky_relu,
    bound=1.0,
    derivative=_leaky_relu_derivative,
    smooth=False,
)

# What `import dipflow` registers: every process has these, so workers need only
# the others.
_BUILTINS = dict(_REGISTRY)
