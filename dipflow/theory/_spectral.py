"""The smallest eigenvalue of a symmetric positive semi-definite operator given
only by its action `v ↦ M v`: Lanczos with full reorthogonalisation, or LOBPCG.

This is how σ_min(J)² = λ_min(J Jᵀ) and λ_min(K_A) = λ_min(A J Jᵀ Aᵀ) are found
for generators whose Jacobian `J` (n × p, with p up to 10⁶) is never formed:
one matvec is one vjp and one jvp of the generator, linearised once per θ.

**Which method.** Lanczos with full reorthogonalisation extracts the Ritz
values of the whole Krylov space `span{v, Mv, …, M^{k−1} v}`, the best any
single-vector method can do with `k` matvecs; LOBPCG keeps only a
`3 × block_size`-dimensional subspace of it. Matvecs for σ_min(J) to reach a
relative error of 1e-4 / 1e-8 (`benchmarks/bench_spectral.py`, n = 200,
p ≈ 5000, float64):

| generator                          | Lanczos  | LOBPCG, block 1 | LOBPCG, block 4 |
|------------------------------------|----------|-----------------|-----------------|
| two-layer, k = 2.5 n (κ = 22)      | 50 / 69  | 72 / 129        | 116 / 184       |
| two-layer, k ≈ n (κ = 6·10³)       | 176 / 194| 733 / > 1000    | 556 / 832       |
| MLP, depth 2 (κ = 352)             | 105 / 135| 281 / 529       | 256 / 424       |

(κ: the condition number of J Jᵀ). Lanczos is the default; it stores the
`k × n` basis (k ≤ n), LOBPCG `3 × block_size` vectors of size n, its one
advantage here.

**What an estimate is: one contract.** Every estimate carries the true
residual `r = ||M v − λ v||` of its pair (one extra matvec), and is either a
*value* or only an *upper bound*:

- `λ` is the Rayleigh quotient of a unit vector, so `λ ≥ λ_min(M)` always
  (Courant–Fischer; up to the round-off of evaluating it): every estimate is
  an upper bound.
- It is also a *value* (`converged`) when `r ≤ rtol · λ` (default `rtol` 0.1,
  `VALUE_RTOL`): an eigenvalue of `M` then lies within `rtol · λ` of `λ`
  (for symmetric `M` some eigenvalue lies within `r` of any Rayleigh
  quotient). The test is relative to λ itself: a backward error
  `r ≤ tol · ||M||` passes estimates many times too large once
  `λ_min ≪ ||M||` (on a trained 64×64 ConvDecoder, an estimate 28 times too
  large).
- `lower_bound` is what can be proved below λ_min. Some eigenvalue of `M`
  lies within `r` of λ, so `max(λ − r, 0)` bounds *that* eigenvalue from
  below, and with the gap `δ = θ₂ − r₂ − λ > 0` to the next Ritz value `θ₂`
  (less its residual `r₂`) the Kato–Temple bound `λ − r²/δ` holds for it
  too. These bound λ_min only when that eigenvalue is λ_min and none other
  lies below `θ₂ − r₂`: when the Ritz values are the whole spectrum (the
  exact `"gram"` method, Lanczos with `num_iters = n`). Then `lower_bound`
  is `max(λ − r, λ − r²/δ, 0)` (up to round-off). A Krylov space of fewer
  than `n` dimensions may miss the bottom of the spectrum in a way no
  residual shows (on a clustered spectrum, 3 Lanczos steps give `λ − r`
  above λ_min): there `lower_bound` is 0, the only bound proved
  (`0 ≤ λ_min ≤ λ`).

Functions that return a plain number (`dipflow.sigma_min_jacobian`,
`dipflow.measurement_min_eigenvalue`) raise on an estimate that is only an
upper bound; those that return an `EigenEstimate` report it in `converged`.
"""

import abc
import math
import numbers
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from equinox import AbstractClassVar
from jax.experimental.sparse.linalg import lobpcg_standard
from jaxtyping import Array, Bool, Float, Int

from .._core._checks import float_dtype, option, positive_int

