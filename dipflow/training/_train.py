"""One entry for every trainer, [`dipflow.train`][], and the named trainers
(`gradient_descent`, `heavy_ball`, `nesterov`, `optimize`, `gradient_flow`,
`inertial_flow`) as thin wrappers around it."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike

from .._core._checks import (
    is_concrete,
    nonnegative_int,
    nonnegative_scalar,
    positive_int,
)
from ..problems._problems import InverseProblem
from ._descent import descend, loops_are_slow
from ._flows import integrate
from ._save import SaveAt
from ._setup import check_pair, make_dynamics, state_dtype
from ._solution import Solution
from ._trainers import (
    AbstractDiscreteTrainer,
    AbstractTrainer,
    GradientDescent,
    GradientFlow,
    HeavyBall,
    InertialFlow,
    Nesterov,
    Optax,
)

# The step budget of a discrete trainer and the solver budget of a flow.
DEFAULT_MAX_STEPS = 25_000
DEFAULT_SOLVER_STEPS = 1_000_000


def train(
    net,
    problem: InverseProblem,
    trainer: AbstractTrainer,
    *,
    max_steps: int | None = None,
    t1: float | ArrayLike | None = None,
    tol: float | ArrayLike = 1e-7,
    save: SaveAt | None = None,
    trainable=None,
    reduced: bool | None = None,
) -> Solution:
    """Train `net` on `problem` with `trainer`: the one entry of every trainer.

    Stops at the first iterate (or accepted solver step) whose excess loss
    `L − ℓ*` is `< tol`, when the budget runs out, or when the loss becomes
    non-finite (`RESULTS.diverged`, or `RESULTS.outside_domain` where the
    measurement left the loss's domain): a result and not an exception, so one
    bad seed does not stop a `vmap` batch.

    **Arguments:**

    - `net`: the generator (e.g. [`dipflow.TwoLayerDIP`][]); any Equinox module
      with a no-argument `__call__` returning a vector of size `n`.
    - `problem`: the [`dipflow.InverseProblem`][] (with its loss).
    - `trainer`: a discrete trainer ([`dipflow.GradientDescent`][],
      [`dipflow.HeavyBall`][], [`dipflow.Nesterov`][], [`dipflow.Optax`][]) or
      a flow ([`dipflow.GradientFlow`][], [`dipflow.InertialFlow`][]).
    - `max_steps`: a discrete trainer's step budget (default 25 000); a flow's
      solver step budget (default 1 000 000).
    - `t1`: a flow's time horizon, > 0 (required for flows, refused otherwise).
    - `tol`: the tolerance on the excess loss, ≥ 0 (`0` never stops early).
    - `save`: what to save along the run, a [`dipflow.SaveAt`][].
    - `trainable`: an Equinox filter spec overriding `net.trainable_filter()`.
    - `reduced`: run in the generator's exact reduced state where one exists
      (default: yes, for trainers that keep it); `False` forces the full path.

    **Returns:** a [`dipflow.Solution`][]. Works under `jax.jit` and `jax.vmap`.
    """
    if not isinstance(trainer, AbstractTrainer):
        raise TypeError(
            "`trainer` must be a dipflow trainer (GradientDescent(step_size), "
            "HeavyBall, Nesterov, Optax(optimizer), GradientFlow(), InertialFlow(alpha)), "
            f"got {type(trainer).__name__}."
        )
    save = SaveAt() if save is None else save
    if not isinstance(save, SaveAt):
        raise TypeError(f"`save` must be a dipflow.SaveAt, got {type(save).__name__}.")
    check_pair(net, problem)
    nonnegative_scalar("tol", tol)
    if not trainer.keeps_reductions:
        if reduced:
            raise ValueError(
                f"`reduced=True`: {type(trainer).__name__} has no exact reduction "
                "(its update is not a linear combination of past gradients)."
            )
        reduced = False
    if isinstance(trainer, AbstractDiscreteTrainer):
        return _descend(
            net, problem, trainer, max_steps, t1, tol, save, trainable, reduced
        )
    return _integrate(
        net, problem, trainer, max_steps, t1, tol, save, trainable, reduced
    )


def _descend(net, problem, trainer, max_steps, t1, tol, save, trainable, reduced):
    if t1 is not None:
        raise ValueError(
            f"`t1` is a flow's horizon; {type(trainer).__name__} takes `max_steps`."
        )
    max_steps = nonnegative_int(
        "max_steps", DEFAULT_MAX_STEPS if max_steps is None else max_steps
    )
    save_every = max(1, max_steps // 1000) if save.every is None else save.every
    dynamics = make_dynamics(
        net, problem, trainable=trainable, reduced=reduced, **save.dynamics_flags()
    )
    dtype = state_dtype(dynamics)
    args = (dynamics, trainer.in_dtype(dtype), jnp.asarray(tol, dtype))
    # One loop; its form follows the backend and the network: inside
    # `lax.while_loop`, or one compiled call per step where loops are slow
    # (convolutions on a CPU) and nothing is traced (no enclosing jit or vmap).
    eager = all(
        is_concrete(a)
        for a in jax.tree_util.tree_leaves(eqx.filter(args, eqx.is_array))
    )
    stepwise = eager and loops_are_slow(dynamics)
    return descend(*args, max_steps, save_every, stepwise=stepwise)


def _integrate(net, problem, trainer, max_steps, t1, tol, save, trainable, reduced):
    if t1 is None:
        raise ValueError(f"{type(trainer).__name__} needs `t1`, the time horizon.")
    nonnegative_scalar("t1", t1, strict=True)
    max_steps = positive_int(
        "max_steps", DEFAULT_SOLVER_STEPS if max_steps is None else max_steps
    )
    dynamics = make_dynamics(
        net, problem, trainable=trainable, reduced=reduced, **save.dynamics_flags()
    )
    dtype = state_dtype(dynamics)
    save_ts = save.ts
    if save_ts is None:
        if not is_concrete(t1):
            raise ValueError("pass `save_ts` explicitly when `t1` is traced.")
        save_ts = np.linspace(0.0, float(t1), 101)
    save_ts = jnp.asarray(save_ts, dtype)
    if save_ts.ndim != 1 or save_ts.shape[0] == 0:
        raise ValueError(
            f"`save_ts` must be a non-empty 1-D array of times, got shape {save_ts.shape}."
        )
    if is_concrete(save_ts) and is_concrete(t1):
        ts = np.asarray(save_ts)
        if ts[0] < 0 or ts[-1] > float(t1) or np.any(np.diff(ts) < 0):
            raise ValueError(f"`save_ts` must be non-decreasing times in [0, t1={t1}].")
    field = trainer.in_dtype(dtype).field()
    return integrate(
        dynamics,
        field,
        jnp.asarray(t1, dtype),
        jnp.asarray(tol, dtype),
        save_ts,
        trainer.diffrax_solver(),
        trainer.controller(),
        None if trainer.dt0 is None else jnp.asarray(trainer.dt0, dtype),
        max_steps,
    )


# -- the named trainers: thin wrappers with their historical arguments -------------


def _train_named(
    trainer,
    net,
    problem,
    *,
    max_steps,
    tol,
    t1=None,
    save_every=None,
    save_ts=None,
    save_sigma_min,
    save_kernel_rate,
    save_signal_error,
    trainable,
    reduced=None,
    **hyper_parameters,  # the trainer's own, already in `trainer`
) -> Solution:
    """[`dipflow.train`][] from the arguments of a named trainer: its `save_*`
    flags become a [`dipflow.SaveAt`][], the others pass on as they are."""
    if save_every is not None:
        positive_int("save_every", save_every)
    save = SaveAt(
        every=save_every,
        ts=save_ts,
        sigma_min=save_sigma_min,
        kernel_rate=save_kernel_rate,
        signal_error=save_signal_error,
    )
    return train(net, problem, trainer, max_steps=max_steps, t1=t1, tol=tol,
                 save=save, trainable=trainable, reduced=reduced)  # fmt: skip


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
    """Gradient descent `θ ← θ − η ∇L(θ)` on the problem's loss: the
    explicit-Euler discretisation of the flow (3) with `dt = η`, so step `s` is
    flow time `s·η`. `train(net, problem, GradientDescent(step_size), ...)`.

    Stops at the first iterate whose excess loss is `< tol`, after `max_steps`
    updates, or when the loss becomes non-finite (`RESULTS.diverged`: a result
    and not an exception, so one diverging seed does not stop a `vmap` batch). A
    run whose budget ran out is `unstable` if its loss went up at some step (the
    mark of a step size beyond `2/λ_max`), else `max_steps`.

    **Arguments:**

    - `net`: the generator (e.g. [`dipflow.TwoLayerDIP`][]); any Equinox module
      with a no-argument `__call__` returning a vector of size `n`.
    - `problem`: the [`dipflow.InverseProblem`][].
    - `step_size`: η > 0.
    - `max_steps`: the most updates to do.
    - `tol`: the tolerance on the excess loss, ≥ 0 (`0` never stops early).
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
    return _train_named(GradientDescent(step_size), **locals())


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

    with `t = 0` at the start; `train(net, problem, HeavyBall(step_size,
    momentum), ...)`. Stops as [`dipflow.gradient_descent`][] does. A run whose
    budget ran out is `unstable` when the step size is beyond the method's
    stability limit at θ0 (`stats["stability_ratio"] ≥ 2`, see
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
    return _train_named(HeavyBall(step_size, momentum), **locals())


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
    momentum it is about to receive; `train(net, problem, Nesterov(step_size,
    momentum), ...)`. Stopping, results and arguments as in
    [`dipflow.heavy_ball`][]; its stability limit is lower
    ([`dipflow.stability_limit`][]).
    """
    return _train_named(Nesterov(step_size, momentum), **locals())


def optimize(
    net,
    problem: InverseProblem,
    optimizer,  # an optax.GradientTransformation, checked by Optax
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
    practice), `optax.sgd(η, momentum)`, …; `train(net, problem,
    Optax(optimizer), ...)`.

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
    return _train_named(Optax(optimizer), **locals())


def gradient_flow(
    net,
    problem: InverseProblem,
    t1: float | ArrayLike,
    tol: float | ArrayLike = 1e-7,
    save_ts=None,
    *,
    solver=None,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    dt0: float | None = None,
    stepsize_controller=None,
    max_steps: int = 1_000_000,
    save_sigma_min: bool = False,
    save_kernel_rate: bool = False,
    save_signal_error: bool | None = None,
    trainable=None,
    reduced: bool | None = None,
) -> Solution:
    """Integrate the gradient flow (3), `θ'(t) = −∇L(θ(t))`, with diffrax;
    `train(net, problem, GradientFlow(...), t1=t1, ...)`.

    The default solver is `diffrax.Tsit5` with a PID step-size controller:
    θ has `k·d` entries, so implicit (stiff) solvers, which solve linear systems
    of that size, cost far more than they save; along a converging flow the
    dynamics become a linear contraction, on which an adaptive explicit solver
    settles at its stability limit, comparable to the largest stable GD step.
    Passing `solver=diffrax.Euler()`, `dt0=η` and `ConstantStepSize()` gives
    gradient descent with step η.

    The solve stops, through a `diffrax.Event`, at the first accepted step whose
    excess loss is `< tol`.

    **Arguments:**

    - `net`, `problem`, `trainable`, `reduced`, `save_sigma_min`,
      `save_kernel_rate`, `save_signal_error`: as in
      [`dipflow.gradient_descent`][]. On the reduced path the solver integrates
      `z = W u` (so `rtol`/`atol` apply to z).
    - `t1`: the time horizon, > 0.
    - `tol`: the tolerance on the excess loss, ≥ 0 (`0` never stops early).
    - `save_ts`: times in `[0, t1]` at which to save (default: 101 equispaced).
    - `solver`, `rtol`, `atol`, `dt0`, `stepsize_controller`: diffrax settings;
      `stepsize_controller` defaults to `PIDController(rtol, atol)`.
    - `max_steps`: the solver's step budget (`RESULTS.solver_max_steps` when
      it runs out before `t1`).

    **Returns:** a [`dipflow.Solution`][]. Works under `jax.jit` and `jax.vmap`.
    """
    return _train_named(
        GradientFlow(solver, rtol, atol, dt0, stepsize_controller), **locals()
    )


def inertial_flow(
    net,
    problem: InverseProblem,
    *,
    alpha: float | ArrayLike,
    beta: float | ArrayLike = 0.0,
    t1: float | ArrayLike,
    tol: float | ArrayLike = 1e-7,
    save_ts=None,
    solver=None,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    dt0: float | None = None,
    stepsize_controller=None,
    max_steps: int = 1_000_000,
    save_sigma_min: bool = False,
    save_kernel_rate: bool = False,
    save_signal_error: bool | None = None,
    trainable=None,
    reduced: bool | None = None,
) -> Solution:
    """Integrate the inertial flow with Hessian-driven damping,

        θ'' + α θ' + β d/dt ∇L(θ) + ∇L(θ) = 0,   θ(0) = θ0,  θ'(0) = 0,

    of arXiv 2506.02986, with diffrax; `train(net, problem, InertialFlow(alpha,
    beta, ...), t1=t1, ...)`. It is solved in a first-order form that needs no
    Hessian: with `v = θ' + β ∇L(θ)`,

        θ' = v − β ∇L(θ),   v' = −α v + (αβ − 1) ∇L(θ),   v(0) = β ∇L(θ0).

    `β = 0` is the heavy-ball ODE. For the two-layer net trained in `W`, both
    right-hand sides are combinations of rank-one gradients `c uᵀ`, so the
    exact reduction holds: the state is `(z, v_z)`, two k-vectors.

    **Arguments:**

    - `alpha`: the viscous damping α ≥ 0.
    - `beta`: the Hessian-driven damping β ≥ 0.
    - the others as in [`dipflow.gradient_flow`][].

    **Returns:** a [`dipflow.Solution`][] (its `net` at the final θ). Works
    under `jax.jit` and `jax.vmap`.
    """
    return _train_named(
        InertialFlow(alpha, beta, solver, rtol, atol, dt0, stepsize_controller),
        **locals(),
    )
