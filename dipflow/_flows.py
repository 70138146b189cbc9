"""The gradient flow (3) `θ' = −∇L(θ)` through diffrax, and gradient descent as its
explicit-Euler discretisation, with stopping at a loss tolerance and saved
trajectories."""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from ._checks import is_concrete, nonnegative_int, nonnegative_scalar, positive_int
from ._dynamics import AbstractDynamics, FullDynamics
from ._jacobians import partition
from ._networks import TwoLayerDIP
from ._problems import InverseProblem
from ._reduced import ReducedDynamics, is_reducible

# Status codes, per run (and per item under vmap). `max_steps` means stalled:
# the budget ran out while the loss kept decreasing; `unstable` (gradient descent
# only) that it ran out with a loss sequence that went up at some step, the mark
# of a step size beyond the stability limit 2/λ_max.
CONVERGED, MAX_STEPS, DIVERGED, UNSTABLE = 0, 1, 2, 3
STATUS_NAMES = ("converged", "max_steps", "diverged", "unstable")

# A loss increase breaks monotonicity when it exceeds this many ulps of the
# previous loss plus one ulp of the initial loss: the slack absorbs round-off,
# including the noise floor of a loss that has converged to ~0.
_MONOTONE_SLACK = 64


def status_name(status) -> str | np.ndarray:
    """The status code(s) as names: `"converged"`, `"max_steps"`, `"diverged"`
    or `"unstable"`."""
    codes = np.asarray(status)
    names = np.asarray(STATUS_NAMES)[codes]
    return str(names) if names.ndim == 0 else names


def loss(net, problem: InverseProblem) -> Float[Array, ""]:
    """The loss (2): `L = ||A g(u, θ) − y||² / (2m)`."""
    r = problem.forward(net()) - problem.y
    return jnp.dot(r, r) / (2 * problem.m)


class Trajectory(eqx.Module):
    """Quantities saved along a run, one entry per saved time (NaN after the run
    stopped): the loss, the residual `||y(t) − y||`, the distance
    `||θ(t) − θ0||`, and, when requested, σ_min(J(θ(t))), the measurement-space
    rate `λ_min(K_A)/m` and the signal error `||g(t) − x̄||` (else `None`)."""

    ts: Float[Array, " s"]
    loss: Float[Array, " s"]
    residual: Float[Array, " s"]
    distance: Float[Array, " s"]
    sigma_min: Float[Array, " s"] | None
    kernel_rate: Float[Array, " s"] | None
    signal_error: Float[Array, " s"] | None


def _trajectory(ts, diag) -> Trajectory:
    return Trajectory(
        ts=ts,
        loss=diag["loss"],
        residual=diag["residual"],
        distance=diag["distance"],
        sigma_min=diag.get("sigma_min"),
        kernel_rate=diag.get("kernel_rate"),
        signal_error=diag.get("signal_error"),
    )


# -- argument checks (eager: before any compilation) -----------------------------------


def _check_pair(net, problem):
    if not isinstance(problem, InverseProblem):
        raise TypeError(
            f"`problem` must be a dipflow.InverseProblem, got {type(problem).__name__}."
        )
    if not isinstance(net, eqx.Module) or not callable(net):
        raise TypeError(
            f"`net` must be an Equinox module with a no-argument __call__, got {type(net).__name__}."
        )
    out = eqx.filter_eval_shape(net)
    if not hasattr(out, "shape") or tuple(out.shape) != (problem.n,):
        shape = getattr(out, "shape", out)
        raise ValueError(
            f"`net` must output a vector of shape ({problem.n},) (the number of columns of A), got {shape}."
        )


def _resolve_signal(save_signal_error, problem):
    if save_signal_error is None:
        return problem.x_true is not None
    if save_signal_error and problem.x_true is None:
        raise ValueError("`save_signal_error=True` needs a problem with `x_true`.")
    return bool(save_signal_error)


