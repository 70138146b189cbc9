"""What [`dipflow.fit_image`][] returns: [`dipflow.ImageFit`][], and how it
is assembled from the trained runs."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ._image_metrics import ssim_any_size
from ._runs import Runs, index


@dataclasses.dataclass
class ImageFit:
    """What [`dipflow.fit_image`][] measured, one entry per run (network) where
    batched.

    **Fields:**

    - `trajectory`: a `pandas.DataFrame`, one row per run and recorded
      iteration: `seed` (the run's index in `nets`), `iteration`, `loss`,
      `residual` (‖A g − y‖), `prediction_error` (‖A g − ȳ‖), `psnr`, `ssim`, `distance` (‖θ − θ0‖),
      `sigma_min`, `sigma_min_residual` and `sigma_min_converged` (at the
      chosen iterations, NaN / None elsewhere; see `sigma_min_method`),
      `wmv_variance`.
    - `psnr_curve`: PSNR at every iteration, shape `(runs, iters + 1)`.
    - `stops`: one dict per run, `{rule: {"iteration", "psnr", "ssim",
      "reached"}}` for `theory` (the time (6) as an iteration), `oracle`
      (best PSNR) and `wmv` (ES-WMV).
    - `images`: per run, `{"final", "theory", "oracle", "wmv"}` reconstructions
      `(C, H, W)` (`theory` is `None` when the run stopped before (6)).
    - `sec_per_iter`: wall time per training iteration (all runs together),
      compilation excluded.
    - `sigma_A`, `sigma_min_J0` and `noise_norm` (‖ε‖), per run;
      `sigma_min_J0_converged`: whether each σ_min(J0) estimate converged.
    - `rules`: the stopping rules, in the order of `stops`: each has the
      `name` that keys it there and a `label` and `caption` for figures.
    - `certificate`: what Theorem 1 reads of each run's loss at θ0 (PL
      constant, effective residual ρ0, noise footprint ‖v* − ȳ‖, R' and the
      rate), from which the time (6) is computed for the loss trained on.

    A σ_min estimate is an upper bound; one that has not converged (residual
    above a tenth of its λ = σ_min², [`dipflow.EigenEstimate`][]) is only
    that, and can be far too large.
    """

    trajectory: object
    psnr_curve: np.ndarray
    stops: list[dict]
    images: list[dict]
    sec_per_iter: float
    sigma_A: np.ndarray
    sigma_min_J0: np.ndarray
    noise_norm: np.ndarray
    sigma_min_J0_converged: np.ndarray
    rules: tuple = ()
    certificate: object = None

    @property
    def final_psnr(self) -> np.ndarray:
        return self.psnr_curve[:, -1]

    @property
    def best_psnr(self) -> np.ndarray:
        return np.nanmax(self.psnr_curve, axis=1)


def trajectory(rows, traces, runs: int):
    """The trajectory's frame: the recorded rows, and each trace (values at
    iterations `1 … iters`, NaN at 0) at the rows' iterations."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    for name, values in traces.items():
        column = np.concatenate([np.full((runs, 1), np.nan), values], axis=1)
        frame[name] = [
            column[int(r.seed), int(r.iteration)] for r in frame.itertuples()
        ]
    return frame


def decide(runs: Runs, rules, watches, curve, final):
    """Every rule's stop and the reconstructions there, per run: `stops` and
    `images` of [`dipflow.ImageFit`][]. `watches`: the rules' watches at the
    end (stacked runs); `final`: the last images, flattened."""
    stops, images = [], []
    shape = runs.shape
    for i in range(runs.count):
        truth = runs.image(i)
        run_stops, run_images = {}, {"final": np.asarray(final[i]).reshape(shape)}
        for rule, watch in zip(rules, watches, strict=True):
            stop = rule.decide(i, index(watch, i), curve[i])
            image = None if stop.image is None else stop.image.reshape(shape)
            run_stops[rule.name] = dict(
                iteration=stop.iteration,
                reached=stop.reached,
                psnr=stop.psnr,
                ssim=math.nan if image is None else ssim_any_size(image, truth),
            )
            run_images[rule.name] = image
        stops.append(run_stops)
        images.append(run_images)
    return stops, images
