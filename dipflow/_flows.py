"""The gradient flow (3) `θ' = −∇L(θ)` through diffrax, and gradient descent as its
explicit-Euler discretisation, with stopping at a loss tolerance and saved
trajectories."""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from ._checks import is_concrete, nonnegative_int, nonnegative_scalar, positive_int
from ._jacobians import partition, sigma_min_jacobian
from ._problems import InverseProblem

# Status codes, per run (and per item under vmap).
CONVERGED, MAX_STEPS, DIVERGED = 0, 1, 2
STATUS_NAMES = ("converged", "max_steps", "diverged")


def status_name(status) -> str | np.ndarray:
    """The status code(s) as names: `"converged"`, `"max_steps"` or `"diverged"`."""
    codes = np.asarray(status)
    names = np.asarray(STATUS_NAMES)[codes]
    return str(names) if names.ndim == 0 else names


# -- the objective and its vector field ---------------------------------------------


def loss(net, problem: InverseProblem) -> Float[Array, ""]:
    """The loss (2): `L = ||A g(u, θ) − y||² / (2m)`."""
    r = problem.forward(net()) - problem.y
    return jnp.dot(r, r) / (2 * problem.m)


def _loss_of_params(params, static, problem):
    return loss(eqx.combine(params, static), problem)


def vector_field(params, static, problem):
    """`−∇_θ L`, the right-hand side of (3), for the trained leaves `params`."""
    grads = jax.grad(_loss_of_params)(params, static, problem)
    return jax.tree_util.tree_map(jnp.negative, grads)


class Trajectory(eqx.Module):
    """Quantities saved along a run, one entry per saved time (NaN after the run
    stopped). `sigma_min` and `signal_error` are `None` when not requested or
    not available."""

    ts: Float[Array, " s"]
    loss: Float[Array, " s"]
    residual: Float[Array, " s"]
    distance: Float[Array, " s"]
    sigma_min: Float[Array, " s"] | None
    signal_error: Float[Array, " s"] | None


def _diagnostics(params, static, problem, theta0, with_sigma_min, with_signal):
    """loss, ||y(θ) − y||, ||θ − θ0|| and optionally σ_min(J(θ)) and ||g − x̄||."""
    net = eqx.combine(params, static)
    g = net()
    r = problem.forward(g) - problem.y
    theta, _ = ravel_pytree(params)
    out = {
        "loss": jnp.dot(r, r) / (2 * problem.m),
        "residual": jnp.linalg.norm(r),
        "distance": jnp.linalg.norm(theta - theta0),
    }
    if with_sigma_min:
        out["sigma_min"] = sigma_min_jacobian(
            eqx.combine(params, static), _spec_of(params)
        )
    if with_signal:
        out["signal_error"] = jnp.linalg.norm(g - problem.x_true)
    return out


def _spec_of(params):
    return jax.tree_util.tree_map(
        lambda x: x is not None, params, is_leaf=lambda x: x is None
    )


