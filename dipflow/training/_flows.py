"""The continuous trainers: the gradient flow (3) `θ' = −∇L(θ)` and the inertial
flow `θ'' + α θ' + β d/dt ∇L(θ) + ∇L(θ) = 0`, through one diffrax solve that
stops at a loss tolerance and saves diagnostics along the way."""

from __future__ import annotations

import abc

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Float, PyTree

from .._core._checks import is_concrete, nonnegative_scalar, positive_int
from ..problems._problems import InverseProblem
from ._dynamics import AbstractDynamics
from ._setup import check_pair, make_dynamics, state_dtype
from ._solution import RESULTS, Solution, Trajectory


class AbstractVectorField(eqx.Module):
    """A first-order ODE whose state holds the parameters (the dynamics' state)."""

    @abc.abstractmethod
    def initial(self, dynamics: AbstractDynamics) -> PyTree:
        """The state at t = 0."""

    @abc.abstractmethod
    def position(self, y) -> PyTree:
        """The dynamics' state (the parameters) within the ODE's state `y`."""

    @abc.abstractmethod
    def __call__(self, dynamics: AbstractDynamics, y) -> PyTree:
        """`y'`."""


class GradientField(AbstractVectorField):
    """The gradient flow (3): the state is θ, `θ' = −∇L(θ)`."""

    def initial(self, dynamics):
        return dynamics.initial_state()

    def position(self, y):
        return y

    def __call__(self, dynamics, y):
        return dynamics.descent(y)


class InertialField(AbstractVectorField):
    """The inertial flow in its Hessian-free first-order form: with
    `v = θ' + β ∇L(θ)`, `θ' = v − β ∇L(θ)`, `v' = −α v + (αβ − 1) ∇L(θ)`,
    `θ(0) = θ0`, `v(0) = β ∇L(θ0)` (so that `θ'(0) = 0`). The state is `(θ, v)`."""

    alpha: Float[ArrayLike, ""]
    beta: Float[ArrayLike, ""]

    def initial(self, dynamics):
        x0 = dynamics.initial_state()
        v0 = jax.tree_util.tree_map(lambda d: -self.beta * d, dynamics.descent(x0))
        return x0, v0

    def position(self, y):
        return y[0]

    def __call__(self, dynamics, y):
        x, v = y
        descent = dynamics.descent(x)  # −∇L
        dx = jax.tree_util.tree_map(lambda v, d: v + self.beta * d, v, descent)
        dv = jax.tree_util.tree_map(
            lambda v, d: -self.alpha * v - (self.alpha * self.beta - 1) * d,
            v,
            descent,
        )
        return dx, dv


def _flow_result(solver_result, at_start, finite, in_domain) -> RESULTS:
    """converged (the event fired, or the start was already below tol) /
    max_steps (the horizon t1) / the solver's own failures / diverged /
    outside_domain."""
    dr = diffrax.RESULTS
    own = RESULTS.where(
        solver_result == dr.max_steps_reached,
        RESULTS.solver_max_steps,
        RESULTS.solver_failed,
    )
    ended = RESULTS.where(solver_result == dr.successful, RESULTS.max_steps, own)
    done = RESULTS.where(solver_result == dr.event_occurred, RESULTS.converged, ended)
    return RESULTS.where(
        at_start,
        RESULTS.converged,
        RESULTS.where(
            finite,
            done,
            RESULTS.where(in_domain, RESULTS.diverged, RESULTS.outside_domain),
        ),
    )


@eqx.filter_jit
def integrate(
    dynamics: AbstractDynamics,
    field: AbstractVectorField,
    t1,
    tol,
    save_ts,
    solver,
    controller,
    dt0,
    max_steps: int,
) -> Solution:
    """The one solve of every continuous trainer. `save_ts=None` saves nothing
    but the end (what studies run)."""

    # The tolerance applies to the excess L − ℓ* (ℓ* = 0 for squared error).
    floor = dynamics.loss_floor()

    def rhs(t, y, args):
        return field(dynamics, y)

    def below_tol(t, y, args, **kwargs):
        return dynamics.loss(field.position(y)) - floor < tol

    subs = [diffrax.SubSaveAt(t1=True)]
    if save_ts is not None:
        save_fn = lambda t, y, args: dynamics.diagnostics(field.position(y))  # noqa: E731
        subs.append(diffrax.SubSaveAt(ts=save_ts, fn=save_fn))
    y0 = field.initial(dynamics)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(rhs),
        solver,
        t0=jnp.zeros_like(t1),
        t1=t1,
        dt0=dt0,
        y0=y0,
        saveat=diffrax.SaveAt(subs=subs),
        stepsize_controller=controller,
        event=diffrax.Event(below_tol),
        max_steps=max_steps,
        throw=False,
    )
    x_final = jax.tree_util.tree_map(lambda y: y[0], field.position(sol.ys[0]))
    t_final = sol.ts[0][0]
    final_loss = dynamics.loss(x_final)

    # The event is checked after each step; an initial loss already below tol
    # means the flow is at its goal at t = 0.
    x0 = field.position(y0)
    loss0 = dynamics.loss(x0)
    at_start = loss0 - floor < tol
    t_final = jnp.where(at_start, 0.0, t_final).astype(t1.dtype)
    x_final = jax.tree_util.tree_map(
        lambda a, b: jnp.where(at_start, a, b), x0, x_final
    )
    final_loss = jnp.where(at_start, loss0, final_loss)

    trajectory = None
    if save_ts is not None:
        reached = save_ts <= t_final
        saved = jax.tree_util.tree_map(
            lambda v: jnp.where(reached, v, jnp.nan), sol.ys[1]
        )
        trajectory = Trajectory.from_diagnostics(save_ts, None, saved)
    return Solution(
        net=dynamics.net(x_final),
        final_loss=final_loss,
        num_steps=sol.stats["num_accepted_steps"],
        t_final=t_final,
        result=_flow_result(
            sol.result,
            at_start,
            jnp.isfinite(final_loss),
            dynamics.in_domain(x_final),
        ),
        trajectory=trajectory,
        stats={
            "num_accepted_steps": sol.stats["num_accepted_steps"],
            "num_rejected_steps": sol.stats["num_rejected_steps"],
        },
    )


