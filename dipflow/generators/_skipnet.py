"""The encoder-decoder with skip connections of Ulyanov, Vedaldi & Lempitsky
(Deep Image Prior, the `skip` network of their code) as a DIP generator.

Level `i` maps its input `x` to
`up(norm([skip(x), upsample(deeper(down(x)))]))`: `down` is a stride-2 3×3
convolution then a 3×3 convolution, `deeper` the next level (nothing at the
last), `skip` a 1×1 convolution, `up` a 3×3 then a 1×1 convolution; every
convolution is followed by a normalisation and the activation. A 1×1
convolution and a sigmoid map the first level's output to the image.

Stateless, as [`dipflow.ConvDecoder`][]: normalisations are batch
normalisations in training mode on one image, recomputed at every call.
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._core._checks import option, positive_int
from ._conv_generator import AbstractConvGenerator
from ._conv_layers import (
    PADDINGS,
    UPSAMPLINGS,
    Padding,
    Upsampling,
    channel_norm,
    channel_norm_hwc,
    conv2d,
    conv2d_hwc,
    draw,
    generator_image_shape,
    torch_uniform,
)


class ConvBlock(eqx.Module):
    """Convolution, normalisation, activation (the DIP code's order)."""

    weight: Float[Array, "o c kh kw"]
    bias: Float[Array, " o"]
    scale: Float[Array, " o"]
    shift: Float[Array, " o"]
    stride: int = eqx.field(static=True)

    def __call__(self, x, activation, padding: Padding):
        x = conv2d(x, self.weight, self.bias, stride=self.stride, padding=padding)
        return activation(channel_norm(x, self.scale, self.shift))

    def hwc(self, x, activation, padding: Padding):
        """The block on a channels-last image `(h, w, c)`."""
        x = conv2d_hwc(x, self.weight, self.bias, stride=self.stride, padding=padding)
        return activation(channel_norm_hwc(x, self.scale, self.shift))


class SkipLevel(eqx.Module):
    """One level of the encoder-decoder; `skip` is `None` without a skip
    connection."""

    down: ConvBlock
    down2: ConvBlock
    skip: ConvBlock | None
    scale: Float[Array, " c"]  # the normalisation after the concatenation
    shift: Float[Array, " c"]
    up: ConvBlock
    up1x1: ConvBlock

    def blocks(self) -> list[ConvBlock]:
        """The level's convolution blocks, the skip's where there is one."""
        skip = [] if self.skip is None else [self.skip]
        return [self.down, self.down2, *skip, self.up, self.up1x1]


def _conv_block(key, c_in, c_out, size, stride, dtype) -> ConvBlock:
    kw, kb = jax.random.split(key)
    fan_in = c_in * size * size
    return ConvBlock(
        weight=torch_uniform(kw, (c_out, c_in, size, size), fan_in, dtype),
        bias=torch_uniform(kb, (c_out,), fan_in, dtype),
        scale=jnp.ones((c_out,), dtype),
        shift=jnp.zeros((c_out,), dtype),
        stride=stride,
    )


def _per_level(name, value, levels: int, *, allow_zero: bool) -> tuple[int, ...]:
    values = (value,) * levels if isinstance(value, int) else tuple(value)
    if len(values) != levels:
        raise ValueError(
            f"`{name}` must be an int or one value per level ({levels}), got {value!r}."
        )
    for v in values:
        if (
            not isinstance(v, int)
            or isinstance(v, bool)
            or v < (0 if allow_zero else 1)
        ):
            raise ValueError(
                f"`{name}` must hold {'non-negative' if allow_zero else 'positive'} "
                f"ints, got {value!r}."
            )
    return values


def _upsampling(upsample) -> Upsampling:
    return option("upsample", upsample, UPSAMPLINGS)


def _padding(padding) -> Padding:
    return option("padding", padding, PADDINGS)


class SkipNet(AbstractConvGenerator):
    """The DIP encoder-decoder with skip connections, `g(u, θ)` returning the
    image `(C, H, W)` flattened (C order).

    **Fields:**

    - `levels`: the [`dipflow.SkipLevel`][]s, outermost first.
    - `out_weight`, `out_bias`: the final 1×1 convolution to `C` channels.
    - `u`: the fixed input `(input_channels, H, W)`.
    - `upsample` (`"bilinear"` or `"nearest"`), `padding` (`"reflect"` or
      `"zeros"`): given as names, held as their types; `sigmoid` (a sigmoid on
      the output).
    - `image_shape`, `activation`, `train` (keyword only): the image `(C, H, W)`,
      the activation, and `"conv"` (every convolution) and/or `"norm"`.
    """

    levels: tuple[SkipLevel, ...] = eqx.field(converter=tuple)
    out_weight: Float[Array, "C c 1 1"]
    out_bias: Float[Array, " C"]
    u: Float[Array, "c_u H W"]
    upsample: Upsampling = eqx.field(static=True, converter=_upsampling)
    padding: Padding = eqx.field(static=True, converter=_padding)
    sigmoid: bool = eqx.field(static=True, converter=bool)

    @classmethod
    def init(
        cls,
        key: PRNGKeyArray,
        image_shape,
        *,
        channels=(16, 32, 64),
        skip_channels=4,
        input_channels=32,
        activation="leaky_relu",
        upsample="bilinear",
        padding="reflect",
        sigmoid=True,
        train=("conv", "norm"),
        dtype=None,
    ) -> SkipNet:
        """Draw the network as the DIP code does: every convolution iid
        `U(±1/√fan_in)` (PyTorch's default), normalisations at scale 1 and
        shift 0, and the input `u` iid `U[0, 0.1)`.

        **Arguments:**

        - `key`: a JAX PRNG key; `image_shape`: `(C, H, W)`, `C` 1 or 3, `H`
          and `W` divisible by `2^levels`.
        - `channels`: the channels of each level, down and up (the number of
          levels is its length; the DIP paper's is `[128] * 5`).
        - `skip_channels`: the skip connection's channels, an int or one per
          level (0: no skip at that level).
        - `input_channels`: channels of `u`.
        - `activation`: a registered name or an [`dipflow.Activation`][]
          (`"leaky_relu"`, slope 0.2, as in the DIP code).
        - `upsample`, `padding`, `sigmoid`: see the fields.
        - `train`: which groups train; `dtype`: default JAX float.
        """
        C, H, W = generator_image_shape(image_shape)
        if isinstance(channels, int) or not isinstance(channels, Sequence):
            raise ValueError(
                f"`channels` must be a sequence (one per level), got {channels!r}."
            )
        L = len(channels)
        if L == 0:
            raise ValueError("`channels` must name at least one level.")
        channels = _per_level("channels", channels, L, allow_zero=False)
        skips = _per_level("skip_channels", skip_channels, L, allow_zero=True)
        c_u = positive_int("input_channels", input_channels)
        if H % 2**L or W % 2**L:
            raise ValueError(
                f"`image_shape` {(C, H, W)}: H and W must be divisible by 2^levels "
                f"= {2**L} for {L} levels."
            )
        upsample, padding = _upsampling(upsample), _padding(padding)
        dtype = jnp.result_type(float) if dtype is None else dtype
        *level_keys, k_w, k_b, k_u = jax.random.split(key, L + 3)
        levels, c_in = [], c_u
        for i, (c, s) in enumerate(zip(channels, skips, strict=True)):
            deeper = channels[i + 1] if i + 1 < L else c
            kd, kd2, ks, ku, ku1 = jax.random.split(level_keys[i], 5)
            levels.append(
                SkipLevel(
                    down=_conv_block(kd, c_in, c, 3, 2, dtype),
                    down2=_conv_block(kd2, c, c, 3, 1, dtype),
                    skip=_conv_block(ks, c_in, s, 1, 1, dtype) if s else None,
                    scale=jnp.ones((s + deeper,), dtype),
                    shift=jnp.zeros((s + deeper,), dtype),
                    up=_conv_block(ku, s + deeper, c, 3, 1, dtype),
                    up1x1=_conv_block(ku1, c, c, 1, 1, dtype),
                )
            )
            c_in = c
        c0 = channels[0]
        return cls(
            levels=tuple(levels),
            out_weight=torch_uniform(k_w, (C, c0, 1, 1), c0, dtype),
            out_bias=torch_uniform(k_b, (C,), c0, dtype),
            u=draw(jax.random.uniform, k_u, (c_u, H, W), dtype, scale=0.1),
            image_shape=(C, H, W),
            activation=activation,
            upsample=upsample,
            padding=padding,
            sigmoid=bool(sigmoid),
            train=train,
        )

    def _level(self, i: int, x: Array) -> Array:
        # Channels-last `(h, w, c)`, as the ConvDecoder: no transposes around
        # each convolution on XLA:CPU.
        level, act, pad = self.levels[i], self.activation, self.padding
        deeper = level.down2.hwc(level.down.hwc(x, act, pad), act, pad)
        if i + 1 < len(self.levels):
            deeper = self._level(i + 1, deeper)
        deeper = self.upsample.double_hwc(deeper)
        if level.skip is not None:
            deeper = jnp.concatenate([level.skip.hwc(x, act, pad), deeper], axis=-1)
        h = channel_norm_hwc(deeper, level.scale, level.shift)
        return level.up1x1.hwc(level.up.hwc(h, act, pad), act, pad)

    def __call__(self) -> Float[Array, " n"]:
        x = self._level(0, jnp.transpose(self.u, (1, 2, 0)))
        x = jnp.transpose(conv2d_hwc(x, self.out_weight, self.out_bias), (2, 0, 1))
        return (jax.nn.sigmoid(x) if self.sigmoid else x).reshape(-1)

    def parameter_groups(self):
        blocks = [block for level in self.levels for block in level.blocks()]
        conv = [a for b in blocks for a in (b.weight, b.bias)]
        norm = [a for b in blocks for a in (b.scale, b.shift)]
        norm += [a for level in self.levels for a in (level.scale, level.shift)]
        return [*conv, self.out_weight, self.out_bias], norm
