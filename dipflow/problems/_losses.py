"""Losses of the measurement `v = A g`: what every trainer minimises.

A loss is a value, carried by the problem ([`dipflow.InverseProblem`][]`(...,
loss=...)`): the trainers, both exact reductions, the full path, studies and
images read it from there. Every loss is written as the mean over the `m`
measurements of a sum, `ℓ(v) = total(v, y) / m`, so that a padded problem (zero
rows appended to `A` and `y`) keeps dividing by its true `m`.

The paper's loss (2) is [`dipflow.losses.SquaredError`][], the default.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from .._core._checks import is_concrete


class AbstractLoss(eqx.Module):
    """A loss `ℓ(v) = total(v, y)/m` of the measurement `v = A g(θ)`, convex and
    differentiable in `v`.

    Subclass it for a loss of your own: `total` is required; override
    `total_and_gradient` to give the gradient in closed form (else autodiff),
    `infimum` and `minimiser` when they are known (else the stopping tolerance
    applies to `L` itself and the certificates beyond squared error are
    undecided), `in_domain` when the loss is defined on part of `R^m` only,
    `check_observation` to refuse data the loss cannot model, and `hessian` /
    `hessian_vector` with closed forms (else autodiff: the stability ratio's
    Gauss–Newton curvature is weighted by them; `unit_hessian = True` only where
    the summed loss's Hessian is the identity).
    """

    @abc.abstractmethod
    def total(self, v: Float[Array, " m"], y: Float[Array, " m"]) -> Float[Array, ""]:
        """`m · ℓ(v)`: the loss summed over the measurements."""

    def total_and_gradient(
        self, v: Float[Array, " m"], y: Float[Array, " m"]
    ) -> tuple[Float[Array, ""], Float[Array, " m"]]:
        """`m · ℓ(v)` and its gradient in `v`."""
        return jax.value_and_grad(self.total)(v, y)

    def infimum(self, y: Float[Array, " m"]) -> Float[Array, ""] | None:
        """`m · ℓ*` with `ℓ* = inf_v ℓ(v)`, or `None` when it is not known."""
        return None

    def minimiser(self, y: Float[Array, " m"]) -> Float[Array, " m"] | None:
        """`v* = argmin ℓ`, or `None` when it does not exist or is not known."""
        return None

    def in_domain(
        self, v: Float[Array, " m"], y: Float[Array, " m"]
    ) -> Bool[Array, ""]:
        """Whether `v` lies in the domain where the loss is finite."""
        return jnp.asarray(True)

    def check_observation(self, y) -> None:
        """Raise a `ValueError` naming `y` when this loss cannot model the data
        (called eagerly, on concrete data, when a problem is built)."""

    # The summed loss's Hessian in `v` is the identity everywhere: the
    # Gauss–Newton curvature is then the kernel's own (no Hessian is built).
    # A subclass of SquaredError that reweights `total` must set it False.
    unit_hessian: ClassVar[bool] = False

    def hessian(
        self, v: Float[Array, " m"], y: Float[Array, " m"]
    ) -> Float[Array, "m m"]:
        """`∇²_v total(v, y)`, the weight of the Gauss–Newton curvature
        `J_Aᵀ ∇²total J_A / m` (autodiff; override it with a closed form)."""
        return jax.hessian(self.total)(v, y)

    def hessian_vector(
        self, v: Float[Array, " m"], y: Float[Array, " m"], w: Float[Array, " m"]
    ) -> Float[Array, " m"]:
        """`∇²_v total(v, y) · w`, matrix-free (forward over reverse)."""
        grad = jax.grad(self.total)
        return jax.jvp(lambda u: grad(u, y), (v,), (w,))[1]

    # -- what Theorem 1 needs beyond squared error (docs/mathematics.md, "Theorem 1
    # for losses beyond squared error") --------------------------------------------

    def pl_constant(
        self, v0: Float[Array, " m"], y: Float[Array, " m"]
    ) -> Float[Array, ""] | None:
        """The best Polyak–Łojasiewicz constant of the summed loss on its
        sublevel set `S0 = {v : ℓ(v) ≤ ℓ(v0)}`: the largest `μ_T` with
        `||∇ total(v)||² ≥ 2 μ_T (total(v) − total*)` for every `v` in `S0`
        (ℓ's own constant is `μ_T / m`; squared error's `μ_T` is 1). `None` when
        it is not known: the certificates are then undecided."""
        return None

    def pl_undecided_reason(self, y: Float[Array, " m"]) -> str:
        """Why [`pl_constant`][dipflow.losses.AbstractLoss.pl_constant] is
        `None` (for the certificate's report)."""
        return (
            f"{type(self).__name__} gives no Polyak–Łojasiewicz constant "
            "(override pl_constant and infimum)"
        )

    def effective_residual(
        self, v0: Float[Array, " m"], y: Float[Array, " m"]
    ) -> Float[Array, ""] | None:
        """`ρ0 = sqrt(2 (total(v0) − total*) / μ_T)`, which stands for the paper's
        `||y(0) − y||` in condition (5), `R'` and (6); `None` without `μ_T`."""
        mu = self.pl_constant(v0, y)
        low = self.infimum(y)
        if mu is None or low is None:
            return None
        return jnp.sqrt(2 * (self.total(v0, y) - low) / mu)

    def noise_footprint(
        self, y: Float[Array, " m"], noise: Float[Array, " m"]
    ) -> Float[Array, ""] | None:
        """`||v* − ȳ||`, how far the loss's minimiser `v*` lies from the
        noise-free measurement `ȳ = y − ε` (squared error: `||ε||`), which
        stands for `||ε||` in (6); `None` without a minimiser."""
        v_star = self.minimiser(y)
        return None if v_star is None else jnp.linalg.norm(v_star - (y - noise))


class SquaredError(AbstractLoss):
    """The paper's loss (2), `ℓ(v) = ||v − y||² / (2m)`: Gaussian noise.
    `ℓ* = 0` at `v* = y`; Polyak–Łojasiewicz with `μ = 1/m` everywhere."""

    def total(self, v, y):
        r = v - y
        return jnp.dot(r, r) / 2

    def total_and_gradient(self, v, y):
        r = v - y
        return jnp.dot(r, r) / 2, r

    unit_hessian: ClassVar[bool] = True

    def hessian(self, v, y):
        return jnp.eye(v.shape[-1], dtype=jnp.result_type(v, y))

    def hessian_vector(self, v, y, w):
        return w

    def infimum(self, y):
        return jnp.zeros((), y.dtype)

    def minimiser(self, y):
        return y

    def pl_constant(self, v0, y):
        return jnp.ones((), y.dtype)

    # The paper's ||y(0) − y|| and ||ε||, computed as it computes them.
    def effective_residual(self, v0, y):
        return jnp.linalg.norm(v0 - y)

    def noise_footprint(self, y, noise):
        return jnp.linalg.norm(noise)


class PseudoHuber(AbstractLoss):
    """`ℓ(v) = (1/m) Σ δ² (sqrt(1 + ((v_i − y_i)/δ)²) − 1)`: quadratic for
    residuals well below `δ`, linear (slope `δ`) beyond, so that a few huge
    residuals (impulse noise) do not dominate. `ℓ* = 0` at `v* = y`.

    **Arguments:**

    - `delta`: the scale `δ > 0` where quadratic turns linear.
    """

    delta: float = eqx.field(static=True)

    def __init__(self, delta: float = 1.0):
        if isinstance(delta, bool) or not isinstance(delta, int | float | np.floating):
            raise TypeError(
                f"`delta` must be a positive number, got {type(delta).__name__}."
            )
        if not (np.isfinite(delta) and delta > 0):
            raise ValueError(f"`delta` must be finite and > 0, got {delta!r}.")
        self.delta = float(delta)

    def total(self, v, y):
        r = v - y
        # δ²(sqrt(1 + t²) − 1) = r² / (sqrt(1 + t²) + 1), t = r/δ: no cancellation
        # for small residuals.
        return jnp.sum(r**2 / (jnp.sqrt(1 + (r / self.delta) ** 2) + 1))

    def infimum(self, y):
        return jnp.zeros((), y.dtype)

    def minimiser(self, y):
        return y

    def pl_constant(self, v0, y):
        # Per coordinate f(r) = δ²(q − 1), q = sqrt(1 + r²/δ²), the ratio
        # f'²/(2f) = (q + 1)/(2q²) falls with q; on S0 one coordinate can hold
        # the whole excess, q ≤ q̂ = 1 + (total(v0) − 0)/δ².
        q = 1 + self.total(v0, y) / self.delta**2
        return (q + 1) / (2 * q**2)


class Poisson(AbstractLoss):
    """The negative log-likelihood of photon counts `y ~ Poisson(A x̄ + b)`,
    up to a constant: `ℓ(v) = (1/m) Σ [(v_i + b) − y_i log(v_i + b)]`, defined
    for `v + b > 0`. Its infimum is at `v + b = y` (`ℓ* = (1/m) Σ (y_i − y_i
    log y_i)`, with `0 log 0 = 0`), attained when every count is positive.

    A run whose `v + b` leaves `(0, ∞)` ends with
    `RESULTS.outside_domain`.

    **Arguments:**

    - `background`: the known background `b ≥ 0` (dark counts); it must be
      positive when a count is zero.
    """

    background: float = eqx.field(static=True)

    def __init__(self, background: float = 0.0):
        if isinstance(background, bool) or not isinstance(
            background, int | float | np.floating
        ):
            raise TypeError(
                f"`background` must be a non-negative number, got {type(background).__name__}."
            )
        if not (np.isfinite(background) and background >= 0):
            raise ValueError(
                f"`background` must be finite and >= 0, got {background!r}."
            )
        self.background = float(background)

    def total(self, v, y):
        s = v + self.background
        return jnp.sum(s - jax.scipy.special.xlogy(y, s))

    def infimum(self, y):
        return jnp.sum(y - jax.scipy.special.xlogy(y, y))

    def minimiser(self, y):
        # Attained only when every count is positive (else v + b → 0 at the edge).
        if is_concrete(y) and np.any(np.asarray(y) <= 0):
            return None
        return y - self.background

    def in_domain(self, v, y):
        return jnp.all(v + self.background > 0)

    def pl_constant(self, v0, y):
        # A zero count puts ℓ's infimum on the domain's edge (unattained):
        # no certificate (`pl_undecided_reason`).
        if is_concrete(y) and np.any(np.asarray(y) <= 0):
            return None
        # Per coordinate, with s = v + b = y t: f − f* = y (t − 1 − log t) and
        # f'² = (1 − 1/t)²; their ratio falls with t, and on S0 one coordinate
        # can hold the whole excess c = total(v0) − total*, so each coordinate's
        # least ratio is at the upper end of {t : y (t − 1 − log t) ≤ c}, where
        # it is (1 − 1/t)²/(2c); the largest count gives the least.
        c = jnp.maximum(self.total(v0, y) - self.infimum(y), 0)
        y_max = jnp.max(y)
        w = _upper_root(c / y_max)  # t − 1
        ratio = (w / (1 + w)) ** 2 / (2 * jnp.where(c > 0, c, 1))
        return jnp.where(c > 0, ratio, 1 / y_max)  # c → 0: (1 − 1/t)² ≈ 2c/y

    def pl_undecided_reason(self, y):
        zeros = int(np.sum(np.asarray(y) <= 0)) if is_concrete(y) else 0
        return (
            f"Poisson data with {zeros} zero count(s): ℓ's infimum lies on the "
            "domain's edge, where no Polyak–Łojasiewicz constant bounds the excess"
        )

    def check_observation(self, y) -> None:
        if not is_concrete(y):
            return
        y = np.asarray(y)
        if np.any(y < 0) or np.any(y != np.round(y)) or not np.all(np.isfinite(y)):
            raise ValueError(
                "`y` must be non-negative counts (whole numbers) for a Poisson loss; "
                f"got values in [{y.min():.4g}, {y.max():.4g}]"
                + ("" if np.all(y == np.round(y)) else ", not all whole numbers")
                + "."
            )
        if self.background <= 0 and np.any(y == 0):
            raise ValueError(
                "`background` must be > 0 for a Poisson loss when a count is zero "
                f"({int(np.sum(y == 0))} zero counts in `y`): with b = 0 the loss "
                "has no minimiser and its infimum lies on the domain's edge."
            )


@jax.jit  # compiled once per dtype: certificates call it eagerly
def _upper_root(u):
    """The `w > 0` with `w − log(1 + w) = u` (u ≥ 0), by Newton's method from the
    right, where it converges monotonically (the function is convex and
    increasing): `w0 = u + sqrt(u² + 2u)` lies right of the root since
    `w − log(1 + w) ≥ w²/(2(1 + w))`."""
    w0 = u + jnp.sqrt(u**2 + 2 * u)

    def newton(_, w):
        step = (w - jnp.log1p(w) - u) * (1 + w) / jnp.where(w > 0, w, 1)
        return jnp.where(w > 0, w - step, w)

    return jax.lax.fori_loop(0, 100, newton, w0)


def check_loss(loss) -> AbstractLoss:
    """`loss` itself when it is a loss, else a `TypeError` naming it."""
    if not isinstance(loss, AbstractLoss):
        raise TypeError(
            "`loss` must be a dipflow.losses.AbstractLoss (SquaredError(), "
            f"PseudoHuber(delta), Poisson(background) or your own), got {type(loss).__name__}."
        )
    return loss


# The names people type (CLI, TOML, `Cell(loss=...)`), parsed here and nowhere else.
_LOSS_KINDS = {
    "squared": (SquaredError, None),
    "pseudo_huber": (PseudoHuber, "delta"),
    "poisson": (Poisson, "background"),
}


def parse_loss(text: str) -> AbstractLoss:
    """A loss from its name: `"squared"`, `"pseudo_huber:DELTA"` (or
    `pseudo-huber`), `"poisson"` or `"poisson:BACKGROUND"`."""
    if not isinstance(text, str):
        raise TypeError(
            f"`loss` must be a string such as 'pseudo_huber:0.5', got {text!r}."
        )
    name, _, arg = text.strip().partition(":")
    name = name.strip().lower().replace("-", "_")
    if name not in _LOSS_KINDS:
        raise ValueError(
            f"`loss` must be one of 'squared', 'pseudo_huber:DELTA', "
            f"'poisson[:BACKGROUND]', got {text!r}."
        )
    kind, parameter = _LOSS_KINDS[name]
    if parameter is None:
        if arg:
            raise ValueError(f"`loss` 'squared' takes no parameter, got {text!r}.")
        return kind()
    if not arg:
        if kind is PseudoHuber:
            raise ValueError(
                f"`loss` 'pseudo_huber' needs its delta: 'pseudo_huber:0.5', got {text!r}."
            )
        return kind()
    try:
        value = float(arg)
    except ValueError:
        raise ValueError(f"`loss` {text!r}: {parameter} must be a number.") from None
    return kind(value)


def loss_name(loss: AbstractLoss) -> str:
    """The name [`parse_loss`][dipflow.problems._losses.parse_loss] reads back."""
    for name, (kind, parameter) in _LOSS_KINDS.items():
        if type(loss) is kind:
            return name if parameter is None else f"{name}:{getattr(loss, parameter):g}"
    raise ValueError(f"{type(loss).__name__} has no name: only built-in losses do.")
