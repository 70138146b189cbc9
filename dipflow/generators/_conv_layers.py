"""The layers of the convolutional generators, as PyTorch computes them, on one
image `(c, h, w)`: convolution (zero or reflection padding, stride), nearest
and bilinear resizing, per-channel normalisation, and PyTorch's initialisation.

The convolution, nearest resizing and normalisation also come channels-last,
on `(h, w, c)` (the `*_hwc` functions): XLA:CPU's convolutions want that
layout, and a network kept in it between its convolutions has no transposes
around them (`benchmarks/bench_conv_impl.py`).
"""

from __future__ import annotations

import enum
import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..problems._operators import check_image_shape

_EPS = 1e-5  # BatchNorm2d's default


class Padding(enum.StrEnum):
    """How a convolution pads its input by `(kh − 1)/2`: with zeros
    (PyTorch's default) or by reflection (the DIP code's)."""

    ZEROS = "zeros"
    REFLECT = "reflect"

    def pad(self, x: Float[Array, "h w c"], ph: int, pw: int):
        """`x` (channels-last) padded as the convolution needs it and the
        padding left for the convolution itself to add (zeros)."""
        if self is Padding.REFLECT and (ph or pw):
            return jnp.pad(x, ((ph, ph), (pw, pw), (0, 0)), mode="reflect"), (0, 0)
        return x, (ph, pw)


PADDINGS = {p.value: p for p in Padding}


def generator_image_shape(image_shape) -> tuple[int, int, int]:
    """`(C, H, W)` checked, with `C` 1 (grayscale) or 3 (colour)."""
    C, H, W = check_image_shape(image_shape)
    if C not in (1, 3):
        raise ValueError(
            f"`image_shape` must have C = 1 (grayscale) or 3 (colour), got {(C, H, W)}."
        )
    return C, H, W


def conv2d(
    x: Float[Array, "c h w"],
    w: Float[Array, "o c kh kw"],
    b,
    *,
    stride: int = 1,
    padding: Padding = Padding.ZEROS,
) -> Array:
    """Cross-correlation as `torch.nn.Conv2d` with padding `(kh − 1)/2`, as
    `padding` says."""
    out = conv2d_hwc(jnp.transpose(x, (1, 2, 0)), w, b, stride=stride, padding=padding)
    return jnp.transpose(out, (2, 0, 1))


