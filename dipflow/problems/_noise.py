"""Noise models: how the observation `y` is made from the clean measurement
`ȳ = A x̄`.

A noise model is a value. It draws `y` from `ȳ` with a JAX key (problems and
images) or a NumPy generator (studies and `dipflow verify`, which draw their
instances on the host), and may ask for a gain on `A`: Poisson counts "at a
peak" need the operator scaled so that the brightest clean measurement is that
many photons. Whatever the model, the problem stores `noise = y − A x̄` (for
Poisson counts, the background included), so that `ȳ = y − noise` and the
noise footprint `||v* − ȳ||` of a certificate are the same for every model.
"""

from __future__ import annotations

import abc
import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._core._checks import is_concrete


def _level(name: str, value, *, at_most_one: bool = False) -> float:
    """A noise level: a finite real number ≥ 0 (≤ 1 for a probability);
    tracers pass unchecked."""
    if not is_concrete(value):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise TypeError(f"`{name}` must be a real number, got {value!r}.")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (at_most_one and value > 1):
        bound = "in [0, 1]" if at_most_one else "finite and >= 0"
        raise ValueError(f"`{name}` must be {bound}, got {value!r}.")
    return value


class AbstractNoise(eqx.Module):
    """A noise model: draws the observation `y` from the clean measurement `ȳ`.

    Subclass it for a model of your own: `observe` (JAX) and `observe_numpy`
    (a NumPy generator) are required; override `gain` when the model fixes the
    scale of `A` (as Poisson counts at a peak do).
    """

    # Whether `gain` scales the operator (else it is 1 and `A` is kept as is).
    scales_operator: ClassVar[bool] = False

    def gain(self, clean) -> float:
        """The factor applied to `A` (and so to `ȳ`) before drawing: 1 unless
        the model fixes the signal's scale."""
        return 1.0

    @abc.abstractmethod
    def observe(
        self, key: PRNGKeyArray, clean: Float[Array, " m"]
    ) -> tuple[Float[Array, " m"], Float[Array, " m"]]:
        """`(y, y − ȳ)` drawn from `key`, given the (scaled) clean measurement."""

    @abc.abstractmethod
    def observe_numpy(
        self, rng: np.random.Generator, clean: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """`(y, y − ȳ)` drawn from the NumPy generator `rng`."""

    @property
    @abc.abstractmethod
    def level(self) -> float:
        """The model's one number (σ, peak, density, scale): for tables."""


class GaussianNoise(AbstractNoise):
    """iid Gaussian noise, `y = ȳ + σ z` with `z ~ N(0, I_m)`: the paper's.

    **Arguments:**

    - `sigma`: the standard deviation σ ≥ 0.
    """

    sigma: float

    def __init__(self, sigma=0.0):
        self.sigma = _level("sigma", sigma)

    @property
    def level(self):
        return self.sigma

    def observe(self, key, clean):
        eps = self.sigma * jax.random.normal(key, clean.shape, clean.dtype)
        return clean + eps, eps

    def observe_numpy(self, rng, clean):
        eps = self.sigma * rng.standard_normal(clean.shape[0])
        return clean + eps, eps


class LaplaceNoise(AbstractNoise):
    """iid Laplace noise, `y = ȳ + s z` with `z` of density `e^{−|z|}/2`
    (heavier tails than Gaussian; standard deviation `√2 s`).

    **Arguments:**

    - `scale`: the scale `s ≥ 0`.
    """

    scale: float

    def __init__(self, scale=0.0):
        self.scale = _level("scale", scale)

    @property
    def level(self):
        return self.scale

    def observe(self, key, clean):
        eps = self.scale * jax.random.laplace(key, clean.shape, clean.dtype)
        return clean + eps, eps

    def observe_numpy(self, rng, clean):
        eps = self.scale * rng.laplace(size=clean.shape[0])
        return clean + eps, eps


class ImpulseNoise(AbstractNoise):
    """Salt-and-pepper noise: each measurement, independently with probability
    `density`, is replaced by `low` or `high` (even odds); the others are exact.

    **Arguments:**

    - `density`: the fraction of corrupted measurements, in [0, 1].
    - `low`, `high`: the values written (default: the clean measurement's
      minimum and maximum, so `0` and `1` for an image in [0, 1] observed
      through a mask).
    """

    density: float
    low: float | None = eqx.field(static=True)
    high: float | None = eqx.field(static=True)

    def __init__(self, density=0.0, low=None, high=None):
        self.density = _level("density", density, at_most_one=True)
        for name, value in (("low", low), ("high", high)):
            if value is not None and not (
                isinstance(value, int | float | np.number)
                and not isinstance(value, bool)
                and math.isfinite(value)
            ):
                raise ValueError(
                    f"`{name}` must be None or a finite number, got {value!r}."
                )
        if low is not None and high is not None and low > high:
            raise ValueError(f"`low` must be <= `high`, got {low!r} > {high!r}.")
        self.low = None if low is None else float(low)
        self.high = None if high is None else float(high)

    @property
    def level(self):
        return self.density

    def _extremes(self, clean, xp):
        low = xp.min(clean) if self.low is None else self.low
        high = xp.max(clean) if self.high is None else self.high
        return low, high

    def observe(self, key, clean):
        k_hit, k_salt = jax.random.split(key)
        low, high = self._extremes(clean, jnp)
        hit = jax.random.uniform(k_hit, clean.shape, clean.dtype) < self.density
        salt = jax.random.uniform(k_salt, clean.shape, clean.dtype) < 0.5
        y = jnp.where(hit, jnp.where(salt, high, low), clean).astype(clean.dtype)
        return y, y - clean

    def observe_numpy(self, rng, clean):
        low, high = self._extremes(clean, np)
        hit = rng.random(clean.shape[0]) < self.density
        salt = rng.random(clean.shape[0]) < 0.5
        y = np.where(hit, np.where(salt, high, low), clean)
        return y, y - clean


class PoissonNoise(AbstractNoise):
    """Photon counts at a peak: `y ~ Poisson(g ȳ + b)` with the gain
    `g = peak / max|ȳ|`, so the brightest clean measurement is `peak` photons
    above the background `b`. The problem's operator becomes `g A`, and the
    matched loss is [`dipflow.losses.Poisson`][]`(background=b)`.

    The intensity `g ȳ + b` must be non-negative: a clean measurement of both
    signs (a Gaussian `A` and `x̄`) needs `b ≥ peak`.

    **Arguments:**

    - `peak`: the photon count of the brightest clean measurement, > 0.
    - `background`: the known background `b ≥ 0` (dark counts).
    """

    peak: float
    background: float

    scales_operator: ClassVar[bool] = True

    def __init__(self, peak=10.0, background=0.0):
        self.peak = _level("peak", peak)
        if is_concrete(self.peak) and self.peak == 0:
            raise ValueError("`peak` must be > 0 (a count level), got 0.")
        self.background = _level("background", background)

    @property
    def level(self):
        return self.peak

    def gain(self, clean):
        top = jnp.max(jnp.abs(clean))
        if is_concrete(top) and not float(top) > 0:
            raise ValueError(
                "Poisson noise at a peak needs a clean measurement A x̄ that is "
                "not zero: its gain is peak / max|A x̄|."
            )
        return self.peak / top

    def _intensity(self, clean, xp):
        lam = clean + self.background
        if is_concrete(lam) and float(xp.min(lam)) < 0:
            raise ValueError(
                f"`background` {self.background:g} leaves a negative Poisson intensity "
                f"(min of g A x̄ + b is {float(xp.min(lam)):.4g}); with a clean "
                f"measurement of both signs, give `background` >= `peak`."
            )
        return xp.maximum(lam, 0)

    def observe(self, key, clean):
        lam = self._intensity(clean, jnp)
        y = jax.random.poisson(key, lam, clean.shape).astype(clean.dtype)
        return y, y - clean

    def observe_numpy(self, rng, clean):
        y = rng.poisson(self._intensity(clean, np)).astype(np.float64)
        return y, y - clean


def check_noise(noise) -> AbstractNoise:
    """`noise` as a model: a number is a Gaussian standard deviation."""
    if isinstance(noise, AbstractNoise):
        return noise
    if not is_concrete(noise) or (
        isinstance(noise, int | float | np.number) and not isinstance(noise, bool)
    ):
        return GaussianNoise(_level("noise", noise))
    raise TypeError(
        "`noise` must be a standard deviation (a number) or a "
        f"dipflow.noise.AbstractNoise, got {type(noise).__name__}."
    )


# The names people type (CLI, TOML, `Cell(noise=...)`), parsed here and nowhere else.
_NOISE_KINDS = {
    "gaussian": (GaussianNoise, ("sigma",)),
    "laplace": (LaplaceNoise, ("scale",)),
    "impulse": (ImpulseNoise, ("density",)),
    "poisson": (PoissonNoise, ("peak", "background")),
}
_NOISE_FORMS = (
    "'gaussian:SIGMA', 'laplace:SCALE', 'impulse:DENSITY', 'poisson:PEAK[:BACKGROUND]'"
)


def parse_noise(text: str) -> AbstractNoise:
    """A noise model from its name: `"gaussian:SIGMA"`, `"laplace:SCALE"`,
    `"impulse:DENSITY"` (salt and pepper) or `"poisson:PEAK[:BACKGROUND]"`."""
    if not isinstance(text, str):
        raise TypeError(
            f"`noise` must be a string such as {_NOISE_FORMS}, got {text!r}."
        )
    name, *args = [part.strip() for part in text.strip().split(":")]
    name = name.lower().replace("-", "_")
    if name == "salt_and_pepper":
        name = "impulse"
    if name not in _NOISE_KINDS:
        raise ValueError(f"`noise` must be one of {_NOISE_FORMS}, got {text!r}.")
    kind, parameters = _NOISE_KINDS[name]
    if not 1 <= len(args) <= len(parameters):
        raise ValueError(
            f"`noise` {text!r}: {name} takes {' and '.join(parameters)}"
            f" ({len(parameters) - 1 or 'no'} optional), as in {_NOISE_FORMS}."
        )
    values = []
    for parameter, arg in zip(
        parameters, args, strict=False
    ):  # optional ones may be left out
        try:
            values.append(float(arg))
        except ValueError:
            raise ValueError(
                f"`noise` {text!r}: `{parameter}` must be a number."
            ) from None
    return kind(*values)


def noise_name(noise: AbstractNoise) -> str:
    """The name [`parse_noise`][dipflow.problems._noise.parse_noise] reads back."""
    for name, (kind, parameters) in _NOISE_KINDS.items():
        if type(noise) is kind:
            values = [getattr(noise, p) for p in parameters]
            if kind is PoissonNoise and noise.background == 0:
                values = values[:1]
            return ":".join([name, *(f"{v:g}" for v in values)])
    raise ValueError(f"{type(noise).__name__} has no name: only built-in models do.")