def make_dynamics(
    net,
    problem: InverseProblem,
    *,
    trainable=None,
    reduced: bool | None = None,
    save_sigma_min: bool = False,
    save_kernel_rate: bool = False,
    save_signal_error: bool | None = None,
) -> AbstractDynamics:
    """The state space a run integrates in: the exact reduced dynamics in
    `z = W u` for a [`dipflow.TwoLayerDIP`][] trained in `W` only (unless
    `reduced=False`), the full parameters θ otherwise."""
    flags = dict(
        with_sigma_min=bool(save_sigma_min),
        with_signal=_resolve_signal(save_signal_error, problem),
        with_kernel=bool(save_kernel_rate),
    )
    reducible = is_reducible(net, trainable)
    if reduced and not reducible:
        raise ValueError(
            "`reduced=True` needs a TwoLayerDIP trained in W only (train=('W',)) and no "
            f"`trainable` override; got {type(net).__name__}"
            + (f" with train={net.train}" if isinstance(net, TwoLayerDIP) else "")
            + "."
        )
    if reducible and reduced is not False:
        return ReducedDynamics.from_network(net, problem, **flags)
    params, static = partition(net, trainable)
    return FullDynamics(params0=params, static=static, problem=problem, **flags)


def _state_dtype(dynamics):
    return jax.tree_util.tree_leaves(dynamics.initial_state())[0].dtype


# -- gradient descent -----------------------------------------------------------------


