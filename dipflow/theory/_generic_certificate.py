"""Theorem 1(i) for any generator: condition (5) decided by bounds on Lip(J).

The deterministic part of the paper's argument, Lemma 1, (5), (7) and (8), never
uses the two-layer structure: it needs σ_min(J(θ0)), σ_A, ||y − y(0)|| and a
Lipschitz constant of J on a ball around θ0. This module computes the first
three exactly and brackets the last between an attained lower bound (an
adversarial search) and a derived upper bound where one is known.
"""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float
from optax.tree_utils import tree_sub, tree_vdot

from .._core._backend import on_cpu
from .._core._checks import nonnegative_int, nonnegative_scalar, positive_int
from ..generators._networks import TwoLayerDIP
from ..problems._problems import check_problem
from ._jacobians import flat_generator, lipschitz_bound, partition, sigma_min_jacobian
from ._lipschitz import layerwise_lip_bound
from ._loss_certificate import AbstractLossCertificate, LossTerms

# J (n × p) is formed densely, and σ_min taken from its SVD, up to this many
# entries (32 MiB in float64); above it, J Jᵀ is built matrix-free.
DENSE_JACOBIAN_LIMIT = 2**22

# Power iterations that polish the direction v at the best pair found.
_POLISH_ITERS = 30


class GenericCertificate(AbstractLossCertificate):
    """Theorem 1(i) for one (generator, problem): condition (5) decided by a
    lower and an upper bound on Lip(J) over a ball around θ0.

    Condition (5) reads `Lip(J) < lip_threshold = σ_min(J0)² σ_A / (4 ||y − y(0)||)`.
    At `Lip(J) = lip_threshold` Lemma 1's radius `R = σ_min(J0) / (2 Lip(J))` equals
    `R' = 2 ||y(0) − y|| / (σ_A σ_min(J0))`, the radius the flow stays in; so the
    ball the argument needs is `B(θ0, R')`, the default `radius`. If the Lipschitz
    constant `L` of J on the closed ball `B(θ0, R')` is below `lip_threshold`, then
    `σ_min(J) ≥ σ_min(J0) − L R' > σ_min(J0)/2` on it, hence (by continuity) on a
    slightly larger ball `B(θ0, R)` with `R' < R`, and Lemma 1(iii) and (8) follow.
    Conversely, any `L < lip_threshold` for which Lemma 1 applies must be valid on
    `B(θ0, σ_min(J0)/(2L)) ⊃ B(θ0, R')`, so a pair in `B(θ0, R')` whose difference
    quotient exceeds `lip_threshold` rules the paper's route out.

    **Fields:**

    - `m`, `n`, `p`: measurements, outputs, trained parameters.
    - `sigma_min_J0`: σ_min(J(θ0)) (0 when `p < n`); `sigma_min_method`: `"svd"`
      (dense autodiff Jacobian) or `"gram"` (matrix-free `J Jᵀ`).
    - `sigma_A`, `initial_residual` (`||y − y(0)||`).
    - `pl_constant`, `effective_residual`: the loss's μ and `ρ0`, as in
      [`dipflow.Certificate`][] (squared error: `1/m` and `||y − y(0)||`);
      `undecided`: why the loss decides nothing (no μ), else `None`.
    - `lip_threshold`: the largest Lip(J) for which (5) holds,
      `σ_min(J0)² σ_A / (4 ρ0)`.
    - `R_prime`: Lemma 1's `R'`; `radius`: the ball `B(θ0, radius)` of the
      Lipschitz bounds (default `R_prime`).
    - `lip_lower`: `||(J(θ1) − J(θ2)) v|| / ||θ1 − θ2||` at the pair `theta1`,
      `theta2` (flattened parameters, both in the ball) and unit direction `v`
      found by the search: a lower bound of Lip(J) on the ball, attained. NaN
      when the ball is not finite.
    - `lip_upper`: an upper bound of Lip(J) on the ball, NaN where none is
      derived; `upper_bound`: which one (see [`dipflow.generic_certificate`][]).
    - `verdict`: `"certified"` (`lip_upper < lip_threshold` and `radius ≥ R'`: (5)
      holds), `"refuted"` (`lip_lower > lip_threshold`, or σ_min(J0) = 0: no
      Lipschitz constant of J on the ball satisfies (5)) or `"undecided"`.
    - `rate`: `μ σ_min(J0)² σ_A² / 4` (squared error: `σ_min(J0)² σ_A² /
      (4m)`), the rate of (8) when certified.
    """

    m: int = eqx.field(static=True)
    n: int = eqx.field(static=True)
    p: int = eqx.field(static=True)
    sigma_min_J0: Float[Array, ""]
    sigma_A: Float[Array, ""]
    initial_residual: Float[Array, ""]
    pl_constant: Float[Array, ""]
    effective_residual: Float[Array, ""]
    lip_threshold: Float[Array, ""]
    R_prime: Float[Array, ""]
    radius: Float[Array, ""]
    lip_lower: Float[Array, ""]
    lip_upper: Float[Array, ""]
    rate: Float[Array, ""]
    theta1: Float[Array, " p"]
    theta2: Float[Array, " p"]
    v: Float[Array, " p"]
    verdict: str = eqx.field(static=True)
    upper_bound: str = eqx.field(static=True)
    sigma_min_method: str = eqx.field(static=True)
    undecided: str | None = eqx.field(static=True)
    title: ClassVar[str] = "Generic Theorem 1(i) certificate"

    def rows(self) -> list[tuple[str, str, object]]:
        """`(symbol, meaning, value)` rows."""
        return [
            ("m, n, p", "measurements, outputs, parameters", f"{self.m}, {self.n}, {self.p}"),
            ("σ_A", "smallest non-zero singular value of A", self.sigma_A),
            ("σ_min(J0)", f"smallest singular value of J(θ0) ({self.sigma_min_method})", self.sigma_min_J0),
            ("||y(0) − y||", "initial residual", self.initial_residual),
            *self.loss_rows(),
            ("Lip threshold", "(5) holds iff Lip(J) < σ_min(J0)² σ_A / (4ρ0)", self.lip_threshold),
            ("R'", "Lemma 1: 2ρ0 / (σ_A σ_min(J0))", self.R_prime),
            ("radius", "ball of the Lipschitz bounds", self.radius),
            ("Lip(J) ≥", "attained by a pair in the ball", self.lip_lower),
            ("Lip(J) ≤", f"upper bound ({self.upper_bound})", self.lip_upper),
            ("verdict", "condition (5)", self.verdict),
            ("rate (8)", "μ σ_min(J0)² σ_A² / 4, if certified", self.rate),
        ]  # fmt: skip


