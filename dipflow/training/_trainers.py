"""Trainers as values: a trainer's hyper-parameters are its fields, checked when
it is built, and [`dipflow.train`][] runs any of them.

Discrete trainers are optax transformations stepped by one loop
(`_descent.descend`); continuous ones are vector fields integrated by one diffrax
solve (`_flows.integrate`). A trainer whose update is a linear combination of
past gradients (GD, heavy ball, Nesterov, the gradient and inertial flows) keeps
the exact reductions of the two-layer net; Adam's element-wise scaling does not.
"""

import abc
import dataclasses
from typing import Any, ClassVar

import diffrax
import equinox as eqx
import jax.numpy as jnp
import optax
from equinox import AbstractClassVar
from jaxtyping import Array, ArrayLike

from .._core._checks import is_concrete, nonnegative_scalar, option
from ._flows import AbstractVectorField, GradientField, InertialField
from ._solution import RESULTS


def check_momentum(momentum):
    """`momentum` in [0, 1) (tracers pass unchecked)."""
    nonnegative_scalar("momentum", momentum)
    if is_concrete(momentum) and float(momentum) >= 1:
        raise ValueError(f"`momentum` must be in [0, 1), got {momentum!r}.")
    return momentum


def hyper_parameter(**kwargs):
    """A field that becomes an array of the run's dtype when the run starts, so
    that runs with other values of it reuse one compilation."""
    return eqx.field(metadata={"hyper_parameter": True}, **kwargs)


class AbstractTrainer(eqx.Module):
    """How a run moves through parameter space: a discrete method
    ([`dipflow.GradientDescent`][], [`dipflow.HeavyBall`][],
    [`dipflow.Nesterov`][], [`dipflow.Optax`][]) or a flow
    ([`dipflow.GradientFlow`][], [`dipflow.InertialFlow`][])."""

    # Whether the update is a linear combination of past gradients, which keeps
    # the exact reductions of the two-layer net exact.
    keeps_reductions: AbstractClassVar[bool]

    def in_dtype(self, dtype) -> "AbstractTrainer":
        """This trainer with its hyper-parameters as arrays of `dtype`."""
        names = [
            f.name
            for f in dataclasses.fields(self)
            if f.metadata.get("hyper_parameter")
        ]
        if not names:
            return self
        return eqx.tree_at(
            lambda t: [getattr(t, n) for n in names],
            self,
            [jnp.asarray(getattr(self, n), dtype) for n in names],
        )


class AbstractDiscreteTrainer(AbstractTrainer):
    """A discrete method: an optax transformation applied once per step."""

    @abc.abstractmethod
    def transformation(self) -> optax.GradientTransformation:
        """The optax transformation of one step."""

    # Whether the transformation is fed the descent direction `−∇L` rather than
    # the gradient (saves two negations per step on small reduced cells).
    feeds_descent: AbstractClassVar[bool]

    @abc.abstractmethod
    def time_per_step(self, dtype) -> Array:
        """The flow time of one step (the step size; 1 without one)."""

    @abc.abstractmethod
    def stability_ratio(self, dynamics, dtype) -> Array:
        """The step relative to its stability limit at θ0 of `dynamics` (NaN
        when unknown)."""

    @abc.abstractmethod
    def stable(self, monotone, ratio) -> Array:
        """Whether a run whose budget ran out counts as stable (else
        `RESULTS.unstable`)."""

    def result(self, excess, tol, monotone, ratio, in_domain) -> RESULTS:
        """converged / max_steps (stalled) / unstable / diverged / outside_domain,
        from the excess loss `L − ℓ*`."""
        ran_out = RESULTS.where(
            self.stable(monotone, ratio), RESULTS.max_steps, RESULTS.unstable
        )
        broke = RESULTS.where(in_domain, RESULTS.diverged, RESULTS.outside_domain)
        finite = RESULTS.where(jnp.isfinite(excess), ran_out, broke)
        return RESULTS.where(excess < tol, RESULTS.converged, finite)


