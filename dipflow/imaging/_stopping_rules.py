"""The stopping rules [`dipflow.fit_image`][] compares, as values: the oracle
best PSNR (`Oracle`), ES-WMV (`ESWMV`) and the time (6) of the theory
(`TheoryTime`).

A rule watches a run along training through a watch (`AbstractWatch`): arrays
only, part of the training loop's carry, fed every iterate. It keeps the
reconstruction where the rule stops, so that no iterate is stored. After
training the rule decides, on the host, from the watch and the PSNR curve.
"""

import abc
import math
from typing import ClassVar, NamedTuple

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from equinox import AbstractClassVar
from jaxtyping import Array, Float, Int

from ._early_stopping import WMV_PATIENCE, WMV_WINDOW, WMVState, theory_stop


class Stop(NamedTuple):
    """Where a rule stopped one run.

    - `iteration`: the iteration it chose (a float for the time (6), which may
      lie beyond the run or be undefined: NaN).
    - `reached`: whether the run got there (for ES-WMV: whether its patience
      ran out; else `iteration` is its candidate so far).
    - `psnr`: the PSNR there (NaN where not reached, for the time (6)).
    - `image`: the reconstruction there, flattened (`None` where there is none).
    """

    iteration: float | int
    reached: bool
    psnr: float
    image: np.ndarray | None


class AbstractWatch(eqx.Module):
    """What a rule keeps of a run along training: arrays only. One run's, or,
    where the runs are stacked, every run's along a leading axis."""

    @abc.abstractmethod
    def update(self, t, x, psnr) -> "AbstractWatch":
        """The watch after the iterate `x` of iteration `t` (PSNR `psnr`)."""

    @abc.abstractmethod
    def trace(self) -> dict[str, Array]:
        """Values recorded at every iteration, by column name."""


class KeepAt(AbstractWatch):
    """The iterate of iteration `at` (−1: none)."""

    at: Int[Array, "*runs"]
    x: Float[Array, "*runs n"]

    def update(self, t, x, psnr):
        return KeepAt(at=self.at, x=jnp.where(t == self.at, x, self.x))

    def trace(self):
        return {}


class BestPSNR(AbstractWatch):
    """The best PSNR so far, its iteration and its iterate."""

    psnr: Float[Array, "*runs"]
    at: Int[Array, "*runs"]
    x: Float[Array, "*runs n"]

    def update(self, t, x, psnr):
        better = psnr > self.psnr
        return BestPSNR(
            psnr=jnp.where(better, psnr, self.psnr),
            at=jnp.where(better, t, self.at),
            x=jnp.where(better, x, self.x),
        )

    def trace(self):
        return {}


class WMVWatch(AbstractWatch):
    """ES-WMV's streaming state and the iterate at its best index."""

    wmv: WMVState
    x: Float[Array, "*runs n"]

    def update(self, t, x, psnr):
        wmv = self.wmv.update(x)
        return WMVWatch(wmv=wmv, x=jnp.where(wmv.best_index == t, x, self.x))

    def trace(self):
        return {"wmv_variance": self.wmv.variance}


class AbstractStoppingRule(eqx.Module):
    """A stopping rule compared by [`dipflow.fit_image`][]."""

    # The rule's key in `ImageFit.stops` and `ImageFit.images`.
    name: AbstractClassVar[str]
    # How figures name it.
    label: AbstractClassVar[str]

    @abc.abstractmethod
    def watch(
        self, x: Float[Array, "runs n"], psnr: Float[Array, " runs"]
    ) -> AbstractWatch:
        """The watch of every run at iteration 0 (iterates `x`, PSNR `psnr`)."""

    @abc.abstractmethod
    def decide(self, run: int, watch: AbstractWatch, psnr_curve) -> Stop:
        """Where run `run` stops, from its watch at the end of training and
        its PSNR curve (iterations `0 … iters`)."""

    @abc.abstractmethod
    def caption(self, stop: dict) -> str:
        """A figure's caption of `stop` (a `Stop` as `ImageFit.stops` holds it)."""


