"""Random inverse problems: the one place that draws `A`, x̄ and ε.

Studies, `dipflow.verify` and the [`dipflow.InverseProblem`][] generators all
draw through these functions, so that "`A` with condition number κ" (say) is one
distribution everywhere. The NumPy draw takes a `numpy.random.Generator` and
consumes it in a fixed order (`A`, then `A`'s right singular vectors when κ is
prescribed, `x̄`, `ε`). The constructions that turn Gaussian matrices into
structured ones (`haar`, `conditioned`) are pure functions of their arguments and
accept NumPy or JAX arrays alike.
"""

from __future__ import annotations

import math

import numpy as np

from .._core._checks import array_namespace
from ._noise import check_noise


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
    """`A` (iid N(0, 1) when `kappa` is None, else [`conditioned`][dipflow.problems._draws.conditioned]
    with `U` from the first `min(m, n)` columns of that Gaussian matrix), `x̄`
    iid N(0, 1), then `y` drawn from `ȳ = A x̄` by the noise model `noise` (a
    number: `ε = noise · N(0, I_m)`), in this order from `rng`.

    **Returns:** `(A, x, eps, y)` with `eps = y − A x̄`; a model that fixes the
    signal's scale (Poisson counts at a peak) returns `A` scaled by its gain.
    """
    model = check_noise(noise)
    A = rng.standard_normal((m, n))
    if kappa is not None:
        r = min(m, n)
        A = conditioned(A[:, :r], rng.standard_normal((n, r)), float(kappa))
    x = rng.standard_normal(n)
    if model.scales_operator:
        A = float(model.gain(A @ x)) * A
    y, eps = model.observe_numpy(rng, A @ x)
    return A, x, eps, y
