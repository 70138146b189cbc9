"""A generator as a function of its flattened trained parameters: what every
Jacobian, Gram and kernel of the theory layer differentiates."""

from __future__ import annotations

import equinox as eqx
from jax.flatten_util import ravel_pytree

from ..generators._networks import default_trainable_filter


def partition(net, trainable=None):
    """Split `net` into `(params, static)` by the filter `trainable` (default: the
    net's own `trainable_filter()`); `eqx.combine(params, static)` rebuilds it."""
    spec = default_trainable_filter(net) if trainable is None else trainable
    return eqx.partition(net, spec)


def flat_generator(net, trainable=None):
    """`(θ0, g)` with θ0 the flattened trained parameters and `g(θ)` the signal."""
    params, static = partition(net, trainable)
    theta0, unravel = ravel_pytree(params)
    if theta0.size == 0:
        raise ValueError("the network has no trainable parameters; check `trainable`.")

    def g(theta):
        return eqx.combine(unravel(theta), static)()

    return theta0, g
