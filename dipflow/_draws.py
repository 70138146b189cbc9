"""Random instances of the paper's model: the one place that draws them.

Studies (`dipflow.study_instance`), `dipflow.verify` and the
[`dipflow.InverseProblem`][] generators all draw through these functions, so
that "`A` with condition number κ" (say) is one distribution everywhere.

The NumPy draws take a `numpy.random.Generator` and consume it in a fixed order
(`V`, `z0`, `A`, then `A`'s right singular vectors when κ is prescribed, `x̄`,
`ε`): the same generator state gives the same instance, bit for bit. The
constructions that turn Gaussian matrices into structured ones (`haar`,
`conditioned`) are pure functions of their arguments and accept NumPy or JAX
arrays alike.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from ._checks import array_namespace
from ._networks import TwoLayerDIP


def draw_v(rng: np.random.Generator, shape: tuple[int, int], v_dist: str):
    """`V` with iid entries of mean 0 and variance 1 (A-3): Rademacher ±1,
    uniform(−√3, √3) or N(0, 1), in float64."""
    if v_dist == "rademacher":
        return rng.integers(0, 2, size=shape, dtype=np.int8).astype(np.float64) * 2 - 1
    if v_dist == "uniform":
        return rng.uniform(-math.sqrt(3.0), math.sqrt(3.0), size=shape)
    return rng.standard_normal(shape)


def haar(G):
    """Orthonormal columns distributed uniformly (Haar) from a Gaussian `G`
    (p × r, p ≥ r, iid N(0, 1)): the `Q` of `G = Q R` with the signs fixed by
    `R`'s diagonal.

    Without the sign fix, `Q` depends on the QR routine's sign convention and
    is not Haar (e.g. LAPACK's makes `Q[0, 0]` negative more often than not).
    """
    xp = array_namespace(G)
    Q, R = xp.linalg.qr(G)
    return Q * xp.where(xp.diagonal(R) < 0, -1.0, 1.0)[None, :]


def conditioned(G_left, G_right, kappa, sigma_max=None):
    """`A = U diag(s) Vᵀ` (m × n) with a prescribed condition number.

    `U = haar(G_left)`, `V = haar(G_right)` and `r = min(m, n)` singular values
    `s` geometrically spaced from `sigma_max` (default `√m + √n`, a Gaussian
    matrix's typical norm) down to `sigma_max / kappa`.

    **Arguments:**

    - `G_left`, `G_right`: iid N(0, 1) matrices of shapes `(m, r)` and `(n, r)`.
    - `kappa`: the condition number κ(A) ≥ 1.
    - `sigma_max`: `||A||`.

    **Returns:** `A`, a NumPy array for NumPy inputs, else a JAX array.
    """
    xp = array_namespace(G_left, G_right)
    (m, r), n = G_left.shape, G_right.shape[0]
    if sigma_max is None:
        sigma_max = math.sqrt(m) + math.sqrt(n)
    s = sigma_max * kappa ** -xp.linspace(0.0, 1.0, r, dtype=G_left.dtype)
    return (haar(G_left) * s[None, :]) @ haar(G_right).T


def draw_problem(rng: np.random.Generator, m: int, n: int, kappa=None, noise=0.0):
    """`A` (iid N(0, 1) when `kappa` is None, else [`conditioned`][dipflow._draws.conditioned]
    with `U` from the first `min(m, n)` columns of that Gaussian matrix), `x̄`
    iid N(0, 1) and `ε = noise · N(0, I_m)`, in this order from `rng`."""
    A = rng.standard_normal((m, n))
    if kappa is not None:
        r = min(m, n)
        A = conditioned(A[:, :r], rng.standard_normal((n, r)), float(kappa))
    x = rng.standard_normal(n)
    eps = noise * rng.standard_normal(m)
    return A, x, eps


def draw_instance(
    rng: np.random.Generator,
    m: int,
    n: int,
    k: int,
    v_dist: str = "rademacher",
    kappa=None,
    noise=0.0,
) -> dict[str, np.ndarray]:
    """One instance of the paper's model in float64: `V` (n × k, as `v_dist`),
    `z0 = W(0) u` (iid N(0, 1), exactly as `W(0)` iid N(0, 1) and `||u|| = 1`
    make it), then `A`, `x` (x̄) and `eps` (ε) as
    [`draw_problem`][dipflow._draws.draw_problem]."""
    V = draw_v(rng, (n, k), v_dist)
    z0 = rng.standard_normal(k)
    A, x, eps = draw_problem(rng, m, n, kappa, noise)
    return dict(V=V, z0=z0, A=A, x=x, eps=eps)


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
