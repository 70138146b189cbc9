"""What the theory is about, measured on the runs of a fit: the residual
‖A g − y‖, ‖A g − ȳ‖, ‖θ − θ0‖, σ_min(J(θ)) (exact, or by Lanczos), σ_A and
‖ε‖; and the trajectory's rows that hold them."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..problems._spectra import operator_spectrum
from ..theory._certificates import rate8
from ..theory._jacobians import gram_min_eigenvalue
from ..theory._loss_certificate import LossTerms
from ._batching import AbstractBatching, over_runs
from ._image_metrics import psnr, ssim_any_size
from ._runs import Runs, dynamics, index

# How `fit_image` may estimate σ_min(J) (see `SigmaMinEstimator`).
SIGMA_MIN_METHODS = ("auto", "gram", "lanczos")


class SigmaMin(NamedTuple):
    """σ_min(J), the residual of its λ_min(J Jᵀ) = σ_min², and whether it is
    a value (`converged`) or only an upper bound: the theory layer's contract
    ([`dipflow.EigenEstimate`][], `residual ≤ 0.1 λ`)."""

    value: float
    residual: float
    converged: bool


class SigmaMinEstimator(NamedTuple):
    """How σ_min(J) is estimated: by `method` of
    [`dipflow.gram_min_eigenvalue`][] (`"auto"`: exactly, the blocked Gram
    `J Jᵀ`, when it fits in memory, else Lanczos; `"gram"`; `"lanczos"`),
    Lanczos with `lanczos_iters` matvecs (None: the default), in float64
    with `x64` whatever the network's precision."""

    lanczos_iters: int | None
    x64: bool
    method: str = "auto"

    def __call__(self, net) -> SigmaMin:
        """σ_min(J) of `net`."""
        with jax.enable_x64(True) if self.x64 else contextlib.nullcontext():
            if self.x64:
                net = as_dtype(net, jnp.float64)
            est = gram_min_eigenvalue(
                net, method=self.method, num_iters=self.lanczos_iters
            )
            value, residual = float(est.value), float(est.residual)
            converged = bool(est.converged)
        return SigmaMin(math.sqrt(max(value, 0.0)), residual, converged)

    def of_runs(self, nets, count: int) -> list[SigmaMin]:
        """σ_min(J) of each of the `count` stacked networks `nets`."""
        return [self(index(nets, i)) for i in range(count)]


def initial_sigma_min(fit, count: int) -> list[SigmaMin]:
    """σ_min(J(θ0)) of each of `count` runs as the earlier fit `fit` of the
    same networks estimated it, or as given (`fit` a sequence of `SigmaMin`)."""
    if isinstance(fit, (list, tuple)):
        if len(fit) != count or not all(isinstance(s, SigmaMin) for s in fit):
            raise ValueError(
                f"`sigma_min_J0_of` must be an ImageFit or {count} SigmaMin "
                f"estimates (one per run), got {fit!r:.80}."
            )
        return list(fit)
    if len(fit.sigma_min_J0) != count:
        raise ValueError(
            f"`sigma_min_J0_of` holds {len(fit.sigma_min_J0)} runs, not {count}."
        )
    first = fit.trajectory[fit.trajectory.iteration == 0].sort_values("seed")
    return [
        SigmaMin(float(v), float(r), bool(c))
        for v, r, c in zip(
            fit.sigma_min_J0,
            first.sigma_min_residual,
            fit.sigma_min_J0_converged,
            strict=True,
        )
    ]


def as_dtype(tree, dtype):
    """`tree` with its floating arrays cast to `dtype`."""
    return jax.tree_util.tree_map(
        lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, tree
    )


def operator_and_noise(problems, count: int) -> tuple[np.ndarray, np.ndarray]:
    """σ_A and ‖ε‖ (0 without noise) of each run's problem."""
    sigma_A = np.array([float(operator_spectrum(p.A).sigma_A) for p in problems])
    noise_norm = np.array(
        [float(jnp.linalg.norm(p.noise)) if p.noise is not None else 0.0
         for p in problems]
    )  # fmt: skip
    return np.resize(sigma_A, count), np.resize(noise_norm, count)


@eqx.filter_jit
def initial(nets, problem, truth, batching, per_run):
    """The measurement `v0 = A g(θ0)` and the PSNR of every run at θ0."""

    def one(net, problem, truth):
        d = dynamics(net, problem)
        x = d.signal(d.initial_state())
        return problem.forward(x), psnr(x, truth)

    return over_runs(one, batching, per_run, nets, problem, truth)