# Arguments unannotated: bad types get the messages below, which name them.
def generic_certificate(
    net,
    problem,
    *,
    radius=None,
    num_restarts=8,
    steps=200,
    seed=0,
    dense_limit=DENSE_JACOBIAN_LIMIT,
) -> GenericCertificate:
    """Decide condition (5) of Theorem 1(i) for any generator `net` at its
    current parameters θ0 on `problem`: a [`dipflow.GenericCertificate`][].

    **Arguments:**

    - `net`: an [`dipflow.AbstractGenerator`][], or any Equinox module whose
      no-argument `__call__` returns the signal (all its float arrays train).
    - `problem`: a [`dipflow.InverseProblem`][] with `n` columns.
    - `radius`: the ball `B(θ0, radius)` on which Lip(J) is bounded; default
      `R'` of Lemma 1, the ball the argument needs (see
      [`dipflow.GenericCertificate`][]). A ball smaller than `R'` can refute but
      not certify.
    - `num_restarts`, `steps`, `seed`: the adversarial search for `lip_lower`.
    - `dense_limit`: the most entries `n·p` for which J is formed and σ_min(J0)
      taken from its SVD; above it σ_min(J0) = sqrt(λ_min(J Jᵀ)), with `J Jᵀ`
      built column by column from `n` vjp/jvp pairs (memory O(n² + p), exact up
      to the round-off of squaring: an absolute error ~ eps ||J||² on σ_min²).

    **The lower bound.** Projected gradient ascent (optax Adam, step `0.1·radius`
    in norm, cosine decay) on `||(J(θ1) − J(θ2)) v||² / ||θ1 − θ2||²` over θ1, θ2
    in the ball, with `v` a unit vector kept on the top right singular vector of
    `J(θ1) − J(θ2)` by one power iteration (jvp and vjp) per step. Restarts
    alternate close pairs (`||θ1 − θ2|| = radius/100`) and far ones; the first
    starts at θ0. Every value it returns is attained by a pair in the ball and a
    unit `v`, so it is a valid lower bound, whatever the search converged to.

    **The upper bounds.** For the paper's [`dipflow.TwoLayerDIP`][] (trained in
    `W` only): Lemma 3, `B D sqrt(n/k) ||u||²` (global). For the two-layer net
    with other trained layers and for [`dipflow.MLPDIP`][]: the layer-wise
    bound on the ball ([`dipflow.layerwise_lip_bound`][],
    [Mathematics](../mathematics.md#a-certificate-for-any-generator)); it is 0
    for the two-layer net trained in `V` only (g is linear in `V`) and
    `B ||u|| (c + sqrt(c² + 4)) / (2 √k)`, `c = ||u|| (max_i ||V0_i|| + radius)`,
    for `W` and `V`. Other generators, and non-smooth activations, have no
    derived bound (NaN): their certificate can refute (5) but not certify it.
    """
    if not (isinstance(net, eqx.Module) and callable(net)):
        raise TypeError(
            "`net` must be a generator: an Equinox module with a no-argument "
            f"`__call__` (e.g. dipflow.TwoLayerDIP), got {type(net).__name__}."
        )
    check_problem(problem)
    if radius is not None:
        nonnegative_scalar("radius", radius, strict=True)
    num_restarts = positive_int("num_restarts", num_restarts)
    steps = positive_int("steps", steps)
    seed = nonnegative_int("seed", seed)
    dense_limit = nonnegative_int("dense_limit", dense_limit)
    out = jax.eval_shape(net)
    if out.shape != (problem.n,):
        raise ValueError(
            f"`net` must output shape ({problem.n},) (n = columns of A), "
            f"got {out.shape}."
        )

    theta0, g = flat_generator(net)
    n, p = problem.n, theta0.size
    dtype = theta0.dtype
    if n * p <= dense_limit:
        sigma_J, method = sigma_min_jacobian(net), "svd"
    else:
        sigma_J, method = _sigma_min_matrix_free(net), "gram"
    sigma_A = problem.spectrum().sigma_A
    v0 = problem.forward(g(theta0))
    r0 = jnp.linalg.norm(v0 - problem.y)
    loss = LossTerms.of(problem, v0, dtype)
    rho0 = loss.effective_residual  # ||y(0) − y|| for squared error
    # σ_min(J0) = 0 makes the threshold 0 and R' infinite; ρ0 = 0 the reverse;
    # a loss without a PL constant makes both NaN (undecided, no search).
    threshold = sigma_J**2 * sigma_A / (4 * rho0)
    R_prime = 2 * rho0 / (sigma_A * sigma_J)
    ball = R_prime if radius is None else jnp.asarray(radius, dtype)

    if bool(jnp.isfinite(ball)) and float(ball) > 0:
        lower, t1, t2, v = _lip_search(
            net, ball, jax.random.key(seed), num_restarts, steps
        )
    else:
        lower = jnp.asarray(jnp.nan, dtype)
        t1 = t2 = v = jnp.full_like(theta0, jnp.nan)
    upper, which = lip_upper_bound(net, ball)

    if loss.undecided is not None:
        verdict = "undecided"
    elif float(sigma_J) == 0.0 or bool(lower > threshold):
        verdict = "refuted"
    elif bool(upper < threshold) and bool(ball >= R_prime):
        verdict = "certified"
    else:
        verdict = "undecided"
    return GenericCertificate(
        m=problem.m,
        n=n,
        p=p,
        sigma_min_J0=sigma_J,
        sigma_A=sigma_A,
        initial_residual=r0,
        pl_constant=loss.pl_total / problem.m,
        effective_residual=rho0,
        lip_threshold=threshold,
        R_prime=R_prime,
        radius=ball,
        lip_lower=lower,
        lip_upper=jnp.asarray(upper, dtype),
        rate=sigma_J**2 * sigma_A**2 / (4 * (problem.m / loss.pl_total)),
        theta1=t1,
        theta2=t2,
        v=v,
        verdict=verdict,
        upper_bound=which,
        sigma_min_method=method,
        undecided=loss.undecided,
    )