# Default iteration caps: enough for the nets in benchmarks/bench_spectral.py
# to reach 1e-8 relative accuracy; an unconverged estimate raises (see `rtol`).
DEFAULT_LANCZOS_ITERS = 300
DEFAULT_LOBPCG_ITERS = 500
# Lanczos steps that place LOBPCG's shift c ≈ λ_max (the top converges fast).
_SHIFT_ITERS = 12
# An estimate λ is a value when its residual is at most this fraction of λ:
# an eigenvalue then lies within 10 % of λ, and, the spectral gap permitting,
# within r²/δ (on image generators, residuals ≤ 0.17 λ left ≤ 0.2 % errors,
# benchmarks/bench_image_sigma_min.py).
VALUE_RTOL = 0.1


class EigenEstimate(eqx.Module):
    """An estimate of the smallest eigenpair of a symmetric PSD operator `M`:
    a value, or only an upper bound (see `converged`), with a lower bound.

    **Fields:**

    - `value`: λ, the Rayleigh quotient of `vector` (Lanczos, LOBPCG: the
      smallest Ritz value; `"gram"`: `||Jᵀ v||²` of the dense Gram's bottom
      eigenvector). Always `≥ λ_min(M)`, up to the round-off of evaluating
      it: an upper bound whether or not it converged.
    - `vector`: its unit vector, shape `(n,)`.
    - `residual`: `r = ||M vector − value · vector||`, with one more matvec.
    - `norm`: the largest Ritz value, an estimate of ||M|| from below.
    - `ritz_values`: all Ritz values, ascending (Lanczos: `num_iters` of them;
      LOBPCG: one per block column; `"gram"`: every eigenvalue of the formed
      Gram).
    - `residual_estimates`: the residual norm of each Ritz pair (Lanczos: the
      cheap `|β_k s_ki|`; LOBPCG: computed; `"gram"`: `residual` for each,
      the Gram's round-off standing for every eigenvalue's error).
    - `num_matvecs`: matvecs spent (columns of the Gram for `"gram"`),
      residual check included.
    - `converged`: `residual ≤ rtol · value`: `value` is a value, within
      `rtol · value` of an eigenvalue of `M`. Otherwise it is only an upper
      bound on λ_min.
    - `lower_bound`: a lower bound on λ_min(M): `max(λ − r, λ − r²/δ, 0)`
      (δ = θ₂ − r₂ − λ > 0 from the next Ritz pair: the Kato–Temple term)
      where the Ritz values are the whole spectrum (`"gram"`, Lanczos with
      `num_iters = n`), else 0, the only bound proved (see the module's
      notes). Whatever the method, some eigenvalue lies within `residual`
      of `value`.
    - `method`: `"lanczos"`, `"lobpcg"` or `"gram"`; `rtol`: the test of
      `converged` (`math.inf`: every estimate passes).
    """

    value: Float[Array, ""]
    vector: Float[Array, " n"]
    residual: Float[Array, ""]
    norm: Float[Array, ""]
    ritz_values: Float[Array, " k"]
    residual_estimates: Float[Array, " k"]
    num_matvecs: Int[Array, ""]
    converged: Bool[Array, ""]
    lower_bound: Float[Array, ""]
    method: str = eqx.field(static=True)
    rtol: float = eqx.field(static=True, default=VALUE_RTOL)

    @property
    def upper_bound(self) -> Float[Array, ""]:
        """An upper bound on λ_min(M): `value` itself, converged or not."""
        return self.value


def stopping_tol(dtype) -> float:
    """`sqrt(eps)` of `dtype` (~1.5e-8 in float64, ~3.5e-4 in float32): LOBPCG
    stops once its residual is below this fraction of ||M||."""
    return float(math.sqrt(jnp.finfo(dtype).eps))


def check_rtol(rtol) -> float:
    """`rtol` checked (`None`: `VALUE_RTOL`)."""
    if rtol is None:
        return VALUE_RTOL
    if isinstance(rtol, bool) or not isinstance(rtol, numbers.Real):
        raise TypeError(f"`rtol` must be a real number or None, got {rtol!r}.")
    if not rtol > 0:
        raise ValueError(f"`rtol` must be > 0 (math.inf: no check), got {rtol!r}.")
    return float(rtol)


def is_value(value, residual, rtol: float) -> Bool[Array, ""]:
    """The contract's test: `residual ≤ rtol · value` (`rtol = inf`: always,
    also where `inf · 0` would be NaN)."""
    if math.isinf(rtol):
        return jnp.asarray(True)
    return residual <= rtol * value