class GradientDescent(AbstractDiscreteTrainer):
    """Gradient descent `θ ← θ − η ∇L(θ)`: the explicit-Euler discretisation of
    the flow (3), step `s` at flow time `s·η`. A run whose budget ran out is
    `unstable` when its loss went up at some step (the mark of `η` beyond
    `2/λ_max`).

    **Arguments:**

    - `step_size`: η > 0.
    """

    step_size: ArrayLike = hyper_parameter()
    keeps_reductions: ClassVar[bool] = True
    feeds_descent: ClassVar[bool] = True

    def __check_init__(self):
        nonnegative_scalar("step_size", self.step_size, strict=True)

    def transformation(self):
        # With the step negated, sgd(−η) on −∇L is sgd(η) on ∇L exactly.
        return optax.sgd(-self.step_size)

    def time_per_step(self, dtype):
        return self.step_size

    @staticmethod
    def stability_limit(momentum=0.0):
        """The largest stable `η λ` on a quadratic of curvature λ: 2 (there is
        no momentum)."""
        return 2.0

    def stability_ratio(self, dynamics, dtype):
        return _ratio(self.step_size, dynamics.curvature(), self.stability_limit())

    def stable(self, monotone, ratio):
        return monotone


class _AbstractMomentum(AbstractDiscreteTrainer):
    """Heavy ball and Nesterov: `optax.sgd(η, μ, nesterov)`. Their loss need not
    decrease at every step when stable, so a run is `unstable` when the step
    size is beyond the method's stability limit at θ0."""

    step_size: ArrayLike = hyper_parameter()
    momentum: ArrayLike = hyper_parameter(default=0.9)
    nesterov: AbstractClassVar[bool]
    keeps_reductions: ClassVar[bool] = True
    feeds_descent: ClassVar[bool] = True

    def __check_init__(self):
        nonnegative_scalar("step_size", self.step_size, strict=True)
        check_momentum(self.momentum)

    @staticmethod
    @abc.abstractmethod
    def stability_limit(momentum):
        """The largest stable `η λ` on a quadratic of curvature λ."""

    def transformation(self):
        return optax.sgd(-self.step_size, self.momentum, nesterov=self.nesterov)

    def time_per_step(self, dtype):
        return self.step_size

    def stability_ratio(self, dynamics, dtype):
        limit = self.stability_limit(self.momentum)
        return _ratio(self.step_size, dynamics.curvature(), limit)

    def stable(self, monotone, ratio):
        return ratio < 2


class HeavyBall(_AbstractMomentum):
    """Heavy-ball momentum (Polyak), `t ← ∇L(θ) + μ t`, `θ ← θ − η t`, `t = 0`
    at the start. Stable on a quadratic iff `η λ_max < 2(1 + μ)`.

    **Arguments:**

    - `step_size`: η > 0.
    - `momentum`: μ in [0, 1) (default 0.9).
    """

    nesterov: ClassVar[bool] = False

    @staticmethod
    def stability_limit(momentum):
        """`2(1 + μ)`."""
        return 2 * (1 + momentum)


class Nesterov(_AbstractMomentum):
    """Nesterov momentum, `t ← ∇L(θ) + μ t`, `θ ← θ − η (∇L(θ) + μ t)`: the
    gradient looked at once more, with the momentum it is about to receive.
    Its stability limit is `2(1 + μ)/(1 + 2μ)` ([`dipflow.stability_limit`][]).
    Arguments as in [`dipflow.HeavyBall`][].
    """

    nesterov: ClassVar[bool] = True

    @staticmethod
    def stability_limit(momentum):
        """`2(1 + μ)/(1 + 2μ)` (optax's form, `t ← g + μ t`,
        `θ ← θ − η (g + μ t)`)."""
        return 2 * (1 + momentum) / (1 + 2 * momentum)


