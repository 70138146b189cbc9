"""The quantities of Theorem 1 and Lemmas 1–3 as pure array functions.

[`dipflow.theorem1`][] evaluates them on JAX arrays (under `jit` and `vmap`);
studies evaluate them on the float64 NumPy arrays of each run, where they
compile nothing (a study has hundreds of cell shapes). Each function takes NumPy
or JAX arrays and returns the same kind: one formula, whoever evaluates it.

Notation: `σ_A` is A's smallest non-zero singular value, `σ_J` = σ_min(J(θ0)),
`lip` a bound on Lip(J), `r0 = ||y(0) − y||`, `m` the number of measurements.
"""

from __future__ import annotations

import math

import numpy as np
from jaxtyping import Array, Float

from .._core._checks import array_namespace
from ..generators._networks import two_layer_gram

# NumPy arrays in, NumPy arrays out; JAX arrays in, JAX arrays out.
AnyArray = Array | np.ndarray


def sigma_min_two_layer(
    V: Float[AnyArray, "n k"], dphi_z: Float[AnyArray, "*batch k"], u_norm2=1.0
) -> Float[AnyArray, "*batch"]:
    """σ_min(J) of the two-layer net trained in `W`: `sqrt(λ_min(J Jᵀ))` by the
    closed-form Gram, or exactly 0 when `n > k` (`J Jᵀ` then has rank ≤ k).
    NumPy: batched over the leading axes of `dphi_z`."""
    xp = array_namespace(V, dphi_z, u_norm2)
    n, k = V.shape
    if n > k:
        return xp.zeros(dphi_z.shape[:-1], dphi_z.dtype)
    lam = xp.linalg.eigvalsh(two_layer_gram(V, dphi_z, u_norm2))[..., 0]
    return xp.asarray(xp.sqrt(xp.maximum(lam, 0.0)))


def two_layer_kernel(
    M: Float[AnyArray, "m k"], dphi_z: Float[AnyArray, " k"], u_norm2=1.0
) -> Float[AnyArray, "m m"]:
    """The measurement-space kernel `K_A = A J Jᵀ Aᵀ = ||u||² M diag(φ'(z)²) Mᵀ`
    of the two-layer net trained in `W`, `M = A V / √k`."""
    return (M * dphi_z[None, :] ** 2) @ M.T * u_norm2


def min_eigenvalue_on_range(
    K: Float[AnyArray, "m m"], A: Float[AnyArray, "m n"]
) -> Float[AnyArray, ""]:
    """λ_min of a symmetric `K` whose range lies in Im(A), restricted to Im(A)
    (singular values of `A` below `σ_max · max(m, n) · eps` count as zero)."""
    xp = array_namespace(K, A)
    m, n = A.shape
    # Only the m×m basis U is needed: the thin SVD has it whole when m ≤ n, and
    # the full one costs O(n³) for the n×n factor nobody reads.
    U, s, _ = xp.linalg.svd(A, full_matrices=m > n)
    s = xp.concatenate([s, xp.zeros(m - s.shape[0], s.dtype)])
    in_range = s > s[0] * max(m, n) * xp.finfo(s.dtype).eps
    # K maps into Im(A), so in the basis U it is block diagonal; directions of
    # ker(Aᵀ) get an eigenvalue above all others and drop out of the minimum.
    K_u = U.T @ K @ U
    lift = xp.trace(K) + 1.0
    K_u = K_u + xp.diag(xp.where(in_range, 0.0, lift))
    return xp.asarray(xp.linalg.eigvalsh(K_u)[0])


def lemma3_bound(B, D, n: int, k: int, u_norm2=1.0):
    """Lemma 3: `Lip(J) ≤ B D sqrt(n/k) ||u||²` (the paper has ||u|| = 1), with
    `B` bounding |φ'| and |φ''| and `D` the largest |V_ij|."""
    return B * D * math.sqrt(n / k) * u_norm2


def condition5(r0, sigma_A, sigma_J, lip):
    """Both sides of condition (5) and whether it holds:
    `(lhs, rhs, lhs < rhs)` with `lhs = ||y − y(0)|| / σ_A` and
    `rhs = σ_min(J0)² / (4 Lip(J))`."""
    lhs = r0 / sigma_A
    rhs = sigma_J**2 / (4 * lip)
    return lhs, rhs, lhs < rhs


def rate8(sigma_J, sigma_A, m):
    """The guaranteed exponential rate of (8), `σ_min(J0)² σ_A² / (4m)`. For a
    loss with PL constant `μ`, `m` is `1/μ` (the rate of `sqrt(ℓ − ℓ*)`)."""
    return sigma_J**2 * sigma_A**2 / (4 * m)


def stopping_time6(r0, noise_norm, sigma_A, sigma_J, m):
    """The early-stopping time (6), `4m log(||y − y(0)|| / ||ε||) / (σ_A² σ_J²)`;
    NaN without noise. For a loss with PL constant `μ`: `m` is `1/μ`, `r0` the
    effective residual and `noise_norm` the noise footprint."""
    xp = array_namespace(r0, noise_norm, sigma_A, sigma_J)
    noisy = noise_norm > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (
            4
            * m
            * xp.log(r0 / xp.where(noisy, noise_norm, 1.0))
            / (sigma_A**2 * sigma_J**2)
        )
    return xp.where(noisy, t, xp.nan)


def lemma1_radii(sigma_J, lip, r0, sigma_A):
    """The radii of Lemma 1: `R = σ_min(J0) / (2 Lip(J))` and
    `R' = 2 ||y(0) − y|| / (σ_A σ_min(J0))` (if `R' < R`, σ_min(J(θ(t))) stays
    above σ_min(J0)/2)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return sigma_J / (2 * lip), 2 * r0 / (sigma_A * sigma_J)


def k_bound_factor(kappa, n: int, m: int, d: int):
    """Theorem 1(ii)'s width factor `κ(A)² n (√n (√log d + 1) + √m)²`: the
    theorem asks `k ≥ C1 ·` this, for a constant `C1` the paper leaves unknown."""
    return kappa**2 * n * (np.sqrt(n) * (np.sqrt(np.log(d)) + 1) + np.sqrt(m)) ** 2