def lower_bound(
    value, residual, ritz_values, residual_estimates, complete: bool
) -> Float[Array, ""]:
    """`max(λ − r, λ − r²/δ, 0)`, at most λ, with `δ = θ₂ − r₂ − λ` the gap
    to the second Ritz pair (Kato–Temple, where `δ > 0`), when the Ritz
    values are the whole spectrum (`complete`); else 0. See the module's
    notes for what it bounds."""
    zero = jnp.zeros_like(value)
    if not complete:
        return zero
    bound = value - residual
    if ritz_values.shape[0] > 1:
        gap = ritz_values[1] - residual_estimates[1] - value
        safe = jnp.where(gap > 0, gap, 1.0)
        kato_temple = jnp.where(gap > 0, value - residual**2 / safe, -jnp.inf)
        bound = jnp.maximum(bound, kato_temple)
    return jnp.clip(bound, zero, jnp.maximum(value, zero))


class AbstractEigenMethod(eqx.Module):
    """A matrix-free method for the smallest eigenpair (see
    [`dipflow.smallest_eigenvalue`][])."""

    name: AbstractClassVar[str]  # as `method` names it

    @abc.abstractmethod
    def iterations(self, num_iters, n: int, block_size: int = 1) -> int:
        """The static iteration count (checked; `None`: the default)."""

    @abc.abstractmethod
    def estimate(
        self, matvec, n: int, k: int, key, rtol: float, dtype, block_size: int = 1
    ) -> EigenEstimate:
        """The estimate after `k` iterations (all arguments checked)."""


class Lanczos(AbstractEigenMethod):
    """Lanczos with full reorthogonalisation, exactly `k` steps."""

    name: ClassVar[str] = "lanczos"

    def iterations(self, num_iters, n, block_size=1):
        # Lanczos never needs more than `n` steps.
        k = DEFAULT_LANCZOS_ITERS if num_iters is None else num_iters
        return min(positive_int("num_iters", k), n)

    def estimate(self, matvec, n, k, key, rtol, dtype, block_size=1):
        v0, k_restart = lanczos_keys(key, n, dtype)
        Q, alpha, beta = lanczos(matvec, v0, k, k_restart)
        return lanczos_finish(matvec, Q, alpha, beta, rtol)


class LOBPCG(AbstractEigenMethod):
    """LOBPCG on a shifted operator, at most `k` iterations."""

    name: ClassVar[str] = "lobpcg"

    def iterations(self, num_iters, n, block_size=1):
        if 5 * block_size >= n:
            raise ValueError(
                f"method='lobpcg' needs n > 5·block_size (jax's LOBPCG), got n = {n} "
                f"and block_size = {block_size}; use method='lanczos'."
            )
        k = DEFAULT_LOBPCG_ITERS if num_iters is None else num_iters
        return positive_int("num_iters", k)

    def estimate(self, matvec, n, k, key, rtol, dtype, block_size=1):
        return _lobpcg_estimate(matvec, n, k, key, rtol, dtype, block_size)


# The matrix-free methods by the names `method` takes.
EIGEN_METHODS: dict[str, AbstractEigenMethod] = {
    m.name: m for m in (Lanczos(), LOBPCG())
}
METHODS = tuple(EIGEN_METHODS)