def lip_upper_bound(net, radius) -> tuple[Float[Array, ""], str]:
    """An upper bound of Lip(J) on `B(θ0, radius)` and its name, or NaN and
    `"none"` where none is derived (see [`dipflow.generic_certificate`][])."""
    if isinstance(net, TwoLayerDIP) and net.paper_model:
        return jnp.asarray(lipschitz_bound(net)), "Lemma 3"
    bound = layerwise_lip_bound(net, radius)
    if math.isnan(bound):
        return jnp.asarray(jnp.nan), "none"
    return jnp.asarray(bound), "layer-wise"


@eqx.filter_jit
def _sigma_min_matrix_free(net):
    theta0, g = flat_generator(net)
    _, pullback = jax.vjp(g, theta0)

    def gram_column(e):
        return jax.jvp(g, (theta0,), pullback(e))[1]

    n = jax.eval_shape(g, theta0).shape[0]
    if theta0.size < n:
        return jnp.zeros((), theta0.dtype)  # J cannot have rank n
    # One column of J Jᵀ at a time: memory O(n² + p), never n × p.
    G = jax.lax.map(gram_column, jnp.eye(n, dtype=theta0.dtype))
    lam = jnp.linalg.eigvalsh((G + G.T) / 2)[0]
    return jnp.sqrt(jnp.maximum(lam, 0.0))