class Optax(AbstractDiscreteTrainer):
    """Any optax optimizer: `Optax(optax.adam(1e-2))` (how DIP is trained in
    practice). Runs on the full parameters (an optimizer's update need not be a
    linear combination of past gradients). No stability limit is known for a
    general optimizer: a run whose budget ran out is `max_steps`.

    **Arguments:**

    - `optimizer`: an `optax.GradientTransformation`. Reusing one object
      reuses its compilation.
    """

    optimizer: Any  # an optax.GradientTransformation, checked below
    keeps_reductions: ClassVar[bool] = False
    feeds_descent: ClassVar[bool] = False

    def __check_init__(self):
        if not isinstance(self.optimizer, optax.GradientTransformation):
            raise TypeError(
                "`optimizer` must be an optax.GradientTransformation (e.g. "
                f"optax.adam(1e-2)), got {type(self.optimizer).__name__}."
            )

    def transformation(self):
        return self.optimizer

    def time_per_step(self, dtype):
        return jnp.ones((), dtype)

    def stability_ratio(self, dynamics, dtype):
        return jnp.full((), jnp.nan, dtype)

    def stable(self, monotone, ratio):
        return jnp.asarray(True)


class AbstractFlowTrainer(AbstractTrainer):
    """A continuous trainer: an ODE integrated by diffrax, `Tsit5` with a PID
    step-size controller by default. `solver=diffrax.Euler()`, `dt0=η` and
    `stepsize_controller=diffrax.ConstantStepSize()` give the discrete method."""

    solver: eqx.AbstractVar[diffrax.AbstractSolver | None]
    rtol: eqx.AbstractVar[float | ArrayLike]
    atol: eqx.AbstractVar[float | ArrayLike]
    dt0: eqx.AbstractVar[float | ArrayLike | None]
    stepsize_controller: eqx.AbstractVar[diffrax.AbstractStepSizeController | None]
    keeps_reductions: ClassVar[bool] = True

    @abc.abstractmethod
    def field(self) -> AbstractVectorField:
        """The vector field integrated."""

    def __check_init__(self):
        nonnegative_scalar("rtol", self.rtol, strict=True)
        nonnegative_scalar("atol", self.atol, strict=True)
        if self.dt0 is not None:
            nonnegative_scalar("dt0", self.dt0, strict=True)
        if self.solver is not None and not isinstance(
            self.solver, diffrax.AbstractSolver
        ):
            raise TypeError(
                f"`solver` must be a diffrax solver, got {type(self.solver).__name__}."
            )
        if isinstance(self.stepsize_controller, diffrax.ConstantStepSize) and (
            self.dt0 is None
        ):
            raise ValueError("a constant step size needs `dt0`.")

    def diffrax_solver(self) -> diffrax.AbstractSolver:
        return diffrax.Tsit5() if self.solver is None else self.solver

    def controller(self) -> diffrax.AbstractStepSizeController:
        if self.stepsize_controller is None:
            return diffrax.PIDController(rtol=self.rtol, atol=self.atol)
        return self.stepsize_controller


class GradientFlow(AbstractFlowTrainer):
    """The gradient flow (3), `θ'(t) = −∇L(θ(t))`.

    **Arguments:**

    - `solver`, `rtol`, `atol`, `dt0`, `stepsize_controller`: diffrax settings
      (default `Tsit5` with `PIDController(rtol=1e-6, atol=1e-9)`).
    """

    solver: diffrax.AbstractSolver | None = None
    rtol: float | ArrayLike = 1e-6
    atol: float | ArrayLike = 1e-9
    dt0: float | ArrayLike | None = None
    stepsize_controller: diffrax.AbstractStepSizeController | None = None

    def field(self):
        return GradientField()


class InertialFlow(AbstractFlowTrainer):
    """The inertial flow with Hessian-driven damping,
    `θ'' + α θ' + β d/dt ∇L(θ) + ∇L(θ) = 0`, `θ(0) = θ0`, `θ'(0) = 0`
    (arXiv 2506.02986), solved in its Hessian-free first-order form. `β = 0` is
    the heavy-ball ODE.

    **Arguments:**

    - `alpha`: the viscous damping α ≥ 0.
    - `beta`: the Hessian-driven damping β ≥ 0 (default 0).
    - `solver`, `rtol`, `atol`, `dt0`, `stepsize_controller`: as in
      [`dipflow.GradientFlow`][].
    """

    alpha: ArrayLike = hyper_parameter()
    beta: ArrayLike = hyper_parameter(default=0.0)
    solver: diffrax.AbstractSolver | None = None
    rtol: float | ArrayLike = 1e-6
    atol: float | ArrayLike = 1e-9
    dt0: float | ArrayLike | None = None
    stepsize_controller: diffrax.AbstractStepSizeController | None = None

    def __check_init__(self):
        nonnegative_scalar("alpha", self.alpha)
        nonnegative_scalar("beta", self.beta)

    def field(self):
        return InertialField(alpha=self.alpha, beta=self.beta)