class GDResult(eqx.Module):
    """The outcome of [`dipflow.gradient_descent`][].

    **Fields:**

    - `net`: the network at the last iterate.
    - `num_steps`: updates done until the first iterate with loss < `tol` (0 if
      the initial loss is already below it), or until `max_steps`/divergence.
    - `loss`: the loss of the last iterate.
    - `status`: `0` converged, `1` max_steps (stalled: the loss decreased at
      every step), `2` diverged (non-finite), `3` unstable (the budget ran out
      and the loss went up at some step); see `status_name`.
    - `monotone`: whether the loss never went up.
    - `stability_ratio`: `η · λ_max` of the Gauss–Newton curvature
      `A J Jᵀ Aᵀ / m` at θ0. Near a minimum, GD is stable only below 2.
    - `trajectory`: a [`dipflow.Trajectory`][] at iterates `0, save_every, …`
      (`trajectory.ts` holds the flow times `step · step_size`).
    - `steps`: the saved iterate numbers.
    """

    net: eqx.Module | None
    num_steps: Int[Array, ""]
    loss: Float[Array, ""]
    status: Int[Array, ""]
    monotone: Bool[Array, ""]
    stability_ratio: Float[Array, ""]
    trajectory: Trajectory
    steps: Int[Array, " s"]

    @property
    def converged(self) -> Bool[Array, ""]:
        return self.status == CONVERGED

    @property
    def status_name(self):
        return status_name(self.status)


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
) -> GDResult:
    """Gradient descent `θ ← θ − η ∇L(θ)` on the loss (2): the explicit-Euler
    discretisation of the flow (3) with `dt = η`, so step `s` is flow time `s·η`.

    Stops at the first iterate whose loss is `< tol` (`tol=0` never stops early),
    after `max_steps` updates, or when the loss becomes non-finite (status
    `"diverged"`, a result and not an exception, so one diverging seed does not
    stop a `vmap` batch).

    **Arguments:**

    - `net`: the generator (e.g. [`dipflow.TwoLayerDIP`][]); any Equinox module
      with a no-argument `__call__` returning a vector of size `n`.
    - `problem`: the [`dipflow.InverseProblem`][].
    - `step_size`: η > 0.
    - `max_steps`: the most updates to do.
    - `tol`: the loss tolerance, ≥ 0.
    - `save_every`: save diagnostics every this many iterates (default: about
      1000 saved points over `max_steps`).
    - `save_sigma_min`: also save σ_min(J(θ)) (closed-form Gram on the reduced
      path, autodiff Jacobian otherwise; costly for big generic nets).
    - `save_kernel_rate`: also save `λ_min(A J Jᵀ Aᵀ)/m` on Im(A).
    - `save_signal_error`: save `||g − x̄||` (default: when `x_true` is known).
    - `trainable`: an Equinox filter spec overriding `net.trainable_filter()`.
    - `reduced`: integrate in `z = W u` (exact, O(mk) per step). Default: yes
      for a `TwoLayerDIP` trained in `W` only; `False` forces the full path.

    **Returns:** a [`dipflow.GDResult`][].

    Works under `jax.jit` and `jax.vmap`.
    """
    _check_pair(net, problem)
    nonnegative_scalar("step_size", step_size, strict=True)
    nonnegative_scalar("tol", tol)
    max_steps = nonnegative_int("max_steps", max_steps)
    if save_every is None:
        save_every = max(1, max_steps // 1000)
    save_every = positive_int("save_every", save_every)
    dynamics = make_dynamics(
        net,
        problem,
        trainable=trainable,
        reduced=reduced,
        save_sigma_min=save_sigma_min,
        save_kernel_rate=save_kernel_rate,
        save_signal_error=save_signal_error,
    )
    dtype = _state_dtype(dynamics)
    return _gradient_descent(
        dynamics,
        jnp.asarray(step_size, dtype),
        jnp.asarray(tol, dtype),
        max_steps,
        save_every,
    )


def _descent_loop(dynamics, step_size, tol, max_steps):
    """Gradient descent's loop, shared by `gradient_descent` and the studies:
    the initial state `(step, x, L, descent, monotone)`, the stopping rule and
    one step (with the monotonicity test)."""
    eps = jnp.finfo(step_size.dtype).eps
    x0 = dynamics.initial_state()
    L0, descent0 = dynamics.loss_and_descent(x0)

    def running(state):
        step, _, L, _, _ = state
        return (step < max_steps) & (L >= tol) & jnp.isfinite(L)

    def one_step(state):
        step, x, L_prev, descent, monotone = state
        x = jax.tree_util.tree_map(lambda a, d: a + step_size * d, x, descent)
        L, descent = dynamics.loss_and_descent(x)
        monotone = monotone & ~(L > L_prev * (1 + _MONOTONE_SLACK * eps) + eps * L0)
        return step + 1, x, L, descent, monotone

    state = (jnp.asarray(0), x0, L0, descent0, jnp.asarray(True))
    return state, running, one_step


def _descent_status(L, tol, monotone):
    """converged / max_steps (stalled) / unstable (non-monotone) / diverged."""
    finite = jnp.isfinite(L)
    return jnp.where(
        L < tol,
        CONVERGED,
        jnp.where(finite, jnp.where(monotone, MAX_STEPS, UNSTABLE), DIVERGED),
    )


@eqx.filter_jit
def _gradient_descent(dynamics, step_size, tol, max_steps, save_every):
    num_saved = max_steps // save_every + 1
    core, core_running, core_step = _descent_loop(dynamics, step_size, tol, max_steps)

    def running(state):
        return core_running(state[:5])

    def until_next_save(state):
        # Inner loop to the next save point, so that diagnostics are computed once
        # per save interval even when vmap turns the save condition into a select.
        stop_at = (state[0] // save_every + 1) * save_every
        core = jax.lax.while_loop(
            lambda s: core_running(s) & (s[0] < stop_at), core_step, state[:5]
        )
        step, x, L, descent, monotone = core
        saved = state[5]
        on_grid = step % save_every == 0
        diag = dynamics.diagnostics(x)
        idx = jnp.where(on_grid, step // save_every, num_saved)  # out of range: dropped
        saved = jax.tree_util.tree_map(
            lambda buf, v: buf.at[idx].set(v, mode="drop"), saved, diag
        )
        return step, x, L, descent, monotone, saved

    saved = jax.tree_util.tree_map(
        lambda v: jnp.full((num_saved,), jnp.nan, v.dtype).at[0].set(v),
        dynamics.diagnostics(core[1]),
    )
    step, x, L, _, monotone, saved = jax.lax.while_loop(
        running, until_next_save, (*core, saved)
    )
    finite = jnp.isfinite(L)
    status = _descent_status(L, tol, monotone)
    steps = jnp.arange(num_saved) * save_every
    return GDResult(
        net=dynamics.net(x),
        num_steps=step,
        loss=L,
        status=status,
        monotone=monotone & finite,
        stability_ratio=step_size * dynamics.curvature(),
        trajectory=_trajectory(steps * step_size, saved),
        steps=steps,
    )


# -- the gradient flow ----------------------------------------------------------------


class FlowResult(eqx.Module):
    """The outcome of [`dipflow.gradient_flow`][].

    **Fields:**

    - `ts`, `loss`, `residual` (`||y(t) − y||`), `distance` (`||θ(t) − θ0||`),
      `sigma_min`, `kernel_rate`, `signal_error` (`||g(t) − x̄||`): values at the
      requested save times; NaN at times after the flow stopped at the tolerance.
    - `t_final`: the time the solve ended (the tolerance time, or `t1`).
    - `final_loss`: the loss at `t_final`.
    - `net`: the network at `t_final`.
    - `status`: `0` converged, `1` max_steps (horizon `t1` or the solver's
      step budget reached first), `2` diverged (non-finite, or the solver failed).
    - `num_steps`: accepted solver steps.
    """

    ts: Float[Array, " s"]
    loss: Float[Array, " s"]
    residual: Float[Array, " s"]
    distance: Float[Array, " s"]
    sigma_min: Float[Array, " s"] | None
    kernel_rate: Float[Array, " s"] | None
    signal_error: Float[Array, " s"] | None
    t_final: Float[Array, ""]
    final_loss: Float[Array, ""]
    net: eqx.Module | None
    status: Int[Array, ""]
    num_steps: Int[Array, ""]

    @property
    def converged(self) -> Bool[Array, ""]:
        return self.status == CONVERGED

    @property
    def status_name(self):
        return status_name(self.status)

    @property
    def trajectory(self) -> Trajectory:
        return Trajectory(
            self.ts,
            self.loss,
            self.residual,
            self.distance,
            self.sigma_min,
            self.kernel_rate,
            self.signal_error,
        )


def gradient_flow(
    net,
    problem: InverseProblem,
    t1: float | ArrayLike,
    tol: float | ArrayLike = 1e-7,
    save_ts=None,
    *,
    solver: diffrax.AbstractSolver | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    dt0: float | None = None,
    stepsize_controller: diffrax.AbstractStepSizeController | None = None,
    max_steps: int = 1_000_000,
    save_sigma_min: bool = False,
    save_kernel_rate: bool = False,
    save_signal_error: bool | None = None,
    trainable=None,
    reduced: bool | None = None,
) -> FlowResult:
    """Integrate the gradient flow (3), `θ'(t) = −∇L(θ(t))`, with diffrax.

    The default solver is `diffrax.Tsit5` with a PID step-size controller:
    θ has `k·d` entries, so implicit (stiff) solvers, which solve linear systems
    of that size, cost far more than they save; along a converging flow the
    dynamics become a linear contraction, on which an adaptive explicit solver
    settles at its stability limit, comparable to the largest stable GD step.

    The solve stops, through a `diffrax.Event`, at the first accepted step whose
    loss is `< tol` (`tol=0` never stops early).

    **Arguments:**

    - `net`, `problem`, `trainable`, `reduced`: as in
      [`dipflow.gradient_descent`][]. On the reduced path the solver integrates
      `z = W u` (so `rtol`/`atol` apply to z).
    - `t1`: the time horizon, > 0.
    - `tol`: the loss tolerance, ≥ 0.
    - `save_ts`: times in `[0, t1]` at which to save (default: 101 equispaced).
    - `solver`, `rtol`, `atol`, `dt0`, `stepsize_controller`: diffrax settings;
      `stepsize_controller` defaults to `PIDController(rtol, atol)`. Passing
      `solver=diffrax.Euler()`, `dt0=η` and `ConstantStepSize()` gives gradient
      descent with step η.
    - `max_steps`: the solver's step budget.
    - `save_sigma_min`, `save_kernel_rate`, `save_signal_error`: as in
      [`dipflow.gradient_descent`][].

    **Returns:** a [`dipflow.FlowResult`][]. Works under `jax.jit` and `jax.vmap`.
    """
    _check_pair(net, problem)
    nonnegative_scalar("t1", t1, strict=True)
    nonnegative_scalar("tol", tol)
    nonnegative_scalar("rtol", rtol, strict=True)
    nonnegative_scalar("atol", atol, strict=True)
    if dt0 is not None:
        nonnegative_scalar("dt0", dt0, strict=True)
    max_steps = positive_int("max_steps", max_steps)
    if solver is None:
        solver = diffrax.Tsit5()
    if not isinstance(solver, diffrax.AbstractSolver):
        raise TypeError(
            f"`solver` must be a diffrax solver, got {type(solver).__name__}."
        )
    if stepsize_controller is None:
        stepsize_controller = diffrax.PIDController(rtol=rtol, atol=atol)
    if isinstance(stepsize_controller, diffrax.ConstantStepSize) and dt0 is None:
        raise ValueError("a constant step size needs `dt0`.")
    dynamics = make_dynamics(
        net,
        problem,
        trainable=trainable,
        reduced=reduced,
        save_sigma_min=save_sigma_min,
        save_kernel_rate=save_kernel_rate,
        save_signal_error=save_signal_error,
    )
    dtype = _state_dtype(dynamics)
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
    return _gradient_flow(
        dynamics,
        jnp.asarray(t1, dtype),
        jnp.asarray(tol, dtype),
        save_ts,
        solver,
        stepsize_controller,
        None if dt0 is None else jnp.asarray(dt0, dtype),
        max_steps,
    )


@eqx.filter_jit
def _gradient_flow(dynamics, t1, tol, save_ts, solver, controller, dt0, max_steps):
    def rhs(t, x, args):
        return dynamics.descent(x)

    def save_fn(t, x, args):
        return dynamics.diagnostics(x)

    def below_tol(t, x, args, **kwargs):
        return dynamics.loss(x) < tol

    x0 = dynamics.initial_state()
    saveat = diffrax.SaveAt(
        subs=[diffrax.SubSaveAt(ts=save_ts, fn=save_fn), diffrax.SubSaveAt(t1=True)]
    )
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(rhs),
        solver,
        t0=jnp.zeros_like(t1),
        t1=t1,
        dt0=dt0,
        y0=x0,
        saveat=saveat,
        stepsize_controller=controller,
        event=diffrax.Event(below_tol),
        max_steps=max_steps,
        throw=False,
    )
    saved, x_final = sol.ys
    t_final = sol.ts[1][0]
    x_final = jax.tree_util.tree_map(lambda y: y[0], x_final)
    final_loss = dynamics.loss(x_final)

    # The event is checked after each step; an initial loss already below tol
    # means the flow is at its goal at t = 0.
    loss0 = dynamics.loss(x0)
    at_start = loss0 < tol
    t_final = jnp.where(at_start, 0.0, t_final).astype(t1.dtype)
    x_final = jax.tree_util.tree_map(
        lambda a, b: jnp.where(at_start, a, b), x0, x_final
    )
    final_loss = jnp.where(at_start, loss0, final_loss)

    reached = save_ts <= t_final
    saved = jax.tree_util.tree_map(lambda v: jnp.where(reached, v, jnp.nan), saved)
    result = sol.result
    finite = jnp.isfinite(final_loss)
    ran_out = (result == diffrax.RESULTS.successful) | (
        result == diffrax.RESULTS.max_steps_reached
    )
    status = jnp.where(
        at_start | ((result == diffrax.RESULTS.event_occurred) & finite),
        CONVERGED,
        jnp.where(finite & ran_out, MAX_STEPS, DIVERGED),
    )
    traj = _trajectory(save_ts, saved)
    return FlowResult(
        ts=save_ts,
        loss=traj.loss,
        residual=traj.residual,
        distance=traj.distance,
        sigma_min=traj.sigma_min,
        kernel_rate=traj.kernel_rate,
        signal_error=traj.signal_error,
        t_final=t_final,
        final_loss=final_loss,
        net=dynamics.net(x_final),
        status=status,
        num_steps=sol.stats["num_accepted_steps"],
    )
