"""Random networks of the paper's model from NumPy generators: `V` under A-3,
and a `TwoLayerDIP` with a given `W(0) u`.

The draws take a `numpy.random.Generator` and consume it in a fixed order: the
same generator state gives the same network, bit for bit.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ._distributions import v_distribution
from ._networks import TwoLayerDIP


def draw_v(rng: np.random.Generator, shape: tuple[int, int], v_dist: str):
    """`V` with iid entries of mean 0 and variance 1 (A-3): Rademacher ±1,
    uniform(−√3, √3) or N(0, 1), in float64."""
    return v_distribution(v_dist).draw(rng, shape)


def network_from_hidden(
    V: np.ndarray,
    z0: np.ndarray,
    d: int,
    rng: np.random.Generator,
    activation,
    v_dist: str,
    dtype=None,
) -> TwoLayerDIP:
    """A `TwoLayerDIP` with this `V` and `W(0) u = z0`: `u` uniform on the sphere
    and the part of `W(0)` orthogonal to `u` iid N(0, 1), both drawn from `rng`.
    When `z0` is iid N(0, 1), `W(0)` is then iid N(0, 1) (A-2) exactly."""
    u = rng.standard_normal(d)
    u /= np.linalg.norm(u)
    G = rng.standard_normal((len(z0), d))
    W = np.outer(z0, u) + G - np.outer(G @ u, u)
    dtype = jnp.result_type(float) if dtype is None else dtype
    return TwoLayerDIP(
        V=jnp.asarray(V, dtype),
        W=jnp.asarray(W, dtype),
        u=jnp.asarray(u, dtype),
        activation=activation,
        v_dist=v_dist,
        w_dist="normal",
    )
