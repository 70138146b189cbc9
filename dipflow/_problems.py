"""Linear inverse problems `y = A x̄ + ε` (the paper's equation (1))."""

from __future__ import annotations

import functools
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import scipy.sparse.linalg as spla
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import (
    array_namespace,
    as_float_array,
    check_shape,
    is_concrete,
    nonnegative_scalar,
    positive_int,
)
from ._draws import conditioned

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


class InverseProblem(eqx.Module):
    """A linear inverse problem `y = A x̄ + ε`, `A ∈ R^{m×n}`.

    `A` is a dense `(m, n)` array or a matrix-free `lineax.AbstractLinearOperator`
    (so image-sized operators such as masks and blurs fit). `x_true` (x̄) and
    `noise` (ε) are optional; when `y` is omitted it is computed as `A x̄ + ε`.

    **Arguments:**

    - `A`: the forward operator.
    - `y`: the observation, shape `(m,)`.
    - `x_true`: the ground-truth signal x̄, shape `(n,)`.
    - `noise`: the noise ε, shape `(m,)`.

    Problems are pytrees: they can be passed through `jax.jit` and `jax.vmap`.
    """

    A: Float[Array, "m n"] | lx.AbstractLinearOperator
    y: Float[Array, " m"]
    x_true: Float[Array, " n"] | None
    noise: Float[Array, " m"] | None

    def __init__(self, A, y=None, x_true=None, noise=None):
        if isinstance(A, lx.AbstractLinearOperator):
            m, n = _operator_shape(A)
        else:
            A = as_float_array("A", A, ndim=2)
            m, n = A.shape
        if x_true is not None:
            x_true = as_float_array("x_true", x_true, ndim=1)
            check_shape("x_true", x_true, (n,), "n = number of columns of A")
        if noise is not None:
            noise = as_float_array("noise", noise, ndim=1)
            check_shape("noise", noise, (m,), "m = number of rows of A")
        if y is None:
            if x_true is None:
                raise ValueError(
                    "give `y`, or `x_true` (and optionally `noise`) to compute y = A x_true + noise."
                )
            y = _apply(A, x_true)
            if noise is not None:
                y = y + noise
        else:
            y = as_float_array("y", y, ndim=1)
            check_shape("y", y, (m,), "m = number of rows of A")
        self.A = A
        self.y = y
        self.x_true = x_true
        self.noise = noise

    # -- shapes and application -------------------------------------------------

    @property
    def m(self) -> int:
        """Number of measurements (rows of `A`)."""
        return self.y.shape[-1]

    @property
    def n(self) -> int:
        """Signal dimension (columns of `A`)."""
        return _operator_shape(self.A)[1] if self.is_matrix_free else self.A.shape[-1]

    @property
    def is_matrix_free(self) -> bool:
        return isinstance(self.A, lx.AbstractLinearOperator)

    def forward(self, x: Float[Array, " n"]) -> Float[Array, " m"]:
        """`A x`."""
        return _apply(self.A, x)

    def adjoint(self, r: Float[Array, " m"]) -> Float[Array, " n"]:
        """`Aᵀ r`."""
        if self.is_matrix_free:
            return self.A.transpose().mv(r)
        return self.A.T @ r

    def as_matrix(self) -> Float[Array, "m n"]:
        """`A` as a dense array (materialises a matrix-free operator)."""
        return self.A.as_matrix() if self.is_matrix_free else self.A

    @property
    def y_clean(self) -> Float[Array, " m"]:
        """`ȳ = A x̄` (requires `x_true`)."""
        if self.x_true is None:
            raise ValueError("this problem has no `x_true`, so ȳ = A x̄ is unknown.")
        return self.forward(self.x_true)

    # -- spectrum ---------------------------------------------------------------

    def spectrum(self) -> Spectrum:
        """`||A||`, `σ_A`, `κ(A)` and the rank of `A`.

        Exact (SVD, jit-compatible) for a dense `A`; for a matrix-free operator,
        Lanczos iterations (scipy's ARPACK) on the smaller Gram matrix `A Aᵀ` or
        `Aᵀ A`, run eagerly on the host. Singular values below
        `σ_max · max(m, n) · eps` count as zero, as in `numpy.linalg.matrix_rank`.
        """
        if self.is_matrix_free:
            return _iterative_spectrum(self.A)
        return dense_spectrum(self.A)

    # -- generators -------------------------------------------------------------

    @classmethod
    def gaussian(
        cls, key: PRNGKeyArray, m: int, n: int, noise: float = 0.0, dtype=None
    ) -> InverseProblem:
        """The paper's random problem: `A` and `x̄` with iid N(0, 1) entries.

        **Arguments:**

        - `key`: a JAX PRNG key.
        - `m`, `n`: the shape of `A`.
        - `noise`: standard deviation σ of the iid Gaussian noise ε ~ N(0, σ² I_m).
        - `dtype`: floating dtype (default: JAX's default float).
        """
        m, n = positive_int("m", m), positive_int("n", n)
        nonnegative_scalar("noise", noise)
        dtype = jnp.result_type(float) if dtype is None else dtype
        k_a, k_x, k_e = jax.random.split(key, 3)
        A = jax.random.normal(k_a, (m, n), dtype)
        x = jax.random.normal(k_x, (n,), dtype)
        eps = noise * jax.random.normal(k_e, (m,), dtype)
        return cls(A=A, x_true=x, noise=eps)

    @classmethod
    def with_condition_number(
        cls,
        key: PRNGKeyArray,
        m: int,
        n: int,
        kappa: float,
        noise: float = 0.0,
        sigma_max: float | None = None,
        dtype=None,
    ) -> InverseProblem:
        """A random problem whose `A` has a prescribed condition number.

        `A = U diag(s) Vᵀ` with Haar-random orthonormal `U`, `V` (the `Q` of
        Gaussian matrices with the signs fixed by `R`'s diagonal) and `min(m, n)`
        singular values `s` geometrically spaced from `sigma_max` down to
        `sigma_max / kappa`; `x̄` is iid N(0, 1). Studies and `dipflow.verify`
        draw their `A` of prescribed κ from the same distribution.

        **Arguments:**

        - `kappa`: the condition number κ(A) ≥ 1.
        - `sigma_max`: `||A||`; defaults to `√m + √n`, the typical norm of a
          Gaussian matrix, so that problems are comparable with
          [`dipflow.InverseProblem.gaussian`][].
        - the others as in `gaussian`.
        """
        m, n = positive_int("m", m), positive_int("n", n)
        nonnegative_scalar("noise", noise)
        if is_concrete(kappa) and not (np.isfinite(kappa) and float(kappa) >= 1):
            raise ValueError(f"`kappa` must be finite and >= 1, got {kappa!r}.")
        if sigma_max is None:
            sigma_max = float(np.sqrt(m) + np.sqrt(n))
        nonnegative_scalar("sigma_max", sigma_max, strict=True)
        dtype = jnp.result_type(float) if dtype is None else dtype
        r = min(m, n)
        k_u, k_v, k_x, k_e = jax.random.split(key, 4)
        A = conditioned(
            jax.random.normal(k_u, (m, r), dtype),
            jax.random.normal(k_v, (n, r), dtype),
            jnp.asarray(kappa, dtype),
            sigma_max,
        )
        x = jax.random.normal(k_x, (n,), dtype)
        eps = noise * jax.random.normal(k_e, (m,), dtype)
        return cls(A=A, x_true=x, noise=eps)

    def with_noise(self, key: PRNGKeyArray, noise: float) -> InverseProblem:
        """The same `A` and `x̄` with fresh noise ε ~ N(0, noise² I_m)."""
        if self.x_true is None:
            raise ValueError(
                "with_noise needs `x_true` to recompute y = A x_true + noise."
            )
        nonnegative_scalar("noise", noise)
        eps = noise * jax.random.normal(key, (self.m,), self.y.dtype)
        return InverseProblem(A=self.A, x_true=self.x_true, noise=eps)


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


def _apply(A, x):
    if isinstance(A, lx.AbstractLinearOperator):
        return A.mv(x)
    return A @ x


def _operator_shape(op: lx.AbstractLinearOperator) -> tuple[int, int]:
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
    m, n = _operator_shape(op)
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
