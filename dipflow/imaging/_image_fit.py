"""Deep Image Prior on one image: train a generator with the core's discrete
trainers and measure, along the run, what the theory is about — the residual,
‖y(t) − ȳ‖, PSNR/SSIM, ‖θ(t) − θ0‖, σ_min(J(θ_t)) — and where three stopping
rules stop: the time (6), the oracle best PSNR, and ES-WMV.

The work is shared out: the runs as stacks (`_runs`), how they share a
program (`_batching`), the training steps (`_image_steps`), the theory's
measurements (`_image_theory`), the stopping rules (`_stopping_rules`) and the
result (`_image_result`); `fit_image` puts them together.
"""

from __future__ import annotations

import numpy as np

from .._core._checks import nonnegative_int, option, positive_int
from ._batching import (
    BATCHINGS as BATCHINGS,
    batching_from_name,
    default_batching as default_batching,
)
from ._early_stopping import WMV_PATIENCE, WMV_WINDOW
from ._image_result import ImageFit as ImageFit, decide, trajectory
from ._image_steps import (
    TRAINERS as TRAINERS,
    initial_carry,
    train,
    trainer as _trainer,
)
from ._image_theory import (
    SIGMA_MIN_METHODS,
    LossCertificate,
    Recorder,
    SigmaMinEstimator,
    as_dtype as as_dtype,
    check_initial_domain,
    initial,
    initial_sigma_min,
    operator_and_noise,
)
from ._runs import Runs
from ._stopping_rules import ESWMV, Oracle, TheoryTime


def _over_seeds(fn, batching, *args):
    """`fn` applied to every seed of `args` (stacked along a leading axis), by
    the batching named `batching`."""
    return batching_from_name(batching).over(fn, *args)


