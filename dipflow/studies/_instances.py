"""An instance of the paper's model: a problem and a network drawn together, in
float64 NumPy, from one generator (studies and `dipflow.verify` share it)."""

from __future__ import annotations

import math

import numpy as np

from ..generators._draws import draw_v
from ..problems._draws import draw_problem


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
    make it), then `A`, `x` (x̄), `y` and `eps` (ε = y − A x̄) as
    [`draw_problem`][dipflow.problems._draws.draw_problem] draws them under the
    noise model `noise` (a number: Gaussian noise of that standard deviation)."""
    V = draw_v(rng, (n, k), v_dist)
    z0 = rng.standard_normal(k)
    A, x, eps, y = draw_problem(rng, m, n, kappa, noise)
    return dict(V=V, z0=z0, A=A, x=x, eps=eps, y=y)


def reduced_matrix(A: np.ndarray, V: np.ndarray) -> np.ndarray:
    """`M = A V/√k` of an instance, in float64 NumPy (for JAX arrays of a
    network and problem: [`dipflow.reduced_operator`][])."""
    return A @ V / math.sqrt(V.shape[1])
