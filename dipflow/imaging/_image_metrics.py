"""Image quality metrics: PSNR in JAX, SSIM on the host by scikit-image."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._core._checks import nonnegative_scalar


def _check_pair(x, reference):
    x, reference = jnp.asarray(x), jnp.asarray(reference)
    if x.shape != reference.shape:
        raise ValueError(
            f"`x` and `reference` must have the same shape, got {x.shape} and "
            f"{reference.shape}."
        )
    return x, reference


def psnr(x, reference, data_range=1.0) -> Float[Array, ""]:
    """The peak signal-to-noise ratio `10 log₁₀(data_range² / MSE)` in dB, the
    MSE over all entries (`+inf` when `x == reference`).

    Works on flat signals and on images of any shape, and under `jax.jit` and
    `jax.vmap`; as `skimage.metrics.peak_signal_noise_ratio`.

    **Arguments:**

    - `x`: the estimate.
    - `reference`: the ground truth, of the same shape.
    - `data_range`: the range of the values (1 for images in [0, 1]).

    **Returns:**

    A scalar JAX array.
    """
    x, reference = _check_pair(x, reference)
    nonnegative_scalar("data_range", data_range, strict=True)
    mse = jnp.mean((x - reference) ** 2)
    return 10 * jnp.log10(data_range**2 / mse)


def ssim(x, reference, data_range=1.0, **options) -> float:
    """The structural similarity of two images, on the host, by
    `skimage.metrics.structural_similarity` (mean SSIM over the image, and
    over channels for colour).

    **Arguments:**

    - `x`: the estimate, shape `(C, H, W)` or `(H, W)` (a flat signal must be
      reshaped first).
    - `reference`: the ground truth, of the same shape.
    - `data_range`: the range of the values (1 for images in [0, 1]).
    - `**options`: further keyword arguments of `structural_similarity`
      (`win_size`, `gaussian_weights`, …); the default 7 × 7 window needs
      `H, W >= 7`.

    **Returns:**

    A Python float (1 for identical images).
    """
    x, reference = _check_pair(x, reference)
    nonnegative_scalar("data_range", data_range, strict=True)
    if x.ndim not in (2, 3):
        raise ValueError(
            f"`x` must be an image of shape (C, H, W) or (H, W), got shape {x.shape}."
        )
    from skimage.metrics import structural_similarity

    x, reference = np.asarray(x, np.float64), np.asarray(reference, np.float64)
    if x.ndim == 3 and x.shape[0] == 1:
        x, reference = x[0], reference[0]
    channel_axis = 0 if x.ndim == 3 else None
    return float(
        structural_similarity(
            x,
            reference,
            data_range=float(data_range),
            channel_axis=channel_axis,
            **options,
        )
    )


def ssim_any_size(x, reference) -> float:
    """[`dipflow.ssim`][] with skimage's 7 × 7 window, shrunk (odd) for images
    smaller than that; NaN below 3 × 3."""
    side = min(reference.shape[-2:])
    win = min(7, side if side % 2 else side - 1)
    return ssim(x, reference, win_size=win) if win >= 3 else math.nan
