"""What every trainer returns: one `Solution`, with a `result` from `RESULTS`."""

from __future__ import annotations

import equinox as eqx
import numpy as np
from jaxtyping import Array, Bool, Float, Int


class RESULTS(eqx.Enumeration):
    """How a run ended. Compare with `==` (`sol.result == dipflow.RESULTS.converged`),
    also under `jax.vmap`, where the comparison is per item.

    - `converged`: the loss went below the tolerance.
    - `max_steps`: the step budget (or the flow's horizon `t1`) ran out while the
      run stayed stable; the loss was still decreasing but had not reached the
      tolerance (stalled).
    - `diverged`: the loss became non-finite.
    - `unstable`: the budget ran out on a discrete method beyond its stability
      limit: for gradient descent a loss that went up at some step; for heavy
      ball and Nesterov a step size beyond the limit of the linearisation at θ0
      (`stability_ratio ≥ 2`, see [`dipflow.stability_ratio`][]).
    - `solver_max_steps`: the ODE solver's own step budget ran out before `t1`.
    - `solver_failed`: the ODE solver failed for another reason of its own.
    - `outside_domain`: the measurement `v = A g` left the domain where the loss
      is defined (a Poisson loss's `v + b > 0`), so the loss became non-finite.
    """

    converged = "the loss reached the tolerance"
    max_steps = "the step budget or the horizon ran out before the tolerance"
    diverged = "the loss became non-finite"
    unstable = "the budget ran out beyond the method's stability limit"
    solver_max_steps = "the ODE solver's step budget ran out before the horizon"
    solver_failed = "the ODE solver failed"
    outside_domain = "the measurement left the domain of the loss"


# In the order the members are defined, which is the order of their integer codes.
RESULT_NAMES = (
    "converged",
    "max_steps",
    "diverged",
    "unstable",
    "solver_max_steps",
    "solver_failed",
    "outside_domain",
)


def result_code(result) -> np.ndarray:
    """The integer code(s) of a `RESULTS` item (batched under vmap), as NumPy."""
    return np.asarray(result._value)


def result_name(result) -> str | np.ndarray:
    """The name(s) of a `RESULTS` item: `"converged"`, `"max_steps"`, …"""
    names = np.asarray(RESULT_NAMES)[result_code(result)]
    return str(names) if names.ndim == 0 else names


class Trajectory(eqx.Module):
    """Quantities saved along a run, one entry per saved point (NaN after the run
    stopped).

    **Fields:**

    - `ts`: the times (for a discrete method with a step size η, `step · η`,
      the flow time the iterate corresponds to; for [`dipflow.optimize`][] the
      step number).
    - `steps`: the saved iterate numbers (discrete methods; `None` for flows).
    - `loss`, `residual` (`||y(t) − y||`), `distance` (`||θ(t) − θ0||`).
    - `sigma_min` (σ_min(J(θ(t)))), `kernel_rate` (`λ_min(K_A)/m` on Im(A)),
      `signal_error` (`||g(t) − x̄||`): when requested, else `None`.
    """

    ts: Float[Array, " s"]
    steps: Int[Array, " s"] | None
    loss: Float[Array, " s"]
    residual: Float[Array, " s"]
    distance: Float[Array, " s"]
    sigma_min: Float[Array, " s"] | None
    kernel_rate: Float[Array, " s"] | None
    signal_error: Float[Array, " s"] | None

    @classmethod
    def from_diagnostics(cls, ts, steps, diag: dict) -> Trajectory:
        return cls(
            ts=ts,
            steps=steps,
            loss=diag["loss"],
            residual=diag["residual"],
            distance=diag["distance"],
            sigma_min=diag.get("sigma_min"),
            kernel_rate=diag.get("kernel_rate"),
            signal_error=diag.get("signal_error"),
        )


class Solution(eqx.Module):
    """The outcome of every trainer ([`dipflow.gradient_descent`][],
    [`dipflow.heavy_ball`][], [`dipflow.nesterov`][], [`dipflow.optimize`][],
    [`dipflow.gradient_flow`][], [`dipflow.inertial_flow`][]).

    **Fields:**

    - `net`: the trained generator at the end of the run (rebuilt from the
      reduced state on the reduced path).
    - `final_loss`: its loss.
    - `num_steps`: discrete methods: updates done until the first iterate with
      loss < `tol` (0 if the initial loss is already below it), or until the
      budget ran out or the loss became non-finite; flows: accepted solver steps.
    - `t_final`: the time the run ended (`num_steps · η` for a discrete method
      with a step size η).
    - `result`: a member of [`dipflow.RESULTS`][].
    - `trajectory`: a [`dipflow.Trajectory`][] at the saved points (`None` when
      nothing was asked to be saved).
    - `stats`: a dict of arrays. Discrete methods: `monotone` (the loss never
      went up) and `stability_ratio` (see [`dipflow.stability_ratio`][]; NaN for
      a method without a known limit); flows: `num_accepted_steps`,
      `num_rejected_steps`.
    """

    net: eqx.Module | None
    final_loss: Float[Array, ""]
    num_steps: Int[Array, ""]
    t_final: Float[Array, ""]
    result: RESULTS
    trajectory: Trajectory | None
    stats: dict[str, Array]

    @property
    def converged(self) -> Bool[Array, ""]:
        return self.result == RESULTS.converged

    @property
    def result_name(self) -> str | np.ndarray:
        """`result` as a name (an array of names under vmap)."""
        return result_name(self.result)