def conv2d_hwc(
    x: Float[Array, "h w c"],
    w: Float[Array, "o c kh kw"],
    b,
    *,
    stride: int = 1,
    padding: Padding = Padding.ZEROS,
) -> Array:
    """`conv2d` on a channels-last image, the output `(h', w', o)`; `w` in
    PyTorch's layout."""
    x, (ph, pw) = padding.pad(x, (w.shape[2] - 1) // 2, (w.shape[3] - 1) // 2)
    out = jax.lax.conv_general_dilated(
        x[None],
        jnp.transpose(w, (2, 3, 1, 0)),
        (stride, stride),
        ((ph, ph), (pw, pw)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )[0]
    return out + b[None, None, :]


def _nearest(n_out: int, n_in: int):
    # torch's rule: output pixel i copies input pixel floor(i · n_in / n_out).
    return (jnp.arange(n_out) * n_in) // n_out


def resize_nearest(x: Float[Array, "c h w"], size: tuple[int, int]) -> Array:
    """`torch.nn.Upsample(size, mode="nearest")`: pixel `i` of the output
    copies pixel `floor(i · h / H)` of the input."""
    (H, W), (h, w) = size, x.shape[1:]
    return x[:, _nearest(H, h)][:, :, _nearest(W, w)]


def resize_nearest_hwc(x: Float[Array, "h w c"], size: tuple[int, int]) -> Array:
    """`resize_nearest` on a channels-last image."""
    (H, W), (h, w) = size, x.shape[:2]
    return x[_nearest(H, h)][:, _nearest(W, w)]


class Upsampling(enum.StrEnum):
    """How an image is doubled in each direction: `torch.nn.Upsample(
    scale_factor=2)` in mode `"bilinear"` or `"nearest"`."""

    BILINEAR = "bilinear"
    NEAREST = "nearest"

    def double(self, x: Float[Array, "c h w"]) -> Array:
        """`x` at twice its height and width."""
        if self is Upsampling.BILINEAR:
            return upsample_bilinear2(x)
        return resize_nearest(x, (2 * x.shape[1], 2 * x.shape[2]))

    def double_hwc(self, x: Float[Array, "h w c"]) -> Array:
        """`double` on a channels-last image."""
        if self is Upsampling.BILINEAR:
            return _double_linear(_double_linear(x, 0), 1)
        return resize_nearest_hwc(x, (2 * x.shape[0], 2 * x.shape[1]))


UPSAMPLINGS = {u.value: u for u in Upsampling}


def _double_linear(x: Array, axis: int) -> Array:
    # Output pixel 2i sits at input coordinate i − 1/4 and 2i + 1 at i + 1/4
    # (half-pixel centres), clamped at the borders.
    n = x.shape[axis]
    prev = jnp.take(x, jnp.maximum(jnp.arange(n) - 1, 0), axis=axis)
    nxt = jnp.take(x, jnp.minimum(jnp.arange(n) + 1, n - 1), axis=axis)
    even, odd = 0.75 * x + 0.25 * prev, 0.75 * x + 0.25 * nxt
    both = jnp.stack([even, odd], axis=axis + 1)
    return both.reshape(*x.shape[:axis], 2 * n, *x.shape[axis + 1 :])


def upsample_bilinear2(x: Float[Array, "c h w"]) -> Array:
    """`torch.nn.Upsample(scale_factor=2, mode="bilinear")` (`align_corners`
    false): the image doubled in each direction."""
    return _double_linear(_double_linear(x, 1), 2)


def channel_norm(x: Float[Array, "c h w"], scale, shift) -> Array:
    """Batch normalisation in training mode on a batch of one image: each
    channel standardised over its pixels (biased variance), then scaled and
    shifted."""
    return _standardise(x, (1, 2), scale[:, None, None], shift[:, None, None])


def channel_norm_hwc(x: Float[Array, "h w c"], scale, shift) -> Array:
    """`channel_norm` on a channels-last image."""
    return _standardise(x, (0, 1), scale[None, None, :], shift[None, None, :])


def _standardise(x, pixels, scale, shift):
    mean = jnp.mean(x, axis=pixels, keepdims=True)
    var = jnp.mean((x - mean) ** 2, axis=pixels, keepdims=True)
    return (x - mean) / jnp.sqrt(var + _EPS) * scale + shift


# Random arrays are drawn in blocks of one fixed size: a sampler compiles once
# per distribution and dtype for every shape (compiled per shape, the dozen
# shapes of a network cost seconds of compilation before any training).
_BLOCK = 4096


def draw(sample, key, shape, dtype, scale=1.0, shift=0.0) -> Array:
    """`scale · x + shift` with `x` of `shape` iid from `sample(key, shape,
    dtype)` (such as `jax.random.uniform`), drawn as blocks of `_BLOCK` keyed
    `fold_in(key, j)`: under `jit`/`vmap` the same draws as eagerly."""
    size = math.prod(shape)
    blocks = [
        sample(jax.random.fold_in(key, j), (_BLOCK,), dtype)
        for j in range(-(-size // _BLOCK))
    ]
    if not blocks:
        return jnp.zeros(shape, dtype)
    # Assembled on the host when the key is concrete: no compilation per shape.
    xp = jnp if isinstance(key, jax.core.Tracer) else np
    flat = xp.concatenate([xp.asarray(b) for b in blocks])[:size]
    return jnp.asarray((scale * flat + shift).astype(dtype).reshape(shape))


def torch_uniform(key, shape, fan_in: int, dtype) -> Array:
    """PyTorch's default initialisation of a convolution: iid `U(±1/√fan_in)`."""
    bound = 1 / math.sqrt(fan_in)
    return draw(jax.random.uniform, key, shape, dtype, 2 * bound, -bound)
