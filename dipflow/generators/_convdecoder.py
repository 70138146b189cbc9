"""The convolutional decoder of Darestani & Heckel as a DIP generator, in the
layout of deepinv's `ConvDecoder`: a fixed random tensor upsampled through
blocks of (nearest upsampling, 3×3 convolution, activation, per-channel
normalisation), then a 1×1 convolution to the image's channels.

Stateless, so that the gradient flow is defined: the normalisation is batch
normalisation in training mode on a batch of one image (statistics over the
pixels of each channel), recomputed at every call.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._core._checks import positive_int
from ._activations import get_activation
from ._conv_generator import AbstractConvGenerator
from ._conv_layers import (
    channel_norm_hwc,
    conv2d_hwc,
    draw,
    generator_image_shape,
    resize_nearest_hwc,
    torch_uniform,
)


def block_sizes(image_hw, input_size, layers: int) -> tuple[tuple[int, int], ...]:
    """The spatial size after each block's upsampling: geometric from
    `input_size` to the image in `layers − 1` steps (rounded up), the last block
    at the image's size."""
    (H, W), (h0, w0) = image_hw, input_size
    sx, sy = (H / h0) ** (1 / (layers - 1)), (W / w0) ** (1 / (layers - 1))
    inner = tuple(
        (math.ceil(sx**i * h0), math.ceil(sy**i * w0)) for i in range(1, layers - 1)
    )
    return (*inner, (H, W), (H, W))


def _sizes(sizes) -> tuple[tuple[int, int], ...]:
    return tuple(map(tuple, sizes))


class ConvDecoder(AbstractConvGenerator):
    """A convolutional decoder `g(u, θ)` returning the image `(C, H, W)`
    flattened (C order).

    **Fields:**

    - `weights`, `biases`: the 3×3 convolutions of the blocks, `(ch, ch, 3, 3)`.
    - `scales`, `shifts`: the per-channel normalisations.
    - `out_weight`, `out_bias`: the final 1×1 convolution to `C` channels.
    - `u`: the fixed input `(ch, h0, w0)`.
    - `sizes`: each block's size after upsampling.
    - `image_shape`, `activation`, `train` (keyword only): the image `(C, H, W)`,
      the activation, and `"conv"` (every convolution) and/or `"norm"`.
    """

    weights: tuple[Float[Array, "ch ch 3 3"], ...] = eqx.field(converter=tuple)
    biases: tuple[Float[Array, " ch"], ...] = eqx.field(converter=tuple)
    scales: tuple[Float[Array, " ch"], ...] = eqx.field(converter=tuple)
    shifts: tuple[Float[Array, " ch"], ...] = eqx.field(converter=tuple)
    out_weight: Float[Array, "C ch 1 1"]
    out_bias: Float[Array, " C"]
    u: Float[Array, "ch h0 w0"]
    sizes: tuple[tuple[int, int], ...] = eqx.field(static=True, converter=_sizes)

    @classmethod
    def init(
        cls,
        key: PRNGKeyArray,
        image_shape,
        *,
        channels=64,
        layers=4,
        input_size=(4, 4),
        activation="relu",
        train=("conv", "norm"),
        dtype=None,
    ) -> ConvDecoder:
        """Draw a decoder as PyTorch initialises one: every convolution's
        weights and bias iid `U(±1/√fan_in)`, normalisations at scale 1 and
        shift 0, and the input `u` iid N(0, 1).

        **Arguments:**

        - `key`: a JAX PRNG key; `image_shape`: `(C, H, W)`, `C` 1 or 3.
        - `channels`: channels of every block; `layers`: number of 3×3 blocks
          (≥ 2; `layers − 1` upsamplings).
        - `input_size`: `(h0, w0)` of `u`, at most the image's size.
        - `activation`: a registered name or an [`dipflow.Activation`][]
          (`"relu"` as in the original; a smooth one so that A-4 holds).
        - `train`: which groups train; `dtype`: default JAX float.
        """
        C, H, W = generator_image_shape(image_shape)
        ch = positive_int("channels", channels)
        layers = positive_int("layers", layers)
        if layers < 2:
            raise ValueError(f"`layers` must be >= 2, got {layers}.")
        if not (hasattr(input_size, "__len__") and len(input_size) == 2):
            raise ValueError(f"`input_size` must be (h0, w0), got {input_size!r}.")
        h0, w0 = (positive_int("input_size", s) for s in input_size)
        if h0 > H or w0 > W:
            raise ValueError(
                f"`input_size` {(h0, w0)} must not exceed the image's {(H, W)}."
            )
        dtype = jnp.result_type(float) if dtype is None else dtype
        keys = jax.random.split(key, 2 * layers + 3)

        def uniform(k, shape, fan_in):
            return torch_uniform(k, shape, fan_in, dtype)

        weights = tuple(
            uniform(keys[2 * i], (ch, ch, 3, 3), 9 * ch) for i in range(layers)
        )
        biases = tuple(uniform(keys[2 * i + 1], (ch,), 9 * ch) for i in range(layers))
        ones, zeros = jnp.ones((ch,), dtype), jnp.zeros((ch,), dtype)
        return cls(
            weights=weights,
            biases=biases,
            scales=(ones,) * layers,
            shifts=(zeros,) * layers,
            out_weight=uniform(keys[-3], (C, ch, 1, 1), ch),
            out_bias=uniform(keys[-2], (C,), ch),
            u=draw(jax.random.normal, keys[-1], (ch, h0, w0), dtype),
            sizes=block_sizes((H, W), (h0, w0), layers),
            image_shape=(C, H, W),
            activation=get_activation(activation),
            train=train,
        )

    def __call__(self) -> Float[Array, " n"]:
        # Channels-last between the convolutions: in (c, h, w), XLA:CPU
        # transposes around every convolution and reduces the normalisation's
        # statistics across the layout, which cost a gradient step ~25 % more
        # (benchmarks/bench_conv_impl.py).
        x = jnp.transpose(self.u, (1, 2, 0))
        for w, b, s, t, size in zip(
            self.weights, self.biases, self.scales, self.shifts, self.sizes, strict=True
        ):
            if x.shape[:2] != size:
                x = resize_nearest_hwc(x, size)
            x = channel_norm_hwc(self.activation(conv2d_hwc(x, w, b)), s, t)
        out = conv2d_hwc(x, self.out_weight, self.out_bias)
        return jnp.transpose(out, (2, 0, 1)).reshape(-1)

    def parameter_groups(self):
        conv = [*self.weights, *self.biases, self.out_weight, self.out_bias]
        return conv, [*self.scales, *self.shifts]
