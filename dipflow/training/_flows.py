"""The continuous trainers: the gradient flow (3) `θ' = −∇L(θ)` and the inertial
flow `θ'' + α θ' + β d/dt ∇L(θ) + ∇L(θ) = 0`, through one diffrax solve that
stops at a loss tolerance and saves diagnostics along the way."""

from __future__ import annotations

import abc

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import ArrayLike, Float, PyTree

from ._dynamics import AbstractDynamics
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