def _solve(
    field,
    *,
    net,
    problem,
    t1,
    tol,
    save_ts,
    solver,
    rtol,
    atol,
    dt0,
    stepsize_controller,
    max_steps,
    **choices,
) -> Solution:
    """Check the arguments of a continuous trainer (eagerly), choose the state
    space and solve."""
    check_pair(net, problem)
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
    # `choices`: trainable, reduced and the save_* flags, as make_dynamics takes them.
    dynamics = make_dynamics(net, problem, **choices)
    dtype = state_dtype(dynamics)
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
    field = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), field)
    return integrate(
        dynamics,
        field,
        jnp.asarray(t1, dtype),
        jnp.asarray(tol, dtype),
        save_ts,
        solver,
        stepsize_controller,
        None if dt0 is None else jnp.asarray(dt0, dtype),
        max_steps,
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
) -> Solution:
    """Integrate the gradient flow (3), `θ'(t) = −∇L(θ(t))`, with diffrax.

    The default solver is `diffrax.Tsit5` with a PID step-size controller:
    θ has `k·d` entries, so implicit (stiff) solvers, which solve linear systems
    of that size, cost far more than they save; along a converging flow the
    dynamics become a linear contraction, on which an adaptive explicit solver
    settles at its stability limit, comparable to the largest stable GD step.
    Passing `solver=diffrax.Euler()`, `dt0=η` and `ConstantStepSize()` gives
    gradient descent with step η.

    The solve stops, through a `diffrax.Event`, at the first accepted step whose
    loss is `< tol`.

    **Arguments:**

    - `net`, `problem`, `trainable`, `reduced`, `save_sigma_min`,
      `save_kernel_rate`, `save_signal_error`: as in
      [`dipflow.gradient_descent`][]. On the reduced path the solver integrates
      `z = W u` (so `rtol`/`atol` apply to z).
    - `t1`: the time horizon, > 0.
    - `tol`: the loss tolerance, ≥ 0 (`0` never stops early).
    - `save_ts`: times in `[0, t1]` at which to save (default: 101 equispaced).
    - `solver`, `rtol`, `atol`, `dt0`, `stepsize_controller`: diffrax settings;
      `stepsize_controller` defaults to `PIDController(rtol, atol)`.
    - `max_steps`: the solver's step budget (`RESULTS.solver_max_steps` when
      it runs out before `t1`).

    **Returns:** a [`dipflow.Solution`][]. Works under `jax.jit` and `jax.vmap`.
    """
    return _solve(GradientField(), **locals())


def inertial_flow(
    net,
    problem: InverseProblem,
    *,
    alpha: float | ArrayLike,
    beta: float | ArrayLike = 0.0,
    t1: float | ArrayLike,
    tol: float | ArrayLike = 1e-7,
    save_ts=None,
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
) -> Solution:
    """Integrate the inertial flow with Hessian-driven damping,

        θ'' + α θ' + β d/dt ∇L(θ) + ∇L(θ) = 0,   θ(0) = θ0,  θ'(0) = 0,

    of arXiv 2506.02986, with diffrax. It is solved in a first-order form that
    needs no Hessian: with `v = θ' + β ∇L(θ)`,

        θ' = v − β ∇L(θ),   v' = −α v + (αβ − 1) ∇L(θ),   v(0) = β ∇L(θ0).

    `β = 0` is the heavy-ball ODE. For the two-layer net trained in `W`, both
    right-hand sides are combinations of rank-one gradients `c uᵀ`, so the
    exact reduction holds: the state is `(z, v_z)`, two k-vectors.

    **Arguments:**

    - `alpha`: the viscous damping α ≥ 0.
    - `beta`: the Hessian-driven damping β ≥ 0.
    - `net`, `problem`, `trainable`, `reduced`, `save_sigma_min`,
      `save_kernel_rate`, `save_signal_error`: as in
      [`dipflow.gradient_descent`][]. On the reduced path the solver integrates
      `z = W u` (so `rtol`/`atol` apply to z).
    - `t1`: the time horizon, > 0.
    - `tol`: the loss tolerance, ≥ 0 (`0` never stops early).
    - `save_ts`: times in `[0, t1]` at which to save (default: 101 equispaced).
    - `solver`, `rtol`, `atol`, `dt0`, `stepsize_controller`: diffrax settings;
      `stepsize_controller` defaults to `PIDController(rtol, atol)`.
    - `max_steps`: the solver's step budget (`RESULTS.solver_max_steps` when
      it runs out before `t1`).

    **Returns:** a [`dipflow.Solution`][] (its `net` at the final θ). Works
    under `jax.jit` and `jax.vmap`.
    """
    nonnegative_scalar("alpha", alpha)
    nonnegative_scalar("beta", beta)
    options = dict(locals())
    field = InertialField(alpha=options.pop("alpha"), beta=options.pop("beta"))
    return _solve(field, **options)