def fit_image(
    nets,
    problem,
    truth,
    *,
    optimizer="adam",
    lr=0.01,
    momentum=None,
    iters=1000,
    record_every=10,
    sigma_min_at=None,
    sigma_min_method="lanczos",
    lanczos_iters=None,
    sigma_min_x64=True,
    sigma_min_J0_of=None,
    wmv_window=WMV_WINDOW,
    wmv_patience=WMV_PATIENCE,
    batching=None,
    progress=True,
) -> ImageFit:
    """Fit generator(s) to observed image(s) and measure the theory along training.

    Every network is a run; the runs train together, in one call (see `batching`).
    They share one problem (seeds of a generator on one image), or each has its
    own (several images, or several draws of the operator).

    **Arguments:**

    - `nets`: a generator whose output is the image flattened, or a list of
      them of one structure and size (seeds).
    - `problem`: a [`dipflow.InverseProblem`][] shared by every run, or a list
      of them, one per network, alike in their operator's kind and sizes (the
      noise, if given as `problem.noise`, sets `||ε||` in (6)).
    - `truth`: the clean image `(C, H, W)` of the problem (PSNR, SSIM and
      ȳ = A x̄), or one per problem: a list of them or an array
      `(runs, C, H, W)`.
    - `optimizer`: `"adam"` (DIP's default), `"gd"`, `"heavy_ball"` or
      `"nesterov"` (momentum `momentum`, default 0.9); `lr`: the step size.
    - `iters`: training iterations; `record_every`: the trajectory's spacing.
    - `sigma_min_at`: iterations at which σ_min(J(θ_t)) is computed (default:
      the first and the last).
    - `sigma_min_method`: how: `"lanczos"` (the default: an estimate, flagged
      a value or only an upper bound), `"auto"` (exactly, `"gram"`, when the
      `n × n` Gram fits in 2 GiB, n ≤ 16384 pixels in float64; else
      `"lanczos"`) or `"gram"` (the eigenvalues of `J Jᵀ` assembled from
      blocks of vjps and jvps, J never formed: n vjps and n jvps, so it costs
      about as many training iterations as there are pixels, or more; see
      `benchmarks/bench_exact_sigma_min.py`; at 64 × 64 minutes where 300
      Lanczos steps take under one).
      Every σ_min comes with its residual and a flag: a value, or only an
      upper bound (the residual above a tenth of σ_min²; see
      [`dipflow.EigenEstimate`][]).
    - `lanczos_iters`: Lanczos's matvecs where it runs (default 300, at most
      the number of pixels; at θ0 of two 64 × 64 ConvDecoders, 100 left
      σ_min 23 % and 30 % too large, 300 within 0.05 % and 1.8 %).
    - `sigma_min_x64`: estimate σ_min(J) in float64 (the network's parameters
      upcast) whatever the training precision. Along DIP training σ_min(J)²
      falls below `eps · ‖J Jᵀ‖` of float32, which cannot resolve it: a
      float32 estimate there is round-off. `False`: the network's own dtype.
    - `sigma_min_J0_of`: an earlier [`dipflow.ImageFit`][] of the same
      networks, whose σ_min(J(θ0)) (with its residual and convergence) is
      taken instead of estimated again: it depends on the networks only, not
      on the problem, so a study of several noises and losses estimates it once.
      Or the estimates themselves, one `SigmaMin(value, residual, converged)`
      per run (a study that wants σ_min(J0) exact and Lanczos along training).
    - `wmv_window`, `wmv_patience`: ES-WMV's window W and patience
      ([`dipflow.WMVState`][]).
    - `batching`: how runs share the work: in one program, `"vmap"`
      (vectorised), `"map"` (one after another, `lax.map`) or `"unroll"` (one
      copy of the network per run); or `"interleave"`, each run's step a call
      of one compiled program, the runs dispatched in turn. Default
      `"interleave"` on a CPU, where convolutions run slower vectorised or
      inside a loop, `"vmap"` on an accelerator (see
      `dipflow.imaging._batching.default_batching`). The results are the same either way.

    **The stopping time (6)** is `4m log(||y − y(0)|| / ||ε||)/(σ_A² σ_min(J0)²)`,
    a time of the gradient flow; it is reported as the iteration `t/lr` (exact
    for GD to first order in the step; for Adam and momentum a convention).
    Without noise it is undefined (NaN). Where σ_min(J0) is only an upper bound
    (a Lanczos estimate that has not converged) the time (6) is too early.

    **Returns:** an [`dipflow.ImageFit`][].
    """
    spec = _trainer(optimizer, lr, momentum)
    iters = positive_int("iters", iters)
    record_every = positive_int("record_every", record_every)
    sigma_min_method = option(
        "sigma_min_method", sigma_min_method, {m: m for m in SIGMA_MIN_METHODS}
    )
    if lanczos_iters is not None:
        lanczos_iters = positive_int("lanczos_iters", lanczos_iters)
    wmv = ESWMV(
        positive_int("wmv_window", wmv_window),
        positive_int("wmv_patience", wmv_patience),
    )
    batching = batching_from_name(batching)
    sigma_min_at = _sigma_min_points(sigma_min_at, iters)
    sigma_min = SigmaMinEstimator(lanczos_iters, sigma_min_x64, sigma_min_method)
    runs = Runs.of(nets, problem, truth)

    # The theory's quantities at θ0, before training.
    v0, p0 = (
        np.asarray(a)
        for a in initial(runs.nets, runs.problem, runs.truth, batching, runs.per_run)
    )
    check_initial_domain(runs.problems, v0)
    sigma_A, noise_norm = operator_and_noise(runs.problems, runs.count)
    sig0 = (
        sigma_min.of_runs(runs.nets, runs.count)
        if sigma_min_J0_of is None
        else initial_sigma_min(sigma_min_J0_of, runs.count)
    )
    sigma_J0 = np.array([s.value for s in sig0])
    certificate = LossCertificate.of(runs.problems, v0, sigma_A, sigma_J0)
    # (6) for the loss trained on: m/μ_T stands for m (1 for squared error).
    m_eff = runs.problems[0].m / certificate.pl_constant
    theory = TheoryTime.of(
        certificate.effective_residual,
        certificate.noise_footprint,
        sigma_A,
        sigma_J0,
        m_eff,
        lr,
    )
    rules = (theory, Oracle(), wmv)

    carry = initial_carry(runs, spec, rules, batching)
    recorder = Recorder(runs, batching, sigma_min, sigma_min_at)
    recorder(0, carry, sig0)
    points = sorted(
        set(range(0, iters + 1, record_every)) | set(sigma_min_at) | {iters}
    )
    trained = train(runs, spec, carry, batching, points, recorder, progress)

    curve = np.concatenate([p0[:, None], trained.psnr], axis=1)
    final = np.asarray(recorder.measured["x"])
    stops, images = decide(runs, rules, trained.carry["watches"], curve, final)
    return ImageFit(
        trajectory=trajectory(recorder.rows, trained.traces, runs.count),
        psnr_curve=curve,
        stops=stops,
        images=images,
        sec_per_iter=trained.sec_per_iter,
        sigma_A=sigma_A,
        sigma_min_J0=sigma_J0,
        noise_norm=noise_norm,
        sigma_min_J0_converged=np.array([s.converged for s in sig0]),
        rules=rules,
        certificate=certificate,
    )


def _sigma_min_points(sigma_min_at, iters: int) -> tuple:
    """The iterations at which σ_min(J) is estimated (default: the first and
    the last), checked."""
    sigma_min_at = (0, iters) if sigma_min_at is None else tuple(sigma_min_at)
    for s in sigma_min_at:
        nonnegative_int("sigma_min_at", s)
        if s > iters:
            raise ValueError(
                f"`sigma_min_at` must be in [0, iters = {iters}], got {s}."
            )
    return sigma_min_at