def _trajectory(ts, diag) -> Trajectory:
    return Trajectory(
        ts=ts,
        loss=diag["loss"],
        residual=diag["residual"],
        distance=diag["distance"],
        sigma_min=diag.get("sigma_min"),
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


# -- gradient descent -----------------------------------------------------------------


class GDResult(eqx.Module):
    """The outcome of [`dipflow.gradient_descent`][].

    **Fields:**

    - `net`: the network at the last iterate.
    - `num_steps`: updates done until the first iterate with loss < `tol` (0 if
      the initial loss is already below it), or until `max_steps`/divergence.
    - `loss`: the loss of the last iterate.
    - `status`: `0` converged, `1` max_steps, `2` diverged (see `status_name`).
    - `trajectory`: a [`dipflow.Trajectory`][] at iterates `0, save_every, …`
      (`trajectory.ts` holds the flow times `step · step_size`; `steps` the
      iterate numbers).
    - `steps`: the saved iterate numbers.
    """

    net: eqx.Module
    num_steps: Int[Array, ""]
    loss: Float[Array, ""]
    status: Int[Array, ""]
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
    save_signal_error: bool | None = None,
    trainable=None,
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
    - `save_sigma_min`: also save σ_min(J(θ)) (autodiff Jacobian, see `jacobian`; costly for big nets).
    - `save_signal_error`: save `||g − x̄||` (default: when `x_true` is known).
    - `trainable`: an Equinox filter spec overriding `net.trainable_filter()`.

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
    with_signal = _resolve_signal(save_signal_error, problem)
    params, static = partition(net, trainable)
    dtype = ravel_pytree(params)[0].dtype
    return _gradient_descent(
        params,
        static,
        problem,
        jnp.asarray(step_size, dtype),
        jnp.asarray(tol, dtype),
        max_steps,
        save_every,
        bool(save_sigma_min),
        with_signal,
    )


@eqx.filter_jit
def _gradient_descent(
    params,
    static,
    problem,
    step_size,
    tol,
    max_steps,
    save_every,
    with_sigma_min,
    with_signal,
):
    theta0, _ = ravel_pytree(params)
    value_and_grad = jax.value_and_grad(_loss_of_params)
    num_saved = max_steps // save_every + 1

    def diagnostics(p):
        return _diagnostics(p, static, problem, theta0, with_sigma_min, with_signal)

    def running(state):
        step, _, L, _, _ = state
        return (step < max_steps) & (L >= tol) & jnp.isfinite(L)

    def one_step(state):
        step, p, _, grad, saved = state
        p = jax.tree_util.tree_map(lambda x, g: x - step_size * g, p, grad)
        L, grad = value_and_grad(p, static, problem)
        return step + 1, p, L, grad, saved

    def until_next_save(state):
        # Inner loop to the next save point, so that diagnostics are computed once
        # per save interval even when vmap turns the save condition into a select.
        stop_at = (state[0] // save_every + 1) * save_every
        state = jax.lax.while_loop(
            lambda s: running(s) & (s[0] < stop_at), one_step, state
        )
        step, p, L, grad, saved = state
        on_grid = step % save_every == 0
        diag = diagnostics(p)
        idx = jnp.where(on_grid, step // save_every, num_saved)  # out of range: dropped
        saved = jax.tree_util.tree_map(
            lambda buf, v: buf.at[idx].set(v, mode="drop"), saved, diag
        )
        return step, p, L, grad, saved

    L0, grad0 = value_and_grad(params, static, problem)
    diag0 = diagnostics(params)
    saved = jax.tree_util.tree_map(
        lambda v: jnp.full((num_saved,), jnp.nan, v.dtype).at[0].set(v), diag0
    )
    state = (jnp.asarray(0), params, L0, grad0, saved)
    step, p, L, _, saved = jax.lax.while_loop(running, until_next_save, state)

    status = jnp.where(
        L < tol, CONVERGED, jnp.where(jnp.isfinite(L), MAX_STEPS, DIVERGED)
    )
    steps = jnp.arange(num_saved) * save_every
    return GDResult(
        net=eqx.combine(p, static),
        num_steps=step,
        loss=L,
        status=status,
        trajectory=_trajectory(steps * step_size, saved),
        steps=steps,
    )


# -- the gradient flow ----------------------------------------------------------------


class FlowResult(eqx.Module):
    """The outcome of [`dipflow.gradient_flow`][].

    **Fields:**

    - `ts`, `loss`, `residual` (`||y(t) − y||`), `distance` (`||θ(t) − θ0||`),
      `sigma_min`, `signal_error` (`||g(t) − x̄||`): values at the requested save
      times; NaN at times after the flow stopped at the tolerance.
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
    signal_error: Float[Array, " s"] | None
    t_final: Float[Array, ""]
    final_loss: Float[Array, ""]
    net: eqx.Module
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
    save_signal_error: bool | None = None,
    trainable=None,
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

    - `net`, `problem`, `trainable`: as in [`dipflow.gradient_descent`][].
    - `t1`: the time horizon, > 0.
    - `tol`: the loss tolerance, ≥ 0.
    - `save_ts`: times in `[0, t1]` at which to save (default: 101 equispaced).
    - `solver`, `rtol`, `atol`, `dt0`, `stepsize_controller`: diffrax settings;
      `stepsize_controller` defaults to `PIDController(rtol, atol)`. Passing
      `solver=diffrax.Euler()`, `dt0=η` and `ConstantStepSize()` gives gradient
      descent with step η.
    - `max_steps`: the solver's step budget.
    - `save_sigma_min`: also save σ_min(J(θ(t))) (exact autodiff Jacobian).
    - `save_signal_error`: save `||g(t) − x̄||` (default: when `x_true` is known).

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
    with_signal = _resolve_signal(save_signal_error, problem)
    params, static = partition(net, trainable)
    dtype = ravel_pytree(params)[0].dtype
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
        params,
        static,
        problem,
        jnp.asarray(t1, dtype),
        jnp.asarray(tol, dtype),
        save_ts,
        solver,
        stepsize_controller,
        None if dt0 is None else jnp.asarray(dt0, dtype),
        max_steps,
        bool(save_sigma_min),
        with_signal,
    )


@eqx.filter_jit
def _gradient_flow(
    params,
    static,
    problem,
    t1,
    tol,
    save_ts,
    solver,
    controller,
    dt0,
    max_steps,
    with_sigma_min,
    with_signal,
):
    theta0, _ = ravel_pytree(params)

    def rhs(t, p, args):
        return vector_field(p, static, problem)

    def save_fn(t, p, args):
        return _diagnostics(p, static, problem, theta0, with_sigma_min, with_signal)

    def below_tol(t, p, args, **kwargs):
        return _loss_of_params(p, static, problem) < tol

    saveat = diffrax.SaveAt(
        subs=[diffrax.SubSaveAt(ts=save_ts, fn=save_fn), diffrax.SubSaveAt(t1=True)]
    )
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(rhs),
        solver,
        t0=jnp.zeros_like(t1),
        t1=t1,
        dt0=dt0,
        y0=params,
        saveat=saveat,
        stepsize_controller=controller,
        event=diffrax.Event(below_tol),
        max_steps=max_steps,
        throw=False,
    )
    saved, final_params = sol.ys
    t_final = sol.ts[1][0]
    p_final = jax.tree_util.tree_map(lambda y: y[0], final_params)
    final_loss = _loss_of_params(p_final, static, problem)

    # The event is checked after each step; an initial loss already below tol
    # means the flow is at its goal at t = 0.
    loss0 = _loss_of_params(params, static, problem)
    at_start = loss0 < tol
    t_final = jnp.where(at_start, 0.0, t_final).astype(t1.dtype)
    p_final = jax.tree_util.tree_map(
        lambda a, b: jnp.where(at_start, a, b), params, p_final
    )
    final_loss = jnp.where(at_start, loss0, final_loss)

    reached = save_ts <= t_final
    saved = jax.tree_util.tree_map(lambda v: jnp.where(reached, v, jnp.nan), saved)
    result = sol.result
    finite = jnp.isfinite(final_loss)
    status = jnp.where(
        at_start | ((result == diffrax.RESULTS.event_occurred) & finite),
        CONVERGED,
        jnp.where(
            finite
            & (
                (result == diffrax.RESULTS.successful)
                | (result == diffrax.RESULTS.max_steps_reached)
            ),
            MAX_STEPS,
            DIVERGED,
        ),
    )
    traj = _trajectory(save_ts, saved)
    return FlowResult(
        ts=save_ts,
        loss=traj.loss,
        residual=traj.residual,
        distance=traj.distance,
        sigma_min=traj.sigma_min,
        signal_error=traj.signal_error,
        t_final=t_final,
        final_loss=final_loss,
        net=eqx.combine(p_final, static),
        status=status,
        num_steps=sol.stats["num_accepted_steps"],
    )