def check_initial_domain(problems, v0) -> None:
    """Refuse, before training, a run whose initial measurement `v0` lies
    outside its loss's domain (a Poisson loss needs `v0 + b > 0`): its loss
    and gradient would be NaN from the first step."""
    for i, v in enumerate(np.asarray(v0)):
        problem = problems[i % len(problems)]
        if not bool(problem.loss.in_domain(jnp.asarray(v), problem.y)):
            raise ValueError(
                f"run {i}: the network's initial measurement A g(θ0) lies outside "
                f"the domain of the loss {type(problem.loss).__name__} (its smallest "
                f"entry is {float(v.min()):.4g}); for a Poisson loss give a `background` "
                f"above {float(-v.min()):.4g}, or a smaller peak."
            )


class LossCertificate(NamedTuple):
    """What Theorem 1 reads of each run's loss at θ0 (see
    [`dipflow.theorem1`][]): the summed loss's PL constant `μ_T`, the effective
    residual `ρ0` (‖y − y(0)‖ for squared error), the noise footprint
    `‖v* − ȳ‖` (‖ε‖ for squared error), the radius `R' = 2ρ0/(σ0 σ_A)` and the
    rate `μ_T σ0² σ_A²/4` of `sqrt(ℓ_T − ℓ_T*)` (the summed loss, flow time);
    NaN where the loss cannot give `μ` (`undecided` says why)."""

    pl_constant: np.ndarray
    effective_residual: np.ndarray
    noise_footprint: np.ndarray
    R_prime: np.ndarray
    rate: np.ndarray
    undecided: list

    @classmethod
    def of(cls, problems, v0, sigma_A, sigma_J0) -> "LossCertificate":
        """Per run, from its problem (cycled), `v0` (runs × m), σ_A and σ_min(J0)."""
        terms = [
            LossTerms.of(problems[i % len(problems)], jnp.asarray(v), v.dtype)
            for i, v in enumerate(np.asarray(v0))
        ]
        mu, rho0, footprint = (
            np.array([float(getattr(t, f)) for t in terms])
            for f in ("pl_total", "effective_residual", "noise_footprint")
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            R_prime = 2 * rho0 / (sigma_J0 * sigma_A)
        rate = rate8(sigma_J0, sigma_A, 1 / mu)
        return cls(mu, rho0, footprint, R_prime, rate, [t.undecided for t in terms])


@eqx.filter_jit
def measures(nets, problem, truth, state, batching, per_run):
    """Every run's residual, `‖A g − ȳ‖`, `‖θ − θ0‖`, image and network at
    the training state `state`."""

    def one(net, problem, truth, state):
        d = dynamics(net, problem)
        x_state = state[1]
        g = d.signal(x_state)
        return dict(
            residual=jnp.linalg.norm(d.residual(x_state)),
            prediction_error=jnp.linalg.norm(problem.forward(g - truth)),
            distance=d.distance(x_state),
            x=g,
            net=d.net(x_state),
        )

    return over_runs(one, batching, per_run, nets, problem, truth, state)


@dataclasses.dataclass
class Recorder:
    """The trajectory's rows, recorded as training reaches each chosen
    iteration; σ_min(J) estimated at `sigma_min_at`. `measured`: what
    `measures` measured last."""

    runs: Runs
    batching: AbstractBatching
    sigma_min: SigmaMinEstimator
    sigma_min_at: tuple
    rows: list = dataclasses.field(default_factory=list)
    measured: dict | None = None

    def __call__(self, point: int, carry, sig=None) -> None:
        """Record the runs at iteration `point` (training state
        `carry["state"]`), with σ_min(J) `sig` where given."""
        runs, state = self.runs, carry["state"]
        self.measured = measures(
            runs.nets, runs.problem, runs.truth, state, self.batching, runs.per_run
        )
        if sig is None and point in self.sigma_min_at:
            sig = self.sigma_min.of_runs(self.measured["net"], runs.count)
        self.rows += record(point, state[3], self.measured, runs.images, sig)


def record(point: int, loss, measured, images, sig) -> list[dict]:
    """The trajectory's rows at iteration `point`, one per run: the loss,
    what `measures` measured, PSNR and SSIM against `images` (one, or one per
    run), and σ_min where estimated (`sig`, else None)."""
    loss = np.asarray(loss)
    rows = []
    for i in range(len(loss)):
        x = np.asarray(measured["x"][i])
        truth = images[i % len(images)]
        rows.append(
            dict(
                seed=i,
                iteration=point,
                loss=float(loss[i]),
                residual=float(measured["residual"][i]),
                prediction_error=float(measured["prediction_error"][i]),
                psnr=float(psnr(x, truth.reshape(-1))),
                ssim=ssim_any_size(x.reshape(truth.shape), truth),
                distance=float(measured["distance"][i]),
                sigma_min=sig[i].value if sig else math.nan,
                sigma_min_residual=sig[i].residual if sig else math.nan,
                sigma_min_converged=sig[i].converged if sig else None,
            )
        )
    return rows
