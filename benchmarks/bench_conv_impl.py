"""How to write the ConvDecoder's convolution on this platform: forward and
`value_and_grad` of the loss, float32, one seed, for

- `lax NCHW`: `lax.conv_general_dilated` on `(c, h, w)` images with its
  default (channels-first) dimension numbers (the baseline);
- `lax NHWC`: the same convolution with channels-last dimension numbers, the
  library's `dipflow.generators._conv_layers.conv2d_hwc`;
- `im2col`: nine shifted copies of the padded image and one matrix product;
- `custom vjp`: XLA's convolution forward and input gradient, the weight
  gradient as a matrix product of patches.

Each program is compiled first, then timed with `jax.block_until_ready`
(median of `--reps`); the gradients are checked against the baseline's, and
ratios are against it.

    python benchmarks/bench_conv_impl.py            # 64×64, 64 channels, 4 layers
"""

from __future__ import annotations

import argparse

import equinox as eqx
import jax
import jax.numpy as jnp
from _timing import median_time  # benchmarks/_timing.py, beside this script

import dipflow as dip
from dipflow.generators import _conv_layers, _convdecoder

LIBRARY = _conv_layers.conv2d  # (c, h, w) in and out, channels-last inside


def as_hwc(conv):
    """A convolution on `(c, h, w)` images as the ConvDecoder calls it, on
    channels-last `(h, w, c)` ones (the variants below are written on the
    former, the network keeps the latter between its convolutions)."""

    def hwc(x, w, b, **options):
        out = conv(jnp.transpose(x, (2, 0, 1)), w, b, **options)
        return jnp.transpose(out, (1, 2, 0))

    return hwc


def conv_nchw(x, w, b, *, stride=1, padding="zeros"):
    ph, pw = (w.shape[2] - 1) // 2, (w.shape[3] - 1) // 2
    out = jax.lax.conv_general_dilated(
        x[None], w, (stride, stride), ((ph, ph), (pw, pw))
    )[0]
    return out + b[:, None, None]


def _columns(x, kh, kw):
    c, h, w = x.shape
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    xp = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw)))
    cols = [xp[:, i : i + h, j : j + w] for i in range(kh) for j in range(kw)]
    return jnp.stack(cols, axis=1).reshape(c * kh * kw, h * w)  # w's (c, kh, kw)


def conv_im2col(x, w, b, *, stride=1, padding="zeros"):
    o, _, kh, kw = w.shape
    out = w.reshape(o, -1) @ _columns(x, kh, kw)
    return out.reshape(o, *x.shape[1:]) + b[:, None, None]


@jax.custom_vjp
def _conv_no_bias(x, w):
    return LIBRARY(x, w, jnp.zeros(w.shape[0], x.dtype))


def _conv_fwd(x, w):
    return _conv_no_bias(x, w), (x, w)


def _conv_bwd(res, g):
    x, w = res
    o, _, kh, kw = w.shape
    _, vjp_x = jax.vjp(lambda x_: LIBRARY(x_, w, jnp.zeros(o, x.dtype)), x)
    gw = (g.reshape(o, -1) @ _columns(x, kh, kw).T).reshape(w.shape)
    return vjp_x(g)[0], gw


_conv_no_bias.defvjp(_conv_fwd, _conv_bwd)


def conv_custom_vjp(x, w, b, *, stride=1, padding="zeros"):
    return _conv_no_bias(x, w) + b[:, None, None]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--reps", type=int, default=20)
    args = p.parse_args(argv)
    truth = dip.load_image("camera", args.size)
    net = dip.ConvDecoder.init(
        jax.random.key(0), truth.shape, channels=args.channels, layers=args.layers
    )
    params, static = eqx.partition(net, eqx.is_inexact_array)
    y = truth.reshape(-1)

    def loss(theta):
        return 0.5 * jnp.sum((eqx.combine(theta, static)() - y) ** 2)

    cases = [("lax NCHW", as_hwc(conv_nchw)), ("lax NHWC", _conv_layers.conv2d_hwc),
             ("im2col", as_hwc(conv_im2col)),
             ("custom vjp", as_hwc(conv_custom_vjp))]  # fmt: skip
    print(f"ConvDecoder {args.layers} × {args.channels}, {args.size}², float32, "
          f"{jax.default_backend()}")  # fmt: skip
    base, reference = None, None
    try:
        for name, conv in cases:
            _convdecoder.conv2d_hwc = conv
            fwd = jax.jit(lambda th: eqx.combine(th, static)())
            grad = jax.jit(jax.value_and_grad(loss))
            grads = grad(params)[1]
            t_f = median_time(lambda: fwd(params), args.reps)  # noqa: B023
            t_g = median_time(lambda: grad(params), args.reps)  # noqa: B023
            if reference is None:
                reference, base = grads, (t_f, t_g)
            err = max(
                float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(a)) + 1e-30))
                for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(grads),
                                strict=True)
            )  # fmt: skip
            print(f"{name:>11}: forward {1e3 * t_f:6.1f} ms ({t_f / base[0]:.2f}×), "
                  f"value_and_grad {1e3 * t_g:6.1f} ms ({t_g / base[1]:.2f}×), "
                  f"gradient vs baseline {err:.1e} (relative)", flush=True)  # fmt: skip
    finally:
        _convdecoder.conv2d_hwc = _conv_layers.conv2d_hwc


if __name__ == "__main__":
    main()
