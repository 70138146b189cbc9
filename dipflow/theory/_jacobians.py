"""Jacobians of generators w.r.t. their trained parameters, and the kernels built
from them: `J Jᵀ` (closed form for the two-layer net), `K_A = A J Jᵀ Aᵀ`, σ_min,
and the Lemma 3 bound on Lip(J).

Every smallest eigenvalue here is exact (dense SVD or eigendecomposition,
the blocked Gram) or a matrix-free estimate under the one contract of
[`dipflow.EigenEstimate`][]: functions that return a number raise on an
estimate that is only an upper bound."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._core._backend import on_cpu
from .._core._checks import option
from ..generators._networks import AbstractGenerator, TwoLayerDIP
from ..problems._problems import InverseProblem, check_problem
from . import _blocked_gram, _certificates, _spectral
from ._certificates import (
    lemma3_bound,
    sigma_min_two_layer,
    two_layer_kernel,
)
from ._flat import flat_generator as flat_generator, partition as partition


def jacobian(net, trainable=None, mode: str = "auto") -> Float[Array, "n p"]:
    """The exact Jacobian `J(θ) = ∂g/∂θ` by automatic differentiation, shape `(n, p)`.

    `p` counts the trained parameters, flattened in pytree order (row-major `W`
    for [`dipflow.TwoLayerDIP`][], so `p = k·d` in the paper's setting).
    Works for any generator.

    **Arguments:**

    - `net`, `trainable`: the generator and, optionally, a filter spec of what trains.
    - `mode`: `"fwd"` (`jax.jacfwd`, p forward passes), `"rev"` (`jax.jacrev`,
      n backward passes) or `"auto"`: `jacfwd` when `p ≤ n`, else `jacrev`. Both
      are exact; `jacfwd` pushes a `p × p` identity through the network, which
      for a wide net (`p = k·d` of 10⁵) does not fit in memory.
    """
    return _dense_jacobian(net, trainable, _jacobian_mode(mode))


def _auto(theta, g):
    # jacfwd pushes a p × p identity through the network: only when p ≤ n.
    n = jax.eval_shape(g, theta).shape[0]
    return jax.jacfwd if theta.size <= n else jax.jacrev


def _forward(theta, g):
    return jax.jacfwd


def _reverse(theta, g):
    return jax.jacrev


# How `mode` chooses the autodiff transform from `(θ, g)`.
_MODES = {"auto": _auto, "fwd": _forward, "rev": _reverse}


def _jacobian_mode(mode):
    return option("mode", mode, _MODES, "'auto', 'fwd' or 'rev'")


def _dense_jacobian(net, trainable, choose):
    theta, g = flat_generator(net, trainable)
    return _jacobian(net, trainable, choose(theta, g))


# Compiled as one program: called eagerly, autodiff of a convolutional
# network dispatches (and compiles) each primitive on its own, ~3x slower.
@eqx.filter_jit
def _jacobian(net, trainable, transform):
    theta, g = flat_generator(net, trainable)
    return transform(g)(theta)


def _sigma_min_from_singular_values(s, n):
    # σ_min(J) in the paper's sense: J is onto R^n only if rank n is possible.
    return s[n - 1] if s.shape[0] >= n else jnp.zeros((), s.dtype)


class _Dense:
    """The dense method: the matrix formed, its spectrum taken exactly."""


class _Gram:
    """The exact method without J: the blocked Gram `J Jᵀ`, its spectrum."""

    name = "gram"


class _Auto:
    """The blocked Gram when it fits in memory, else Lanczos."""


_DENSE, _GRAM, _AUTO = _Dense(), _Gram(), _Auto()
# The methods by the names `method` takes.
SIGMA_MIN_METHODS = {
    "svd": _DENSE, "gram": _GRAM, "auto": _AUTO, **_spectral.EIGEN_METHODS
}  # fmt: skip
GRAM_METHODS = {"gram": _GRAM, "auto": _AUTO, **_spectral.EIGEN_METHODS}
KERNEL_METHODS = {"dense": _DENSE, **_spectral.EIGEN_METHODS}


# `method`, `num_iters`, `key`, `rtol` unannotated: checked with messages that name them.
def sigma_min_jacobian(
    net,
    trainable=None,
    mode: str = "auto",
    *,
    method="svd",
    num_iters=None,
    key=None,
    rtol=None,
) -> Float[Array, ""]:
    """σ_min(J(θ)) = sqrt(λ_min(J Jᵀ)) of any generator.

    It is exactly 0 when there are fewer parameters than outputs (p < n: J
    cannot be onto R^n), whatever the method.

    **Arguments:**

    - `net`, `trainable`: the generator and, optionally, a filter spec of what trains.
    - `mode`: how `method="svd"` forms J, as in [`dipflow.jacobian`][].
    - `method`:
        - `"svd"` (default): the singular values of the dense autodiff
          Jacobian (memory `n × p`).
        - `"gram"`: exact without forming J: `J Jᵀ` assembled from blocks of
          vmapped vjps and jvps (memory `n²` plus one block), then its
          eigendecomposition; see `dipflow.theory._blocked_gram`.
        - `"auto"`: `"gram"` when its `n²` floats fit in 2 GiB
          (`GRAM_MEMORY_BYTES`: n ≤ 16384 in float64), else `"lanczos"`.
        - matrix-free, J Jᵀ never formed: `"lanczos"` (Lanczos with full
          reorthogonalisation on `v ↦ J Jᵀ v`, one vjp and one jvp per step,
          memory `num_iters × n`) or `"lobpcg"` (LOBPCG on a shifted `J Jᵀ`,
          memory `3 × n`; needs n > 5). See [`dipflow.smallest_eigenvalue`][].
    - `num_iters`: matrix-free iterations (Lanczos: default `min(n, 300)`, and
      `num_iters = n` is exact; LOBPCG: at most 500 by default).
    - `key`: PRNG key of the random start (default `jax.random.key(0)`).
    - `rtol`: an estimate (any method but `"svd"`) whose residual
      `||J Jᵀ v − λ v||` exceeds `rtol · λ` is only an upper bound, and
      raises an error rather than being returned as the value
      (`eqx.error_if`, also under `jit`); default 0.1, `math.inf` turns the
      check off. A returned λ = σ_min² is within `rtol · λ` of an eigenvalue
      of `J Jᵀ`, typically within `residual² / gap`.
      [`dipflow.gram_min_eigenvalue`][] returns the estimate, flagged,
      instead of checking it.
    """
    choose = _jacobian_mode(mode)
    method = option("method", method, SIGMA_MIN_METHODS)
    if isinstance(method, _Dense):
        J = _dense_jacobian(net, trainable, choose)
        return _sigma_min_from_singular_values(singular_values(J), J.shape[0])
    est = _gram_estimate(net, trainable, method, num_iters, key, rtol)
    return _checked_sqrt(est, "σ_min(J)")


def gram_matvec(net, trainable=None):
    """`v ↦ J Jᵀ v` at the current θ, linearised once (each call is one
    transposed and one forward tangent pass, no primal pass): `(matvec, n, p)`."""
    theta, g = flat_generator(net, trainable)
    out, jvp = jax.linearize(g, theta)
    vjp = jax.linear_transpose(jvp, theta)

    def matvec(v):
        return jvp(vjp(v)[0])

    return matvec, out.shape[0], theta.size


def measurement_kernel_matvec(net, problem: InverseProblem, trainable=None):
    """`r ↦ K_A r = A J Jᵀ Aᵀ r` through `problem.forward` and `problem.adjoint`
    (dense or matrix-free `A`), linearised once: `(matvec, m, p)`."""
    gram_mv, _, p = gram_matvec(net, trainable)

    def matvec(r):
        return problem.forward(gram_mv(problem.adjoint(r)))

    return matvec, problem.m, p


# Arguments after `trainable` unannotated: checked with messages that name them.
def gram_min_eigenvalue(
    net, trainable=None, *, method="lanczos", num_iters=None, key=None, rtol=None
) -> _spectral.EigenEstimate:
    """λ_min(J Jᵀ) with its residual: an [`dipflow.EigenEstimate`][], a value
    (`converged`) or only an upper bound, with a lower bound.

    **Arguments:** as in [`dipflow.sigma_min_jacobian`][], `method` one of
    `"lanczos"` (default), `"lobpcg"`, `"gram"` (exact: the blocked Gram) or
    `"auto"` (`"gram"` when it fits in memory, else `"lanczos"`); the
    estimate records `converged` rather than raising.

    With fewer parameters than outputs (p < n) the value is exactly 0, nothing
    runs and `num_matvecs` is 0."""
    method = option("method", method, GRAM_METHODS)
    return _gram_estimate(net, trainable, method, num_iters, key, rtol)


def _gram_estimate(net, trainable, method, num_iters, key, rtol):
    theta, g = flat_generator(net, trainable)
    n = jax.eval_shape(g, theta).shape[0]
    if isinstance(method, _Auto):
        fits = _blocked_gram.gram_fits(n, theta.dtype)
        method = _GRAM if fits else _spectral.EIGEN_METHODS["lanczos"]
    if isinstance(method, _Gram):
        return _blocked_gram.gram_estimate(net, trainable, rtol=rtol)
    return _estimate(net, None, trainable, n, theta, method, num_iters, key, rtol)


def _estimate(net, problem, trainable, n, theta, method, num_iters, key, rtol):
    # Checked here, before anything compiles.
    rtol = _spectral.check_rtol(rtol)
    if theta.size < n:
        return _spectral.zero_estimate(n, theta.dtype, method.name, rtol)
    k = method.iterations(num_iters, n)
    if isinstance(method, _spectral.Lanczos) and _step_by_step(net, problem, key):
        return _stepped_lanczos(net, problem, trainable, n, theta.dtype, k, key, rtol)
    return _run_estimate(net, problem, trainable, n, theta.dtype, method, k, key, rtol)


def _matvec(net, problem, trainable):
    if problem is None:
        return gram_matvec(net, trainable)[0]
    return measurement_kernel_matvec(net, problem, trainable)[0]


@eqx.filter_jit
def _run_estimate(net, problem, trainable, n, dtype, method, k, key, rtol):
    key = jax.random.key(0) if key is None else key
    return method.estimate(_matvec(net, problem, trainable), n, k, key, rtol, dtype)


def _step_by_step(*args) -> bool:
    """Lanczos one compiled step per call: on a CPU, where XLA runs
    convolutions inside a loop many times slower than alone (σ_min(J) of a
    64×64 ConvDecoder, 100 steps: 26 s in one `fori_loop`, ~2 s stepped), and
    only outside a trace (under `jit`/`vmap` the loop stays one program)."""
    leaves = jax.tree_util.tree_leaves(args)
    return on_cpu() and not any(isinstance(a, jax.core.Tracer) for a in leaves)


@eqx.filter_jit
def _lanczos_step(net, problem, trainable, key, j, carry):
    return _spectral.lanczos_step(_matvec(net, problem, trainable), key, j, carry)


@eqx.filter_jit
def _lanczos_finish(net, problem, trainable, carry, k, rtol):
    Q, alpha, beta, _ = carry
    return _spectral.lanczos_finish(
        _matvec(net, problem, trainable), Q[:k], alpha, beta, rtol
    )


def _stepped_lanczos(net, problem, trainable, n, dtype, k, key, rtol):
    # The same iteration as `_run_estimate`'s, each step its own call (each
    # re-linearises the generator: one primal pass more per matvec).
    key = jax.random.key(0) if key is None else key
    v0, k_restart = _spectral.lanczos_keys(key, n, dtype)
    carry = _spectral.lanczos_start(v0, k)
    for j in range(k):
        carry = _lanczos_step(net, problem, trainable, k_restart, jnp.asarray(j), carry)
    return _lanczos_finish(net, problem, trainable, carry, k, rtol)


def checked_value(value, est: _spectral.EigenEstimate, what: str, exact: str):
    """`value` (computed from `est`), or an error (`eqx.error_if`, also under
    `jit`) where `est` is only an upper bound: the number-returning side of
    the contract. `exact`: the method that would not need the check."""
    if est.method == "gram":
        fix = "its precision cannot resolve λ_min against round-off of ||J Jᵀ||"
    else:
        fix = f"raise `num_iters`, or take method={exact!r} (exact)"
    return eqx.error_if(
        value,
        jnp.logical_not(est.converged),
        f"{what}: the estimate (method={est.method!r}) is only an upper bound, "
        f"its residual above rtol = {est.rtol} times its value; {fix}.",
    )


def _checked_sqrt(est, what):
    return checked_value(jnp.sqrt(jnp.maximum(est.value, 0.0)), est, what, "gram")


def singular_values(J: Float[Array, "n p"]) -> Float[Array, " r"]:
    """The singular values of `J`, largest first, through the thin QR of its
    long side: exact, O(n p min(n, p)) (an SVD of a very wide `J` allocates
    `p × p` on some backends)."""
    n, p = J.shape
    if max(n, p) > 2 * min(n, p):
        J = jnp.linalg.qr(J.T if p > n else J, mode="r")
    return jnp.linalg.svd(J, compute_uv=False)


def gram(net, hidden: Float[Array, " k"] | None = None) -> Float[Array, "n n"]:
    """Closed-form `J Jᵀ` of a generator that has one (the two-layer network:
    `||u||² V diag(φ'(z)²) Vᵀ / k`, `z = W u`, plus `||φ(z)||² / k · I_n` when `V`
    is trained too; docs/mathematics.md, "The Jacobian and its Gram"). `hidden` replaces `z = W u` (the reduced dynamics
    knows z without W)."""
    G = net.gram(hidden) if isinstance(net, AbstractGenerator) else None
    if G is None:
        raise TypeError(
            f"gram has a closed form only for generators that provide one (TwoLayerDIP), "
            f"got {type(net).__name__}; use jacobian(net) for any generator."
        )
    return G


def sigma_min_gram(net, hidden: Float[Array, " k"] | None = None) -> Float[Array, ""]:
    """σ_min(J) from the closed-form Gram: `sqrt(λ_min(J Jᵀ))`, or exactly 0 when
    `J` cannot have rank `n` (the paper's W-only training with `n > k`: `J Jᵀ` then
    has rank ≤ k)."""
    G = gram(net, hidden)
    if net.paper_model:
        z = net.hidden() if hidden is None else hidden
        return sigma_min_two_layer(
            net.V, net.activation.derivative(z), jnp.dot(net.u, net.u)
        )
    lam = jnp.linalg.eigvalsh(G)[0]
    return jnp.sqrt(jnp.maximum(lam, 0.0))


def measurement_kernel(
    net, problem: InverseProblem, trainable=None
) -> Float[Array, "m m"]:
    """The measurement-space kernel `K_A = A J Jᵀ Aᵀ` (m×m), which governs the
    residual: `d/dt ½||r||² = −rᵀ K_A r / m`.

    Uses the closed form `M diag(φ'(z)²) Mᵀ ||u||²` (`M = A V/√k`) for a two-layer
    net trained in `W` only, and `(A J)(A J)ᵀ` with the autodiff `J` otherwise.
    """
    if is_paper_model(net) and trainable is None:
        M = jax.vmap(problem.forward, in_axes=1, out_axes=1)(net.V) / jnp.sqrt(
            net.k
        ).astype(net.V.dtype)
        return two_layer_kernel(
            M, net.activation.derivative(net.hidden()), jnp.dot(net.u, net.u)
        )
    J = jacobian(net, trainable)
    AJ = jax.vmap(problem.forward, in_axes=1, out_axes=1)(J)
    return AJ @ AJ.T


def measurement_rate(net, problem: InverseProblem, trainable=None) -> Float[Array, ""]:
    """`λ_min(K_A)` on Im(A), divided by m: the instantaneous exponential rate of
    `||y(t) − y||` at θ (docs/mathematics.md, "A certificate in measurement space").

    It is ≥ σ_A² σ_min(J)² / m and stays positive for n > k as long as k ≥ m.
    A matrix-free `A` is materialised to find Im(A).
    """
    return (
        min_eigenvalue_on_range(measurement_kernel(net, problem, trainable), problem)
        / problem.m
    )


# Arguments after `trainable` unannotated: checked with messages that name them.
def measurement_min_eigenvalue(
    net,
    problem: InverseProblem,
    trainable=None,
    *,
    method="dense",
    num_iters=None,
    key=None,
    rtol=None,
) -> Float[Array, ""]:
    """λ_min of the measurement kernel `K_A = A J Jᵀ Aᵀ`: `m` times
    [`dipflow.measurement_rate`][].

    **Arguments:**

    - `net`, `problem`, `trainable`: as in [`dipflow.measurement_kernel`][].
    - `method`: `"dense"` (default: `K_A` formed, its λ_min taken on Im(A), so
      any rank of `A`; equal to `measurement_rate(net, problem) · m`), or
      matrix-free, neither J nor K_A formed: `"lanczos"` or `"lobpcg"` on
      `r ↦ A J Jᵀ Aᵀ r` through `problem.forward` and `problem.adjoint` (dense
      `A` or a matrix-free lineax operator). These take λ_min over all of R^m,
      so they **assume A has full row rank** (m ≤ n, Im(A) = R^m); a
      rank-deficient `A` gives 0 there, which is λ_min(K_A) on R^m but not the
      rate on Im(A).
    - `num_iters`, `key`, `rtol`: as in [`dipflow.sigma_min_jacobian`][]; a
      matrix-free estimate whose residual exceeds `rtol` times its value is
      only an upper bound, and raises.

    It is exactly 0, by any matrix-free method, when p < m (K_A then has rank
    ≤ p).
    """
    method = option("method", method, KERNEL_METHODS)
    if isinstance(method, _Dense):
        return min_eigenvalue_on_range(
            measurement_kernel(net, problem, trainable), problem
        )
    check_problem(problem)
    m, n = problem.m, problem.n
    if m > n:
        raise ValueError(
            f"method={method.name!r} assumes A has full row rank, impossible with "
            f"m = {m} > n = {n}; use method='dense'."
        )
    theta, _ = flat_generator(net, trainable)
    est = _estimate(net, problem, trainable, m, theta, method, num_iters, key, rtol)
    return checked_value(est.value, est, "λ_min(K_A)", "dense")


def min_eigenvalue_on_range(
    K: Float[Array, "m m"], problem: InverseProblem
) -> Float[Array, ""]:
    """λ_min of a symmetric `K` whose range lies in Im(A), restricted to Im(A)."""
    return _certificates.min_eigenvalue_on_range(K, jnp.asarray(problem.as_matrix()))


def lipschitz_bound(net) -> Float[Array, ""]:
    """Lemma 3: `Lip(J) ≤ B D sqrt(n/k) ||u||²` (the paper has ||u|| = 1).

    `D` is the largest |V_ij| of this very `V`, which makes the bound hold
    deterministically. Defined for [`dipflow.TwoLayerDIP`][] trained in `W` only;
    NaN for any other network or training choice, where Lemma 3 says nothing.
    """
    if not is_paper_model(net):
        return jnp.asarray(jnp.nan)
    B = net.activation.bound
    return lemma3_bound(B, net.entry_bound, net.n, net.k, jnp.dot(net.u, net.u))


def is_paper_model(net) -> bool:
    return isinstance(net, AbstractGenerator) and net.paper_model


def reduced_operator(net: TwoLayerDIP, problem: InverseProblem) -> Float[Array, "m k"]:
    """`M = A V / √k`, the only place where `A` (or `n`) enters the reduced flow."""
    AV = jax.vmap(problem.forward, in_axes=1, out_axes=1)(net.V)
    return AV / jnp.sqrt(net.k).astype(AV.dtype)
