"""SkipNet channels-last (the library's layout) against channels-first (each
convolution on `(c, h, w)` with a transpose on either side, as it was before):
the same network's output checked equal, then `--reps` chained jitted Adam
steps of `||g − y||²/2` timed in turn, round by round, with the ratios
printed.

    python benchmarks/bench_skipnet_layout.py                  # 32×32 4 × 16 and 64×64 16/32/64
    python benchmarks/bench_skipnet_layout.py --rounds 5 --reps 100
"""

from __future__ import annotations

import argparse
import statistics
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import dipflow as dip
from dipflow.generators._conv_layers import channel_norm, conv2d

# The networks timed: (image size, channels per level).
CASES = ((32, (16, 16, 16, 16)), (64, (16, 32, 64)))


def channels_first(net: dip.SkipNet) -> jax.Array:
    """`net()` computed on `(c, h, w)` images throughout."""

    def level(i, x):
        lv, act, pad = net.levels[i], net.activation, net.padding
        deeper = lv.down2(lv.down(x, act, pad), act, pad)
        if i + 1 < len(net.levels):
            deeper = level(i + 1, deeper)
        deeper = net.upsample.double(deeper)
        if lv.skip is not None:
            deeper = jnp.concatenate([lv.skip(x, act, pad), deeper])
        h = channel_norm(deeper, lv.scale, lv.shift)
        return lv.up1x1(lv.up(h, act, pad), act, pad)

    x = conv2d(level(0, net.u), net.out_weight, net.out_bias)
    return (jax.nn.sigmoid(x) if net.sigmoid else x).reshape(-1)


def adam_step(forward, net, y):
    """A jitted Adam step of `forward(net)` on `||g − y||²/2`, and its state."""
    params, static = eqx.partition(net, eqx.is_inexact_array)
    opt = optax.adam(1e-2)

    def loss(p):
        return 0.5 * jnp.sum((forward(eqx.combine(p, static)) - y) ** 2)

    @jax.jit
    def step(p, s):
        value, grads = jax.value_and_grad(loss)(p)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, value

    return step, (params, opt.init(params))


def chained_time(step, state, reps: int) -> float:
    """Seconds per step over `reps` steps, each fed the last one's state (as
    training runs them, dispatched without waiting), after a warm-up step."""
    params, opt_state, value = step(*state)
    jax.block_until_ready(value)
    start = time.perf_counter()
    for _ in range(reps):
        params, opt_state, value = step(params, opt_state)
    jax.block_until_ready(value)
    return (time.perf_counter() - start) / reps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reps", type=int, default=50)
    args = p.parse_args(argv)
    if args.rounds < 1 or args.reps < 1:
        p.error("--rounds and --reps must be positive")
    for size, channels in CASES:
        net = dip.SkipNet.init(
            jax.random.PRNGKey(0), (1, size, size), channels=channels
        )
        np.testing.assert_allclose(net(), channels_first(net), rtol=1e-5, atol=1e-6)
        y = jax.random.uniform(jax.random.PRNGKey(1), (size * size,))
        steps = {
            "channels-last": adam_step(lambda n: n(), net, y),
            "channels-first": adam_step(channels_first, net, y),
        }
        times = {name: [] for name in steps}
        for _ in range(args.rounds):
            for name, (step, state) in steps.items():
                times[name].append(chained_time(step, state, args.reps))
        last, first = times["channels-last"], times["channels-first"]
        ratios = [a / b for a, b in zip(last, first, strict=True)]
        print(
            f"{size}×{size}, channels {channels}: channels-last "
            f"{1e3 * statistics.median(last):.2f} ms, channels-first "
            f"{1e3 * statistics.median(first):.2f} ms per Adam step; ratio per "
            f"round {', '.join(f'{r:.2f}×' for r in ratios)}"
        )


if __name__ == "__main__":
    main()