def _tree_norm(a):
    return jnp.sqrt(tree_vdot(a, a))


@eqx.filter_jit
def _lip_search(net, radius, key, num_restarts: int, steps: int):
    # The search runs on the trained parameters' own pytree (the flat θ of the
    # docstring only at its ends): flattening would copy every layer out of θ
    # at each jvp and vjp, and back into one vector at each gradient.
    params, static = partition(net)
    theta0, unravel = ravel_pytree(params)
    p = theta0.size
    dtype = theta0.dtype
    tiny = jnp.finfo(dtype).tiny

    def g(ps):
        return eqx.combine(ps, static)()

    def diff(t1, t2, v):  # (J(θ1) − J(θ2)) v
        return jax.jvp(g, (t1,), (v,))[1] - jax.jvp(g, (t2,), (v,))[1]

    def diff_t(t1, t2, w):  # (J(θ1) − J(θ2))ᵀ w
        return tree_sub(jax.vjp(g, t1)[1](w)[0], jax.vjp(g, t2)[1](w)[0])

    def power(t1, t2, v):
        v = diff_t(t1, t2, diff(t1, t2, v))
        scale = 1 / jnp.maximum(_tree_norm(v), tiny)
        return jax.tree.map(lambda x: x * scale, v)

    def ratio2(ts, v):
        t1, t2 = ts
        gap = tree_sub(t1, t2)
        return jnp.sum(diff(t1, t2, v) ** 2) / tree_vdot(gap, gap)

    # Strictly inside, so that round-off in the norm cannot leave the ball.
    inner = radius * (1 - 16 * jnp.finfo(dtype).eps)

    def project(t):
        shrink = jnp.minimum(1.0, inner / _tree_norm(tree_sub(t, params)))
        return jax.tree.map(lambda x, x0: x0 + (x - x0) * shrink, t, params)

    def unit(x):
        return x / jnp.linalg.norm(x)

    schedule = optax.cosine_decay_schedule(0.1 * radius / math.sqrt(p), steps)
    opt = optax.adam(schedule)

    def run(i, key):
        k1, k2, k3, k4, k5 = jax.random.split(key, 5)
        s1, s2 = jax.random.uniform(k4, (2,), dtype)
        t1 = theta0 + jnp.where(i == 0, 0.0, inner * s1) * unit(
            jax.random.normal(k1, (p,), dtype)
        )
        close = t1 + 0.01 * radius * unit(jax.random.normal(k2, (p,), dtype))
        far = theta0 + inner * s2 * unit(jax.random.normal(k3, (p,), dtype))
        t1, t2 = unravel(t1), project(unravel(jnp.where(i % 2 == 0, close, far)))
        v = unravel(unit(jax.random.normal(k5, (p,), dtype)))

        def step(carry, _):
            ts, v, state, best = carry
            v = power(*ts, v)
            value, grads = jax.value_and_grad(ratio2)(ts, v)
            # The value is attained by (ts, v): keep the best triple seen.
            best = jax.tree.map(
                lambda b, c: jnp.where(value > best[0], c, b), best, (value, *ts, v)
            )
            updates, state = opt.update(jax.tree.map(jnp.negative, grads), state)
            ts = tuple(project(t) for t in optax.apply_updates(ts, updates))
            return (ts, v, state, best), None

        ts = (t1, t2)
        best = (jnp.zeros((), dtype), t1, t2, v)
        (_, _, _, best), _ = jax.lax.scan(
            step, (ts, v, opt.init(ts), best), None, length=steps
        )
        return best

    starts = (jnp.arange(num_restarts), jax.random.split(key, num_restarts))
    if on_cpu():
        # One restart after another: batched, their matrix-vector products
        # become batched products of distinct matrices, which XLA's CPU
        # backend runs slower than a loop of plain ones.
        values, t1s, t2s, vs = jax.lax.map(lambda a: run(*a), starts)
    else:
        values, t1s, t2s, vs = jax.vmap(run)(*starts)
    j = jnp.argmax(values)
    t1, t2, v = jax.tree.map(lambda a: a[j], (t1s, t2s, vs))
    polished = jax.lax.fori_loop(0, _POLISH_ITERS, lambda _, v: power(t1, t2, v), v)
    better = ratio2((t1, t2), polished) > values[j]
    v = jax.tree.map(lambda a, b: jnp.where(better, a, b), polished, v)
    flat = (ravel_pytree(t)[0] for t in (t1, t2, v))
    return jnp.sqrt(ratio2((t1, t2), v)), *flat