# Arguments unannotated: they are checked here, with messages that name them.
def smallest_eigenvalue(
    matvec,
    n,
    *,
    method="lanczos",
    num_iters=None,
    key=None,
    rtol=None,
    dtype=None,
    block_size=1,
) -> EigenEstimate:
    """λ_min of a symmetric positive semi-definite `M ∈ R^{n×n}` given as a
    function, matrix-free and jit-compatible (the loop length is static).

    **Arguments:**

    - `matvec`: `v ↦ M v` on arrays of shape `(n,)`.
    - `n`: the dimension.
    - `method`: `"lanczos"` (default: full reorthogonalisation, exactly
      `num_iters` steps, default `min(n, 300)`; with `num_iters = n` the result
      is exact up to round-off) or `"lobpcg"` (`jax.experimental.sparse.linalg.
      lobpcg_standard` on `c·I − M`, `c` the top Ritz value of 12 Lanczos
      steps; at most `num_iters` iterations, default 500, of `block_size`
      matvecs each, stopping early once its residual is below
      `sqrt(eps) · ||M||`; needs `n > 5·block_size`).
    - `key`: PRNG key of the random start (default `jax.random.key(0)`).
    - `rtol`: the estimate is a value (`converged`) when
      `residual ≤ rtol · value` (default 0.1; `math.inf`: always), else only
      an upper bound on λ_min.
    - `dtype`: floating dtype of the vectors (default: JAX's default float).

    **Returns:** an [`dipflow.EigenEstimate`][]: the value, or upper bound,
    with its residual, `converged` and `lower_bound`; a Lanczos run also
    reports all `num_iters` Ritz values with their residual estimates.
    """
    method = option("method", method, EIGEN_METHODS)
    n = positive_int("n", n)
    block_size = positive_int("block_size", block_size)
    dtype = float_dtype(dtype)
    rtol = check_rtol(rtol)
    k = method.iterations(num_iters, n, block_size)
    key = jax.random.key(0) if key is None else key
    return method.estimate(matvec, n, k, key, rtol, dtype, block_size)


def lanczos(matvec, v0: Float[Array, " n"], num_iters: int, key):
    """`num_iters` Lanczos steps with full reorthogonalisation (classical
    Gram–Schmidt, twice) from `v0`: `(Q, alpha, beta)` with `Q` the
    `(num_iters, n)` orthonormal basis, `alpha` the diagonal of the tridiagonal
    `T = Q M Qᵀ` and `beta` its off-diagonal, `beta[-1]` being the norm of the
    last residual. On breakdown (an invariant subspace) the next basis vector
    is a random one orthogonal to the others and its coupling `beta` is 0, so
    the Ritz values stay those of `M` restricted to `span(Q)`."""
    carry = lanczos_start(v0, num_iters)
    carry = jax.lax.fori_loop(
        0, num_iters, lambda j, c: lanczos_step(matvec, key, j, c), carry
    )
    Q, alpha, beta, _ = carry
    return Q[:num_iters], alpha, beta


def lanczos_start(v0: Float[Array, " n"], num_iters: int):
    """The state `(Q, alpha, beta, scale)` before the first step of
    `lanczos`; the steps can then also be driven one compiled call at a time."""
    dtype = v0.dtype
    Q = jnp.zeros((num_iters + 1, v0.shape[0]), dtype)
    Q = Q.at[0].set(v0 / jnp.linalg.norm(v0))
    zeros = jnp.zeros(num_iters, dtype)
    return Q, zeros, zeros, jnp.zeros((), dtype)


def lanczos_step(matvec, key, j, carry):
    """Lanczos step `j` (0-based) of `lanczos`: one matvec."""
    Q, alpha, beta, scale = carry
    n = Q.shape[1]
    dtype = Q.dtype
    eps = jnp.finfo(dtype).eps

    def orthogonalise(w):
        # Twice is enough (Kahan's rule); rows not yet filled are zero.
        w = w - Q.T @ (Q @ w)
        return w - Q.T @ (Q @ w)

    q = Q[j]
    w = matvec(q)
    a = jnp.dot(q, w)
    w = orthogonalise(w)
    b = jnp.linalg.norm(w)
    scale = jnp.maximum(scale, jnp.abs(a) + b)
    restart = b <= scale * math.sqrt(n) * eps
    r = orthogonalise(jax.random.normal(jax.random.fold_in(key, j), (n,), dtype))
    r = r / jnp.maximum(jnp.linalg.norm(r), jnp.finfo(dtype).tiny)
    q_next = jnp.where(restart, r, w / jnp.where(restart, 1.0, b))
    Q = Q.at[j + 1].set(q_next)
    return Q, alpha.at[j].set(a), beta.at[j].set(jnp.where(restart, 0.0, b)), scale


def tridiagonal(
    alpha: Float[Array, " k"], beta: Float[Array, " k"]
) -> Float[Array, "k k"]:
    """The symmetric tridiagonal matrix with diagonal `alpha` and off-diagonal
    `beta[:-1]` (the last `beta` couples to the next, unbuilt, basis vector)."""
    off = beta[:-1]
    return jnp.diag(alpha) + jnp.diag(off, 1) + jnp.diag(off, -1)


