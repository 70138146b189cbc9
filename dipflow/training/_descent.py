"""The discrete trainers: gradient descent, heavy ball, Nesterov and any optax
optimizer, through one loop.

Each is an optax `GradientTransformation` applied to the gradient of the state
the run moves in. On the exact reduced path (the two-layer net trained in W)
that state is `z = W u` and its "gradient" is `−ż` of the reduced flow,
`||u||² c` with `∇_W L = c uᵀ`. For a transformation whose update is a linear
combination of past gradients (plain GD, heavy ball, Nesterov), the W-update is
then `(update in z) uᵀ / ||u||²` exactly, so the reduced run is the full run;
Adam's element-wise scaling is not linear, so [`dipflow.optimize`][] runs on the
full parameters.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, ArrayLike

from .._core._checks import (
    is_concrete,
    nonnegative_int,
    nonnegative_scalar,
    positive_int,
)
from ..problems._problems import InverseProblem
from ._dynamics import AbstractDynamics
from ._setup import check_pair, make_dynamics, state_dtype
from ._solution import RESULTS, Solution, Trajectory

# A loss increase breaks monotonicity when it exceeds this many ulps of the
# previous loss plus one ulp of the initial loss: the slack absorbs round-off,
# including the noise floor of a loss that has converged to ~0.
_MONOTONE_SLACK = 64

# The discrete methods with a step size (and so a flow time `step · η`).
LINEAR_METHODS = ("gd", "heavy_ball", "nesterov")


def stability_limit(method: str, momentum=0.0):
    """The largest stable `η λ` of a method on a quadratic of curvature λ:
    `2` for gradient descent, `2(1 + μ)` for heavy ball, `2(1 + μ)/(1 + 2μ)` for
    Nesterov (optax's form, `t ← g + μ t`, `θ ← θ − η (g + μ t)`). Derived from
    the 2 × 2 iteration matrix of each method on `L = λ θ²/2`, whose spectral
    radius is < 1 exactly below these limits (tests check it numerically)."""
    if method == "gd":
        return 2.0
    if method == "heavy_ball":
        return 2 * (1 + momentum)
    if method == "nesterov":
        return 2 * (1 + momentum) / (1 + 2 * momentum)
    raise ValueError(f"`method` must be one of {LINEAR_METHODS}, got {method!r}.")


def stability_ratio(step_size, curvature, method: str = "gd", momentum=0.0):
    """`2 η λ_max / limit`: the step size relative to the stability limit of the
    method (see [`dipflow.stability_limit`][]) on the Gauss–Newton curvature
    `λ_max(A J Jᵀ Aᵀ)/m` at θ0, scaled so that every method is stable near a
    minimum below 2 (for gradient descent it is `η λ_max`)."""
    return 2 * step_size * curvature / stability_limit(method, momentum)


class _Discrete(eqx.Module):
    """A discrete method as a value: its optax transformation is built inside
    the compiled loop from array hyper-parameters, so that calls with other step
    sizes or momenta reuse one compilation."""

    method: str = eqx.field(static=True)
    step_size: Array | None
    momentum: Array | None
    optimizer: optax.GradientTransformation | None

    def transformation(self) -> optax.GradientTransformation:
        """The optax transformation, and whether it is fed the descent direction
        `−∇L` rather than the gradient. The linear methods are: with the step
        negated, `sgd(−η, μ)` on `−∇L` is `sgd(η, μ)` on `∇L` exactly, and saves
        two negations per step (which show on small reduced cells)."""
        if self.method == "optax":
            return self.optimizer
        if self.method == "gd":
            return optax.sgd(-self.step_size)
        return optax.sgd(
            -self.step_size, self.momentum, nesterov=self.method == "nesterov"
        )

    @property
    def feeds_descent(self) -> bool:
        return self.method != "optax"

    def time_per_step(self, dtype):
        return jnp.ones((), dtype) if self.step_size is None else self.step_size

    def stability_ratio(self, dynamics: AbstractDynamics, dtype):
        if self.method == "optax":
            return jnp.full((), jnp.nan, dtype)
        momentum = 0.0 if self.momentum is None else self.momentum
        return stability_ratio(
            self.step_size, dynamics.curvature(), self.method, momentum
        )

    def result(self, excess, tol, monotone, ratio, in_domain) -> RESULTS:
        """converged / max_steps (stalled) / unstable / diverged / outside_domain,
        from the excess loss `L − ℓ*`. Gradient descent is unstable when its loss
        went up at some step; momentum methods are not monotone when stable, so
        for them it is the step size beyond the limit."""
        if self.method == "gd":
            stable = monotone
        elif self.method == "optax":
            stable = jnp.asarray(True)
        else:
            stable = ratio < 2
        ran_out = RESULTS.where(stable, RESULTS.max_steps, RESULTS.unstable)
        broke = RESULTS.where(in_domain, RESULTS.diverged, RESULTS.outside_domain)
        finite = RESULTS.where(jnp.isfinite(excess), ran_out, broke)
        return RESULTS.where(excess < tol, RESULTS.converged, finite)


def _loop(
    dynamics: AbstractDynamics,
    method: _Discrete,
    tol,
    max_steps,
    with_signal=False,
    L0=None,
):
    """The initial state `(step, x, opt_state, L, direction, monotone)`, the
    stopping rule and one step (with the monotonicity test). `direction` is what
    the transformation is fed: `−∇L` for the linear methods, else `∇L`.
    `with_signal`: one step returns `(state, g(θ) at the new state)`, the
    signal of the loss's own forward pass. `L0`: the loss at θ0 (the
    monotonicity test's scale) when known; then the initial state is not
    built (None in its place), so that a step compiled alone does not
    evaluate the network at θ0."""
    tx = method.transformation()

    def direction(descent):
        if method.feeds_descent:
            return descent
        return jax.tree_util.tree_map(jnp.negative, descent)

    x0 = None
    if L0 is None:
        x0 = dynamics.initial_state()
        L0, descent0 = dynamics.loss_and_descent(x0)
    eps = jnp.finfo(L0.dtype).eps
    # The tolerance applies to the excess L − ℓ* (ℓ* = 0 for squared error).
    floor = dynamics.loss_floor()

    def running(state):
        step, _, _, L, _, _ = state
        return (step < max_steps) & (L - floor >= tol) & jnp.isfinite(L)

    def one_step(state):
        step, x, opt_state, L_prev, grad, monotone = state
        updates, opt_state = tx.update(grad, opt_state, x)
        x = optax.apply_updates(x, updates)
        if with_signal:
            L, descent, signal = dynamics.loss_descent_and_signal(x)
        else:
            L, descent = dynamics.loss_and_descent(x)
        monotone = monotone & ~(L > L_prev * (1 + _MONOTONE_SLACK * eps) + eps * L0)
        state = (step + 1, x, opt_state, L, direction(descent), monotone)
        return (state, signal) if with_signal else state

    if x0 is None:
        return None, running, one_step
    state = (
        jnp.asarray(0),
        x0,
        tx.init(x0),
        L0,
        direction(descent0),
        jnp.asarray(True),
    )
    return state, running, one_step


def _saving_loop(dynamics, running, one_step, state, save_every, num_saved):
    """Run to the end, saving the diagnostics at iterates `0, save_every, …`."""

    def until_next_save(carry):
        # Inner loop to the next save point, so that diagnostics are computed once
        # per save interval even when vmap turns the save condition into a select.
        state, saved = carry
        stop_at = (state[0] // save_every + 1) * save_every
        state = jax.lax.while_loop(
            lambda s: running(s) & (s[0] < stop_at), one_step, state
        )
        step, x = state[0], state[1]
        idx = jnp.where(step % save_every == 0, step // save_every, num_saved)
        saved = jax.tree_util.tree_map(
            lambda buf, v: buf.at[idx].set(v, mode="drop"),  # out of range: dropped
            saved,
            dynamics.diagnostics(x),
        )
        return state, saved

    saved = jax.tree_util.tree_map(
        lambda v: jnp.full((num_saved,), jnp.nan, v.dtype).at[0].set(v),
        dynamics.diagnostics(state[1]),
    )
    return jax.lax.while_loop(
        lambda carry: running(carry[0]), until_next_save, (state, saved)
    )


@eqx.filter_jit
def descend(
    dynamics: AbstractDynamics,
    method: _Discrete,
    tol,
    max_steps: int,
    save_every: int | None,
) -> Solution:
    """The one loop of every discrete trainer. `save_every=None` saves nothing
    (one flat loop: what studies run); else the diagnostics every `save_every`
    iterates."""
    dtype = tol.dtype
    state, running, one_step = _loop(dynamics, method, tol, max_steps)
    if save_every is None:
        state = jax.lax.while_loop(running, one_step, state)
        trajectory = None
    else:
        num_saved = max_steps // save_every + 1
        state, saved = _saving_loop(
            dynamics, running, one_step, state, save_every, num_saved
        )
        steps = jnp.arange(num_saved) * save_every
        ts = steps * method.time_per_step(dtype)
        trajectory = Trajectory.from_diagnostics(ts, steps, saved)
    step, x, _, L, _, monotone = state
    ratio = method.stability_ratio(dynamics, dtype)
    return Solution(
        net=dynamics.net(x),
        final_loss=L,
        num_steps=step,
        t_final=step * method.time_per_step(dtype),
        result=method.result(
            L - dynamics.loss_floor(), tol, monotone, ratio, dynamics.in_domain(x)
        ),
        trajectory=trajectory,
        stats={"monotone": monotone & jnp.isfinite(L), "stability_ratio": ratio},
    )


# -- the public trainers ------------------------------------------------------------


def check_momentum(momentum):
    nonnegative_scalar("momentum", momentum)
    if is_concrete(momentum) and float(momentum) >= 1:
        raise ValueError(f"`momentum` must be in [0, 1), got {momentum!r}.")
    return momentum


def _train(
    method: str,
    *,
    net,
    problem,
    step_size=None,
    momentum=None,
    optimizer=None,
    max_steps,
    tol,
    save_every,
    **choices,
) -> Solution:
    check_pair(net, problem)
    if step_size is not None:
        nonnegative_scalar("step_size", step_size, strict=True)
    if momentum is not None:
        check_momentum(momentum)
    nonnegative_scalar("tol", tol)
    max_steps = nonnegative_int("max_steps", max_steps)
    if save_every is None:
        save_every = max(1, max_steps // 1000)
    save_every = positive_int("save_every", save_every)
    # `choices`: trainable, reduced and the save_* flags, as make_dynamics takes them.
    dynamics = make_dynamics(net, problem, **choices)
    dtype = state_dtype(dynamics)

    def arr(v):
        return None if v is None else jnp.asarray(v, dtype)

    spec = _Discrete(method, arr(step_size), arr(momentum), optimizer)
    return descend(dynamics, spec, jnp.asarray(tol, dtype), max_steps, save_every)


def gradient_descent(
    net,
    problem: InverseProblem,
    step_size: float | ArrayLike = 1.0,
    max_steps: int = 25_000,
    tol: float | ArrayLike = 1e-7,
    *,
    save_every: int | None = None,
    save_sigma_min: bool = False,
    save_kernel_rate: bool = False,
    save_signal_error: bool | None = None,
    trainable=None,
    reduced: bool | None = None,
) -> Solution:
    """Gradient descent `θ ← θ − η ∇L(θ)` on the loss (2): the explicit-Euler
    discretisation of the flow (3) with `dt = η`, so step `s` is flow time `s·η`.

    Stops at the first iterate whose loss is `< tol`, after `max_steps` updates,
    or when the loss becomes non-finite (`RESULTS.diverged`: a result and not an
    exception, so one diverging seed does not stop a `vmap` batch). A run whose
    budget ran out is `unstable` if its loss went up at some step (the mark of
    a step size beyond `2/λ_max`), else `max_steps`.

    **Arguments:**

    - `net`: the generator (e.g. [`dipflow.TwoLayerDIP`][]); any Equinox module
      with a no-argument `__call__` returning a vector of size `n`.
    - `problem`: the [`dipflow.InverseProblem`][].
    - `step_size`: η > 0.
    - `max_steps`: the most updates to do.
    - `tol`: the loss tolerance, ≥ 0 (`0` never stops early).
    - `save_every`: save diagnostics every this many iterates, iterate 0
      included (default: about 1000 saved points over `max_steps`).
    - `save_sigma_min`, `save_kernel_rate`, `save_signal_error`: also save
      σ_min(J(θ)), `λ_min(A J Jᵀ Aᵀ)/m` on Im(A), `||g − x̄||` (the last by
      default when `x_true` is known).
    - `trainable`: an Equinox filter spec overriding `net.trainable_filter()`.
    - `reduced`: run in the generator's exact reduced state (for a `TwoLayerDIP`:
      `z = W u`, O(mk) per step, when only `W` trains; `z` and `A V/√k`,
      O(mk + m²), when `V` trains too). Default: yes wherever one exists;
      `False` forces the full path.

    **Returns:** a [`dipflow.Solution`][]; `stats["stability_ratio"]` is
    `η · λ_max` of the Gauss–Newton curvature `A J Jᵀ Aᵀ / m` at θ0 (stable near
    a minimum only below 2). Works under `jax.jit` and `jax.vmap`.
    """
    return _train("gd", **locals())


def heavy_ball(
    net,
    problem: InverseProblem,
    step_size: float | ArrayLike = 1.0,
    momentum: float | ArrayLike = 0.9,
    max_steps: int = 25_000,
    tol: float | ArrayLike = 1e-7,
    *,
    save_every: int | None = None,
    save_sigma_min: bool = False,
    save_kernel_rate: bool = False,
    save_signal_error: bool | None = None,
    trainable=None,
    reduced: bool | None = None,
) -> Solution:
    """Heavy-ball momentum (Polyak), `optax.sgd(step_size, momentum, nesterov=False)`:

        t ← ∇L(θ) + μ t,   θ ← θ − η t

    with `t = 0` at the start. Stops as [`dipflow.gradient_descent`][] does. A
    run whose budget ran out is `unstable` when the step size is beyond the
    method's stability limit at θ0 (`stats["stability_ratio"] ≥ 2`, see
    [`dipflow.stability_ratio`][]); a stable momentum run's loss need not
    decrease at every step, so `stats["monotone"]` is reported but does not
    decide.

    **Arguments:**

    - `step_size`: η > 0.
    - `momentum`: μ in [0, 1).
    - `net`, `problem`, `max_steps`, `tol`, `save_every`, `save_sigma_min`,
      `save_kernel_rate`, `save_signal_error`, `trainable`, `reduced`: as in
      [`dipflow.gradient_descent`][] (the reduced path adds a k-vector of trace).

    **Returns:** a [`dipflow.Solution`][]. Works under `jax.jit` and `jax.vmap`.
    """
    return _train("heavy_ball", **locals())


def nesterov(
    net,
    problem: InverseProblem,
    step_size: float | ArrayLike = 1.0,
    momentum: float | ArrayLike = 0.9,
    max_steps: int = 25_000,
    tol: float | ArrayLike = 1e-7,
    *,
    save_every: int | None = None,
    save_sigma_min: bool = False,
    save_kernel_rate: bool = False,
    save_signal_error: bool | None = None,
    trainable=None,
    reduced: bool | None = None,
) -> Solution:
    """Nesterov momentum, `optax.sgd(step_size, momentum, nesterov=True)`:

        t ← ∇L(θ) + μ t,   θ ← θ − η (∇L(θ) + μ t)

    with `t = 0` at the start: the gradient is looked at once more, with the
    momentum it is about to receive. Stopping, results and arguments as in
    [`dipflow.heavy_ball`][]; its stability limit is lower
    ([`dipflow.stability_limit`][]).
    """
    return _train("nesterov", **locals())


def optimize(
    net,
    problem: InverseProblem,
    optimizer,  # an optax.GradientTransformation, checked below with a clear error
    *,
    max_steps: int = 25_000,
    tol: float | ArrayLike = 1e-7,
    save_every: int | None = None,
    save_sigma_min: bool = False,
    save_kernel_rate: bool = False,
    save_signal_error: bool | None = None,
    trainable=None,
) -> Solution:
    """Train with any optax optimizer: `optax.adam(1e-2)` (how DIP is trained in
    practice), `optax.sgd(η, momentum)`, …, on the loss (2).

    Runs on the full parameters: an optimizer's update need not be a linear
    combination of past gradients (Adam's is not), so the exact reduction of the
    two-layer net does not apply in general. For gradient descent, heavy ball
    and Nesterov on the reduced path use [`dipflow.gradient_descent`][],
    [`dipflow.heavy_ball`][], [`dipflow.nesterov`][].

    Stops as [`dipflow.gradient_descent`][] does; a run whose budget ran out is
    `max_steps` (no stability limit is known for a general optimizer, and
    `stats["stability_ratio"]` is NaN). The trajectory's `ts` are step numbers.

    **Arguments:**

    - `optimizer`: an `optax.GradientTransformation`. Reusing one object reuses
      its compilation.
    - `net`, `problem`, `max_steps`, `tol`, `save_every`, `save_sigma_min`,
      `save_kernel_rate`, `save_signal_error`, `trainable`: as in
      [`dipflow.gradient_descent`][].

    **Returns:** a [`dipflow.Solution`][]. Works under `jax.jit` and `jax.vmap`.
    """
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            "`optimizer` must be an optax.GradientTransformation (e.g. "
            f"optax.adam(1e-2)), got {type(optimizer).__name__}."
        )
    return _train("optax", reduced=False, **locals())