# The discrete methods with a step size (and so a flow time `step · η`), by
# the names `stability_limit` takes.
_STEPPED = {"gd": GradientDescent, "heavy_ball": HeavyBall, "nesterov": Nesterov}
LINEAR_METHODS = tuple(_STEPPED)


def stability_limit(method: str, momentum=0.0):
    """The largest stable `η λ` of a method on a quadratic of curvature λ:
    `2` for gradient descent, `2(1 + μ)` for heavy ball, `2(1 + μ)/(1 + 2μ)` for
    Nesterov (optax's form, `t ← g + μ t`, `θ ← θ − η (g + μ t)`). Derived from
    the 2 × 2 iteration matrix of each method on `L = λ θ²/2`, whose spectral
    radius is < 1 exactly below these limits (tests check it numerically)."""
    trainer = option("method", method, _STEPPED, f"one of {LINEAR_METHODS}")
    return trainer.stability_limit(momentum)


def _ratio(step_size, curvature, limit):
    return 2 * step_size * curvature / limit


def stability_ratio(step_size, curvature, method: str = "gd", momentum=0.0):
    """`2 η λ_max / limit`: the step size relative to the stability limit of the
    method (see [`dipflow.stability_limit`][]) on the loss's Gauss–Newton
    curvature `λ_max(J_Aᵀ H J_A)/m` at θ0 (`J_A = A J`, `H` the summed loss's
    Hessian in `v = A g` at θ0; squared error: `λ_max(A J Jᵀ Aᵀ)/m`), scaled so
    that every method is stable near a minimum below 2 (for gradient descent it
    is `η λ_max`)."""
    return _ratio(step_size, curvature, stability_limit(method, momentum))


# The trainers by the names people type (CLI, TOML, `Cell(method=...)`, the
# `optimizer` of `fit_image`), each built from the hyper-parameters it takes:
# parsed here and nowhere else.
_FROM_NAME = {
    "gd": lambda step_size, **_: GradientDescent(step_size),
    "heavy_ball": lambda step_size, momentum, **_: HeavyBall(step_size, momentum),
    "nesterov": lambda step_size, momentum, **_: Nesterov(step_size, momentum),
    "adam": lambda step_size, **_: Optax(optax.adam(step_size)),
    "flow": lambda rtol, atol, **_: GradientFlow(rtol=rtol, atol=atol),
    "inertial": lambda alpha, beta, rtol, atol, **_: InertialFlow(
        alpha, beta, rtol=rtol, atol=atol
    ),
}
TRAINER_NAMES = tuple(_FROM_NAME)


def trainer_from_name(
    name: str,
    *,
    step_size=None,
    momentum=None,
    alpha=None,
    beta=0.0,
    rtol=1e-6,
    atol=1e-9,
) -> AbstractTrainer:
    """The trainer `name` with these hyper-parameters: `"gd"`, `"heavy_ball"`,
    `"nesterov"` (`step_size`, `momentum`), `"adam"` (`step_size` as its
    learning rate), `"flow"` and `"inertial"` (`alpha`, `beta`; `rtol`, `atol`
    of the solver's controller)."""
    if name not in _FROM_NAME:
        raise ValueError(f"the trainer must be one of {TRAINER_NAMES}, got {name!r}.")
    return _FROM_NAME[name](
        step_size=step_size, momentum=momentum, alpha=alpha, beta=beta, rtol=rtol,
        atol=atol,
    )  # fmt: skip