def zero_estimate(n: int, dtype, method: str, rtol: float) -> EigenEstimate:
    """The estimate of an operator known to be singular without iterating
    (`J Jᵀ` with p < n): value, bounds, residual and matvecs 0, no vector
    (NaN); a value."""
    zero = jnp.zeros((), dtype)
    return EigenEstimate(
        value=zero,
        vector=jnp.full((n,), jnp.nan, dtype),
        residual=zero,
        norm=jnp.full((), jnp.nan, dtype),
        ritz_values=jnp.zeros((1,), dtype),
        residual_estimates=jnp.zeros((1,), dtype),
        num_matvecs=jnp.asarray(0),
        converged=jnp.asarray(True),
        lower_bound=zero,
        method=method,
        rtol=rtol,
    )


def estimate_of(
    value, vector, residual, norm, ritz, estimates, matvecs, rtol, method, complete
) -> EigenEstimate:
    """The `EigenEstimate` of a pair whose true residual is known: the
    contract's `converged` and `lower_bound` filled in (`complete`: the Ritz
    values are the whole spectrum)."""
    return EigenEstimate(
        value=value,
        vector=vector,
        residual=residual,
        norm=norm,
        ritz_values=ritz,
        residual_estimates=estimates,
        num_matvecs=jnp.asarray(matvecs),
        converged=is_value(value, residual, rtol),
        lower_bound=lower_bound(value, residual, ritz, estimates, complete),
        method=method,
        rtol=rtol,
    )


def _finish(matvec, value, vector, norm, ritz, estimates, matvecs, rtol, method):
    vector = vector / jnp.linalg.norm(vector)
    residual = jnp.linalg.norm(matvec(vector) - value * vector)
    # The Ritz values are the whole spectrum when they are n of them.
    complete = ritz.shape[0] == vector.shape[0]
    return estimate_of(
        value, vector, residual, norm, ritz, estimates, matvecs + 1, rtol, method,
        complete,
    )  # fmt: skip


def lanczos_keys(key, n: int, dtype):
    """The start vector and the restart key of a Lanczos estimate from `key`."""
    k_start, k_restart = jax.random.split(key)
    return jax.random.normal(k_start, (n,), dtype), k_restart


def lanczos_finish(matvec, Q, alpha, beta, rtol) -> EigenEstimate:
    """The estimate from `k` Lanczos steps (`Q` the first `k` basis vectors)."""
    k = alpha.shape[0]
    ritz, S = jnp.linalg.eigh(tridiagonal(alpha, beta))
    estimates = jnp.abs(beta[-1] * S[-1])
    return _finish(
        matvec, ritz[0], Q.T @ S[:, 0], ritz[-1], ritz, estimates, k, rtol, "lanczos"
    )


def _lobpcg_estimate(matvec, n, k, key, rtol, dtype, block_size):
    k_shift, k_restart, k_block = jax.random.split(key, 3)
    shift_iters = min(_SHIFT_ITERS, n)
    _, alpha, beta = lanczos(
        matvec, jax.random.normal(k_shift, (n,), dtype), shift_iters, k_restart
    )
    c = jnp.linalg.eigvalsh(tridiagonal(alpha, beta))[-1]
    block_mv = jax.vmap(matvec, in_axes=1, out_axes=1)

    def shifted(X):
        return c * X - block_mv(X)

    X0 = jax.random.normal(k_block, (n, block_size), dtype)
    # LOBPCG stops when ||r|| < tol' · 10 n (||c v − M v|| + θ) ≈ tol' · 20 n c:
    # this tol' makes that `residual ≤ sqrt(eps) · ||M||` (c ≈ ||M||), about
    # as far as floating point goes; whether that is a value is `rtol`'s call.
    tol = stopping_tol(dtype)
    theta, U, iters = lobpcg_standard(shifted, X0, m=k, tol=tol / (20 * n))
    ritz = c - theta  # ascending, as theta is descending
    MU = block_mv(U)
    estimates = jnp.linalg.norm(MU - ritz[None, :] * U, axis=0)
    matvecs = shift_iters + block_size * (iters + 1) + block_size
    return _finish(
        matvec, ritz[0], U[:, 0], c, ritz, estimates, matvecs, rtol, "lobpcg"
    )
