"""The singular values of `A` that the theory needs: `||A||`, `σ_A`, `κ(A)`.

One place computes them for every operator: in closed form where the operator
carries its singular values (a [`dipflow.SingularValuesTag`][]), by SVD for a
dense array, by Lanczos (scipy's ARPACK) for a large matrix-free operator.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
import lineax as lx
import numpy as np
import scipy.sparse.linalg as spla
from jaxtyping import Array, Float

from .._core._checks import array_namespace, is_concrete

# Below this Gram size a matrix-free operator's spectrum is computed from the
# Gram matrix built column by column (exact); above it, by Lanczos (ARPACK).
_DENSE_GRAM_LIMIT = 32


class Spectrum(NamedTuple):
    """Singular-value summary of `A`: `||A||`, `σ_A` (smallest non-zero singular
    value), `κ(A) = ||A|| / σ_A`, and the numerical rank (−1 when Lanczos
    computed only part of a large matrix-free spectrum)."""

    norm: Array
    sigma_A: Array
    kappa: Array
    rank: Array


@dataclasses.dataclass(frozen=True)
class SingularValuesTag:
    """A lineax tag: the operator's `||A||`, smallest non-zero singular value
    `σ_A` and rank, known in closed form. Transposition keeps it (`Aᵀ` has the
    singular values of `A`)."""

    norm: float
    sigma_A: float
    rank: int


@lx.transpose_tags_rules.append
def _(tags):
    for tag in tags:
        if isinstance(tag, SingularValuesTag):
            return tag


def _tag_of(op) -> SingularValuesTag | None:
    if isinstance(op, lx.IdentityLinearOperator):
        return SingularValuesTag(norm=1.0, sigma_A=1.0, rank=op.in_size())
    if isinstance(op, lx.MulLinearOperator) and is_concrete(op.scalar):
        inner = _tag_of(op.operator)
        if inner is None:
            return None
        g = abs(float(op.scalar))
        return SingularValuesTag(
            norm=g * inner.norm, sigma_A=g * inner.sigma_A, rank=inner.rank
        )
    tags = getattr(op, "tags", frozenset())
    return next((t for t in tags if isinstance(t, SingularValuesTag)), None)


def scale_operator(op, gain):
    """`gain · A` for a dense array or a lineax operator (a
    `lineax.MulLinearOperator`, whose gain is a leaf, so that problems scaled
    by different gains batch together); an operator that carries its singular
    values keeps them, scaled."""
    if not isinstance(op, lx.AbstractLinearOperator):
        return gain * op
    dtype = op.out_structure().dtype
    return op * jnp.asarray(gain, dtype)


def operator_spectrum(op) -> Spectrum:
    """`||A||`, `σ_A`, `κ(A)` and the rank of an operator: in closed form for
    the identity and the operators of this module that carry their singular
    values (all but the Gaussian compressed-sensing matrix), else as
    [`dipflow.InverseProblem.spectrum`][] computes it (exact SVD for a dense
    array, Lanczos for a large matrix-free operator).

    **Arguments:**

    - `op`: a `lineax.AbstractLinearOperator` from `R^n` to `R^m`, or a dense
      `(m, n)` array.

    **Returns:**

    A [`dipflow.Spectrum`][].
    """
    tag = _tag_of(op)
    if tag is None:
        if isinstance(op, lx.AbstractLinearOperator):
            return _iterative_spectrum(op)
        return dense_spectrum(op)
    return Spectrum(
        norm=jnp.asarray(tag.norm),
        sigma_A=jnp.asarray(tag.sigma_A),
        kappa=jnp.asarray(tag.norm / tag.sigma_A),
        rank=jnp.asarray(tag.rank),
    )


def dense_spectrum(A: Float[Array | np.ndarray, "m n"]) -> Spectrum:
    """The [`dipflow.Spectrum`][] of a dense `A` by its singular values: NumPy
    for a NumPy `A`, else JAX (jit- and vmap-compatible). Singular values below
    `σ_max · max(m, n) · eps` count as zero."""
    xp = array_namespace(A)
    s = xp.linalg.svd(A, compute_uv=False)
    cutoff = s[0] * max(A.shape) * xp.finfo(s.dtype).eps
    nonzero = s > cutoff
    sigma_A = xp.min(xp.where(nonzero, s, xp.inf))
    return Spectrum(
        norm=s[0], sigma_A=sigma_A, kappa=s[0] / sigma_A, rank=xp.sum(nonzero)
    )


def operator_shape(op: lx.AbstractLinearOperator) -> tuple[int, int]:
    in_struct, out_struct = op.in_structure(), op.out_structure()
    if not (hasattr(in_struct, "shape") and hasattr(out_struct, "shape")):
        raise TypeError(
            "`A` must map 1-D arrays to 1-D arrays (a vector-to-vector operator)."
        )
    if len(in_struct.shape) != 1 or len(out_struct.shape) != 1:
        raise ValueError(
            "`A` must map 1-D arrays to 1-D arrays, got input shape "
            f"{in_struct.shape} and output shape {out_struct.shape}."
        )
    return out_struct.shape[0], in_struct.shape[0]


@eqx.filter_jit
def _mv(op, x):
    return op.mv(x)


def _iterative_spectrum(op: lx.AbstractLinearOperator) -> Spectrum:
    m, n = operator_shape(op)
    # The operator is an argument of one compiled function, not a hashed static
    # (an Equinox module holding arrays is unhashable).
    mv = functools.partial(_mv, op)
    rmv = functools.partial(_mv, op.transpose())
    dtype = np.dtype(op.out_structure().dtype)
    # Gram on the smaller side: its non-zero eigenvalues are the σ_i².
    if m <= n:
        q, gram = m, lambda r: np.asarray(mv(rmv(jnp.asarray(r, dtype))), np.float64)
    else:
        q, gram = n, lambda x: np.asarray(rmv(mv(jnp.asarray(x, dtype))), np.float64)
    eps = np.finfo(dtype).eps

    def zero_cutoff(lam_max):
        # σ² below (σ_max · max(m, n) · eps)² is zero, up to the Gram's round-off.
        return max(lam_max * (max(m, n) * eps) ** 2, lam_max * q * eps)

    if q <= _DENSE_GRAM_LIMIT:
        G = np.stack([gram(e) for e in np.eye(q)], axis=1)
        eig = np.linalg.eigvalsh(0.5 * (G + G.T))
        lam_max = max(float(eig[-1]), 0.0)
        rank = int(np.sum(eig > zero_cutoff(lam_max)))
    else:
        lin = spla.LinearOperator((q, q), matvec=gram, dtype=np.float64)
        tol = 1e-12 if dtype == np.float64 else 1e-6
        # A fixed start vector: the same operator gives the same spectrum.
        v0 = np.random.default_rng(0).standard_normal(q)
        lam_max = max(
            float(
                spla.eigsh(
                    lin, k=1, which="LA", tol=tol, v0=v0, return_eigenvectors=False
                )[0]
            ),
            0.0,
        )
        # The small end of the spectrum is the large end of λ_max·I − G (Lanczos
        # finds extreme eigenvalues fast); ask for more until one is non-zero, as
        # a null space at least as large as the number asked for hides σ_A.
        shifted = spla.LinearOperator(
            (q, q), matvec=lambda v: lam_max * v - gram(v), dtype=np.float64
        )
        count = min(q - 1, 6)
        while True:
            top, vecs = spla.eigsh(shifted, k=count, which="LA", tol=tol, v0=v0)
            # λ_max − top loses the small eigenvalues to cancellation (relative
            # error ~ eps·κ²); the Rayleigh quotient of G on the eigenvector
            # does not, and is exact to second order in the vector's error.
            rayleigh = np.array([v @ gram(v) / (v @ v) for v in vecs.T])
            eig = np.sort(np.append(rayleigh, lam_max))
            if np.any(eig[:-1] > zero_cutoff(lam_max)) or count >= q - 1:
                break
            count = min(q - 1, 2 * count)
        rank = -1  # not resolved by a few Lanczos eigenvalues
    nonzero = eig[eig > zero_cutoff(lam_max)]
    if nonzero.size == 0:
        raise ValueError("`A` is numerically zero: it has no non-zero singular value.")
    sigma_max = np.sqrt(lam_max)
    sigma_A = float(np.sqrt(nonzero.min()))
    return Spectrum(
        norm=jnp.asarray(sigma_max),
        sigma_A=jnp.asarray(sigma_A),
        kappa=jnp.asarray(sigma_max / sigma_A),
        rank=jnp.asarray(rank),
    )