def _caption(label: str, stop: dict) -> str:
    return f"{label}: it {int(stop['iteration'])}, {stop['psnr']:.2f} dB"


class Oracle(AbstractStoppingRule):
    """The best PSNR along training: needs the ground truth; always reached."""

    name: ClassVar[str] = "oracle"
    label: ClassVar[str] = "oracle"

    def watch(self, x, psnr):
        return BestPSNR(psnr=psnr, at=jnp.zeros(psnr.shape, int), x=x)

    def decide(self, run, watch, psnr_curve):
        return Stop(int(watch.at), True, float(watch.psnr), np.asarray(watch.x))

    def caption(self, stop):
        return _caption(self.label, stop)


class ESWMV(AbstractStoppingRule):
    """ES-WMV (see [`dipflow.WMVState`][]): the minimum of the windowed moving
    variance of the iterates, once `patience` iterations have not improved it;
    before that, its candidate so far.

    **Arguments:**

    - `window`, `patience`: W and the patience.
    """

    window: int = eqx.field(static=True, default=WMV_WINDOW)
    patience: int = eqx.field(static=True, default=WMV_PATIENCE)
    name: ClassVar[str] = "wmv"
    label: ClassVar[str] = "ES-WMV"

    def watch(self, x, psnr):
        def one(x):
            state = WMVState.init(x.size, self.window, self.patience, x.dtype)
            return state.update(x)

        return WMVWatch(wmv=eqx.filter_vmap(one)(x), x=x)

    def decide(self, run, watch, psnr_curve):
        at = int(watch.wmv.best_index)
        reached = bool(watch.wmv.stopped)
        return Stop(at, reached, float(psnr_curve[at]), np.asarray(watch.x))

    def caption(self, stop):
        if stop["reached"]:
            return _caption(self.label, stop)
        # Its patience had not run out: the candidate so far.
        return (
            f"{self.label}: it {int(stop['iteration'])} (candidate), "
            f"{stop['psnr']:.2f} dB"
        )


class TheoryTime(AbstractStoppingRule):
    """The stopping time (6) of the theory, as an iteration of each run (see
    [`dipflow.theory_stop`][]); not reached when it lies beyond the run, or is
    undefined (NaN: no noise).

    **Arguments:**

    - `iteration`: the iteration of each run, a float array (see `of`).
    """

    iteration: np.ndarray
    name: ClassVar[str] = "theory"
    label: ClassVar[str] = "(6)"

    @classmethod
    def of(cls, r0, noise_norm, sigma_A, sigma_J0, m, step_size) -> "TheoryTime":
        """The time (6) of each run from its `‖y − y(0)‖` (`r0`), `‖ε‖` (0:
        no noise), σ_A and σ_min(J0), for `m` measurements and steps of
        `step_size`. For a loss with PL constant `μ_T` (of the summed loss),
        `r0` is the effective residual, `noise_norm` the noise footprint
        `‖v* − ȳ‖` and `m` is `m/μ_T` (per run, an array)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            noise = np.where(noise_norm > 0, noise_norm, np.nan)
            t = theory_stop(r0, noise, sigma_A, sigma_J0, m, step_size)
        return cls(iteration=np.asarray(t))

    def watch(self, x, psnr):
        t = self.iteration
        # −1: never (undefined); capped so that it fits the loop's integers.
        at = np.where(np.isfinite(t), np.minimum(t, 2**30), -1)
        return KeepAt(at=jnp.asarray(at, int), x=x)

    def decide(self, run, watch, psnr_curve):
        t = self.iteration[run]
        reached = bool(np.isfinite(t) and t <= len(psnr_curve) - 1)
        if not reached:
            return Stop(float(t), False, math.nan, None)
        return Stop(float(t), True, float(psnr_curve[int(t)]), np.asarray(watch.x))

    def caption(self, stop):
        if stop["reached"]:
            return _caption(self.label, stop)
        return f"{self.label}: it {stop['iteration']:.3g}, not reached"
